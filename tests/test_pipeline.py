"""``holodask run`` end to end on simulated series: results, file layout, options, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import h5py
from simulated import simulated_params
from holodask.io import holo_hdf5

from holodask.errors import DataError, HolodaskError, InputFileError, ParameterError  # noqa: E402
from holodask.optics import fourier_rescale  # noqa: E402
from holodask.pipeline import run  # noqa: E402


def _simulate(folder: Path, **kwargs):
    return simulated_params(folder, {"n_frames": 3, "size_px": 128, "object_size_px": 64, "seed": 1}, **kwargs)


def _write(folder: Path, params: dict, name: str = "params.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(params))
    return path


def _phase_error(wave: np.ndarray, series, params: dict) -> float:
    size = int(params["object_size"])
    n = series.object_wave.shape[0]
    left, top, right, bottom = params.get("roi", [0, 0, n, n])
    truth = fourier_rescale(series.object_wave[top:bottom, left:right].astype(np.complex64), (size, size))
    inner = (slice(size // 4, size - size // 4),) * 2
    difference = np.angle(wave * np.conj(truth))[inner]
    difference = np.angle(np.exp(1j * (difference - np.angle(np.mean(np.exp(1j * difference))))))
    return float(np.sqrt(np.mean(difference**2)))


def test_simple_run_writes_the_reference_layout(tmp_path):
    series, params = _simulate(tmp_path)
    result = run(_write(tmp_path, params))
    output = tmp_path / params["output_name"]
    with h5py.File(output, "r") as f:
        assert set(f) == {"data", "empty", "variance"}
        for name in ("data", "empty"):
            stored = f[name].id.get_type()  # compound of float32 r (offset 0) and i (offset 4)
            assert [stored.get_member_name(i) for i in range(stored.get_nmembers())] == [b"r", b"i"]
            assert [stored.get_member_offset(i) for i in range(2)] == [0, 4]
            assert f[name].dtype == np.complex64
        assert f["data"].shape == (64, 64)
        assert f["variance"].dtype == np.float32
        attrs = f["data"].attrs
        for key in ("holoaverage_param", "carrier(nm-1)", "reconstructionMaskType", "roi", "voltage(kV)",
                    "dim_scale", "shift(nm)", "tilt(1/nm)", "defocus(nm)", "factor", "error", "convergence",
                    "raw_shift"):
            assert key in attrs, key
        assert attrs["shift(nm)"].shape == (3, 2)
        assert len(attrs["convergence"]) == 8  # the first round and 7 more
        assert json.loads(attrs["holoaverage_param"])["object_size"] == 64
        np.testing.assert_allclose(attrs["carrier(nm-1)"], [32 / 128 / 0.5, 16 / 128 / 0.5])
        np.testing.assert_allclose(np.ravel(attrs["dim_scale"])[0], 128 * 0.5 / 64)
        data = holo_hdf5.read_complex(f["data"])
    # noise-free: the reconstruction is the simulated object wave
    assert _phase_error(data, series, params) < 1e-3
    assert set(result.data_vars) >= {"data", "empty", "variance"}
    np.testing.assert_allclose(result["data"].values, data, rtol=1e-6)


def test_averaging_sixteen_noisy_holograms_quarters_the_phase_error(tmp_path):
    series, params = _simulate(tmp_path, n_frames=16, dose_e_per_px=400.0, seed=1, n_empty=1)
    params["enable_raw_alignment"] = False  # no drift; on noise alone it finds spurious shifts
    averaged = run(_write(tmp_path, params))["data"].values
    single_params = dict(params, object_last=0, output_name="single.hdf5")
    single = run(_write(tmp_path, single_params, "single.json"))["data"].values
    ratio = _phase_error(averaged, series, params) / _phase_error(single, series, params)
    assert 0.75 * 0.25 <= ratio <= 1.25 * 0.25, ratio


def test_drift_is_followed(tmp_path):
    series, params = _simulate(tmp_path, n_frames=4, drift_step_px=1.5, n_empty=1, texture_contrast=0.1)
    result = run(_write(tmp_path, params))
    # the ROI moves by -raw_shift (integer px); the fine shift s (nm) moves the average onto
    # each frame, so a frame whose object moved by +d px has s = -(d + raw_shift) * sampling
    # (the fixed illumination pattern dominates the raw correlation here: raw_shift stays 0,
    # and the edges of the non-periodic ROI pull the fine shifts towards 0, in the reference too)
    raw = result["raw_shift_px"].values
    found_px = -result["shift_nm"].values / 0.5 - raw
    drift = np.asarray(series.drift_px)
    assert (np.abs(found_px - drift) <= 0.5 * np.abs(drift) + 0.1).all()
    assert np.corrcoef(found_px.ravel(), drift.ravel())[0, 1] > 0.95
    assert _phase_error(result["data"].values, series, params) < 0.1


def test_options_only_align_series_prefix(tmp_path):
    series, params = _simulate(tmp_path, n_frames=3)
    run(_write(tmp_path, dict(params, only_align=True, output_name="align.hdf5")))
    with h5py.File(tmp_path / "align.hdf5", "r") as f:
        assert set(f) == {"aligned_rois"}
        assert sorted(f["aligned_rois"]) == ["000", "001", "002"]
        assert f["aligned_rois/000"].shape == (128, 128)
    run(_write(tmp_path, dict(params, output_series=True, output_aligned=True, output_prefix="a/",
                              output_series_as_dataset=True, output_name="more.hdf5")))
    with h5py.File(tmp_path / "more.hdf5", "r") as f:
        assert set(f["a"]) == {"data", "empty", "variance", "series", "aligned_rois"}
        assert f["a/series"].shape == (3, 64, 64)
        assert f["a/aligned_rois"].shape == (3, 128, 128)
        # the series holds the normalised reconstructions the average was made of
        assert holo_hdf5.read_complex(f["a/series"]).shape == (3, 64, 64)


def test_focal_series_is_brought_to_focus(tmp_path):
    series, params = _simulate(tmp_path, n_frames=3, sampling_nm=0.1, defocus_first_nm=-200.0,
                               defocus_step_nm=200.0, n_empty=1)
    params.update(adjust_defocus=True, enable_raw_alignment=False)
    result = run(_write(tmp_path, params))
    np.testing.assert_allclose(result["defocus_nm"].values, [-200.0, 0.0, 200.0], atol=0.5)
    assert _phase_error(result["data"].values, series, params) < 0.01


def test_single_hologram_is_propagated(tmp_path):
    series, params = _simulate(tmp_path, n_frames=1, sampling_nm=0.1, defocus_first_nm=300.0)
    result = run(_write(tmp_path, params))
    assert "variance" not in result
    assert _phase_error(result["data"].values, series, params) < 0.01


def test_synthesized_empty_equals_empty_of_a_perfect_camera(tmp_path):
    series, params = _simulate(tmp_path, n_frames=2, n_empty=1)
    zeros = np.zeros((128, 128), np.float32)
    with h5py.File(tmp_path / "distortion.hdf5", "w") as f:
        f["x"] = zeros
        f["y"] = zeros
    params.pop("empty_names"), params.pop("empty_first"), params.pop("empty_last")
    params.update(synthesize_empty=True, camera_distortions=["distortion.hdf5?dataset=x", "distortion.hdf5?dataset=y"])
    result = run(_write(tmp_path, params))
    empty = result["empty"].values
    # cos fringes of a perfect camera: a flat wave
    inner = empty[16:48, 16:48]
    assert np.abs(np.angle(inner * np.conj(inner.mean()))).max() < 1e-3


def _expect_error(tmp_path, params, error, match):
    path = _write(tmp_path, dict(params, output_name="bad.hdf5"), "bad.json")
    with pytest.raises(error, match=match):
        run(path)
    assert not (tmp_path / "bad.hdf5").exists()


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"sideband_pos": [200, 10]}, ParameterError, "sideband_pos"),
        ({"roi": [0, 0, 200, 100]}, ParameterError, "roi"),
        ({"roi": [50, 0, 40, 100]}, ParameterError, "roi"),
        ({"object_size": 120, "roi": [0, 0, 100, 100]}, ParameterError, "object_size"),
        ({"cut_off": 0.6}, ParameterError, "cut_off"),
    ],
)
def test_bad_parameters_are_refused_without_output(tmp_path, change, error, match):
    _, params = _simulate(tmp_path, n_frames=2)
    _expect_error(tmp_path, {**params, **change}, error, match)


def test_bad_frames_are_refused_without_output(tmp_path):
    _, params = _simulate(tmp_path, n_frames=3)
    with h5py.File(tmp_path / "object_001.hdf5", "r+") as f:
        data = f["hologram"][...]
        data[5, 7] = np.nan
        f["hologram"][...] = data
    _expect_error(tmp_path, params, DataError, "object_001.hdf5.*NaN")
    (tmp_path / "object_001.hdf5").unlink()
    _expect_error(tmp_path, params, InputFileError, "object_001")


def test_frames_of_different_shapes_are_refused(tmp_path):
    _, params = _simulate(tmp_path, n_frames=2)
    with h5py.File(tmp_path / "object_001.hdf5", "r+") as f:
        del f["hologram"]
        f["hologram"] = np.ones((100, 128), np.float32)
    _expect_error(tmp_path, params, HolodaskError, "shape")


def test_excluding_every_frame_is_refused(tmp_path):
    _, params = _simulate(tmp_path, n_frames=2)
    _expect_error(tmp_path, dict(params, object_exclude=[0, 1]), ParameterError, "object")


def test_saturated_frames_are_named_in_a_warning(tmp_path):
    _, params = _simulate(tmp_path, n_frames=2, dose_e_per_px=100.0)
    with h5py.File(tmp_path / "object_001.hdf5", "r+") as f:
        data = f["hologram"][...]
        data[:20, :] = np.iinfo(data.dtype).max
        f["hologram"][...] = data
    with pytest.warns(UserWarning, match="frames 1 "):
        run(_write(tmp_path, dict(params, enable_raw_alignment=False)))


def test_command_line_run(tmp_path):
    _, params = _simulate(tmp_path, n_frames=2)
    params.pop("output_name")
    path = _write(tmp_path, params, "series.json")
    done = subprocess.run([sys.executable, "-m", "holodask", "run", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "series.hdf5").exists()
    bad = _write(tmp_path, dict(params, sideband_pos=[500, 500]), "bad.json")
    done = subprocess.run([sys.executable, "-m", "holodask", "run", str(bad)], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("holodask: error: sideband_pos") and "Traceback" not in done.stderr
    assert not (tmp_path / "bad.hdf5").exists()


@pytest.mark.parametrize("size, shift", [(32, (0, 0)), (33, (2, -3)), (32, (30, 0))])
def test_constant_empty_shortcut_equals_the_full_normalisation(size, shift):
    from holodask.normalise import ConstantEmpty as _ConstantEmpty, normalise as _normalise

    rng = np.random.default_rng(0)
    wave = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))).astype(np.complex64)
    roi, camera = (10, 12, 58, 60), (80, 80)
    value = 0.37
    fast = _normalise(wave, _ConstantEmpty(value, camera), roi, shift, (size, size))
    full = _normalise(wave, np.full(camera, value, np.complex64), roi, shift, (size, size))
    np.testing.assert_allclose(fast, full, atol=2e-5 * np.abs(full).max())


@pytest.mark.parametrize("roi, shift", [((10, 6, 210, 230), (0, 0)), ((10, 6, 210, 230), (-15, 7)),
                                        ((0, 0, 240, 240), (5, -3))])
def test_normalisation_on_the_double_grid_equals_the_reference_route(roi, shift):
    """Dividing on a grid of twice the output size equals the reference's ROI-size route."""
    from holodask.normalise import (factor_grid as _factor_grid, normalisation_factor as _normalisation_factor,
                                    normalise as _normalise, normalise_with_factor as _normalise_with_factor)

    rng = np.random.default_rng(0)
    camera = (240, 250)
    y, x = np.mgrid[0:camera[0], 0:camera[1]]
    big_empty = ((1 + 0.3 * np.sin(x / 17.0) * np.cos(y / 23.0))
                 * np.exp(1j * (0.8 * np.sin(x / 31.0 + y / 19.0)))).astype(np.complex64)
    out = (64, 64)
    spectrum = np.zeros(out, complex)
    spectrum[:20, :20] = rng.normal(size=(20, 20)) + 1j * rng.normal(size=(20, 20))
    wave = (np.fft.ifft2(np.roll(spectrum, (-10, -10), axis=(0, 1))) * 500 + 1).astype(np.complex64)
    left, top, right, bottom = roi
    grid = _factor_grid((bottom - top, right - left), out)
    assert grid == (128, 128)
    expected = _normalise(wave, big_empty, roi, shift, out)
    got = _normalise_with_factor(wave, _normalisation_factor(big_empty, roi, shift, grid), out)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


def test_command_line_run_on_a_local_cluster_says_little(tmp_path):
    """On a local cluster the command prints the dashboard link and what it was asked
    to, not Dask's own log lines, and writes the same result as with threads."""
    _, params = _simulate(tmp_path, n_frames=3)
    threaded = _write(tmp_path, dict(params, output_name="threads.hdf5"), "threads.json")
    clustered = _write(tmp_path, dict(params, output_name="cluster.hdf5"), "cluster.json")
    assert subprocess.run([sys.executable, "-m", "holodask", "run", str(threaded)], capture_output=True).returncode == 0
    done = subprocess.run([sys.executable, "-m", "holodask", "run", str(clustered), "--cluster", "local",
                           "--workers", "1", "--threads-per-worker", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("holodask: Dask dashboard: http")
    assert not any("nanny" in line.lower() or "scheduler" in line.lower() for line in lines), lines
    with h5py.File(tmp_path / "threads.hdf5") as a, h5py.File(tmp_path / "cluster.hdf5") as b:
        one, two = holo_hdf5.read_complex(a["data"]), holo_hdf5.read_complex(b["data"])
    assert np.abs(one - two).max() <= 1e-5 * np.abs(one).mean()
