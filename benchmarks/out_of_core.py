"""Out of core by default (issue 18): a series larger than the memory budget, flat
memory, the early stop of ``--tolerance`` and the cost of ``--resume``.

Every figure is of whole ``holodask run -v`` processes (threaded scheduler) on
simulated series (``holodask.simulate``: dose 500 e/px, drift 0.5 px per frame,
fringe-phase jitter 0.3 rad, as in ``compare_reference.py``), run alternately
(A B A B ...) after one warm-up run that is not counted (page cache, FFTW
plans); wall times and peak memory (the largest sum of RSS over the process
tree) are medians over the runs.

large
    A series whose reconstructed stack is larger than the held share (half) of
    a memory budget (default 2,000 frames of 512², object_size 128: 262 MB,
    under ``--memory-limit 500MB``), against the same run in memory (no limit:
    the default budget, from the memory available, holds it): wall time, stage
    times, throughput in frames/s, peak memory, and whether the two ``data``
    are bit-identical (and their largest phase difference).
flat
    Peak memory of budgeted runs for N = 50 and N = 400 frames of the same size
    under a budget that both exceed (default 10MB: 50 frames of 128² take
    6.6 MB, over its held share of 5 MB), and in memory for contrast; the
    issue's criterion is a ratio N=400 / N=50 of at most 1.3 under the budget.
    (``scaling.py memory --budget`` runs the same measurement.)
tolerance
    ``--tolerance 1e-3``, ``1e-4`` and ``1e-7`` against the reference's fixed
    rounds on 60 frames of 1024² (object_size 256): rounds run (entries of the
    output's ``convergence`` attribute, and what ``-v`` reports), time of the
    averaging stage and of the whole run, and the phase difference to the full
    rounds (RMS over the inner half with one global phase removed, and largest).
resume
    ``--resume`` (checkpoints of the raw shifts, the reconstructed frames in
    Zarr and every round) against a plain run on 400 frames of 512², and
    against a run under the budget of 'flat' (its stack in a Zarr store too,
    without checkpoints: what the checkpoints themselves cost): wall time,
    peak memory, and whether the results are bit-identical.

Usage::

    python benchmarks/out_of_core.py all        # all four, appended to benchmarks/RESULTS.md
    python benchmarks/out_of_core.py large      [--frames 2000 --budget 500MB --repeats 2]
    python benchmarks/out_of_core.py flat       [--small 50 --large 400 --flat-budget 10MB]
    python benchmarks/out_of_core.py tolerance  [--tolerances 1e-3 1e-4 1e-7 --repeats 3]
    python benchmarks/out_of_core.py resume     [--resume-frames 400]
    python benchmarks/out_of_core.py --quick    # tiny cases of all four (< 1 min), prints only
    python benchmarks/out_of_core.py all --workdir /tmp/ooc  # simulate once, reuse the series
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import (  # noqa: E402
    append_results,
    holodask_run,
    largest_phase_difference,
    load_average,
    phase_rms_difference,
    read_result,
    run_facts,
    run_measured,
    simulate,
    variant,
)
from scaling import MEMORY_MODES, memory_table, peak_memory  # noqa: E402

PARTS = ("large", "flat", "tolerance", "resume")

#: the sizes of --quick: (frames, size, object_size) and budgets that the stacks exceed
QUICK = {"frames": 40, "size": 256, "object_size": 64, "budget": "1MB", "small": 10, "large": 40,
         "flat_budget": "400kB", "tolerance_frames": 20, "tolerance_size": 256, "tolerance_object_size": 64,
         "resume_frames": 40, "repeats": 1}


def stack_bytes(frames: int, object_size: int) -> int:
    """Bytes of a reconstructed stack (complex64 frames of object_size²)."""
    return frames * object_size * object_size * np.dtype(np.complex64).itemsize


def series(workdir: Path, frames: int, size: int, object_size: int) -> Path:
    """The parameter file of the simulated series of that shape in ``workdir`` (simulated once)."""
    folder = workdir / f"series-{frames}x{size}-{object_size}"
    params = folder / "params.json"
    if not params.exists():
        print(f"simulating {frames} × {size}² (object_size {object_size}) ...", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        params = simulate(folder, frames, size, object_size)
    return params


def warm_up(params: Path, *extra: str) -> None:
    """One run not counted: the series' files in the page cache, FFTW plans made, bytecode written."""
    m = run_measured(holodask_run(params, *extra), cwd=params.parent)
    if m.returncode:
        raise RuntimeError(f"warm-up run failed:\n{m.output[-3000:]}")


def alternate(variants: dict, repeats: int) -> dict:
    """Run every variant ``name: (params, extra args)`` ``repeats`` times, alternating, after
    one warm-up run of the first; ``{name: [Measurement, ...]}``."""
    first_params, first_extra = next(iter(variants.values()))
    warm_up(first_params, *first_extra)
    runs: dict = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (params, extra) in variants.items():
            m = run_measured(holodask_run(params, *extra), cwd=params.parent)
            if m.returncode:
                raise RuntimeError(f"{name} failed:\n{m.output[-3000:]}")
            runs[name].append(m)
            facts = run_facts(m.output)
            print(f"  {name}: {m.wall_s:.2f} s, peak {m.peak_rss_mib:.0f} MiB, raw alignment "
                  f"{facts['raw_alignment_s']:.2f} s, reconstruction "
                  f"{facts['reconstruction_s']:.2f} s, averaging {facts['rounds']} rounds in "
                  f"{facts['averaging_s']:.2f} s{', stack in a Zarr store' if facts['spilled'] else ''}", flush=True)
    return runs


def summary(measurements: list) -> dict:
    """Medians of a variant's runs (stage times from ``-v``) and its last run's facts."""
    facts = [run_facts(m.output) for m in measurements]
    return {"wall_s": statistics.median(m.wall_s for m in measurements),
            "peak_mib": statistics.median(m.peak_rss_mib for m in measurements),
            "raw_alignment_s": statistics.median(f["raw_alignment_s"] for f in facts),
            "reconstruction_s": statistics.median(f["reconstruction_s"] for f in facts),
            "averaging_s": statistics.median(f["averaging_s"] for f in facts),
            "rounds": facts[-1]["rounds"], "spilled": all(f["spilled"] for f in facts),
            "runs": len(measurements)}


def agreement(a: np.ndarray, b: np.ndarray) -> str:
    """"bit-identical", or the largest phase difference of two results."""
    if a.shape == b.shape and np.array_equal(a, b):
        return "bit-identical"
    return f"differ: largest phase difference {largest_phase_difference(a, b):.2e} rad"


def output_of(params: Path) -> Path:
    return params.with_suffix(".hdf5")


def large(args, workdir: Path) -> str:
    params = series(workdir, args.frames, args.size, args.object_size)
    n_bytes = stack_bytes(args.frames, args.object_size)
    variants = {"in memory": (variant(params, "in-memory"), []),
                f"--memory-limit {args.budget}": (variant(params, "budget"), ["--memory-limit", args.budget])}
    print(f"large: {args.frames} × {args.size}², {args.repeats} alternating runs each", flush=True)
    runs = alternate(variants, args.repeats)
    rows = {name: summary(ms) for name, ms in runs.items()}
    (mem_name, (mem_params, _)), (bud_name, (bud_params, _)) = variants.items()
    agree = agreement(read_result(output_of(bud_params))[0], read_result(output_of(mem_params))[0])
    lines = [f"Series larger than the budget: {args.frames} × {args.size}² holograms, object_size "
             f"{args.object_size}, threaded scheduler (reconstructed stack {n_bytes / 1e6:.0f} MB; held share of "
             f"{args.budget}: half), median of {args.repeats} alternating runs:", "",
             "| run | stack held | wall s | raw alignment s | reconstruction s | averaging s | frames/s (whole run) "
             "| peak MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {'Zarr store (by itself)' if r['spilled'] else 'in memory'} | {r['wall_s']:.1f} "
                     f"| {r['raw_alignment_s']:.1f} | {r['reconstruction_s']:.1f} | {r['averaging_s']:.1f} "
                     f"| **{args.frames / r['wall_s']:.0f}** "
                     f"| {r['peak_mib']:.0f} |")
    mem, bud = rows[mem_name], rows[bud_name]
    lines += ["", f"Budgeted / in memory: wall time **{bud['wall_s'] / mem['wall_s']:.2f}×**, peak memory "
                  f"**{bud['peak_mib'] / mem['peak_mib']:.2f}×**; `data`: **{agree}**."]
    if not bud["spilled"] or mem["spilled"]:
        lines.append("(Warning: the budgeted run should keep the stack in a Zarr store and the other in memory.)")
    return "\n".join(lines)


def flat(args, workdir: Path) -> str:
    params = {n: series(workdir, n, args.size, args.object_size) for n in (args.small, args.large)}
    print(f"flat: N={args.small} and N={args.large}, {args.repeats} alternating runs each", flush=True)
    for path in params.values():
        warm_up(path, "--memory-limit", args.flat_budget)
    rows = peak_memory(params, ["budget", "memory"], workdir, repeats=args.repeats, budget=args.flat_budget)
    parts = []
    for mode in ("budget", "memory"):
        heading = (f"Peak memory against series length, {args.size}² holograms, object_size {args.object_size}, "
                   f"threaded scheduler, {MEMORY_MODES[mode].format(budget=args.flat_budget)}, median of "
                   f"{args.repeats} alternating runs:")
        parts.append(memory_table(heading, rows[mode]))
    budget_rows = rows["budget"]
    ratio = budget_rows[-1]["peak_mib"] / budget_rows[0]["peak_mib"]
    spilled = all(r["spilled"] for r in budget_rows)
    verdict = (f"Under the budget N={args.large} / N={args.small}: {ratio:.2f}, "
               f"{'within' if ratio <= 1.3 else 'OVER'} the issue's 1.3"
               + ("" if spilled else f" (but not every budgeted run spilled: raise N={args.small} or lower "
                                     f"--flat-budget)") + ".")
    return "\n\n".join(parts + [verdict])


def tolerance(args, workdir: Path) -> str:
    params = series(workdir, args.tolerance_frames, args.tolerance_size, args.tolerance_object_size)
    variants = {"full rounds": (variant(params, "full"), [])}
    for tol in args.tolerances:
        variants[f"--tolerance {tol:g}"] = (variant(params, f"tolerance-{tol:g}"), ["--tolerance", f"{tol:g}"])
    print(f"tolerance: {args.tolerance_frames} × {args.tolerance_size}², {args.repeats} alternating runs each",
          flush=True)
    runs = alternate(variants, args.repeats)
    rows = {name: summary(ms) for name, ms in runs.items()}
    full_data, _ = read_result(output_of(variants["full rounds"][0]))
    full = rows["full rounds"]
    lines = [f"Early stop of the averaging, {args.tolerance_frames} × {args.tolerance_size}² holograms, "
             f"object_size {args.tolerance_object_size}, threaded scheduler, median of {args.repeats} alternating "
             f"runs:", "",
             "| rounds | convergence entries | averaging s | averaging / full | whole run s | whole run / full "
             "| phase Δ vs full rounds (rad, RMS) | largest phase Δ (rad) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        data, attrs = read_result(output_of(variants[name][0]))
        delta = phase_rms_difference(data, full_data)
        largest = largest_phase_difference(data, full_data)
        lines.append(f"| {name} | {len(attrs['convergence'])} | {r['averaging_s']:.2f} "
                     f"| **{r['averaging_s'] / full['averaging_s']:.2f}** | {r['wall_s']:.2f} "
                     f"| {r['wall_s'] / full['wall_s']:.2f} | {delta:.1e} | {largest:.1e} |")
    return "\n".join(lines)


def resume(args, workdir: Path) -> str:
    params = series(workdir, args.resume_frames, args.size, args.object_size)
    variants = {"plain": (variant(params, "plain"), []),
                f"--memory-limit {args.flat_budget}": (variant(params, "budgeted"),
                                                       ["--memory-limit", args.flat_budget]),
                "--resume": (variant(params, "resume"), ["--resume"])}
    print(f"resume: {args.resume_frames} × {args.size}², {args.repeats} alternating runs each", flush=True)
    runs = alternate(variants, args.repeats)
    rows = {name: summary(ms) for name, ms in runs.items()}
    agree = agreement(read_result(output_of(variants["--resume"][0]))[0],
                      read_result(output_of(variants["plain"][0]))[0])
    lines = [f"Cost of the checkpoints, {args.resume_frames} × {args.size}² holograms, object_size "
             f"{args.object_size}, threaded scheduler, uninterrupted runs, median of {args.repeats} alternating runs:",
             "", "| run | wall s | raw alignment s | reconstruction s | averaging s | peak MiB |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['raw_alignment_s']:.2f} | {r['reconstruction_s']:.2f} "
                     f"| {r['averaging_s']:.2f} "
                     f"| {r['peak_mib']:.0f} |")
    plain, checked = rows["plain"], rows["--resume"]
    budgeted = rows[f"--memory-limit {args.flat_budget}"]
    lines += ["", f"--resume / plain: wall time **{checked['wall_s'] / plain['wall_s']:.2f}×**, peak memory "
                  f"{checked['peak_mib'] / plain['peak_mib']:.2f}×; --resume / the budgeted run (its stack in a Zarr "
                  f"store too, no checkpoint): wall time **{checked['wall_s'] / budgeted['wall_s']:.2f}×**; `data` "
                  f"of --resume and plain: **{agree}**."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", default="all", choices=[*PARTS, "all"])
    ap.add_argument("--quick", action="store_true", help="tiny cases, one run each, nothing written")
    ap.add_argument("--frames", type=int, default=2000, help="series length of 'large'")
    ap.add_argument("--size", type=int, default=512, help="hologram size of 'large', 'flat' and 'resume'")
    ap.add_argument("--object-size", type=int, default=128)
    ap.add_argument("--budget", default="500MB", help="--memory-limit of 'large'")
    ap.add_argument("--small", type=int, default=50, help="short series of 'flat'")
    ap.add_argument("--large", type=int, default=400, help="long series of 'flat'")
    ap.add_argument("--flat-budget", default="10MB", help="--memory-limit of 'flat' (both series over half)")
    ap.add_argument("--tolerance-frames", type=int, default=60)
    ap.add_argument("--tolerance-size", type=int, default=1024)
    ap.add_argument("--tolerance-object-size", type=int, default=256)
    ap.add_argument("--tolerances", type=float, nargs="+", default=[1e-3, 1e-4, 1e-7])
    ap.add_argument("--resume-frames", type=int, default=400, help="series length of 'resume'")
    ap.add_argument("--repeats", type=int, default=None, help="runs of each variant (median; default 2, "
                                                              "3 for 'tolerance')")
    ap.add_argument("--workdir", help="keep the simulated series here and reuse them (default: a temporary "
                                      "folder, removed)")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if key != "repeats" or args.repeats is None:
                setattr(args, key, value)
    parts = PARTS if args.what == "all" else (args.what,)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="holodask-ooc-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    texts = []
    given_repeats = args.repeats
    try:
        for part in parts:
            args.repeats = given_repeats or (3 if part == "tolerance" else 2)
            texts.append({"large": large, "flat": flat, "tolerance": tolerance,
                          "resume": resume}[part](args, workdir))
            print("\n" + texts[-1] + "\n", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    command = shlex.join(["python", "benchmarks/out_of_core.py", *(sys.argv[1:] if argv is None else argv)])
    text = (f"Command: `{command}`. Load average (1, 5, 15 min) at the start: {load_before}; at the end: "
            f"{load_average()}.\n\n" + "\n\n".join(texts))
    print(text)
    if not (args.quick or args.no_write):
        print(f"appended to {append_results(args.results, f'out_of_core.py {args.what}', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
