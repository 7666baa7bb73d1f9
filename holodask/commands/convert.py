"""``holodask convert``: copy any readable series into an HDF5 image series or a frame cache."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from holodask.errors import ParameterError

HELP = "convert a series of frames into an HDF5 image series or a sparse frame cache"

_SUFFIX_FORMATS = {
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".npz": "frame-cache",
    ".yml": "frame-cache",
    ".yaml": "frame-cache",
}

#: per-frame coordinates that describe the run, not the container
_DERIVED_COORDS = ("frame", "y", "x", "defocus_nm")
_CALIBRATION = ("sampling_nm", "voltage_kV", "binning", "microscope", "detector")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="file spec of the series (path?key=value&...)")
    parser.add_argument("output", metavar="OUTPUT", help="file to write")
    parser.add_argument(
        "--format",
        choices=("hdf5", "frame-cache"),
        help="output container (default: from OUTPUT's extension: .h5/.hdf5 -> hdf5, "
        ".npz/.yml -> frame-cache)",
    )
    group = parser.add_argument_group("hdf5")
    group.add_argument("--path", help="HDF5 group that receives the dataset 'images' (required)")
    group.add_argument("--gzip", type=int, default=None, help="gzip level 0-9 (default 1; 0: none)")
    group.add_argument("--no-shuffle", action="store_true", help="do not apply the shuffle filter")
    group.add_argument("--chunk-rows", type=int, default=None, help="rows per chunk (default: all)")
    group = parser.add_argument_group("frame-cache")
    group.add_argument(
        "--threshold", type=float, default=None, help="values at or below it are dropped (required)"
    )
    group.add_argument(
        "--output-yaml", action="store_true", help="write the YAML form (OUTPUT is the .yml file)"
    )


class _Frames:
    """The frames of a series, read one at a time (sized, re-iterable)."""

    def __init__(self, n_frames: int, read):
        self._n_frames = n_frames
        self._read = read

    def __len__(self) -> int:
        return self._n_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(self._n_frames):
            yield self._read(index)


def open_input(spec: str) -> tuple[_Frames, dict[str, Any]]:
    """The frames of ``spec`` (read lazily, one at a time) and the metadata to carry over.

    Calibration (``sampling_nm``, ``voltage_kV``, ``binning``, ``microscope``,
    ``detector``) comes from the series' attributes, per-frame values from its
    per-frame coordinates (``defocus_nm``, set by a run's parameters, is left out).
    """
    from holodask.series import open_series

    series = open_series(spec)
    metadata: dict[str, Any] = {}
    for name in _CALIBRATION:
        value = series.attrs.get(name)
        if value is not None and not (name == "binning" and value == 1):  # 1: open_series' default
            metadata[name] = value
    for name, coord in series.coords.items():
        if name not in _DERIVED_COORDS and coord.dims == ("frame",):
            metadata[name] = np.asarray(coord.values)

    def read(index: int) -> np.ndarray:
        return np.asarray(series.isel(frame=index).values)

    return _Frames(series.sizes["frame"], read), metadata


def _choose_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.output).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise ParameterError(
            f"--format: cannot tell the output format from {args.output!r}; "
            "give --format hdf5 or --format frame-cache"
        )
    return _SUFFIX_FORMATS[suffix]


def run(args: argparse.Namespace) -> int:
    from holodask.io.imageseries import write_frame_cache, write_hdf5_series

    output_format = _choose_format(args)
    if output_format == "hdf5":
        for flag, given in (("--threshold", args.threshold is not None), ("--output-yaml", args.output_yaml)):
            if given:
                raise ParameterError(f"{flag} applies only to --format frame-cache")
        if not args.path:
            raise ParameterError("--path: the HDF5 group to write is required with --format hdf5")
        gzip = 1 if args.gzip is None else args.gzip
        if not 0 <= gzip <= 9:
            raise ParameterError(f"--gzip: compression level must be from 0 to 9, got {gzip}")
        if args.chunk_rows is not None and args.chunk_rows < 1:
            raise ParameterError(f"--chunk-rows: expected a positive number of rows, got {args.chunk_rows}")
    else:
        for flag, given in (
            ("--path", args.path is not None),
            ("--gzip", args.gzip is not None),
            ("--no-shuffle", args.no_shuffle),
            ("--chunk-rows", args.chunk_rows is not None),
        ):
            if given:
                raise ParameterError(f"{flag} applies only to --format hdf5")
        if args.threshold is None:
            raise ParameterError("--threshold: required with --format frame-cache")
        if not np.isfinite(args.threshold):
            raise ParameterError(f"--threshold: expected a finite number, got {args.threshold}")
        if args.output_yaml and Path(args.output).suffix.lower() not in (".yml", ".yaml"):
            raise ParameterError("--output-yaml: OUTPUT must be a .yml or .yaml file")

    frames, metadata = open_input(args.input)
    output = Path(args.output).absolute()
    from holodask.io.registry import parse_spec

    protected = [str(parse_spec(args.input).path)]
    if output_format == "hdf5":
        count = write_hdf5_series(
            frames,
            output,
            args.path,
            gzip=gzip,
            shuffle=not args.no_shuffle,
            chunk_rows=args.chunk_rows,
            metadata=metadata,
            protected=protected,
        )
        where = f"{output} (group {args.path.strip('/')}/images)"
    else:
        count = write_frame_cache(
            frames, output, args.threshold, output_yaml=args.output_yaml, metadata=metadata,
            protected=protected,
        )
        where = str(output)
    print(f"holodask: wrote {count} frame{'s' if count != 1 else ''} to {where}")
    return 0
