"""Alignment kernels (pure numpy; no Dask, no files).

* :func:`phase_correlate`: raw alignment of two holograms to the integer pixel
  (phase correlation, hard low-pass at the alignment cut-off).
* :func:`fit_to_average`: fine alignment of one reconstructed wave to the current
  average: a complex factor, and as switched on a shift, a tilt and a defocus,
  fitted by damped Gauss-Newton with analytic derivatives (phase ramps and a
  quadratic phase in Fourier space) on the inner region of the image.

A fit *state* is a float64 vector ``[Re f, Im f, shift_y, shift_x, tilt_y,
tilt_x, defocus]`` (shift in nm, tilt in 1/nm, defocus in nm). The model of a
wave ``psi`` given the average spectrum ``A`` is::

    psi ~ f * ifft(A * exp(i (2 pi s.q - pi lambda d q^2))) * exp(2 pi i t.r)

and its contribution to the next average is the inverse operation applied to
``psi`` (:func:`aligned_spectrum`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from holodask import fft
from holodask.optics import _transform_buffers, wavelength_nm

__all__ = [
    "STATE_SIZE",
    "initial_state",
    "phase_correlate",
    "CorrelationWindow",
    "correlation_window",
    "window_spectrum",
    "correlate_spectra",
    "correlation_fft_plans",
    "AlignmentGrid",
    "alignment_grid",
    "fit_to_average",
    "model_error",
    "model_wave",
    "aligned_spectrum",
    "wave_spectrum",
]

STATE_SIZE = 7
_FACTOR = slice(0, 2)
_SHIFT = slice(2, 4)
_TILT = slice(4, 6)
_DEFOCUS = 6


def initial_state(factor: complex = 1.0, defocus_nm: float = 0.0) -> np.ndarray:
    """A fit state with the given factor and defocus, no shift and no tilt."""
    state = np.zeros(STATE_SIZE)
    state[0], state[1] = complex(factor).real, complex(factor).imag
    state[_DEFOCUS] = defocus_nm
    return state


# --------------------------------------------------------------------------- raw alignment


#: the coarse correlation grid has at least this many points per band width (2 r + 1)
_COARSE_OVERSAMPLING = 1.25
#: coarse pixels around a candidate whose integer positions are evaluated exactly, and
#: around which no further candidate is taken
_SEARCH_RADIUS = 2
_BLANK_RADIUS = 1
#: a coarse point is a candidate while it reaches this fraction of the best exact value
#: found: the best corner of the coarse cell of a maximum keeps more than 0.6 of its height
#: (pure noise, 3000 cases); more than _MAX_CANDIDATES: the full-size map
_PEAK_FRACTION = 0.4
_MAX_CANDIDATES = 8


@dataclass(frozen=True)
class CorrelationWindow:
    """The low frequencies a phase correlation keeps (``|q| < cut-off``).

    Spectra are computed and correlated only on the rows ``ky = -ry..ry`` and
    columns ``kx = 0..rx`` of the half spectrum that can pass the low-pass; the
    result equals the correlation of full spectra with the hard mask.

    Where the band is small, the correlation's maximum is searched on a grid of
    ``coarse_shape`` and evaluated exactly on blocks of integer positions
    around the best points, from the tables ``search_rows[d, ky] = exp(2 pi i
    ky d / H)`` and ``search_columns[kx, d] = w exp(2 pi i kx d / W)`` (``w =
    1`` at ``kx = 0``, else 2: the half spectrum); else these are None.
    """

    shape: tuple[int, int]
    rows: np.ndarray  # unshifted row indices of ky = -ry..ry
    n_columns: int  # kx = 0..rx
    mask: np.ndarray  # (2 ry + 1, rx + 1) float32
    coarse_shape: tuple[int, int] | None = None
    search_rows: np.ndarray | None = None  # (block height, 2 ry + 1) complex64
    search_columns: np.ndarray | None = None  # (rx + 1, block width) complex64


def _block_size(n: int, coarse_n: int) -> int:
    """Integer positions that can lie within +-_SEARCH_RADIUS coarse pixels of a coarse point."""
    return 2 * _SEARCH_RADIUS * n // coarse_n + 1


def _phases(frequencies: np.ndarray, positions, n: int) -> np.ndarray:
    """``exp(2 pi i k p / n)`` for integer frequencies ``k`` and positions ``p``
    (broadcast), complex64."""
    return np.exp((2j * np.pi / n) * (frequencies * positions % n)).astype(np.complex64)


def correlation_window(shape, sampling_nm: float, cut_off_per_nm: float) -> CorrelationWindow:
    """The :class:`CorrelationWindow` of images of ``shape`` for a cut-off in 1/nm."""
    height, width = int(shape[0]), int(shape[1])
    reach_y = int(np.floor(cut_off_per_nm * sampling_nm * height))
    reach_x = int(np.floor(cut_off_per_nm * sampling_nm * width))
    reach_y = min(reach_y, (height - 1) // 2)
    reach_x = min(reach_x, width // 2)
    ky = np.arange(-reach_y, reach_y + 1)
    kx = np.arange(0, reach_x + 1)
    qy = (ky / (height * sampling_nm)).reshape(-1, 1)
    qx = (kx / (width * sampling_nm)).reshape(1, -1)
    mask = ((qx**2 + qy**2) < cut_off_per_nm**2).astype(np.float32)
    # frequencies -r..r in each direction: a grid of >= 2 r + 1 points samples the
    # correlation exactly
    coarse_y, coarse_x = (max(fft.next_fast_len(int(np.ceil(_COARSE_OVERSAMPLING * (2 * reach + 1)))), 8)
                          for reach in (reach_y, reach_x))
    # the full-size map where the coarse grid saves little, and where a reach of 0 makes
    # the map constant along one direction (a tie that rounding breaks there)
    if 2 * coarse_y > height or 2 * coarse_x > width or min(reach_y, reach_x) == 0:
        return CorrelationWindow((height, width), ky % height, reach_x + 1, mask)
    offsets_y = np.arange(_block_size(height, coarse_y)).reshape(-1, 1)
    offsets_x = np.arange(_block_size(width, coarse_x)).reshape(1, -1)
    search_rows = _phases(ky.reshape(1, -1), offsets_y, height)
    search_columns = _phases(kx.reshape(-1, 1), offsets_x, width)
    search_columns[1:] *= 2  # kx stands for +-kx (no Nyquist column: rx < width / 4 here)
    return CorrelationWindow((height, width), ky % height, reach_x + 1, mask, (coarse_y, coarse_x),
                             search_rows, search_columns)


def window_spectrum(image: np.ndarray, window: CorrelationWindow) -> np.ndarray:
    """The low-frequency part of an image's spectrum that :func:`correlate_spectra` uses."""
    height = window.shape[0]
    rows_in, run_rows = _transform_buffers("rfft", np.shape(image), axis=1)
    rows_in[...] = image  # cast to float32 on the way in
    along_x = run_rows()
    # the kept columns transformed along y as contiguous rows (transposed)
    columns_in, run_columns = _transform_buffers("fft", (window.n_columns, height), axis=1)
    columns_in[...] = along_x[:, : window.n_columns].T
    return np.ascontiguousarray(run_columns()[:, window.rows].T)


def _normalised_cross(previous: np.ndarray, current: np.ndarray, window: CorrelationWindow) -> np.ndarray:
    """The phase-correlation spectrum of two window spectra, low-pass masked."""
    centre = len(window.rows) // 2  # ky = 0
    scale = 0.5 * abs(previous[centre, 0]) + 0.5 * abs(current[centre, 0])
    cross = previous * np.conj(current)
    # numpy divides a complex by a real d as a product with 1 / d: the same numbers,
    # without the slow complex division; the mask (0 or 1) goes into the same factor
    factor = np.abs(cross)
    factor += 1e-4 * scale
    np.reciprocal(factor, out=factor)
    factor *= window.mask
    cross *= factor
    return cross


def _full_map_peak(cross: np.ndarray, window: CorrelationWindow) -> tuple[int, int]:
    """``(y, x)`` of the maximum of the full-size correlation map of ``cross``."""
    height, width = window.shape
    # unnormalised inverse transforms (the scale does not move the peak): along y as
    # contiguous rows (transposed), then the half spectra along x
    columns, run_columns = _transform_buffers("ifft", (window.n_columns, height), axis=1)
    columns[...] = 0
    columns[:, window.rows] = cross.T
    columns = run_columns()
    half, run_half = _transform_buffers("irfft", (height, width // 2 + 1), axis=1, n=width)
    half[:, window.n_columns:] = 0
    half[:, : window.n_columns] = columns.T
    ccf = run_half()
    peak_y, peak_x = np.unravel_index(int(np.argmax(ccf)), ccf.shape)
    return int(peak_y), int(peak_x)


def _searched_peak(cross: np.ndarray, window: CorrelationWindow) -> tuple[int, int] | None:
    """``(y, x)`` of the maximum of the full-size correlation map of ``cross``, searched
    on the coarse grid (None: not found there).

    Candidates are the best coarse points, in decreasing order, each with its
    neighbours left out of the next ones, while they reach ``_PEAK_FRACTION``
    of the best value found. Around each, the full map's values on a block of
    integer positions are ``Re sum_ky,kx w C exp(2 pi i (ky y / H + kx x / W))``
    (:class:`CorrelationWindow`). Ties go to the first position in row-major
    order, as with ``argmax`` of the full map.
    """
    height, width = window.shape
    coarse_y, coarse_x = window.coarse_shape
    reach_y = len(window.rows) // 2
    spectrum, run = _transform_buffers("irfft2", (coarse_y, coarse_x // 2 + 1), n=(coarse_y, coarse_x))
    spectrum[...] = 0
    spectrum[: reach_y + 1, : window.n_columns] = cross[reach_y:]
    spectrum[coarse_y - reach_y:, : window.n_columns] = cross[:reach_y]
    coarse = run()  # the transform's own output buffer: candidates are blanked in it
    ky = np.arange(-reach_y, reach_y + 1)
    kx = np.arange(window.n_columns).reshape(-1, 1)
    best_value, best_index = -np.inf, None
    for _ in range(_MAX_CANDIDATES):
        flat = int(np.argmax(coarse))
        value = float(coarse.flat[flat])
        if value == -np.inf and best_index is not None:  # all left out
            return divmod(best_index, width)
        if not np.isfinite(value):
            return None
        if best_index is not None and value < _PEAK_FRACTION * best_value:
            return divmod(best_index, width)
        j, i = divmod(flat, coarse_x)
        # the first integer position of the block (ceil of (j - radius) * height / coarse_y)
        first_y = -((_SEARCH_RADIUS - j) * height // coarse_y)
        first_x = -((_SEARCH_RADIUS - i) * width // coarse_x)
        along_y = window.search_rows * _phases(ky, first_y, height)
        along_x = window.search_columns * _phases(kx, first_x, width)
        values = np.dot(np.dot(along_y, cross), along_x).real  # np.dot releases the GIL, matmul does not
        value = float(values.max())
        if not np.isfinite(value):
            return None
        row, column = np.nonzero(values == value)
        index = int((((first_y + row) % height) * width + (first_x + column) % width).min())
        if value > best_value or (value == best_value and index < best_index):
            best_value, best_index = value, index
        if not best_value > 0:  # the fraction needs a positive maximum
            return None
        coarse[np.ix_(np.arange(j - _BLANK_RADIUS, j + _BLANK_RADIUS + 1) % coarse_y,
                      np.arange(i - _BLANK_RADIUS, i + _BLANK_RADIUS + 1) % coarse_x)] = -np.inf
    return None


def correlate_spectra(previous: np.ndarray, current: np.ndarray, window: CorrelationWindow) -> tuple[int, int]:
    """Integer shift ``(dx, dy)`` between two window spectra (phase correlation).

    The sign follows the reference's ``raw_shift``: a feature that moved by
    ``+d`` from ``previous`` to ``current`` gives ``-d``. The maximum is that of
    the full-size correlation map (:func:`_correlate_full`), searched on a
    coarse grid where the window allows.
    """
    cross = _normalised_cross(previous, current, window)
    peak = _searched_peak(cross, window) if window.coarse_shape is not None else None
    if peak is None:
        peak = _full_map_peak(cross, window)
    return _centred_shift(peak, window.shape)


def _correlate_full(previous: np.ndarray, current: np.ndarray, window: CorrelationWindow) -> tuple[int, int]:
    """:func:`correlate_spectra` from the full-size correlation map (the reference)."""
    return _centred_shift(_full_map_peak(_normalised_cross(previous, current, window), window), window.shape)


def _centred_shift(peak: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    """``(dx, dy)`` of a peak ``(y, x)`` of the centred (fftshift-ed) correlation."""
    (peak_y, peak_x), (height, width) = peak, shape
    return int((peak_x + width // 2) % width - width // 2), int((peak_y + height // 2) % height - height // 2)


def correlation_fft_plans(window: CorrelationWindow) -> list[tuple]:
    """The transforms :func:`window_spectrum` and :func:`correlate_spectra` run, as
    ``(kind, shape, out_shape, axis)`` for :func:`holodask.fft.prepare` (the
    full-size ones also with a coarse grid: it falls back on them)."""
    height, width = window.shape
    columns = (window.n_columns, height)
    plans = [("rfft", window.shape, None, 1), ("fft", columns, None, 1), ("ifft", columns, None, 1),
             ("irfft", (height, width // 2 + 1), width, 1)]
    if window.coarse_shape is not None:
        coarse_y, coarse_x = window.coarse_shape
        plans.append(("irfft2", (coarse_y, coarse_x // 2 + 1), (coarse_y, coarse_x), None))
    return plans


def phase_correlate(previous: np.ndarray, current: np.ndarray, cut_off_per_nm: float, sampling_nm: float = 1.0) -> tuple[int, int]:
    """Integer drift ``(dx, dy)`` of ``current`` relative to ``previous`` (raw_shift sign).

    Parameters
    ----------
    previous, current : real images of the same shape (the alignment ROI).
    cut_off_per_nm : hard low-pass cut-off in 1/nm.
    sampling_nm : pixel size in nm.
    """
    window = correlation_window(np.shape(previous), sampling_nm, cut_off_per_nm)
    return correlate_spectra(window_spectrum(previous, window), window_spectrum(current, window), window)


# --------------------------------------------------------------------------- fine alignment


@dataclass(frozen=True)
class AlignmentGrid:
    """Frequency and position grids of one wave shape (all float32, broadcastable)."""

    shape: tuple[int, int]
    sampling_nm: tuple[float, float]
    wavelength_nm: float
    qy: np.ndarray  # (ny, 1) 1/nm
    qx: np.ndarray  # (1, nx)
    q2: np.ndarray  # (ny, nx)
    y: np.ndarray  # (ny_inner, 1) nm, inner region
    x: np.ndarray  # (1, nx_inner)
    inner: tuple[slice, slice]

    @cached_property
    def tables(self) -> "_FitTables":
        """Arrays the fit uses on every call, made once per grid (and per process)."""
        return _FitTables(self)


class _FitTables:
    """Per-grid constants of :func:`fit_to_average` and the propagators."""

    def __init__(self, grid: AlignmentGrid):
        self.qy = grid.qy.astype(np.float64)  # (ny, 1)
        self.qx = grid.qx.astype(np.float64)  # (1, nx)
        self.qy2, self.qx2 = self.qy**2, self.qx**2
        # d(spectrum)/dp / spectrum = i * (real multiplier); the multipliers act on the
        # (ny, 2 nx) float32 view of a spectrum (re/im interleaved along x)
        self.multipliers = {
            2: (2.0 * np.pi * grid.qy).astype(np.float32),
            3: np.repeat((2.0 * np.pi * grid.qx).astype(np.float32), 2, axis=1),
        }
        self.defocus_multiplier = np.repeat((-np.pi * grid.wavelength_nm * grid.q2).astype(np.float32), 2, axis=1)
        self.coordinates = {4: np.complex64(2j * np.pi) * grid.y, 5: np.complex64(2j * np.pi) * grid.x}
        self.powers_y = np.stack([grid.qy[:, 0].astype(np.float64)**k for k in range(5)]).astype(np.float32)
        self.powers_x = [grid.qx[0, :].astype(np.float64)**k for k in range(5)]
        self.q_max = (float(np.abs(grid.qy).max()), float(np.abs(grid.qx).max()))
        self.r_max = (float(np.abs(grid.y).max()), float(np.abs(grid.x).max()))


def alignment_grid(shape, sampling_yx, voltage_kV: float | None, margin: float = 1.0 / 6.0) -> AlignmentGrid:
    """Grids for waves of ``shape`` with pixel size ``sampling_yx`` (nm).

    ``margin`` is the fraction of the size left out on each side of the residual.
    """
    ny, nx = int(shape[0]), int(shape[1])
    sy, sx = (float(v) for v in np.broadcast_to(np.asarray(sampling_yx, dtype=float), (2,)))
    qy = np.fft.fftfreq(ny, sy).astype(np.float32).reshape(-1, 1)
    qx = np.fft.fftfreq(nx, sx).astype(np.float32).reshape(1, -1)
    my, mx = int(ny * margin), int(nx * margin)
    inner = (slice(my, ny - my), slice(mx, nx - mx))
    y = (np.arange(ny, dtype=np.float32) * sy)[inner[0]].reshape(-1, 1)
    x = (np.arange(nx, dtype=np.float32) * sx)[inner[1]].reshape(1, -1)
    wavelength = wavelength_nm(voltage_kV) if voltage_kV else 0.0
    return AlignmentGrid((ny, nx), (sy, sx), wavelength, qy, qx, qx**2 + qy**2, y, x, inner)


def _propagator_factors(state: np.ndarray, grid: AlignmentGrid, sign: float) -> tuple[np.ndarray, np.ndarray]:
    """The y and x factors (complex64, (ny, 1) and (1, nx)) of :func:`_propagator`."""
    tables = grid.tables
    defocus_term = np.pi * grid.wavelength_nm * state[_DEFOCUS]
    phase_y = (2.0 * np.pi * state[2]) * tables.qy
    phase_x = (2.0 * np.pi * state[3]) * tables.qx
    if defocus_term != 0.0:
        phase_y -= defocus_term * tables.qy2
        phase_x -= defocus_term * tables.qx2
    phase_y *= sign
    phase_x *= sign
    return _unit_phasor(phase_y), _unit_phasor(phase_x)


def _unit_phasor(phase: np.ndarray) -> np.ndarray:
    """``exp(i phase)`` as complex64 (phase in float64)."""
    out = np.empty(phase.shape, dtype=np.complex64)
    np.cos(phase, out=out.real)
    np.sin(phase, out=out.imag)
    return out


def _propagator(state: np.ndarray, grid: AlignmentGrid, sign: float) -> np.ndarray:
    """``exp(sign * i (2 pi s.q - pi lambda d q^2))`` as complex64 (separable in y and x)."""
    along_y, along_x = _propagator_factors(state, grid, sign)
    return along_y * along_x


def _moved_spectrum(spectrum: np.ndarray, state: np.ndarray, grid: AlignmentGrid) -> np.ndarray:
    """``spectrum * _propagator(state, grid, +1)`` without the full-size propagator."""
    along_y, along_x = _propagator_factors(state, grid, +1.0)
    moved = np.multiply(spectrum, along_y, dtype=np.complex64)
    moved *= along_x
    return moved


def _tilt_ramp(state: np.ndarray, grid: AlignmentGrid, sign: float, full: bool = False) -> np.ndarray | None:
    if state[4] == 0.0 and state[5] == 0.0:
        return None
    if full:
        y = np.arange(grid.shape[0], dtype=np.float64).reshape(-1, 1) * grid.sampling_nm[0]
        x = np.arange(grid.shape[1], dtype=np.float64).reshape(1, -1) * grid.sampling_nm[1]
    else:
        y, x = grid.y.astype(np.float64), grid.x.astype(np.float64)
    ramp_y = np.exp((2j * np.pi * sign * state[4]) * y).astype(np.complex64)
    ramp_x = np.exp((2j * np.pi * sign * state[5]) * x).astype(np.complex64)
    return ramp_y * ramp_x


def _factor(state: np.ndarray) -> complex:
    return complex(state[0], state[1])


def model_wave(average_spectrum: np.ndarray, state: np.ndarray, grid: AlignmentGrid) -> np.ndarray:
    """The model of a wave (inner region) for a state: the average moved onto it."""
    spectrum = _moved_spectrum(average_spectrum, state, grid)
    model = fft.ifft2(spectrum)[grid.inner] * np.complex64(_factor(state))
    ramp = _tilt_ramp(state, grid, +1.0)
    return model if ramp is None else model * ramp


def model_error(wave: np.ndarray, average_spectrum: np.ndarray, state: np.ndarray, grid: AlignmentGrid) -> float:
    """Squared residual between a wave and its model over the inner region."""
    residual = model_wave(average_spectrum, state, grid) - wave[grid.inner]
    return float(np.vdot(residual, residual).real)


def wave_spectrum(wave: np.ndarray) -> np.ndarray:
    """The spectrum of a wave (complex64) that :func:`aligned_spectrum` can reuse."""
    return fft.fft2(wave)


def aligned_spectrum(wave: np.ndarray, state: np.ndarray, grid: AlignmentGrid, spectrum=None) -> np.ndarray:
    """Spectrum of a wave moved onto the average (inverse of the model), complex64.

    ``spectrum``: the wave's own spectrum (:func:`wave_spectrum`), if already
    known; used when the state has no tilt (the same numbers, one FFT less).
    """
    ramp = _tilt_ramp(state, grid, -1.0, full=True)
    along_y, along_x = _propagator_factors(state, grid, -1.0)
    along_y *= np.complex64(1.0 / _factor(state))
    if ramp is None and spectrum is not None:
        moved = np.multiply(spectrum, along_y)
    else:
        source, run = _transform_buffers("fft2", grid.shape)
        if ramp is None:
            source[...] = wave
        else:
            np.multiply(wave, ramp, out=source)
        moved = np.multiply(run(), along_y)
    moved *= along_x
    return moved


_TWO_PI = 2.0 * np.pi


def _fourier_moments(weights: np.ndarray, grid: AlignmentGrid, fourier: list[int]) -> dict:
    """``sum_q W(q) k_a(q) k_b(q)`` for the Fourier-space parameters ``a, b``.

    ``k`` are the multipliers d(spectrum)/dp / spectrum: ``2 pi i q_y``,
    ``2 pi i q_x`` (shift) and ``-i pi lambda q^2`` (defocus). All products are
    polynomials in ``q_y`` and ``q_x``, so the sums are moments
    ``sum W q_y^k q_x^l``: one small real matrix product gives
    ``sum_y q_y^k W`` for every ``k`` (a complex matrix product here would be
    multi-threaded by OpenBLAS, which is slow inside Dask's threads), then
    1-D dot products.
    """
    orders = 5 if 6 in fourier else 3
    tables = grid.tables
    weights = np.ascontiguousarray(weights, dtype=np.complex64)
    by_column = np.dot(tables.powers_y[:orders], weights.view(np.float32)).view(np.complex64).astype(np.complex128)
    powers_x = tables.powers_x

    def moment(k, l):
        return np.dot(by_column[k], powers_x[l])

    c = -4.0 * np.pi**2  # (2 pi i)^2
    moments = {}
    if 2 in fourier:
        moments[(2, 2)] = c * moment(2, 0)
        moments[(3, 3)] = c * moment(0, 2)
        moments[(2, 3)] = c * moment(1, 1)
    if 6 in fourier:
        lam = grid.wavelength_nm
        moments[(6, 6)] = -(np.pi * lam) ** 2 * (moment(4, 0) + moment(0, 4) + 2.0 * moment(2, 2))
        if 2 in fourier:  # (2 pi i)(-i pi lambda) = 2 pi^2 lambda
            moments[(2, 6)] = 2.0 * np.pi**2 * lam * (moment(3, 0) + moment(1, 2))
            moments[(3, 6)] = 2.0 * np.pi**2 * lam * (moment(0, 3) + moment(2, 1))
    return moments


def _zero_outside(array: np.ndarray, inner: tuple[slice, slice]) -> None:
    """Set a 2-D array to zero outside its ``inner`` region (which is left as it is)."""
    rows, columns = inner
    array[: rows.start] = 0
    array[rows.stop:] = 0
    array[rows, : columns.start] = 0
    array[rows, columns.stop:] = 0


def _step_phase_rad(step: np.ndarray, free: list[int], grid: AlignmentGrid, state: np.ndarray) -> float:
    """Largest change (rad) a parameter step makes to the model's phase over the spectrum or the
    inner region (for the factor: its relative change)."""
    q_max, r_max = grid.tables.q_max, grid.tables.r_max
    factor = abs(complex(state[0], state[1]))
    largest = abs(complex(step[0], step[1])) / factor if factor > 0 else np.inf  # free[:2] = [0, 1]
    for value, index in zip(step, free):
        if index in (2, 3):
            largest = max(largest, _TWO_PI * abs(value) * q_max[index - 2])
        elif index in (4, 5):
            largest = max(largest, _TWO_PI * abs(value) * r_max[index - 4])
        elif index == 6:
            largest = max(largest, np.pi * grid.wavelength_nm * abs(value) * (q_max[0] ** 2 + q_max[1] ** 2))
    return largest


def fit_to_average(
    wave: np.ndarray,
    average_spectrum: np.ndarray,
    state: np.ndarray,
    grid: AlignmentGrid,
    *,
    fit_shift: bool = True,
    fit_tilt: bool = False,
    fit_defocus: bool = False,
    max_iterations: int = 30,
    tolerance: float = 1e-6,
    step_tolerance_px: float = 0.005,
    return_start_error: bool = False,
):
    """Fit the factor (always) and shift / tilt / defocus (as switched on) of one wave.

    Minimises ``sum |model - wave|^2`` over the inner region by damped Newton
    steps with the exact Hessian, starting from the given state with the
    factor replaced by its least-squares value there (it enters linearly). The exact Hessian matters: the average (or
    first frame) the wave is fitted to is itself noisy, and the Gauss-Newton
    approximation then overestimates the curvature and creeps towards the
    minimum. A step costs one inverse FFT per Fourier-space parameter (shift,
    defocus: the derivatives, whose inner products give the Gauss-Newton part
    and the gradient), one FFT of the residual (the second-derivative terms of
    the Fourier-space parameters, by Parseval's theorem) and one inverse FFT to
    evaluate the new state.

    Newton steps with the exact Hessian converge quadratically: once the
    undamped Newton step changes the model by less than ``pi *
    step_tolerance_px`` rad (the phase of a shift of ``step_tolerance_px``
    pixels at the Nyquist frequency, or the same phase from the tilt or the
    defocus, or the same relative change of the factor), it is taken without
    evaluating it and the fit ends (what is left is of the order of the square
    of that step). Otherwise steps are checked and damped (Levenberg-Marquardt) until
    the squared residual decreases, and the fit ends when it improves by less
    than ``tolerance`` (relative).

    Returns the new state vector (and, with ``return_start_error``, the squared
    residual of the given state, :func:`model_error`).
    """
    state = np.asarray(state, dtype=float).copy()
    fourier = ([2, 3] if fit_shift else []) + ([6] if fit_defocus else [])
    tilts = [4, 5] if fit_tilt else []
    work = _FitWorkspace(wave, average_spectrum, state, grid, fourier, tilts)
    current = work.evaluate(state)
    start_error = current.cost
    current = work.start_with_best_factor(state, current)
    damping = 1e-4
    small_rad = np.pi * step_tolerance_px
    for _ in range(max_iterations):
        gradient, gauss_newton, hessian = _gradient_and_hessian(work, state, current)
        newton = _undamped_newton_step(hessian, gradient)
        if newton is not None and _step_phase_rad(newton, work.free, grid, state) < small_rad:
            # converged to second order: take the step unchecked and stop
            state[work.free] += newton
            break
        trial_state, trial, damping = _damped_trial(work, state, current, gradient, gauss_newton, hessian,
                                                    damping, tolerance)
        if trial is None:
            break
        improvement = current.cost - trial.cost
        state, current = trial_state, trial
        damping = damping / 10.0
        if improvement <= tolerance * max(current.cost, 1e-30) or improvement <= 1e-30:
            break
    return (state, start_error) if return_start_error else state


class _Evaluation(NamedTuple):
    """The model of one fit state over the inner region."""

    spectrum: np.ndarray  # the average spectrum moved by the state (full size)
    base: np.ndarray  # the model without the factor (inner region, tilt ramp applied)
    ramp: np.ndarray | None  # the tilt ramp over the inner region (None: no tilt)
    residual: np.ndarray  # model - wave (inner region)
    cost: float  # squared residual


class _FitWorkspace:
    """Constants, buffers and the model evaluation of one :func:`fit_to_average` call.

    ``fourier`` are the fitted Fourier-space parameters (state indices 2, 3:
    shift; 6: defocus), ``tilts`` the fitted tilts (4, 5); the factor (0, 1) is
    always fitted. ``jacobian[row[p]]`` is d model / d p over the inner region,
    written in place at every step.
    """

    __slots__ = ("grid", "average_spectrum", "inner", "target", "n_pixels", "fourier", "tilts", "moves",
                 "multipliers", "coordinates", "free", "row", "jacobian", "jacobian_real", "any_tilt",
                 "inverse_in", "inverse", "inverse_in_real", "to_inverse")

    def __init__(self, wave: np.ndarray, average_spectrum: np.ndarray, state: np.ndarray, grid: AlignmentGrid,
                 fourier: list[int], tilts: list[int]):
        self.grid = grid
        self.average_spectrum = average_spectrum
        self.inner = inner = grid.inner
        self.target = target = np.ascontiguousarray(np.asarray(wave)[inner], dtype=np.complex64)
        self.n_pixels = grid.shape[0] * grid.shape[1]
        self.fourier, self.tilts = fourier, tilts
        self.moves = fourier + tilts  # the fitted parameters besides the factor
        tables = grid.tables
        self.multipliers = {**tables.multipliers, 6: tables.defocus_multiplier}
        self.coordinates = tables.coordinates
        self.free = sorted([0, 1] + fourier + tilts)
        self.row = {index: k for k, index in enumerate(self.free)}
        n_free = len(self.free)
        self.jacobian = np.empty((n_free,) + target.shape, dtype=np.complex64)
        self.jacobian_real = self.jacobian.reshape(n_free, -1).view(np.float32)
        self.any_tilt = bool(tilts) or state[4] != 0.0 or state[5] != 0.0
        # the inverse FFTs run in their own buffers; only the inner region is read back
        self.inverse_in, self.inverse = _transform_buffers("ifft2", grid.shape)
        self.inverse_in_real = self.inverse_in.view(np.float32)
        self.to_inverse = np.float32(1.0 / self.n_pixels)

    def evaluate(self, state: np.ndarray) -> _Evaluation:
        """The model of ``state``: moved spectrum, base, tilt ramp, residual and cost."""
        spectrum = _moved_spectrum(self.average_spectrum, state, self.grid)
        ramp = _tilt_ramp(state, self.grid, +1.0) if self.any_tilt else None
        self.inverse_in[...] = spectrum
        base = np.multiply(self.inverse()[self.inner], self.to_inverse)  # contiguous: BLAS dot products would copy a view
        if ramp is not None:
            base *= ramp
        residual = base * np.complex64(_factor(state))
        residual -= self.target
        cost = float(np.vdot(residual, residual).real)
        return _Evaluation(spectrum, base, ramp, residual, cost)

    def start_with_best_factor(self, state: np.ndarray, current: _Evaluation) -> _Evaluation:
        """Set the factor of ``state`` (in place) to its least-squares value for the
        model ``current`` (the factor enters linearly); returns the new evaluation."""
        base = current.base
        power = float(np.vdot(base, base).real)
        if not power > 0:
            return current
        best = complex(np.vdot(base, self.target)) / power
        state[0], state[1] = best.real, best.imag
        residual = base * np.complex64(best)
        residual -= self.target
        return _Evaluation(current.spectrum, base, current.ramp, residual, float(np.vdot(residual, residual).real))

    def fill_jacobian(self, factor: np.complex64, current: _Evaluation) -> None:
        """First derivatives of the model: factor (base, i base), Fourier parameters, tilts."""
        jacobian, row, inner, base, ramp = self.jacobian, self.row, self.inner, current.base, current.ramp
        derivative_scale = np.complex64(1j * complex(factor) / self.n_pixels)
        jacobian[row[0]] = base
        np.multiply(base, np.complex64(1j), out=jacobian[row[1]])
        spectrum_real = current.spectrum.view(np.float32)
        for index in self.fourier:
            out = jacobian[row[index]]
            np.multiply(spectrum_real, self.multipliers[index], out=self.inverse_in_real)
            np.multiply(self.inverse()[inner], derivative_scale, out=out)
            if ramp is not None:
                out *= ramp
        for index in self.tilts:
            np.multiply(base, self.coordinates[index] * factor, out=jacobian[row[index]])


def _gradient_and_hessian(work: _FitWorkspace, state: np.ndarray, current: _Evaluation):
    """Gradient, Gauss-Newton matrix and exact Hessian of the squared residual / 2
    over the free parameters (all float64)."""
    factor = np.complex64(_factor(state))
    work.fill_jacobian(factor, current)
    jacobian_real, residual = work.jacobian_real, current.residual
    residual_real = residual.reshape(-1).view(np.float32)
    turned = residual * np.complex64(-1j)
    # z_a = <J_a, r> = Re + i Im, from the real views (one matrix-vector product each)
    z = np.dot(jacobian_real, residual_real).astype(np.float64) + 1j * np.dot(jacobian_real, turned.reshape(-1).view(np.float32)).astype(np.float64)
    gradient = z.real
    gauss_newton = np.dot(jacobian_real, jacobian_real.T).astype(np.float64)
    hessian = gauss_newton.copy()
    factor_c = complex(factor)
    if abs(factor_c) > 0:
        _add_factor_cross_terms(hessian, z, factor_c, work)
    if work.tilts:
        _add_tilt_second_derivatives(hessian, residual, work)
    if work.fourier:
        _add_fourier_second_derivatives(hessian, current, factor_c, work)
    return gradient, gauss_newton, hessian


def _add_factor_cross_terms(hessian: np.ndarray, z: np.ndarray, factor: complex, work: _FitWorkspace) -> None:
    """Second derivatives d2 model / d f d p = (d model / d p) / f (times 1 or i), from
    ``z_p = <J_p, r>``."""
    row = work.row
    for index in work.moves:
        term = np.conj(z[row[index]]) / factor  # <r, J_a / f>
        for f_index, unit in ((0, 1.0), (1, 1j)):
            value = (unit * term).real
            hessian[row[f_index], row[index]] += value
            hessian[row[index], row[f_index]] += value


def _add_tilt_second_derivatives(hessian: np.ndarray, residual: np.ndarray, work: _FitWorkspace) -> None:
    """Tilt second derivatives (real space): d2/dt dp = c_t dJ_p for p a tilt or Fourier parameter."""
    row, tilts, coordinates, jacobian = work.row, work.tilts, work.coordinates, work.jacobian
    for index_t in tilts:
        for index in work.moves:
            if index in tilts and index < index_t:
                continue
            value = float(np.vdot(residual, coordinates[index_t] * jacobian[row[index]]).real)
            hessian[row[index_t], row[index]] += value
            if index != index_t:
                hessian[row[index], row[index_t]] += value


def _add_fourier_second_derivatives(hessian: np.ndarray, current: _Evaluation, factor: complex,
                                    work: _FitWorkspace) -> None:
    """Second derivatives of the Fourier-space parameters, by Parseval's theorem.

    ``sum_inner conj(r) f T ifft(S k_a k_b) = f/N sum_q conj(R) S k_a k_b``, with
    ``R`` the spectrum of the residual (tilt ramp taken off) zero outside the
    inner region.
    """
    grid, inner, row = work.grid, work.inner, work.row
    padded, forward = _transform_buffers("fft2", grid.shape)
    _zero_outside(padded, inner)
    if current.ramp is None:
        padded[inner] = current.residual
    else:
        np.multiply(current.residual, np.conj(current.ramp), out=padded[inner])
    weights = forward()  # the transform's own buffer, used up here
    np.conjugate(weights, out=weights)
    weights *= current.spectrum
    scale = factor / work.n_pixels
    for (ia, ib), moment in _fourier_moments(weights, grid, work.fourier).items():
        value = (scale * moment).real
        hessian[row[ia], row[ib]] += value
        if ia != ib:
            hessian[row[ib], row[ia]] += value


def _undamped_newton_step(hessian: np.ndarray, gradient: np.ndarray) -> np.ndarray | None:
    """The Newton step ``-H^-1 g``; None where the Hessian is not positive definite."""
    try:
        np.linalg.cholesky(hessian)
        return np.linalg.solve(hessian, -gradient)
    except np.linalg.LinAlgError:
        return None


def _damped_trial(work: _FitWorkspace, state: np.ndarray, current: _Evaluation, gradient: np.ndarray,
                  gauss_newton: np.ndarray, hessian: np.ndarray, damping: float, tolerance: float):
    """A Levenberg-Marquardt step that lowers the squared residual (at most 8 dampings).

    Returns ``(trial state, its evaluation, damping)``; the state and the
    evaluation are None where no damping gives a decrease, or where the
    predicted decrease is below ``tolerance`` (relative).
    """
    diagonal = np.abs(np.diag(gauss_newton)).copy()
    diagonal[diagonal == 0] = 1.0
    for _attempt in range(8):
        matrix = hessian + damping * np.diag(diagonal)
        try:
            np.linalg.cholesky(matrix)
            step = np.linalg.solve(matrix, -gradient)
        except np.linalg.LinAlgError:
            damping = max(damping * 10.0, 1e-6)
            continue
        predicted = -2.0 * float(gradient @ step) - float(step @ hessian @ step)
        if predicted <= tolerance * current.cost:
            break
        trial_state = state.copy()
        trial_state[work.free] += step
        trial = work.evaluate(trial_state)
        if trial.cost <= current.cost:
            return trial_state, trial, damping
        damping = max(damping * 10.0, 1e-6)
    return None, None, damping
