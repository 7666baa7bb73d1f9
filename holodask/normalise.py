"""Normalisation of reconstructed waves by the empty (vacuum) wave: pure numpy kernels.

The reference divides each reconstruction by the empty wave under the
hologram's drift-moved ROI, Fourier-interpolating the wave to the ROI size and
back. :func:`normalise` does exactly that; :func:`normalise_with_factor` gets
the same numbers on a grid of twice the output size from
:func:`normalisation_factor` (1/empty resampled once per distinct ROI position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from holodask import fft
from holodask.optics import _transform_buffers, _transpose_into, fourier_downsample, fourier_upsample
from holodask.hologram import moved_roi

__all__ = [
    "ConstantEmpty", "factor_grid", "factor_fft_plans", "fft_plans", "normalisation_factor", "normalise",
    "normalise_with_factor",
]


def factor_grid(roi_shape, out_shape) -> tuple[int, int] | None:
    """Grid of :func:`normalisation_factor`: twice the output size, if the ROI is that large."""
    grid = (2 * int(out_shape[0]), 2 * int(out_shape[1]))
    return grid if roi_shape[0] >= grid[0] and roi_shape[1] >= grid[1] else None


def fft_plans(wave_shape, grid, out_shape) -> list[tuple]:
    """The transforms :func:`normalise_with_factor` runs for waves of ``wave_shape`` and a
    factor on ``grid``, as ``(kind, shape, out_shape, axis)`` for :func:`holodask.fft.prepare`."""
    (ny, nx), (my, mx), (oy, ox) = (tuple(int(v) for v in s) for s in (wave_shape, grid, out_shape))
    keep_up, keep_down = 2 * ((ny - 1) // 2) + 1, 2 * ((oy - 1) // 2) + 1
    return [("fft2", (ny, nx), None, None), ("ifft", (keep_up, mx), None, 1), ("ifft", (mx, my), None, 1),
            ("fft", (mx, my), None, 1), ("fft", (keep_down, mx), None, 1), ("ifft2", (oy, ox), None, None)]


def normalisation_factor(big_empty: np.ndarray, roi, shift_xy, grid) -> np.ndarray:
    """1 / (empty wave under the drift-moved ROI), Fourier-resampled to ``grid``.

    Divides where the ROI lies on the camera, 1 elsewhere (as the reference).
    Scaled so that it multiplies Fourier-interpolated values. Stored in Fortran
    order (its transpose is contiguous), as :func:`normalise_with_factor` uses it.
    The transforms run in their own buffers, on contiguous rows, and along y only
    over the columns that hold kept frequencies (one factor per distinct raw
    shift: a drifting series needs many).
    """
    left, top, right, bottom = moved_roi(roi, shift_xy)
    height, width = bottom - top, right - left
    gy, gx = int(grid[0]), int(grid[1])
    scale = gy * gx / (height * width)
    if gy > height or gx > width:
        inverse = np.ones((height, width), dtype=np.complex64)
        _divide_into(inverse, big_empty, top, left)
        return np.asfortranarray((fourier_downsample(inverse, grid) * np.float32(scale)).astype(np.complex64))
    hy, hx = (gy - 1) // 2, (gx - 1) // 2  # frequencies -h..h kept
    rows, run = _transform_buffers("fft", (height, width), axis=1)
    rows[...] = 1
    _divide_into(rows, big_empty, top, left)
    # the kept frequencies on the transposed grid (x, y), and back
    return _kept_block_inverse(run(), hx, hy, (gx, gy), scale / (gy * gx)).T


def _kept_block_inverse(spectrum_rows: np.ndarray, half_columns: int, half_rows: int, out_shape, scale: float):
    """The inverse transform on ``out_shape`` of the frequencies kept of an (n, m) array
    transformed along its rows.

    The kept columns (frequencies -half_columns..half_columns along axis 1) are
    transformed along axis 0 as contiguous rows; of that, the frequencies
    -half_rows..half_rows form the block placed on the output grid, whose rows
    are the column frequencies. Returns the (unnormalised) inverse times ``scale``.
    """
    n, m = spectrum_rows.shape
    c, r = half_columns, half_rows
    kept, run = _transform_buffers("fft", (2 * c + 1, n), axis=1)
    _transpose_into(kept[:c + 1], spectrum_rows[:, :c + 1])
    _transpose_into(kept[c + 1:], spectrum_rows[:, m - c:])
    kept = run()
    rows, columns = int(out_shape[0]), int(out_shape[1])
    small, run = _transform_buffers("ifft2", (rows, columns))
    small[...] = 0
    small[:c + 1, :r + 1] = kept[:c + 1, :r + 1]
    small[:c + 1, columns - r:] = kept[:c + 1, n - r:]
    small[rows - c:, :r + 1] = kept[c + 1:, :r + 1]
    small[rows - c:, columns - r:] = kept[c + 1:, n - r:]
    return np.multiply(run(), np.float32(scale))


def _divide_into(out: np.ndarray, big_empty: np.ndarray, top: int, left: int) -> None:
    """``out = 1 / big_empty`` where ``out`` (placed at ``top, left`` on the camera) overlaps it."""
    height, width = big_empty.shape
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(height, top + out.shape[0]), min(width, left + out.shape[1])
    if y1 > y0 and x1 > x0:
        np.divide(np.complex64(1.0), big_empty[y0:y1, x0:x1], out=out[y0 - top:y1 - top, x0 - left:x1 - left])


def factor_fft_plans(roi_shape, grid) -> list[tuple]:
    """The transforms :func:`normalisation_factor` runs for a ROI of ``roi_shape`` and a
    factor on ``grid``, as ``(kind, shape, out_shape, axis)`` for :func:`holodask.fft.prepare`."""
    (height, width), (gy, gx) = (tuple(int(v) for v in s) for s in (roi_shape, grid))
    return [("fft", (height, width), None, 1), ("fft", (2 * ((gx - 1) // 2) + 1, height), None, 1),
            ("ifft2", (gx, gy), None, None)]


def normalise_with_factor(wave: np.ndarray, factor: np.ndarray, out_shape) -> np.ndarray:
    """The reference's normalisation (see :func:`normalise`) on a grid of twice the size.

    Fourier-interpolating to the ROI size, dividing by the empty wave there and
    cropping the spectrum back keeps, of the quotient's spectrum, only the
    output frequencies; they are sums of products of the wave's frequencies
    (|f| < n/2) with those of 1/empty at differences |f| < n. A grid of 2n
    holds all of them without aliasing, so multiplying there by 1/empty
    resampled to it (one ROI-size transform per distinct raw shift, not two per
    hologram) gives the same numbers.

    The six 1-D passes run over contiguous memory, on the fine grid transposed
    (x, y), and only over the rows that hold kept frequencies.
    """
    wave = np.asarray(wave)
    ny, nx = wave.shape
    my, mx = factor.shape
    oy, ox = int(out_shape[0]), int(out_shape[1])
    if my < ny or mx < nx or oy > my or ox > mx:
        big = fourier_upsample(wave, factor.shape)
        big *= factor
        return fourier_downsample(big, out_shape).astype(np.complex64)
    factor_t = factor.T if factor.T.flags.c_contiguous else np.ascontiguousarray(factor.T)
    hy, hx = (ny - 1) // 2, (nx - 1) // 2  # frequencies -h..h kept on the way up
    gy, gx = (oy - 1) // 2, (ox - 1) // 2  # and on the way down
    # the wave's spectrum; its kept rows interpolated along x to mx
    wave_in, run = _transform_buffers("fft2", (ny, nx))
    wave_in[...] = wave
    spectrum = run()
    rows, run = _transform_buffers("ifft", (2 * hy + 1, mx), axis=1)
    scale = np.float32(1.0 / (my * mx))
    for source_y, target_y in ((slice(0, hy + 1), slice(0, hy + 1)), (slice(ny - hy, ny), slice(hy + 1, 2 * hy + 1))):
        np.multiply(spectrum[source_y, :hx + 1], scale, out=rows[target_y, :hx + 1])
        np.multiply(spectrum[source_y, nx - hx:], scale, out=rows[target_y, mx - hx:])
    rows[:, hx + 1:mx - hx] = 0
    rows = run()
    # transposed: every column along y to my, times 1/empty there, back along y
    columns, run = _transform_buffers("ifft", (mx, my), axis=1)
    _transpose_into(columns[:, :hy + 1], rows[:hy + 1])
    _transpose_into(columns[:, my - hy:], rows[hy + 1:])
    columns[:, hy + 1:my - hy] = 0
    big_t = run()
    product, run = _transform_buffers("fft", (mx, my), axis=1)
    np.multiply(big_t, factor_t, out=product)
    # the kept rows of the product's spectrum along x, then the output
    return _kept_block_inverse(run(), gy, gx, (oy, ox), 1.0 / (oy * ox))


@dataclass(frozen=True)
class ConstantEmpty:
    """An empty wave that is one value everywhere (no empty given), at the camera size."""

    value: complex
    shape: tuple[int, int]


def normalise(wave, big_empty, roi, shift_xy, out_shape):
    """Divide a reconstruction by the empty wave under its drift-moved ROI.

    As the reference: Fourier-interpolate to the ROI size, divide where the ROI
    lies on the camera, Fourier-interpolate back. For a constant empty wave and
    a ROI inside the image that is a division and, for even sizes, the loss of
    the Nyquist frequencies (the interpolation keeps ``2*((n-1)//2)+1`` of them),
    computed here without going through the ROI size.
    """
    left, top, right, bottom = moved_roi(roi, shift_xy)
    roi_shape = (bottom - top, right - left)
    if isinstance(big_empty, ConstantEmpty):
        height, width = big_empty.shape
        if left >= 0 and top >= 0 and right <= width and bottom <= height and wave.shape == tuple(out_shape):
            ny, nx = wave.shape
            if ny % 2 == 0 or nx % 2 == 0:
                spectrum = fft.fft2(wave)
                if ny % 2 == 0 and roi_shape[0] >= ny:
                    spectrum[ny // 2, :] = 0
                if nx % 2 == 0 and roi_shape[1] >= nx:
                    spectrum[:, nx // 2] = 0
                wave = fft.ifft2(spectrum)
            return (wave / np.complex64(big_empty.value)).astype(np.complex64)
        big_empty = np.full(big_empty.shape, big_empty.value, dtype=np.complex64)
    big = fourier_upsample(wave, roi_shape)
    height, width = big_empty.shape
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(height, bottom), min(width, right)
    if y1 > y0 and x1 > x0:
        big[y0 - top:y1 - top, x0 - left:x1 - left] /= big_empty[y0:y1, x0:x1]
    return fourier_downsample(big, out_shape).astype(np.complex64)
