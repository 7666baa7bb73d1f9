"""``holodask show``: quick-look PNG of a result file."""

from __future__ import annotations

from pathlib import Path

from holodask.errors import InputFileError, ParameterError

HELP = ("draw amplitude, phase, variance and the per-hologram fit of a result as a PNG (window averages: a strip "
        "of their phase, or an animated GIF)")


def add_arguments(parser) -> None:
    parser.add_argument("result", help="result HDF5 file written by holodask run (or holoaverage)")
    parser.add_argument("--prefix", default="", help="output_prefix the result was written with")
    parser.add_argument("--png", default=None, help="PNG file to write (default: RESULT with .png)")
    parser.add_argument("--no-unwrap", action="store_true", help="do not draw the unwrapped phase")
    parser.add_argument("--gif", default=None, metavar="FILE.gif",
                        help="window averages (run --window): also write their phase as an animated GIF")
    parser.add_argument("--fps", type=float, default=4.0, help="windows per second of the GIF (default 4)")
    parser.add_argument("-v", "--verbose", action="count", default=0)


def run(args) -> int:
    from holodask.quicklook import save_quicklook, save_window_animation, windowed
    from holodask.results import open_result

    result_path = Path(args.result)
    if not result_path.is_file():
        raise InputFileError(f"{result_path}: result file not found")
    png = Path(args.png) if args.png else result_path.with_suffix(".png")
    if args.gif is not None and not args.fps > 0:
        raise ParameterError(f"--fps: must be a positive number, got {args.fps:g}")
    with open_result(result_path, prefix=args.prefix) as result:
        if args.gif is not None and not windowed(result):
            raise ParameterError(f"--gif: {result_path} holds no window averages (holodask run --window)")
        save_quicklook(result, png, unwrap=not args.no_unwrap)
        print(f"wrote {png}")
        if args.gif is not None:
            save_window_animation(result, args.gif, fps=args.fps, unwrap=not args.no_unwrap, protected=[png])
            print(f"wrote {args.gif}")
    return 0
