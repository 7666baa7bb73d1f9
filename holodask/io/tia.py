"""TIA series files (``.ser``, FEI/Thermo Fisher TEM Imaging & Analysis).

A ``.ser`` file is a series of data elements; for images every element is one
2-D frame, in stored order (a time series or the positions of a scan). Only
the element offsets and the first element's header are read when the file is
opened; each frame is read on its own from its offset, so a long series is
never read whole. The rows are returned top row first, as RosettaSciIO's TIA
reader returns them (TIA stores the bottom row first).

Calibration: the element's pixel size (metres in the file) gives the sampling
in nm. The acceleration voltage is in the ``.emi`` file beside it, which is
not read: give the parameter ``voltage``. Each element's tag holds its
acquisition time (whole seconds since 1970-01-01 UTC): the frame coordinate
``time_s``.
"""

from __future__ import annotations

import struct

import numpy as np

from holodask.errors import InputFileError
from holodask.io.registry import FileSpec, FrameMetadata, StoredHeaderSource, register_reader

__all__ = ["SerSource", "SER_PIXEL_TYPES"]

#: TIA pixel type codes
SER_PIXEL_TYPES = {1: "<u1", 2: "<u2", 3: "<u4", 4: "<i1", 5: "<i2", 6: "<i4",
                   7: "<f4", 8: "<f8", 9: "<c8", 10: "<c16"}

_IMAGE_DATA = 0x4122
_SPECTRUM_DATA = 0x4120
_IMAGE_HEADER = struct.Struct("<ddIddIHII")  # calibration x, y; pixel type; size x, y


def _read(file, fmt: str):
    size = struct.calcsize(fmt)
    raw = file.read(size)
    if len(raw) != size:
        raise EOFError
    return struct.unpack(fmt, raw)


@register_reader("ser")
class SerSource(StoredHeaderSource):
    """Frames of a TIA ``.ser`` image series."""

    def __init__(self, spec: FileSpec):
        super().__init__(spec)
        try:
            with open(spec.path, "rb") as file:
                self._read_header(file)
        except InputFileError:
            raise
        except (EOFError, struct.error, ValueError) as exc:
            raise InputFileError(f"{spec.path}: truncated or broken TIA .ser file ({exc or 'end of file'})") from None
        except OSError as exc:
            raise InputFileError(f"{spec.path}: cannot read ({exc.strerror})") from None

    def _read_header(self, file) -> None:
        path = self.spec.path
        byte_order, series_id, version = _read(file, "<HHH")
        if byte_order != 0x4949 or series_id != 0x0197:
            raise InputFileError(f"{path}: not a TIA .ser file (byte order {byte_order:#x}, "
                                 f"series id {series_id:#x})")
        data_type, tag_type, total, valid = _read(file, "<IIII")
        if data_type == _SPECTRUM_DATA:
            raise InputFileError(f"{path}: holds spectra, not images")
        if data_type != _IMAGE_DATA:
            raise InputFileError(f"{path}: unknown TIA data type {data_type:#x}")
        wide = version > 0x0210  # 8-byte offsets from series version 0x0220 on
        (offset_array,) = _read(file, "<Q" if wide else "<I")
        if valid < 1:
            raise InputFileError(f"{path}: the series holds no data element")
        file.seek(offset_array)
        offset_type = "<u8" if wide else "<u4"
        offsets = np.fromfile(file, dtype=offset_type, count=2 * total)
        if len(offsets) != 2 * total:
            raise EOFError
        self._offsets = offsets[:valid].astype(np.int64)
        tag_offsets = offsets[total:total + valid].astype(np.int64)
        file.seek(int(self._offsets[0]))
        (_, delta_x, _, _, delta_y, _, pixel_type, size_x, size_y) = _read(file, _IMAGE_HEADER.format)
        if pixel_type not in SER_PIXEL_TYPES:
            raise InputFileError(f"{path}: unknown TIA pixel type {pixel_type}")
        self._n_frames = int(valid)
        self._shape = (int(size_y), int(size_x))
        self._dtype = np.dtype(SER_PIXEL_TYPES[pixel_type])
        sampling_nm = float(delta_x) * 1e9 if delta_x > 0 else None
        self._metadata = FrameMetadata(sampling_nm=sampling_nm)
        if delta_y > 0 and sampling_nm and abs(delta_y * 1e9 - sampling_nm) > 1e-6 * sampling_nm:
            self._metadata.extra["sampling_y_nm"] = float(delta_y) * 1e9
        times = []
        for offset in tag_offsets:
            file.seek(int(offset))
            tag_id, _, seconds = _read(file, "<HHI")
            times.append(float(seconds))
        self._coords = {"time_s": np.asarray(times)} if times else {}

    def read_frame(self, index: int) -> np.ndarray:
        self._check_index(index)
        rows, cols = self._shape
        with open(self.spec.path, "rb") as file:
            file.seek(int(self._offsets[index]) + _IMAGE_HEADER.size)
            frame = np.fromfile(file, dtype=self._dtype, count=rows * cols)
        if frame.size != rows * cols:
            raise InputFileError(f"{self.spec.path}: frame {index} is truncated")
        return frame.reshape(rows, cols)[::-1]
