"""Alignment kernels and the Dask averaging layer."""

from __future__ import annotations

import importlib.util

import dask.array as da
import numpy as np
import pytest
from scipy.optimize import least_squares

from waves import smooth_wave
from holodask import align, fft
from holodask.align import (
    aligned_spectrum,
    alignment_grid,
    fit_to_average,
    initial_state,
    model_error,
    model_wave,
    phase_correlate,
    wave_spectrum,
)
from holodask.stages.rounds import average_series

SAMPLING = 0.5


def _smooth_wave(n: int, seed: int = 0, band: float = 0.1) -> np.ndarray:
    return smooth_wave(n, seed, band, phase_rad=2.0)


def _transformed(wave: np.ndarray, state: np.ndarray, grid) -> np.ndarray:
    """The model (whole image) of a wave under a state, computed directly in numpy."""
    qy = np.fft.fftfreq(wave.shape[0], SAMPLING)[:, None]
    qx = np.fft.fftfreq(wave.shape[1], SAMPLING)[None, :]
    phase = 2 * np.pi * (state[2] * qy + state[3] * qx) - np.pi * grid.wavelength_nm * state[6] * (qx**2 + qy**2)
    moved = np.fft.ifft2(np.fft.fft2(wave) * np.exp(1j * phase))
    y = np.arange(wave.shape[0])[:, None] * SAMPLING
    x = np.arange(wave.shape[1])[None, :] * SAMPLING
    return complex(state[0], state[1]) * moved * np.exp(2j * np.pi * (state[4] * y + state[5] * x))


def test_phase_correlate_finds_integer_drift():
    rng = np.random.default_rng(2)
    image = np.abs(_smooth_wave(96, band=0.15)) ** 2 * 100 + rng.normal(size=(96, 96))
    moved = np.roll(image, (5, -7), axis=(0, 1))  # features move by +5 px in y, -7 px in x
    # the reference's raw_shift sign: a feature moving by +d gives -d
    assert phase_correlate(image, moved, cut_off_per_nm=0.5, sampling_nm=SAMPLING) == (7, -5)
    assert phase_correlate(image, image, cut_off_per_nm=0.5, sampling_nm=SAMPLING) == (0, 0)


@pytest.mark.parametrize("shape, drift", [((97, 130), (-12, 21)), ((128, 96), (30, -40)), ((75, 75), (0, 1))])
def test_phase_correlate_on_any_shape(shape, drift):
    rng = np.random.default_rng(3)
    size = max(shape)
    image = (np.abs(_smooth_wave(size, band=0.15)) ** 2 * 100)[: shape[0], : shape[1]]
    image = image + rng.normal(size=shape)
    moved = np.roll(image, drift, axis=(0, 1))
    assert phase_correlate(image, moved, cut_off_per_nm=0.5, sampling_nm=SAMPLING) == (-drift[1], -drift[0])


def _random_field(shape, rng, band: float = 0.08) -> np.ndarray:
    """A smooth random image: white noise low-passed to about ``band`` cycles/px, unit variance."""
    spectrum = np.fft.rfft2(rng.normal(size=shape))
    qy, qx = np.fft.fftfreq(shape[0])[:, None], np.fft.rfftfreq(shape[1])[None, :]
    spectrum *= np.exp(-(qy**2 + qx**2) / (2 * band**2))
    field = np.fft.irfft2(spectrum, s=shape)
    return field / field.std()


def _both_peaks(first, second, window):
    """:func:`correlate_spectra` and the full-size map's :func:`_correlate_full` of two images."""
    spectra = align.window_spectrum(first, window), align.window_spectrum(second, window)
    return align.correlate_spectra(*spectra, window), align._correlate_full(*spectra, window)


@pytest.mark.parametrize("shape", [(972, 972), (511, 640), (300, 301), (256, 199)])
@pytest.mark.parametrize("cut_off_per_nm", [0.05, 0.12, 0.186, 0.3])
def test_correlate_spectra_equals_the_full_map(shape, cut_off_per_nm):
    """The coarse search returns the full-size map's maximum: random drifts (cropped and
    periodic, up to half the size), clear to buried peaks, and unrelated images."""
    rng = np.random.default_rng([*shape, int(cut_off_per_nm * 1000)])
    window = align.correlation_window(shape, SAMPLING, cut_off_per_nm)
    assert window.coarse_shape is not None
    height, width = shape
    margin = 60
    field = _random_field((height + 2 * margin, width + 2 * margin), rng)
    for noise in (0.3, 3.0, 8.0, 15.0):
        for _ in range(3):
            dy, dx = (int(v) for v in rng.integers(-margin, margin + 1, size=2))
            first = field[margin:margin + height, margin:margin + width] + noise * rng.normal(size=shape)
            second = field[margin - dy:margin - dy + height, margin - dx:margin - dx + width]
            second = second + noise * rng.normal(size=shape)
            new, full = _both_peaks(first, second, window)
            assert new == full, (noise, dy, dx)
    image = field[:height, :width]
    for drift in [(height // 2 - 1, -(width // 2) + 1), (-(height // 2), width // 2 - 1)] + [
            tuple(int(v) for v in rng.integers(-(height // 2), height // 2, size=2)) for _ in range(2)]:
        moved = np.roll(image, drift, axis=(0, 1)) + 5.0 * rng.normal(size=shape)
        new, full = _both_peaks(image, moved, window)
        assert new == full, drift
    for _ in range(3):  # no common signal: the maximum of noise
        new, full = _both_peaks(rng.normal(size=shape), rng.normal(size=shape), window)
        assert new == full


def test_correlate_spectra_searches_without_the_full_map(monkeypatch):
    """Clear and weak peaks are found on the coarse grid, without the full-size map."""
    rng = np.random.default_rng(4)
    shape = (972, 972)
    window = align.correlation_window(shape, SAMPLING, 0.186339)
    assert window.coarse_shape is not None and 2 * window.coarse_shape[0] <= shape[0] // 2
    field = _random_field((1072, 1072), rng)
    pairs = []
    for noise in (0.1, 5.0, 10.0):
        first = field[50:1022, 50:1022] + noise * rng.normal(size=shape)
        second = field[43:1015, 61:1033] + noise * rng.normal(size=shape)
        pairs.append((align.window_spectrum(first, window), align.window_spectrum(second, window)))
    expected = [align._correlate_full(*pair, window) for pair in pairs]

    def no_full_map(*args):
        raise AssertionError("the full-size map was computed")

    monkeypatch.setattr(align, "_full_map_peak", no_full_map)
    assert [align.correlate_spectra(*pair, window) for pair in pairs] == expected
    assert expected[0] == (11, -7)  # features moved by +7 px in y, -11 px in x


@pytest.mark.parametrize("shape, cut_off_per_nm", [((120, 128), 1.5), ((300, 301), 0.004), ((64, 64), 0.45)])
def test_correlate_spectra_falls_back_on_the_full_map(shape, cut_off_per_nm):
    """Bands not much smaller than the image, or one row or column wide, use the full-size map."""
    rng = np.random.default_rng(5)
    window = align.correlation_window(shape, SAMPLING, cut_off_per_nm)
    assert window.coarse_shape is None
    image = _random_field(shape, rng, band=0.2)
    moved = np.roll(image, (3, -4), axis=(0, 1)) + 0.1 * rng.normal(size=shape)
    new, full = _both_peaks(image, moved, window)
    assert new == full


def test_correlate_spectra_breaks_ties_like_argmax():
    """Images without a peak (constant, all zero) give the first position, (0, 0)."""
    shape = (300, 301)
    window = align.correlation_window(shape, SAMPLING, 0.186)
    for value in (5.0, 0.0):
        image = np.full(shape, value)
        with np.errstate(divide="ignore", invalid="ignore"):
            assert _both_peaks(image, image, window) == ((0, 0), (0, 0))


def test_fit_recovers_shift_tilt_defocus_and_factor():
    n = 128
    wave = _smooth_wave(n).astype(np.complex64)
    grid = alignment_grid((n, n), SAMPLING, 300.0)
    truth = initial_state(0.8 * np.exp(0.3j), defocus_nm=400.0)
    truth[2:6] = [0.37, -0.61, 0.004, -0.007]
    observed = _transformed(wave, truth, grid).astype(np.complex64)
    start = initial_state(1.0, defocus_nm=300.0)
    fitted = fit_to_average(observed, fft.fft2(wave), start, grid, fit_shift=True, fit_tilt=True, fit_defocus=True)
    np.testing.assert_allclose(fitted[2:4], truth[2:4], atol=1e-3)
    np.testing.assert_allclose(fitted[4:6], truth[4:6], atol=1e-5)
    assert fitted[6] == pytest.approx(400.0, abs=0.5)
    assert complex(fitted[0], fitted[1]) == pytest.approx(complex(truth[0], truth[1]), abs=1e-3)
    np.testing.assert_allclose(model_wave(fft.fft2(wave), fitted, grid), observed[grid.inner], atol=2e-3)


def test_fit_switches_leave_other_parameters_alone():
    n = 64
    wave = _smooth_wave(n).astype(np.complex64)
    grid = alignment_grid((n, n), SAMPLING, 300.0)
    truth = initial_state(1.2, defocus_nm=0.0)
    truth[2:4] = [0.3, 0.2]
    observed = _transformed(wave, truth, grid).astype(np.complex64)
    start = initial_state(1.0, defocus_nm=50.0)
    fitted = fit_to_average(observed, fft.fft2(wave), start, grid, fit_shift=False)
    assert fitted[2:].tolist() == start[2:].tolist()
    assert abs(complex(fitted[0], fitted[1])) > 0.5


def test_fit_reaches_the_least_squares_minimum_with_noise():
    """Same minimum as scipy's least_squares on the same residual."""
    n = 64
    rng = np.random.default_rng(5)
    wave = _smooth_wave(n).astype(np.complex64)
    grid = alignment_grid((n, n), SAMPLING, 300.0)
    truth = initial_state(0.9 * np.exp(-0.4j))
    truth[2:4] = [0.2, -0.45]
    observed = _transformed(wave, truth, grid) + 0.1 * (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
    observed = observed.astype(np.complex64)
    average = fft.fft2(wave)

    def residual(p):
        state = initial_state(complex(p[0], p[1]))
        state[2:4] = p[2:4]
        r = model_wave(average, state, grid) - observed[grid.inner]
        return np.concatenate([r.real.ravel(), r.imag.ravel()]).astype(np.float64)

    reference = least_squares(residual, [1.0, 0.0, 0.1, -0.3], diff_step=1e-3, xtol=1e-10, ftol=1e-10, gtol=1e-10).x
    fitted = fit_to_average(observed, average, initial_state(1.0), grid, fit_shift=True)
    np.testing.assert_allclose(fitted[2:4], reference[2:4], atol=2e-3)
    best = model_error(observed, average, fitted, grid)
    assert best <= np.sum(residual(reference) ** 2) * (1 + 1e-5)


def test_aligned_spectrum_inverts_the_model():
    n = 64
    wave = _smooth_wave(n).astype(np.complex64)
    grid = alignment_grid((n, n), SAMPLING, 300.0)
    state = initial_state(0.7 + 0.2j, defocus_nm=100.0)
    state[2:6] = [0.4, -0.3, 0.002, 0.001]
    observed = _transformed(wave, state, grid).astype(np.complex64)
    back = fft.ifft2(aligned_spectrum(observed, state, grid))
    np.testing.assert_allclose(back, wave, atol=2e-4)


def test_aligned_spectrum_reuses_a_precomputed_spectrum():
    n = 64
    wave = _smooth_wave(n).astype(np.complex64)
    grid = alignment_grid((n, n), SAMPLING, 300.0)
    spectrum = wave_spectrum(wave)
    np.testing.assert_allclose(spectrum, np.fft.fft2(wave), atol=1e-4 * np.abs(spectrum).max())
    state = initial_state(0.7 + 0.2j, defocus_nm=100.0)
    state[2:4] = [0.4, -0.3]
    assert np.array_equal(aligned_spectrum(wave, state, grid, spectrum=spectrum), aligned_spectrum(wave, state, grid))
    state[4:6] = [0.002, 0.001]  # with a tilt the spectrum cannot be reused (and is not)
    assert np.array_equal(aligned_spectrum(wave, state, grid, spectrum=spectrum), aligned_spectrum(wave, state, grid))


def _series(n=64, n_frames=6, noise=0.05, seed=1, tilts=False):
    rng = np.random.default_rng(seed)
    wave = _smooth_wave(n)
    grid = alignment_grid((n, n), SAMPLING, 300.0)
    states, frames = [], []
    for k in range(n_frames):
        state = initial_state(0.9 * np.exp(1j * rng.uniform(-1, 1)))
        state[2:4] = rng.normal(size=2) * 0.5 if k else 0.0
        if tilts and k:
            state[4:6] = rng.normal(size=2) * 0.003
        frame = _transformed(wave, state, grid) + noise * (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
        frames.append(frame.astype(np.complex64))
        states.append(state)
    stack = da.from_array(np.array(frames), chunks=(1, n, n))
    return wave, grid, np.array(states), stack


def test_average_series_aligns_and_reduces_noise():
    wave, grid, truth, stack = _series()
    result = average_series(stack, grid, np.zeros(6), iterations=4)
    # first frame pinned at zero shift: the fitted shifts are the true ones
    np.testing.assert_allclose(result.shifts_nm, truth[:, 2:4], atol=0.02)
    assert result.convergence[-1] <= result.convergence[0]
    assert len(result.convergence) == 5
    inner = grid.inner
    expected = wave[inner] / truth[0, 0]  # average is in the first frame's phase
    phase = np.angle(result.wave[inner] * np.conj(expected))
    phase -= np.angle(np.mean(np.exp(1j * phase)))
    single = np.angle(stack[0].compute()[inner] * np.conj(wave[inner]))
    single -= np.angle(np.mean(np.exp(1j * single)))
    assert np.sqrt(np.mean(phase**2)) < 0.6 * np.sqrt(np.mean(single**2))
    assert np.mean(np.abs(result.factors)) == pytest.approx(1.0)
    # variance: mean squared deviation of the aligned frames from the average / (N - 1)
    aligned = np.array([fft.ifft2(aligned_spectrum(f, s, grid)) for f, s in zip(stack.compute(), result.states)])
    expected_variance = np.sum(np.abs(aligned - result.wave) ** 2, axis=0) / 5
    np.testing.assert_allclose(result.variance, expected_variance, rtol=1e-3, atol=1e-6)


def test_average_series_is_the_same_on_a_distributed_cluster():
    distributed = pytest.importorskip("distributed")
    _, grid, _, stack = _series(n=32, n_frames=4)
    local = average_series(stack, grid, np.zeros(4), iterations=2)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        remote = average_series(stack, grid, np.zeros(4), iterations=2, client=client)
    np.testing.assert_allclose(remote.states, local.states, atol=1e-6)
    np.testing.assert_allclose(remote.wave, local.wave, atol=1e-6)


@pytest.mark.reference
@pytest.mark.skipif(importlib.util.find_spec("holoaverage") is None, reason="holoaverage is not importable")
def test_average_series_matches_reference_averaging():
    from holoaverage.average import holoAverage
    from holoaverage.series import DataSet, Series

    _, grid, _, stack = _series(n=64, n_frames=5, noise=0.03)
    frames = stack.compute()
    series = Series((5,), (64, 64), dtype=np.complex128)
    for k in range(5):
        series[k] = DataSet(data=frames[k].astype(complex), attrs={"dim_scale": [SAMPLING] * 2, "dim_unit": ["nm"] * 2})
    series.attrs.update({"voltage(kV)": 300.0, "dim_scale": [SAMPLING] * 2, "dim_unit": ["nm", "nm"]})
    reference, _ = holoAverage(series, defocus=np.zeros(5), adjustDefocus=False, adjustShift=True, adjustTilt=False,
                               verbose=0, variance=True)
    ours = average_series(stack, grid, np.zeros(5), iterations=7)
    difference = ours.shifts_nm - np.asarray(reference.attrs["shift(nm)"])  # both (y, x) here
    difference -= difference.mean(axis=0)
    assert np.abs(difference).max() / SAMPLING < 0.05
    inner = (slice(16, 48), slice(16, 48))
    phase = np.angle(ours.wave * np.conj(reference.array))[inner]
    phase -= np.angle(np.mean(np.exp(1j * phase)))
    assert np.sqrt(np.mean(phase**2)) < 0.02
    assert ours.convergence[-1] <= reference.attrs["convergence"][-1] * (1 + 1e-4)


def _reference_fit(observed, average_spectrum, start, grid, free):
    """The least-squares minimum by scipy in double precision, the model computed directly in numpy."""
    inner = grid.inner
    spectrum = np.asarray(average_spectrum, dtype=complex)
    qy = np.fft.fftfreq(grid.shape[0], SAMPLING)[:, None]
    qx = np.fft.fftfreq(grid.shape[1], SAMPLING)[None, :]
    y = (np.arange(grid.shape[0]) * SAMPLING)[inner[0], None]
    x = (np.arange(grid.shape[1]) * SAMPLING)[None, inner[1]]
    target = observed[inner].astype(complex)
    # scales that make every parameter move the model by a similar amount
    scale = np.array([1.0, 1.0, SAMPLING, SAMPLING, 1e-3, 1e-3, 10.0])[free]

    def residual(p):
        state = np.array(start, dtype=float)
        state[free] = p * scale
        phase = 2 * np.pi * (state[2] * qy + state[3] * qx) - np.pi * grid.wavelength_nm * state[6] * (qx**2 + qy**2)
        model = np.fft.ifft2(spectrum * np.exp(1j * phase))[inner]
        model = complex(state[0], state[1]) * model * np.exp(2j * np.pi * (state[4] * y + state[5] * x))
        r = model - target
        return np.concatenate([r.real.ravel(), r.imag.ravel()])

    found = least_squares(residual, np.asarray(start, dtype=float)[free] / scale, method="lm",
                          xtol=1e-12, ftol=1e-12, gtol=1e-12).x
    state = np.array(start, dtype=float)
    state[free] = found * scale
    return state, float(np.sum(residual(found) ** 2))


@pytest.mark.parametrize("case", ["shift", "shift+tilt", "shift+defocus"])
def test_fit_matches_a_direct_least_squares_fit(case):
    """The fast fit ends at the minimum scipy finds on the same cost (noisy wave and noisy average)."""
    n = 64
    rng = np.random.default_rng({"shift": 11, "shift+tilt": 12, "shift+defocus": 13}[case])
    wave = _smooth_wave(n, seed=3, band=0.2)
    grid = alignment_grid((n, n), SAMPLING, 300.0)
    truth = initial_state(0.9 * np.exp(0.7j), defocus_nm=30.0 if case == "shift+defocus" else 0.0)
    truth[2:4] = [0.31, -0.57]
    if case == "shift+tilt":
        truth[4:6] = [0.004, -0.006]

    def noise(level):
        return level * (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))

    observed = (_transformed(wave, truth, grid) + noise(0.1)).astype(np.complex64)
    average = fft.fft2((wave + noise(0.05)).astype(np.complex64))
    options = dict(fit_shift=True, fit_tilt=case == "shift+tilt", fit_defocus=case == "shift+defocus")
    free = [0, 1, 2, 3] + ([4, 5] if options["fit_tilt"] else []) + ([6] if options["fit_defocus"] else [])
    for start in (initial_state(1.0), truth + np.array([0.02, -0.01, 0.03, -0.02, 0, 0, 2.0])):  # cold, warm
        start = start.copy()
        fitted, start_error = fit_to_average(observed, average, start, grid, return_start_error=True, **options)
        reference, reference_cost = _reference_fit(observed, average, start, grid, free)
        assert start_error == pytest.approx(model_error(observed, average, start, grid), rel=1e-6)
        np.testing.assert_allclose(fitted[2:4] / SAMPLING, reference[2:4] / SAMPLING, atol=2e-4)
        np.testing.assert_allclose(fitted[4:6], reference[4:6], atol=1e-6)  # 2e-4 rad over the image
        assert fitted[6] == pytest.approx(reference[6], abs=0.01)
        assert complex(fitted[0], fitted[1]) == pytest.approx(complex(reference[0], reference[1]), abs=2e-4)
        assert model_error(observed, average, fitted, grid) <= reference_cost * (1 + 1e-5)


def test_threaded_tasks_run_with_single_threaded_blas():
    """Dask's threads use the cores; BLAS must not start a pool of its own in each."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from holodask.stages.rounds import compute_graph

    def blas_threads():
        return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]

    (inside,) = compute_graph({"n": (blas_threads,)}, ["n"])
    assert inside and set(inside) == {1}
