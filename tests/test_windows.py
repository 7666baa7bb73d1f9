"""Window averages along a series (issue 21): registered windows on a time axis, the
layout, the log, weights, and the errors.

The series are simulated with drift and biprism phase jitter, so that the windows
differ (position and global phase) before they are registered.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

import holodask
from holodask.align import aligned_spectrum, alignment_grid
from holodask.cli import main
from holodask.errors import ParameterError
from holodask.stages.windows import compose_states, plan_windows, registered_spectrum
from simulated import simulated_params

N_FRAMES, WINDOW = 24, 8
#: the simulated series: drift (1 px per frame), biprism jitter, a support-film texture for the raw alignment
BASE = {"n_frames": N_FRAMES, "size_px": 128, "object_size_px": 64, "dose_e_per_px": 400.0, "drift_step_px": 1.0,
        "biprism_phase_jitter_rad": 0.5, "texture_contrast": 0.1}
#: a region of the averaged wave (px) where the simulated object hardly changes (beside the particles)
QUIET_REGION = [2, 40, 24, 62]


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    folder = tmp_path_factory.mktemp("static")
    return simulated_params(folder, BASE, seed=5)


@pytest.fixture(scope="module")
def changing(tmp_path_factory):
    """The object's phase grows by 2 % per frame (46 % over the series)."""
    folder = tmp_path_factory.mktemp("changing")
    return simulated_params(folder, BASE, seed=7, object_change_rate=0.02)


def _in_memory(params: dict, **extra):
    return holodask.run({**params, "output_name": None, **extra})


def _inner(ny: int):
    m = ny // 4
    return (slice(m, ny - m), slice(m, ny - m))


def _rms_phase(a, b, inner) -> float:
    """RMS phase difference of two waves over ``inner``, nothing removed (no registration)."""
    return float(np.sqrt(np.mean(np.angle(a[inner] * np.conj(b[inner])) ** 2)))


def _waves(series, params):
    p = holodask.load_parameters(dict(params))
    return holodask.reconstruct(holodask.open_series(series.object_specs, params=p), params=p,
                                empty=holodask.open_series(series.empty_specs, params=p))


# ------------------------------------------------------------------ the windows


def test_windows_of_a_series():
    windows = plan_windows(24, 8)
    assert windows.starts == (0, 8, 16) and windows.left_out == []
    sliding = plan_windows(24, 8, 4)
    assert sliding.starts == (0, 4, 8, 12, 16) and sliding.positions(1) == list(range(4, 12))
    assert list(sliding.first_window_of()[[0, 3, 8, 12, 23]]) == [0, 0, 1, 2, 4]
    partial = plan_windows(26, 8)  # a last window that would run past the end is left out
    assert partial.starts == (0, 8, 16) and partial.left_out == [24, 25]
    gaps = plan_windows(24, 4, 8)  # step > window: the holograms between windows are left out
    assert gaps.starts == (0, 8, 16) and gaps.left_out == [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23]
    assert plan_windows(8, 8).starts == (0,)


def test_registration_states_compose():
    """A hologram's state against its window's average, composed with the window's registration,
    moves it onto the reference as the two moves one after the other do."""
    from waves import smooth_wave

    grid = alignment_grid((64, 64), (0.5, 0.5), 300.0)
    wave = smooth_wave(64, seed=4).astype(np.complex64)
    state = np.array([0.9, 0.3, 0.41, -0.73, 0.0, 0.0, 12.0])
    registration = np.array([1.02, -0.2, -0.35, 0.62, 0.0, 0.0, -5.0])
    composed = compose_states(state[np.newaxis], registration)[0]
    one_after_the_other = registered_spectrum(aligned_spectrum(wave, state, grid), registration, grid)
    np.testing.assert_allclose(aligned_spectrum(wave, composed, grid), one_after_the_other,
                               atol=2e-4 * np.abs(one_after_the_other).max())
    # a tilt, no defocus step: the same away from the border that the shifts wrap around (whole pixels:
    # a sub-pixel Fourier shift of the ramp, which is not periodic, rings differently in one move and in two)
    frame_state = np.array([0.9, 0.3, 1.0, -1.5, 0.004, 0.009, 0.0])
    tilted = np.array([1.02, -0.2, -0.5, 2.0, 0.011, -0.007, 0.0])
    composed = compose_states(frame_state[np.newaxis], tilted)[0]
    one_after_the_other = np.fft.ifft2(registered_spectrum(aligned_spectrum(wave, frame_state, grid), tilted, grid))
    at_once = np.fft.ifft2(aligned_spectrum(wave, composed, grid))
    np.testing.assert_allclose(at_once[grid.inner], one_after_the_other[grid.inner], atol=1e-4)


def test_static_windows_agree_within_noise_without_registration_by_the_test(static):
    series, params = static
    plain = _in_memory(params)
    result = _in_memory(params, window=WINDOW)
    data = result["data"].values
    assert data.shape == (3, 64, 64) and result["variance"].shape == (3, 64, 64)
    inner = _inner(64)
    errors = [series.phase_error_rad(data[w]) for w in range(3)]  # each window against the truth (noise)
    assert max(errors) < 0.03
    for w in (1, 2):
        expected = np.hypot(errors[0], errors[w])  # the difference of two windows' independent noise
        difference = _rms_phase(data[w], data[0], inner)
        assert difference < 1.3 * expected, (w, difference, expected)
        # and no global phase left between them
        assert abs(np.angle(np.mean(data[w][inner] * np.conj(data[0][inner])))) < 0.01
    # registration mattered: the drift moved the windows by pixels, the jitter turned their phase
    assert np.abs(result["window_shift_nm"].values).max() > 1.0
    unregistered = holodask.average(_waves(series, params).isel(frame=slice(WINDOW, 2 * WINDOW)))["data"].values
    assert _rms_phase(unregistered, data[0], inner) > 5 * _rms_phase(data[1], data[0], inner)
    # the first window is the reference: the average of its holograms, untouched (the same numbers up to the
    # rounding of float32 sums, which the windows' tasks group otherwise)
    first = holodask.average(_waves(series, params).isel(frame=slice(0, WINDOW)))
    np.testing.assert_allclose(data[0], first["data"].values, rtol=0, atol=2e-6)
    np.testing.assert_allclose(result["variance"].values[0], first["variance"].values, rtol=2e-5)
    # every hologram's fit, moved into the reference, is the plain average's (within the windows' noise)
    np.testing.assert_allclose(result["shift_nm"].values, plain["shift_nm"].values, atol=0.05)
    assert np.abs(np.angle(result["factor"].values * np.conj(plain["factor"].values))).max() < 0.02
    # a window of the whole series is the plain average itself
    whole = _in_memory(params, window=N_FRAMES)
    np.testing.assert_array_equal(whole["data"].values[0], plain["data"].values)
    np.testing.assert_array_equal(whole["variance"].values[0], plain["variance"].values)


def test_registered_variance_is_that_of_the_holograms_moved_into_the_reference(static):
    series, params = static
    result = _in_memory(params, window=WINDOW, output_series=True)
    frames = result["series"].values
    grid = alignment_grid((64, 64), (result.attrs["sampling_nm"],) * 2, 300.0)
    for w in (0, 2):
        members = range(w * WINDOW, (w + 1) * WINDOW)
        states = np.array([[result["factor"].values[k].real, result["factor"].values[k].imag,
                            *result["shift_nm"].values[k][::-1], *result["tilt_per_nm"].values[k][::-1],
                            result["defocus_nm"].values[k]] for k in members])
        moved = np.array([np.fft.ifft2(aligned_spectrum(frames[k], s, grid)) for k, s in zip(members, states)])
        expected = np.sum(np.abs(moved - result["data"].values[w]) ** 2, axis=0) / (WINDOW - 1)
        np.testing.assert_allclose(result["variance"].values[w], expected, rtol=2e-3,
                                   atol=2e-3 * expected.mean())


def test_changing_object_each_window_follows_the_truth_of_its_time_span(changing):
    series, params = changing
    result = _in_memory(params, window=WINDOW)
    data = result["data"].values
    inner = _inner(64)
    spans = [range(w * WINDOW, (w + 1) * WINDOW) for w in range(3)]
    truths = [series.expected_wave(frames=span) for span in spans]
    own = [series.phase_error_rad(data[w], frames=spans[w]) for w in range(3)]  # its own span's truth
    start = [series.phase_error_rad(data[w], frames=spans[0]) for w in range(3)]  # the first span's truth
    change = [_rms_phase(truths[w], truths[0], inner) for w in range(3)]
    assert change[1] > 0.12 and change[2] > 0.25  # the object really changes
    for w in (1, 2):
        assert own[w] < 0.06, own  # the noise of a window (window 0: 0.033)
        assert own[w] < 0.4 * change[w], (own, change)  # far below the change since the start ...
        assert start[w] > 1.5 * own[w], (own, start)  # ... which the window shows: not the start
    # referred to one region beside the changing particles, one global phase fits every window
    referred = _in_memory(params, window=WINDOW, window_phase_roi=QUIET_REGION)["data"].values
    assert np.array_equal(referred[0], data[0])
    offset = np.angle(np.sum(referred[0][inner] * np.conj(truths[0][inner])))
    for w in range(3):
        common = _rms_phase(referred[w] * np.exp(-1j * offset), truths[w], inner)
        assert common < own[w] + 0.015, (w, common, own[w])
    # without it the window's global phase takes up part of the (uniform) change
    free_offset = np.angle(np.mean(data[2][inner] * np.conj(truths[2][inner]) * np.exp(-1j * offset)))
    referred_offset = np.angle(np.mean(referred[2][inner] * np.conj(truths[2][inner]) * np.exp(-1j * offset)))
    assert abs(referred_offset) < 0.5 * abs(free_offset)


def test_each_hologram_is_reconstructed_once_whatever_the_overlap(static, monkeypatch):
    from holodask.stages import reconstruction

    series, params = static
    calls, lock = [], threading.Lock()
    original = reconstruction._reconstruct_frame

    def counting(block, shifts, k, *args):
        with lock:
            calls.append(k)
        return original(block, shifts, k, *args)

    monkeypatch.setattr(reconstruction, "_reconstruct_frame", counting)
    result = _in_memory(params, window=WINDOW, window_step=2)
    assert result.sizes["window"] == 9
    assert sorted(calls) == list(range(N_FRAMES))


# ------------------------------------------------------------------ the file, open_result, the time axis


def _write_params(folder: Path, params: dict, name: str, **extra) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({**params, **extra}))
    return path


def test_output_layout_prefix_and_open_result(static, tmp_path):
    series, params = static
    output = tmp_path / "result.hdf5"
    assert main(["run", str(_write_params(tmp_path, params, "plain", output_name=str(output)))]) == 0
    assert main(["run", str(_write_params(tmp_path, params, "other", output_name=str(output),
                                          output_prefix="other/"))]) == 0
    with h5py.File(output, "r") as f:
        before = {name: f[name][()] for name in ("data", "variance", "other/data")}
    log = tmp_path / "log.csv"
    log.write_text("# holder log\ntime,temperature_C,bias_V\n0,20,0\n23,250,2.3\n")
    assert main(["run", str(_write_params(tmp_path, params, "win", output_name=str(output), output_prefix="win/")),
                 "--window", "8", "--log", str(log)]) == 0
    with h5py.File(output, "r") as f:
        for name, values in before.items():  # the other prefixes untouched
            np.testing.assert_array_equal(f[name][()], values)
        assert sorted(f["win"]) == ["data", "empty", "variance"]
        data, variance = f["win/data"], f["win/variance"]
        kind = data.id.get_type()
        assert data.shape == (3, 64, 64) and isinstance(kind, h5py.h5t.TypeCompoundID)
        assert [kind.get_member_name(k) for k in range(2)] == [b"r", b"i"] and kind.get_size() == 8
        assert variance.shape == (3, 64, 64) and variance.dtype == np.float32
        attrs = data.attrs
        np.testing.assert_array_equal(attrs["window_first_frame"], [0, 8, 16])
        np.testing.assert_array_equal(attrs["window_last_frame"], [7, 15, 23])
        np.testing.assert_allclose(attrs["window_time"], [3.5, 11.5, 19.5])
        assert attrs["window_time_unit"] == "frame" and "window_time_s" not in attrs  # HDF5 files carry no times
        assert int(attrs["window_size"]) == 8 and int(attrs["window_step"]) == 8
        assert attrs["window_shift(nm)"].shape == (3, 2) and attrs["window_factor"].shape == (3,)
        assert attrs["window_convergence"].shape == (3, 8)
        assert list(attrs["window_log_columns"]) == ["temperature_C", "bias_V"]
        np.testing.assert_allclose(attrs["window_log"], [[55, 0.35], [135, 1.15], [215, 1.95]])
        assert attrs["shift(nm)"].shape == (N_FRAMES, 2) and attrs["frame_index"].shape == (N_FRAMES,)
        assert json.loads(attrs["holoaverage_param"])["window"] == 8
        assert set(variance.attrs) == set(attrs)
    result = holodask.open_result(output, "win/")
    assert result["data"].dims == ("window", "y", "x") and result["variance"].dims == ("window", "y", "x")
    np.testing.assert_array_equal(result["window"].values, [0, 1, 2])
    np.testing.assert_allclose(result["time"].values, [3.5, 11.5, 19.5])
    assert result["time"].attrs["units"] == "frame"
    np.testing.assert_allclose(result["temperature_C"].values, [55, 135, 215])
    assert result["window_shift_nm"].dims == ("window", "xy") and result["convergence"].dims == ("window", "iteration")
    memory = _in_memory(params, window=8)
    np.testing.assert_allclose(result["data"].values, memory["data"].values, atol=1e-6)
    np.testing.assert_allclose(result["window_shift_nm"].values, memory["window_shift_nm"].values, atol=1e-9)
    # a plain run into the same prefix replaces the windows (no 3-D data left behind)
    assert main(["run", str(_write_params(tmp_path, params, "again", output_name=str(output),
                                          output_prefix="win/"))]) == 0
    with h5py.File(output, "r") as f:
        assert f["win/data"].shape == (64, 64) and "window_first_frame" not in f["win/data"].attrs


def test_acquisition_times_make_the_time_axis_and_meet_the_log(static, tmp_path):
    series, params = static
    start = 1_716_370_000.0
    waves = _waves(series, params).assign_coords(time_s=("frame", start + 2.5 * np.arange(N_FRAMES)))
    log = tmp_path / "holder.csv"  # on the holograms' clock; one reading a minute
    log.write_text("time_s;temperature_C\n" + "".join(f"{start - 30 + 60 * k};{25 + 10 * k}\n" for k in range(3)))
    result = holodask.average(waves, window=WINDOW, step=4, window_log=str(log))
    np.testing.assert_allclose(result["time"].values, 2.5 * np.array([3.5, 7.5, 11.5, 15.5, 19.5]))
    assert result["time"].attrs["units"] == "s"
    np.testing.assert_allclose(result["window_time_s"].values, start + result["time"].values)
    np.testing.assert_allclose(result["temperature_C"].values, 25 + 10 * (result["time"].values + 30) / 60)
    # a log on the relative clock, partly outside: NaN there, with a warning
    relative = tmp_path / "relative.csv"
    relative.write_text("time\tbias_V\n0\t0\n30\t3\n")
    with pytest.warns(UserWarning, match="windows 3, 4 lie outside"):  # at 38.75 and 48.75 s
        biased = holodask.average(waves, window=WINDOW, step=4, window_log=str(relative))
    np.testing.assert_allclose(biased["bias_V"].values[:3], result["time"].values[:3] / 10)
    assert np.isnan(biased["bias_V"].values[3:]).all()


def test_weights_of_one_give_the_unweighted_numbers_bit_for_bit(static, tmp_path):
    series, params = static
    waves = holodask.hold(_waves(series, params))
    plain = holodask.average(waves)
    ones = holodask.average(waves, weights=np.ones(N_FRAMES))
    for name in ("data", "variance", "shift_nm", "factor", "error", "convergence"):
        np.testing.assert_array_equal(ones[name].values, plain[name].values, err_msg=name)
    windows = holodask.average(waves, window=WINDOW)
    weighted_windows = holodask.average(waves, window=WINDOW, weights=[2.0] * N_FRAMES)
    np.testing.assert_array_equal(weighted_windows["data"].values, windows["data"].values)
    # a weight of 0 leaves a hologram out, as if it were not in the stack
    quality = np.ones(N_FRAMES)
    quality[[0, 5]] = 0.0
    left_out = holodask.average(waves.assign_coords(quality=("frame", quality)), weights="quality")
    subset = holodask.average(waves.isel(frame=[k for k in range(N_FRAMES) if k not in (0, 5)]))
    # (the average sits where its first hologram of positive weight is: frame 1, as the subset's)
    scale = np.abs(subset["data"].values).mean()
    np.testing.assert_allclose(left_out["data"].values, subset["data"].values, atol=1e-5 * scale)
    np.testing.assert_allclose(left_out["variance"].values, subset["variance"].values, rtol=1e-4,
                               atol=1e-5 * subset["variance"].values.mean())
    np.testing.assert_array_equal(left_out["weight"].values, quality)
    # weights from a file, in a run: recorded per hologram
    (tmp_path / "w.txt").write_text("# one per hologram\n" + "\n".join(["1"] * 12 + ["3"] * 12) + "\n")
    output = tmp_path / "weighted.hdf5"
    assert main(["run", str(_write_params(tmp_path, params, "weighted", output_name=str(output),
                                          weights=str(tmp_path / "w.txt")))]) == 0
    written = holodask.open_result(output)
    np.testing.assert_array_equal(written["weight"].values, [1.0] * 12 + [3.0] * 12)
    assert not np.allclose(written["data"].values, plain["data"].values, atol=1e-4)


def test_windows_with_the_stack_in_a_zarr_store_give_the_same_numbers(static, tmp_path, caplog):
    series, params = static
    outputs = []
    for name, extra in (("memory", []), ("budget", ["--memory-limit", "50kB"])):
        output = tmp_path / f"{name}.hdf5"
        assert main(["run", str(_write_params(tmp_path, params, name, output_name=str(output))),
                     "--window", "8", "--step", "4", *extra]) == 0
        outputs.append(holodask.open_result(output)["data"].values)
    assert "Zarr store" in caplog.text
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_windows_on_a_distributed_cluster_are_those_of_threads(static):
    distributed = pytest.importorskip("distributed")
    series, params = static
    local = _in_memory(params, window=WINDOW)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0") as client:
        remote = holodask.run({**params, "output_name": None, "window": WINDOW}, client=client)
    np.testing.assert_allclose(remote["data"].values, local["data"].values, atol=1e-5)
    np.testing.assert_allclose(remote["window_shift_nm"].values, local["window_shift_nm"].values, atol=1e-6)


# ------------------------------------------------------------------ show and export


def test_show_draws_a_strip_and_a_gif_and_export_writes_a_qpseries(static, tmp_path, capsys):
    series, params = static
    output = tmp_path / "win.hdf5"
    assert main(["run", str(_write_params(tmp_path, params, "win", output_name=str(output), window=WINDOW))]) == 0
    png, gif = tmp_path / "strip.png", tmp_path / "windows.gif"
    assert main(["show", str(output), "--png", str(png), "--gif", str(gif)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 3
    qp = tmp_path / "windows_qp.h5"
    assert main(["export", str(output), "--qpimage", str(qp)]) == 0
    with h5py.File(qp, "r") as f:
        assert sorted(f) == ["qpi_0", "qpi_1", "qpi_2"]
        phase = f["qpi_1/phase/raw"][()]
        assert phase.shape == (64, 64) and f["qpi_1"].attrs["identifier"].endswith("data:window:1")
    wave = holodask.open_result(output)["data"].values[1]
    inner = _inner(64)
    difference = np.angle(np.exp(1j * (phase[inner] - np.angle(wave[inner]))))
    assert np.abs(difference - np.mean(difference)).max() < 1e-4  # the window's phase (unwrapped: up to 2 pi k)
    # a plain result has no windows to animate
    plain = tmp_path / "plain.hdf5"
    assert main(["run", str(_write_params(tmp_path, params, "plain", output_name=str(plain)))]) == 0
    assert main(["show", str(plain), "--gif", str(tmp_path / "none.gif")]) == 1
    assert "no window averages" in capsys.readouterr().err


# ------------------------------------------------------------------ bad values


@pytest.mark.parametrize("extra, key", [
    ({"window": 0}, "window"),
    ({"window": 1}, "window"),
    ({"window": 2.5}, "window"),
    ({"window": 25}, "window"),
    ({"window": 8, "window_step": 0}, "window_step"),
    ({"window_step": 4}, "window_step"),
    ({"window": 8, "window_log": "missing.csv"}, "window_log"),
    ({"window": 8, "window_phase_roi": [0, 0, 80, 10]}, "window_phase_roi"),
    ({"weights": [1.0, 2.0]}, "weights"),
    ({"weights": [1.0, -1.0] + [1.0] * 22}, "weights"),
    ({"weights": "no_such_coordinate"}, "weights"),
    ({"weights": "missing.txt"}, "weights"),
])
def test_bad_window_parameters_give_one_error_naming_the_key(static, tmp_path, capsys, extra, key):
    series, params = static
    path = _write_params(tmp_path, params, "bad", output_name=str(tmp_path / "bad.hdf5"), **extra)
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"parameter '{key}'" in err and "Traceback" not in err and err.count("holodask: error:") == 1
    assert not (tmp_path / "bad.hdf5").exists()


def test_bad_logs_are_named_with_their_line(tmp_path):
    from holodask.params import parse_parameters

    cases = {
        "time,temperature\n0,20\n10,abc\n": "line 3, column 'temperature': 'abc' is not a number",
        "time,temperature\n0,20\n0,30\n": "the times must increase",
        "time\n0\n1\n": "has one column",
        "time,a\n0,1\n": "at least two rows",
        "time,a,a\n0,1,2\n1,2,3\n": "named twice",
        "time,a\n0,1\n1,2,3\n": "line 3: 3 cells, expected 2",
    }
    for k, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"log{k}.csv"
        path.write_text(text)
        with pytest.raises(ParameterError, match="parameter 'window_log'") as error:
            parse_parameters({"window": 4, "window_log": str(path)}, partial=True)
        assert message in str(error.value), (text, str(error.value))


def test_a_log_on_the_absolute_clock_needs_acquisition_times(static, tmp_path, capsys):
    series, params = static
    log = tmp_path / "abs.csv"
    log.write_text("time_s,temperature_C\n1716370000,20\n1716370100,30\n")
    path = _write_params(tmp_path, params, "abs", output_name=str(tmp_path / "abs.hdf5"), window=8,
                         window_log=str(log))
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert "parameter 'window_log'" in err and "carry no acquisition times" in err
    far = tmp_path / "far.csv"  # relative clock, but no window within it
    far.write_text("time,temperature_C\n1000,20\n2000,30\n")
    path = _write_params(tmp_path, params, "far", output_name=str(tmp_path / "far.hdf5"), window=8,
                         window_log=str(far))
    assert main(["run", str(path)]) == 1
    assert "no window within it" in capsys.readouterr().err


def test_the_last_partial_window_is_left_out_with_a_warning(static):
    series, params = static
    with pytest.warns(UserWarning, match=r"holograms 20\.\.23 \(4\) are in no window of 10"):
        result = _in_memory(params, window=10)
    assert result.sizes["window"] == 2
    assert np.isnan(result["shift_nm"].values[20:]).all() and np.isfinite(result["shift_nm"].values[:20]).all()
    np.testing.assert_array_equal(result.attrs["hdf5_attrs"]["window_left_out"], [20, 21, 22, 23])


def test_the_insitu_example_configuration_is_valid():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unknown keys
        p = holodask.load_parameters(Path(__file__).resolve().parents[1] / "configs" / "insitu_heating.json")
    assert p.window == 20 and p.window_step == 10 and p.window_phase_roi == (8, 8, 56, 40)
    assert p.window_log.absolute and p.window_log.names == ("temperature_C", "heater_power_mW")
    np.testing.assert_allclose(p.window_log.at([1716370030.0]), [[87.5, 20.75]])
    assert p.window_log.path in p.protected_paths()  # an output may not overwrite it


@pytest.mark.parametrize("extra, key", [({"normalize_vacuum": True}, "normalize_vacuum"),
                                        ({"reject_outliers": 5}, "reject_outliers")])
def test_options_that_do_not_go_with_windows_are_named(tmp_path, capsys, extra, key):
    _, params = simulated_params(tmp_path, {"n_frames": 4, "size_px": 128, "object_size_px": 64, "seed": 1})
    path = tmp_path / "p.json"
    path.write_text(json.dumps(dict(params, window=2, **extra)))
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"parameter '{key}'" in err and "window" in err and "Traceback" not in err
