"""Memory against series length, and strong scaling against workers.

Memory: peak memory (sum of RSS over the whole process tree, Dask workers
included) of ``holodask run`` on N = 50 and N = 400 holograms of the same
size; the ratio shows whether memory stays bounded as the series grows.

Scaling: wall time of the reconstruction and averaging stages (the time
``holodask run -v`` reports for them) with a LocalCluster of 1 and of 2
single-threaded process workers on the same series; throughput ratio =
t(1 worker) / t(2 workers).

Usage::

    python benchmarks/scaling.py memory  [--small 50 --large 400 --size 1024 --object-size 256]
    python benchmarks/scaling.py scaling [--frames 60 --size 1024 --object-size 256]
    python benchmarks/scaling.py all     # both, appended to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import sys
import tempfile
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
    rows = []
    for n in (args.small, args.large):
        params = simulate(workdir / f"mem{n}", n, args.size, args.object_size)
        extra = ["--cluster", "local", "--workers", "2", "--threads-per-worker", "1",
                 "--memory-limit", args.memory_limit] if args.local else []
        if args.scratch:
            extra += ["--scratch", str(workdir / f"scratch{n}")]
        m = run_measured(holodask_cmd(params, *extra), cwd=params.parent)
        if m.returncode:
            raise RuntimeError(m.output[-3000:])
        rows.append((n, m.wall_s, m.peak_rss_mib))
        print(f"N={n}: {m.wall_s:.1f} s, peak {m.peak_rss_mib:.0f} MiB", flush=True)
        shutil.rmtree(params.parent, ignore_errors=True)
    (n1, _, p1), (n2, _, p2) = rows
    mode = "LocalCluster, 2 process workers" if args.local else "threaded scheduler"
    lines = [f"Peak memory, {args.size}² holograms, object_size {args.object_size}, {mode}"
             + (", --scratch" if args.scratch else "") + ":", "",
             "| frames | wall s | peak MiB (all processes) |", "|---|---|---|"]
    lines += [f"| {n} | {w:.1f} | {p:.0f} |" for n, w, p in rows]
    lines += ["", f"Ratio N={n2} / N={n1}: **{p2 / p1:.2f}**"]
    return "\n".join(lines)


STAGE = re.compile(r"(reconstruct\w*|averag\w*)[^\n]*?([0-9.]+)\s*s\b", re.I)


def scaling(args, workdir: Path) -> str:
    params = simulate(workdir / "scaling", args.frames, args.size, args.object_size)
    rows = []
    for workers in (1, 2):
        extra = ["--cluster", "local", "--workers", str(workers), "--threads-per-worker", "1"]
        times = []
        stage_times = []
        for _ in range(args.repeats):
            m = run_measured(holodask_cmd(params, *extra), cwd=params.parent)
            if m.returncode:
                raise RuntimeError(m.output[-3000:])
            times.append(m.wall_s)
            found = [float(t) for _, t in STAGE.findall(m.output)]
            stage_times.append(sum(found) if found else float("nan"))
        rows.append((workers, min(times), min(stage_times)))
        print(f"{workers} worker(s): whole run {min(times):.1f} s, stages {min(stage_times):.2f} s", flush=True)
    (_, w1, s1), (_, w2, s2) = rows
    lines = [f"Strong scaling, {args.frames} × {args.size}² holograms, object_size {args.object_size}, "
             f"LocalCluster of single-threaded process workers (best of {args.repeats}):", "",
             "| workers | whole run s | reconstruction + averaging s |", "|---|---|---|"]
    lines += [f"| {w} | {a:.2f} | {b:.2f} |" for w, a, b in rows]
    lines += ["", f"Throughput 2 workers / 1 worker: reconstruction + averaging **{s1 / s2:.2f}×**, "
                  f"whole run {w1 / w2:.2f}×"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["memory", "scaling", "all"])
    ap.add_argument("--small", type=int, default=50)
    ap.add_argument("--large", type=int, default=400)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--object-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--local", action="store_true", help="memory test on a LocalCluster instead of threads")
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--scratch", action="store_true", help="memory test with --scratch")
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
