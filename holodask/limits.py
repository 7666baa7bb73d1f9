"""Bounds on what holodask accepts, checked before anything is allocated.

A file or a parameter may declare sizes that no run can hold (a 1.4 kB HDF5
file can declare a 30000 x 30000 image or a million frames; ``object_last``
may say 1e12). These limits turn such declarations into one clear error at
the boundary, in seconds, instead of an allocation that runs until memory is
gone. They lie far above every real series.
"""

from __future__ import annotations

from holodask.errors import InputFileError

__all__ = [
    "MAX_FRAMES",
    "MAX_FRAME_PIXELS",
    "MAX_IMAGE_SIDE",
    "MAX_WAVE_SIDE",
    "MAX_PARAMETER_BYTES",
    "MAX_JSON5_BYTES",
    "MAX_NESTING",
    "check_source_size",
    "check_frame_count",
]

#: frames of one series (all files together); the task graph of a run grows with them
MAX_FRAMES = 100_000
#: pixels of one frame (16384 x 16384: 1 GiB as float32)
MAX_FRAME_PIXELS = 16384 * 16384
#: pixels along one side of an image (roi, sideband_pos)
MAX_IMAGE_SIDE = 65536
#: pixels along one side of a reconstructed wave (object_size, empty_size: 2 GiB as complex64)
MAX_WAVE_SIDE = 16384
#: size of a parameter file (real ones are a few kB; lists of names a few MB)
MAX_PARAMETER_BYTES = 16 * 2**20
#: parameter text that is not plain JSON (after comments and trailing commas are taken out)
#: goes through the pure-Python JSON5 parser, which reads about 20 kB/s: only this much
MAX_JSON5_BYTES = 128 * 2**10
#: nesting of arrays and objects in a parameter file (the deepest parameter needs 3)
MAX_NESTING = 20


def check_source_size(source) -> None:
    """Refuse a file whose declared frames exceed :data:`MAX_FRAME_PIXELS` or :data:`MAX_FRAMES`.

    ``source`` is a :class:`holodask.io.registry.FrameSource` (headers only are read).
    """
    rows, cols = (int(n) for n in source.shape)
    if rows * cols > MAX_FRAME_PIXELS:
        raise InputFileError(
            f"{source.spec}: declares frames of {rows} x {cols} px ({rows * cols / 1e6:.0f} M pixels); "
            f"holodask reads frames of at most {MAX_FRAME_PIXELS / 1e6:.0f} M pixels "
            "(the file is damaged, or crop or bin it first)"
        )
    if int(source.n_frames) > MAX_FRAMES:
        raise InputFileError(
            f"{source.spec}: declares {int(source.n_frames)} frames; a series holds at most "
            f"{MAX_FRAMES} frames (the file is damaged, or split the series)"
        )


def check_frame_count(n_frames: int, what) -> None:
    """Refuse a series of more than :data:`MAX_FRAMES` frames (``what`` names it)."""
    if int(n_frames) > MAX_FRAMES:
        raise InputFileError(
            f"{what}: {int(n_frames)} frames; a series holds at most {MAX_FRAMES} frames "
            "(split the series)"
        )
