"""Window averages against a plain average: cost and memory.

``holodask run params.json`` against ``holodask run params.json --window K
[--step S]`` on the same simulated series (drift, biprism jitter, a support-film
texture), whole processes timed from start to exit and alternated, so that a
change in the machine's speed hits both alike; the median of ``--repeats`` runs
of each, after one uncounted run of each (FFTW measures the plans of a new size
once, in whichever run comes first). Peak memory is the largest sum of the resident set sizes over the
process tree (:mod:`_measure`). The averaging stage's own time is the one
``holodask run -v`` reports (``averaging: ... in X s``). Also reported: the
phase agreement of the windows (RMS phase difference of each window from the
first over the central half, nothing removed) against what their noise gives
(each window against the simulated truth).

Usage::

    python benchmarks/windows.py                     # the default cases, appended to RESULTS.md
    python benchmarks/windows.py --case 24x1024:8 --case 240x512:8:4 --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine_facts, run_measured  # noqa: E402

#: FRAMESxSIZE:WINDOW[:STEP] (object_size = SIZE / 4)
DEFAULT_CASES = ("24x1024:8", "240x512:8", "240x512:8:4", "240x512:24")
AVERAGING = re.compile(r"averaging: [^\n]*? in ([0-9.]+) s")


def parse_case(text: str) -> tuple[int, int, int, int | None]:
    series, _, windows = text.partition(":")
    frames, size = (int(v) for v in series.split("x"))
    parts = [int(v) for v in windows.split(":")]
    return frames, size, parts[0], (parts[1] if len(parts) > 1 else None)


def simulate(folder: Path, frames: int, size: int):
    from holodask.simulate import simulate_series

    return simulate_series(folder, n_frames=frames, size_px=size, object_size_px=size // 4, dose_e_per_px=500.0,
                           drift_step_px=0.5, biprism_phase_jitter_rad=0.5, seed=11, texture_contrast=0.1)


def holodask_cmd(params: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "holodask", "run", str(params), "-v", "--quiet", *extra]


def _agreement(sim, result_path: Path) -> tuple[float, float]:
    """(largest RMS phase difference of a window from the first, the same expected from
    the windows' noise: the largest sqrt(e_0^2 + e_w^2) of their truth errors)."""
    import holodask

    data = holodask.open_result(result_path)["data"].values
    ny, nx = data.shape[1:]
    inner = (slice(ny // 4, ny - ny // 4), slice(nx // 4, nx - nx // 4))
    errors = [sim.phase_error_rad(wave) for wave in data]
    differences = [float(np.sqrt(np.mean(np.angle(data[w][inner] * np.conj(data[0][inner])) ** 2)))
                   for w in range(1, len(data))]
    expected = [float(np.hypot(errors[0], errors[w])) for w in range(1, len(data))]
    return max(differences), max(expected)


def run_case(case: str, workdir: Path, repeats: int) -> tuple[str, dict]:
    frames, size, window, step = parse_case(case)
    sim = simulate(workdir / case.replace(":", "_"), frames, size)
    params = Path(sim.params_path)
    extra = ["--window", str(window)] + (["--step", str(step)] if step else [])
    runs: dict[str, list] = {"plain": [], "windows": []}
    for options in ([], extra):  # warm-up, not counted: FFTW plans of a new size are measured once
        run_measured(holodask_cmd(params, *options), cwd=params.parent)
    for _ in range(repeats):
        for kind, options in (("plain", []), ("windows", extra)):
            m = run_measured(holodask_cmd(params, *options), cwd=params.parent)
            if m.returncode:
                raise RuntimeError(m.output[-3000:])
            averaging = [float(t) for t in AVERAGING.findall(m.output)]
            runs[kind].append((m.wall_s, m.peak_rss_mib, averaging[-1] if averaging else float("nan")))
            print(f"{case} {kind}: {m.wall_s:.2f} s, averaging {runs[kind][-1][2]:.2f} s, "
                  f"peak {m.peak_rss_mib:.0f} MiB", flush=True)
    difference, expected = _agreement(sim, sim.result_path)
    shutil.rmtree(sim.outdir, ignore_errors=True)
    median = {kind: [statistics.median(v[i] for v in values) for i in range(3)] for kind, values in runs.items()}
    # the machine's speed may change between runs (a shared machine): the runs of a pair follow each other,
    # so the median of the pairs' ratios is the figure to read
    pairs = [[w[i] / p[i] for p, w in zip(runs["plain"], runs["windows"])] for i in range(3)]
    ratio = [statistics.median(values) for values in pairs]
    n_windows = len(range(0, frames - window + 1, step or window))
    facts = dict(case=case, frames=frames, size=size, window=window, step=step or window, n_windows=n_windows,
                 plain=median["plain"], windows=median["windows"], ratio=ratio, difference=difference,
                 expected=expected)
    (pw, pm, pa), (ww, wm, wa) = median["plain"], median["windows"]
    row = (f"| {frames} × {size}² ({size // 4}) | {window} / {step or window} ({n_windows}) | {pw:.2f} | {ww:.2f} | "
           f"**{ratio[0]:.2f}** | {pa:.2f} | {wa:.2f} | **{ratio[2]:.2f}** | {pm:.0f} | {wm:.0f} | {ratio[1]:.2f} | "
           f"{difference:.4f} / {expected:.4f} |")
    return row, facts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", help="FRAMESxSIZE:WINDOW[:STEP] (repeatable)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="holodask-windows-"))
    rows = []
    try:
        for case in args.case or DEFAULT_CASES:
            rows.append(run_case(case, workdir, args.repeats)[0])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = [f"Median of {args.repeats} alternating runs each, whole processes (`holodask run` against "
             "`holodask run --window K [--step S]`, threaded scheduler, stack held in memory); averaging: the stage "
             "time `-v` reports; ratios: the median of the ratios of the runs of each pair (one after the other, "
             "so that a change of the machine's speed between pairs cancels); agreement: the largest RMS phase "
             "difference of a window from the first (central half, nothing removed) against sqrt(e0² + ew²) of "
             "their errors against the truth.", "",
             "| series (object) | window / step (windows) | plain s | windows s | windows / plain | plain averaging s | "
             "windows averaging s | ratio | plain MiB | windows MiB | ratio | agreement / from noise (rad) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        with Path(args.results).open("a") as fh:
            fh.write(f"\n## windows.py, {stamp}\n\nMachine: {machine_facts()}.\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
