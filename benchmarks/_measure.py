"""Helpers shared by the benchmarks: timing a command with its peak memory,
simulating a series, reading what ``holodask run -v`` reports and writes, and
appending a section to ``RESULTS.md``.

Peak memory is the largest sum of the resident set sizes of the command's
whole process tree (the command and every process it starts, e.g. Dask
workers), sampled every 20 ms with psutil.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil


@dataclass
class Measurement:
    wall_s: float
    peak_rss_mib: float
    returncode: int
    output: str


def run_measured(cmd: list[str], cwd=None, env=None, interval_s: float = 0.02) -> Measurement:
    """Run ``cmd``, returning its wall time and the peak RSS of its process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            peak = max(peak, total)
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    thread.join()
    return Measurement(wall, peak / 2**20, proc.returncode, output)


def machine_facts() -> str:
    """One line about the machine and the libraries."""
    import dask
    import numpy

    try:
        import pyfftw

        fftlib = f"pyFFTW {pyfftw.__version__}"
    except ImportError:
        fftlib = "scipy.fft"
    mem = psutil.virtual_memory().total / 2**30
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, "
            f"numpy {numpy.__version__}, dask {dask.__version__}, {fftlib}")


def phase_rms_difference(a: np.ndarray, b: np.ndarray, inner_fraction: float = 0.5) -> float:
    """RMS phase difference over the inner part after removing one global phase (rad)."""
    ny, nx = a.shape
    my, mx = int(ny * (1 - inner_fraction) / 2), int(nx * (1 - inner_fraction) / 2)
    a = a[my:ny - my, mx:nx - mx].astype(np.complex128)  # (complex64 products leave ~1e-8 rad of rounding)
    b = b[my:ny - my, mx:nx - mx].astype(np.complex128)
    d = a * np.conj(b)
    d = d * np.exp(-1j * np.angle(d.sum()))
    return float(np.sqrt(np.mean(np.angle(d) ** 2)))


def largest_phase_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest phase difference of two waves (rad), without removing any phase."""
    return float(np.max(np.abs(np.angle(a.astype(np.complex128) * np.conj(b.astype(np.complex128))))))


def python() -> str:
    return sys.executable


def simulate(folder: Path, frames: int, size: int, object_size: int, *, seed: int = 7,
             phase_jitter_rad: float = 0.3) -> Path:
    """A simulated series in ``folder`` (dose 500 e/px, drift 0.5 px per frame, textured
    object, as in ``compare_reference.py``); the path of its parameter file."""
    from holodask.simulate import simulate_series

    sim = simulate_series(folder, n_frames=frames, size_px=size, object_size_px=object_size,
                          dose_e_per_px=500.0, drift_step_px=0.5, biprism_phase_jitter_rad=phase_jitter_rad,
                          seed=seed, texture_contrast=0.1)
    return Path(sim.params_path)


def variant(params: Path, name: str, **changes) -> Path:
    """A copy of the parameter file ``params`` beside it, writing ``name.hdf5`` (and ``changes``)."""
    from holodask.params import parse_parameter_text

    values = dict(parse_parameter_text(params.read_text()), output_name=f"{name}.hdf5", **changes)
    path = params.with_name(f"{name}.json")
    path.write_text(json.dumps(values, indent=1))
    return path


def holodask_run(params: Path, *extra: str) -> list[str]:
    """``holodask run PARAMS -v --quiet EXTRA...`` (stage times printed, no progress bar)."""
    return [sys.executable, "-m", "holodask", "run", str(params), "-v", "--quiet", *extra]


_STAGE_TIMES = {
    "raw_alignment_s": re.compile(r"^raw alignment: \d+ holograms in ([0-9.]+) s", re.M),
    "reconstruction_s": re.compile(r"^reconstruction: \d+ holograms in ([0-9.]+) s", re.M),
    "averaging_s": re.compile(r"^averaging: \d+ rounds in ([0-9.]+) s", re.M),
}
_ROUNDS = re.compile(r"^averaging: (\d+) rounds in", re.M)
SPILLED = "kept in a Zarr store"


def run_facts(output: str) -> dict:
    """What ``holodask run -v`` printed: stage seconds (nan where absent; the raw alignment
    is a stage of its own since the drift is computed before the reconstruction), the
    rounds, and whether the stack went to a Zarr store (``spilled``)."""
    facts = {}
    for key, pattern in _STAGE_TIMES.items():
        found = pattern.findall(output)
        facts[key] = float(found[-1]) if found else float("nan")
    rounds = _ROUNDS.findall(output)
    facts["rounds"] = int(rounds[-1]) if rounds else None
    facts["spilled"] = SPILLED in output
    return facts


def read_result(path: Path) -> tuple[np.ndarray, dict]:
    """The ``data`` of a holodask or holoaverage output file (complex64) and its attributes."""
    import h5py

    from holodask.io.holo_hdf5 import read_complex

    with h5py.File(path, "r") as f:
        return read_complex(f["data"]), dict(f["data"].attrs)


def append_results(results: str | Path, title: str, text: str) -> Path:
    """Append ``## title, date`` with the machine and ``text`` to the results file."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    path = Path(results)
    if not path.exists():
        path.write_text("# Benchmark results\n\nWritten by the scripts in this folder; newest last.\n")
    with path.open("a") as fh:
        fh.write(f"\n## {title}, {stamp}\n\nMachine: {machine_facts()}.\n\n{text}\n")
    return path


def load_average() -> str:
    """The machine's load averages (1, 5, 15 min), as ``uptime`` shows them."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())
