"""The reconstruction stage: :func:`reconstruct` maps the per-frame kernels over a
lazy hologram stack.

Nothing is computed when :func:`reconstruct` is called: it builds one Dask graph
in which every hologram is read where its tasks run (twice: for the raw
alignment and for its reconstruction, so that no raw frame is held), the raw
alignment phase-correlates neighbours and sums the steps, the empty wave is
reconstructed and averaged (when given as a series), and every hologram is
reconstructed (:func:`holodask.hologram.reconstruct_hologram`) and normalised by
the empty wave under its drift-moved ROI. The result is a labelled
``(frame, y, x)`` complex DataArray with nm coordinates.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from dask.base import tokenize

from holodask.align import alignment_grid, correlate_spectra, correlation_window, window_spectrum
from holodask.errors import DataError, InputFileError, ParameterError
from holodask.hologram import (
    SidebandGeometry,
    extract_roi,
    hologram_quality,
    reconstruct_hologram,
    sideband_geometry,
)
from holodask.normalise import ConstantEmpty, factor_grid, normalisation_factor, normalise, normalise_with_factor
from holodask.optics import carrier_per_nm, fourier_rescale
from holodask.params import HoloParams, stage_parameters
from holodask.series import FrameSeries

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["reconstruct", "reconstruct_stack", "reconstruct_empty", "raw_alignment", "raw_shifts", "repair_outliers",
           "EmptyWave", "EMPTY_ITERATIONS", "as_hologram_stack", "stack_of"]

log = logging.getLogger("holodask")

#: averaging rounds of the empty series (the reference's)
EMPTY_ITERATIONS = 4


# ------------------------------------------------------------------ the stack


def as_hologram_stack(holograms, name: str = "holograms") -> "xr.DataArray":
    """A ``(frame, y, x)`` DataArray of holograms: a DataArray as it is (a 2-D one gets a
    ``frame`` axis of one), a numpy or Dask array wrapped (pixel coordinates)."""
    import dask.array as da
    import xarray as xr

    if isinstance(holograms, xr.DataArray):
        array = holograms
        if array.ndim == 2:
            array = array.expand_dims("frame")
        if array.ndim != 3:
            raise DataError(f"{name}: expected a (frame, y, x) stack, got dims {array.dims}")
        if array.dims != ("frame", "y", "x"):
            if set(array.dims) == {"frame", "y", "x"}:
                array = array.transpose("frame", "y", "x")
            else:
                array = array.rename(dict(zip(array.dims, ("frame", "y", "x"))))
        if "frame" not in array.coords:
            array = array.assign_coords(frame=np.arange(array.sizes["frame"]))
        return array
    if isinstance(holograms, (np.ndarray, da.Array)) or hasattr(holograms, "__array__"):
        data = holograms if isinstance(holograms, da.Array) else np.asarray(holograms)
        if data.ndim == 2:
            data = data[np.newaxis]
        if data.ndim != 3:
            raise DataError(f"{name}: expected a 2-D hologram or a (frame, y, x) stack, got {data.ndim}-D")
        return xr.DataArray(data, dims=("frame", "y", "x"), coords={"frame": np.arange(data.shape[0])},
                            name=name)
    raise DataError(f"{name}: expected a DataArray (holodask.open_series) or an array, "
                    f"got {type(holograms).__name__}")


def _check_finite(frame: np.ndarray, label: str, source: str) -> None:
    """One clear error for a float frame holding NaN or Inf pixels."""
    if frame.dtype.kind in "fc" and not np.isfinite(frame).all():
        raise DataError(f"{label} of {source} holds NaN or Inf pixels")


def _sampling(series: FrameSeries, params: HoloParams, what: str) -> float:
    """The hologram pixel size (nm): the parameter, the files' calibration or the nm coordinates."""
    sampling = params.sampling_nm if params.sampling_nm is not None else series.attrs.get("sampling_nm")
    if sampling is None or not np.isfinite(sampling) or sampling <= 0:
        raise ParameterError(
            f"sampling: the {what} files carry no pixel size; give the parameter 'sampling' in nm"
        )
    return float(sampling)


def _stack_sampling(array: "xr.DataArray") -> float | None:
    """Pixel size (nm) of a stack from its attributes or its ``x`` coordinate in nm."""
    value = array.attrs.get("sampling_nm")
    if value is not None:
        return float(value)
    x = array.coords.get("x")
    if x is not None and x.attrs.get("units") == "nm" and x.size > 1:
        return float(x.values[1] - x.values[0])
    return None


def stack_of(holograms, name: str = "holograms") -> FrameSeries:
    """The :class:`FrameSeries` (frames as tasks of a graph) of a hologram stack: a
    FrameSeries as it is, else what :func:`as_hologram_stack` takes."""
    if isinstance(holograms, FrameSeries):
        return holograms
    array = as_hologram_stack(holograms, name)
    series = FrameSeries.from_dataarray(array)
    if series.attrs.get("sampling_nm") is None:
        series.attrs["sampling_nm"] = _stack_sampling(array)
    if "defocus_nm" not in series.coords:
        series.coords["defocus_nm"] = np.zeros(series.n_frames)
    return series


def _check_real(series: FrameSeries, what: str) -> None:
    if np.dtype(series.dtype).kind == "c":
        raise DataError(f"{series.attrs.get('source') or what}: complex values; holograms are real "
                        "intensities (is this already a reconstructed wave?)")


def check_roi(roi, shape, name: str) -> tuple[int, int, int, int]:
    """``roi`` (left, top, right, bottom) checked against an image of ``shape``; None: all of it."""
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


def check_sideband(params: HoloParams, shape, sampling_nm: float | None = None) -> None:
    """Refuse a ``sideband_pos`` outside the transform, on the centre band, or whose mask
    (``cut_off``) reaches the centre band (a disc of the same radius around the centre:
    the sideband must lie more than twice the cut-off from the centre); say (with -v)
    when it is the lower sideband, whose wave is the conjugate of the upper one's."""
    height, width = shape
    x, y = params.sideband_pos_px
    if not (0 <= x < width and 0 <= y < height):
        raise ParameterError(
            f"sideband_pos: [{x:g}, {y:g}] lies outside the {width} x {height} px Fourier transform "
            "of the holograms; expected 0 <= x < width and 0 <= y < height"
        )
    dx, dy = x - width // 2, y - height // 2
    if np.hypot(dx, dy) < 1.0:
        raise ParameterError(
            f"sideband_pos: [{x:g}, {y:g}] is the centre band (the middle of the {width} x {height} px transform), "
            "not a sideband; holodask info FILE --fft finds the sideband"
        )
    if sampling_nm and params.cut_off2_per_nm2 is not None:
        carrier = np.array([dx / (width * sampling_nm), dy / (height * sampling_nm)])  # 1/nm (x, y)
        distance = float(np.hypot(*carrier))
        direction = carrier / distance
        radius = 1.0 / np.sqrt(direction @ np.linalg.inv(np.asarray(params.cut_off2_per_nm2, dtype=float)) @ direction)
        if distance <= 2 * radius:
            raise ParameterError(
                f"cut_off: the mask ({radius:.4g} 1/nm around the sideband) overlaps the centre band: the sideband "
                f"[{x:g}, {y:g}] lies {distance:.4g} 1/nm from the centre; expected a cut_off below half of that "
                f"({distance / 2:.4g} 1/nm)"
            )
    if sideband_half(params.sideband_pos_px, shape) == "lower":
        log.info("sideband_pos: [%g, %g] is the lower sideband: the wave is the complex conjugate of the upper "
                 "sideband's (the phase has the opposite sign)", x, y)


def sideband_half(position, shape) -> str:
    """'upper' (y < H // 2, or on that row right of the centre: :func:`holodask.find_sideband`'s)
    or 'lower' (its conjugate)."""
    height, width = shape
    x, y = position
    upper = y < height // 2 - 0.5 or (abs(y - height // 2) <= 0.5 and x > width // 2)
    return "upper" if upper else "lower"


def _single_precision(dtype) -> bool:
    """Whether the reference computes in single precision for holograms of this dtype."""
    dtype = np.dtype(dtype)
    return (dtype.kind in "iub" and dtype.itemsize <= 4) or (dtype.kind == "f" and dtype.itemsize <= 4)


def sideband_geometry_of(params: HoloParams, image_shape, camera_shape, sampling, out_size, binning,
                         use_mtf=True, dtype=np.float64) -> SidebandGeometry:
    """The :class:`SidebandGeometry` the parameters give for holograms (ROI) of ``image_shape``."""
    carrier = carrier_per_nm(params.sideband_pos_px, camera_shape, sampling)
    return sideband_geometry(
        image_shape, sampling, carrier, (out_size, out_size), params.cut_off2_per_nm2,
        params.filter_func, params.mtf if use_mtf else None, binning,
        single_precision_mask=_single_precision(dtype), fresnel_filter=params.fresnel_filter,
    )


def _with_found_sideband(params: HoloParams, series: FrameSeries, sampling: float | None) -> HoloParams:
    """``params`` with what was not given found on the first hologram: ``sideband_pos``
    (:func:`holodask.find_sideband`), a ``cut_off`` of a third of the carrier, the smallest
    ``object_size`` that holds the mask. The values found join ``raw`` (they are written
    with the parameters)."""
    if params.sideband_pos_px is not None and params.cut_off2_per_nm2 is not None and params.object_size:
        return params
    from holodask.sideband import find_sideband

    first = np.asarray(_compute(series.graph, series.keys[:1])[0])[0]
    found = find_sideband(first, sampling=sampling)
    source = series.attrs.get("source") or "the holograms"
    if found.low_confidence:
        raise DataError(f"sideband_pos: no sideband found in the first hologram of {source} "
                        f"(confidence {found.confidence:.2f}: no fringes?); give 'sideband_pos' [x, y]")
    changes: dict[str, Any] = {}
    raw = dict(params.raw)
    if params.sideband_pos_px is None:
        position = tuple(round(float(v), 2) for v in found.position)
        changes["sideband_pos_px"] = position
        changes["sideband_found"] = (position, float(found.confidence))
        raw["sideband_pos"] = list(position)
        conjugate = tuple(round(float(v), 2) for v in found.conjugate)
        log.warning("holodask: sideband_pos found in the first hologram of %s: [%.2f, %.2f], confidence %.2f "
                    "(the upper sideband; [%.2f, %.2f], the lower one, gives the conjugate wave)",
                    source, *position, found.confidence, *conjugate)
    if params.cut_off2_per_nm2 is None:
        if found.cut_off is None:
            raise ParameterError("cut_off: needed (the holograms carry no pixel size to suggest one in 1/nm)")
        raw["cut_off"] = float(f"{found.cut_off:.4g}")
        changes["cut_off2_per_nm2"] = np.eye(2) * raw["cut_off"]**2
        if params.align_cut_off_per_nm is None:
            changes["align_cut_off_per_nm"] = raw["cut_off"]
    if not params.object_size:
        changes["object_size"] = found.object_size
        raw["object_size"] = found.object_size
        if params.empty_size is None:
            changes["empty_size"] = found.object_size
    changes["raw"] = raw
    return dataclasses.replace(params, **changes)


def _compute(dsk, keys, client=None):
    from holodask.stages.rounds import compute_graph

    return compute_graph(dsk, keys, client)


# ------------------------------------------------------------------ the empty wave


@dataclass(frozen=True, repr=False, eq=False)
class EmptyWave:
    """The empty (vacuum) wave the holograms are normalised by.

    Lazy (``dsk``/``key``: a task giving the wave, or the
    :class:`~holodask.stages.rounds.AverageResult` of an empty series) until
    :meth:`compute` or the stage that holds the holograms computes it; then
    ``wave`` (complex64, ``empty_size`` square) and the complete ``attrs`` (those
    of the output's ``empty`` dataset, with the fit of each empty hologram).

    ``write``: whether a run writes it (not when read from ``empty_override``);
    ``outliers``: pixels replaced in each empty hologram; ``sampling_nm`` (y, x).
    """

    dsk: dict | None
    key: Any
    wave: np.ndarray | None
    attrs: dict
    sampling_nm: tuple[float, float]
    write: bool = True
    outliers: np.ndarray | None = None
    frame_index: np.ndarray | None = None

    @property
    def lazy(self) -> bool:
        return self.wave is None

    def __repr__(self) -> str:
        state = "lazy" if self.lazy else f"{self.wave.shape[0]} x {self.wave.shape[1]} px"
        return f"<EmptyWave {state}>"

    def with_value(self, value) -> "EmptyWave":
        """The computed empty wave, given what its task computed."""
        from holodask.io.holo_hdf5 import hologram_attrs
        from holodask.stages.rounds import AverageResult

        attrs = dict(self.attrs)
        if isinstance(value, AverageResult):
            attrs.update(hologram_attrs(
                shift_nm=value.shifts_nm[:, ::-1], tilt_per_nm=value.tilts_per_nm[:, ::-1],
                defocus_nm=value.defocus_nm, factor=value.factors, error=value.errors,
                convergence=value.convergence, frame_index=self.frame_index))
            value = value.wave
        if self.outliers is not None:
            attrs["outliers"] = self.outliers
        wave = np.asarray(value).astype(np.complex64, copy=False)
        return dataclasses.replace(self, dsk=None, key=None, wave=wave, attrs=attrs)

    def compute(self, client=None) -> "EmptyWave":
        """The computed empty wave (itself when already computed)."""
        if not self.lazy:
            return self
        return self.with_value(_compute(self.dsk, [self.key], client)[0])

    def to_dataarray(self) -> "xr.DataArray":
        """The (computed) wave with ``y``/``x`` coordinates in nm."""
        import xarray as xr

        wave = self.compute().wave
        sy, sx = self.sampling_nm
        return xr.DataArray(wave, dims=("y", "x"), name="empty",
                            coords={"y": ("y", np.arange(wave.shape[0]) * sy, {"units": "nm"}),
                                    "x": ("x", np.arange(wave.shape[1]) * sx, {"units": "nm"})})


def _empty_size(params: HoloParams) -> int:
    size = params.empty_size if params.empty_size is not None else params.object_size
    if size is None:
        raise ParameterError("empty_size: needed (or object_size) to reconstruct the empty wave")
    return int(size)


def _reconstruct_empty_frame(block, geometry, label, source):
    frame = block[0]
    _check_finite(frame, label, source)
    return reconstruct_hologram(frame, geometry)


def _empty_attrs(params: HoloParams, geometry: SidebandGeometry, meta: dict) -> dict:
    from holodask.io.holo_hdf5 import standard_attrs

    attrs = standard_attrs(params, sampling_nm=geometry.sampling_out_nm[::-1], carrier_per_nm=geometry.carrier_per_nm,
                           voltage_kV=meta.get("voltage_kV"), binning=meta.get("binning"),
                           microscope=meta.get("microscope"), detector=meta.get("detector"))
    for key in ("roi", "align_roi", "align_cut_off"):
        attrs.pop(key, None)
    return attrs


def reconstruct_empty(empties, params=None, **options) -> EmptyWave:
    """The empty wave of an empty-hologram series, lazily: every hologram reconstructed
    at ``empty_size`` over the whole camera and, for several, averaged as the reference
    does (4 rounds, no shift fit); outliers repaired first with ``outlier_cutoff``."""
    params = stage_parameters(params, options)
    series = stack_of(empties, "empty holograms")
    _check_real(series, "the empty holograms")
    series = repair_stack(series, params)
    outliers = series.coords.pop("outliers", None)
    sampling = _sampling(series, params, "empty")
    params = _with_found_sideband(params, series, sampling)
    return _empty_from_series(series, params, sampling, outliers)


def _empty_from_series(series: FrameSeries, params: HoloParams, sampling: float, outliers) -> EmptyWave:
    from holodask.stages.rounds import average_tasks

    size = _empty_size(params)
    shape = tuple(series.shape[1:])
    check_sideband(params, shape, sampling)
    binning = int(series.attrs.get("binning") or 1)
    geometry = sideband_geometry_of(params, shape, shape, sampling, size, binning, dtype=series.dtype)
    frame_index = series.frame_index
    source = series.attrs.get("source") or "the empty series"
    name = "reconstruct-empty-" + tokenize(series.name, size, source, geometry.carrier_per_nm,
                                           params.cut_off2_per_nm2, params.filter_func, params.mtf)
    dsk = dict(series.graph)
    for k in range(series.n_frames):
        dsk[(name, k)] = (_reconstruct_empty_frame, series.frame_task(k), geometry,
                          f"frame {int(frame_index[k])}", source)
    keys = [(name, k) for k in range(series.n_frames)]
    attrs = _empty_attrs(params, geometry, series.attrs)
    if series.n_frames > 1:
        grid = alignment_grid((size, size), geometry.sampling_out_nm, series.attrs.get("voltage_kV"))
        dsk, key = average_tasks(dsk, keys, grid, None, iterations=EMPTY_ITERATIONS, fit_shift=False,
                                 fit_tilt=params.adjust_tilt, fit_defocus=False, defocus_start=0, variance=False)
    else:
        key = keys[0]
    return EmptyWave(dsk, key, None, attrs, tuple(geometry.sampling_out_nm), True, outliers, frame_index)


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
        wave = first_frame(spec, params)
    wave = np.asarray(wave)
    if wave.ndim != 2:
        raise InputFileError(f"empty_override: {file_spec.path} holds a {wave.ndim}-D array, expected a 2-D wave")
    return wave.astype(np.complex64)


def first_frame(spec, params: HoloParams) -> np.ndarray:
    """The first 2-D frame of a file spec, read here."""
    from holodask.series import frame_series_from_sources, open_sources

    series = frame_series_from_sources(open_sources(spec, params.basepath))
    return np.asarray(_compute(series.graph, series.keys[:1])[0][0])


def _synthesized_empty(params: HoloParams, sampling: float | None) -> EmptyWave:
    """The empty wave of an ideal hologram on the distorted camera (``camera_distortions``)."""
    if params.camera_distortions is None:
        raise ParameterError("camera_distortions: needed with synthesize_empty (two files: x and y distortions)")
    distortions = [np.asarray(first_frame(spec, params), dtype=np.float64) for spec in params.camera_distortions]
    if distortions[0].shape != distortions[1].shape:
        raise InputFileError(
            f"camera_distortions: the x and y distortion arrays differ in shape "
            f"({distortions[0].shape} and {distortions[1].shape})"
        )
    if params.sampling_nm is not None:
        sampling = params.sampling_nm
    if sampling is None:
        raise ParameterError("sampling: needed to synthesise the empty wave without object files")
    shape = distortions[0].shape
    if params.sideband_pos_px is None:
        raise ParameterError("sideband_pos: needed to synthesise the empty wave (there is no hologram to find it in)")
    check_sideband(params, shape, sampling)
    size = _empty_size(params)
    carrier_px = ((params.sideband_pos_px[0] - shape[1] // 2) / shape[1],
                  (params.sideband_pos_px[1] - shape[0] // 2) / shape[0])
    rx = np.arange(shape[1]).reshape(1, -1)
    ry = np.arange(shape[0]).reshape(-1, 1)
    hologram = np.cos(2 * np.pi * ((rx + distortions[0]) * carrier_px[0] + (ry + distortions[1]) * carrier_px[1]))
    geometry = sideband_geometry_of(params, shape, shape, sampling, size, 1, use_mtf=False, dtype=np.float32)
    wave = reconstruct_hologram(hologram.astype(np.float32), geometry)
    attrs = _empty_attrs(params, geometry, {})
    return EmptyWave(None, None, wave.astype(np.complex64), attrs, tuple(geometry.sampling_out_nm), True)


def _given_wave(wave, name="empty") -> EmptyWave:
    """An empty wave given as a complex array (DataArray with nm coordinates, or numpy)."""
    import xarray as xr

    sampling = (1.0, 1.0)
    if isinstance(wave, xr.DataArray):
        if {"y", "x"} <= set(wave.coords):
            ys, xs = wave.coords["y"].values, wave.coords["x"].values
            if ys.size > 1 and xs.size > 1:
                sampling = (float(ys[1] - ys[0]), float(xs[1] - xs[0]))
        wave = wave.values
    wave = np.asarray(wave)
    if wave.ndim == 3 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.ndim != 2:
        raise DataError(f"{name}: a complex wave must be 2-D, got shape {wave.shape}")
    return EmptyWave(None, None, wave.astype(np.complex64), {}, sampling, False)


def empty_for(empty, params: HoloParams, object_sampling: float | None = None) -> EmptyWave | None:
    """The :class:`EmptyWave` that ``empty=`` of :func:`reconstruct` names, lazily where it can be.

    ``None``: what the parameters say (``empty_names``, ``empty_override``,
    ``synthesize_empty``, or none); ``False``: none; a series of empty holograms
    (a real DataArray or array with a frame axis); a complex wave (2-D); a
    result Dataset (its ``empty``); an :class:`EmptyWave`.
    """
    xr = sys.modules.get("xarray")  # (an xarray object means xarray is imported already)
    if empty is False or params.only_align:
        return None
    if isinstance(empty, EmptyWave):
        return empty
    if xr is not None and isinstance(empty, xr.Dataset):
        if "empty" not in empty:
            raise DataError("empty: the Dataset holds no 'empty' wave")
        return _given_wave(empty["empty"])
    if empty is not None:
        dtype = empty.dtype if hasattr(empty, "dtype") else np.asarray(empty).dtype
        if np.dtype(dtype).kind == "c":
            return _given_wave(empty)
        return reconstruct_empty(empty, params)
    if params.synthesize_empty:
        return _synthesized_empty(params, object_sampling)
    if params.empty_override:
        wave = _read_complex_wave(params.empty_override, params)
        return EmptyWave(None, None, wave, {}, (1.0, 1.0), False)
    if params.empty_series is None:
        return None
    return reconstruct_empty(open_checked_series(params.empty_series, params), params)


def open_checked_series(series_spec, params: HoloParams) -> FrameSeries:
    """A series the parameters name, opened (headers only) with every frame checked as it is
    read (:func:`holodask.checks.check_hologram_frame`), its pixel type checked and, where
    ``sideband_pos`` is given, fringes there in its first frame (read here)."""
    from holodask.checks import check_hologram_frame, check_hologram_series
    from holodask.series import open_frame_series

    series = open_frame_series(series_spec, params, basepath=params.basepath, check=check_hologram_frame)
    check_hologram_series(series, params)
    return series


def _camera_empty(value, camera_shape, only_phase: bool) -> np.ndarray:
    """The empty wave (or the average of empties) brought to the camera size."""
    from holodask.stages.rounds import AverageResult

    wave = value.wave if isinstance(value, AverageResult) else np.asarray(value)
    # measured plans (kept between runs): an unmeasured camera-size plan costs ~45 ms per run at 1024^2
    big = fourier_rescale(np.asarray(wave, dtype=np.complex64), camera_shape)
    if only_phase:
        big = np.exp(1j * np.angle(big)).astype(np.complex64)
    return big


# ------------------------------------------------------------------ raw alignment


def _align_spectrum_frame(block, region, window, label, source):
    """Windowed spectrum of the alignment region of one raw frame block (1, H, W)."""
    frame = block[0]
    _check_finite(frame, label, source)
    left, top, right, bottom = region
    return window_spectrum(frame[top:bottom, left:right], window)


def _correlate_block(previous, current, window):
    return np.array(correlate_spectra(previous, current, window), dtype=np.int64)


def _cumulate(*steps) -> np.ndarray:
    """(N, 2) int64 drift (x, y) of every frame relative to the first, from the N - 1 steps."""
    shifts = np.zeros((len(steps) + 1, 2), dtype=np.int64)
    if steps:
        shifts[1:] = np.cumsum(np.stack(steps), axis=0)
    log.info("raw alignment: drift of the last frame %s px (x, y)", shifts[-1].tolist())
    return shifts


def _raw_alignment_tasks(series: FrameSeries, params: HoloParams, region, sampling) -> tuple[dict, Any]:
    """Tasks of the raw alignment: the key of the (N, 2) drift (x, y) px, and its graph."""
    left, top, right, bottom = region
    shape = (bottom - top, right - left)
    frame_index = series.frame_index
    source = series.attrs.get("source") or "the object series"
    cut_off = params.align_cut_off_per_nm or params.cut_off_per_nm
    window = correlation_window(shape, sampling, cut_off)
    token = tokenize(series.name, region, window, source)
    spectrum_name, step_name = "align-spectrum-" + token, "raw-steps-" + token
    dsk = {(spectrum_name, k): (_align_spectrum_frame, series.frame_task(k), region, window,
                                f"frame {int(frame_index[k])}", source) for k in range(series.n_frames)}
    dsk.update({(step_name, k): (_correlate_block, (spectrum_name, k), (spectrum_name, k + 1), window)
                for k in range(series.n_frames - 1)})
    key = "raw-shifts-" + token
    dsk[key] = (_cumulate, *[(step_name, k) for k in range(series.n_frames - 1)])
    return dsk, key


def raw_alignment(holograms, params=None, **options) -> "xr.DataArray":
    """The raw drift of every hologram (x, y px, relative to the first), lazily.

    Consecutive holograms are phase-correlated in parallel inside ``align_roi``
    (or ``roi``) with the cut-off ``align_cut_off`` (or ``cut_off``), and the
    integer steps summed along the series. Returns a ``(frame, xy)`` int64
    DataArray (Dask-backed); zeros when ``enable_raw_alignment`` is false.
    :func:`raw_shifts` computes them at once, without xarray.
    """
    import dask.array as da
    import xarray as xr
    from dask.highlevelgraph import HighLevelGraph

    params = stage_parameters(params, options)
    series = stack_of(holograms)
    dsk, key = _shift_tasks(series, params)
    dsk = {**series.graph, **dsk}
    name = "raw-alignment-" + tokenize(key)
    dsk[(name, 0, 0)] = key
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    data = da.Array(graph, name, chunks=((series.n_frames,), (2,)), dtype=np.int64)
    return xr.DataArray(data, dims=("frame", "xy"), coords={"frame": series.frame_index, "xy": ["x", "y"]},
                        name="raw_shift_px")


def raw_shifts(holograms, params: HoloParams) -> np.ndarray:
    """The (N, 2) raw drift (x, y px) of :func:`raw_alignment`, computed now."""
    series = stack_of(holograms)
    dsk, key = _shift_tasks(series, params)
    dsk = {**series.graph, **dsk}
    return np.asarray(_compute(dsk, [key], current_client_or_none())[0])


def current_client_or_none():
    from holodask.cluster import current_client

    return current_client()


def _shift_tasks(series: FrameSeries, params: HoloParams, raw_shifts=None) -> tuple[dict, Any]:
    """A graph and the key of the (N, 2) raw drift: given, aligned, or zeros."""
    n_frames = series.n_frames
    if raw_shifts is not None:
        shifts = np.asarray(getattr(raw_shifts, "values", raw_shifts), dtype=np.int64).reshape(-1, 2)
        if shifts.shape[0] != n_frames:
            raise ParameterError(f"raw_shifts: {shifts.shape[0]} shifts for {n_frames} holograms")
        key = "raw-shifts-given-" + tokenize(shifts)
        return {key: shifts}, key
    if not params.enable_raw_alignment or n_frames < 2:
        key = f"raw-shifts-zero-{n_frames}"
        return {key: np.zeros((n_frames, 2), dtype=np.int64)}, key
    camera_shape = tuple(series.shape[1:])
    region = check_roi(params.align_roi_or_roi, camera_shape, "align_roi")
    sampling = _sampling(series, params, "object")
    return _raw_alignment_tasks(series, params, region, sampling)


# ------------------------------------------------------------------ reconstruction


def _saturation_count(roi_pixels: np.ndarray) -> int:
    """Pixels at the maximum of their integer type (in the drift-moved ROI of a raw frame)."""
    if roi_pixels.dtype.kind not in "iu":
        return 0
    return int(np.count_nonzero(roi_pixels == np.iinfo(roi_pixels.dtype).max))


class _FactorCache:
    """1 / empty under each distinct drift-moved ROI (:func:`normalisation_factor`), computed
    once per process and shared by the frames at that position (a drifting series has a
    few; the last :attr:`size` are kept)."""

    size = 16

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: OrderedDict = OrderedDict()

    def get(self, key, compute):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = [threading.Lock(), None]
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
        with entry[0]:
            if entry[1] is None:
                entry[1] = compute()
            return entry[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_FACTORS = _FactorCache()


def _factor_tasks(dsk: dict, shifts, factor_token, empty_key, roi, grid) -> list | None:
    """Where the drift is known already (given, or none): one task per distinct ROI position
    computing its normalisation factor (in parallel, before the holograms need them); the
    key for every frame. None where the drift comes later (the factors are then made where
    first needed, :class:`_FactorCache`)."""
    if factor_token is None or not isinstance(shifts, np.ndarray):
        return None
    keys, by_shift = [], {}
    for shift in (tuple(int(v) for v in row) for row in shifts):
        if shift not in by_shift:
            by_shift[shift] = ("factor-" + factor_token, len(by_shift))
            dsk[by_shift[shift]] = (normalisation_factor, empty_key, roi, shift, grid)
        keys.append(by_shift[shift])
    return keys


def _reconstruct_frame(block, shifts, k, big_empty, factor_token, factor_shape, geometry: SidebandGeometry, roi,
                       label, source, out_shape, per_nm_to_px):
    """One raw frame block (1, H, W) to ``(wave (ny, nx), quality)``: the drift-moved ROI
    cut out, reconstructed and normalised by the empty wave; ``quality`` (1, 5): the
    saturated pixels of its ROI, the fringe contrast, the sideband's offset (x, y) in
    pixels of the camera's transform (``per_nm_to_px``: (x, y) px per 1/nm) and the
    shot-noise phase noise (:func:`holodask.hologram.hologram_quality`)."""
    shift_xy = (int(shifts[k][0]), int(shifts[k][1]))
    frame = extract_roi(block[0], roi, shift_xy)
    saturated = _saturation_count(frame)
    _check_finite(frame, label, source)
    wave, mean_intensity = reconstruct_hologram(frame, geometry, return_mean=True)
    contrast, offset_x, offset_y, noise = hologram_quality(wave, mean_intensity, geometry)
    quality = np.array([[saturated, contrast, offset_x * per_nm_to_px[0], offset_y * per_nm_to_px[1], noise]])
    if isinstance(factor_token, np.ndarray):  # the factor of this frame's ROI position, computed by its task
        wave = normalise_with_factor(wave, factor_token, out_shape)
    elif factor_token is not None:
        factor = _FACTORS.get((factor_token, shift_xy),
                              lambda: normalisation_factor(big_empty, roi, shift_xy, factor_shape))
        wave = normalise_with_factor(wave, factor, out_shape)
    else:
        wave = normalise(wave, big_empty, roi, shift_xy, out_shape)
    return wave, quality


def _wave_block(pair) -> np.ndarray:
    return pair[0][np.newaxis]


def _quality_block(pair) -> np.ndarray:
    return pair[1]


@dataclass(frozen=True)
class _ObjectSetup:
    """What the parameters and the stack's headers fix before anything is read."""

    params: HoloParams
    camera_shape: tuple[int, int]
    roi: tuple[int, int, int, int]
    align_region: tuple[int, int, int, int]
    sampling_nm: float
    binning: int
    voltage_kV: float | None
    geometry: SidebandGeometry


def _object_setup(series: FrameSeries, params: HoloParams) -> _ObjectSetup:
    camera_shape = tuple(int(s) for s in series.shape[1:])
    sampling = _sampling(series, params, "object")
    params = _with_found_sideband(params, series, sampling)
    check_sideband(params, camera_shape, sampling)
    roi = check_roi(params.roi, camera_shape, "roi")
    align_region = check_roi(params.align_roi_or_roi, camera_shape, "align_roi")
    binning = int(params.binning or series.attrs.get("binning") or 1)
    roi_shape = (roi[3] - roi[1], roi[2] - roi[0])
    geometry = sideband_geometry_of(params, roi_shape, camera_shape, sampling, int(params.object_size), binning,
                                    dtype=series.dtype)
    voltage = params.voltage_kV if params.voltage_kV is not None else series.attrs.get("voltage_kV")
    return _ObjectSetup(params, camera_shape, roi, align_region, sampling, binning, voltage, geometry)


def repair_outliers(holograms, params=None, **options) -> "xr.DataArray":
    """The holograms with their outliers (cosmic-ray hits) repaired, as ``outlier_cutoff`` says.

    A pixel ``outlier_cutoff`` trimmed standard deviations or more above its
    trimmed average over the series is replaced by that average
    (:mod:`holodask.outliers`). The statistics are computed now (one pass over
    the files); the repaired stack is lazy, with the number of replaced pixels
    per hologram as the coordinate ``outliers`` and the attribute
    ``outlier_cutoff``. A series of fewer than 3 holograms, or a stack
    repaired already, is returned as it is.
    """
    params = stage_parameters(params, options)
    return repair_stack(stack_of(holograms), params).to_dataarray()


def repair_stack(series: FrameSeries, params: HoloParams) -> FrameSeries:
    """:func:`repair_outliers` on a :class:`FrameSeries`."""
    if params.outlier_cutoff is None or series.attrs.get("outlier_cutoff") is not None:
        return series
    from holodask.cluster import current_client
    from holodask.outliers import repair_series  # (imports dask.array)
    from holodask.stages.rounds import scheduler_of
    repaired, counts = repair_series(series.to_dataarray(), params.outlier_cutoff, scheduler_of(current_client()))
    result = FrameSeries.from_dataarray(repaired)
    if counts is not None:
        result.coords["outliers"] = np.asarray(counts, dtype=np.int64)
        result.attrs["outlier_cutoff"] = float(params.outlier_cutoff)
    return result


def _wave_attrs(setup: _ObjectSetup, series: FrameSeries, empty: EmptyWave | None, outlier_counts) -> dict:
    """Attributes of the reconstructed stack: the calibration and sideband for a reader, and
    ``hdf5_attrs``, those the output's ``data``/``variance`` datasets get."""
    from holodask.io.holo_hdf5 import standard_attrs

    params, geometry = setup.params, setup.geometry
    base = dict(voltage_kV=setup.voltage_kV, binning=setup.binning, microscope=series.attrs.get("microscope"),
                detector=series.attrs.get("detector"), roi=setup.roi,
                align_roi=setup.align_region if params.enable_raw_alignment else None)
    hdf5_attrs = standard_attrs(params, sampling_nm=geometry.sampling_out_nm[::-1],
                                carrier_per_nm=geometry.carrier_per_nm, **base)
    if params.enable_raw_alignment:
        hdf5_attrs["align_cut_off"] = float(params.align_cut_off_per_nm or params.cut_off_per_nm)
    else:
        hdf5_attrs.pop("align_cut_off", None)
    if params.sideband_found:  # found, not given: where, and how sure
        hdf5_attrs["sideband_pos_found"] = np.asarray(params.sideband_found[0], dtype=np.float64)
        hdf5_attrs["sideband_confidence"] = float(params.sideband_found[1])
    return {
        "name": "wave",
        "long_name": "reconstructed wave",
        "sampling_nm": float(geometry.sampling_out_nm[1]),
        "sampling_yx_nm": tuple(float(v) for v in geometry.sampling_out_nm),
        "hologram_sampling_nm": setup.sampling_nm,
        "voltage_kV": setup.voltage_kV,
        "sideband_pos_px": tuple(float(v) for v in params.sideband_pos_px),
        "sideband": sideband_half(params.sideband_pos_px, setup.camera_shape),
        "sideband_confidence": params.sideband_found[1] if params.sideband_found else None,
        "carrier_per_nm": tuple(float(v) for v in geometry.carrier_per_nm),
        "cut_off_per_nm": params.cut_off_per_nm,
        "object_size_px": int(params.object_size),
        "filter_func": params.filter_func.as_attribute(),
        "roi": setup.roi,
        "align_roi": base["align_roi"],
        "binning": setup.binning,
        "microscope": series.attrs.get("microscope"),
        "detector": series.attrs.get("detector"),
        "source": series.attrs.get("source"),
        "outlier_cutoff": params.outlier_cutoff if outlier_counts is not None else None,
        "empty": empty,
        "params": params,
        "hdf5_attrs": hdf5_attrs,
    }


def reconstruct(holograms, params=None, *, empty=None, raw_shifts=None, **options) -> "xr.DataArray":
    """Reconstruct every hologram of a stack, lazily: the first stage of ``holodask run``.

    Parameters
    ----------
    holograms : xarray.DataArray
        ``(frame, y, x)`` holograms, as :func:`holodask.open_series` gives (a
        numpy or Dask array, or one 2-D hologram, is taken as well).
    params : HoloParams, parameter file or dict, optional
        The parameters (:func:`holodask.load_parameters`); its series names are
        not used here, ``holograms`` is the series.
    empty : optional
        The empty (vacuum) wave to normalise by: a series of empty holograms
        (reconstructed and averaged as ``holodask run`` does), a complex 2-D
        wave, a result Dataset (its ``empty``), ``False`` for none; default:
        what ``params`` say (``empty_names``, ``empty_override``, ...).
    raw_shifts : (N, 2) array, optional
        The raw drift (x, y px) of every hologram, when already known (the
        ``raw_shift_x_px``/``raw_shift_y_px`` of an earlier reconstruction):
        no raw alignment then.
    **options
        Parameters by their parameter-file names and units, replacing those of
        ``params``: ``sideband_pos``, ``cut_off``, ``cut_off2``, ``object_size``,
        ``empty_size``, ``filter_func``, ``mtf``, ``roi``, ``align_roi``,
        ``align_cut_off``, ``enable_raw_alignment``, ``sampling``, ``voltage``,
        ``only_phase``, ``outlier_cutoff``, ... Without ``sideband_pos`` it is
        found on the first hologram (:func:`holodask.find_sideband`), without
        ``cut_off`` a third of the carrier frequency is taken, without
        ``object_size`` the smallest size that holds the mask; these read the
        first hologram now (as ``outlier_cutoff`` reads every hologram now for
        its statistics).

    Returns
    -------
    xarray.DataArray
        Complex64 ``(frame, y, x)``, Dask-backed with one hologram per chunk
        (nothing is read or computed until it is). ``y``/``x`` in nm
        (``units``); per frame: ``defocus_nm``, ``raw_shift_x_px`` and
        ``raw_shift_y_px`` (lazy), ``saturated_px`` (pixels at the maximum of an
        integer type in the hologram's ROI, lazy), ``outliers`` (with
        ``outlier_cutoff``) and the per-frame coordinates of the holograms;
        ``attrs``: ``carrier_per_nm`` (x, y), ``cut_off_per_nm``,
        ``sideband_pos_px``, ``voltage_kV``, ``sampling_nm``, ``empty`` (an
        :class:`EmptyWave`), ``params`` (the parameters used) and
        ``hdf5_attrs`` (what the output file's datasets get).

    Notes
    -----
    Computing any hologram computes the raw alignment of the whole series
    (each drift is a sum along the series); :func:`holodask.average` computes
    the stack once and keeps it for its rounds.
    """
    params = stage_parameters(params, options)
    return reconstruct_stack(stack_of(holograms), params, empty=empty, raw_shifts=raw_shifts).to_dataarray()


def reconstruct_stack(series: FrameSeries, params: HoloParams, *, empty=None, raw_shifts=None) -> FrameSeries:
    """:func:`reconstruct` on a :class:`FrameSeries`, giving one: the tasks of the waves (as
    (1, ny, nx) blocks), with the raw drift and saturated pixels as lazy coordinates."""
    _check_real(series, "holograms")
    series = repair_stack(series, params)
    if series.n_frames == 0:
        raise ParameterError("object_names: the series is empty (every hologram excluded by object_exclude)")
    setup = _object_setup(series, params)
    params = setup.params
    empty_wave = empty_for(empty, params, setup.sampling_nm)

    size = int(params.object_size)
    out_shape = (size, size)
    roi = setup.roi
    roi_shape = (roi[3] - roi[1], roi[2] - roi[0])
    source = series.attrs.get("source") or "the object series"
    dsk = dict(series.graph)
    shift_dsk, shifts_key = _shift_tasks(series, params, raw_shifts)
    dsk.update(shift_dsk)
    empty_token = None
    if empty_wave is not None:
        empty_token = empty_wave.key if empty_wave.lazy else tokenize(empty_wave.wave)
    token = tokenize(series.name, shifts_key, roi, out_shape, source, setup.geometry.carrier_per_nm,
                     params.cut_off2_per_nm2, params.filter_func, params.mtf, params.only_phase, empty_token)
    geometry_key, empty_key = ("geometry-" + token,), ("camera-empty-" + token,)
    dsk[geometry_key] = setup.geometry
    if empty_wave is not None:
        if empty_wave.lazy:
            dsk.update(empty_wave.dsk)
        wave_ref = empty_wave.key if empty_wave.lazy else empty_wave.wave
        dsk[empty_key] = (_camera_empty, wave_ref, setup.camera_shape, params.only_phase)
        grid = factor_grid(roi_shape, out_shape)
        factor_token = token if grid is not None else None
    else:
        # the reference divides by a wave of ones brought to the camera size
        e_size = _empty_size(params)
        value = 1.0 if params.only_phase else e_size * e_size / (setup.camera_shape[0] * setup.camera_shape[1])
        dsk[empty_key] = ConstantEmpty(value, setup.camera_shape)
        grid, factor_token = None, None
    pair_name, wave_name, quality_name = ("reconstruct-" + token, "wave-" + token, "quality-" + token)
    # the sideband's offset: 1/nm to pixels of the camera's transform
    per_nm_to_px = (setup.sampling_nm * setup.camera_shape[1], setup.sampling_nm * setup.camera_shape[0])
    factors = _factor_tasks(dsk, shift_dsk.get(shifts_key), factor_token, empty_key, roi, grid)
    for k in range(series.n_frames):
        dsk[(pair_name, k)] = (_reconstruct_frame, series.frame_task(k), shifts_key, k, empty_key,
                               factors[k] if factors else factor_token, grid, geometry_key, roi,
                               f"frame {int(series.frame_index[k])}", source, out_shape, per_nm_to_px)
        dsk[(wave_name, k)] = (_wave_block, (pair_name, k))
        dsk[(quality_name, k)] = (_quality_block, (pair_name, k))
    n = series.n_frames
    quality = [((quality_name, k), 1) for k in range(n)]
    lazy = {"raw_shift_x_px": (np.int64, [(shifts_key, n)], 0),
            "raw_shift_y_px": (np.int64, [(shifts_key, n)], 1),
            "saturated_px": (np.int64, quality, 0),
            "fringe_contrast": (np.float64, quality, 1),
            "sideband_shift_x_px": (np.float64, quality, 2),
            "sideband_shift_y_px": (np.float64, quality, 3),
            "phase_noise_rad": (np.float64, quality, 4)}
    coords = {key: values for key, values in series.coords.items()}
    coord_attrs = dict(series.coord_attrs)
    coord_attrs.update({name: {"units": "px"} for name in ("raw_shift_x_px", "raw_shift_y_px", "sideband_shift_x_px",
                                                            "sideband_shift_y_px")})
    coord_attrs.update({"defocus_nm": {"units": "nm"}, "phase_noise_rad": {"units": "rad"},
                        "fringe_contrast": {"long_name": "fringe contrast (times the object's rms amplitude)"}})
    attrs = _wave_attrs(setup, series, empty_wave, coords.get("outliers"))
    return FrameSeries(wave_name, dsk, [(wave_name, k) for k in range(n)], (n, size, size), np.dtype(np.complex64),
                       series.frame_index, coords, attrs, lazy, coord_attrs)
