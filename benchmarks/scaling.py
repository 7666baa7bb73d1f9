"""Memory against series length, and strong scaling against workers.

Memory: peak memory (sum of RSS over the whole process tree, Dask workers
included) of ``holodask run`` on N = 50 and N = 400 holograms of the same
size, with the reconstructed stack held in memory and in a ``--scratch`` Zarr
store; the ratio shows whether memory stays bounded as the series grows (it
does with ``--scratch``; in memory the stack itself grows with N).

Scaling: wall time of the reconstruction and averaging stages (the time
``holodask run -v`` reports for them) with a LocalCluster of 1 and of 2
single-threaded process workers on the same series; throughput ratio =
t(1 worker) / t(2 workers).

Ceiling: what the machine itself allows. The per-frame kernels of the two
stages (one hologram reconstructed and normalised, then fitted to an average
and moved onto it nine times, as in the rounds) run on the same frames in one
process, then in two processes at once (started together after their start-up
and warm-up), each doing the same amount of work; ceiling = 2 x t(one
process) / t(slower of two processes at once). A machine whose two
cores are independent gives 2; two logical CPUs sharing one physical core, or
a CPU quota, give less, and no scheduler can scale beyond it.

Usage::

    python benchmarks/scaling.py memory  [--small 50 --large 400 --size 512 --object-size 128]
    python benchmarks/scaling.py scaling [--frames 200 --size 1024 --object-size 256]
    python benchmarks/scaling.py ceiling [--size 1024 --object-size 256]
    python benchmarks/scaling.py all     # all three, appended to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine_facts, run_measured  # noqa: E402


def simulate(folder: Path, frames: int, size: int, object_size: int) -> Path:
    from holodask.simulate import simulate_series

    sim = simulate_series(folder, n_frames=frames, size_px=size, object_size_px=object_size,
                          dose_e_per_px=500.0, drift_step_px=0.5, seed=11,
                          texture_contrast=0.1)
    return Path(sim.params_path)


def holodask_cmd(params: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "holodask", "run", str(params), "-v", "--quiet", *extra]


def memory(args, workdir: Path) -> str:
    """Peak memory for the small and the large series, with the stack held in memory
    and in a ``--scratch`` Zarr store (the bounded mode), unless ``--scratch`` asks for
    that one only."""
    modes = ["scratch"] if args.scratch else ["memory", "scratch"]
    params = {n: simulate(workdir / f"mem{n}", n, args.size, args.object_size) for n in (args.small, args.large)}
    parts = []
    for mode in modes:
        rows = []
        for n in (args.small, args.large):
            extra = ["--cluster", "local", "--workers", "2", "--threads-per-worker", "1",
                     "--memory-limit", args.memory_limit] if args.local else []
            if mode == "scratch":
                extra += ["--scratch", str(workdir / f"scratch{n}")]
            m = run_measured(holodask_cmd(params[n], *extra), cwd=params[n].parent)
            if m.returncode:
                raise RuntimeError(m.output[-3000:])
            rows.append((n, m.wall_s, m.peak_rss_mib))
            print(f"N={n} ({mode}): {m.wall_s:.1f} s, peak {m.peak_rss_mib:.0f} MiB", flush=True)
        (n1, _, p1), (n2, _, p2) = rows
        where = "LocalCluster, 2 process workers" if args.local else "threaded scheduler"
        held = "stack in a --scratch Zarr store (bounded memory)" if mode == "scratch" else "stack held in memory"
        lines = [f"Peak memory, {args.size}² holograms, object_size {args.object_size}, {where}, {held}:", "",
                 "| frames | wall s | peak MiB (all processes) |", "|---|---|---|"]
        lines += [f"| {n} | {w:.1f} | {p:.0f} |" for n, w, p in rows]
        lines += ["", f"Ratio N={n2} / N={n1}: **{p2 / p1:.2f}**"]
        parts.append("\n".join(lines))
    for folder in params.values():
        shutil.rmtree(folder.parent, ignore_errors=True)
    return "\n\n".join(parts)


STAGE = re.compile(r"(reconstruct\w*|averag\w*)[^\n]*?([0-9.]+)\s*s\b", re.I)


def scaling(args, workdir: Path) -> str:
    params = simulate(workdir / "scaling", args.frames, args.size, args.object_size)
    times: dict[int, list] = {1: [], 2: []}
    stage_times: dict[int, list] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):  # alternating, so that a change in the machine's speed hits both alike
            extra = ["--cluster", "local", "--workers", str(workers), "--threads-per-worker", "1"]
            m = run_measured(holodask_cmd(params, *extra), cwd=params.parent)
            if m.returncode:
                raise RuntimeError(m.output[-3000:])
            times[workers].append(m.wall_s)
            found = [float(t) for _, t in STAGE.findall(m.output)]
            stage_times[workers].append(sum(found) if found else float("nan"))
            print(f"{workers} worker(s): whole run {m.wall_s:.1f} s, stages {stage_times[workers][-1]:.2f} s",
                  flush=True)
    rows = [(w, min(times[w]), min(stage_times[w])) for w in (1, 2)]
    (_, w1, s1), (_, w2, s2) = rows
    pairs = [a / b for a, b in zip(stage_times[1], stage_times[2])]
    lines = [f"Strong scaling, {args.frames} × {args.size}² holograms, object_size {args.object_size}, "
             f"LocalCluster of single-threaded process workers ({args.repeats} alternating runs each, best):", "",
             "| workers | whole run s | reconstruction + averaging s |", "|---|---|---|"]
    lines += [f"| {w} | {a:.2f} | {b:.2f} |" for w, a, b in rows]
    lines += ["", f"Throughput 2 workers / 1 worker: reconstruction + averaging **{s1 / s2:.2f}×** (best against "
                  f"best; run by run {', '.join(f'{p:.2f}' for p in pairs)}), whole run {w1 / w2:.2f}×"]
    return "\n".join(lines)


KERNEL_WORK = """
import sys, time
import numpy as np
from holodask import fft
from holodask.align import alignment_grid, aligned_spectrum, fit_to_average, initial_state
from holodask.normalise import factor_grid, normalisation_factor, normalise_with_factor
from holodask.hologram import extract_roi, reconstruct_hologram, sideband_geometry
from holodask.params import FilterSpec

size, object_size, frames = (int(v) for v in sys.argv[1:4])
start_at = float(sys.argv[4])
rng = np.random.default_rng(0)
y, x = np.mgrid[:size, :size]
holograms = [rng.poisson(200 * (1 + 0.8 * np.cos(2 * np.pi * (x * 0.25 + y * 0.125) + 0.1 * k))).astype(np.uint16)
             for k in range(4)]
margin = size // 40
roi = (margin, margin, size - margin, size - margin)
roi_shape = (roi[3] - roi[1], roi[2] - roi[0])
sampling = 0.5
carrier = (0.25 / sampling, 0.125 / sampling)  # (x, y) per nm
geometry = sideband_geometry(roi_shape, sampling, carrier, (object_size, object_size), 0.186**2 * np.eye(2),
                             FilterSpec("EDGE", None), None, 1, single_precision_mask=True)
grid2 = factor_grid(roi_shape, (object_size, object_size))
factor = normalisation_factor(np.ones((size, size), np.complex64), roi, (0, 0), grid2)
grid = alignment_grid((object_size, object_size), geometry.sampling_out_nm, 300.0)

def frame(k):
    wave = reconstruct_hologram(extract_roi(holograms[k % 4], roi, (0, 0)), geometry)
    wave = normalise_with_factor(wave, factor, (object_size, object_size))
    average = fft.fft2(wave)
    state = initial_state(1.0, 0.0)
    for _ in range(9):
        state = fit_to_average(wave, average, state, grid)
        aligned_spectrum(wave, state, grid)

frame(0)  # plans made, caches warm
time.sleep(max(0.0, start_at - time.time()))  # every process starts the work at once
started = time.perf_counter()
for k in range(frames):
    frame(k)
print(time.perf_counter() - started)
"""


def _kernel_seconds(processes: int, args) -> float:
    """Time ``processes`` processes take for the kernel work, started together after
    their start-up and warm-up (the slowest one's time)."""
    import subprocess

    start_at = time.time() + 5.0 + 2.0 * args.size / 1024
    command = [sys.executable, "-c", KERNEL_WORK, str(args.size), str(args.object_size), str(args.ceiling_frames),
               repr(start_at)]
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    outputs = [p.communicate()[0] for p in running]
    if any(p.returncode for p in running):
        raise RuntimeError("kernel work failed")
    return max(float(out.split()[-1]) for out in outputs)


def ceiling(args, workdir: Path) -> str:
    rows = []
    for _ in range(args.repeats):
        one = _kernel_seconds(1, args)
        two = _kernel_seconds(2, args)
        rows.append((one, two, 2.0 * one / two))
        print(f"one process {one:.2f} s, two at once {two:.2f} s: ceiling {2.0 * one / two:.2f}x", flush=True)
    best = max(r[2] for r in rows)
    lines = [f"Ceiling of the machine: the per-frame kernels ({args.size}² holograms, object_size "
             f"{args.object_size}, {args.ceiling_frames} frames per process, timed after start-up and "
             "warm-up), one process against two at once:", "",
             "| one process s | two processes at once s | throughput 2 / 1 |", "|---|---|---|"]
    lines += [f"| {a:.2f} | {b:.2f} | {c:.2f} |" for a, b, c in rows]
    lines += ["", f"Best throughput ratio the machine gives two processes: **{best:.2f}×**"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["memory", "scaling", "ceiling", "all"])
    ap.add_argument("--small", type=int, default=50)
    ap.add_argument("--large", type=int, default=400)
    ap.add_argument("--frames", type=int, default=200, help="series length for the scaling (users: hundreds)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--object-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ceiling-frames", type=int, default=30, help="frames per process for the ceiling")
    ap.add_argument("--local", action="store_true", help="memory test on a LocalCluster instead of threads")
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--scratch", action="store_true", help="memory test with --scratch only")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="holodask-scaling-"))
    parts = []
    try:
        if args.what in ("memory", "all"):
            parts.append(memory(args, workdir))
        if args.what in ("scaling", "all"):
            parts.append(scaling(args, workdir))
        if args.what in ("ceiling", "all"):
            parts.append(ceiling(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = "\n\n".join(parts)
    print(text)
    if not args.no_write:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        path = Path(args.results)
        if not path.exists():
            path.write_text("# Benchmark results\n\nWritten by the scripts in this folder; newest last.\n")
        with path.open("a") as fh:
            fh.write(f"\n## scaling.py {args.what}, {stamp}\n\nMachine: {machine_facts()}.\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
