"""The FFT backend's measured plans: one small file per transform, shared with workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from holodask import fft

pytestmark = pytest.mark.skipif(fft.backend() != "pyfftw", reason="measured plans need pyFFTW")

PLAN_AND_EXIT = """
import numpy as np
from holodask import fft
a = (np.arange(24 * 20, dtype=np.float32).reshape(24, 20) % 7).astype(np.complex64)
{body}
"""


def _run(folder: Path, body: str) -> str:
    env = dict(os.environ, HOLODASK_FFTW_WISDOM=str(folder))
    result = subprocess.run([sys.executable, "-c", PLAN_AND_EXIT.format(body=body)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _plan_files(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.wisdom")}


def test_each_measured_transform_is_kept_in_its_own_file_and_read_back(tmp_path):
    folder = tmp_path / "plans"
    out = _run(folder, "print(abs(fft.fft2(a) - np.fft.fft2(a)).max())")
    assert float(out) < 1e-3
    first = _plan_files(folder)
    assert len(first) == 1  # fft2 of (24, 20) complex64, measured once
    # a second transform adds its own file; the first is read back, not measured again
    out = _run(folder, "print(abs(fft.fft2(a) - np.fft.fft2(a)).max()); print(abs(fft.ifft2(a) - np.fft.ifft2(a)).max())")
    assert all(float(v) < 1e-3 for v in out.split())
    second = _plan_files(folder)
    assert len(second) == 2
    assert second[next(iter(first))] == first[next(iter(first))]  # not rewritten


def test_a_damaged_plan_file_only_costs_planning_time(tmp_path):
    folder = tmp_path / "plans"
    _run(folder, "fft.fft2(a)")
    (name,) = _plan_files(folder)
    (folder / name).write_bytes(b"not a plan file")
    out = _run(folder, "print(abs(fft.fft2(a) - np.fft.fft2(a)).max())")
    assert float(out) < 1e-3
    assert (folder / name).read_bytes() != b"not a plan file"  # measured again and replaced


def test_plans_go_to_the_user_cache_unless_switched_off(tmp_path):
    def run(extra):
        env = {k: v for k, v in os.environ.items() if k != "HOLODASK_FFTW_WISDOM"}
        env.update(XDG_CACHE_HOME=str(tmp_path), **extra)
        result = subprocess.run([sys.executable, "-c", PLAN_AND_EXIT.format(body="fft.fft2(a)")], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr

    run({"HOLODASK_FFTW_WISDOM": "none"})
    assert list(tmp_path.iterdir()) == []
    run({})
    assert len(list((tmp_path / "holodask" / "fftw-plans").glob("*.wisdom"))) == 1


def test_exported_plans_name_every_transform_planned_here():
    shape = (18, 22)
    fft.prepare("fft2", shape)
    fft.prepare("ifft2", shape)
    wisdom = fft.export_wisdom()
    names = {fft._wisdom_name((kind, shape, np.dtype(np.complex64).str, None, fft.get_fft_threads(),
                                fft._planner_effort, None, "in place")) for kind in ("fft2", "ifft2")}
    assert names <= set(wisdom)
    assert all(isinstance(w, tuple) and len(w) == 3 for w in wisdom.values())
    fft.import_wisdom(wisdom)  # a worker's side: the same plans, then the same numbers
    a = np.random.default_rng(1).standard_normal(shape).astype(np.complex64)
    assert np.allclose(fft.fft2(a), np.fft.fft2(a), atol=1e-3)


@pytest.mark.parametrize("axis", [0, 1])
def test_complex_transforms_run_in_place_and_match_numpy(axis):
    from holodask.optics import _transform_buffers

    rng = np.random.default_rng(2)
    a = (rng.standard_normal((20, 18)) + 1j * rng.standard_normal((20, 18))).astype(np.complex64)
    assert np.allclose(fft.fft_axis(a, axis), np.fft.fft(a, axis=axis), atol=1e-4)
    assert np.allclose(fft.ifft_axis(a, axis), np.fft.ifft(a, axis=axis), atol=1e-5)
    assert np.allclose(fft.fft2(a), np.fft.fft2(a), atol=1e-3)
    buffer, run = _transform_buffers("ifft2", a.shape)
    buffer[...] = a
    out = run()
    assert np.shares_memory(buffer, out)  # the output is the input buffer (half the memory)
    assert np.allclose(out, np.fft.ifft2(a) * a.size, atol=1e-3)
