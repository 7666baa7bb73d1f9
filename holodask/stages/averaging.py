"""The averaging stage: :func:`hold` computes a reconstructed stack once and keeps it,
:func:`average` aligns and averages it into a Dataset (the iterative scheme of
:mod:`holodask.stages.rounds`).
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from typing import TYPE_CHECKING

import numpy as np

from holodask.align import alignment_grid
from holodask.errors import DataError, ParameterError
from holodask.optics import propagate
from holodask.params import HoloParams, stage_parameters
from holodask.series import FrameSeries
from holodask.stages.reconstruction import EmptyWave
from holodask.stages.rounds import AverageResult, HeldFrames, StoredFrame, average_series, current_store_dir, hold_frames

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["hold", "average", "result_dataset", "held_frames", "OBJECT_ITERATIONS", "DEFOCUS_START"]

log = logging.getLogger("holodask")

#: averaging rounds after the first, and the round the defocus fit starts with (the reference's)
OBJECT_ITERATIONS = 7
DEFOCUS_START = 4

#: frame coordinates of a reconstructed stack that become variables of the result
_FRAME_VARIABLES = ("raw_shift_x_px", "raw_shift_y_px", "saturated_px", "outliers", "defocus_nm")


def _stored_block(stored: StoredFrame) -> np.ndarray:
    return stored.load()[np.newaxis]


def _graph_value(value):
    """A graph entry as the value it holds (Dask's data nodes unwrapped)."""
    inner = getattr(value, "value", None)
    if inner is not None and type(value).__name__ == "DataNode":
        return inner
    return value


def held_frames(waves: "xr.DataArray") -> HeldFrames | None:
    """The frames of a stack that :func:`hold` made (or a numpy-backed one), else None."""
    import dask.array as da
    from dask.core import flatten

    data = waves.data
    if not isinstance(data, da.Array):
        values = np.asarray(data)
        return HeldFrames([values[k] for k in range(values.shape[0])])
    if any(len(chunks) != 1 for chunks in data.chunks[1:]) or any(c != 1 for c in data.chunks[0]):
        return None
    graph = data.__dask_graph__()
    items, client = [], None
    for key in flatten(data.__dask_keys__()):
        value = _graph_value(graph.get(key))
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


def _held_array(held: HeldFrames, shape, dtype):
    """A Dask array whose chunks are the held frames (as :meth:`dask.persist` gives)."""
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    name = "held-" + uuid.uuid4().hex
    dsk = {}
    for k, item in enumerate(held.items):
        if isinstance(item, StoredFrame):
            dsk[(name, k, 0, 0)] = (_stored_block, item)
        elif isinstance(item, np.ndarray):
            dsk[(name, k, 0, 0)] = item if item.ndim == 3 else item[np.newaxis]
        else:
            dsk[(name, k, 0, 0)] = item
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, chunks=((1,) * len(held.items), (shape[0],), (shape[1],)), dtype=dtype)


def _lazy_frame_coords(waves: "xr.DataArray") -> dict:
    """The Dask-backed per-frame coordinates of a stack (computed with its frames)."""
    import dask.array as da

    return {name: coord.data for name, coord in waves.coords.items()
            if coord.dims == ("frame",) and isinstance(coord.data, da.Array)}


def hold(waves: "xr.DataArray", *, client=None, store_dir=None) -> "xr.DataArray":
    """Compute a reconstructed stack once and keep it, like :meth:`xarray.DataArray.persist`.

    The frames stay in this process's memory (threads), on the workers that
    computed them (a distributed client: the stack's chunks become futures),
    or in a Zarr store under ``store_dir`` (one frame per chunk, read back
    where used: memory stays bounded). The lazy per-frame coordinates (raw
    drift, saturated pixels) and a lazy empty wave are computed in the same
    pass. A stack already held is returned as it is.
    """
    from dask.core import flatten

    from holodask.cluster import current_client
    from holodask.stages.reconstruction import _FACTORS

    if client is None:
        client = current_client()
    if store_dir is None:
        store_dir = current_store_dir()
    if held_frames(waves) is not None and not _lazy_frame_coords(waves):
        return waves
    series = FrameSeries.from_dataarray(waves, coords=False)
    dsk = dict(series.graph)
    lazy = _lazy_frame_coords(waves)
    also, parts = [], {}
    for name, array in lazy.items():
        dsk.update(dict(array.__dask_graph__()))
        parts[name] = list(flatten(array.__dask_keys__()))
        also += parts[name]
    empty = waves.attrs.get("empty")
    if isinstance(empty, EmptyWave) and empty.lazy:
        dsk.update(empty.dsk)
        also.append(empty.key)
    started = time.perf_counter()
    held, values = hold_frames(dsk, series.keys, series.shape[1:], client, store_dir, also=also)
    _FACTORS.clear()
    log.info("reconstruction: %d holograms in %.2f s", series.n_frames, time.perf_counter() - started)
    computed = dict(zip(also, values))
    attrs = dict(waves.attrs)
    if isinstance(empty, EmptyWave) and empty.lazy:
        attrs["empty"] = empty.with_value(computed[empty.key])
    result = waves.copy(data=_held_array(held, series.shape[1:], waves.dtype))
    result.attrs = attrs
    coords = {name: ("frame", np.concatenate([np.atleast_1d(computed[key]) for key in keys]),
                     dict(waves.coords[name].attrs))
              for name, keys in parts.items()}
    if "saturated_px" in coords and waves.attrs.get("roi") is not None:
        left, top, right, bottom = waves.attrs["roi"]
        _warn_saturation(coords["saturated_px"][1], series.frame_index, (right - left) * (bottom - top))
    return result.assign_coords(coords)


#: fraction of saturated pixels above which a hologram is reported
SATURATION_FRACTION = 1e-3


def _warn_saturation(counts, frame_index, pixels: int) -> None:
    saturated = [int(i) for i, c in zip(frame_index, counts) if c > SATURATION_FRACTION * pixels]
    if saturated:
        shown = ", ".join(str(i) for i in saturated[:20]) + (" ..." if len(saturated) > 20 else "")
        warnings.warn(f"frames {shown} have many saturated pixels (at the maximum of their integer type)")


def _wave_sampling(waves: "xr.DataArray") -> tuple[float, float]:
    """(y, x) pixel size in nm of a reconstructed stack, from its coordinates."""
    sampling = []
    for dim in ("y", "x"):
        coord = waves.coords.get(dim)
        if coord is None or coord.size < 2 or coord.attrs.get("units", "nm") != "nm":
            value = waves.attrs.get("sampling_nm")
            if value is None:
                raise ParameterError("sampling: the waves have no y/x coordinates in nm; "
                                     "give them (units 'nm') or an attribute 'sampling_nm'")
            sampling.append(float(value))
        else:
            values = coord.values
            sampling.append(float(values[1] - values[0]))
    return sampling[0], sampling[1]


def _as_wave_stack(waves) -> "xr.DataArray":
    import xarray as xr

    from holodask.stages.reconstruction import as_hologram_stack

    if isinstance(waves, xr.Dataset):
        if "series" not in waves:
            raise DataError("waves: the Dataset holds no 'series' of reconstructed waves")
        waves = waves["series"]
    array = as_hologram_stack(waves, "waves")
    if not np.iscomplexobj(np.empty(0, array.dtype)):
        raise DataError("waves: expected complex reconstructed waves (holodask.reconstruct), got "
                        f"{array.dtype} values (holograms?)")
    return array


def average(waves, params=None, *, client=None, **options) -> "xr.Dataset":
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
        (lazy or held by :func:`hold`), with ``y``/``x`` in nm.
    params : HoloParams, parameter file or dict, optional
        Default: the parameters the waves were reconstructed with.
    client : distributed.Client, optional
        Default: the client of an enclosing
        :func:`holodask.cluster.compute_context`, else local threads.
    **options
        Parameters by their parameter-file names: ``adjust_shift``,
        ``adjust_tilt``, ``adjust_defocus``, ``voltage``, ``defocus_first``, ...

    Returns
    -------
    xarray.Dataset
        ``data`` (the averaged wave, complex64), ``variance`` (float32) and
        ``empty`` when known; per hologram along ``frame``: ``factor``,
        ``shift_nm`` and ``tilt_per_nm`` (axis ``xy``), ``defocus_nm``,
        ``error``, ``raw_shift_px``, ``saturated_px``, ``outliers``;
        ``convergence`` along ``iteration``: the names of
        :func:`holodask.open_result`.
    """
    waves = _as_wave_stack(waves)
    base = params if params is not None else waves.attrs.get("params")
    params = stage_parameters(base, options)
    voltage = waves.attrs.get("voltage_kV") or params.voltage_kV
    defocus = (np.asarray(waves.coords["defocus_nm"].values, dtype=float) if "defocus_nm" in waves.coords
               else np.zeros(waves.sizes["frame"]))
    if (params.adjust_defocus or np.any(defocus != 0)) and not voltage:
        raise ParameterError("voltage: needed for defocus (the files carry no voltage); give the parameter 'voltage' in kV")
    sampling = _wave_sampling(waves)
    waves = hold(waves, client=client)
    held = held_frames(waves)
    if len(held) > 1:
        started = time.perf_counter()
        grid = alignment_grid(waves.shape[1:], sampling, voltage)
        result = average_series(held, grid, defocus, iterations=OBJECT_ITERATIONS, fit_shift=params.adjust_shift,
                                fit_tilt=params.adjust_tilt, fit_defocus=params.adjust_defocus,
                                defocus_start=DEFOCUS_START, variance=True)
        log.info("averaging: %d rounds in %.2f s", len(result.convergence), time.perf_counter() - started)
    else:
        result = propagate(held.frame(0), float(defocus[0]), voltage or 300.0, sampling)
    return result_dataset(waves, result, params)


def _image(values, like: "xr.DataArray", name: str) -> "xr.DataArray":
    import xarray as xr

    return xr.DataArray(values, dims=("y", "x"), coords={"y": like.coords["y"], "x": like.coords["x"]}, name=name)


def _empty_variable(empty: EmptyWave, data: "xr.DataArray") -> "xr.DataArray":
    """The empty wave on the data's y/x when it has the same grid, else on empty_y/empty_x."""
    import xarray as xr

    empty = empty.compute()
    array = empty.to_dataarray()
    same = (array.shape == data.shape and np.allclose(array.y.values, data.y.values)
            and np.allclose(array.x.values, data.x.values))
    if not same:
        array = array.rename({"y": "empty_y", "x": "empty_x"})
    array.attrs = {"hdf5_attrs": empty.attrs}
    if empty.outliers is not None and empty.frame_index is not None:
        array.attrs["outliers"] = empty.outliers
    return xr.DataArray(array)


def result_dataset(waves: "xr.DataArray", result, params: HoloParams) -> "xr.Dataset":
    """The Dataset of :func:`average`: the average (an :class:`AverageResult`, or the wave of a
    single hologram) with the per-frame fit, the stack's per-frame values and attributes."""
    import xarray as xr

    from holodask.io.holo_hdf5 import hologram_attrs

    n_frames = waves.sizes["frame"]
    frame_index = np.asarray(waves.coords["frame"].values)
    aligned = params.enable_raw_alignment and n_frames > 1
    raw_shift = None
    if "raw_shift_x_px" in waves.coords:
        raw_shift = np.stack([waves.coords["raw_shift_x_px"].values, waves.coords["raw_shift_y_px"].values], axis=1)
    wave = result.wave if isinstance(result, AverageResult) else result
    data = _image(np.asarray(wave, dtype=np.complex64), waves, "data")
    variables = {"data": data}
    hdf5_attrs = dict(waves.attrs.get("hdf5_attrs") or {})
    if isinstance(result, AverageResult):
        variables["variance"] = _image(result.variance, waves, "variance")
        frame = ("frame",)
        variables.update({
            "factor": (frame, np.asarray(result.factors, dtype=np.complex128)),
            "shift_nm": (("frame", "xy"), result.shifts_nm[:, ::-1]),
            "tilt_per_nm": (("frame", "xy"), result.tilts_per_nm[:, ::-1]),
            "defocus_nm": (frame, result.defocus_nm),
            "error": (frame, result.errors),
        })
        hdf5_attrs.update(hologram_attrs(
            shift_nm=result.shifts_nm[:, ::-1], tilt_per_nm=result.tilts_per_nm[:, ::-1],
            defocus_nm=result.defocus_nm, factor=result.factors, error=result.errors,
            raw_shift_px=raw_shift if aligned else None, convergence=result.convergence, frame_index=frame_index))
        variables["convergence"] = xr.DataArray(np.asarray(result.convergence, dtype=float), dims=("iteration",),
                                                coords={"iteration": np.arange(len(result.convergence))})
    else:
        hdf5_attrs.update(hologram_attrs(frame_index=frame_index))
    if raw_shift is not None and aligned:
        variables["raw_shift_px"] = (("frame", "xy"), raw_shift)
    for name in ("saturated_px", "outliers"):
        if name in waves.coords:
            variables[name] = (("frame",), np.asarray(waves.coords[name].values))
    empty = waves.attrs.get("empty")
    if isinstance(empty, EmptyWave):
        variables["empty"] = _empty_variable(empty, data)
        if empty.outliers is not None:
            variables["empty_outliers"] = xr.DataArray(
                np.asarray(empty.outliers, dtype=np.int64), dims=("empty_frame",),
                coords={"empty_frame": (empty.frame_index if empty.frame_index is not None
                                        else np.arange(len(empty.outliers)))})
    coords = {"frame": frame_index, "xy": ["x", "y"]}
    coords.update({name: ("frame", coord.values, dict(coord.attrs)) for name, coord in waves.coords.items()
                   if coord.dims == ("frame",) and name != "frame" and name not in _FRAME_VARIABLES})
    attrs = {key: value for key, value in waves.attrs.items()
             if key not in ("empty", "params", "hdf5_attrs", "long_name") and value is not None}
    attrs["parameters"] = dict(params.raw)
    attrs["hdf5_attrs"] = hdf5_attrs
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def empty_dataset(empty: EmptyWave, params: HoloParams) -> "xr.Dataset":
    """The Dataset of a run with empty holograms only: the averaged empty wave."""
    import xarray as xr

    empty = empty.compute()
    array = empty.to_dataarray()
    array.attrs = {"hdf5_attrs": empty.attrs}
    variables = {"empty": array}
    if empty.outliers is not None:
        variables["outliers"] = xr.DataArray(np.asarray(empty.outliers, dtype=np.int64), dims=("frame",))
    return xr.Dataset(variables, attrs={"parameters": dict(params.raw), "hdf5_attrs": empty.attrs})
