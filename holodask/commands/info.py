"""``holodask info SPEC [--fft]``: what a file holds and how it is calibrated."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from holodask.errors import DataError, InputFileError, ParameterError
from holodask.io.registry import FrameSource, open_source

HELP = "show shape, pixel type, frames and calibration of image files (and the sideband with --fft)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "specs",
        nargs="+",
        metavar="SPEC",
        help="file spec: path?key=value&key=value (e.g. a.hdf5?dataset=data, b.raw?xsize=..)",
    )
    parser.add_argument(
        "--fft",
        action="store_true",
        help="also locate the upper sideband [x, y] in the centred FFT (sideband_pos convention), "
             "with its confidence and a suggested cut_off and object_size",
    )
    parser.add_argument(
        "--frame", type=int, default=0, help="frame analysed by --fft (0-based, default 0)"
    )
    parser.add_argument(
        "--prefix",
        default=None,
        help="for a result file: the output_prefix to summarise (default: every result in it)",
    )


def _value(value, unit: str = "") -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        value = f"{value:.10g}"
    return f"{value} {unit}".rstrip()


def describe(source: FrameSource) -> list[tuple[str, str]]:
    """(label, text) lines describing a source and its calibration."""
    meta = source.metadata
    if meta.sampling_nm is not None:
        sampling = _value(meta.sampling_nm, "nm/px")
    elif meta.extra.get("sampling_unit"):
        scale = meta.extra.get("sampling_scale")
        sampling = (
            f"unknown ({_value(scale)} {meta.extra['sampling_unit']}/px is not a length; "
            "give the parameter 'sampling')"
        )
    else:
        sampling = "unknown (give the parameter 'sampling')"
    rows, cols = source.shape
    lines = [
        ("file", str(source.spec)),
        ("reader", type(source).__name__),
    ]
    signal = meta.extra.get("title")
    if meta.extra.get("signal_type"):
        signal = f"{signal or '(untitled)'} (signal_type {meta.extra['signal_type']!r})"
    if signal:
        lines.append(("signal", signal))
    lines += [
        ("frames", str(source.n_frames)),
        ("shape", f"{rows} x {cols} (rows x columns)"),
        ("dtype", str(np.dtype(source.dtype))),
        ("sampling", sampling),
        ("voltage", _value(meta.voltage_kV, "kV")),
        ("binning", _value(meta.binning)),
        ("microscope", _value(meta.microscope)),
        ("detector", _value(meta.detector)),
    ]
    if meta.extra.get("biprism_voltage_V") is not None:
        lines.append(("biprism", _value(float(meta.extra["biprism_voltage_V"]), "V")))
    times = source.frame_coords().get("time_s")
    if times is not None and len(times) and np.all(np.isfinite(times)):
        times = np.asarray(times, dtype=float)
        text = f"{len(times)} frame time(s), {_clock(times[0])}"
        if len(times) > 1:
            steps = np.diff(times)
            text += f" .. +{times[-1] - times[0]:.6g} s (median step {np.median(steps):.6g} s)"
        lines.append(("time_s", text))
    return lines


def _clock(seconds: float) -> str:
    """A ``time_s`` value: a UTC date where it is one (after 1990), else seconds."""
    if seconds > 631152000:  # 1990-01-01: an absolute time stamp
        import datetime

        stamp = datetime.datetime.fromtimestamp(float(seconds), tz=datetime.timezone.utc)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", " UTC")
    return f"{seconds:.6g} s"


#: ``--fft`` transforms at most this many pixels per side (the central part of larger frames)
MAX_FFT_SIDE = 2048


def sideband_of(source: FrameSource, index: int):
    """The :class:`holodask.sideband.Sideband` of frame ``index``, its position in the centred
    FFT of the whole frame,
    and a note where it was found in the central :data:`MAX_FFT_SIDE` px only (read alone,
    in bounded memory, whatever size the file declares)."""
    from holodask.limits import MAX_FRAME_PIXELS
    from holodask.sideband import find_sideband

    try:
        return _sideband_of(source, index, find_sideband, MAX_FRAME_PIXELS)
    except DataError as exc:
        raise DataError(f"{source.spec} (frame {index}): {exc}") from None


def _sideband_of(source: FrameSource, index: int, find_sideband, max_pixels: int):
    rows, cols = (int(n) for n in source.shape)
    h, w = min(rows, MAX_FFT_SIDE), min(cols, MAX_FFT_SIDE)
    sampling = source.metadata.sampling_nm
    if (h, w) == (rows, cols):
        return find_sideband(source.read_frame(index), sampling=sampling), ""
    if not source.reads_regions and rows * cols > max_pixels:
        raise InputFileError(
            f"{source.spec}: frames of {rows} x {cols} px are too large for --fft "
            f"(this reader reads whole frames; at most {max_pixels / 1e6:.0f} M pixels)"
        )
    top, left = (rows - h) // 2, (cols - w) // 2
    part = source.read_region(index, slice(top, top + h), slice(left, left + w))
    found = find_sideband(part, sampling=sampling)
    x_part, y_part = found.position
    # the same spatial frequency in the centred FFT of the whole frame
    x = cols // 2 + (x_part - w // 2) * cols / w
    y = rows // 2 + (y_part - h // 2) * rows / h
    return dataclasses.replace(found, position=(x, y), shape=(rows, cols)), f"; from the central {h} x {w} px"


def _result_summary(spec: str, prefix: str | None) -> str | None:
    """Summary of a result file (holodask or holoaverage output), else ``None``."""
    if "?" in spec:
        return None
    from holodask.io.rsciio_formats import is_hyperspy_file

    if is_hyperspy_file(spec):  # a HyperSpy signal (hologram or exported wave), not a result
        return None
    from holodask.results import describe_result, result_prefixes

    prefixes = result_prefixes(spec)
    if not prefixes:
        return None
    chosen = prefixes if prefix is None else [prefix]
    return "\n\n".join(describe_result(spec, prefix=p) for p in chosen)


def run(args: argparse.Namespace) -> int:
    for number, spec in enumerate(args.specs):
        summary = _result_summary(spec, args.prefix)
        if summary is not None:
            if number:
                print()
            print(summary)
            continue
        source = open_source(spec)
        lines = describe(source)
        if args.fft:
            if not 0 <= args.frame < source.n_frames:
                raise ParameterError(
                    f"--frame: expected 0 to {source.n_frames - 1}, got {args.frame}"
                )
            found, note = sideband_of(source, args.frame)
            lines.append(("sideband", found.describe() + note))
        if number:
            print()
        width = max(len(label) for label, _ in lines) + 1
        for label, text in lines:
            print(f"{label + ':':<{width}} {text}")
    return 0
