"""Locating the sideband of an off-axis hologram in its centred Fourier transform."""

from __future__ import annotations

import numpy as np

from holodask.errors import DataError

__all__ = ["find_sideband"]


def find_sideband(
    image: np.ndarray,
    *,
    exclude_radius_px: float | None = None,
    refine_radius_px: int = 2,
) -> tuple[float, float]:
    """Position ``(x, y)`` of the strongest (upper) sideband of a hologram.

    The position is given in pixels of ``np.fft.fftshift(np.fft.fft2(image))``,
    the convention of the ``sideband_pos`` parameter. The image is apodised
    with a Hann window (to suppress the streaks of its borders), the centre
    band is masked by a disc around the origin, and the maximum amplitude in
    the upper half (rows ``y < H // 2``) is refined to sub-pixel precision by
    the amplitude-weighted centroid of its neighbourhood.

    Parameters
    ----------
    image : array_like, 2-D
        The hologram (real or complex).
    exclude_radius_px : float, optional
        Radius of the masked centre disc, in Fourier pixels (of the smaller
        dimension's scale); default ``max(4, min(H, W) / 16)``.
    refine_radius_px : int
        Half-width of the centroid window.

    Returns
    -------
    (float, float)
        ``x`` (column) and ``y`` (row) of the sideband.
    """
    data = np.asarray(image)
    if data.ndim != 2 or min(data.shape) < 4:
        raise DataError(f"sideband search needs a 2-D image of at least 4 x 4 px, got {data.shape}")
    if not np.all(np.isfinite(data)):
        raise DataError("sideband search: the image holds NaN or infinite pixels")
    rows, cols = data.shape
    values = data.astype(np.complex128 if np.iscomplexobj(data) else np.float64)
    values = values - values.mean()
    window = np.outer(np.hanning(rows), np.hanning(cols))
    amplitude = np.abs(np.fft.fftshift(np.fft.fft2(values * window)))

    cy, cx = rows // 2, cols // 2
    ky = (np.arange(rows) - cy) / rows
    kx = (np.arange(cols) - cx) / cols
    # radius in units of the smaller dimension's Fourier pixels
    radius = np.hypot(ky[:, None], kx[None, :]) * min(rows, cols)
    if exclude_radius_px is None:
        exclude_radius_px = max(4.0, min(rows, cols) / 16.0)
    search = amplitude.copy()
    search[radius <= exclude_radius_px] = 0.0
    search[cy:, :] = 0.0  # upper sideband only: y < H // 2
    if not np.any(search > 0):
        raise DataError("sideband search: no Fourier component outside the centre band")
    peak_y, peak_x = np.unravel_index(int(np.argmax(search)), search.shape)

    r = int(refine_radius_px)
    y0, y1 = max(peak_y - r, 0), min(peak_y + r + 1, rows)
    x0, x1 = max(peak_x - r, 0), min(peak_x + r + 1, cols)
    patch = amplitude[y0:y1, x0:x1]
    patch = patch - patch.min()
    total = patch.sum()
    if total <= 0:
        return float(peak_x), float(peak_y)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return float((xx * patch).sum() / total), float((yy * patch).sum() / total)
