"""TIFF reader (types ``tif``, ``tiff``) through ``tifffile``.

Every 2-D plane of every image series in the file is one frame, in file order
(a multi-page TIFF or an ImageJ hyperstack is a series of frames). RGB(A)
images are refused. ImageJ files calibrated in nm, µm, Å or pm give the
sampling.
"""

from __future__ import annotations

import math

import numpy as np

from holodask.errors import InputFileError
from holodask.io.registry import FileSpec, FrameMetadata, StoredHeaderSource, register_reader

__all__ = ["TiffSource"]

_UNIT_TO_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "\u03bcm": 1e3,
    "micron": 1e3,
    "\\u00b5m": 1e3,
    "a": 0.1,
    "å": 0.1,
    "angstrom": 0.1,
    "pm": 1e-3,
}


def _open(path):
    import tifffile

    try:
        return tifffile.TiffFile(path)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise InputFileError(f"{path}: cannot read as TIFF ({exc})") from None


@register_reader("tif", "tiff")
class TiffSource(StoredHeaderSource):
    """Frames of a single- or multi-page TIFF file."""

    def __init__(self, spec: FileSpec):
        super().__init__(spec)
        path = spec.path
        self._series: list[tuple[int, int]] = []  # (series index, number of planes)
        shape = dtype = None
        sampling_nm = None
        with _open(path) as tif:
            for index, series in enumerate(tif.series):
                axes = series.axes.upper()
                if "S" in axes or len(series.shape) < 2 or not axes.endswith(("YX", "YXS")):
                    raise InputFileError(
                        f"{path}: image series {index} has axes {series.axes!r} "
                        f"(shape {series.shape}); only grey-scale 2-D frames are read"
                    )
                frame_shape = tuple(int(s) for s in series.shape[-2:])
                if shape is None:
                    shape, dtype = frame_shape, np.dtype(series.dtype)
                elif frame_shape != shape or np.dtype(series.dtype) != dtype:
                    raise InputFileError(
                        f"{path}: image series {index} is {frame_shape} {series.dtype}, "
                        f"series 0 is {shape} {dtype}"
                    )
                self._series.append((index, int(math.prod(series.shape[:-2]))))
            if shape is None:
                raise InputFileError(f"{path}: TIFF file holds no image")
            sampling_nm = self._imagej_sampling(tif)
        self._shape = shape
        self._dtype = dtype
        self._metadata = FrameMetadata(sampling_nm=sampling_nm)

    @staticmethod
    def _imagej_sampling(tif) -> float | None:
        meta = tif.imagej_metadata or {}
        unit = str(meta.get("unit", "")).strip().lower()
        factor = _UNIT_TO_NM.get(unit)
        if factor is None:
            return None
        tag = tif.pages.first.tags.get("XResolution")
        if tag is None:
            return None
        numerator, denominator = tag.value
        if not numerator or not denominator:
            return None
        return factor * denominator / numerator

    @property
    def n_frames(self) -> int:
        return sum(n for _, n in self._series)

    def read_frame(self, index: int) -> np.ndarray:
        self._check_index(index)
        key = index
        for series_index, count in self._series:
            if key < count:
                break
            key -= count
        with _open(self.spec.path) as tif:
            frame = tif.asarray(series=series_index, key=key)
        return np.asarray(frame).reshape(self._shape)
