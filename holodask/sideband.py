"""Locating the sideband of an off-axis hologram in its centred Fourier transform
(pure numpy: no Dask, no files)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from holodask.errors import DataError

__all__ = ["Sideband", "find_sideband", "LOW_CONFIDENCE"]

#: below this confidence there are no fringes to speak of (pure noise scores about 0)
LOW_CONFIDENCE = 0.5


@dataclass(frozen=True)
class Sideband:
    """The sideband found in a hologram by :func:`find_sideband`.

    Attributes
    ----------
    position : (x, y) in pixels of ``np.fft.fftshift(np.fft.fft2(image))``,
        the convention of the ``sideband_pos`` parameter (the upper sideband: y < H // 2,
        or on the row y = H // 2 right of the centre).
    shape : (H, W) of the image.
    confidence : 0 (pure noise: no peak above what noise gives) to 1 (a sharp peak
        far above the noise and its surroundings); below :data:`LOW_CONFIDENCE`
        the image shows no fringes worth reconstructing.
    peak_to_noise : sideband amplitude over the largest amplitude noise alone
        would give in the searched half of the spectrum.
    sampling_nm : pixel size used for ``cut_off``, or None.
    """

    position: tuple[float, float]
    shape: tuple[int, int]
    confidence: float
    peak_to_noise: float
    sampling_nm: float | None = None

    @property
    def conjugate(self) -> tuple[float, float]:
        """(x, y) of the lower sideband (the complex conjugate wave)."""
        rows, cols = self.shape
        return (2 * (cols // 2) - self.position[0], 2 * (rows // 2) - self.position[1])

    @property
    def carrier_px(self) -> tuple[float, float]:
        """(x, y) offset of the sideband from the centre band, in Fourier pixels."""
        rows, cols = self.shape
        return (self.position[0] - cols // 2, self.position[1] - rows // 2)

    @property
    def carrier_per_px(self) -> float:
        """Carrier spatial frequency in cycles per image pixel (the fringe spacing is its inverse)."""
        rows, cols = self.shape
        dx, dy = self.carrier_px
        return math.hypot(dx / cols, dy / rows)

    @property
    def fringe_spacing_px(self) -> float:
        return 1.0 / self.carrier_per_px

    @property
    def cut_off(self) -> float | None:
        """Suggested ``cut_off`` in 1/nm: a third of the carrier frequency (None without sampling)."""
        if self.sampling_nm is None:
            return None
        return self.carrier_per_px / 3.0 / self.sampling_nm

    @property
    def cut_off_px(self) -> float:
        """The suggested cut-off as a radius in Fourier pixels of the smaller image side."""
        return self.carrier_per_px / 3.0 * min(self.shape)

    @property
    def object_size(self) -> int:
        """Smallest even reconstruction size (px) that holds the suggested mask, with a margin
        of an eighth: a fast FFT length (powers of 2, 3, 5)."""
        rows, cols = self.shape
        radius = self.carrier_per_px / 3.0 * max(rows, cols)
        return _fast_even_size(int(math.ceil(2.25 * radius)))

    @property
    def low_confidence(self) -> bool:
        return self.confidence < LOW_CONFIDENCE

    def __iter__(self):
        """``x, y = find_sideband(image)`` unpacks the position."""
        return iter(self.position)

    def describe(self) -> str:
        """One line for ``holodask info --fft``."""
        x, y = self.position
        text = (f"[{x:.1f}, {y:.1f}]  (x, y in the centred FFT, upper); confidence {self.confidence:.2f}"
                f" (peak {self.peak_to_noise:.1f}x the noise maximum)")
        if self.cut_off is not None:
            text += f"; suggested cut_off {self.cut_off:.3g} 1/nm, object_size {self.object_size}"
        else:
            text += f"; fringe spacing {self.fringe_spacing_px:.2f} px"
        if self.low_confidence:
            text += "; LOW: no fringes found"
        return text


def _fast_even_size(n: int) -> int:
    size = max(8, n + (n % 2))
    while True:
        rest = size
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1 and size % 2 == 0:
            return size
        size += 2


def _apodised_amplitude(data: np.ndarray) -> np.ndarray:
    """|FFT| of the mean-free image under a Hann window, centred (fftshift)."""
    rows, cols = data.shape
    values = data.astype(np.complex128 if np.iscomplexobj(data) else np.float64)
    values = values - values.mean()
    window = np.outer(np.hanning(rows), np.hanning(cols))
    return np.abs(np.fft.fftshift(np.fft.fft2(values * window)))


def _refined_peak(amplitude: np.ndarray, peak_y: int, peak_x: int, radius: int) -> tuple[float, float]:
    """Amplitude-weighted centroid (x, y) of the neighbourhood of a peak."""
    rows, cols = amplitude.shape
    y0, y1 = max(peak_y - radius, 0), min(peak_y + radius + 1, rows)
    x0, x1 = max(peak_x - radius, 0), min(peak_x + radius + 1, cols)
    patch = amplitude[y0:y1, x0:x1]
    patch = patch - patch.min()
    total = patch.sum()
    if total <= 0:
        return float(peak_x), float(peak_y)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return float((xx * patch).sum() / total), float((yy * patch).sum() / total)


def _confidence(search: np.ndarray, peak: float, peak_y: int, peak_x: int, n_searched: int) -> tuple[float, float]:
    """(confidence, peak over the noise maximum) of a sideband peak.

    The noise level is the median amplitude of the searched half (robust to the
    sideband and the object's spectrum); Gaussian noise gives Rayleigh amplitudes,
    whose largest of ``n`` values is about ``median * sqrt(ln n / ln 2)``. A peak
    must also stand above its surroundings (the mean of a ring of 3 to 6 px around it).
    """
    values = search[search > 0]
    median = float(np.median(values)) if values.size else 0.0
    noise_max = median * math.sqrt(math.log(max(n_searched, 2)) / math.log(2.0))
    rows, cols = search.shape
    yy, xx = np.ogrid[:rows, :cols]
    ring = (np.hypot(yy - peak_y, xx - peak_x) >= 3) & (np.hypot(yy - peak_y, xx - peak_x) <= 6) & (search > 0)
    surroundings = float(np.mean(search[ring])) if np.any(ring) else 0.0
    background = max(noise_max, surroundings)
    if peak <= 0:
        return 0.0, 0.0
    peak_to_noise = peak / noise_max if noise_max > 0 else math.inf
    return float(np.clip(1.0 - background / peak, 0.0, 1.0)), float(peak_to_noise)


def find_sideband(
    image: np.ndarray,
    *,
    sampling: float | None = None,
    exclude_radius_px: float | None = None,
    refine_radius_px: int = 2,
) -> Sideband:
    """Find the (upper) sideband of a hologram and say how sure that is.

    The image is apodised with a Hann window (against the streaks of its
    borders), the centre band is masked by a disc around the origin, and the
    maximum amplitude in the upper half (rows ``y < H // 2``) is refined to
    sub-pixel precision by the amplitude-weighted centroid of its neighbourhood.

    Parameters
    ----------
    image : array_like, 2-D
        The hologram (real or complex), or a ``(y, x)`` DataArray.
    sampling : float, optional
        Pixel size in nm, for the suggested ``cut_off`` in 1/nm (taken from a
        DataArray's ``x`` coordinate or ``sampling_nm`` attribute when not given).
    exclude_radius_px : float, optional
        Radius of the masked centre disc, in Fourier pixels of the smaller
        side; default ``max(4, min(H, W) / 16)``.
    refine_radius_px : int
        Half-width of the centroid window.

    Returns
    -------
    Sideband
        ``position`` (x, y) as ``sideband_pos`` expects (it also unpacks as
        ``x, y``), ``confidence``, a suggested ``cut_off`` and ``object_size``.

    Raises
    ------
    DataError
        Not a 2-D image, non-finite pixels, or a constant image.
    """
    if sampling is None:
        sampling = _sampling_of(image)
    data = np.asarray(image)
    if data.ndim != 2 or min(data.shape) < 4:
        raise DataError(f"sideband search needs a 2-D image of at least 4 x 4 px, got {data.shape}")
    if not np.all(np.isfinite(data)):
        raise DataError("sideband search: the image holds NaN or infinite pixels")
    rows, cols = data.shape
    amplitude = _apodised_amplitude(data)

    cy, cx = rows // 2, cols // 2
    ky = (np.arange(rows) - cy) / rows
    kx = (np.arange(cols) - cx) / cols
    radius = np.hypot(ky[:, None], kx[None, :]) * min(rows, cols)
    if exclude_radius_px is None:
        exclude_radius_px = max(4.0, min(rows, cols) / 16.0)
    search = amplitude.copy()
    search[radius <= exclude_radius_px] = 0.0
    search[cy + 1:, :] = 0.0  # the upper sideband only: y < H // 2, or y = H // 2 and x > W // 2
    search[cy, :cx + 1] = 0.0
    if not np.any(search > 0):
        raise DataError("sideband search: no Fourier component outside the centre band (a constant image?)")
    # the strongest local maximum of the whole spectrum in the searched region: the
    # leakage of the centre band (a smooth image) rises towards the centre and has none
    from scipy.ndimage import maximum_filter

    local = (amplitude == maximum_filter(amplitude, size=5, mode="nearest")) & (search > 0)
    if not np.any(local):
        peak_y, peak_x = np.unravel_index(int(np.argmax(search)), search.shape)
        position = _refined_peak(amplitude, int(peak_y), int(peak_x), int(refine_radius_px))
        return Sideband(position, (rows, cols), 0.0, 0.0, float(sampling) if sampling is not None else None)
    peak_y, peak_x = np.unravel_index(int(np.argmax(np.where(local, search, 0.0))), search.shape)
    confidence, peak_to_noise = _confidence(search, float(search[peak_y, peak_x]), int(peak_y), int(peak_x),
                                            int(np.count_nonzero(search)))
    position = _refined_peak(amplitude, int(peak_y), int(peak_x), int(refine_radius_px))
    return Sideband(position, (rows, cols), confidence, peak_to_noise,
                    float(sampling) if sampling is not None else None)


def _sampling_of(image) -> float | None:
    """Pixel size (nm) of a DataArray image, from its ``x`` coordinate (units nm) or attributes."""
    attrs = getattr(image, "attrs", None)
    if attrs is None:
        return None
    coords = getattr(image, "coords", {})
    if "x" in coords and coords["x"].attrs.get("units") == "nm" and coords["x"].size > 1:
        return float(coords["x"].values[1] - coords["x"].values[0])
    value = attrs.get("sampling_nm")
    return float(value) if value is not None else None
