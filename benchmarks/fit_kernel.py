"""Per-call cost of the fine-alignment kernel :func:`holodask.align.fit_to_average`.

Simulates a short series (8 holograms of 1024 px, object size 256), reconstructs
it with the pipeline (``output_series``), then runs the averaging rounds in this
process (synchronous scheduler) with ``fit_to_average`` wrapped so that every
call is timed and its FFTs counted. Cold calls are those of the first round
(start at zero shift); warm calls those of the later rounds (start at the
previous round's state); each configuration (shift; shift + defocus from round
3; shift + tilt) reports calls, median wall and thread-CPU time per call and
FFTs per call. ``--params`` reconstructs an existing series instead (e.g. the
60-hologram one). Run with ``OPENBLAS_NUM_THREADS=1`` on a shared machine.

Usage::

    PYTHONPATH=$PWD python benchmarks/fit_kernel.py [--workdir DIR] [--frames 8] [--repeat 3]
    PYTHONPATH=$PWD python benchmarks/fit_kernel.py --workdir /tmp/fb60 --params /tmp/s60/params.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np


def _reconstructed_stack(workdir: Path, n_frames: int, params_file=None):
    import holodask
    from holodask import pipeline, simulate
    from holodask.results import open_result

    result_path = workdir / "result.hdf5"
    if not result_path.exists():
        import json5

        if params_file is not None:  # an existing series: reconstruct it into workdir
            raw = json5.loads(Path(params_file).read_text())
            raw["output_series"] = True
            raw["output_name"] = str(result_path)
            pipeline.run(holodask.load_parameters(raw, basepath=Path(params_file).parent),
                         basepath=Path(params_file).parent)
            return _reconstructed_stack(workdir, n_frames)
        simulate.simulate_series(workdir, n_frames=n_frames, size_px=1024, object_size_px=256, dose_e_per_px=500,
                                 drift_step_px=0.5, biprism_phase_jitter_rad=0.3, seed=7, texture_contrast=0.1)
        params_path = workdir / "params.json"
        text = params_path.read_text()
        raw = json5.loads(text)
        raw["output_series"] = True
        raw["output_name"] = str(result_path)
        pipeline.run(holodask.load_parameters(raw, basepath=workdir), basepath=workdir)
    result = open_result(result_path)
    series = np.asarray(result["series"].values, dtype=np.complex64)
    sampling = float(result.attrs.get("sampling_nm", 0) or 0)
    if not sampling:
        x = result["series"].coords["series_x"].values
        sampling = float(x[1] - x[0])
    return series, sampling


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/holodask-fitbench")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--params", help="reconstruct this existing series (parameter file) instead of simulating")
    parser.add_argument("--repeat", type=int, default=3, help="averaging runs per configuration (best kept)")
    args = parser.parse_args(argv)

    from holodask import align, fft
    from holodask.stages import rounds as average
    from holodask.align import alignment_grid

    os.environ["HOLODASK_SCHEDULER"] = "synchronous"  # one call at a time: clean per-call times
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    series, sampling = _reconstructed_stack(workdir, args.frames, args.params)
    n, size = series.shape[0], series.shape[1]
    grid = alignment_grid((size, size), sampling, 300.0)
    stack = da.from_array(series, chunks=(1, size, size))

    counts = {"fft": 0}
    originals = {name: getattr(fft, name) for name in ("fft2", "ifft2")}

    def counting(name):
        function = originals[name]

        def wrapped(*a, **k):
            counts["fft"] += 1
            return function(*a, **k)
        return wrapped

    records = []
    kernel = align.fit_to_average

    def timed(wave, average_spectrum, state, grid, **kwargs):
        before = counts["fft"]
        started, started_cpu = time.perf_counter(), time.thread_time()
        out = kernel(wave, average_spectrum, state, grid, **kwargs)
        elapsed, cpu = time.perf_counter() - started, time.thread_time() - started_cpu
        kind = "warm" if kwargs.get("return_start_error") else "cold"
        key = kind + ("+defocus" if kwargs.get("fit_defocus") else "") + ("+tilt" if kwargs.get("fit_tilt") else "")
        records.append((key, elapsed, counts["fft"] - before, cpu))
        return out

    report = {"frames": n, "size_px": size, "backend": fft.backend()}
    configurations = {"shift": dict(), "shift+defocus": dict(fit_defocus=True, defocus_start=2),
                      "shift+tilt": dict(fit_tilt=True)}
    for fft_name in originals:
        setattr(fft, fft_name, counting(fft_name))
    average.fit_to_average = timed
    try:
        for label, options in configurations.items():
            best = None
            for _ in range(args.repeat):
                records.clear()
                started = time.perf_counter()
                average.average_series(stack, grid, np.zeros(n), iterations=7, variance=False, **options)
                total = time.perf_counter() - started
                summary = {}
                for key in sorted({r[0] for r in records}):
                    times = np.array([r[1] for r in records if r[0] == key])
                    ffts = np.array([r[2] for r in records if r[0] == key])
                    cpu = np.array([r[3] for r in records if r[0] == key])
                    summary[key] = {"calls": len(times), "median_ms": round(1e3 * float(np.median(times)), 3),
                                    "median_cpu_ms": round(1e3 * float(np.median(cpu)), 3),
                                    "mean_ms": round(1e3 * float(times.mean()), 3),
                                    "ffts_per_call": round(float(ffts.mean()), 2)}
                if best is None or total < best[0]:
                    best = (total, summary)
            report[label] = {"averaging_s": round(best[0], 3), **best[1]}
    finally:
        average.fit_to_average = kernel
        for fft_name, function in originals.items():
            setattr(fft, fft_name, function)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
