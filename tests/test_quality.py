"""What a microscopist reads off a run: the sideband found and checked, quality per hologram,
outlying holograms rejected on request."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import holodask
from holodask.cli import main
from holodask.io.holo_hdf5 import read_complex
from holodask.optics import fourier_rescale
from simulated import simulated_params


def _series(folder: Path, **kwargs):
    defaults = {"n_frames": 6, "size_px": 256, "object_size_px": 64, "seed": 5, "dose_e_per_px": 300.0,
                "drift_step_px": 1.0}
    return simulated_params(folder, defaults, **kwargs)


def _run(folder: Path, params: dict, name: str, *args) -> int:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(dict(params, output_name=f"{name}.hdf5")))
    return main(["run", str(path), *args])


def _data(path: Path):
    with h5py.File(path, "r") as f:
        return read_complex(f["data"]), dict(f["data"].attrs)


def _phase_rms(a, b) -> float:
    size = a.shape[0]
    inner = (slice(size // 4, size - size // 4),) * 2
    d = np.angle(a * np.conj(b))[inner]
    d = np.angle(np.exp(1j * (d - np.angle(np.mean(np.exp(1j * d))))))
    return float(np.sqrt(np.mean(d**2)))


# ------------------------------------------------------------------ the sideband


def test_a_missing_sideband_pos_is_found_reported_and_gives_the_conjugate_of_the_lower_one(tmp_path, caplog):
    series, params = _series(tmp_path)
    assert _run(tmp_path, params, "explicit") == 0
    found = {k: v for k, v in params.items() if k != "sideband_pos"}
    with caplog.at_level("WARNING", logger="holodask"):
        assert _run(tmp_path, found, "found") == 0
    message = next(r.getMessage() for r in caplog.records if "sideband_pos found" in r.getMessage())
    explicit, _ = _data(tmp_path / "explicit.hdf5")
    automatic, attrs = _data(tmp_path / "found.hdf5")
    # the simulator's sideband is the lower one: the one found is its conjugate
    truth = np.asarray(series.sideband_pos, dtype=float)
    position = np.asarray(attrs["sideband_pos_found"])
    assert np.hypot(*(position - (256 - truth))) <= 1.5
    assert "upper sideband" in message and "conjugate" in message and f"{attrs['sideband_confidence']:.2f}" in message
    assert attrs["sideband_confidence"] > 0.8
    assert json.loads(attrs["holoaverage_param"])["sideband_pos"] == pytest.approx(position.tolist())
    assert _phase_rms(automatic, np.conj(explicit)) < 0.02
    assert _phase_rms(automatic, explicit) > 0.1  # (not the same wave: the conjugate)


def test_the_lower_sideband_is_said_to_give_the_conjugate(tmp_path, caplog):
    _, params = _series(tmp_path, n_frames=2)
    with caplog.at_level("INFO", logger="holodask"):
        assert _run(tmp_path, params, "lower") == 0
    assert any("lower sideband" in r.getMessage() and "conjugate" in r.getMessage() for r in caplog.records)
    upper = dict(params, sideband_pos=[256 - params["sideband_pos"][0], 256 - params["sideband_pos"][1]])
    caplog.clear()
    with caplog.at_level("INFO", logger="holodask"):
        assert _run(tmp_path, upper, "upper") == 0
    assert not any("lower sideband" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("change, names", [
    ({"sideband_pos": [128, 128]}, ("sideband_pos", "centre band")),
    ({"sideband_pos": [128.4, 127.7]}, ("sideband_pos", "centre band")),
    ({"cut_off": 0.3}, ("cut_off", "overlaps the centre band")),
])
def test_the_centre_band_and_masks_reaching_it_are_refused(tmp_path, capsys, change, names):
    _, params = _series(tmp_path, n_frames=2)
    assert _run(tmp_path, dict(params, **change, object_size=128), "bad") == 1
    err = capsys.readouterr().err
    assert all(name in err for name in names) and "Traceback" not in err
    assert not (tmp_path / "bad.hdf5").exists()


def test_no_fringes_and_no_sideband_pos_is_an_error(tmp_path, capsys):
    series, params = _series(tmp_path, n_frames=2)
    rng = np.random.default_rng(0)
    for spec in series.object_specs:  # counts without fringes: noise of the same mean
        with h5py.File(spec.split("?")[0], "r+") as f:
            f["hologram"][...] = rng.poisson(float(f["hologram"][...].mean()), f["hologram"].shape)
    found = {k: v for k, v in params.items() if k != "sideband_pos"}
    assert _run(tmp_path, found, "none") == 1
    err = capsys.readouterr().err
    assert "sideband_pos" in err and "no sideband found" in err and "Traceback" not in err
    assert not (tmp_path / "none.hdf5").exists()


# ------------------------------------------------------------------ quality per hologram


def test_quality_per_hologram_follows_the_simulation(tmp_path):
    series, params = _series(tmp_path, n_frames=8, contrast_jitter=0.1, carrier_drift_px=0.5, seed=2)
    assert _run(tmp_path, params, "run") == 0
    result = holodask.open_result(tmp_path / "run.hdf5")
    np.testing.assert_allclose(result.fringe_contrast.values, series.fringe_contrast, atol=0.03)
    assert np.ptp(series.fringe_contrast) > 0.05  # the contrast did change along the series
    drift = result.sideband_shift_px.values - result.sideband_shift_px.values[0]
    truth = series.carrier_px - series.carrier_px[0]
    # the sideband's drift (x, y) in pixels of the camera's transform (the simulator's sideband_pos is the
    # centre plus its carrier)
    assert np.abs(truth).max() > 1.0
    np.testing.assert_allclose(drift, truth, atol=0.4)
    # the shot-noise estimate against the phase error of the first hologram alone (dose in electrons)
    p = holodask.load_parameters(dict(params))
    wave = holodask.reconstruct(holodask.open_series(series.object_specs[:1]), p,
                                empty=holodask.open_series(series.empty_specs)).values[0]
    left, top, right, bottom = params["roi"]
    truth_wave = fourier_rescale(series.object_wave[top:bottom, left:right].astype(np.complex64), wave.shape)
    error = _phase_rms(wave, truth_wave)
    assert result.phase_noise_rad.values[0] == pytest.approx(error, rel=0.3)
    with h5py.File(tmp_path / "run.hdf5", "r") as f:
        for key in ("fringe_contrast", "sideband_shift(px)", "phase_noise(rad)"):
            assert len(f["data"].attrs[key]) == 8, key


def test_show_draws_the_quality(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    _, params = _series(tmp_path, n_frames=4)
    assert _run(tmp_path, params, "run") == 0
    figure = holodask.open_result(tmp_path / "run.hdf5").holo.plot()
    titles = [ax.get_title() for ax in figure.axes]
    assert {"fringe contrast", "sideband drift", "phase noise (shot noise)"} <= set(titles)


def test_reject_outliers_drops_a_hologram_without_contrast_and_says_so(tmp_path, caplog):
    series, params = _series(tmp_path, n_frames=8, seed=7)
    spec = Path(series.object_specs[3].split("?")[0])
    with h5py.File(spec, "r+") as f:  # hologram 3: a tenth of the fringe contrast
        frame = f["hologram"][...].astype(np.float64)
        f["hologram"][...] = np.round(frame + 9 * frame.mean()).astype(f["hologram"].dtype)
    with caplog.at_level("WARNING", logger="holodask"):
        assert _run(tmp_path, dict(params, reject_outliers=5), "rejected") == 0
    message = next(r.getMessage() for r in caplog.records if "rejected" in r.getMessage())
    assert "frame 3 (fringe contrast" in message
    result = holodask.open_result(tmp_path / "rejected.hdf5")
    assert 3 not in result.frame.values and result.sizes["frame"] == 7
    np.testing.assert_array_equal(result.attrs["rejected_frames"], [3])
    assert _run(tmp_path, params, "kept") == 0  # off by default: every hologram averaged
    assert holodask.open_result(tmp_path / "kept.hdf5").sizes["frame"] == 8
