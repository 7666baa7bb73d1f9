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
    windows = parser.add_argument_group("window averages (in-situ series; the parameters window, window_step, "
                                        "window_log, weights)")
    windows.add_argument("--window", type=int, default=None, metavar="K",
                         help="average windows of K consecutive holograms instead of the whole series, all "
                              "registered to the first window: data and variance become (window, y, x)")
    windows.add_argument("--step", type=int, default=None, metavar="S",
                         help="holograms from one window's start to the next (default K: side by side; "
                              "S < K: sliding windows)")
    windows.add_argument("--log", default=None, metavar="LOG.csv",
                         help="a CSV log (header row; first column the time: 'time_s' for seconds since 1970 UTC, "
                              "else seconds since the first hologram) joined onto the windows")
    windows.add_argument("--weights", default=None, metavar="W",
                         help="weights of the holograms: the name of a per-frame coordinate, or a file "
                              "(.txt, .csv, .dat, .npy) of one weight per hologram")
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
    params = _with_window_options(params, args)
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


def _with_window_options(params, args):
    """The parameters with ``--window``, ``--step``, ``--log`` and ``--weights`` (files taken from
    the current folder), checked with the parameter file's own as one set; recorded with them."""
    given = {key: value for key, value in (("window", args.window), ("window_step", args.step),
                                           ("window_log", args.log), ("weights", args.weights))
             if value is not None}
    if not given:
        return params
    import os

    from holodask.params import WEIGHTS_FILE_EXTENSIONS, parse_parameters

    if "window_log" in given:
        given["window_log"] = os.path.abspath(given["window_log"])
    weights = given.get("weights")
    if weights is not None and (weights.lower().endswith(WEIGHTS_FILE_EXTENSIONS) or os.sep in weights
                                or "/" in weights):
        given["weights"] = os.path.abspath(weights)
    raw = {**params.raw, **given}
    return parse_parameters(raw, params.folder, parameter_file=params.parameter_file)
