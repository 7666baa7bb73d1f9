"""Helpers shared by the benchmarks: timing a command with its peak memory.

Peak memory is the largest sum of the resident set sizes of the command's
whole process tree (the command and every process it starts, e.g. Dask
workers), sampled every 20 ms with psutil.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

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
    a = a[my:ny - my, mx:nx - mx]
    b = b[my:ny - my, mx:nx - mx]
    d = a * np.conj(b)
    d = d * np.exp(-1j * np.angle(d.sum()))
    return float(np.sqrt(np.mean(np.angle(d) ** 2)))


def python() -> str:
    return sys.executable
