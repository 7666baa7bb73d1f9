"""Tests of the hologram-series simulator and ``holodask simulate``.

The reference-marked tests run the reference program on simulated series and
prove that the simulator's conventions (sideband sign, defocus sign, drift
direction) are the reference's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from holodask.cli import main
from holodask.errors import ParameterError
from holodask.simulate import (
    DEFAULT_MTF,
    NOISE_FREE_COUNTS,
    SimulatedSeries,
    detector_mtf,
    electron_wavelength_nm,
    fourier_resample,
    simulate_series,
)

SMALL = dict(n_frames=3, size_px=128, object_size_px=32)


def read_hologram(spec: str) -> np.ndarray:
    path, _, query = spec.partition("?")
    if path.endswith(".raw"):
        options = dict(part.split("=") for part in query.split("&"))
        return np.fromfile(path, dtype=options["dtype"]).reshape(int(options["ysize"]), int(options["xsize"]))
    with h5py.File(path, "r") as f:
        return f["hologram"][...]


def read_params(path) -> dict:
    text = open(path, encoding="utf-8").read()
    return json.loads("\n".join(line for line in text.splitlines() if not line.startswith("//")))


def direct_hologram(series: SimulatedSeries, k: int, empty: bool = False) -> np.ndarray:
    """The noise-free hologram of frame ``k`` computed here directly from the truth."""
    t = series.truth
    n = t["object_wave"].shape[0]
    f = np.fft.fftfreq(n)
    fy, fx = f.reshape(-1, 1), f.reshape(1, -1)
    if empty:
        wave = np.ones((n, n))
        carrier, mu, phi = t["empty_carrier_px"][k], t["empty_fringe_contrast"][k], t["empty_biprism_phase_rad"][k]
    else:
        dx, dy = t["drift_px"][k]
        chi = np.pi * float(t["wavelength_nm"]) * t["defocus_nm"][k] * (fx**2 + fy**2) / series.sampling_nm**2
        wave = np.fft.ifft2(np.fft.fft2(t["object_wave"]) * np.exp(-2j * np.pi * (fx * dx + fy * dy) - 1j * chi))
        carrier, mu, phi = t["carrier_px"][k], t["fringe_contrast"][k], t["biprism_phase_rad"][k]
    y, x = np.mgrid[0:n, 0:n]
    total_phase = 2 * np.pi * (carrier[0] * x + carrier[1] * y) / n + t["reference_phase_rad"] + phi
    intensity = t["illumination_gain"] * (1 + abs(wave) ** 2 + 2 * mu * abs(wave) * np.cos(np.angle(wave) + total_phase)) / 2
    if t["mtf"].size:
        intensity = np.fft.ifft2(np.fft.fft2(intensity) * t["mtf"]).real
    return intensity * float(t["mean_counts"])


# --------------------------------------------------------------------------
# files and truth
# --------------------------------------------------------------------------


def test_same_seed_same_series_other_seed_other_object(tmp_path):
    a = simulate_series(tmp_path / "a", seed=3, drift_step_px=0.7, biprism_phase_jitter_rad=0.3, **SMALL)
    b = simulate_series(tmp_path / "b", seed=3, drift_step_px=0.7, biprism_phase_jitter_rad=0.3, **SMALL)
    c = simulate_series(tmp_path / "c", seed=4, drift_step_px=0.7, biprism_phase_jitter_rad=0.3, **SMALL)
    for spec_a, spec_b in zip(a.object_specs + a.empty_specs, b.object_specs + b.empty_specs):
        np.testing.assert_array_equal(read_hologram(spec_a), read_hologram(spec_b))
    assert set(a.truth) == set(b.truth)
    for key in a.truth:
        np.testing.assert_array_equal(a.truth[key], b.truth[key])
    assert not np.allclose(a.object_wave, c.object_wave)
    assert not np.allclose(a.drift_px, c.drift_px)


def test_features_draw_from_independent_streams(tmp_path):
    clean = simulate_series(tmp_path / "clean", seed=1, **SMALL)
    busy = simulate_series(tmp_path / "busy", seed=1, dose_e_per_px=50, n_hot_pixels=3, n_cosmic_rays=2, drift_step_px=1.0, **SMALL)
    np.testing.assert_array_equal(clean.object_wave, busy.object_wave)
    np.testing.assert_array_equal(clean.truth["illumination_gain"], busy.truth["illumination_gain"])


def test_truth_describes_a_smooth_band_limited_object(tmp_path):
    s = simulate_series(tmp_path, **SMALL)
    wave = s.object_wave
    assert wave.shape == (128, 128) and np.iscomplexobj(wave)
    assert 1.0 <= np.ptp(np.angle(wave)) <= 2.2
    # vacuum (1) far from the particles, at the corners
    np.testing.assert_allclose(wave[:4, :4], 1.0, atol=0.02)
    # nothing beyond the recorded band limit
    f = np.fft.fftfreq(128) / s.sampling_nm
    q = np.hypot(f.reshape(-1, 1), f.reshape(1, -1))
    spectrum = np.fft.fft2(wave)
    assert np.abs(spectrum[q > float(s.truth["object_band_limit_per_nm"]) * 1.001]).max() < 1e-9 * np.abs(spectrum).max()
    assert float(s.truth["object_band_limit_per_nm"]) <= 0.5 * float(s.truth["cut_off_per_nm"]) + 1e-12
    assert s.drift_px.shape == (3, 2) and s.carrier_px.shape == (3, 2)
    assert s.defocus_nm.shape == s.biprism_phase_rad.shape == s.fringe_contrast.shape == (3,)


@pytest.mark.parametrize("file_format", ["hdf5", "raw"])
def test_noise_free_holograms_equal_the_hologram_formula(tmp_path, file_format):
    s = simulate_series(
        tmp_path, seed=2, drift_step_px=1.3, defocus_first_nm=-500, defocus_step_nm=2000, biprism_phase_jitter_rad=0.5,
        contrast_jitter=0.1, carrier_drift_px=0.2, mtf=DEFAULT_MTF, file_format=file_format, **SMALL,
    )
    for k in range(s.n_frames):
        stored = read_hologram(s.object_specs[k])
        assert stored.dtype == np.float32 and stored.shape == (128, 128)
        np.testing.assert_allclose(stored, direct_hologram(s, k), rtol=1e-5, atol=1e-3 * NOISE_FREE_COUNTS)
    np.testing.assert_allclose(read_hologram(s.empty_specs[0]), direct_hologram(s, 0, empty=True), rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(s.defocus_nm, [-500, 1500, 3500])
    np.testing.assert_array_equal(s.drift_px[0], [0, 0])


def test_sideband_sits_at_sideband_pos_and_holds_the_wave(tmp_path):
    s = simulate_series(tmp_path, n_frames=1, size_px=128, object_size_px=32, carrier_px=(-30, 17))
    hologram = read_hologram(s.object_specs[0]).astype(float)
    spectrum = np.fft.fftshift(np.fft.fft2(hologram))
    sx, sy = (int(v) for v in s.sideband_pos)
    assert (sx, sy) == (64 - 30, 64 + 17)
    assert s.params["sideband_pos"] == [sx, sy]
    masked = np.abs(spectrum)
    masked[64 - 10 : 64 + 11, 64 - 10 : 64 + 11] = 0  # centre band
    # the strongest peak outside the centre band: the sideband and its conjugate (real hologram)
    peaks = {tuple(int(v) for v in np.unravel_index(i, masked.shape)) for i in np.argsort(masked, axis=None)[-2:]}
    assert peaks == {(sy, sx), (128 - sy, 128 - sx)}
    # the sideband (not its conjugate) is the wave times the slowly varying illumination
    t = s.truth
    half = 14
    window = np.zeros_like(spectrum)
    window[sy - half : sy + half + 1, sx - half : sx + half + 1] = spectrum[sy - half : sy + half + 1, sx - half : sx + half + 1]
    side = np.fft.ifft2(np.fft.ifftshift(np.roll(window, (64 - sy, 64 - sx), axis=(0, 1))))
    vacuum_side = t["illumination_gain"] * np.exp(1j * t["reference_phase_rad"])
    ratio = side / vacuum_side
    inner = (slice(32, 96), slice(32, 96))
    phase_difference = np.angle(ratio[inner] * np.conj(s.object_wave[inner]))
    assert np.sqrt(np.mean(phase_difference**2)) < 0.01
    assert np.sqrt(np.mean(np.angle(ratio[inner] * s.object_wave[inner]) ** 2)) > 0.3


def test_hologram_mean_is_the_intensity(tmp_path):
    s = simulate_series(tmp_path, dose_e_per_px=200, empty_noise_free=False, **SMALL)
    empty = read_hologram(s.empty_specs[0])
    assert empty.dtype == np.uint16
    assert float(s.truth["mean_counts"]) == 200
    expected = 200 * s.truth["illumination_gain"].mean()
    assert abs(empty.mean() - expected) < 5 * np.sqrt(expected / empty.size) + 0.5


def test_dose_gives_poisson_statistics(tmp_path):
    clean = simulate_series(tmp_path / "clean", seed=5, size_px=128, object_size_px=32, n_frames=2)
    noisy = simulate_series(tmp_path / "noisy", seed=5, size_px=128, object_size_px=32, n_frames=2, dose_e_per_px=40.0)
    lam = read_hologram(clean.object_specs[1]).astype(float) * 40.0 / NOISE_FREE_COUNTS
    counts = read_hologram(noisy.object_specs[1])
    assert counts.dtype.kind == "u"
    residual = (counts - lam) / np.sqrt(lam)
    assert abs(residual.mean()) < 0.03  # 16384 px: SE of the mean is 0.008
    assert abs(residual.var() - 1.0) < 0.06  # SE of the variance ~0.011
    # the empty series stays noise-free by default
    np.testing.assert_allclose(read_hologram(noisy.empty_specs[0]), read_hologram(clean.empty_specs[0]) * 40.0 / NOISE_FREE_COUNTS, atol=0.51)


def test_hot_pixels_and_cosmic_rays_at_recorded_positions(tmp_path):
    clean = simulate_series(tmp_path / "clean", seed=6, **SMALL)
    dirty = simulate_series(tmp_path / "dirty", seed=6, n_hot_pixels=4, n_cosmic_rays=3, **SMALL)
    hot = dirty.truth["hot_pixels_xy"]
    rays = dirty.truth["cosmic_rays"]
    assert hot.shape == (4, 2) and rays.shape[1] == 3 and len(rays) >= 3
    for series_kind, specs_clean, specs_dirty, hits in (
        ("object", clean.object_specs, dirty.object_specs, rays),
        ("empty", clean.empty_specs, dirty.empty_specs, dirty.truth["empty_cosmic_rays"]),
    ):
        for k, (a, b) in enumerate(zip(specs_clean, specs_dirty)):
            difference = read_hologram(b).astype(float) - read_hologram(a).astype(float)
            expected = np.zeros_like(difference)
            expected[hot[:, 1], hot[:, 0]] += float(dirty.truth["hot_pixel_counts"])
            frame_hits = hits[hits[:, 0] == k]
            expected[frame_hits[:, 2], frame_hits[:, 1]] += float(dirty.truth["cosmic_ray_counts"])
            np.testing.assert_allclose(difference, expected, atol=1e-2, err_msg=f"{series_kind} {k}")


def test_params_file_describes_the_series(tmp_path):
    s = simulate_series(tmp_path, defocus_step_nm=100.0, mtf=DEFAULT_MTF, **SMALL)
    p = read_params(s.params_path)
    assert p == s.params
    assert p["object_names"] == "object_%03d.hdf5?dataset=hologram"
    assert (p["object_first"], p["object_last"]) == (0, 2)
    assert (p["empty_first"], p["empty_last"]) == (0, 0)
    assert p["object_size"] == p["empty_size"] == 32
    assert p["mtf"] == DEFAULT_MTF and p["adjust_defocus"] is True
    assert p["defocus_step"] == 100.0 and p["output_name"] == "result.hdf5"
    carrier_per_nm = np.hypot(*(np.array(p["sideband_pos"]) - 64)) / 128 / p["sampling"]
    assert p["cut_off"] == pytest.approx(carrier_per_nm / 3, rel=1e-4)
    assert "roi" not in p
    assert p["enable_raw_alignment"] is False  # focal series without drift
    assert [spec.split("/")[-1] for spec in s.object_specs] == [f"object_{k:03d}.hdf5?dataset=hologram" for k in range(3)]

    none = simulate_series(tmp_path / "none", n_empty=0, drift_step_px=1.0, file_format="raw", **SMALL)
    assert "empty_names" not in none.params and none.empty_specs == []
    assert none.params["object_names"] == "object_%03d.raw?xsize=128&ysize=128&dtype=float32"
    margin = int(np.ceil(np.abs(none.drift_px).max())) + 8
    assert none.params["roi"] == [margin, margin, 128 - margin, 128 - margin]
    assert "enable_raw_alignment" not in none.params and "defocus_step" not in none.params
    assert not list((tmp_path / "none").glob("empty_*"))


def test_load_gives_back_the_series(tmp_path):
    s = simulate_series(tmp_path, drift_step_px=0.5, **SMALL)
    loaded = SimulatedSeries.load(tmp_path)
    assert loaded.object_specs == s.object_specs and loaded.empty_specs == s.empty_specs
    assert loaded.params == s.params
    np.testing.assert_array_equal(loaded.object_wave, s.object_wave)
    np.testing.assert_array_equal(loaded.drift_px, s.drift_px)


def test_expected_wave_and_phase_error(tmp_path):
    s = simulate_series(tmp_path, **SMALL)
    expected = s.expected_wave()
    assert expected.shape == (32, 32)
    # the output grid samples the wave every 128/32 px: a band-limited wave is reproduced there
    np.testing.assert_allclose(expected, s.object_wave[::4, ::4], atol=1e-6)
    roi = [16, 8, 112, 104]
    # a crop is not periodic: the resampled ROI matches away from its edges
    np.testing.assert_allclose(s.expected_wave(48, roi=roi)[8:-8, 8:-8], s.object_wave[8:104:2, 16:112:2][8:-8, 8:-8], atol=2e-3)
    assert s.phase_error_rad(expected) < 1e-9
    assert s.phase_error_rad(expected * np.exp(1.3j) * 0.5) < 1e-9  # one global phase, any scale
    assert s.phase_error_rad(np.conj(expected)) > 0.3
    ramp = np.exp(0.2j * np.arange(32)).reshape(1, -1)
    assert s.phase_error_rad(expected * ramp) > 0.3
    with pytest.raises(ParameterError, match="roi"):
        s.expected_wave(roi=[0, 0, 200, 200])


def test_kernels_against_direct_formulas():
    # 300 kV: 1.9687 pm
    assert electron_wavelength_nm(300.0) == pytest.approx(1.96875e-3, rel=1e-4)
    assert electron_wavelength_nm(200.0) == pytest.approx(2.50793e-3, rel=1e-4)
    mtf = detector_mtf((8, 8), [["GAUSSIAN", 0.5, 4.0], ["CONSTANT", 0.5]])
    q = np.fft.fftfreq(8)
    assert mtf[0, 0] == pytest.approx(1.0)
    assert mtf[0, 2] == pytest.approx((0.5 * np.exp(-4.0 * q[2] ** 2) + 0.5) * np.sinc(q[2]))
    x = np.arange(16)
    image = (1 + 0.3 * np.exp(2j * np.pi * 3 * x / 16) - 0.2j * np.cos(2 * np.pi * 5 * x / 16)).reshape(1, -1) * np.ones((16, 1))
    np.testing.assert_allclose(fourier_resample(fourier_resample(image, (32, 32)), (16, 16)), image, atol=1e-12)
    with pytest.raises(ParameterError, match="mtf"):
        detector_mtf((4, 4), [["BOGUS", 1.0]])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n_frames=0), "n_frames"),
        (dict(fringe_contrast=1.5), "fringe_contrast"),
        (dict(file_format="tiff"), "file_format"),
        (dict(carrier_px=(2, 1)), "carrier_px"),
        (dict(dose_e_per_px=-1.0), "dose_e_per_px"),
        (dict(object_size_px=1000), "object_size_px"),
        (dict(drift_step_px=30.0), "drift_step_px"),
        (dict(roi_margin_px=100), "roi_margin_px"),
    ],
)
def test_bad_arguments_name_the_parameter(tmp_path, kwargs, name):
    with pytest.raises(ParameterError, match=name):
        simulate_series(tmp_path, **kwargs)


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def test_cli_writes_the_series_and_says_where(tmp_path, capsys):
    outdir = tmp_path / "sim"
    code = main(["simulate", str(outdir), "--frames", "2", "--size", "64", "--object-size", "16", "--dose", "30",
                 "--hot-pixels", "2", "--mtf", "--no-empty", "--seed", "9"])
    assert code == 0
    out = capsys.readouterr().out
    assert str(outdir / "params.json") in out and str(outdir / "truth.npz") in out
    s = SimulatedSeries.load(outdir)
    assert s.n_frames == 2 and s.empty_specs == []
    assert s.params["mtf"] == DEFAULT_MTF
    assert int(s.truth["seed"]) == 9 and s.truth["hot_pixels_xy"].shape == (2, 2)
    assert read_hologram(s.object_specs[0]).shape == (64, 64)


def test_cli_bad_input_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "holodask", "simulate", str(tmp_path / "x"), "--frames", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "holodask: error: n_frames: expected at least 1 frame, got 0"
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "holodask", "simulate", str(blocker)], capture_output=True, text=True)
    assert proc.returncode == 1 and "outdir" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------
# the reference program as oracle
# --------------------------------------------------------------------------


def run_reference(series: SimulatedSeries, params: dict | None = None):
    pytest.importorskip("holoaverage")
    path = series.params_path
    if params is not None:
        path = series.outdir / "params_test.json"
        path.write_text(json.dumps(params))
    proc = subprocess.run([sys.executable, "-m", "holoaverage", str(path)], capture_output=True, text=True, cwd=series.outdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = series.outdir / (params or series.params)["output_name"]
    with h5py.File(output, "r") as f:
        return f["data"][...], dict(f["data"].attrs)


@pytest.mark.reference
def test_reference_reconstructs_the_truth_without_drift(tmp_path):
    s = simulate_series(tmp_path, n_frames=4, seed=11)
    wave, _ = run_reference(s)
    assert wave.shape == (64, 64)
    assert s.phase_error_rad(wave) < 0.05
    assert s.phase_error_rad(np.conj(wave)) > 0.3  # the sign matters


@pytest.mark.reference
def test_reference_reconstructs_a_focal_series_with_the_right_defocus_sign(tmp_path):
    s = simulate_series(tmp_path, n_frames=4, seed=12, defocus_first_nm=-6000.0, defocus_step_nm=4000.0)
    assert s.params["adjust_defocus"] is True
    wave, attrs = run_reference(s)
    assert s.phase_error_rad(wave) < 0.05
    # the defocus fit keeps the given defocus: the frames are where the parameters say
    np.testing.assert_allclose(attrs["defocus(nm)"], s.defocus_nm, atol=5.0)
    # given the opposite sign, the fit finds the simulated defocus steps from the data
    flipped = dict(s.params, defocus_first=6000.0, defocus_step=-4000.0, output_name="flipped.hdf5")
    _, attrs = run_reference(s, flipped)
    np.testing.assert_allclose(np.diff(attrs["defocus(nm)"]), np.diff(s.defocus_nm), atol=400.0)


@pytest.mark.reference
def test_reference_reconstructs_a_drifting_series_with_raw_alignment(tmp_path):
    s = simulate_series(tmp_path, n_frames=4, seed=13, drift_step_px=3.0)
    assert np.abs(s.drift_px).max() > 2.0  # more than the fine fit alone would follow
    assert s.params.get("enable_raw_alignment", True)
    wave, _ = run_reference(s)
    assert s.phase_error_rad(wave) < 0.05


def test_support_film_texture_lets_raw_alignment_follow_the_drift(tmp_path):
    """With an amorphous-film texture the raw alignment of noisy holograms follows the drift;
    on the bare particles the phase correlation of noisy holograms does not."""
    from holodask.params import load_parameters
    from holodask.pipeline import run as run_pipeline

    correlation = {}
    for texture in (0.0, 0.2):
        sim = simulate_series(tmp_path / str(texture), n_frames=8, size_px=256, object_size_px=64,
                              dose_e_per_px=2000.0, drift_step_px=2.0, seed=4, texture_contrast=texture)
        result = run_pipeline(load_parameters(sim.params_path))
        raw = np.asarray(result["raw_shift_px"].values, dtype=float)
        drift = np.load(sim.truth_path)["drift_px"]
        # the ROI moves against the specimen drift (in whole pixels, rounded pair by pair)
        correlation[texture] = np.corrcoef(raw.ravel(), -drift.ravel())[0, 1]
    assert correlation[0.2] > 0.9 and correlation[0.0] < 0.5, correlation


def test_texture_keeps_the_other_random_streams(tmp_path):
    plain = simulate_series(tmp_path / "a", n_frames=3, size_px=128, object_size_px=32, drift_step_px=1.0, seed=4)
    textured = simulate_series(tmp_path / "b", n_frames=3, size_px=128, object_size_px=32, drift_step_px=1.0,
                               seed=4, texture_contrast=0.1)
    a, b = np.load(plain.truth_path), np.load(textured.truth_path)
    np.testing.assert_array_equal(a["drift_px"], b["drift_px"])
    assert not np.allclose(a["object_wave"], b["object_wave"])
