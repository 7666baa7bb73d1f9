"""The whole reconstruction as Dask graphs: ``holodask run``.

Each stage is a plain Dask task graph run by the scheduler of the current
context (:func:`holodask.average.compute_graph`: Dask's threaded scheduler, or
a distributed client); frames are read inside the tasks that use them, and no
stage gathers the frames on the client. Stages:

1. empty wave: averaged from an empty series, read from ``empty_override``,
   synthesised from ``camera_distortions``, or none (ones);
2. raw alignment of the object series: consecutive holograms phase-correlated
   in parallel inside ``align_roi``, shifts summed along the series;
3. the ROI cut out of each hologram following its drift (``aligned_rois``);
4. reconstruction of each ROI and normalisation by the empty wave;
5. iterative averaging (:func:`holodask.average.average_series`) or, for one
   hologram, propagation to Gaussian focus;
6. the output file in the reference layout (``data``, ``variance``, ``empty``,
   ``series``, ``aligned_rois``), written atomically.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from dask.base import tokenize

from holodask.align import alignment_grid, correlate_spectra, correlation_window, window_spectrum
from holodask.average import average_series, compute_graph, current_store_dir, hold_frames
from holodask.errors import DataError, HolodaskError, InputFileError, ParameterError
from holodask import fft
from holodask.optics import carrier_per_nm, fourier_rescale, propagate
from holodask.params import HoloParams, load_parameters
from holodask.normalise import ConstantEmpty, factor_grid, normalisation_factor, normalise, normalise_with_factor
from holodask.reconstruct import (
    SidebandGeometry,
    extract_roi,
    reconstruct_hologram,
    sideband_geometry,
)

if TYPE_CHECKING:  # built only where a Dataset is returned
    import xarray as xr

from holodask.series import FrameSeries

__all__ = ["run", "EMPTY_ITERATIONS", "OBJECT_ITERATIONS", "DEFOCUS_START"]

log = logging.getLogger("holodask")

EMPTY_ITERATIONS = 4
OBJECT_ITERATIONS = 7
DEFOCUS_START = 4
#: fraction of saturated pixels above which a frame is reported
SATURATION_FRACTION = 1e-3


# ------------------------------------------------------------------ opening series


def _open(series_spec, params: HoloParams) -> FrameSeries:
    """Open a SeriesSpec (headers only): its frames as tasks of a graph, with series indices."""
    from holodask.series import open_frame_series

    return open_frame_series(series_spec, params, basepath=params.basepath)


def _repair(series: FrameSeries, params: HoloParams, client):
    """The series with its outliers repaired (``outlier_cutoff``) and the counts per frame."""
    from holodask.average import scheduler_of
    from holodask.outliers import repair_series

    repaired, counts = repair_series(series.to_dataarray(), params.outlier_cutoff, scheduler_of(client))
    return FrameSeries.from_dataarray(repaired), counts


def _sampling(array: FrameSeries, params: HoloParams, what: str) -> float:
    sampling = params.sampling_nm if params.sampling_nm is not None else array.attrs.get("sampling_nm")
    if sampling is None or not np.isfinite(sampling) or sampling <= 0:
        raise ParameterError(
            f"sampling: the {what} files carry no pixel size; give the parameter 'sampling' in nm"
        )
    return float(sampling)


def _check_roi(roi, shape, name: str) -> tuple[int, int, int, int]:
    height, width = shape
    if roi is None:
        return (0, 0, width, height)
    left, top, right, bottom = (int(v) for v in roi)
    if right <= left or bottom <= top:
        raise ParameterError(
            f"{name}: [{left}, {top}, {right}, {bottom}] is empty or inverted; "
            "expected [left, top, right, bottom] with right > left and bottom > top"
        )
    if left < 0 or top < 0 or right > width or bottom > height:
        raise ParameterError(
            f"{name}: [{left}, {top}, {right}, {bottom}] reaches outside the "
            f"{width} x {height} px image"
        )
    return (left, top, right, bottom)


def _check_sideband(params: HoloParams, shape) -> None:
    height, width = shape
    x, y = params.sideband_pos_px
    if not (0 <= x < width and 0 <= y < height):
        raise ParameterError(
            f"sideband_pos: [{x:g}, {y:g}] lies outside the {width} x {height} px Fourier transform "
            "of the holograms; expected 0 <= x < width and 0 <= y < height"
        )


# ------------------------------------------------------------------ per-frame tasks


def _check_finite(frame: np.ndarray, label: str, source: str) -> None:
    """One clear error for a float frame holding NaN or Inf pixels."""
    if frame.dtype.kind in "fc" and not np.isfinite(frame).all():
        raise DataError(f"{label} of {source} holds NaN or Inf pixels")


def _align_spectrum_frame(block, region, window, label, source):
    """Windowed spectrum of the alignment region of one raw frame block (1, H, W)."""
    frame = block[0]
    _check_finite(frame, label, source)
    left, top, right, bottom = region
    return window_spectrum(frame[top:bottom, left:right], window)


def _correlate_block(previous, current, window):
    dx, dy = correlate_spectra(previous, current, window)
    return np.array([[dx, dy]], dtype=np.int64)


def _roi_frame(block, shift_xy, roi):
    return extract_roi(block[0], roi, shift_xy)


def _saturation_count(roi_pixels: np.ndarray) -> int:
    """Pixels at the maximum of their integer type (in the drift-moved ROI of a raw frame)."""
    if roi_pixels.dtype.kind not in "iu":
        return 0
    return int(np.count_nonzero(roi_pixels == np.iinfo(roi_pixels.dtype).max))


def _reconstruct_frame(block, shift_xy, factor, geometry: SidebandGeometry, big_empty, roi, label, source,
                       out_shape):
    """One raw frame block (1, H, W) to its normalised wave (ny, nx) (ROI, sideband, empty),
    with the number of saturated pixels in its ROI."""
    frame = extract_roi(block[0], roi, shift_xy)
    saturated = _saturation_count(frame)
    _check_finite(frame, label, source)
    wave = reconstruct_hologram(frame, geometry)
    if factor is not None:
        wave = normalise_with_factor(wave, factor, out_shape)
    elif big_empty is not None:
        wave = normalise(wave, big_empty, roi, shift_xy, out_shape)
    return wave, saturated


def _reconstruction_graph(objects: FrameSeries, shifts, roi, geometry, big_empty, factor_grid, source, out_shape,
                          client=None):
    """Tasks reconstructing every frame and counting the saturated pixels of its ROI.

    One task per frame reads the frame, extracts the drift-moved ROI, counts
    its saturated pixels and reconstructs and normalises it. Large constants (the empty wave at camera
    size, the sideband geometry) are scattered once to every worker with a
    distributed client and are single keys of the graph otherwise.

    Returns
    -------
    (dsk, keys): the graph and the keys of the ``(wave, saturated pixels)`` pairs,
    wave (ny, nx) complex64.
    """
    token = tokenize(objects.name, shifts, roi, out_shape, source, objects.frame_index)
    name = "reconstruct-" + token
    constants = {"geometry": geometry, "big_empty": big_empty}
    if client is not None:
        large = {k: v for k, v in constants.items() if isinstance(v, (np.ndarray, SidebandGeometry))}
        refs = dict(zip(large, client.scatter(list(large.values()), broadcast=True, hash=False)))
    else:
        refs = {}
    dsk = dict(objects.graph)
    for key, value in constants.items():
        if key not in refs:
            refs[key] = (f"{key}-{token}",)
            dsk[refs[key]] = value
    factor_keys = {}
    shift_list = [tuple(int(v) for v in s) for s in np.asarray(shifts).tolist()]
    if factor_grid is not None:
        # 1/empty under each distinct ROI position, computed once and shared by its holograms
        for shift in shift_list:
            if shift not in factor_keys:
                factor_keys[shift] = ("factor-" + token, len(factor_keys))
                dsk[factor_keys[shift]] = (normalisation_factor, refs["big_empty"], roi, shift, factor_grid)
    keys = []
    for k, shift in enumerate(shift_list):
        frame_key = objects.frame_task(k)
        dsk[(name, k)] = (_reconstruct_frame, frame_key, shift, factor_keys.get(shift), refs["geometry"],
                          None if factor_keys else refs["big_empty"], roi,
                          f"frame {int(objects.frame_index[k])}", source, out_shape)
        keys.append((name, k))
    return dsk, keys


def _reconstruct_empty_frame(block, geometry, label, source):
    frame = block[0]
    _check_finite(frame, label, source)
    return reconstruct_hologram(frame, geometry)


# ------------------------------------------------------------------ stages


@dataclass
class _Empty:
    wave: np.ndarray | None  # complex64 (empty_size, empty_size) or None (no empty)
    attrs: dict
    write: bool


def _single_precision(dtype) -> bool:
    """Whether the reference computes in single precision for holograms of this dtype."""
    dtype = np.dtype(dtype)
    return (dtype.kind in "iub" and dtype.itemsize <= 4) or (dtype.kind == "f" and dtype.itemsize <= 4)


def _geometry(params: HoloParams, image_shape, camera_shape, sampling, out_size, binning, use_mtf=True,
              dtype=np.float64):
    carrier = carrier_per_nm(params.sideband_pos_px, camera_shape, sampling)
    return sideband_geometry(
        image_shape, sampling, carrier, (out_size, out_size), params.cut_off2_per_nm2,
        params.filter_func, params.mtf if use_mtf else None, binning,
        single_precision_mask=_single_precision(dtype), fresnel_filter=params.fresnel_filter,
    )


def _empty_size(params: HoloParams) -> int:
    size = params.empty_size if params.empty_size is not None else params.object_size
    if size is None:
        raise ParameterError("empty_size: needed (or object_size) to reconstruct the empty wave")
    return int(size)


def _first_frame(spec, params: HoloParams) -> np.ndarray:
    """The first 2-D frame of a file spec, read here."""
    from holodask.series import frame_series_from_sources, open_sources

    series = frame_series_from_sources(open_sources(spec, params.basepath))
    return np.asarray(compute_graph(series.graph, series.keys[:1])[0][0])


def _read_complex_wave(spec: str, params: HoloParams) -> np.ndarray:
    """A reconstructed wave given as a file spec (HDF5 compound r/i or any reader)."""
    from holodask.io.registry import parse_spec

    file_spec = parse_spec(spec, params.basepath)
    if not Path(file_spec.path).exists():
        raise InputFileError(f"empty_override: file {file_spec.path} does not exist")
    if file_spec.type in ("hdf5", "h5") and "dataset" in file_spec.options:
        import h5py

        from holodask.io.holo_hdf5 import read_complex

        try:
            with h5py.File(file_spec.path, "r") as f:
                name = file_spec.options["dataset"]
                if name not in f:
                    raise InputFileError(f"empty_override: {file_spec.path} has no dataset {name!r}")
                wave = read_complex(f[name])
        except OSError as exc:
            raise InputFileError(f"empty_override: cannot read {file_spec.path} ({exc})") from None
    else:
        wave = _first_frame(spec, params)
    wave = np.asarray(wave)
    if wave.ndim != 2:
        raise InputFileError(f"empty_override: {file_spec.path} holds a {wave.ndim}-D array, expected a 2-D wave")
    return wave.astype(np.complex64)


def _empty_stage(params: HoloParams, objects: FrameSeries | None, client) -> _Empty:
    from holodask.io.holo_hdf5 import hologram_attrs, standard_attrs

    if params.only_align:
        return _Empty(None, {}, False)
    if params.synthesize_empty:
        return _synthesized_empty(params, objects)
    if params.empty_override:
        wave = _read_complex_wave(params.empty_override, params)
        return _Empty(wave, {}, False)
    if params.empty_series is None:
        return _Empty(None, {}, False)

    empties = _open(params.empty_series, params)
    empty_outliers = None
    if params.outlier_cutoff is not None:  # outlier repair (holodask.outliers)
        empties, empty_outliers = _repair(empties, params, client)
    size = _empty_size(params)
    sampling = _sampling(empties, params, "empty")
    shape = tuple(empties.shape[1:])
    _check_sideband(params, shape)
    binning = int(empties.attrs.get("binning") or 1)
    geometry = _geometry(params, shape, shape, sampling, size, binning, dtype=empties.dtype)
    frame_index = empties.frame_index
    source = empties.attrs.get("source") or "the empty series"
    name = "reconstruct-empty-" + tokenize(empties.name, size, source)
    dsk = dict(empties.graph)
    for k in range(empties.n_frames):
        dsk[(name, k)] = (_reconstruct_empty_frame, empties.frame_task(k), geometry, f"frame {int(frame_index[k])}",
                          source)
    keys = [(name, k) for k in range(empties.n_frames)]
    attrs = standard_attrs(params, sampling_nm=geometry.sampling_out_nm[::-1], carrier_per_nm=geometry.carrier_per_nm,
                           voltage_kV=empties.attrs.get("voltage_kV"), binning=binning,
                           microscope=empties.attrs.get("microscope"), detector=empties.attrs.get("detector"))
    for key in ("roi", "align_roi", "align_cut_off"):
        attrs.pop(key, None)
    if empties.shape[0] > 1:
        grid = alignment_grid((size, size), geometry.sampling_out_nm, empties.attrs.get("voltage_kV"))
        held, _ = hold_frames(dsk, keys, (size, size), client, current_store_dir())
        result = average_series(held, grid, None, iterations=EMPTY_ITERATIONS, fit_shift=False,
                                fit_tilt=params.adjust_tilt, fit_defocus=False, variance=False)
        wave = result.wave
        attrs.update(hologram_attrs(shift_nm=result.shifts_nm[:, ::-1], tilt_per_nm=result.tilts_per_nm[:, ::-1],
                                    defocus_nm=result.defocus_nm, factor=result.factors, error=result.errors,
                                    convergence=result.convergence, frame_index=frame_index))
    else:
        wave = np.asarray(compute_graph(dsk, keys[:1], client)[0])
    if empty_outliers is not None:
        attrs["outliers"] = empty_outliers
    return _Empty(wave.astype(np.complex64), attrs, True)


def _synthesized_empty(params: HoloParams, objects: FrameSeries | None) -> _Empty:
    from holodask.io.holo_hdf5 import standard_attrs

    if params.camera_distortions is None:
        raise ParameterError("camera_distortions: needed with synthesize_empty (two files: x and y distortions)")
    distortions = []
    for spec in params.camera_distortions:
        distortions.append(np.asarray(_first_frame(spec, params), dtype=np.float64))
    if distortions[0].shape != distortions[1].shape:
        raise InputFileError(
            f"camera_distortions: the x and y distortion arrays differ in shape "
            f"({distortions[0].shape} and {distortions[1].shape})"
        )
    if params.sampling_nm is not None:
        sampling = float(params.sampling_nm)
    elif objects is not None:
        sampling = _sampling(objects, params, "object")
    else:
        raise ParameterError("sampling: needed to synthesise the empty wave without object files")
    shape = distortions[0].shape
    _check_sideband(params, shape)
    size = _empty_size(params)
    carrier_px = ((params.sideband_pos_px[0] - shape[1] // 2) / shape[1],
                  (params.sideband_pos_px[1] - shape[0] // 2) / shape[0])
    rx = np.arange(shape[1]).reshape(1, -1)
    ry = np.arange(shape[0]).reshape(-1, 1)
    hologram = np.cos(2 * np.pi * ((rx + distortions[0]) * carrier_px[0] + (ry + distortions[1]) * carrier_px[1]))
    geometry = _geometry(params, shape, shape, sampling, size, 1, use_mtf=False, dtype=np.float32)
    wave = reconstruct_hologram(hologram.astype(np.float32), geometry)
    attrs = standard_attrs(params, sampling_nm=geometry.sampling_out_nm[::-1], carrier_per_nm=geometry.carrier_per_nm)
    for key in ("roi", "align_roi", "align_cut_off"):
        attrs.pop(key, None)
    return _Empty(wave, attrs, True)


def _raw_alignment(objects: FrameSeries, params: HoloParams, region, sampling, client):
    """Cumulated integer drift (N, 2) (x, y) of every frame relative to the first."""
    n_frames = objects.shape[0]
    if not params.enable_raw_alignment or n_frames < 2:
        return np.zeros((n_frames, 2), dtype=np.int64)
    left, top, right, bottom = region
    shape = (bottom - top, right - left)
    frame_index = objects.frame_index
    source = objects.attrs.get("source") or "the object series"
    cut_off = params.align_cut_off_per_nm or params.cut_off_per_nm
    window = correlation_window(shape, sampling, cut_off)
    # spectra and the correlations of neighbours as plain tasks
    token = tokenize(objects.name, region, window, source)
    spectrum_name, step_name = "align-spectrum-" + token, "raw-steps-" + token
    dsk = dict(objects.graph)
    dsk.update({(spectrum_name, k): (_align_spectrum_frame, objects.frame_task(k), region, window,
                                     f"frame {int(frame_index[k])}", source) for k in range(n_frames)})
    dsk.update({(step_name, k): (_correlate_block, (spectrum_name, k), (spectrum_name, k + 1), window)
                for k in range(n_frames - 1)})
    steps = compute_graph(dsk, [(step_name, k) for k in range(n_frames - 1)], client)
    steps = np.concatenate(steps, axis=0).reshape(-1, 2)
    shifts = np.zeros((n_frames, 2), dtype=np.int64)
    shifts[1:] = np.cumsum(steps, axis=0)
    log.info("raw alignment: drift of the last frame %s px (x, y)", shifts[-1].tolist())
    return shifts


def _warn_saturation(counts, frame_index, pixels: int) -> None:
    saturated = [int(i) for i, c in zip(frame_index, counts) if c > SATURATION_FRACTION * pixels]
    if saturated:
        shown = ", ".join(str(i) for i in saturated[:20]) + (" ..." if len(saturated) > 20 else "")
        warnings.warn(f"frames {shown} have many saturated pixels (at the maximum of their integer type)")


# ------------------------------------------------------------------ the run


def _output_path(params: HoloParams) -> Path:
    if not params.output_name:
        raise ParameterError("output_name: an output file name is required")
    return Path(params.output_name)


def run(params, basepath=None, client=None, *, load: bool = True) -> "xr.Dataset | Path":
    """Reconstruct and average as the parameters say and write the output file.

    Parameters
    ----------
    params : HoloParams, parameter file path, ``"-"`` or dict.
    basepath : folder relative paths are taken from (when ``params`` is not a HoloParams).
    client : ``dask.distributed.Client`` to run on (None: the client of an enclosing
        :func:`holodask.cluster.compute_context`, else local threads).

    load : return the written results as a Dataset (False: the output file's path).

    Returns
    -------
    xarray.Dataset of the written results (see :func:`holodask.results.open_result`),
    or the output file's path.
    """
    from holodask.io.holo_hdf5 import HoloOutputFile, hologram_attrs, standard_attrs

    if not isinstance(params, HoloParams):
        params = load_parameters(params, basepath)
    output = _output_path(params)
    if client is None:
        from holodask.cluster import current_client

        client = current_client()
    if params.object_series is None and params.empty_series is None and not params.synthesize_empty:
        raise ParameterError("object_names: nothing to do (neither object_names nor empty_names given)")

    objects = _open(params.object_series, params) if params.object_series is not None else None
    if objects is not None and objects.shape[0] == 0:
        raise ParameterError("object_names: the series is empty (every hologram excluded by object_exclude)")
    if objects is not None and not params.only_align:
        if params.object_size is None:
            raise ParameterError("object_size: required with object_names")
        camera_shape = tuple(objects.shape[1:])
        _check_sideband(params, camera_shape)
        roi = _check_roi(params.roi, camera_shape, "roi")
        sampling = _sampling(objects, params, "object")
        binning = int(objects.attrs.get("binning") or 1)
        _geometry(params, (roi[3] - roi[1], roi[2] - roi[0]), camera_shape, sampling,
                  int(params.object_size), binning)

    from holodask.io.qpimage_export import check_run_export, export_run

    check_run_export(params, output, objects.attrs.get("voltage_kV") if objects is not None else None)
    if client is not None:
        _share_fft_plans(params, objects, client)
    outliers = None
    if objects is not None and params.outlier_cutoff is not None:
        objects, outliers = _repair(objects, params, client)
    shifts = None
    from holodask.average import stack_store
    from holodask.cluster import current_scratch

    with stack_store(current_scratch()), HoloOutputFile(output, prefix=params.output_prefix) as out:
        empty = _empty_stage(params, objects, client)
        if empty.write and empty.wave is not None:
            out.write_dataset("empty", empty.wave, empty.attrs)
        if objects is not None:
            shifts = _object_stage(params, objects, empty, out, client, standard_attrs, hologram_attrs)
            if outliers is not None:
                from holodask.outliers import write_outlier_counts

                write_outlier_counts(out, outliers, params)
    export_run(params, output)

    if not load:
        return output
    if params.only_align or (objects is None and not empty.write):
        return _alignment_dataset(output, params, shifts)
    from holodask.results import open_result

    return open_result(output, params.output_prefix).load()


def _alignment_dataset(output: Path, params: HoloParams, shifts) -> "xr.Dataset":
    """What an alignment-only run found (its file holds only ``aligned_rois``)."""
    import xarray as xr

    data_vars = {}
    if shifts is not None:
        data_vars["raw_shift_px"] = (("frame", "xy"), shifts["raw_shift_px"])
        coords = {"frame": shifts["frame"], "xy": ["x", "y"]}
    else:
        coords = {}
    return xr.Dataset(data_vars, coords=coords,
                      attrs={"source": str(output), "prefix": params.output_prefix})


def _object_stage(params, objects: FrameSeries, empty, out, client, standard_attrs, hologram_attrs):
    n_frames = objects.shape[0]
    camera_shape = tuple(int(s) for s in objects.shape[1:])
    frame_index = objects.frame_index
    source = objects.attrs.get("source") or "the object series"
    roi = _check_roi(params.roi, camera_shape, "roi")
    align_region = _check_roi(params.align_roi_or_roi, camera_shape, "align_roi")
    sampling = _sampling(objects, params, "object") if (params.enable_raw_alignment or not params.only_align) else 1.0
    voltage = objects.attrs.get("voltage_kV")
    binning = int(objects.attrs.get("binning") or 1)

    shifts = _raw_alignment(objects, params, align_region, sampling, client)
    roi_shape = (roi[3] - roi[1], roi[2] - roi[0])
    base_attrs = dict(
        voltage_kV=voltage, binning=binning, microscope=objects.attrs.get("microscope"),
        detector=objects.attrs.get("detector"), roi=roi,
        align_roi=align_region if params.enable_raw_alignment else None,
    )
    aligned = params.enable_raw_alignment and n_frames > 1
    raw_attrs = hologram_attrs(raw_shift_px=shifts if aligned else None, frame_index=frame_index)
    if params.output_aligned or params.only_align:
        attrs = standard_attrs(params, sampling_nm=sampling, offset_nm=(roi[0] * sampling, roi[1] * sampling),
                               **base_attrs)
        attrs.update(raw_attrs)
        out.write_frames("aligned_rois", _aligned_rois(objects, shifts, roi, client), attrs,
                         as_dataset=params.output_series_as_dataset)
    found = {"raw_shift_px": shifts, "frame": frame_index}
    if params.only_align:
        return found

    size = int(params.object_size)
    geometry = _geometry(params, roi_shape, camera_shape, sampling, size, binning, dtype=objects.dtype)
    if empty.wave is not None:
        # measured plans (kept between runs): an unmeasured camera-size plan costs ~45 ms per run at 1024^2
        big_empty = fourier_rescale(empty.wave, camera_shape)
        if params.only_phase:
            big_empty = np.exp(1j * np.angle(big_empty)).astype(np.complex64)
    else:
        # the reference divides by a wave of ones brought to the camera size
        e_size = _empty_size(params)
        value = 1.0 if params.only_phase else e_size * e_size / (camera_shape[0] * camera_shape[1])
        big_empty = ConstantEmpty(value, camera_shape)
    doubled_grid = factor_grid(roi_shape, (size, size)) if isinstance(big_empty, np.ndarray) else None
    dsk, keys = _reconstruction_graph(objects, shifts, roi, geometry, big_empty, doubled_grid, source,
                                      (size, size), client)
    # one pass over the frames: the stack is held (memory, workers or Zarr store)
    # for the rounds and the saturation counts come along
    started = time.perf_counter()
    held, (saturation,) = hold_frames(dsk, keys, (size, size), client, current_store_dir(), paired=True)
    log.info("reconstruction: %d holograms in %.2f s", n_frames, time.perf_counter() - started)
    _warn_saturation(saturation, frame_index, roi_shape[0] * roi_shape[1])

    sampling_out = geometry.sampling_out_nm  # (y, x)
    attrs = standard_attrs(params, sampling_nm=sampling_out[::-1], carrier_per_nm=geometry.carrier_per_nm,
                           **base_attrs)
    if params.enable_raw_alignment:
        attrs["align_cut_off"] = float(params.align_cut_off_per_nm or params.cut_off_per_nm)
    else:
        attrs.pop("align_cut_off", None)
    if params.output_series:
        series_attrs = dict(attrs)
        series_attrs.update(raw_attrs)
        out.write_frames("series", (held.frame(k) for k in range(n_frames)), series_attrs,
                         as_dataset=params.output_series_as_dataset)

    defocus = objects.defocus_nm
    needs_voltage = params.adjust_defocus or np.any(defocus != 0)
    if needs_voltage and not voltage:
        raise ParameterError("voltage: needed for defocus (the files carry no voltage); give the parameter 'voltage' in kV")
    if n_frames > 1:
        started = time.perf_counter()
        grid = alignment_grid((size, size), sampling_out, voltage)
        result = average_series(held, grid, defocus, iterations=OBJECT_ITERATIONS, fit_shift=params.adjust_shift,
                                fit_tilt=params.adjust_tilt, fit_defocus=params.adjust_defocus,
                                defocus_start=DEFOCUS_START, variance=True)
        log.info("averaging: %d rounds in %.2f s", len(result.convergence), time.perf_counter() - started)
        attrs.update(hologram_attrs(
            shift_nm=result.shifts_nm[:, ::-1], tilt_per_nm=result.tilts_per_nm[:, ::-1],
            defocus_nm=result.defocus_nm, factor=result.factors, error=result.errors,
            raw_shift_px=shifts if aligned else None, convergence=result.convergence, frame_index=frame_index,
        ))
        out.write_dataset("data", result.wave, attrs)
        out.write_dataset("variance", result.variance, attrs)
        return found
    else:
        wave = held.frame(0)
        wave = propagate(wave, float(defocus[0]), voltage or 300.0, sampling_out)
        attrs.update(raw_attrs)
        out.write_dataset("data", wave, attrs)
    return found


def _share_fft_plans(params: HoloParams, objects, client) -> None:
    """Plan the transforms of this run here and give the plans to every worker
    (and the worker set-up of :func:`holodask.cluster.register_worker_setup`).

    Workers then compute exactly what a local run computes (FFTW's measured
    plans otherwise differ between processes in the last bits).
    """
    from holodask import normalise as normalise_module
    from holodask import reconstruct as reconstruct_module
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
        if sampling and params.object_size:
            geometries.append((roi_shape, params.object_size))
        if sampling and params.empty_series is not None and (params.empty_size or params.object_size):
            geometries.append((camera_shape, params.empty_size or params.object_size))
        for shape, size in geometries:
            try:
                geometry = _geometry(params, shape, camera_shape, sampling, int(size), 1,
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


def _aligned_rois(objects: FrameSeries, shifts, roi, client):
    """The drift-moved ROI of every raw frame, computed and yielded one at a time."""
    name = "aligned-roi-" + tokenize(objects.name, shifts, roi)
    dsk = dict(objects.graph)
    for k in range(objects.n_frames):
        dsk[(name, k)] = (_roi_frame, objects.frame_task(k), tuple(int(v) for v in shifts[k]), roi)
    for k in range(objects.n_frames):
        yield np.asarray(compute_graph(dsk, [(name, k)], client)[0])
