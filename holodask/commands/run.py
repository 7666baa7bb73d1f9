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
    log.info("writing %s", params.output_name)
    with compute_context(options_from_args(args)) as client:
        run_pipeline(params, client=client, load=False)
    log.info("done in %.1f s", time.perf_counter() - started)
    return 0
