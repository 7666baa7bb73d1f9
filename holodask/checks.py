"""Checks that a series holds holograms: real, finite pixels, signal, fringes at the sideband.

Pure numpy, cheap enough to run on every frame as it is read
(:func:`check_hologram_frame`: one pass for NaN/Inf over a float frame, a
sample of pixels for a constant one), and once per series on its first frame
(:func:`check_fringes`: a small FFT of at most 256 x 256 px).
"""

from __future__ import annotations

import numpy as np

from holodask.errors import DataError

__all__ = [
    "check_hologram_dtype",
    "check_hologram_frame",
    "sideband_contrast",
    "check_fringes",
    "check_hologram_series",
    "FRINGE_CONTRAST_MINIMUM",
]

#: the sideband peak must be this many times the median of the spectrum around it (noise
#: alone gives about 2.4 in the searched disc; real holograms give tens to thousands)
FRINGE_CONTRAST_MINIMUM = 3.0
#: the fringe check transforms a central crop of at most this many pixels per side
FRINGE_CHECK_SIDE = 256
#: radius (crop Fourier pixels) around ``sideband_pos`` in which the peak is looked for
SIDEBAND_SEARCH_RADIUS = 4


def check_hologram_dtype(dtype, what: str) -> None:
    """Refuse pixel types that are no hologram (a complex wave, a structured record)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise DataError(
            f"{what}: holds complex pixels ({dtype}); a hologram is a real intensity image "
            "(a reconstructed wave can be given as 'empty_override')"
        )
    if dtype.kind not in "biuf":
        raise DataError(f"{what}: pixel type {dtype} is not a number; expected a hologram (intensity image)")


def _frame_text(source, index: int) -> str:
    spec = getattr(source, "spec", source)
    several = getattr(source, "n_frames", 1) > 1
    return f"{spec} (frame {index})" if several else f"{spec}"


def check_hologram_frame(frame: np.ndarray, source, index: int) -> None:
    """Refuse a frame with NaN/Inf pixels or one without any signal (every pixel equal).

    ``source`` (a :class:`holodask.io.registry.FrameSource`) and ``index`` name the
    file and frame in the message.
    """
    flat = np.ravel(frame)
    if flat.size == 0:
        return
    if flat.dtype.kind == "f":
        # one BLAS pass: NaN and Inf propagate into the product; only where it is not finite
        # (also through overflow of huge values) are the pixels counted
        if not np.isfinite(np.dot(flat, flat)):
            bad = int(np.count_nonzero(~np.isfinite(flat)))
            if bad:
                raise DataError(
                    f"{_frame_text(source, index)}: {bad} of {flat.size} pixels are NaN or infinite; "
                    "holograms must be finite (repair or exclude the frame, e.g. with object_exclude)"
                )
    sample = flat[:: max(1, flat.size // 1024)]
    if sample.min() != sample.max():
        return
    low, high = flat.min(), flat.max()
    if low == high:
        raise DataError(
            f"{_frame_text(source, index)}: holds no hologram: every pixel is {low.item():g} "
            "(no signal, no fringes); exclude the frame (object_exclude / empty_exclude)"
        )


def _central_crop(frame: np.ndarray, side: int) -> np.ndarray:
    rows, cols = frame.shape
    h, w = min(rows, side), min(cols, side)
    top, left = (rows - h) // 2, (cols - w) // 2
    return frame[top:top + h, left:left + w]


def sideband_contrast(frame: np.ndarray, sideband_pos) -> float:
    """How far the sideband at ``sideband_pos`` ([x, y] in the centred FFT of the whole
    frame) rises above the spectrum around it: its peak over the median amplitude outside
    the centre band (from a Hann-windowed central crop of at most 256 x 256 px)."""
    frame = np.asarray(frame)
    rows, cols = frame.shape
    crop = _central_crop(frame, FRINGE_CHECK_SIDE).astype(np.float32)
    h, w = crop.shape
    crop = crop - crop.mean(dtype=np.float64)
    crop *= np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    amplitude = np.abs(np.fft.fftshift(np.fft.fft2(crop)))
    # sideband_pos in crop pixels: the same spatial frequency
    x, y = sideband_pos
    kx, ky = (float(x) - cols // 2) / cols, (float(y) - rows // 2) / rows
    cx, cy = w // 2 + kx * w, h // 2 + ky * h
    yy, xx = np.ogrid[:h, :w]
    radius = SIDEBAND_SEARCH_RADIUS
    near = ((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2) | ((xx - (w - cx)) ** 2 + (yy - (h - cy)) ** 2 <= radius**2)
    centre = ((xx - w // 2) / max(w, 1)) ** 2 + ((yy - h // 2) / max(h, 1)) ** 2 <= (1 / 16) ** 2
    around = amplitude[~(near | centre)]
    peak = amplitude[near & ~centre]
    if peak.size == 0 or around.size == 0:
        return float("inf")  # the sideband lies in the centre band: nothing to tell apart
    floor = float(np.median(around))
    return float(peak.max()) / floor if floor > 0 else float("inf") if peak.max() > 0 else 0.0


def check_fringes(frame: np.ndarray, sideband_pos, what: str) -> None:
    """Refuse a hologram without fringes at ``sideband_pos`` (``what`` names the file)."""
    frame = np.asarray(frame)
    if frame.ndim != 2 or min(frame.shape) < 16:
        return
    rows, cols = frame.shape
    x, y = sideband_pos
    if not (0 <= x < cols and 0 <= y < rows):
        return  # reported with the parameter later
    contrast = sideband_contrast(frame, sideband_pos)
    if contrast < FRINGE_CONTRAST_MINIMUM:
        raise DataError(
            f"{what}: no fringes at sideband_pos [{x:g}, {y:g}]: the sideband is no stronger than "
            f"the noise around it ({contrast:.1f} x its median, at least {FRINGE_CONTRAST_MINIMUM:g} "
            "expected); is this a hologram, and is sideband_pos right? (holodask info FILE --fft "
            "finds the sideband)"
        )


def check_hologram_series(series, params) -> None:
    """Check an opened hologram series (a :class:`holodask.series.FrameSeries`) before any
    work: real pixels, and fringes at ``params.sideband_pos_px`` in its first frame (which
    is read here; not for ``only_align`` runs, which do not reconstruct)."""
    task = series.graph.get(series.keys[0]) if series.keys else None
    source = task[1] if isinstance(task, tuple) and len(task) >= 3 and hasattr(task[1], "spec") else None
    what = str(source.spec) if source is not None else (series.attrs.get("source") or "the series")
    check_hologram_dtype(series.dtype, what)
    if getattr(params, "only_align", False) or source is None or params.sideband_pos_px is None:
        return
    frame = task[0](*task[1:])[0]
    where = _frame_text(source, int(task[2]))
    check_fringes(frame, params.sideband_pos_px, where)
