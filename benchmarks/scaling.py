"""Memory against series length, and strong scaling against workers.

Memory: peak memory (sum of RSS over the whole process tree, Dask workers
included) of ``holodask run`` on N = 50 and N = 400 holograms of the same
size, with the reconstructed stack held in memory and in a ``--scratch`` Zarr
store, or under a memory budget (``--budget SIZE``: ``--memory-limit SIZE``,
small enough that the stack goes to a Zarr store by itself); the ratio shows
whether memory stays bounded as the series grows (it does in a Zarr store; in
memory the stack itself grows with N).

Scaling: wall time of the reconstruction and averaging stages (the time
``holodask run -v`` reports for them, with the raw alignment, which it reports
on its own since the drift is computed first) with a LocalCluster of 1 and of 2
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
    python benchmarks/scaling.py memory --budget 10MB  # also under a memory budget (threads)
    python benchmarks/scaling.py scaling [--frames 200 --size 1024 --object-size 256]
    python benchmarks/scaling.py ceiling [--size 1024 --object-size 256]
    python benchmarks/scaling.py all     # all three, appended to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import append_results, holodask_run, run_facts, run_measured  # noqa: E402
from _measure import simulate as _simulate  # noqa: E402


def simulate(folder: Path, frames: int, size: int, object_size: int) -> Path:
    """This script's series (seed 11, no fringe-phase jitter)."""
    return _simulate(folder, frames, size, object_size, seed=11, phase_jitter_rad=0.0)


#: how the reconstructed stack is held, for :func:`peak_memory`
MEMORY_MODES = {
    "memory": "stack held in memory",
    "scratch": "stack in a --scratch Zarr store (bounded memory)",
    "budget": "memory budget --memory-limit {budget} (the stack goes to a Zarr store by itself)",
}


def _mode_args(mode: str, n: int, workdir: Path, budget: str | None) -> list[str]:
    if mode == "scratch":
        return ["--scratch", str(workdir / f"scratch{n}")]
    if mode == "budget":
        return ["--memory-limit", budget]
    return []


def peak_memory(params: dict, modes: list[str], workdir: Path, *, repeats: int = 1, budget: str | None = None,
                extra: tuple = ()) -> dict:
    """Run ``holodask run`` on each series ``params[n]`` in each mode of :data:`MEMORY_MODES`,
    ``repeats`` times, alternating (repeat by repeat, series by series, mode by mode).

    Returns ``{mode: [row per n]}``, a row being ``{"n", "wall_s", "peak_mib"}`` (medians),
    ``"peaks"`` (every run's peak MiB), ``"spilled"`` (whether the stack went to a Zarr store
    by itself) and ``"facts"`` (:func:`run_facts` of the last run)."""
    runs: dict = {(mode, n): [] for mode in modes for n in params}
    for _ in range(repeats):
        for n, path in params.items():
            for mode in modes:
                m = run_measured(holodask_run(path, *extra, *_mode_args(mode, n, workdir, budget)), cwd=path.parent)
                if m.returncode:
                    raise RuntimeError(m.output[-3000:])
                runs[mode, n].append(m)
                print(f"N={n} ({mode}): {m.wall_s:.1f} s, peak {m.peak_rss_mib:.0f} MiB", flush=True)
    result = {}
    for mode in modes:
        result[mode] = [{"n": n, "wall_s": statistics.median(m.wall_s for m in runs[mode, n]),
                         "peak_mib": statistics.median(m.peak_rss_mib for m in runs[mode, n]),
                         "peaks": [m.peak_rss_mib for m in runs[mode, n]],
                         "spilled": all(run_facts(m.output)["spilled"] for m in runs[mode, n]),
                         "facts": run_facts(runs[mode, n][-1].output)}
                        for n in params]
    return result


def memory_table(heading: str, rows: list) -> str:
    """A table of :func:`peak_memory`'s rows for one mode, with the last / first ratio."""
    several = len(rows[0]["peaks"]) > 1
    lines = [heading, "", "| frames | wall s | peak MiB (all processes) |" + (" runs MiB |" if several else ""),
             "|---|---|---|" + ("---|" if several else "")]
    for r in rows:
        runs = f" {', '.join(f'{p:.0f}' for p in r['peaks'])} |" if several else ""
        lines.append(f"| {r['n']} | {r['wall_s']:.1f} | {r['peak_mib']:.0f} |{runs}")
    first, last = rows[0], rows[-1]
    lines += ["", f"Ratio N={last['n']} / N={first['n']}: **{last['peak_mib'] / first['peak_mib']:.2f}**"]
    return "\n".join(lines)


def memory(args, workdir: Path) -> str:
    """Peak memory for the small and the large series, with the stack held in memory
    and in a ``--scratch`` Zarr store (the bounded mode), unless ``--scratch`` asks for
    that one only; ``--budget SIZE`` adds (or, with ``--scratch``, replaces) the mode of a
    run under that memory budget."""
    modes = [] if args.scratch else ["memory"]
    modes += ["budget"] if args.budget else []
    modes += ["scratch"] if args.scratch or not args.budget else []
    params = {n: simulate(workdir / f"mem{n}", n, args.size, args.object_size) for n in (args.small, args.large)}
    extra = ("--cluster", "local", "--workers", "2", "--threads-per-worker", "1",
             "--memory-limit", args.memory_limit) if args.local else ()
    rows = peak_memory(params, modes, workdir, repeats=args.memory_repeats, budget=args.budget, extra=extra)
    for folder in params.values():
        shutil.rmtree(folder.parent, ignore_errors=True)
    where = "LocalCluster, 2 process workers" if args.local else "threaded scheduler"
    runs = f", median of {args.memory_repeats} alternating runs" if args.memory_repeats > 1 else ""
    return "\n\n".join(
        memory_table(f"Peak memory, {args.size}² holograms, object_size {args.object_size}, {where}, "
                     f"{MEMORY_MODES[mode].format(budget=args.budget)}{runs}:", rows[mode])
        for mode in modes)


def scaling(args, workdir: Path) -> str:
    params = simulate(workdir / "scaling", args.frames, args.size, args.object_size)
    times: dict[int, list] = {1: [], 2: []}
    stage_times: dict[int, list] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):  # alternating, so that a change in the machine's speed hits both alike
            extra = ["--cluster", "local", "--workers", str(workers), "--threads-per-worker", "1"]
            m = run_measured(holodask_run(params, *extra), cwd=params.parent)
            if m.returncode:
                raise RuntimeError(m.output[-3000:])
            times[workers].append(m.wall_s)
            facts = run_facts(m.output)
            raw = 0.0 if facts["raw_alignment_s"] != facts["raw_alignment_s"] else facts["raw_alignment_s"]
            stage_times[workers].append(raw + facts["reconstruction_s"] + facts["averaging_s"])
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
    ap.add_argument("--budget", metavar="SIZE", help="memory test also under --memory-limit SIZE (threads: "
                                                       "the run's budget), instead of --scratch")
    ap.add_argument("--memory-repeats", type=int, default=1, help="runs of each memory case (median)")
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
        append_results(args.results, f"scaling.py {args.what}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
