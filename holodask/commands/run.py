"""``holodask run PARAMS``: reconstruct and average as the reference program does."""

from __future__ import annotations

import argparse
import logging
import time

HELP = "reconstruct and average a hologram series from a parameter file (as holoaverage does)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from holodask.cluster import add_scheduler_arguments

    parser.add_argument("params", metavar="PARAMS",
                        help="parameter file (JSON, the reference format), or '-' to read it from stdin; "
                             "the output defaults to its name with the extension .hdf5")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="report progress (-v) and details (-vv)")
    parser.add_argument("--fft-threads", type=int, default=None, metavar="N",
                        help="threads inside each FFT (default 1: Dask already uses every core)")
    parser.add_argument("--resume", action="store_true",
                        help="keep checkpoints (raw shifts, reconstructed holograms, each averaging round) beside "
                             "the output (or in --scratch) and continue from them after a kill; removed at the end")
    parser.add_argument("--tolerance", type=float, default=None, metavar="REL",
                        help="end the averaging rounds once the residual changes by less than REL (relative) "
                             "from one round to the next (default: the reference's fixed rounds)")
    add_scheduler_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from holodask import fft
    from holodask.cluster import compute_context, options_from_args
    from holodask.params import load_parameters
    from holodask.pipeline import run as run_pipeline

    log = logging.getLogger("holodask")
    if args.fft_threads:
        fft.set_fft_threads(args.fft_threads)
    started = time.perf_counter()
    params = load_parameters(args.params)
    if args.tolerance is not None:
        params = _with_tolerance(params, args.tolerance)
    log.info("writing %s", params.output_name)
    # the performance report may overwrite neither an input nor an output of the run
    outputs = [params.output_name, params.output_qpimage]
    if params.output_qpimage and params.output_series:
        from holodask.io.qpimage_export import average_path

        outputs.append(str(average_path(params.output_qpimage)))
    protected = tuple(params.protected_paths() + [p for p in outputs if p])
    with compute_context(options_from_args(args), protected=protected) as client:
        run_pipeline(params, client=client, load=False, resume=args.resume)
    log.info("done in %.1f s", time.perf_counter() - started)
    return 0


def _with_tolerance(params, tolerance: float):
    """The parameters with ``--tolerance`` (checked as the parameter; recorded with them)."""
    import dataclasses

    from holodask.params import parse_parameters

    checked = parse_parameters({"tolerance": tolerance}, partial=True).tolerance
    return dataclasses.replace(params, tolerance=checked, raw={**params.raw, "tolerance": checked})
