"""``holodask show``: quick-look PNG of a result file."""

from __future__ import annotations

from pathlib import Path

from holodask.errors import InputFileError

HELP = "draw amplitude, phase, variance and the per-hologram fit of a result as a PNG"


def add_arguments(parser) -> None:
    parser.add_argument("result", help="result HDF5 file written by holodask run (or holoaverage)")
    parser.add_argument("--prefix", default="", help="output_prefix the result was written with")
    parser.add_argument("--png", default=None, help="PNG file to write (default: RESULT with .png)")
    parser.add_argument("--no-unwrap", action="store_true", help="do not draw the unwrapped phase")
    parser.add_argument("-v", "--verbose", action="count", default=0)


def run(args) -> int:
    from holodask.quicklook import save_quicklook
    from holodask.results import open_result

    result_path = Path(args.result)
    if not result_path.is_file():
        raise InputFileError(f"{result_path}: result file not found")
    png = Path(args.png) if args.png else result_path.with_suffix(".png")
    with open_result(result_path, prefix=args.prefix) as result:
        save_quicklook(result, png, unwrap=not args.no_unwrap)
    print(f"wrote {png}")
    return 0
