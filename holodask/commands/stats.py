"""``holodask stats``: statistics of a frame series: hot/dead pixels, cosmic rays,
frame outliers, and the per-pixel statistics, outlier masks and spot tables of
the ``lu_hdf2spots`` specification.

Options and defaults follow the ``lu_hdf2spots`` specification; see
:mod:`holodask.stats` for what is computed and the output layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from holodask.errors import DataError, InputFileError, ParameterError

HELP = ("series statistics of holograms (hot/dead pixels, cosmic rays, frame outliers) or any "
        "frame stack (per-pixel statistics, outlier masks, Laue spot tables as lu_hdf2spots)")

DESCRIPTION = """\
Per-pixel statistics over the frames of a series (trimmed average, standard
deviation, IQR, maximum), and what they show:

* hologram series: hot and dead pixels (fixed in every frame), cosmic rays and
  other short outliers (pixels at or above avg + CUTOFF * std in one frame; the
  test that the run parameter outlier_cutoff repairs with), and frames that stand out (many
  outlier pixels, or an unusual mean intensity: dose or exposure changes). A
  summary is printed;
* diffraction frame stacks (e.g. Laue series): the outlier masks are the
  reflexions, labelled into spot tables, optionally synchronised over laser
  off/on pairs or angle blocks.

Everything is written to OUTPUT (default INPUT__spots.h5) in the lu_hdf2spots
layout (stats/, info, masks_raw, masks_filtered, masks/, spots/, frame2spotsBE);
the counts of hot and dead pixels are attributes of info.
"""

HDF5_TYPES = ("h5", "hdf5", "hdf", "he5", "nxs")


def _structure(text: str) -> tuple[int, int]:
    try:
        rank, connectivity = (int(v) for v in text.split(","))
    except ValueError:
        raise ParameterError(
            f"-s/--structure: expected RANK,CONNECTIVITY (two integers, e.g. 2,2), got {text!r}"
        ) from None
    return rank, connectivity


def add_arguments(parser) -> None:
    import argparse

    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="series file spec(s) (path?key=value&...), e.g. file__mccd.h5")
    parser.add_argument("-o", "--output", metavar="FO", help="output HDF5 file [default: INPUT with __mccd "
                        "replaced by __spots, else NAME__spots.h5]")
    parser.add_argument("-m", "--method", default="n_removed", choices=("n_removed", "kruskal"),
                        help="background estimate [default: n_removed]; kruskal needs laser data")
    parser.add_argument("-n", "--n", type=float, default=25.0, dest="n_percent", metavar="N",
                        help="percent of largest values per pixel left out of avg/std/iqr; "
                        "0 means 25 [default: 25]")
    parser.add_argument("-A", "--alpha", type=float, default=0.05,
                        help="alpha of the Kruskal-Wallis test [default: 0.05]")
    parser.add_argument("-c", "--cutoff", type=float, default=3.0,
                        help="mask: I >= avg + CUTOFF * std [default: 3.0]")
    parser.add_argument("-e", "--erosions", type=int, default=1, metavar="N_EROSIONS", help="number of erosions [default: 1]")
    parser.add_argument("-d", "--dilations", type=int, default=2, metavar="N_DILATIONS",
                        help="number of dilations [default: 2]")
    parser.add_argument("-s", "--structure", default="2,2",
                        help="RANK,CONNECTIVITY of scipy.ndimage.generate_binary_structure [default: 2,2]")
    parser.add_argument("-a", "--angles", type=int, default=None, dest="min_angles", metavar="ANGLES",
                        help="minimum number of distinct angle values [default: 10 when the "
                        "series has angles, else no check; 0: no check]")
    parser.add_argument("-S", dest="sync", metavar="SYNC", default="none", choices=("none", "pairs", "blocks"),
                        help="synchronise masks over laser off/on pairs or angle blocks "
                        "(none, pairs, blocks) [default: none]")
    parser.add_argument("-C", "--compression", default="gzip", choices=("gzip", "lzf", "none"),
                        help="compression of the output datasets [default: gzip]")
    parser.add_argument("--angle-dataset", default=None, metavar="NAME",
                        help="per-frame angles in an HDF5 input [default: lauecollect/angle]")
    parser.add_argument("--laser-dataset", default=None, metavar="NAME",
                        help="per-frame laser flags in an HDF5 input [default: lauecollect/laser]")
    parser.add_argument("--memory", type=float, default=256.0, metavar="MIB",
                        help="working-memory budget of one statistics block in MiB [default: 256]")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages")
    from holodask.cluster import add_scheduler_arguments

    add_scheduler_arguments(parser)


def default_output(input_spec: str) -> Path:
    """``NAME__mccd.EXT`` -> ``NAME__spots.h5``; otherwise ``NAME__spots.h5`` beside the input."""
    from holodask.io.registry import parse_spec

    path = parse_spec(input_spec).path
    stem = path.stem
    stem = stem.replace("__mccd", "__spots") if "__mccd" in stem else f"{stem}__spots"
    return path.with_name(f"{stem}.h5")


def open_input(inputs: list[str]):
    """The series of the inputs (an ``xr.DataArray`` from :func:`holodask.series.open_series`)."""
    from holodask.series import open_series

    return open_series(inputs if len(inputs) > 1 else inputs[0])


def read_hdf5_frame_values(inputs: list[str], dataset: str | None, default: str,
                           n_frames: int) -> np.ndarray | None:
    """Per-frame values of ``dataset`` from HDF5 inputs (concatenated), or None.

    A dataset named explicitly must exist in every input; the default one is
    used only when every input has it.
    """
    import h5py

    from holodask.io.registry import parse_spec

    name = dataset or default
    specs = [parse_spec(s) for s in inputs]
    if not all(s.type in HDF5_TYPES for s in specs):
        if dataset:
            raise ParameterError(f"--{default.split('/')[-1]}-dataset {dataset!r}: "
                                 "only HDF5 inputs hold such datasets")
        return None
    parts = []
    for spec in specs:
        try:
            with h5py.File(spec.path, "r") as h5:
                if name not in h5:
                    if dataset:
                        raise InputFileError(f"{spec.path}: has no dataset {dataset!r}")
                    return None
                parts.append(np.asarray(h5[name][()]).ravel())
        except OSError as exc:
            if isinstance(exc, InputFileError):
                raise
            raise InputFileError(f"{spec.path}: cannot read HDF5 file ({exc})") from None
    values = np.concatenate(parts)
    if values.size != n_frames:
        raise DataError(f"{name}: {values.size} values for {n_frames} frames in "
                        f"{', '.join(str(s.path) for s in specs)}")
    return values


def run(args) -> int:
    from holodask.stats import SpotSettings, find_spots

    settings = SpotSettings(
        method=args.method,
        n_percent=args.n_percent,
        alpha=args.alpha,
        cutoff=args.cutoff,
        erosions=args.erosions,
        dilations=args.dilations,
        structure=_structure(args.structure),
        min_angles=args.min_angles,
        sync=args.sync,
        compression=args.compression,
        memory_bytes=int(args.memory * 2**20),
    )
    settings.validate()
    output = Path(args.output) if args.output else default_output(args.inputs[0])
    from holodask.io.registry import parse_spec

    from holodask.io.safe_write import same_file_as

    inputs = [str(parse_spec(s).path) for s in args.inputs]
    if any(parse_spec(s).path.resolve() == output.resolve() for s in args.inputs) or same_file_as(output, inputs):
        raise ParameterError(f"-o/--output: {output} is an input file; choose another name")

    from holodask.cluster import compute_context, options_from_args

    series = open_input(list(args.inputs))
    n_frames = series.shape[0]
    angles = read_hdf5_frame_values(args.inputs, args.angle_dataset, "lauecollect/angle", n_frames)
    laser = read_hdf5_frame_values(args.inputs, args.laser_dataset, "lauecollect/laser", n_frames)
    with compute_context(options_from_args(args), protected=(*inputs, str(output))):
        summary = find_spots(series, output, settings, laser=laser, angles=angles,
                             source=" ".join(args.inputs), protected=inputs)
    print(f"{output}: {summary['n_frames']} frames, {summary['n_masks']} masks, "
          f"{summary['n_spots']} spots (n_removed = {summary['n_removed']})")
    for line in summary_lines(summary, settings.cutoff):
        print(line)
    return 0


def _frames_text(frames, limit: int = 10) -> str:
    frames = [int(f) for f in frames]
    if not frames:
        return "none"
    text = ", ".join(str(f) for f in frames[:limit])
    return text + (f", ... ({len(frames)} frames)" if len(frames) > limit else "")


def _pixels_text(pixels, limit: int = 5) -> str:
    pixels = [(int(x), int(y)) for x, y in pixels]
    if not pixels:
        return ""
    text = " ".join(f"[{x}, {y}]" for x, y in pixels[:limit])
    return f" at [x, y] {text}" + (" ..." if len(pixels) > limit else "")


def summary_lines(summary: dict, cutoff: float) -> list[str]:
    """The printed series-quality summary of :func:`holodask.stats.find_spots`'s result."""
    from holodask.stats import DEFECT_SIGMAS, FRAME_OUTLIER_SIGMAS

    hot, dead = summary["hot_pixels"], summary["dead_pixels"]
    counts = np.asarray(summary["frame_outlier_pixels"])
    means = np.asarray(summary["frame_mean"])
    worst = int(np.argmax(counts)) if counts.size else 0
    lines = [
        f"hot pixels:  {len(hot)}{_pixels_text(hot)}",
        f"dead pixels: {len(dead)}{_pixels_text(dead)}",
        f"  (of {summary['n_pixels']}; average {DEFECT_SIGMAS:g} robust sigmas above/below its 3x3 "
        "neighbourhood, or dead: constant over the series)",
    ]
    if counts.size:
        lines.append(f"outlier pixels per frame (I >= avg + {cutoff:g} std; cosmic rays): median "
                     f"{np.median(counts):g}, max {counts[worst]} (frame {worst}), total {counts.sum()}")
        lines.append(f"frames with many outlier pixels: {_frames_text(summary['frames_many_outliers'])}")
        lines.append(f"frame mean intensity: median {np.median(means):.6g}, range {means.min():.6g} .. "
                     f"{means.max():.6g}; outlying frames: {_frames_text(summary['frames_odd_mean'])}")
        lines.append(f"  (frames: positions 0..{counts.size - 1} in the series; outlying: "
                     f"{FRAME_OUTLIER_SIGMAS:g} robust sigmas from the median)")
    return lines
