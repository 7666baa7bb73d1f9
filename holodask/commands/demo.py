"""``holodask demo``: simulate a small series, reconstruct and average it, draw it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

HELP = "simulate a small hologram series, run the pipeline on it and draw the result (seconds)"


def add_arguments(parser) -> None:
    parser.add_argument("directory", nargs="?", default="holodask-demo",
                        help="folder for the simulated files and the result (default: holodask-demo)")
    parser.add_argument("--frames", type=int, default=16, help="holograms in the object series (default 16)")
    parser.add_argument("--size", type=int, default=512, help="hologram size in px (default 512)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("-v", "--verbose", action="count", default=0)


def run(args) -> int:
    from holodask.params import load_parameters
    from holodask.pipeline import run as run_pipeline
    from holodask.quicklook import save_quicklook
    from holodask.simulate import simulate_series

    outdir = Path(args.directory).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sim = simulate_series(
        outdir,
        n_frames=args.frames,
        size_px=args.size,
        object_size_px=args.size // 4,
        dose_e_per_px=200.0,
        drift_step_px=0.7,
        biprism_phase_jitter_rad=0.3,
        contrast_jitter=0.05,
        seed=args.seed,
    )
    t1 = time.perf_counter()
    print(f"simulated {args.frames} object holograms and an empty hologram of {args.size}x{args.size} px "
          f"in {outdir} ({t1 - t0:.1f} s)")
    from dataclasses import replace

    from holodask.results import open_result

    params = replace(load_parameters(sim.params_path), output_series=True)
    result = run_pipeline(params)
    t2 = time.perf_counter()
    result_path = Path(params.output_name)
    png = save_quicklook(result, outdir / "result.png")
    with open_result(result_path) as written:
        single = sim.phase_error_rad(np.asarray(written["series"][0])) if "series" in written else None
    average = sim.phase_error_rad(result["data"].values)
    print(f"reconstructed and averaged in {t2 - t1:.1f} s")
    print(f"phase error against the simulated truth: {average:.3f} rad RMS"
          + (f" (one hologram alone: {single:.3f} rad)" if single is not None else ""))
    print(f"result:      {result_path}")
    print(f"quick look:  {png}")
    print(f"parameters:  {sim.params_path}")
    print()
    print("Next steps:")
    print(f"  holodask show {result_path}        # draw it again, or with --prefix")
    print(f"  holodask info {result_path}        # datasets, parameters, per-hologram fit")
    print("  On your own data: holodask info 'hologram.dm3' --fft  (prints sideband_pos), write a")
    print(f"  parameter file like {sim.params_path.name} and run: holodask run params.json")
    return 0
