"""``holodask export``: convert a result file to other formats (QPImage / QPSeries, HyperSpy)."""

from __future__ import annotations

from holodask.errors import ParameterError

HELP = "export a result file to QPImage/QPSeries HDF5 (qpimage format) or HyperSpy .hspy"


def add_arguments(parser) -> None:
    parser.add_argument("result", metavar="RESULT.hdf5", help="result file (holodask or holoaverage)")
    parser.add_argument("--qpimage", metavar="OUT.h5",
                        help="write a QPImage of the averaged wave (with --series: a QPSeries "
                             "of the individual holograms, and the average to OUT_average.h5)")
    parser.add_argument("--hspy", metavar="OUT.hspy",
                        help="write the averaged wave as a complex HyperSpy signal with nm axes (with "
                             "--series: the stack of individual holograms, and the average to "
                             "OUT_average.hspy)")
    parser.add_argument("--prefix", default="", help="output_prefix of the result (default: none)")
    parser.add_argument("--series", action="store_true",
                        help="export the result's series (output_series): a QPSeries, a HyperSpy stack")
    parser.add_argument("--no-unwrap", dest="unwrap", action="store_false",
                        help="QPImage: keep the phase wrapped to [-pi, pi]")
    parser.add_argument("--voltage", type=float, default=None, metavar="KV",
                        help="acceleration voltage in kV when the result does not record it")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages")


def run(args) -> int:
    if not args.qpimage and not args.hspy:
        raise ParameterError("give an output: --qpimage OUT.h5 and/or --hspy OUT.hspy")
    written = []
    if args.qpimage:
        from holodask.io.qpimage_export import export_qpimage

        written += export_qpimage(args.result, args.qpimage, prefix=args.prefix, series=args.series,
                                  unwrap=args.unwrap, voltage_kV=args.voltage)
    if args.hspy:
        from holodask.io.hspy_export import export_hspy

        written += export_hspy(args.result, args.hspy, prefix=args.prefix, series=args.series,
                               voltage_kV=args.voltage)
    for path in written:
        print(f"wrote {path}")
    return 0
