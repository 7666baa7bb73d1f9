"""``holodask run``: the parameters, the stages, the writers.

The same public stages a notebook user calls, composed:

1. the object and empty series opened lazily (:func:`holodask.series.open_frame_series`),
   outliers repaired with ``outlier_cutoff``;
2. :func:`holodask.reconstruct`: raw alignment, the empty wave (averaged from
   an empty series, read from ``empty_override``, synthesised, or none) and
   every hologram reconstructed and normalised, as one lazy graph;
3. :func:`holodask.hold`: the stack computed once and kept (memory, the
   workers, or a Zarr store) while the optional ``series`` and
   ``aligned_rois`` are written;
4. :func:`holodask.average`: iterative averaging (one hologram: propagated to
   Gaussian focus);
5. the output file in the reference layout (``data``, ``variance``,
   ``empty``, ``series``, ``aligned_rois``), written atomically, or, without
   ``output_name``, the Dataset returned and nothing written.

The stages run on :class:`holodask.series.FrameSeries` (the frames as tasks of a
graph: ``reconstruct_stack``, ``hold_stack``, ``average_stack``), which the
public functions wrap into xarray objects; a run that writes its file builds
none, so that it does not pay for importing xarray and ``dask.array``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from dask.base import tokenize

from holodask import fft
from holodask.align import correlation_window
from holodask.errors import HolodaskError, ParameterError
from holodask.hologram import extract_roi
from holodask.normalise import factor_grid
from holodask.params import HoloParams, load_parameters
from holodask.series import FrameSeries
from holodask.stages.averaging import (
    DEFOCUS_START,
    OBJECT_ITERATIONS,
    Averaged,
    average_stack,
    empty_dataset,
    held_frames,
    hold_stack,
    stored_stack,
)
from holodask.stages.reconstruction import (
    EMPTY_ITERATIONS,
    check_roi,
    empty_for,
    open_checked_series,
    raw_shifts,
    reconstruct_stack,
    repair_stack,
    sideband_geometry_of,
)
from holodask.stages.rounds import compute_graph

if TYPE_CHECKING:  # built only where a Dataset is returned
    import xarray as xr

__all__ = ["run", "EMPTY_ITERATIONS", "OBJECT_ITERATIONS", "DEFOCUS_START"]

log = logging.getLogger("holodask")


def _output_file(params: HoloParams):
    """The atomic writer of the output file, or nothing (no ``output_name``: in memory)."""
    if not params.output_name:
        return contextlib.nullcontext(None)
    from holodask.io.holo_hdf5 import HoloOutputFile

    return HoloOutputFile(Path(params.output_name), prefix=params.output_prefix, protected=params.protected_paths())


def run(params, basepath=None, client=None, *, load: bool = True, resume: bool = False) -> "xr.Dataset | Path":
    """Reconstruct and average as the parameters say; write the output file if they name one.

    Parameters
    ----------
    params : HoloParams, parameter file path, ``"-"`` or dict.
    basepath : folder relative paths are taken from (when ``params`` is not a HoloParams).
    client : ``dask.distributed.Client`` to run on (None: the client of an enclosing
        :func:`holodask.cluster.compute_context`, else local threads).
    load : return the results as a Dataset (False: the output file's path).
    resume : keep checkpoints (:mod:`holodask.stages.checkpoint`) and continue from those of
        an earlier run with the same parameters and inputs that was killed.

    Returns
    -------
    xarray.Dataset of the results: read back from the file written (see
    :func:`holodask.results.open_result`), or, without ``output_name``, computed
    in memory (:func:`holodask.average`'s Dataset) with nothing written; or the
    output file's path.
    """
    from holodask.cluster import current_client, current_scratch
    from holodask.io.qpimage_export import check_run_export, export_run
    from holodask.memory import default_spill_base, spill_folder

    if not isinstance(params, HoloParams):
        params = load_parameters(params, basepath)
    if client is None:
        client = current_client()
    if params.object_series is None and params.empty_series is None and not params.synthesize_empty:
        raise ParameterError("object_names: nothing to do (neither object_names nor empty_names given)")
    if params.output_qpimage and not params.output_name:
        raise ParameterError("output_qpimage: needs 'output_name' (a run without it writes nothing)")
    objects = None
    if params.object_series is not None:
        objects = open_checked_series(params.object_series, params)
    if params.window is not None or params.weights is not None:
        from holodask.stages.windows import check_run_windows

        check_run_windows(params, objects)
    if params.output_qpimage:
        check_run_export(params, Path(params.output_name), objects.attrs.get("voltage_kV") if objects else None)
    checkpoint = None
    if resume and objects is not None and not params.only_align:
        from holodask.stages.checkpoint import Checkpoint

        checkpoint = Checkpoint.open(params, current_scratch())
    if client is not None:
        _share_fft_plans(params, objects, client)
    spill_base = current_scratch() or default_spill_base(params.output_name)
    with spill_folder(spill_base), _output_file(params) as out:
        if objects is None:
            result = _empty_only(params, out)
        elif params.only_align:
            result = _align_only(objects, params, out, client)
        else:
            result, waves = _reconstruct_and_average(objects, params, out, client, checkpoint)
            if out is None:  # in memory: the Dataset, with the reconstructions where asked for
                result = result.to_dataset()
                if params.output_series:
                    result = result.assign(series=waves.to_dataarray().reset_coords(drop=True).rename("series"))
    if checkpoint is not None:  # the output is written: the checkpoint has done its work
        checkpoint.remove()
    if not params.output_name:
        return result
    output = Path(params.output_name)
    export_run(params, output)
    if not load:
        return output
    if params.only_align:
        return result
    from holodask.results import open_result

    return open_result(output, params.output_prefix).load()


def _empty_only(params: HoloParams, out):
    """A run with empty holograms only: their averaged wave (a Dataset in memory)."""
    empty = empty_for(None, params)
    if empty is None:
        raise ParameterError("object_names: nothing to do (neither object_names nor empty_names given)")
    empty = empty.compute()
    if out is None:
        return empty_dataset(empty, params)
    if empty.write:
        out.write_dataset("empty", empty.wave, empty.attrs)
    return None


def _align_only(objects: FrameSeries, params: HoloParams, out, client) -> "xr.Dataset":
    """``only_align``: the raw drift, and the drift-moved ROIs written as ``aligned_rois``."""
    import xarray as xr

    objects = repair_stack(objects, params)
    shifts = raw_shifts(objects, params)
    if out is not None:
        _write_aligned_rois(out, objects, params, shifts, client)
        if "outliers" in objects.coords:
            from holodask.outliers import write_outlier_counts  # (imports dask.array)

            write_outlier_counts(out, objects.coords["outliers"], params)
    return xr.Dataset({"raw_shift_px": (("frame", "xy"), shifts)},
                      coords={"frame": objects.frame_index, "xy": ["x", "y"]},
                      attrs={"source": str(params.output_name), "prefix": params.output_prefix})


def _reconstruct_and_average(objects: FrameSeries, params: HoloParams, out, client,
                             checkpoint=None) -> tuple[Averaged, FrameSeries]:
    objects = repair_stack(objects, params)
    shifts = None
    if checkpoint is not None:
        shifts = checkpoint.raw_shifts()
        if shifts is None:
            shifts = _drift(objects, params)
            checkpoint.save_raw_shifts(shifts)
    else:
        # the drift first, on its own: the written ROIs need it, and the normalisation factors
        # then are tasks of their own, one per ROI position (hold_stack would compute a lazy
        # drift first too: in one graph its fan-in makes Dask's ordering grow with N^2)
        shifts = _drift(objects, params)
    waves = reconstruct_stack(objects, params, raw_shifts=shifts)
    waves = _held(waves, client, checkpoint)
    params = waves.attrs["params"]  # with what was found (sideband_pos, ...)
    if out is not None:
        empty = waves.attrs["empty"]
        if empty is not None and empty.write:
            out.write_dataset("empty", empty.wave, empty.attrs)
        if params.output_aligned:  # (the drift is known whenever the ROIs are asked for)
            _write_aligned_rois(out, objects, params, shifts, client)
        if params.output_series:
            _write_series(out, waves, params)
    if params.window is not None:  # window averages along the series (the checkpoint keeps no rounds)
        from holodask.stages.windows import average_windows_stack

        result = average_windows_stack(waves, params, client=client)
    else:
        result = average_stack(waves, params, client=client, checkpoint=checkpoint)
    if out is not None:
        out.write_dataset("data", result.data, result.hdf5_attrs)
        if result.variance is not None:
            out.write_dataset("variance", result.variance, result.hdf5_attrs)
        if "outliers" in result.frame_values:
            from holodask.outliers import write_outlier_counts  # (imports dask.array)

            write_outlier_counts(out, result.frame_values["outliers"], params)
    return result, waves


def _drift(objects: FrameSeries, params: HoloParams) -> np.ndarray:
    """The raw drift of every hologram (:func:`raw_shifts`), computed now; its time said with -v."""
    started = time.perf_counter()
    shifts = raw_shifts(objects, params)
    if params.enable_raw_alignment and objects.n_frames > 1:
        log.info("raw alignment: %d holograms in %.2f s", objects.n_frames, time.perf_counter() - started)
    return shifts


def _held(waves: FrameSeries, client, checkpoint) -> FrameSeries:
    """The reconstructed stack held for the rounds: in the checkpoint's store when there is
    one (read back when an earlier run completed it), else where the budget allows."""
    if checkpoint is None:
        return hold_stack(waves, client=client)
    kept = checkpoint.frames()
    if kept is None:
        held = hold_stack(waves, client=client, store=checkpoint.frames_store)
        checkpoint.save_frames({name: held.coords[name] for name in waves.lazy_coords})
        return held
    log.info("reconstruction: %d holograms read back from the checkpoint", waves.n_frames)
    return stored_stack(waves, checkpoint.frames_store, kept, client)


def _frame_attrs(waves: FrameSeries, params: HoloParams) -> dict:
    """The per-frame attributes of ``series``: raw drift and series indices."""
    from holodask.io.holo_hdf5 import hologram_attrs

    aligned = params.enable_raw_alignment and waves.n_frames > 1
    shifts = None
    if aligned and "raw_shift_x_px" in waves.coords:
        shifts = np.stack([waves.coords["raw_shift_x_px"], waves.coords["raw_shift_y_px"]], axis=1)
    return hologram_attrs(raw_shift_px=shifts, frame_index=waves.frame_index)


def _write_series(out, waves: FrameSeries, params: HoloParams) -> None:
    """The held reconstructions as ``series`` (one frame at a time)."""
    held = held_frames(waves)
    attrs = dict(waves.attrs["hdf5_attrs"])
    attrs.update(_frame_attrs(waves, params))
    out.write_frames("series", (held.frame(k) for k in range(len(held))), attrs,
                     as_dataset=params.output_series_as_dataset)


def _write_aligned_rois(out, series: FrameSeries, params: HoloParams, shifts, client) -> None:
    """The drift-moved ROI of every raw hologram as ``aligned_rois`` (one at a time)."""
    from holodask.io.holo_hdf5 import hologram_attrs, standard_attrs

    camera_shape = tuple(int(s) for s in series.shape[1:])
    roi = check_roi(params.roi, camera_shape, "roi")
    align_region = check_roi(params.align_roi_or_roi, camera_shape, "align_roi")
    sampling = params.sampling_nm or series.attrs.get("sampling_nm") or 1.0
    attrs = standard_attrs(params, sampling_nm=sampling, offset_nm=(roi[0] * sampling, roi[1] * sampling),
                           voltage_kV=series.attrs.get("voltage_kV"), binning=int(series.attrs.get("binning") or 1),
                           microscope=series.attrs.get("microscope"), detector=series.attrs.get("detector"), roi=roi,
                           align_roi=align_region if params.enable_raw_alignment else None)
    aligned = params.enable_raw_alignment and series.n_frames > 1
    attrs.update(hologram_attrs(raw_shift_px=shifts if aligned else None, frame_index=series.frame_index))
    out.write_frames("aligned_rois", _aligned_rois(series, shifts, roi, client), attrs,
                     as_dataset=params.output_series_as_dataset)


def _share_fft_plans(params: HoloParams, objects, client) -> None:
    """Plan the transforms of this run here and give the plans to every worker
    (and the worker set-up of :func:`holodask.cluster.register_worker_setup`).

    Workers then compute exactly what a local run computes (FFTW's measured
    plans otherwise differ between processes in the last bits).
    """
    from holodask import normalise as normalise_module
    from holodask import hologram as reconstruct_module
    from holodask.align import correlation_fft_plans
    from holodask.cluster import register_worker_setup

    register_worker_setup(client)

    plans = []  # (kind, shape, out_shape, axis)
    for size in {params.object_size, params.empty_size} - {None}:
        plans += [("fft2", (size, size), None, None), ("ifft2", (size, size), None, None)]
    if objects is not None:
        camera_shape = tuple(int(s) for s in objects.shape[1:])
        region = params.roi if params.roi is not None else (0, 0, camera_shape[1], camera_shape[0])
        roi_shape = (region[3] - region[1], region[2] - region[0])
        sampling = params.sampling_nm or objects.attrs.get("sampling_nm")
        geometries = []
        if params.sideband_pos_px is None:  # found later, on the first hologram: planned where used
            sampling = None
        if sampling and params.object_size:
            geometries.append((roi_shape, params.object_size))
        if sampling and params.empty_series is not None and (params.empty_size or params.object_size):
            geometries.append((camera_shape, params.empty_size or params.object_size))
        for shape, size in geometries:
            try:
                geometry = sideband_geometry_of(params, shape, camera_shape, sampling, int(size), 1,
                                                use_mtf=False, dtype=objects.dtype)
            except HolodaskError:
                continue
            plans += reconstruct_module.fft_plans(geometry)
        if params.object_size:
            size = int(params.object_size)
            grid = factor_grid(roi_shape, (size, size))
            if grid is not None:
                plans += normalise_module.fft_plans((size, size), grid, (size, size))
                plans += normalise_module.factor_fft_plans(roi_shape, grid)
        region = params.align_roi_or_roi or (0, 0, camera_shape[1], camera_shape[0])
        shape = (region[3] - region[1], region[2] - region[0])
        cut_off = params.align_cut_off_per_nm or params.cut_off_per_nm
        if sampling and shape[0] > 0 and shape[1] > 0:
            plans += correlation_fft_plans(correlation_window(shape, sampling, cut_off))
    for kind, shape, out_shape, axis in plans:
        try:
            fft.prepare(kind, shape, out_shape, axis=axis)
        except (ValueError, TypeError):  # a bad shape is reported later, with its parameter
            pass
    wisdom = fft.export_wisdom()
    if wisdom is not None:
        client.run(fft.import_wisdom, wisdom)


def _roi_frame(block, shift_xy, roi):
    return extract_roi(block[0], roi, shift_xy)


def _aligned_rois(objects: FrameSeries, shifts, roi, client):
    """The drift-moved ROI of every raw frame, computed and yielded one at a time (each
    from the tasks it needs only: the whole graph at every frame would cost time growing
    with the square of the series' length)."""
    from dask.optimization import cull

    name = "aligned-roi-" + tokenize(objects.name, shifts, roi)
    dsk = dict(objects.graph)
    for k in range(objects.n_frames):
        dsk[(name, k)] = (_roi_frame, objects.frame_task(k), tuple(int(v) for v in shifts[k]), roi)
    for k in range(objects.n_frames):
        needed, _ = cull(dsk, [(name, k)])
        yield np.asarray(compute_graph(needed, [(name, k)], client)[0])
