"""Reading result files (holodask's or the reference program's) back as xarray.

:func:`open_result` gives an :class:`xarray.Dataset` with the averaged waves,
the per-hologram fit results and, lazily, the individual reconstructions;
:func:`describe_result` a human-readable summary of the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import xarray as xr

import holodask.accessor  # noqa: F401  (the .holo accessor on what is returned)
from holodask.errors import DataError, InputFileError
from holodask.io.holo_hdf5 import CUT_OFF_ATTR, CUT_OFF_ATTR_REFERENCE, read_complex

#: image datasets of a result, in the order they are looked for
IMAGE_NAMES = ("data", "empty", "variance")

#: per-hologram attributes -> (variable name, has an (X, Y) axis)
_PER_FRAME = {
    "factor": ("factor", False),
    "shift(nm)": ("shift_nm", True),
    "tilt(1/nm)": ("tilt_per_nm", True),
    "defocus(nm)": ("defocus_nm", False),
    "error": ("error", False),
    "raw_shift": ("raw_shift_px", True),
    "outliers": ("outliers", False),
    "fringe_contrast": ("fringe_contrast", False),
    "sideband_shift(px)": ("sideband_shift_px", True),
    "phase_noise(rad)": ("phase_noise_rad", False),
    "weight": ("weight", False),
}

#: per-window attributes of a windowed result -> (variable name, has an (X, Y) axis)
_PER_WINDOW = {
    "window_factor": ("window_factor", False),
    "window_shift(nm)": ("window_shift_nm", True),
    "window_tilt(1/nm)": ("window_tilt_per_nm", True),
    "window_defocus(nm)": ("window_defocus_nm", False),
    "window_error": ("window_error", False),
}
#: attributes of a windowed result that become coordinates along ``window`` (name, attrs)
_WINDOW_COORDS = {
    "window_first_frame": "first_frame",
    "window_last_frame": "last_frame",
    "window_time": "time",
    "window_time_s": "window_time_s",
}

#: attributes not copied into ``Dataset.attrs`` (they become variables or coords)
_NOT_ATTRS = set(_PER_FRAME) | set(_PER_WINDOW) | set(_WINDOW_COORDS) | {
                                "window_convergence", "window_log", "window_log_columns", "window_time_unit",
                                "convergence", "frame_index", "dim_scale", "dim_offset",
                                "dim_unit", "holoaverage_param", "CLASS", "DISPLAY_ORIGIN",
                                "IMAGE_MINMAXRANGE", "IMAGE_SUBCLASS", "IMAGE_WHITE_IS_ZERO",
                                "_dtype", "_indexShape", "_shape"}


def _python_value(value: Any) -> Any:
    """An HDF5 attribute value as plain Python / numpy (strings decoded)."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SO" or value.dtype.kind == "U":
            return [_python_value(v) for v in value.ravel().tolist()]
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise InputFileError(f"result file {path} does not exist")
    if path.is_dir():
        raise InputFileError(f"result file {path} is a directory, expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputFileError(f"result file {path} is not a readable HDF5 file ({exc})") from exc


def _find_prefixes(f: h5py.File) -> list[str]:
    """Prefixes under which the file holds a result (a ``data`` or ``empty`` dataset)."""
    found: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            for image in ("data", "empty"):
                if name.endswith(image):
                    prefix = name[: -len(image)]
                    if prefix not in found and (not prefix or not prefix.endswith("series/")):
                        found.append(prefix)

    f.visititems(visit)
    return sorted(found)


def _axis_coords(attrs, shape) -> tuple[np.ndarray, np.ndarray, float | None]:
    """y and x coordinates (nm) of an image from ``dim_scale`` / ``dim_offset``."""
    height, width = shape[-2:]
    scale = np.asarray(attrs.get("dim_scale", [1.0, 1.0]), dtype=np.float64)
    if scale.shape == (2, 2):  # the reference writes a sampling matrix for some datasets
        scale = np.diag(scale)
    scale = np.broadcast_to(scale.ravel()[:2] if scale.size >= 2 else scale, (2,))
    offset = np.asarray(attrs.get("dim_offset", [0.0, 0.0]), dtype=np.float64).ravel()
    offset = np.broadcast_to(offset[:2] if offset.size >= 2 else offset, (2,))
    x = offset[0] + np.arange(width) * scale[0]
    y = offset[1] + np.arange(height) * scale[1]
    sampling = float(scale[0]) if "dim_scale" in attrs else None
    return y, x, sampling


class _H5Frames:
    """Picklable lazy view of a stored series, one 2-D frame per item.

    ``names`` lists the datasets of a series group in order, or is ``None`` for
    one 3-D dataset. The file is opened for each read and closed again.
    """

    def __init__(self, path: str, name: str, names: list[str] | None, shape, dtype=np.complex64):
        self.path = path
        self.name = name
        self.names = names
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        frames = range(self.shape[0])[key[0]]
        single = isinstance(frames, int)
        frames = [frames] if single else list(frames)
        out = np.empty((len(frames), *self.shape[1:]), dtype=self.dtype)
        with h5py.File(self.path, "r") as f:
            for k, index in enumerate(frames):
                if self.names is None:
                    item = f[self.name][index]
                else:
                    item = f[f"{self.name}/{self.names[index]}"]
                out[k] = read_complex(item)
        out = out[(slice(None), key[1], key[2])]
        return out[0] if single else out


def _series_variable(path: Path, f: h5py.File, name: str, y, x) -> xr.DataArray | None:
    if name not in f:
        return None
    obj = f[name]
    if isinstance(obj, h5py.Group):
        names = sorted((k for k in obj.keys() if k.isdigit() and isinstance(obj[k], h5py.Dataset)),
                       key=int)
        if not names:
            return None
        frame_shape = obj[names[0]].shape
        shape = (len(names), *frame_shape)
        source = _H5Frames(str(path), name, names, shape)
    else:
        if obj.ndim != 3:
            raise DataError(f"result file {path}: series {name!r} has {obj.ndim} dimensions, expected 3")
        shape = obj.shape
        source = _H5Frames(str(path), name, None, shape)
    y_s, x_s, _ = _axis_coords(obj.attrs, shape)
    if len(y) == shape[1] and len(x) == shape[2]:
        dims, coords = ("frame", "y", "x"), {"y": y, "x": x}
    elif len(y) == 0:
        dims, coords = ("frame", "y", "x"), {"y": y_s, "x": x_s}
    else:
        dims, coords = ("frame", "series_y", "series_x"), {"series_y": y_s, "series_x": x_s}
    array = da.from_array(source, chunks=(1, *shape[1:]), asarray=False, fancy=False,
                          name=f"holodask-series-{path}-{name}-{Path(path).stat().st_mtime_ns}")
    return xr.DataArray(array, dims=dims, coords=coords, name="series")


def _empty_outliers(f: h5py.File, prefix: str, present) -> xr.DataArray | None:
    """Outliers replaced per empty hologram (``empty`` attribute ``outliers``), along ``empty_frame``."""
    if "empty" not in present or "outliers" not in f[f"{prefix}empty"].attrs:
        return None
    attrs = f[f"{prefix}empty"].attrs
    counts = np.asarray(attrs["outliers"], dtype=np.int64).ravel()
    index = attrs.get("frame_index")
    index = (np.asarray(index, dtype=np.int64).ravel() if index is not None and np.size(index) == counts.size
             else np.arange(counts.size))
    return xr.DataArray(counts, dims=("empty_frame",), coords={"empty_frame": index})


def open_result(path, prefix: str = "") -> xr.Dataset:
    """Open a result file as an :class:`xarray.Dataset`.

    Parameters
    ----------
    path : str or Path
        HDF5 file written by holodask or by the reference program.
    prefix : str
        The ``output_prefix`` the result was written with.

    Returns
    -------
    xarray.Dataset
        Variables (those present): ``data`` and ``empty`` (complex64, dims
        ``y``/``x`` in nm; ``empty`` gets ``empty_y``/``empty_x`` when its
        size or sampling differs), ``variance`` (float32); per hologram along
        ``frame``: ``factor`` (complex), ``shift_nm``, ``tilt_per_nm`` and
        ``raw_shift_px`` (with axis ``xy`` = ["x", "y"]), ``defocus_nm``,
        ``error``, ``outliers`` (pixels replaced by the outlier repair;
        ``empty_outliers`` along ``empty_frame`` for the empty series); ``convergence`` along ``iteration``; ``series`` (lazy,
        Dask-backed, dims ``frame``/``y``/``x``) when the file holds one.
        A windowed result (``holodask run --window``): ``data`` and ``variance``
        along ``(window, y, x)`` with the coordinates ``window``, ``time`` (its
        unit in ``time.attrs["units"]``: ``s`` since the first hologram, or
        ``frame``), ``window_time_s`` (seconds since 1970 UTC, where the holograms carry
        acquisition times), ``first_frame``, ``last_frame`` and one per column
        of the joined log; the registration of each window (``window_factor``,
        ``window_shift_nm``, ``window_tilt_per_nm``, ``window_defocus_nm``,
        ``window_error``) and ``convergence`` along ``(window, iteration)``.
        ``attrs`` hold ``parameters`` (the parsed parameter JSON),
        ``sampling_nm``, ``source``, ``prefix`` and the other attributes of
        the datasets (e.g. ``voltage(kV)``, ``carrier(nm-1)``).
    """
    path = Path(path)
    prefix = (prefix or "").lstrip("/")
    with _open_h5(path) as f:
        present = [n for n in IMAGE_NAMES if f"{prefix}{n}" in f
                   and isinstance(f[f"{prefix}{n}"], h5py.Dataset)]
        has_series = f"{prefix}series" in f
        if not present and not has_series:
            _no_result(f, path, prefix)
        variables, attrs, main_attrs, (y, x, sampling), main = _images(f, path, prefix, present)
        if main is None and has_series:
            main_attrs = dict(f[f"{prefix}series"].attrs)
        n_frames = _per_frame_variables(variables, main_attrs)
        empty_outliers = _empty_outliers(f, prefix, present) if main != "empty" else None
        if empty_outliers is not None:  # (an empty-only result has them as ``outliers``)
            variables["empty_outliers"] = empty_outliers
        if "convergence" in main_attrs:
            conv = np.asarray(main_attrs["convergence"], dtype=np.float64).ravel()
            variables["convergence"] = xr.DataArray(conv, dims=("iteration",),
                                                    coords={"iteration": np.arange(conv.size)})
        window_coords = _window_variables(variables, main_attrs) if _is_windowed(main_attrs) else {}
        series = _series_variable(path, f, f"{prefix}series", y, x) if has_series else None
        if series is not None:
            variables["series"] = series
            n_frames = series.shape[0] if n_frames is None else n_frames
        param_text = main_attrs.get("holoaverage_param")
        if param_text is None:
            param_text = next((f[f"{prefix}{name}"].attrs["holoaverage_param"] for name in present
                               if "holoaverage_param" in f[f"{prefix}{name}"].attrs), None)
    result = xr.Dataset(variables, coords={**_frame_coords(variables, main_attrs, n_frames), **window_coords})
    result.attrs.update(_result_attrs(attrs, param_text, sampling, path, prefix))
    return result


def _no_result(f: h5py.File, path: Path, prefix: str) -> None:
    prefixes = _find_prefixes(f)
    hint = f"; it holds results with prefix {', '.join(repr(p) for p in prefixes)}" if prefixes else ""
    raise InputFileError(f"result file {path} holds no result with prefix {prefix!r} "
                         f"(no dataset {prefix}data, {prefix}empty or {prefix}series){hint}")


def _images(f: h5py.File, path: Path, prefix: str, present: list[str]):
    """The image variables (``data``, ``empty``, ``variance``), their attributes, the attributes
    of the main one, its (y, x, sampling) and its name."""
    variables: dict[str, xr.DataArray] = {}
    attrs: dict[str, Any] = {}
    main_attrs: dict[str, Any] = {}
    y = x = np.array([])
    sampling = None
    main = next((n for n in ("data", "variance", "empty") if n in present), None)
    if main is not None:
        main_attrs = dict(f[f"{prefix}{main}"].attrs)
        y, x, sampling = _axis_coords(main_attrs, f[f"{prefix}{main}"].shape)
    for name in present:
        dataset = f[f"{prefix}{name}"]
        windowed = dataset.ndim == 3 and name != "empty" and _is_windowed(dataset.attrs)
        if dataset.ndim != 2 and not windowed:
            raise DataError(f"result file {path}: {dataset.name} has shape {dataset.shape}, "
                            "expected a 2-D image")
        values = dataset[()].astype(np.float32) if name == "variance" else read_complex(dataset)
        ds_y, ds_x, _ = _axis_coords(dataset.attrs, dataset.shape)
        lead = ("window",) if windowed else ()
        if ds_y.shape == y.shape and ds_x.shape == x.shape and np.allclose(ds_y, y) and np.allclose(ds_x, x):
            variables[name] = xr.DataArray(values, dims=(*lead, "y", "x"), coords={"y": y, "x": x})
        else:
            dims = (f"{name}_y", f"{name}_x")
            variables[name] = xr.DataArray(values, dims=(*lead, *dims), coords={dims[0]: ds_y, dims[1]: ds_x})
        for key, value in dataset.attrs.items():
            if key not in _NOT_ATTRS and key not in attrs:
                attrs[key] = _python_value(value)
    return variables, attrs, main_attrs, (y, x, sampling), main


def _per_frame_variables(variables: dict, main_attrs: dict) -> int | None:
    """The per-hologram fit attributes as variables along ``frame``; their number of frames."""
    n_frames = None
    for key, (var, has_xy) in _PER_FRAME.items():
        if key not in main_attrs:
            continue
        value = np.asarray(main_attrs[key])
        if key == "factor":
            if value.dtype.names:
                value = value[value.dtype.names[0]] + 1j * value[value.dtype.names[1]]
            elif value.dtype.kind != "c" and value.ndim == 2 and value.shape[-1] == 2:
                value = value[:, 0] + 1j * value[:, 1]  # (real, imaginary) pairs
            value = value.astype(np.complex128).ravel()
        if has_xy:
            variables[var] = xr.DataArray(value.reshape(-1, 2), dims=("frame", "xy"))
        else:
            variables[var] = xr.DataArray(value.ravel(), dims=("frame",))
        n_frames = variables[var].shape[0]
    return n_frames


def _is_windowed(attrs) -> bool:
    """Whether a result's ``data`` attributes are those of window averages (``--window``)."""
    return "window_first_frame" in attrs


def _window_variables(variables: dict, main_attrs: dict) -> dict:
    """The per-window attributes of a windowed result as variables (into ``variables``) and
    coordinates along ``window`` (returned)."""
    first = np.asarray(main_attrs["window_first_frame"], dtype=np.int64).ravel()
    n_windows = first.size
    coords: dict[str, Any] = {"window": np.arange(n_windows)}
    unit = _python_value(main_attrs.get("window_time_unit", "frame"))
    for key, name in _WINDOW_COORDS.items():
        if key in main_attrs:
            values = np.asarray(main_attrs[key]).ravel()
            attrs = {"units": unit} if name == "time" else {"units": "s"} if name == "window_time_s" else {}
            coords[name] = xr.DataArray(values, dims=("window",), attrs=attrs)
    for key, (name, has_xy) in _PER_WINDOW.items():
        if key in main_attrs:
            value = np.asarray(main_attrs[key])
            variables[name] = xr.DataArray(value.reshape(-1, 2) if has_xy else value.ravel(),
                                           dims=("window", "xy") if has_xy else ("window",))
    if "window_convergence" in main_attrs:
        conv = np.asarray(main_attrs["window_convergence"], dtype=np.float64).reshape(n_windows, -1)
        variables["convergence"] = xr.DataArray(conv, dims=("window", "iteration"),
                                                coords={"iteration": np.arange(conv.shape[1])})
    if "window_log_columns" in main_attrs and "window_log" in main_attrs:
        names = _python_value(main_attrs["window_log_columns"])
        names = [names] if isinstance(names, str) else list(names)
        table = np.asarray(main_attrs["window_log"], dtype=np.float64).reshape(n_windows, len(names))
        source = _python_value(main_attrs.get("window_log_file", ""))
        for k, name in enumerate(names):
            coords[name] = xr.DataArray(table[:, k], dims=("window",), attrs={"source": source})
    return coords


def _frame_coords(variables: dict, main_attrs: dict, n_frames: int | None) -> dict:
    coords: dict[str, Any] = {}
    if n_frames is not None:
        frame_index = main_attrs.get("frame_index")
        if frame_index is not None and np.size(frame_index) == n_frames:
            coords["frame"] = np.asarray(frame_index, dtype=np.int64)
        else:
            coords["frame"] = np.arange(n_frames)
    if any("xy" in v.dims for v in variables.values()):
        coords["xy"] = ["x", "y"]
    return coords


def _result_attrs(attrs: dict, param_text, sampling, path: Path, prefix: str) -> dict:
    """The Dataset's attributes: the datasets', the parsed parameters, calibration, provenance."""
    attrs = dict(attrs)
    attrs["parameters"] = {}
    if param_text is not None:
        text = _python_value(param_text)
        attrs["holoaverage_param"] = text
        try:
            attrs["parameters"] = json.loads(text)
        except (TypeError, ValueError):
            pass
    if CUT_OFF_ATTR_REFERENCE in attrs and CUT_OFF_ATTR not in attrs:
        attrs[CUT_OFF_ATTR] = attrs[CUT_OFF_ATTR_REFERENCE]
    if sampling is not None:
        attrs["sampling_nm"] = sampling
    if "voltage(kV)" in attrs:
        attrs["voltage_kV"] = float(attrs["voltage(kV)"])
    attrs["source"] = str(path)
    attrs["prefix"] = prefix
    return attrs


def result_prefixes(path) -> list[str]:
    """Prefixes under which ``path`` holds a result (``data`` or ``empty``);
    empty when it is not a readable HDF5 file or holds none."""
    path = Path(path)
    try:
        if not h5py.is_hdf5(path):
            return []
        with h5py.File(path, "r") as f:
            return _find_prefixes(f)
    except OSError:
        return []


def _format_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return np.array2string(value, precision=6, separator=", ", threshold=12).replace("\n", "")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _describe_windows(result: xr.Dataset) -> list[str]:
    """The table of a windowed result's windows: frames, time, registration, log values."""
    unit = result["time"].attrs.get("units", "frame") if "time" in result.coords else "frame"
    log_names = [name for name, coord in result.coords.items()
                 if coord.dims == ("window",) and name not in ("window", "time", "window_time_s", "first_frame",
                                                               "last_frame")]
    size, step = result.attrs.get("window_size"), result.attrs.get("window_step")
    lines = [f"windows: {result.sizes['window']} of {size} holograms, step {step}, registered to window 0"
             + (f"; left out: {_format_value(np.asarray(result.attrs['window_left_out']))}"
                if "window_left_out" in result.attrs else "")]
    header = (f"  {'window':>6s} {'frames':>11s} {'time(' + unit + ')':>12s} {'shift_x(nm)':>11s} "
              f"{'shift_y(nm)':>11s} {'|factor|':>8s} {'arg(rad)':>8s} {'residual':>10s}"
              + "".join(f" {name:>14s}" for name in log_names))
    lines.append(header)
    for w in range(result.sizes["window"]):
        def value(name, j=None):
            if name not in result:
                return np.nan
            v = result[name].values[w]
            return v if j is None else v[j]

        frames = (f"{int(result['first_frame'].values[w])}..{int(result['last_frame'].values[w])}"
                  if "first_frame" in result.coords else "")
        time = float(result["time"].values[w]) if "time" in result.coords else np.nan
        factor = complex(value("window_factor")) if "window_factor" in result else complex(np.nan)
        final = np.asarray(result["convergence"].values[w]) if "convergence" in result else np.array([np.nan])
        final = final[np.isfinite(final)]
        lines.append(f"  {w:6d} {frames:>11s} {time:12.5g} {value('window_shift_nm', 0):11.4f} "
                     f"{value('window_shift_nm', 1):11.4f} {abs(factor):8.4f} {np.angle(factor):+8.3f} "
                     f"{(final[-1] if final.size else np.nan):10.4e}"
                     + "".join(f" {float(result[name].values[w]):14.6g}" for name in log_names))
    return lines


def describe_result(path, prefix: str = "") -> str:
    """Human-readable summary of a result file (for ``holodask info RESULT.hdf5``).

    Lists every dataset of the file with shape and dtype, then for the result
    under ``prefix``: calibration, the parameters used, the convergence of the
    averaging and a table of per-hologram shift, tilt, defocus, factor and error.
    """
    path = Path(path)
    lines = [f"result file {path}"]
    with _open_h5(path) as f:
        entries = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                dtype = obj.dtype
                kind = ("complex (r/i float32)" if dtype == np.complex64
                        else "complex (r/i float64)" if dtype == np.complex128 else str(dtype))
                entries.append(f"  {name:<28s} {'x'.join(map(str, obj.shape)):>12s}  {kind}")

        f.visititems(visit)
        if len(entries) > 40:
            hidden = len(entries) - 40
            entries = entries[:40] + [f"  ... ({hidden} more datasets)"]
        lines.append("datasets:")
        lines.extend(entries)
    result = open_result(path, prefix)
    a = result.attrs
    lines.append(f"result (prefix {prefix!r}):")
    for name in ("data", "empty", "variance", "series"):
        if name in result:
            var = result[name]
            lines.append(f"  {name}: {' x '.join(f'{d}={n}' for d, n in var.sizes.items())}, "
                         f"{var.dtype}")
    calibration = []
    if "sampling_nm" in a:
        calibration.append(f"sampling {a['sampling_nm']:.6g} nm/px")
    if "voltage_kV" in a:
        calibration.append(f"voltage {a['voltage_kV']:g} kV")
    for key in ("microscope", "detector"):
        if key in a:
            calibration.append(f"{key} {a[key]}")
    if calibration:
        lines.append("  " + ", ".join(calibration))
    for key in ("carrier(nm-1)", CUT_OFF_ATTR, "reconstructionMaskType", "roi", "align_roi",
                "binning", "vacuum_region", "vacuum_box(px)", "vacuum_factor", "vacuum_ramp(rad/nm)",
                "holoaverage_version", "holodask_version"):
        if key in a:
            lines.append(f"  {key}: {_format_value(a[key])}")
    if a.get("parameters"):
        lines.append("parameters:")
        for key, value in a["parameters"].items():
            text = json.dumps(value)
            if len(text) > 100:
                text = text[:97] + "..."
            lines.append(f"  {key}: {text}")
    if "window" in result.dims:
        lines.extend(_describe_windows(result))
    elif "convergence" in result:
        conv = result["convergence"].values
        lines.append("convergence (total squared residual per iteration):")
        lines.append("  " + "  ".join(f"{v:.4e}" for v in conv))
    if "frame" in result.coords and any(v in result for v in ("shift_nm", "factor", "error")):
        lines.append("per hologram:")
        header = (f"  {'frame':>5s} {'shift_x(nm)':>11s} {'shift_y(nm)':>11s} "
                  f"{'tilt_x(1/nm)':>12s} {'tilt_y(1/nm)':>12s} {'defocus(nm)':>11s} "
                  f"{'|factor|':>8s} {'arg(rad)':>8s} {'error':>11s}")
        lines.append(header)

        def get(name, k, j=None):
            if name not in result:
                return np.nan
            v = result[name].values[k]
            return v if j is None else v[j]

        for k, frame in enumerate(result["frame"].values):
            factor = get("factor", k)
            lines.append(
                f"  {int(frame):5d} {get('shift_nm', k, 0):11.4f} {get('shift_nm', k, 1):11.4f} "
                f"{get('tilt_per_nm', k, 0):12.6f} {get('tilt_per_nm', k, 1):12.6f} "
                f"{get('defocus_nm', k):11.3f} {abs(factor):8.4f} {np.angle(factor):+8.3f} "
                f"{get('error', k):11.4e}")
    return "\n".join(lines)


__all__ = ["open_result", "describe_result", "result_prefixes"]
