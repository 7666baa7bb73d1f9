"""Bounded memory by default, runs that survive a kill (--resume), and the opt-in early stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from holodask import memory
from holodask.cli import main
from holodask.io.holo_hdf5 import read_complex
from simulated import simulated_params

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _series(folder: Path, **kwargs):
    defaults = {"n_frames": 6, "size_px": 128, "object_size_px": 64, "seed": 4, "dose_e_per_px": 300.0,
                "drift_step_px": 1.0}
    return simulated_params(folder, defaults, **kwargs)


def _write(folder: Path, params: dict, name: str) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(dict(params, output_name=f"{name}.hdf5")))
    return path


def _data(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return read_complex(f["data"])


def _attrs(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return dict(f["data"].attrs)


def _holodask(args, cwd, **popen):
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.Popen([sys.executable, "-m", "holodask", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


# ---------------------------------------------------------------------------- the memory budget


def test_a_run_over_its_budget_gives_the_in_memory_numbers(tmp_path):
    _, params = _series(tmp_path)
    assert main(["run", str(_write(tmp_path, params, "memory"))]) == 0
    budgeted = _holodask(["run", _write(tmp_path, params, "budget"), "--memory-limit", "50kB"], tmp_path)
    err = budgeted.communicate(timeout=120)[1]
    assert budgeted.returncode == 0, err
    assert err.count("Zarr store") == 1 and "exceed half of the memory budget (50 kB)" in err
    assert str(tmp_path) in err  # beside the output
    np.testing.assert_array_equal(_data(tmp_path / "budget.hdf5"), _data(tmp_path / "memory.hdf5"))
    assert not list(tmp_path.glob(".holodask-spill-*"))  # removed at the end


def test_the_default_budget_is_what_the_cgroup_and_the_machine_leave(monkeypatch):
    monkeypatch.setattr(memory, "_cgroup_room", lambda: 2 * 10**9)
    monkeypatch.setattr(memory, "_available_system", lambda: 8 * 10**9)
    assert memory.available_memory_bytes() == 2 * 10**9
    assert memory.memory_budget_bytes() == int(2e9 * memory.DEFAULT_MARGIN)
    assert memory.held_budget_bytes() == int(2e9 * memory.DEFAULT_MARGIN * memory.HELD_SHARE)
    monkeypatch.setattr(memory, "_cgroup_room", lambda: None)
    assert memory.memory_budget_bytes() == int(8e9 * memory.DEFAULT_MARGIN)
    from holodask.cluster import compute_context

    with compute_context(memory_limit="3GB"):
        assert memory.memory_budget_bytes() == 3 * 10**9


def test_the_cgroup_limit_is_read(tmp_path, monkeypatch):
    """cgroup v2: the limit of this process's group less what the group uses."""
    group = tmp_path / "sys" / "job"
    group.mkdir(parents=True)
    (group / "memory.max").write_text("4000000000\n")
    (group / "memory.current").write_text("1000000000\n")
    real_path = memory.Path

    def fake(path, *rest):
        text = str(path)
        if text == "/proc/self/cgroup":
            proc = tmp_path / "cgroup"
            proc.write_text("0::/job\n")
            return real_path(proc)
        if text.startswith("/sys/fs/cgroup"):
            return real_path(str(tmp_path / "sys") + text[len("/sys/fs/cgroup"):], *rest)
        return real_path(path, *rest)

    monkeypatch.setattr(memory, "Path", fake)
    assert memory._cgroup_room() == 3 * 10**9


def test_bad_memory_limits_are_named(tmp_path, capsys):
    _, params = _series(tmp_path, n_frames=2)
    assert main(["run", str(_write(tmp_path, params, "bad")), "--memory-limit", "lots"]) == 1
    err = capsys.readouterr().err
    assert "memory_limit" in err and "'lots'" in err and "Traceback" not in err
    assert not (tmp_path / "bad.hdf5").exists()


# ---------------------------------------------------------------------------- resume


def _kill_after(proc, folder: Path, name: str, timeout_s: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``folder/name`` exists."""
    deadline = time.monotonic() + timeout_s
    while not (folder / name).exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("step", ["round-02.npz", "raw_shifts.npy"])
def test_a_run_killed_and_resumed_writes_what_an_uninterrupted_run_writes(tmp_path, step):
    _, params = _series(tmp_path, n_frames=24, size_px=256, object_size_px=128)
    params["adjust_tilt"] = True
    whole = _holodask(["run", _write(tmp_path, params, "whole")], tmp_path)
    assert whole.wait() == 0, whole.communicate()[1]
    path = _write(tmp_path, params, "killed")
    checkpoint = tmp_path / "killed.hdf5.holodask-checkpoint"
    _kill_after(_holodask(["run", path, "--resume"], tmp_path), checkpoint, step)
    assert not (tmp_path / "killed.hdf5").exists()  # killed mid-run
    resumed = _holodask(["run", path, "--resume", "-v"], tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming from the checkpoint" in err
    if step.startswith("round"):
        assert "read back from the checkpoint" in err and "continuing after round 02" not in err
        assert "continuing after round 2" in err
    np.testing.assert_array_equal(_data(tmp_path / "killed.hdf5"), _data(tmp_path / "whole.hdf5"))
    for key in ("convergence", "shift(nm)", "factor", "raw_shift"):
        np.testing.assert_array_equal(_attrs(tmp_path / "killed.hdf5")[key], _attrs(tmp_path / "whole.hdf5")[key])
    assert not checkpoint.exists()  # done: the checkpoint is gone
    with h5py.File(tmp_path / "killed.hdf5", "r") as f, h5py.File(tmp_path / "whole.hdf5", "r") as g:
        assert sorted(f) == sorted(g)  # the same datasets (no aligned_rois nobody asked for)


def _datasets(path: Path) -> list:
    with h5py.File(path, "r") as f:
        return sorted(f)


@pytest.mark.parametrize("aligned", [False, True])
def test_a_resumed_run_writes_the_datasets_a_plain_run_writes(tmp_path, aligned):
    """The checkpoint's raw drift did not make the output ``aligned_rois`` unasked."""
    _, params = _series(tmp_path)
    params["output_aligned"] = aligned
    assert main(["run", str(_write(tmp_path, params, "plain"))]) == 0
    assert main(["run", str(_write(tmp_path, params, "checked")), "--resume"]) == 0
    assert _datasets(tmp_path / "checked.hdf5") == _datasets(tmp_path / "plain.hdf5")
    assert ("aligned_rois" in _datasets(tmp_path / "plain.hdf5")) == aligned
    with h5py.File(tmp_path / "plain.hdf5", "r") as a, h5py.File(tmp_path / "checked.hdf5", "r") as b:
        for name in a:
            if isinstance(a[name], h5py.Dataset):
                np.testing.assert_array_equal(a[name][()], b[name][()])


def test_the_frames_held_for_the_rounds_wait_for_no_drift_of_the_whole_series(tmp_path, monkeypatch):
    """The drift is computed first, on its own: in the graph of the reconstruction every
    frame's task would wait for all of the raw alignment, and Dask's ordering of such a graph
    takes time and memory growing with the square of the series' length."""
    from holodask.stages import rounds

    graphs = []
    real = rounds.compute_graph

    def recording(dsk, keys, client=None):
        graphs.append(list(dsk))
        return real(dsk, keys, client)

    monkeypatch.setattr(rounds, "compute_graph", recording)
    _, params = _series(tmp_path, n_frames=8)
    assert main(["run", str(_write(tmp_path, params, "run"))]) == 0

    def names(keys):
        return {str(key[0] if isinstance(key, tuple) else key).split("-")[0] for key in keys}

    held = [g for g in graphs if "reconstruct" in names(g)]
    assert held and all("raw" not in names(g) or "align" not in names(g) for g in held)
    assert any("align" in names(g) for g in graphs)  # the drift, in a graph of its own


def test_a_batch_is_summed_as_its_frames_come():
    from holodask.stages.rounds import _reduce_parts, _reduce_stream

    rng = np.random.default_rng(0)
    parts = [([k], (rng.random((4, 4)) + 1j * rng.random((4, 4))).astype(np.complex64)) for k in range(5)]
    parts[2] = ([2], None)
    smalls, total = _reduce_stream(part for part in parts)  # a generator: nothing held but the sum
    expected = _reduce_parts(*parts)
    assert smalls == expected[0] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(total, expected[1])
    assert _reduce_stream([([1], None)]) == ([1], None)


def test_a_checkpoint_of_other_parameters_is_refused(tmp_path, capsys):
    _, params = _series(tmp_path, n_frames=24, size_px=256, object_size_px=128)
    path = _write(tmp_path, params, "run")
    checkpoint = tmp_path / "run.hdf5.holodask-checkpoint"
    _kill_after(_holodask(["run", path, "--resume"], tmp_path), checkpoint, "raw_shifts.npy")
    before = sorted(p.name for p in checkpoint.iterdir())
    path.write_text(json.dumps(dict(params, output_name="run.hdf5", cut_off=params["cut_off"] * 0.9)))
    assert main(["run", str(path), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "resume:" in err and str(checkpoint) in err and "other parameters or input files" in err
    assert "Traceback" not in err and not (tmp_path / "run.hdf5").exists()
    assert sorted(p.name for p in checkpoint.iterdir()) == before  # left as it was


def test_sigterm_keeps_the_checkpoint_and_says_so(tmp_path):
    _, params = _series(tmp_path, n_frames=24, size_px=256, object_size_px=128)
    path = _write(tmp_path, params, "run")
    checkpoint = tmp_path / "run.hdf5.holodask-checkpoint"
    proc = _holodask(["run", path, "--resume"], tmp_path)
    deadline = time.monotonic() + 120
    while not (checkpoint / "raw_shifts.npy").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "the checkpoint is kept" in err and "Traceback" not in err
    assert (checkpoint / "manifest.json").exists() and (checkpoint / "raw_shifts.npy").exists()
    assert not (tmp_path / "run.hdf5").exists()


# ---------------------------------------------------------------------------- the early stop


def _phase_rms(a: np.ndarray, b: np.ndarray) -> float:
    size = a.shape[0]
    inner = (slice(size // 4, size - size // 4),) * 2
    difference = np.angle(a * np.conj(b))[inner]
    difference -= np.angle(np.mean(np.exp(1j * difference)))
    return float(np.sqrt(np.mean(np.angle(np.exp(1j * difference)) ** 2)))


def test_tolerance_stops_early_and_stays_close_to_the_full_rounds(tmp_path, capsys):
    _, params = _series(tmp_path, n_frames=12, drift_step_px=1.5, biprism_phase_jitter_rad=0.3)
    assert main(["run", str(_write(tmp_path, params, "full"))]) == 0
    assert main(["run", str(_write(tmp_path, params, "early")), "--tolerance", "1e-3"]) == 0
    in_file = dict(params, tolerance=1e-3)
    assert main(["run", str(_write(tmp_path, in_file, "keyed"))]) == 0
    full, early = _attrs(tmp_path / "full.hdf5"), _attrs(tmp_path / "early.hdf5")
    assert len(full["convergence"]) == 8  # the residual of the 7 rounds after the first, and the final one
    assert 3 <= len(early["convergence"]) < 8
    assert _phase_rms(_data(tmp_path / "early.hdf5"), _data(tmp_path / "full.hdf5")) < 0.005
    np.testing.assert_array_equal(_data(tmp_path / "keyed.hdf5"), _data(tmp_path / "early.hdf5"))
    assert json.loads(early["holoaverage_param"])["tolerance"] == 1e-3
    capsys.readouterr()
    assert main(["run", str(_write(tmp_path, dict(params, tolerance=-1), "bad"))]) == 1
    assert "tolerance" in capsys.readouterr().err


def test_the_convergence_rule():
    from holodask.stages.rounds import _converged

    assert _converged([100.0, 100.01], 1e-3) and not _converged([100.0, 90.0], 1e-3)
    assert not _converged([100.0], 1e-3) and not _converged([100.0, 100.0], None)


def test_tolerance_waits_for_the_defocus_fit(tmp_path):
    from holodask.stages.averaging import DEFOCUS_START

    _, params = _series(tmp_path, n_frames=4, defocus_step_nm=10.0)
    params.update(adjust_defocus=True, defocus_step=10.0)
    assert main(["run", str(_write(tmp_path, params, "defocus")), "--tolerance", "0.5"]) == 0
    assert main(["run", str(_write(tmp_path, dict(params, adjust_defocus=False), "plain")), "--tolerance", "0.5"]) == 0
    # a round of the defocus fit, then one to judge it: rounds 0 .. DEFOCUS_START + 1, and the final residual
    assert len(_attrs(tmp_path / "defocus.hdf5")["convergence"]) == DEFOCUS_START + 3
    assert len(_attrs(tmp_path / "plain.hdf5")["convergence"]) == 3
