"""The averaging stage: :func:`hold` computes a reconstructed stack once and keeps it,
:func:`average` aligns and averages it into a Dataset (the iterative scheme of
:mod:`holodask.stages.rounds`).

Both work on a :class:`~holodask.series.FrameSeries` underneath
(:func:`hold_stack`, :func:`average_stack`), which is what ``holodask run``
composes without building xarray objects (importing xarray and ``dask.array``
alone takes about as long as reconstructing 60 holograms).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from holodask.align import alignment_grid
from holodask.errors import DataError, ParameterError
from holodask.optics import propagate
from holodask.params import HoloParams, stage_parameters
from holodask.series import FrameSeries, lazy_coordinate
from holodask.stages.reconstruction import EmptyWave, stack_of
from holodask.stages.rounds import AverageResult, HeldFrames, StoredFrame, average_series, hold_frames
from holodask.vacuum import normalize_averaged

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["hold", "hold_stack", "stored_stack", "average", "average_stack", "Averaged", "held_frames", "OBJECT_ITERATIONS",
           "DEFOCUS_START"]

log = logging.getLogger("holodask")

#: averaging rounds after the first, and the round the defocus fit starts with (the reference's)
OBJECT_ITERATIONS = 7
DEFOCUS_START = 4
#: fraction of saturated pixels above which a hologram is reported
SATURATION_FRACTION = 1e-3


def _stored_block(stored: StoredFrame) -> np.ndarray:
    return stored.load()[np.newaxis]


def _graph_value(value):
    """A graph entry as the value it holds (Dask's data nodes unwrapped)."""
    if type(value).__name__ == "DataNode":
        return value.value
    return value


def held_frames(stack) -> HeldFrames | None:
    """The frames of a stack that :func:`hold` made (a FrameSeries or DataArray, or a
    numpy-backed DataArray), else None."""
    if not isinstance(stack, FrameSeries):
        import dask.array as da

        if not isinstance(stack.data, da.Array):
            values = np.asarray(stack.data)
            return HeldFrames([values[k] for k in range(values.shape[0])])
        if any(c != 1 for c in stack.data.chunks[0]):
            return None
        stack = FrameSeries.from_dataarray(stack, coords=False)
    items, client = [], None
    for key in stack.keys:
        value = _graph_value(stack.graph.get(key))
        if isinstance(value, np.ndarray):
            items.append(value)
        elif isinstance(value, tuple) and value and value[0] is _stored_block:
            items.append(value[1])
        elif type(value).__name__ == "Future":
            items.append(value)
            client = value.client
        else:
            return None
    return HeldFrames(items, client)


def _warn_saturation(counts, frame_index, pixels: int) -> None:
    saturated = [int(i) for i, c in zip(frame_index, counts) if c > SATURATION_FRACTION * pixels]
    if saturated:
        shown = ", ".join(str(i) for i in saturated[:20]) + (" ..." if len(saturated) > 20 else "")
        warnings.warn(f"frames {shown} have many saturated pixels (at the maximum of their integer type)")


def _store_for(series: FrameSeries, client, store_dir, store):
    """Where the held frames go: ``store_dir``/``store`` as given; with threads a spill
    folder when they would take more than their share of the memory budget (said once)."""
    from holodask.memory import format_size, held_budget_bytes, spill_dir

    if store is not None or store_dir is not None or client is not None:
        return store_dir
    n_bytes = series.n_frames * series.shape[1] * series.shape[2] * np.dtype(np.complex64).itemsize
    budget = held_budget_bytes()
    if budget is None or n_bytes <= budget:
        return None
    folder = spill_dir()
    log.warning("holodask: the %d reconstructed holograms (%s) exceed half of the memory budget (%s): "
                "they are kept in a Zarr store in %s while they are averaged", series.n_frames,
                format_size(n_bytes), format_size(2 * budget), folder)
    return folder


def _drift_first(dsk: dict, series: FrameSeries, client) -> None:
    """Compute a lazy raw drift on its own and put its value in the graph: every frame's
    reconstruction waits for the drift of the whole series, and Dask's ordering of one graph
    with that fan-in takes time and memory growing with the square of the series' length."""
    from holodask.stages.rounds import compute_graph

    lazy = series.lazy_coords.get("raw_shift_x_px")
    if lazy is None:
        return
    key = lazy[1][0][0]
    if isinstance(dsk.get(key), np.ndarray):
        return
    from dask.optimization import cull

    needed, _ = cull(dsk, [key])
    dsk[key] = np.asarray(compute_graph(needed, [key], client)[0])


def hold_stack(series: FrameSeries, *, client=None, store_dir=None, store=None) -> FrameSeries:
    """:func:`hold` on a :class:`FrameSeries`: its graph then holds the frames themselves
    (arrays, futures on the workers, or readers of the Zarr store) and its coordinates
    and empty wave are computed. ``store``: the Zarr store to write (a checkpoint's)."""
    from holodask.cluster import current_client
    from holodask.stages.reconstruction import _FACTORS

    if client is None:
        client = current_client()
    empty = series.attrs.get("empty")
    lazy_empty = isinstance(empty, EmptyWave) and empty.lazy
    if not series.lazy_coords and not lazy_empty and held_frames(series) is not None:
        return series
    dsk = dict(series.graph)
    _drift_first(dsk, series, client)
    also = list(dict.fromkeys(key for _, parts, _ in series.lazy_coords.values() for key, _ in parts))
    if lazy_empty:
        dsk.update(empty.dsk)
        also.append(empty.key)
    store_dir = _store_for(series, client, store_dir, store)
    started = time.perf_counter()
    held, values = hold_frames(dsk, series.keys, series.shape[1:], client, store_dir, also=also, store=store)
    _FACTORS.clear()
    log.info("reconstruction: %d holograms in %.2f s", series.n_frames, time.perf_counter() - started)
    computed = dict(zip(also, values))
    attrs = dict(series.attrs)
    if lazy_empty:
        attrs["empty"] = empty.with_value(computed[empty.key])
    coords = dict(series.coords)
    for name, lazy in series.lazy_coords.items():
        coords[name] = lazy_coordinate(computed, lazy)
    if "saturated_px" in coords and attrs.get("roi") is not None:
        left, top, right, bottom = attrs["roi"]
        _warn_saturation(coords["saturated_px"], series.frame_index, (right - left) * (bottom - top))
    name = "held-" + series.name
    graph = {}
    for k, item in enumerate(held.items):
        if isinstance(item, StoredFrame):
            graph[(name, k)] = (_stored_block, item)
        elif isinstance(item, np.ndarray):
            graph[(name, k)] = item if item.ndim == 3 else item[np.newaxis]
        else:
            graph[(name, k)] = item
    return FrameSeries(name, graph, list(graph), series.shape, series.dtype, series.frame_index, coords, attrs,
                       {}, dict(series.coord_attrs))


def stored_stack(series: FrameSeries, store, coords: dict, client=None) -> FrameSeries:
    """The held form of a reconstructed stack whose frames are already in the Zarr store
    ``store`` (a checkpoint's), with its lazy coordinates as ``coords`` gives them; a lazy
    empty wave is computed here."""
    name = "stored-" + series.name
    graph = {(name, k): (_stored_block, StoredFrame(str(store), k)) for k in range(series.n_frames)}
    attrs = dict(series.attrs)
    empty = attrs.get("empty")
    if isinstance(empty, EmptyWave):
        attrs["empty"] = empty.compute(client)
    return FrameSeries(name, graph, list(graph), series.shape, series.dtype, series.frame_index,
                       {**series.coords, **{k: np.asarray(v) for k, v in coords.items()}}, attrs, {},
                       dict(series.coord_attrs))


def hold(waves: "xr.DataArray", *, client=None, store_dir=None) -> "xr.DataArray":
    """Compute a reconstructed stack once and keep it, like :meth:`xarray.DataArray.persist`.

    The frames stay in this process's memory (threads), on the workers that
    computed them (a distributed client: the stack's chunks become futures),
    or in a Zarr store under ``store_dir`` (one frame per chunk, read back
    where used: memory stays bounded). With threads and no ``store_dir``, a
    stack larger than half of the memory budget (:mod:`holodask.memory`) goes
    to a Zarr store in the spill folder by itself. The lazy per-frame coordinates (raw
    drift, saturated pixels) and a lazy empty wave are computed in the same
    pass. A stack already held is returned as it is.
    """
    return hold_stack(stack_of(waves, "waves"), client=client, store_dir=store_dir).to_dataarray()


def _wave_sampling(series: FrameSeries) -> tuple[float, float]:
    """(y, x) pixel size in nm of a reconstructed stack."""
    value = series.attrs.get("sampling_yx_nm") or series.attrs.get("sampling_nm")
    if value is None:
        raise ParameterError("sampling: the waves have no y/x coordinates in nm; give them (units 'nm') "
                             "or an attribute 'sampling_nm'")
    sy, sx = np.broadcast_to(np.asarray(value, dtype=float), (2,))
    return float(sy), float(sx)


def _waves_of(waves) -> FrameSeries:
    """The FrameSeries of a reconstructed stack (a DataArray, a result's ``series``, ...)."""
    if isinstance(waves, FrameSeries):
        series = waves
    else:
        import xarray as xr

        from holodask.stages.reconstruction import as_hologram_stack

        if isinstance(waves, xr.Dataset):
            if "series" not in waves:
                raise DataError("waves: the Dataset holds no 'series' of reconstructed waves")
            waves = waves["series"]
        array = as_hologram_stack(waves, "waves")
        series = stack_of(array, "waves")
        if array.coords["x"].attrs.get("units", "nm") == "nm" and array.sizes["x"] > 1 and array.sizes["y"] > 1:
            series.attrs["sampling_yx_nm"] = (float(array.y.values[1] - array.y.values[0]),
                                              float(array.x.values[1] - array.x.values[0]))
    if np.dtype(series.dtype).kind != "c":
        raise DataError(f"waves: expected complex reconstructed waves (holodask.reconstruct), got "
                        f"{np.dtype(series.dtype)} values (holograms?)")
    return series


def average(waves, params=None, *, client=None, step=None, **options) -> "xr.Dataset":
    """Align and average a reconstructed stack: the second stage of ``holodask run``.

    Every wave is fitted to the current average (global complex factor and
    shift; tilt and defocus with ``adjust_tilt``/``adjust_defocus``) and the
    average rebuilt, for the reference's fixed number of rounds; then the
    per-pixel variance of the aligned waves. A single wave is propagated to
    Gaussian focus instead.

    Parameters
    ----------
    waves : xarray.DataArray
        ``(frame, y, x)`` complex waves, as :func:`holodask.reconstruct` gives
        (lazy, or held by :func:`hold`), with ``y``/``x`` in nm.
    params : HoloParams, parameter file or dict, optional
        Default: the parameters the waves were reconstructed with.
    client : distributed.Client, optional
        Default: the client of an enclosing
        :func:`holodask.cluster.compute_context`, else local threads.
    step : int, optional
        With ``window``: the holograms from one window's start to the next
        (the parameter ``window_step``; default the window: side by side).
    **options
        Parameters by their parameter-file names: ``adjust_shift``,
        ``adjust_tilt``, ``adjust_defocus``, ``voltage``, ``tolerance`` (end the
        rounds once the residual changes by less than this, relative),
        ``window`` (averages of windows of that many holograms, registered to
        the first window, on a time axis: :mod:`holodask.stages.windows`),
        ``window_log`` (a CSV log joined onto the windows), ``weights`` (one
        weight per hologram, a file of them, or the name of a per-frame
        coordinate: a weighted average), ...

    Returns
    -------
    xarray.Dataset
        ``data`` (the averaged wave, complex64), ``variance`` (float32) and
        ``empty`` when known; per hologram along ``frame``: ``factor``,
        ``shift_nm`` and ``tilt_per_nm`` (axis ``xy``), ``defocus_nm``,
        ``error``, ``raw_shift_px``, ``saturated_px``, ``outliers``;
        ``convergence`` along ``iteration``: the names of
        :func:`holodask.open_result`. ``attrs``: the calibration, the
        ``parameters`` and ``hdf5_attrs`` (those of the output's ``data``).
        With ``window``: ``data`` and ``variance`` along ``(window, y, x)``, the
        window coordinates ``time`` (and ``window_time_s``), ``first_frame``,
        ``last_frame`` and the log's columns, the registration of each window
        (``window_factor``, ``window_shift_nm``, ...) and ``convergence`` along
        ``(window, iteration)``.
    """
    if step is not None:
        options["window_step"] = step
    if hasattr(options.get("weights"), "dims"):  # a DataArray along frame
        options["weights"] = np.asarray(options["weights"].values)
    series = _waves_of(waves)
    params = stage_parameters(params if params is not None else series.attrs.get("params"), options)
    if params.window is not None:
        from holodask.stages.windows import average_windows_stack

        return average_windows_stack(series, params, client=client).to_dataset()
    return average_stack(series, params, client=client).to_dataset()


@dataclass
class Averaged:
    """What :func:`average_stack` found: the average and the per-frame values, without xarray.

    ``fit`` is the :class:`AverageResult` (None for a single hologram);
    ``frame_values`` the stack's per-frame values that become variables
    (``raw_shift_px`` (N, 2), ``saturated_px``, ``outliers``), ``frame_coords``
    the other per-frame coordinates; ``hdf5_attrs`` the attributes of the
    output's ``data``/``variance``; ``attrs`` those for a reader.
    """

    data: np.ndarray
    variance: np.ndarray | None
    fit: AverageResult | None
    sampling_yx_nm: tuple[float, float]
    frame_index: np.ndarray
    frame_values: dict = field(default_factory=dict)
    frame_coords: dict = field(default_factory=dict)
    coord_attrs: dict = field(default_factory=dict)
    empty: EmptyWave | None = None
    hdf5_attrs: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    def to_dataset(self) -> "xr.Dataset":
        """The result as an :class:`xarray.Dataset` (the names of :func:`holodask.open_result`)."""
        from holodask.accessor import xr

        sy, sx = self.sampling_yx_nm
        ny, nx = self.data.shape
        coords = {"y": ("y", np.arange(ny) * sy, {"units": "nm"}), "x": ("x", np.arange(nx) * sx, {"units": "nm"}),
                  "frame": self.frame_index, "xy": ["x", "y"]}
        coords.update({name: ("frame", values, dict(self.coord_attrs.get(name, {})))
                       for name, values in self.frame_coords.items()})
        variables: dict = {"data": (("y", "x"), self.data)}
        if self.variance is not None:
            variables["variance"] = (("y", "x"), self.variance)
        fit = self.fit
        if fit is not None:
            variables.update({
                "factor": (("frame",), np.asarray(fit.factors, dtype=np.complex128)),
                "shift_nm": (("frame", "xy"), fit.shifts_nm[:, ::-1]),
                "tilt_per_nm": (("frame", "xy"), fit.tilts_per_nm[:, ::-1]),
                "defocus_nm": (("frame",), fit.defocus_nm),
                "error": (("frame",), fit.errors),
            })
            variables["convergence"] = xr.DataArray(np.asarray(fit.convergence, dtype=float), dims=("iteration",),
                                                    coords={"iteration": np.arange(len(fit.convergence))})
        for name, values in self.frame_values.items():
            variables[name] = (("frame", "xy") if np.ndim(values) == 2 else ("frame",), values)
        result = xr.Dataset(variables, coords=coords, attrs={**self.attrs, "hdf5_attrs": self.hdf5_attrs})
        if self.empty is not None:
            result = _with_empty(result, self.empty)
        return result


def _with_empty(result: "xr.Dataset", empty: EmptyWave) -> "xr.Dataset":
    """The Dataset with the empty wave: on the data's y/x when it has the same grid, else on
    empty_y/empty_x; and its holograms' outlier counts along ``empty_frame``."""
    import xarray as xr

    array = empty.compute().to_dataarray()
    if "data" not in result:
        pass
    elif not (array.shape == result["data"].shape[-2:] and np.allclose(array.y.values, result.y.values)
              and np.allclose(array.x.values, result.x.values)):
        array = array.rename({"y": "empty_y", "x": "empty_x"})
    else:
        array = array.assign_coords(y=result.y, x=result.x)
    array.attrs = {"hdf5_attrs": empty.attrs}
    result = result.assign(empty=array)
    if empty.outliers is not None and "data" in result:
        index = empty.frame_index if empty.frame_index is not None else np.arange(len(empty.outliers))
        result = result.assign(empty_outliers=xr.DataArray(np.asarray(empty.outliers, dtype=np.int64),
                                                           dims=("empty_frame",), coords={"empty_frame": index}))
    return result


#: per-frame coordinates of a stack that become variables of the result (or are replaced by the fit)
_FRAME_VARIABLES = ("raw_shift_x_px", "raw_shift_y_px", "saturated_px", "outliers", "defocus_nm", "fringe_contrast",
                    "sideband_shift_x_px", "sideband_shift_y_px", "phase_noise_rad", "weight")
#: attributes of a stack not passed on to a result
_STACK_ONLY_ATTRS = ("empty", "params", "hdf5_attrs", "long_name", "name", "sampling_yx_nm")


def average_stack(series: FrameSeries, params: HoloParams, *, client=None, checkpoint=None) -> Averaged:
    """:func:`average` on a :class:`FrameSeries` of waves (held here first); the rounds'
    states kept in ``checkpoint`` (a :class:`holodask.stages.checkpoint.Checkpoint`)."""
    voltage = series.attrs.get("voltage_kV") or params.voltage_kV
    defocus = np.asarray(series.coords.get("defocus_nm", np.zeros(series.n_frames)), dtype=float)
    if (params.adjust_defocus or np.any(defocus != 0)) and not voltage:
        raise ParameterError("voltage: needed for defocus (the files carry no voltage); give the parameter 'voltage' in kV")
    sampling = _wave_sampling(series)
    series = hold_stack(series, client=client)
    if params.weights is not None and series.n_frames > 1:  # per hologram, kept with it when others are rejected
        from holodask.stages.weights import frame_weights

        weights = frame_weights(series, params)
        if weights is not None:
            series.coords["weight"] = weights
    rejected: dict[int, str] = {}
    if params.reject_outliers is not None:  # low fringe contrast: before any round
        series, rejected = _without(series, _low_contrast(series, params.reject_outliers), rejected)
    held = held_frames(series)
    if len(held) > 1:
        grid = alignment_grid(series.shape[1:], sampling, voltage)

        def rounds(stack: FrameSeries, saved=checkpoint):
            started = time.perf_counter()
            fit = average_series(held_frames(stack), grid, stack.coords.get("defocus_nm"),
                                 iterations=OBJECT_ITERATIONS, fit_shift=params.adjust_shift,
                                 fit_tilt=params.adjust_tilt, fit_defocus=params.adjust_defocus,
                                 defocus_start=DEFOCUS_START, variance=True, tolerance=params.tolerance,
                                 checkpoint=saved, weights=stack.coords.get("weight"))
            log.info("averaging: %d rounds in %.2f s", len(fit.convergence), time.perf_counter() - started)
            return fit

        fit = rounds(series)
        if params.reject_outliers is not None:  # a residual far above the others': once more without them
            high = _high_residual(series, fit.errors, params.reject_outliers)
            if high:
                series, rejected = _without(series, high, rejected)
                fit = rounds(series, None)
        data, variance = fit.wave, fit.variance
    else:
        fit, variance = None, None
        data = propagate(held.frame(0), float(defocus[0]), voltage or 300.0, sampling)
    if rejected:
        log.warning("holodask: %d hologram(s) rejected (reject_outliers %g): %s", len(rejected),
                    params.reject_outliers, "; ".join(f"frame {k} ({why})" for k, why in rejected.items()))
    result = _averaged(series, params, fit, np.asarray(data, dtype=np.complex64), variance, sampling)
    if fit is not None and "weight" in series.coords:  # the weights as given, per hologram
        result.frame_values["weight"] = series.coords["weight"]
        result.hdf5_attrs["weight"] = series.coords["weight"]
    if rejected:
        result.hdf5_attrs["rejected_frames"] = np.array(list(rejected), dtype=np.int64)
        result.attrs["rejected_frames"] = dict(rejected)
    return normalize_averaged(result, params)


def _robust_spread(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 x the median absolute deviation (at least 1e-3 of the median)."""
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    return median, max(spread, 1e-3 * abs(median), 1e-30)


def _low_contrast(series: FrameSeries, sigmas: float) -> dict[int, str]:
    """Frames (positions) whose fringe contrast lies ``sigmas`` robust spreads below the median."""
    contrast = series.coords.get("fringe_contrast")
    if contrast is None or series.n_frames < 3:
        return {}
    median, spread = _robust_spread(np.asarray(contrast))
    return {int(k): f"fringe contrast {contrast[k]:.3f}, median {median:.3f}"
            for k in np.flatnonzero(np.asarray(contrast) < median - sigmas * spread)}


def _high_residual(series: FrameSeries, errors: np.ndarray, sigmas: float) -> dict[int, str]:
    """Frames (positions) whose residual against the average lies ``sigmas`` robust spreads above the median."""
    if series.n_frames < 3:
        return {}
    median, spread = _robust_spread(errors)
    return {int(k): f"residual {errors[k] / median:.1f}x the median" for k in np.flatnonzero(errors > median + sigmas * spread)}


def _without(series: FrameSeries, drop: dict[int, str], rejected: dict[int, str]) -> tuple[FrameSeries, dict]:
    """The held stack without the frames at positions ``drop`` (and the rejections by series index)."""
    if not drop:
        return series, rejected
    if len(drop) >= series.n_frames - 1:
        raise DataError(f"reject_outliers: {len(drop)} of {series.n_frames} holograms would be rejected; "
                        "fewer than two would be left (a larger value rejects fewer)")
    keep = [k for k in range(series.n_frames) if k not in drop]
    rejected = {**rejected, **{int(series.frame_index[k]): why for k, why in drop.items()}}
    coords = {name: np.asarray(values)[keep] for name, values in series.coords.items()}
    kept = FrameSeries(series.name + "-kept", series.graph, [series.keys[k] for k in keep],
                       (len(keep), *series.shape[1:]), series.dtype, np.asarray(series.frame_index)[keep], coords,
                       dict(series.attrs), {}, dict(series.coord_attrs))
    return kept, rejected


def _averaged(series: FrameSeries, params: HoloParams, fit, data, variance, sampling) -> Averaged:
    from holodask.io.holo_hdf5 import hologram_attrs

    aligned = params.enable_raw_alignment and series.n_frames > 1
    coords = series.coords
    frame_values = {}
    raw_shift = None
    if "raw_shift_x_px" in coords:
        raw_shift = np.stack([coords["raw_shift_x_px"], coords["raw_shift_y_px"]], axis=1)
        if aligned:
            frame_values["raw_shift_px"] = raw_shift
    for name in ("saturated_px", "outliers", "fringe_contrast", "phase_noise_rad"):
        if name in coords:
            frame_values[name] = np.asarray(coords[name])
    if "sideband_shift_x_px" in coords:
        frame_values["sideband_shift_px"] = np.stack([coords["sideband_shift_x_px"], coords["sideband_shift_y_px"]],
                                                     axis=1)
    hdf5_attrs = dict(series.attrs.get("hdf5_attrs") or {})
    if fit is not None:
        hdf5_attrs.update(hologram_attrs(
            shift_nm=fit.shifts_nm[:, ::-1], tilt_per_nm=fit.tilts_per_nm[:, ::-1], defocus_nm=fit.defocus_nm,
            factor=fit.factors, error=fit.errors, raw_shift_px=raw_shift if aligned else None,
            convergence=fit.convergence, frame_index=series.frame_index))
    else:
        hdf5_attrs.update(hologram_attrs(frame_index=series.frame_index))
    hdf5_attrs.update(quality_attrs(frame_values))
    attrs = {key: value for key, value in series.attrs.items() if key not in _STACK_ONLY_ATTRS and value is not None}
    attrs["parameters"] = dict(params.raw)
    empty = series.attrs.get("empty")
    return Averaged(data, variance, fit, sampling, np.asarray(series.frame_index), frame_values,
                    {name: values for name, values in coords.items() if name not in _FRAME_VARIABLES},
                    dict(series.coord_attrs), empty if isinstance(empty, EmptyWave) else None, hdf5_attrs, attrs)


#: per-hologram quality: variable -> output attribute of ``data``/``variance``
QUALITY_ATTRS = {"fringe_contrast": "fringe_contrast", "sideband_shift_px": "sideband_shift(px)",
                 "phase_noise_rad": "phase_noise(rad)"}


def quality_attrs(frame_values: dict) -> dict:
    """The per-hologram quality as attributes of the output's ``data`` (one value per hologram)."""
    return {attr: np.asarray(frame_values[name], dtype=np.float64) for name, attr in QUALITY_ATTRS.items()
            if name in frame_values}


def empty_dataset(empty: EmptyWave, params: HoloParams) -> "xr.Dataset":
    """The Dataset of a run with empty holograms only: the averaged empty wave (and the
    outliers replaced in each empty hologram, as ``outliers`` along ``frame``)."""
    from holodask.accessor import xr

    empty = empty.compute()
    array = empty.to_dataarray()
    array.attrs = {"hdf5_attrs": empty.attrs}
    variables = {"empty": array}
    if empty.outliers is not None:
        variables["outliers"] = xr.DataArray(np.asarray(empty.outliers, dtype=np.int64), dims=("frame",))
    return xr.Dataset(variables, attrs={"parameters": dict(params.raw), "hdf5_attrs": empty.attrs})
