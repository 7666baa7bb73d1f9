"""Digital Micrograph DM3/DM4 files, read through RosettaSciIO.

The first 2-D image (or 3-D image stack: frames x rows x columns) of the file
is used; other signals (spectra, line profiles) are skipped. Pixel data are
read lazily where RosettaSciIO supports it (every type but RGB(A)). RGB(A)
images are turned into grey values (float32 luma 0.299 R + 0.587 G + 0.114 B).

A single image's acquisition time, the tag ``DataBar / Acquisition Time (OS)``
(Windows file time: 100 ns ticks since 1601), is its frame coordinate
``time_s`` (seconds since 1970-01-01 UTC); DM image stacks carry no
per-frame acquisition times, and get none.
"""

from __future__ import annotations

import os
import struct
import warnings
from typing import Any

import numpy as np

from holodask.errors import InputFileError
from holodask.io.calibration import length_to_nm, to_float, to_text
from holodask.io.registry import FileSpec, FrameMetadata, StoredHeaderSource, register_reader

__all__ = ["DMSource", "rgb_to_grey"]

_VOLTAGE_TAG = ("Microscope Info", "Voltage")  # volts
_MICROSCOPE_TAGS = (("Microscope Info", "Name"), ("Session Info", "Microscope"))
_DETECTOR_TAGS = (
    ("Acquisition", "Device", "Name"),
    ("DataBar", "Device Name"),
    ("Session Info", "Detector"),
)
_ACQUISITION_TIME_TAG = ("DataBar", "Acquisition Time (OS)")  # Windows file time
#: seconds from 1601-01-01 (Windows file time) to 1970-01-01 (Unix time)
_FILETIME_EPOCH_S = 11644473600.0
_BINNING_TAGS = (
    ("Acquisition", "Parameters", "High Level", "Binning"),
    ("Acquisition", "Parameters", "Detector", "hbin"),
    ("Acquisition", "Frame", "Area", "Transform", "Transform List", "TagGroup0", "Binning"),
)


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """Grey values (float32) of a structured RGB(A) array with fields R, G, B."""
    return (
        0.299 * rgb["R"].astype(np.float32)
        + 0.587 * rgb["G"].astype(np.float32)
        + 0.114 * rgb["B"].astype(np.float32)
    ).astype(np.float32)


def _read_signals(path, lazy: bool) -> list[dict[str, Any]]:
    from rsciio.digitalmicrograph import file_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return file_reader(str(path), lazy=lazy)


def _is_rgb(dtype: np.dtype) -> bool:
    return dtype.names is not None and {"R", "G", "B"} <= set(dtype.names)


def _lookup(tree: dict, keys: tuple[str, ...]):
    node: Any = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _pick_image(signals: list[dict[str, Any]], path) -> tuple[int, dict[str, Any]]:
    """Index and dictionary of the first 2-D or 3-D image signal."""
    for number, signal in enumerate(signals):
        shape = tuple(signal["data"].shape)
        axes = signal["axes"]
        if len(shape) not in (2, 3) or len(axes) != len(shape):
            continue
        if any(axis.get("navigate", False) for axis in axes[-2:]):
            continue  # spectrum image or line scan, not an image
        return number, signal
    described = ", ".join(str(tuple(s["data"].shape)) for s in signals) or "none"
    raise InputFileError(f"{path}: holds no 2-D image or 3-D image stack (signals: {described})")


#: the bytes of a Digital Micrograph header before the root tag group: DM3 three 4-byte
#: integers (version, length, byte order), DM4 a 4-byte version, an 8-byte length, a 4-byte order
_HEADER_BYTES = {3: (">I", 12), 4: (">Q", 16)}


def _truncation(path) -> str | None:
    """What the header says about a file shorter than it declares (None: not so)."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
        size = os.path.getsize(path)
    except OSError:
        return None
    if len(head) < 4:
        return f"{size} bytes, shorter than a DM header"
    version = struct.unpack(">I", head[:4])[0]
    if version not in _HEADER_BYTES:
        return None
    fmt, header = _HEADER_BYTES[version]
    if len(head) < 4 + struct.calcsize(fmt):
        return f"{size} bytes, shorter than a DM{version} header"
    declared = struct.unpack(fmt, head[4:4 + struct.calcsize(fmt)])[0] + header
    return f"{size} of the {declared} bytes its header declares" if size < declared else None


def _broken(path, exc: Exception) -> InputFileError:
    """One message for a DM file the reader cannot read: truncated (its header says how
    long it should be), or truncated or corrupt."""
    short = _truncation(path)
    if short:
        return InputFileError(f"{path}: file is truncated or corrupt ({short})")
    detail = f" ({exc})" if str(exc) else ""
    if isinstance(exc, (struct.error, EOFError, IndexError, KeyError, UnicodeDecodeError)) or "unpack" in str(exc):
        return InputFileError(f"{path}: file is truncated or corrupt; cannot read it as a DM file{detail}")
    return InputFileError(f"{path}: cannot read DM file{detail}")


@register_reader("dm3", "dm4")
class DMSource(StoredHeaderSource):
    """Frames of a Digital Micrograph image or image stack."""

    def __init__(self, spec: FileSpec):
        super().__init__(spec)
        try:
            signals = _read_signals(spec.path, lazy=True)
            self._lazy = True
        except ValueError as exc:
            if "RGB" not in str(exc):
                raise _broken(spec.path, exc) from None
            signals = _read_signals(spec.path, lazy=False)  # RGB(A): no lazy reading
            self._lazy = False
        except Exception as exc:  # rsciio raises many kinds on broken files
            raise _broken(spec.path, exc) from None
        self._signal_number, signal = _pick_image(signals, spec.path)
        data = signal["data"]
        shape = tuple(int(n) for n in data.shape)
        self._shape3 = shape if len(shape) == 3 else (1, *shape)
        self._stored_dtype = np.dtype(data.dtype)
        self._rgb = _is_rgb(self._stored_dtype)
        # a lazy Dask array (picklable, opens the file in its own tasks); None for RGB(A)
        self._data = data if self._lazy else None
        self._metadata = self._read_metadata(signal)
        self._n_frames, self._shape = self._shape3[0], self._shape3[1:]
        ticks = self._metadata.extra.pop("acquisition_filetime", None)
        self._coords = {}
        if ticks is not None and self._n_frames == 1:
            self._coords = {"time_s": np.array([ticks * 1e-7 - _FILETIME_EPOCH_S])}
        self._dtype = np.dtype(np.float32) if self._rgb else self._stored_dtype  # RGB(A) is read as grey

    def _read_metadata(self, signal: dict[str, Any]) -> FrameMetadata:
        meta = FrameMetadata()
        x_axis = signal["axes"][-1]
        units = to_text(x_axis.get("units")) or ""
        scale = to_float(x_axis.get("scale"))
        meta.sampling_nm = length_to_nm(scale, units)
        if meta.sampling_nm is None and units:  # a unit, but not a length
            meta.extra["sampling_unit"] = units
            meta.extra["sampling_scale"] = scale
        tags = _lookup(signal.get("original_metadata", {}), ("ImageList", "TagGroup0", "ImageTags"))
        tags = tags if isinstance(tags, dict) else {}
        tem = _lookup(signal.get("metadata", {}), ("Acquisition_instrument", "TEM")) or {}
        voltage_kV = to_float(tem.get("beam_energy"))
        if voltage_kV is None:
            volts = to_float(_lookup(tags, _VOLTAGE_TAG))
            voltage_kV = volts / 1000.0 if volts else None
        meta.voltage_kV = voltage_kV
        meta.microscope = to_text(tem.get("microscope"))
        for keys in _MICROSCOPE_TAGS:
            meta.microscope = meta.microscope or to_text(_lookup(tags, keys))
        for keys in _DETECTOR_TAGS:
            meta.detector = meta.detector or to_text(_lookup(tags, keys))
        for keys in _BINNING_TAGS:
            binning = to_float(_lookup(tags, keys))
            if binning and binning >= 1:
                meta.binning = int(binning)
                break
        ticks = to_float(_lookup(tags, _ACQUISITION_TIME_TAG))
        if ticks is not None and ticks > 1e17:  # after about 1917: a plausible file time
            meta.extra["acquisition_filetime"] = ticks
        title = to_text(_lookup(signal.get("metadata", {}), ("General", "title")))
        if title:
            meta.extra["title"] = title
        if self._rgb:
            meta.extra["converted_from"] = str(self._stored_dtype)
        return meta

    def read_frame(self, index: int) -> np.ndarray:
        self._check_index(index)
        try:
            return self._read_frame(index)
        except (OSError, ValueError, struct.error, EOFError) as exc:
            raise _broken(self.spec.path, exc) from None

    def _read_frame(self, index: int) -> np.ndarray:
        if self._data is not None:
            data = self._data
            part = data if data.ndim == 2 else data[index]
            frame = np.array(part.compute(scheduler="synchronous"))
        else:
            data = _read_signals(self.spec.path, lazy=False)[self._signal_number]["data"]
            frame = np.array(data if data.ndim == 2 else data[index])
        if self._rgb:
            frame = rgb_to_grey(frame)
        return frame
