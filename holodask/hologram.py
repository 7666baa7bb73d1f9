"""Per-frame reconstruction kernels (pure numpy; no Dask, no files).

:func:`sideband_geometry` works out once per series where the sideband sits,
which part of the spectrum is cut out, the mask (with the MTF divided out) and
the sub-pixel phase ramp; :func:`reconstruct_hologram` then turns one
hologram (ROI) into a complex64 wave with one real FFT (rows, then only the
columns the sideband needs, transposed so that every 1-D transform runs over
contiguous memory) and one small inverse FFT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from holodask.errors import ParameterError
from holodask.optics import _transform_buffers, filter_function, fresnel_line_weights, mtf_array
from holodask.params import FilterSpec

__all__ = [
    "SidebandGeometry",
    "sideband_geometry",
    "reconstruct_hologram",
    "hologram_quality",
    "moved_roi",
    "extract_roi",
    "fft_plans",
]


@dataclass(frozen=True)
class SidebandGeometry:
    """Everything needed to reconstruct holograms of one shape.

    Attributes
    ----------
    image_shape : (H, W) of the hologram (ROI) being transformed.
    out_shape : (ny, nx) of the reconstructed wave.
    rows, cols, conjugate : where each kept spectrum pixel comes from in the
        half spectrum of :func:`holodask.fft.rfft2`, and whether it is conjugated.
    used_columns, local_cols : the half-spectrum columns needed at all, and each
        kept pixel's column among them (only those columns are transformed along y).
    dst : (y0, y1, x0, x1) of the kept pixels inside the centred output spectrum.
    weights : mask divided by the MTF on the kept pixels (float32).
    ramp : complex64 ``exp(-2 pi i w.r)`` removing the sub-pixel carrier.
    column_slice : ``used_columns`` as a slice when they are consecutive (else None).
    source : for each pixel of the *unshifted* output spectrum, its flat index in
        the column spectra ``(len(used_columns), H)`` (0 where nothing is kept).
    out_weights : ``weights`` at the unshifted output pixels, divided by the number of
        output pixels (the inverse FFT's normalisation), 0 where nothing is kept.
    out_conjugate : which unshifted output pixels are conjugated (None: none).
    carrier_weight : the weight (mask / MTF) on the carrier's own pixel.
    weight_power : the sum of the squared weights (how much noise the mask lets through).
    carrier_per_nm : (x, y) carrier in 1/nm.
    sampling_out_nm : (y, x) pixel size of the reconstruction in nm.
    """

    image_shape: tuple[int, int]
    out_shape: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray
    conjugate: np.ndarray
    used_columns: np.ndarray
    local_cols: np.ndarray
    dst: tuple[int, int, int, int]
    weights: np.ndarray
    ramp: np.ndarray | None
    carrier_per_nm: tuple[float, float]
    sampling_out_nm: tuple[float, float]
    column_slice: slice | None = None
    source: np.ndarray | None = None
    out_weights: np.ndarray | None = None
    out_conjugate: np.ndarray | None = None
    carrier_weight: float = 1.0
    weight_power: float = 0.0


def _shifted_frequencies(n: int, spacing: float, carrier: float, dtype) -> np.ndarray:
    """Centred frequencies (1/nm) of an n-point FFT minus the carrier.

    Rounded to ``dtype`` at the same steps as the reference program computes
    them (float32 for holograms stored as integers of up to 4 bytes or float32),
    so that an EDGE mask keeps exactly the same pixels on its boundary.
    """
    q = (np.arange(n) - n // 2).astype(dtype) / dtype(n)
    q = (q.astype(np.float64) * (1.0 / spacing)).astype(dtype)
    return (q - dtype(carrier)).astype(dtype)


def _normalised_frequency2(qy: np.ndarray, qx: np.ndarray, cut_off2: np.ndarray) -> np.ndarray:
    """``g^2`` with the reference's order of operations (float64 result)."""
    if cut_off2[0, 1] == 0.0 and cut_off2[1, 0] == 0.0:
        return (qy**2).astype(np.float64) / cut_off2[1, 1] + (qx**2).astype(np.float64) / cut_off2[0, 0]
    inverse = np.linalg.inv(cut_off2)
    return ((qy**2).astype(np.float64) * inverse[1, 1] + (qx**2).astype(np.float64) * inverse[0, 0]
            + (2 * qx * qy).astype(np.float64) * inverse[0, 1])


def sideband_geometry(
    image_shape,
    sampling_yx,
    carrier_xy_per_nm,
    out_shape,
    cut_off2_per_nm2,
    filter_spec: FilterSpec = FilterSpec(),
    mtf_terms=None,
    binning: int = 1,
    single_precision_mask: bool = False,
    fresnel_filter=None,
) -> SidebandGeometry:
    """Pre-compute the sideband extraction for holograms of ``image_shape``.

    Parameters
    ----------
    image_shape : (H, W) of the holograms (the ROI).
    sampling_yx : pixel size (y, x) in nm (a scalar for square pixels).
    carrier_xy_per_nm : carrier (x, y) in 1/nm.
    out_shape : (ny, nx) of the reconstructed wave.
    cut_off2_per_nm2 : 2x2 squared cut-off matrix in 1/nm^2 (``[[xx, xy], [yx, yy]]``).
    filter_spec : mask function.
    mtf_terms : MTF terms (None: no MTF deconvolution).
    binning : detector binning (MTF only).
    single_precision_mask : compute the mask's frequencies as the reference does
        for holograms stored as integers of up to 4 bytes or float32.
    fresnel_filter : :class:`holodask.params.FresnelFilter` (parameter ``fresnel_filter``):
        also suppress the line of the biprism's Fresnel fringes through the sideband
        (:func:`holodask.optics.fresnel_line_weights`); None (default): the mask alone.
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    ny, nx = int(out_shape[0]), int(out_shape[1])
    sy, sx = (float(v) for v in np.broadcast_to(np.asarray(sampling_yx, dtype=float), (2,)))
    cx, cy = float(carrier_xy_per_nm[0]), float(carrier_xy_per_nm[1])
    if ny > height or nx > width:
        raise ParameterError(
            f"object_size/empty_size: the reconstruction ({ny} x {nx} px) is larger than the "
            f"region it is cut from ({height} x {width} px); expected at most {min(height, width)}"
        )
    carrier_px = np.array([cy * sy * height, cx * sx * width])
    int_carrier = np.floor(carrier_px).astype(int)
    if not (-height // 2 <= int_carrier[0] < height - height // 2 and -width // 2 <= int_carrier[1] < width - width // 2):
        raise ParameterError(
            f"sideband_pos: the sideband lies outside the Fourier transform of the "
            f"{width} x {height} px image"
        )
    cut_off2 = np.asarray(cut_off2_per_nm2, dtype=float)
    reach_px = np.sqrt(np.abs(np.diag(cut_off2))) * np.array([sx * width, sy * height])  # x, y
    if reach_px[0] > nx / 2 + 1e-9 or reach_px[1] > ny / 2 + 1e-9:
        raise ParameterError(
            f"cut_off: the cut-off ({reach_px[0]:.1f} x {reach_px[1]:.1f} px around the sideband) "
            f"reaches past the cropped sideband ({nx} x {ny} px); expected a smaller cut_off "
            f"or a larger object_size/empty_size"
        )

    # region of the centred spectrum that is kept, clipped to the spectrum
    y0 = height // 2 + int_carrier[0] - ny // 2
    x0 = width // 2 + int_carrier[1] - nx // 2
    dy0, dx0 = max(0, -y0), max(0, -x0)
    y0, x0 = max(0, y0), max(0, x0)
    y1 = min(height, height // 2 + int_carrier[0] - ny // 2 + ny)
    x1 = min(width, width // 2 + int_carrier[1] - nx // 2 + nx)
    dst = (dy0, dy0 + (y1 - y0), dx0, dx0 + (x1 - x0))

    # mask on the kept pixels, centred on the exact carrier
    dtype = np.float32 if single_precision_mask else np.float64
    qy = _shifted_frequencies(height, sy, cy, dtype)[y0:y1].reshape(-1, 1)
    qx = _shifted_frequencies(width, sx, cx, dtype)[x0:x1].reshape(1, -1)
    g2 = _normalised_frequency2(qy, qx, cut_off2)
    weights = filter_function(g2, filter_spec).astype(np.float64)
    if fresnel_filter is not None:
        weights = weights * fresnel_line_weights(qy, qx, (cx, cy), fresnel_filter)
    if mtf_terms:
        mtf = np.fft.fftshift(mtf_array(mtf_terms, (height, width), binning))
        weights = weights / mtf[y0:y1, x0:x1]
    weights = weights.astype(np.float32)

    # where the kept pixels live in the half spectrum of a real FFT
    ky = (np.arange(y0, y1) - height // 2) % height
    kx = (np.arange(x0, x1) - width // 2) % width
    conjugate = kx > width // 2
    rows = np.where(conjugate[None, :], (-ky[:, None]) % height, ky[:, None])
    cols = np.where(conjugate, (-kx) % width, kx)[None, :].repeat(len(ky), axis=0)

    used_columns, local_cols = np.unique(cols, return_inverse=True)
    local_cols = local_cols.reshape(cols.shape)
    consecutive = len(used_columns) > 0 and np.all(np.diff(used_columns) == 1)
    column_slice = slice(int(used_columns[0]), int(used_columns[-1]) + 1) if consecutive else None
    # the kept pixels in the unshifted output spectrum (what ifftshift would do)
    out_y = (np.arange(dst[0], dst[1]) - ny // 2) % ny
    out_x = (np.arange(dst[2], dst[3]) - nx // 2) % nx
    at = np.ix_(out_y, out_x)
    source = np.zeros((ny, nx), dtype=np.intp)
    source[at] = local_cols * height + rows
    out_weights = np.zeros((ny, nx), dtype=np.float32)
    out_weights[at] = weights * np.float32(1.0 / (ny * nx))
    out_conjugate = None
    if np.any(conjugate):
        out_conjugate = np.zeros((ny, nx), dtype=bool)
        out_conjugate[at] = conjugate[None, :]
    sampling_out = (sy * height / ny, sx * width / nx)
    # the weight (mask / MTF) on the pixel of the carrier itself
    carrier_row = min(max(height // 2 + int_carrier[0] - y0, 0), y1 - y0 - 1)
    carrier_col = min(max(width // 2 + int_carrier[1] - x0, 0), x1 - x0 - 1)
    carrier_weight = float(weights[carrier_row, carrier_col]) if weights.size else 1.0
    fraction = (carrier_px - int_carrier) / np.array([height, width]) / np.array([sy, sx])  # 1/nm
    if np.allclose(fraction, 0.0):
        ramp = None
    else:
        y_nm = np.arange(ny).reshape(-1, 1) * sampling_out[0]
        x_nm = np.arange(nx).reshape(1, -1) * sampling_out[1]
        ramp = np.exp(-2j * np.pi * (fraction[0] * y_nm + fraction[1] * x_nm)).astype(np.complex64)
    return SidebandGeometry(
        image_shape=(height, width),
        out_shape=(ny, nx),
        rows=rows,
        cols=cols,
        conjugate=np.broadcast_to(conjugate[None, :], rows.shape).copy(),
        used_columns=used_columns,
        local_cols=local_cols,
        dst=dst,
        weights=weights,
        ramp=ramp,
        carrier_per_nm=(cx, cy),
        sampling_out_nm=sampling_out,
        column_slice=column_slice,
        source=source,
        out_weights=out_weights,
        out_conjugate=out_conjugate,
        carrier_weight=carrier_weight if carrier_weight > 0 else 1.0,
        weight_power=float(np.sum(weights.astype(np.float64) ** 2)),
    )


def reconstruct_hologram(frame: np.ndarray, geometry: SidebandGeometry, *, return_mean: bool = False):
    """Reconstruct one hologram: FFT, cut out and mask the sideband, inverse FFT.

    Returns the complex64 wave of ``geometry.out_shape`` (and, with ``return_mean``,
    the hologram's mean intensity, read off its transform).
    """
    frame = np.asarray(frame)
    if frame.shape != geometry.image_shape:
        raise ValueError(f"hologram of shape {frame.shape}, expected {geometry.image_shape}")
    # the 2-D FFT in two passes: rows, then (transposed, so contiguous) only the
    # columns the sideband needs; no copies of the transforms' buffers
    height = geometry.image_shape[0]
    rows_in, run_rows = _transform_buffers("rfft", geometry.image_shape, axis=1)
    rows_in[...] = frame  # cast to float32 on the way in
    along_x = run_rows()
    columns_in, run_columns = _transform_buffers("fft", (len(geometry.used_columns), height), axis=1)
    if geometry.column_slice is not None:
        columns_in[...] = along_x[:, geometry.column_slice].T
    else:
        columns_in[...] = along_x[:, geometry.used_columns].T
    columns = run_columns().reshape(-1)
    # the masked sideband, already in the unshifted order of the inverse FFT
    side, run_inverse = _transform_buffers("ifft2", geometry.out_shape)
    np.take(columns, geometry.source, out=side, mode="clip")
    if geometry.out_conjugate is not None:
        np.conjugate(side, out=side, where=geometry.out_conjugate)
    side *= geometry.out_weights
    wave = run_inverse()
    wave = np.multiply(wave, geometry.ramp) if geometry.ramp is not None else wave.copy()
    if return_mean:
        # the row transforms' first column holds the row sums
        return wave, float(np.sum(along_x[:, 0].real, dtype=np.float64)) / (height * geometry.image_shape[1])
    return wave


def hologram_quality(wave: np.ndarray, mean_intensity: float, geometry: SidebandGeometry) -> np.ndarray:
    """Fringe contrast, carrier offset and shot-noise phase noise of one hologram.

    For ``I = I0 (1 + V cos(2 pi q.r + phi))`` the sideband holds ``I0 V / 2`` per
    pixel of the transform, so ``V = 2 rms|wave| / I0`` once the wave is scaled back
    (the transform's size, the mask and MTF weight at the carrier): the contrast
    times the object's rms amplitude (1 in vacuum). The carrier offset is the mean
    phase step between neighbouring pixels of the wave (amplitude weighted): the
    sideband's distance from ``sideband_pos`` in 1/nm (x, y), the object's mean
    phase gradient included (constant along a series; its changes are the drift).
    The phase noise is that of Poisson counts through the mask,
    ``sqrt(2 sum(w^2) / (I0 V^2 H W))`` rad per pixel of the wave (``w``: the mask's
    weights, ``H W``: the hologram's pixels): for counts in electrons (for ``c``
    counts per electron it is ``sqrt(c)`` times larger).

    Returns
    -------
    float64 array ``[contrast, offset_x_per_nm, offset_y_per_nm, phase_noise_rad]``.
    """
    flat = wave.reshape(-1)
    ny, nx = wave.shape
    height, width = geometry.image_shape
    power = float(np.vdot(flat, flat).real) / flat.size
    scale = (ny * nx) / (height * width) / geometry.carrier_weight
    contrast = 2.0 * np.sqrt(power) * scale / mean_intensity if mean_intensity > 0 else 0.0
    step_x = np.angle(np.vdot(flat[:-1], flat[1:]))  # (the row ends wrap into the next row: 1/nx of the terms)
    step_y = np.angle(np.vdot(wave[:-1].reshape(-1), wave[1:].reshape(-1)))
    sy, sx = geometry.sampling_out_nm
    signal = mean_intensity * contrast**2 * height * width
    noise = float(np.sqrt(2.0 * geometry.weight_power / signal)) if signal > 0 else float("inf")
    return np.array([contrast, step_x / (2 * np.pi * sx), step_y / (2 * np.pi * sy), noise])


def fft_plans(geometry: SidebandGeometry) -> list[tuple]:
    """The transforms :func:`reconstruct_hologram` runs, as ``(kind, shape, out_shape, axis)``
    for :func:`holodask.fft.prepare`."""
    height = geometry.image_shape[0]
    return [("rfft", geometry.image_shape, None, 1), ("fft", (len(geometry.used_columns), height), None, 1),
            ("ifft2", geometry.out_shape, None, None)]


def moved_roi(roi, shift_xy) -> tuple[int, int, int, int]:
    """The ROI ``(left, top, right, bottom)`` following a drift of ``shift_xy`` px (raw_shift)."""
    sx, sy = int(shift_xy[0]), int(shift_xy[1])
    return (roi[0] - sx, roi[1] - sy, roi[2] - sx, roi[3] - sy)


def _clip(start: int, size: int, limit: int) -> tuple[int, int, int]:
    """(source start, destination start, length) of a window clipped to [0, limit)."""
    dst = max(0, -start)
    src = max(0, start)
    length = min(limit, start + size) - src
    return src, dst, max(0, length)


def extract_roi(frame: np.ndarray, roi, shift_xy=(0, 0)) -> np.ndarray:
    """Cut the ROI ``(left, top, right, bottom)`` moved by the drift out of a frame.

    Pixels outside the image are filled with the frame's mean intensity (cast to
    the frame's dtype, as the reference does).
    """
    frame = np.asarray(frame)
    left, top, right, bottom = moved_roi(roi, shift_xy)
    height, width = bottom - top, right - left
    out = np.empty((height, width), dtype=frame.dtype)
    sy, dy, ny = _clip(top, height, frame.shape[0])
    sx, dx, nx = _clip(left, width, frame.shape[1])
    if ny < height or nx < width:
        out[...] = np.asarray(frame.mean()).astype(frame.dtype)
    if ny > 0 and nx > 0:
        out[dy:dy + ny, dx:dx + nx] = frame[sy:sy + ny, sx:sx + nx]
    return out
