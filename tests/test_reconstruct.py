"""Reconstruction kernels and optics helpers against direct numpy computations."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from waves import smooth_wave
from holodask import fft
from holodask.errors import ParameterError
from holodask.optics import (
    carrier_per_nm,
    filter_function,
    fourier_rescale,
    mtf_array,
    propagate,
    wavelength_nm,
)
from holodask.params import FilterSpec, MtfTerm
from holodask.hologram import extract_roi, moved_roi, reconstruct_hologram, sideband_geometry


def _hologram(wave: np.ndarray, carrier_px, contrast: float = 0.5) -> np.ndarray:
    """Off-axis hologram whose sideband at +carrier holds ``wave``."""
    n_y, n_x = wave.shape
    y, x = np.mgrid[0:n_y, 0:n_x]
    fringe = np.exp(2j * np.pi * (carrier_px[0] * x / n_x + carrier_px[1] * y / n_y))
    return 1.0 + np.abs(wave) ** 2 + 2 * contrast * np.real(wave * fringe)


def _direct_reconstruction(frame, sampling, carrier, out_size, cut_off, mask_kind="EDGE", order=None):
    """The textbook computation with a full complex FFT (integer carrier only)."""
    n_y, n_x = frame.shape
    spectrum = np.fft.fftshift(np.fft.fft2(frame))
    cy = int(round(carrier[1] * sampling * n_y))
    cx = int(round(carrier[0] * sampling * n_x))
    y0, x0 = n_y // 2 + cy - out_size // 2, n_x // 2 + cx - out_size // 2
    cut = spectrum[y0:y0 + out_size, x0:x0 + out_size]
    qy = (np.arange(y0, y0 + out_size) - n_y // 2) / (n_y * sampling) - carrier[1]
    qx = (np.arange(x0, x0 + out_size) - n_x // 2) / (n_x * sampling) - carrier[0]
    g2 = (qy[:, None] ** 2 + qx[None, :] ** 2) / cut_off**2
    mask = {"EDGE": g2 < 1, "GAUSSIAN": np.exp(-g2 / 2), "BUTTERWORTH": 1 / (1 + g2 ** (order or 1))}[mask_kind]
    return np.fft.ifft2(np.fft.ifftshift(cut * mask))


@pytest.mark.parametrize("kind, order", [("EDGE", None), ("GAUSSIAN", None), ("BUTTERWORTH", 8)])
def test_reconstruction_equals_direct_computation(kind, order):
    n, size, sampling = 128, 64, 0.5
    frame = _hologram(smooth_wave(n), (32, 16))
    carrier = carrier_per_nm((n // 2 + 32, n // 2 + 16), (n, n), sampling)
    geometry = sideband_geometry((n, n), sampling, carrier, (size, size), np.eye(2) * 0.3**2, FilterSpec(kind, order))
    assert geometry.ramp is None  # integer carrier: no sub-pixel ramp
    ours = reconstruct_hologram(frame, geometry)
    expected = _direct_reconstruction(frame, sampling, carrier, size, 0.3, kind, order)
    assert ours.dtype == np.complex64
    np.testing.assert_allclose(ours, expected, atol=2e-6 * np.abs(expected).max())


@pytest.mark.parametrize("shape, carrier_px, size", [
    ((96, 130), (-30, 20), 48),  # sideband in the conjugated half of the real FFT
    ((96, 130), (5, 16), 48),  # cut-out straddles kx = 0 (partly conjugated)
    ((97, 130), (-41, -10), 48),  # cut-out reaches the Nyquist column
    ((101, 99), (20, -25), 48),  # odd sizes
])
def test_reconstruction_equals_direct_computation_anywhere(shape, carrier_px, size):
    """Sidebands anywhere in the spectrum: the pruned, transposed transforms give the textbook result."""
    sampling, cut_off = 0.5, 0.2
    frame = _hologram(smooth_wave(max(shape))[: shape[0], : shape[1]], carrier_px)
    centre = (shape[1] // 2 + carrier_px[0], shape[0] // 2 + carrier_px[1])
    carrier = carrier_per_nm(centre, shape, sampling)
    geometry = sideband_geometry(shape, sampling, carrier, (size, size), np.eye(2) * cut_off**2)
    ours = reconstruct_hologram(frame.astype(np.float32), geometry)
    expected = _direct_reconstruction(frame, sampling, carrier, size, cut_off)
    np.testing.assert_allclose(ours, expected, atol=2e-6 * np.abs(expected).max())
    # the transforms' buffers are reused: a second frame gives its own result
    again = reconstruct_hologram((2 * frame).astype(np.float32), geometry)
    np.testing.assert_allclose(again, 2 * expected, atol=4e-6 * np.abs(expected).max())
    assert not np.shares_memory(ours, again)


def test_reconstruction_recovers_the_wave():
    n, size = 128, 64
    wave = smooth_wave(n)
    frame = _hologram(wave, (32, 16))
    geometry = sideband_geometry((n, n), 1.0, carrier_per_nm((96, 80), (n, n), 1.0), (size, size),
                                 np.eye(2) * 0.12**2)
    ours = reconstruct_hologram(frame, geometry)
    truth = fourier_rescale(wave.astype(np.complex64), (size, size))
    inner = (slice(16, 48), slice(16, 48))
    difference = np.angle(ours * np.conj(truth))[inner]
    difference = difference - np.median(difference)
    assert np.sqrt(np.mean(difference**2)) < 0.01 and np.abs(difference).max() < 0.05
    ratio = np.abs(ours[inner]) / np.abs(truth[inner])
    # sideband = contrast * wave; both sides carry the same FFT-size factor (128^2 / 64^2)
    assert np.median(ratio) == pytest.approx(0.5, rel=0.005)
    assert np.allclose(ratio, 0.5, rtol=0.05)


def test_sub_pixel_carrier_is_removed():
    """A sideband between FFT pixels gives a flat phase for vacuum after the ramp."""
    n = 128
    carrier_px = (30.4, 17.7)
    frame = _hologram(np.ones((n, n)), carrier_px)
    geometry = sideband_geometry((n, n), 1.0, (carrier_px[0] / n, carrier_px[1] / n), (48, 48), np.eye(2) * 0.1**2,
                                 FilterSpec("GAUSSIAN"))
    assert geometry.ramp is not None
    wave = reconstruct_hologram(frame, geometry)[12:36, 12:36]
    phase = np.angle(wave * np.conj(wave.mean()))
    assert np.abs(phase).max() < 0.02


def test_anisotropic_cut_off_follows_the_matrix():
    g2_x = filter_function(np.array([1.0]), FilterSpec("GAUSSIAN"))
    assert g2_x[0] == pytest.approx(np.exp(-0.5))
    assert filter_function(np.array([1.0]), FilterSpec("BUTTERWORTH", 4))[0] == pytest.approx(0.5)
    assert filter_function(np.array([0.99, 1.0]), FilterSpec("EDGE")).tolist() == [1.0, 0.0]
    n = 64
    cut_off2 = np.array([[0.24**2, 0.0], [0.0, 0.08**2]])  # wide in x, narrow in y
    geometry = sideband_geometry((n, n), 1.0, (0.25, 0.25), (32, 32), cut_off2, FilterSpec("EDGE"))
    kept = geometry.weights > 0
    assert kept.sum(axis=1).max() > 2.5 * kept.sum(axis=0).max()  # x extent 3x the y extent


def test_mtf_array_matches_its_formula():
    terms = (MtfTerm("GAUSSIAN", (0.6, 20.0)), MtfTerm("CONSTANT", (0.4,)), MtfTerm("LORENTZIAN", (0.1, 2.0)))
    values = mtf_array(terms, (8, 10), binning=2)
    qy = np.fft.fftfreq(8, 2).reshape(-1, 1)
    qx = np.fft.fftfreq(10, 2).reshape(1, -1)
    q2 = qx**2 + qy**2
    expected = (0.6 * np.exp(-20 * q2) + 0.4 + 0.1 / (2 + q2)) * np.sinc(2 * qx) * np.sinc(2 * qy)
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_mtf_is_divided_out_of_the_sideband():
    n = 64
    terms = (MtfTerm("GAUSSIAN", (0.5, 10.0)), MtfTerm("CONSTANT", (0.5,)))
    plain = sideband_geometry((n, n), 1.0, (0.25, 0.125), (32, 32), np.eye(2) * 0.1**2)
    with_mtf = sideband_geometry((n, n), 1.0, (0.25, 0.125), (32, 32), np.eye(2) * 0.1**2, mtf_terms=terms)
    mtf = np.fft.fftshift(mtf_array(terms, (n, n)))
    y0, y1, x0, x1 = plain.dst
    region = mtf[n // 2 + 8 - 16:n // 2 + 8 + 16, n // 2 + 16 - 16:n // 2 + 16 + 16]
    np.testing.assert_allclose(with_mtf.weights, plain.weights / region, rtol=1e-5)


def test_wavelength_and_carrier():
    assert wavelength_nm(300.0) == pytest.approx(1.96875e-3, rel=1e-4)
    assert wavelength_nm(200.0) == pytest.approx(2.50793e-3, rel=1e-4)
    assert carrier_per_nm((314, 134), (512, 512), 0.5) == pytest.approx(((314 - 256) / 256, (134 - 256) / 256))


def test_fourier_rescale_round_trip_and_scale():
    wave = smooth_wave(32, band=0.1).astype(np.complex64)
    big = fourier_rescale(wave, (64, 48))
    assert big.shape == (64, 48)
    back = fourier_rescale(big, (32, 32)) * (64 * 48) / (32 * 32) * (32 * 32) / (64 * 48)
    # up and down again: amplitudes scale by 32*32/(64*48) and back, frequencies are kept
    np.testing.assert_allclose(fourier_rescale(big, (32, 32)), wave, atol=1e-5)
    assert np.abs(big).mean() == pytest.approx(np.abs(wave).mean() * 32 * 32 / (64 * 48), rel=0.02)
    assert back.shape == (32, 32)


def test_propagation_is_reversible_and_sign():
    wave = smooth_wave(64).astype(np.complex64)
    there = propagate(wave, 500.0, 300.0, 0.2)
    np.testing.assert_allclose(propagate(there, -500.0, 300.0, 0.2), wave, atol=1e-5)
    q2 = np.fft.fftfreq(64, 0.2)[:, None] ** 2 + np.fft.fftfreq(64, 0.2)[None, :] ** 2
    expected = np.fft.ifft2(np.fft.fft2(wave) * np.exp(1j * np.pi * wavelength_nm(300.0) * 500.0 * q2))
    np.testing.assert_allclose(there, expected, atol=1e-5)


def test_extract_roi_follows_drift_and_fills_with_mean():
    frame = np.arange(100, dtype=np.int32).reshape(10, 10)
    roi = (2, 3, 6, 8)
    assert moved_roi(roi, (1, -2)) == (1, 5, 5, 10)
    np.testing.assert_array_equal(extract_roi(frame, roi, (1, -2)), frame[5:10, 1:5])
    outside = extract_roi(frame, roi, (4, 5))  # moved to (-2, -2, 2, 3)
    assert outside.dtype == frame.dtype
    np.testing.assert_array_equal(outside[2:, 2:], frame[0:3, 0:2])
    assert (outside[:2, :] == int(frame.mean())).all() and (outside[:, :2] == int(frame.mean())).all()


def test_bad_geometry_is_refused():
    with pytest.raises(ParameterError, match="object_size"):
        sideband_geometry((64, 64), 1.0, (0.25, 0.1), (80, 80), np.eye(2) * 0.01)
    with pytest.raises(ParameterError, match="sideband_pos"):
        sideband_geometry((64, 64), 1.0, (0.6, 0.1), (32, 32), np.eye(2) * 0.01)
    with pytest.raises(ParameterError, match="cut_off"):
        sideband_geometry((64, 64), 1.0, (0.25, 0.1), (16, 16), np.eye(2) * 0.2**2)


def test_fft_backend_matches_numpy():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(24, 30)).astype(np.float32)
    complex_ = (rng.normal(size=(24, 30)) + 1j * rng.normal(size=(24, 30))).astype(np.complex64)
    np.testing.assert_allclose(fft.rfft2(real), np.fft.rfft2(real), atol=1e-4)
    np.testing.assert_allclose(fft.fft2(complex_), np.fft.fft2(complex_), atol=1e-4)
    np.testing.assert_allclose(fft.ifft2(complex_), np.fft.ifft2(complex_), atol=1e-6)
    np.testing.assert_allclose(fft.irfft2(np.fft.rfft2(real), real.shape), real, atol=1e-5)
    readonly = complex_.copy()
    readonly.flags.writeable = False
    np.testing.assert_allclose(fft.ifft2(readonly), np.fft.ifft2(complex_), atol=1e-6)
    assert fft.get_fft_threads() >= 1


@pytest.mark.reference
@pytest.mark.skipif(importlib.util.find_spec("holoaverage") is None, reason="holoaverage is not importable")
@pytest.mark.parametrize(
    "roi_shape, size, kind, order, mtf, cut_off2",
    [
        ((512, 512), 256, "BUTTERWORTH", 14, None, np.eye(2) * 0.07**2),
        ((300, 301), 127, "GAUSSIAN", None, (("CONSTANT", 0.2), ("GAUSSIAN", 0.8, 3.0)),
         np.array([[0.004, 0.001], [0.001, 0.003]])),
        ((512, 480), 200, "EDGE", None, None, np.eye(2) * 0.05**2),
    ],
)
def test_reconstruction_equals_reference_on_real_hologram(fe_needle, roi_shape, size, kind, order, mtf, cut_off2):
    import h5py
    from holoaverage.camera import ParameterizedMTF
    from holoaverage.filter import FilterFunction
    from holoaverage.reconstruction import holo_reconstruction
    from holoaverage.series import DataSet

    path, _, dataset = fe_needle[0].partition("?dataset=")
    with h5py.File(path, "r") as f:
        frame = f[dataset][: roi_shape[0], : roi_shape[1]].astype(np.float64)
    sampling = 0.9197516
    carrier = carrier_per_nm((314, 134), (512, 512), sampling)
    mask = FilterFunction(max_q2=cut_off2, mask_type=(kind, order) if order else kind)
    data = DataSet(data=frame, attrs={"dim_scale": [sampling, sampling], "dim_unit": ["nm", "nm"]})
    expected = holo_reconstruction(data, carrier=np.array(carrier), shape=(size, size), maskType=mask,
                                   mtf=ParameterizedMTF([list(t) for t in mtf]) if mtf else None).array
    terms = tuple(MtfTerm(t[0], tuple(t[1:])) for t in mtf) if mtf else None
    geometry = sideband_geometry(roi_shape, sampling, carrier, (size, size), cut_off2, FilterSpec(kind, order), terms)
    ours = reconstruct_hologram(frame, geometry)
    assert np.abs(ours - expected).max() < 2e-6 * np.abs(expected).max()


def test_fft_plans_list_the_transforms_the_kernels_run(monkeypatch):
    """The plan lists (for the pipeline's shared wisdom) cover every transform the per-frame kernels plan."""
    from holodask import align, hologram as reconstruct, normalise

    if fft.backend() != "pyfftw":
        pytest.skip("plans only with pyFFTW")
    n, size = 120, 32
    geometry = sideband_geometry((n, n), 0.5, carrier_per_nm((80, 70), (n, n), 0.5), (size, size), np.eye(2) * 0.1**2)
    factor = normalise.normalisation_factor(np.ones((n + 10, n + 10), np.complex64), (0, 0, n, n), (3, 2), (64, 64))
    window = align.correlation_window((n, n), 0.5, 0.2)
    assert window.coarse_shape is not None  # the coarse search, and the full map it falls back on
    image = np.abs(smooth_wave(n)) ** 2
    planned = []
    original = fft._plan

    def recording(kind, shape, dtype, out_shape=None, effort=None, axis=None):
        planned.append((kind, tuple(shape), out_shape, axis))
        return original(kind, shape, dtype, out_shape, effort, axis)

    monkeypatch.setattr(fft, "_plan", recording)
    wave = reconstruct_hologram(_hologram(smooth_wave(n), (20, 10)).astype(np.float32), geometry)
    normalise.normalise_with_factor(wave, factor, (size, size))
    normalise.normalisation_factor(np.ones((n + 10, n + 10), np.complex64), (0, 0, n, n), (3, 2), (64, 64))
    spectrum = align.window_spectrum(image, window)
    align.correlate_spectra(spectrum, spectrum, window)
    align._correlate_full(spectrum, spectrum, window)
    listed = (reconstruct.fft_plans(geometry) + normalise.fft_plans(wave.shape, factor.shape, (size, size))
              + normalise.factor_fft_plans((n, n), (64, 64)) + align.correlation_fft_plans(window))
    assert set(planned) == {(kind, tuple(shape), out_shape, axis) for kind, shape, out_shape, axis in listed}


@pytest.mark.parametrize("camera, roi, shift, grid", [
    ((300, 280), (10, 20, 290, 270), (-15, 12), (128, 100)),  # moved partly off the camera
    ((257, 300), (0, 0, 257, 300), (3, -2), (127, 129)),  # odd sizes
    ((160, 160), (8, 8, 152, 152), (0, 0), (96, 96)),
])
def test_normalisation_factor_equals_the_full_resampling(camera, roi, shift, grid):
    """The factor (1/empty under the moved ROI, resampled to the grid) as the plain
    Fourier resampling of the whole quotient computes it."""
    from holodask.normalise import normalisation_factor
    from holodask.optics import fourier_downsample

    rng = np.random.default_rng(5)
    empty = (1 + 0.3 * rng.standard_normal(camera) + 0.3j * rng.standard_normal(camera)).astype(np.complex64)
    left, top, right, bottom = moved_roi(roi, shift)
    inverse = np.ones((bottom - top, right - left), np.complex128)
    y0, x0, y1, x1 = max(0, top), max(0, left), min(camera[0], bottom), min(camera[1], right)
    inverse[y0 - top:y1 - top, x0 - left:x1 - left] = 1.0 / empty[y0:y1, x0:x1].astype(np.complex128)
    expected = fourier_downsample(inverse.astype(np.complex64), grid) * (grid[0] * grid[1] / inverse.size)
    got = normalisation_factor(empty, roi, shift, grid)
    assert got.shape == grid and got.flags.f_contiguous
    assert np.abs(got - expected).max() < 1e-5 * np.abs(expected).max()
