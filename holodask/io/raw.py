"""Raw binary files: ``file.raw?xsize=W&ysize=H&dtype=int32&offset=0&swap_bytes=0``.

After ``offset`` header bytes the file holds one or more whole frames of
``ysize`` rows by ``xsize`` columns (C order) of ``dtype``; trailing bytes that
do not fill a frame are ignored (with a warning).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from holodask.errors import InputFileError
from holodask.io.registry import FileSpec, FrameSource, register_reader

__all__ = ["RawSource"]


def _int_option(spec: FileSpec, name: str, default: int | None = None, minimum: int = 0) -> int:
    text = spec.options.get(name)
    if text is None:
        if default is None:
            raise InputFileError(
                f"{spec.path}: raw file spec needs the option {name}= "
                "(e.g. file.raw?xsize=1024&ysize=1024&dtype=uint16)"
            )
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise InputFileError(
            f"{spec.path}: raw option {name}={text!r} is not an integer"
        ) from None
    if value < minimum:
        raise InputFileError(f"{spec.path}: raw option {name}={value} must be >= {minimum}")
    return value


def parse_dtype(text: str) -> np.dtype | None:
    """Numeric numpy dtype of a type name (``int32``, ``<u2``, ``F4``, ...), or ``None``.

    Upper-case codes such as ``F4`` or ``I2`` (as older programs wrote them) are
    read as their lower-case numpy codes (float32, int16).
    """
    for candidate in (text.strip(), text.strip().lower()):
        try:
            dtype = np.dtype(candidate)
        except (TypeError, ValueError):
            continue
        if dtype.kind in "biufc" and dtype.itemsize > 0:
            return dtype
    return None


@register_reader("raw")
class RawSource(FrameSource):
    """Frames of a headerless binary file."""

    def __init__(self, spec: FileSpec):
        super().__init__(spec)
        self.xsize = _int_option(spec, "xsize", minimum=1)
        self.ysize = _int_option(spec, "ysize", minimum=1)
        self.offset = _int_option(spec, "offset", default=0)
        swap = _int_option(spec, "swap_bytes", default=0)
        if swap not in (0, 1):
            raise InputFileError(f"{spec.path}: raw option swap_bytes={swap} must be 0 or 1")
        self.swap_bytes = bool(swap)
        dtype_text = spec.options.get("dtype")
        if dtype_text is None:
            raise InputFileError(
                f"{spec.path}: raw file spec needs the option dtype= "
                "(a numpy type name such as int32, uint16, float32, F4, complex64)"
            )
        file_dtype = parse_dtype(dtype_text)
        if file_dtype is None:
            raise InputFileError(
                f"{spec.path}: raw option dtype={dtype_text!r} is not a numpy type name "
                "(e.g. int32, uint16, float32, F4, complex64)"
            )
        if self.swap_bytes:
            file_dtype = file_dtype.newbyteorder()
        self._file_dtype = file_dtype
        self._dtype = file_dtype.newbyteorder("=")  # native order in memory
        frame_bytes = self.xsize * self.ysize * file_dtype.itemsize
        self.frame_bytes = frame_bytes
        size = os.path.getsize(spec.path)
        available = size - self.offset
        if available < frame_bytes:
            raise InputFileError(
                f"{spec.path}: file too short: expected at least {self.offset + frame_bytes} "
                f"bytes ({self.offset} offset + {self.ysize} x {self.xsize} x "
                f"{file_dtype.itemsize}-byte {file_dtype.name}), found {size}"
            )
        self._n_frames = available // frame_bytes
        if available % frame_bytes:
            warnings.warn(
                f"{spec.path}: {available % frame_bytes} trailing bytes after "
                f"{self._n_frames} whole frame(s) are ignored",
                stacklevel=2,
            )

    @property
    def n_frames(self) -> int:
        return int(self._n_frames)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ysize, self.xsize)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def read_frame(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n_frames:
            raise IndexError(f"{self.spec.path}: frame {index} of {self.n_frames}")
        count = self.xsize * self.ysize
        with open(self.spec.path, "rb") as handle:
            handle.seek(self.offset + index * self.frame_bytes)
            frame = np.fromfile(handle, dtype=self._file_dtype, count=count)
        if frame.size != count:
            raise InputFileError(
                f"{self.spec.path}: file too short: frame {index} needs "
                f"{self.frame_bytes} bytes from byte {self.offset + index * self.frame_bytes}"
            )
        return frame.astype(self._dtype).reshape(self.ysize, self.xsize)
