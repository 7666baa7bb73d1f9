"""Test helper: smooth, band-limited complex waves."""

import numpy as np


def smooth_wave(n: int, seed: int = 0, band: float = 0.06, phase_rad: float = 1.5) -> np.ndarray:
    """A smooth complex wave, band-limited to ``band`` cycles/px, with a phase of
    up to ``phase_rad`` and an amplitude of 1 +- 0.2."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n)
    inside = (k[:, None] ** 2 + k[None, :] ** 2) < band**2
    spectrum = np.zeros((n, n), complex)
    spectrum[inside] = rng.normal(size=inside.sum()) + 1j * rng.normal(size=inside.sum())
    field = np.fft.ifft2(spectrum)
    phase = phase_rad * field.real / np.abs(field.real).max()
    amplitude = 1.0 + 0.2 * field.imag / np.abs(field.imag).max()
    return amplitude * np.exp(1j * phase)
