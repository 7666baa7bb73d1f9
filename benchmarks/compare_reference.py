"""Speed and memory of holodask against the reference program on the same files.

For each case a series is simulated (``holodask.simulate``), then the
reference program (``python -m holoaverage``) and holodask (``python -m
holodask run``) are run alternately on the same files with the same parameter
file (only ``output_name`` differs). Reported per case: median wall time of
both and their ratio, peak memory of both (whole process tree), the phase
agreement of the two ``data`` (RMS over the inner half after removing one
global phase) and the FFT bound: the measured time of
N x (one camera-size real FFT + rounds x 3 object-size complex FFTs) with the
FFT library holodask uses, single-threaded, and holodask's ratio to it.

Usage::

    python benchmarks/compare_reference.py                 # all cases, writes benchmarks/RESULTS.md
    python benchmarks/compare_reference.py --quick         # one small case, prints only
    python benchmarks/compare_reference.py --cases 60x1024 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine_facts, phase_rms_difference, read_result, run_measured  # noqa: E402

from holodask.params import parse_parameter_text  # noqa: E402

#: name -> (frames, camera size px, object_size px, defocus fit)
CASES = {
    "20x1024": (20, 1024, 256, False),
    "60x1024": (60, 1024, 256, False),
    "20x2048": (20, 2048, 512, False),
    "20x1024-defocus": (20, 1024, 256, True),
}
QUICK = {"8x512": (8, 512, 128, False)}
OBJECT_ROUNDS = 7


def fft_bound_s(n_frames: int, size_px: int, object_size_px: int, rounds: int = OBJECT_ROUNDS) -> float:
    """N x (one real FFT of the camera frame + rounds x 3 complex FFTs of the object size), in s."""
    from holodask import fft

    fft.set_fft_threads(1)
    frame = np.random.default_rng(0).random((size_px, size_px), dtype=np.float32)
    wave = (frame[:object_size_px, :object_size_px] + 1j).astype(np.complex64)

    def per_call(func, arg, repeats=10, sets=5):
        """The smallest of ``sets`` medians of ``repeats`` calls (a floor, robust to noise)."""
        func(arg)  # plan
        medians = []
        for _ in range(sets):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                func(arg)
                times.append(time.perf_counter() - t0)
            medians.append(statistics.median(times))
        return min(medians)

    return n_frames * (per_call(fft.rfft2, frame) + rounds * 3 * per_call(fft.fft2, wave))


def run_case(name, frames, size_px, object_size_px, defocus, repeats, workdir: Path) -> dict:
    from holodask.simulate import simulate_series

    folder = workdir / name
    sim = simulate_series(
        folder, n_frames=frames, size_px=size_px, object_size_px=object_size_px,
        dose_e_per_px=500.0, drift_step_px=0.5, biprism_phase_jitter_rad=0.3,
        defocus_step_nm=5.0 if defocus else 0.0, seed=7, texture_contrast=0.1,
    )
    base = parse_parameter_text(Path(sim.params_path).read_text())
    base["adjust_defocus"] = bool(defocus)
    for prog in ("reference", "holodask"):
        p = dict(base, output_name=f"{prog}.hdf5")
        (folder / f"{prog}.json").write_text(json.dumps(p, indent=1))
    commands = {
        "reference": [sys.executable, "-m", "holoaverage", str(folder / "reference.json")],
        "holodask": [sys.executable, "-m", "holodask", "run", str(folder / "holodask.json")],
    }
    runs = {"reference": [], "holodask": []}
    for _ in range(repeats):
        for prog in ("reference", "holodask"):
            m = run_measured(commands[prog], cwd=folder)
            if m.returncode != 0:
                raise RuntimeError(f"{name}: {prog} failed:\n{m.output[-3000:]}")
            runs[prog].append(m)
    ref_data = read_result(folder / "reference.hdf5")[0]
    hd_data = read_result(folder / "holodask.hdf5")[0]
    bound = fft_bound_s(frames, size_px, object_size_px)
    med = {k: statistics.median(m.wall_s for m in v) for k, v in runs.items()}
    peak = {k: max(m.peak_rss_mib for m in v) for k, v in runs.items()}
    return {
        "case": name, "frames": frames, "size": size_px, "object_size": object_size_px,
        "defocus_fit": defocus, "repeats": repeats,
        "reference_s": med["reference"], "holodask_s": med["holodask"],
        "ratio": med["holodask"] / med["reference"],
        "reference_mib": peak["reference"], "holodask_mib": peak["holodask"],
        "phase_rms_rad": phase_rms_difference(hd_data, ref_data),
        "truth_error_reference_rad": sim.phase_error_rad(ref_data),
        "truth_error_holodask_rad": sim.phase_error_rad(hd_data),
        "fft_bound_s": bound, "bound_ratio": med["holodask"] / bound,
    }


def table(rows) -> str:
    head = ("| case | frames × size (object) | defocus fit | reference s | holodask s | holodask / reference "
            "| reference MiB | holodask MiB | phase Δ vs reference (rad) | FFT bound s | holodask / bound |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['frames']} × {r['size']}² ({r['object_size']}) | {'yes' if r['defocus_fit'] else 'no'} "
            f"| {r['reference_s']:.2f} | {r['holodask_s']:.2f} | **{r['ratio']:.3f}** | {r['reference_mib']:.0f} "
            f"| {r['holodask_mib']:.0f} | {r['phase_rms_rad']:.4f} | {r['fft_bound_s']:.3f} | **{r['bound_ratio']:.2f}** |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=None, help=f"subset of {list(CASES)}")
    ap.add_argument("--quick", action="store_true", help="one small case, nothing written")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each program per case (median)")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--keep", action="store_true", help="keep the simulated files")
    args = ap.parse_args(argv)
    cases = QUICK if args.quick else {k: CASES[k] for k in (args.cases or CASES)}
    workdir = Path(tempfile.mkdtemp(prefix="holodask-bench-"))
    rows = []
    try:
        for name, spec in cases.items():
            print(f"{name}: simulating and running ({args.repeats} repeats each) ...", flush=True)
            rows.append(run_case(name, *spec, args.repeats, workdir))
            print(table(rows[-1:]), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    text = table(rows)
    print()
    print(text)
    if not args.quick:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        section = (f"\n## compare_reference.py, {stamp}\n\nMachine: {machine_facts()}.\n"
                   f"Median of {args.repeats} alternating runs per program; peak memory is the largest "
                   f"sum of RSS over the process tree. Truth phase error (rad) reference / holodask: "
                   + ", ".join(f"{r['case']} {r['truth_error_reference_rad']:.3f} / {r['truth_error_holodask_rad']:.3f}"
                               for r in rows)
                   + f".\n\n{text}\n")
        path = Path(args.results)
        if not path.exists():
            path.write_text("# Benchmark results\n\nWritten by the scripts in this folder; newest last.\n")
        with path.open("a") as fh:
            fh.write(section)
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
