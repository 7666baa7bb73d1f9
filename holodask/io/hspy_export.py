"""Export of results as HyperSpy signals (``.hspy``), written with RosettaSciIO.

The averaged object wave becomes a complex 2-D signal (HyperSpy opens it as a
``ComplexSignal2D``; ``Signal.signal_type`` is empty, as for the waves holospy
reconstructs), with axes ``y`` and ``x`` in nm (the result's sampling and
offset), ``Acquisition_instrument.TEM.beam_energy`` (kV) when the result
records the voltage, and the result's attributes (parameters, carrier,
cut-off, per-hologram fit) under ``original_metadata.holodask``. Window averages
(``run --window``) become a stack along ``time`` (the windows' times, where
regular, else their numbers). The series
(``output_series``) becomes a stack: a navigation axis ``frame`` (the series
indices, also listed as ``original_metadata.holodask.frame_index``) over the
same signal axes, written frame block by frame block from the lazy result.

As with the QPImage export, ``--series`` writes the series to ``OUT.hspy`` and
the average beside it, to ``OUT_average.hspy``. Each file is written to a
temporary file in the destination folder and moved into place when complete.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from holodask import __version__
from holodask.errors import DataError, ParameterError
from holodask.io.holo_hdf5 import TEMP_SUFFIX, check_output_path

__all__ = ["export_hspy", "hspy_signal", "average_path"]

#: result attributes not copied into original_metadata (the axes carry them)
_SKIPPED_ATTRS = {"parameters", "dim_scale", "dim_offset", "dim_unit", "source", "prefix"}


def average_path(out_path) -> Path:
    """Where the average goes when ``out_path`` receives the series: ``OUT_average.hspy``."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}_average{out_path.suffix or '.hspy'}")


def _axis(name: str, values: np.ndarray, units: str, navigate: bool) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    scale = float(values[1] - values[0]) if values.size > 1 else 1.0
    return {"name": name, "size": int(values.size), "scale": scale,
            "offset": float(values[0]) if values.size else 0.0, "units": units, "navigate": navigate}


def _plain(value: Any) -> Any:
    """A value RosettaSciIO writes into HDF5 (None left out by the caller)."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return list(value)
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "c":
            return {"real": value.real.astype(np.float64), "imag": value.imag.astype(np.float64)}
        if value.dtype.kind in "biuf":
            return value
        return [str(v) for v in value.ravel()]
    return str(value)


def hspy_signal(data, y_nm, x_nm, *, title: str, voltage_kV: float | None = None,
                frame_index=None, signal_type: str = "", holodask_metadata: dict | None = None,
                navigation: str = "frame", navigation_units: str = "") -> dict:
    """The RosettaSciIO signal dictionary of a 2-D image or a (frame, y, x) stack (``navigation``:
    the name of the stack's axis, e.g. ``window``; ``frame_index`` its values, used where regular)."""
    axes = []
    if frame_index is not None:
        frame_index = np.asarray(frame_index)
        steps = np.diff(frame_index)
        regular = frame_index.size < 2 or np.allclose(steps, steps[0], rtol=1e-6, atol=0)
        if not regular:
            frame_index, navigation_units = np.arange(frame_index.size), ""
        axes.append(_axis(navigation, frame_index, navigation_units, True))
    axes += [_axis("y", y_nm, "nm", False), _axis("x", x_nm, "nm", False)]
    metadata: dict[str, Any] = {
        "General": {"title": title},
        "Signal": {"signal_type": signal_type, "quantity": "Electron wave (complex)"},
    }
    if voltage_kV is not None:
        metadata["Acquisition_instrument"] = {"TEM": {"beam_energy": float(voltage_kV)}}
    original = {"holodask": dict(holodask_metadata or {}), "holodask_version": __version__}
    return {
        "data": data,
        "axes": axes,
        "metadata": metadata,
        "original_metadata": original,
        "tmp_parameters": {},
        "attributes": {"_lazy": hasattr(data, "dask")},
        "learning_results": {},
        "models": {},
        "package_info": {"package": "", "package_version": ""},
    }


def _write(path: Path, signal: dict) -> None:
    """Write ``signal`` to ``path`` through a temporary file in the same folder."""
    from rsciio.hspy import file_writer

    temporary = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            file_writer(str(temporary), signal, show_progressbar=False)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _result_metadata(result) -> dict:
    meta: dict[str, Any] = {}
    for key, value in result.attrs.items():
        if key in _SKIPPED_ATTRS or value is None:
            continue
        meta[key.replace("/", "_")] = _plain(value)
    for name in ("factor", "shift_nm", "tilt_per_nm", "defocus_nm", "error", "raw_shift_px", "outliers",
                 "convergence", "weight", "window_factor", "window_shift_nm", "window_tilt_per_nm",
                 "window_defocus_nm", "window_error"):
        if name in result:
            meta[name] = _plain(np.asarray(result[name].values))
    for name, coord in result.coords.items():  # a windowed result's window axis: times, frames, log
        if coord.dims == ("window",) and name != "window":
            meta[name if name.startswith("window_") else f"window_{name}"] = _plain(np.asarray(coord.values))
    if "frame" in result.coords:
        meta["frame_index"] = np.asarray(result["frame"].values)
    return meta


def export_hspy(result_path, out_path, prefix: str = "", series: bool = False,
                voltage_kV: float | None = None) -> list[Path]:
    """Export a result file's averaged wave (or series) as HyperSpy ``.hspy`` files.

    Parameters
    ----------
    result_path : str or Path
        Result HDF5 file (holodask or reference program).
    out_path : str or Path
        ``.hspy`` file of the averaged object wave ``data``; with ``series`` the
        stack of individual reconstructions, and the average goes to
        ``OUT_average.hspy`` (see :func:`average_path`) when the result holds one.
    prefix : str
        The result's ``output_prefix``.
    series : bool
        Export the individual reconstructions (``output_series``).
    voltage_kV : float, optional
        Acceleration voltage for the metadata when the result does not record it.

    Returns
    -------
    list of Path
        The files written.
    """
    from holodask.results import open_result

    out_path = check_output_path(out_path)
    result = open_result(result_path, prefix=prefix)
    if voltage_kV is None:
        voltage_kV = result.attrs.get("voltage_kV")
    if result.attrs.get("sampling_nm") is None:
        raise DataError(f"result {result_path} has no dim_scale attribute; the pixel size is unknown")
    label = f"{Path(result_path).name}:{prefix}"
    meta = _result_metadata(result)

    def average_signal():
        wave = result["data"]
        if "window" in wave.dims:  # window averages: a stack along time
            time = result["time"] if "time" in result.coords else result["window"]
            return hspy_signal(np.asarray(wave.values, dtype=np.complex64), wave[wave.dims[1]].values,
                               wave[wave.dims[2]].values, title=f"holodask window averages {label}data",
                               voltage_kV=voltage_kV, holodask_metadata=meta, frame_index=time.values,
                               navigation="time" if "time" in result.coords else "window",
                               navigation_units=time.attrs.get("units", "") if "time" in result.coords else "")
        return hspy_signal(np.asarray(wave.values, dtype=np.complex64), wave[wave.dims[0]].values,
                           wave[wave.dims[1]].values, title=f"holodask average {label}data",
                           voltage_kV=voltage_kV, holodask_metadata=meta)

    if not series:
        if "data" not in result:
            raise DataError(f"result file {result_path} holds no averaged object wave '{prefix}data' to export")
        _write(out_path, average_signal())
        return [out_path]
    if "series" not in result:
        raise DataError(f"result file {result_path} holds no series '{prefix}series' to export "
                        "(run with output_series set)")
    average = average_path(out_path) if "data" in result else None
    if average is not None and average.resolve() == out_path.resolve():
        raise ParameterError(f"--hspy: {out_path} would hold both the series and the average")
    frames = result["series"]
    data = frames.data.astype(np.complex64)
    _write(out_path, hspy_signal(data, frames["y"].values, frames["x"].values,
                                 title=f"holodask series {label}series", voltage_kV=voltage_kV,
                                 frame_index=frames["frame"].values, holodask_metadata=meta))
    written = [out_path]
    if average is not None:
        _write(average, average_signal())
        written.append(average)
    return written
