"""HyperSpy (``.hspy``, ``.zspy``), EMD (Velox and Berkeley) and MRC files, read through RosettaSciIO.

RosettaSciIO reads each file's header (lazily: no pixel data) and gives its
signals as dictionaries of data, axes and metadata. The first *image* signal
is used, or the one chosen with ``?signal=N`` (0-based, in the order the file
lists its signals): a 2-D signal is one frame, a 3-D signal whose first axis
is a navigation axis (a stack) is a series of frames in stored order. Signals
with more navigation axes, spectra and line scans are skipped.

Calibration, as HyperSpy names it:

* ``sampling``: the scale of the last (x) signal axis, converted from its unit
  to nm (a non-length unit such as ``1/nm`` leaves it unknown);
* ``voltage``: ``Acquisition_instrument.TEM.beam_energy`` (kV);
* ``microscope``, ``detector``, ``binning``: ``Acquisition_instrument.TEM.microscope``,
  the first entry of ``...TEM.Detector``, ``...TEM.Camera.binning``;
* title, ``Signal.signal_type`` and the biprism voltage are kept as extras.

Per-frame acquisition times become the frame coordinate ``time_s``: from
Velox's per-frame metadata (absolute, seconds since 1970-01-01 UTC), else from
a time navigation axis of the stack (``offset + k * scale``, converted to
seconds; relative to the stack's start where the file says no more).

Frames are read where the work runs: ``.hspy`` and Velox ``.emd`` frames
straight from the HDF5 dataset (opened and closed per frame); ``.zspy``, EMD
Berkeley and ``.mrc`` frames from RosettaSciIO's lazy array, opened once per
process and kept in a small cache.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np

from holodask.errors import InputFileError
from holodask.io.calibration import length_to_nm, to_float, to_text
from holodask.io.registry import (
    FileSpec,
    FrameMetadata,
    StoredHeaderSource,
    register_content_rule,
    register_reader,
)

__all__ = [
    "RsciioSource",
    "HspySource",
    "ZspySource",
    "EmdSource",
    "MrcSource",
    "pick_image",
    "signal_metadata",
    "is_hyperspy_file",
]

#: time units of a navigation axis -> seconds per unit
_TIME_UNITS_S = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "ms": 1e-3, "µs": 1e-6, "μs": 1e-6, "us": 1e-6, "ns": 1e-9,
    "min": 60.0, "minute": 60.0, "h": 3600.0,
}


def _lookup(tree: Any, *keys: str):
    node = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _is_image(signal: dict[str, Any]) -> bool:
    """A 2-D image, or a 3-D stack whose last two axes are signal axes (the first
    navigates, or, as EMD Berkeley and MRC files store stacks and volumes, is a
    signal axis too)."""
    shape = tuple(signal["data"].shape)
    axes = signal.get("axes") or []
    if len(shape) not in (2, 3) or len(axes) != len(shape):
        return False
    if np.dtype(signal["data"].dtype).names is not None:
        return False  # RGB(A) or other structured pixels
    if any(bool(axis.get("navigate", False)) for axis in axes[-2:]):
        return False
    return True


def pick_image(signals: list[dict[str, Any]], path, choice: str | None = None) -> tuple[int, dict[str, Any]]:
    """Index and dictionary of the image signal to read.

    ``choice`` (the ``signal=`` option) selects a signal by its position in
    the file; otherwise the first 2-D image or 3-D image stack is taken.
    """
    described = ", ".join(
        f"{k}: {tuple(s['data'].shape)}" for k, s in enumerate(signals)
    ) or "none"
    if choice is not None:
        try:
            number = int(choice)
        except ValueError:
            raise InputFileError(f"{path}: signal={choice!r} is not a signal number (0-based)") from None
        if not 0 <= number < len(signals):
            raise InputFileError(f"{path}: signal={number}: the file holds signals {described}")
        if not _is_image(signals[number]):
            raise InputFileError(
                f"{path}: signal {number} {tuple(signals[number]['data'].shape)} is not a 2-D image "
                "or a stack of 2-D images"
            )
        return number, signals[number]
    for number, signal in enumerate(signals):
        if _is_image(signal):
            return number, signal
    raise InputFileError(f"{path}: holds no 2-D image or 3-D image stack (signals {described})")


def _mapped(signal: dict[str, Any], target: str):
    """The value that the signal's ``mapping`` (original_metadata -> metadata, which
    HyperSpy applies when it makes a signal) gives ``target``, or None."""
    for source, (destination, convert) in (signal.get("mapping") or {}).items():
        if destination != target:
            continue
        value = _lookup(signal.get("original_metadata") or {}, *source.split("."))
        if value is None:
            continue
        try:
            return convert(value) if convert is not None else value
        except (TypeError, ValueError):
            return None
    return None


def signal_metadata(signal: dict[str, Any]) -> FrameMetadata:
    """Calibration of a RosettaSciIO signal dictionary (see the module text)."""
    meta = FrameMetadata()
    x_axis = signal["axes"][-1]
    units = to_text(x_axis.get("units")) or ""
    scale = to_float(x_axis.get("scale"))
    meta.sampling_nm = length_to_nm(scale, units)
    if meta.sampling_nm is None and units and units != "<undefined>":
        meta.extra["sampling_unit"] = units
        meta.extra["sampling_scale"] = scale
    metadata = signal.get("metadata") or {}
    tem = _lookup(metadata, "Acquisition_instrument", "TEM") or {}
    meta.voltage_kV = to_float(tem.get("beam_energy"))
    if meta.voltage_kV is None:
        meta.voltage_kV = to_float(_mapped(signal, "Acquisition_instrument.TEM.beam_energy"))
    meta.microscope = to_text(tem.get("microscope")) or to_text(
        _mapped(signal, "Acquisition_instrument.TEM.microscope"))
    detector = tem.get("Detector")
    if isinstance(detector, dict) and detector:
        name = next(iter(detector))
        meta.detector = to_text(_lookup(detector, name, "detector_name")) or name
    binning = to_float(_lookup(tem, "Camera", "binning"))
    if binning and binning >= 1:
        meta.binning = int(binning)
    title = to_text(_lookup(metadata, "General", "title"))
    if title:
        meta.extra["title"] = title
    signal_type = to_text(_lookup(metadata, "Signal", "signal_type"))
    if signal_type:
        meta.extra["signal_type"] = signal_type
    biprism = to_float(_lookup(tem, "Biprism", "voltage"))
    if biprism is not None:
        meta.extra["biprism_voltage_V"] = biprism
    return meta


def stack_times(signal: dict[str, Any]) -> np.ndarray | None:
    """``time_s`` of the frames of a stack whose navigation axis is in time units, else None."""
    data = signal["data"]
    if data.ndim != 3:
        return None
    axis = signal["axes"][0]
    factor = _TIME_UNITS_S.get((to_text(axis.get("units")) or "").strip())
    scale = to_float(axis.get("scale"))
    if factor is None or scale is None:
        return None
    offset = to_float(axis.get("offset")) or 0.0
    return (offset + scale * np.arange(int(data.shape[0]))) * factor


# ---------------------------------------------------------------------------
# lazy arrays kept per process (formats whose frames are read through RosettaSciIO)
# ---------------------------------------------------------------------------

_LAZY_LOCK = threading.Lock()
_LAZY: OrderedDict = OrderedDict()
_LAZY_MAX = 8


def _file_key(path) -> tuple:
    try:
        stat = os.stat(path)
        return (str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return (str(path), 0, 0)


class RsciioSource(StoredHeaderSource):
    """Frames of the image signal of a file read by a RosettaSciIO plugin.

    Subclasses set :attr:`plugin` (the ``rsciio`` sub-module) and may override
    :meth:`_setup` (remember where the frames are) and :meth:`_read`.
    """

    plugin = ""
    format_name = ""
    reader_options: dict[str, Any] = {}

    def __init__(self, spec: FileSpec):
        super().__init__(spec)
        signals = self._read_signals()
        self._signal_number, signal = pick_image(signals, spec.path, spec.options.get("signal"))
        data = signal["data"]
        shape = tuple(int(n) for n in data.shape)
        self._n_frames = 1 if len(shape) == 2 else shape[0]
        self._shape = shape[-2:]
        self._dtype = np.dtype(data.dtype)
        self._metadata = signal_metadata(signal)
        times = stack_times(signal)
        self._coords = {} if times is None else {"time_s": times}
        self._setup(signal)
        self._release()

    # -- header -----------------------------------------------------------
    def _read_signals(self, **options) -> list[dict[str, Any]]:
        from importlib import import_module

        reader = import_module(f"rsciio.{self.plugin}").file_reader
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                signals = reader(str(self.spec.path), lazy=True, **{**self.reader_options, **options})
        except InputFileError:
            raise
        except Exception as exc:  # RosettaSciIO raises many kinds on broken files
            raise InputFileError(
                f"{self.spec.path}: cannot read as {self.format_name or self.plugin} file ({exc})"
            ) from None
        if not signals:
            raise InputFileError(f"{self.spec.path}: the file holds no signal")
        return signals

    def _setup(self, signal: dict[str, Any]) -> None:
        """Remember where the frames are (default: read them through RosettaSciIO)."""

    def _release(self) -> None:
        """Close what reading the header left open (default: nothing)."""

    # -- frames -----------------------------------------------------------
    def read_frame(self, index: int) -> np.ndarray:
        self._check_index(index)
        return np.asarray(self._read(index))

    def _lazy_data(self):
        key = (type(self).__name__, *_file_key(self.spec.path), self._signal_number,
               tuple(sorted(self.spec.options.items())))
        with _LAZY_LOCK:
            data = _LAZY.get(key)
            if data is not None:
                _LAZY.move_to_end(key)
                return data
        data = self._read_signals()[self._signal_number]["data"]
        with _LAZY_LOCK:
            _LAZY[key] = data
            while len(_LAZY) > _LAZY_MAX:
                _LAZY.popitem(last=False)
        return data

    def _read(self, index: int) -> np.ndarray:
        data = self._lazy_data()
        part = data if data.ndim == 2 else data[index]
        if hasattr(part, "compute"):
            part = part.compute(scheduler="synchronous")
        return np.asarray(part)


# ---------------------------------------------------------------------------
# HyperSpy
# ---------------------------------------------------------------------------


def is_hyperspy_file(path) -> bool:
    """Whether ``path`` is an HDF5 file written by HyperSpy / RosettaSciIO (``file_format``)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            value = h5.attrs.get("file_format")
    except (OSError, ValueError):
        return False
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value) == "HyperSpy"


def _experiment_groups(root) -> list[str]:
    """Names of the signal groups of a HyperSpy file, in RosettaSciIO's order."""
    experiments = root.get("Experiments") if hasattr(root, "get") else None
    if experiments is None:
        return []
    return [name for name in experiments if "data" in experiments[name]
            and not hasattr(experiments[name], "shape")]


@register_reader("hspy")
class HspySource(RsciioSource):
    """A HyperSpy HDF5 file (``.hspy``; a HyperSpy ``.hdf5`` without options, or ``?type=hspy``)."""

    plugin = "hspy"
    format_name = "HyperSpy"

    def _setup(self, signal):
        import h5py

        with h5py.File(self.spec.path, "r") as h5:
            names = _experiment_groups(h5)
        self._dataset = f"Experiments/{names[self._signal_number]}/data"

    def _release(self) -> None:
        try:  # RosettaSciIO keeps the files of lazy signals open until asked to close them
            from rsciio.hspy._api import _close_tracked_handles
        except ImportError:  # pragma: no cover - another RosettaSciIO release
            return
        _close_tracked_handles(str(self.spec.path))

    def _read(self, index: int) -> np.ndarray:
        import h5py

        try:
            with h5py.File(self.spec.path, "r") as h5:
                dataset = h5[self._dataset]
                return dataset[()] if dataset.ndim == 2 else dataset[index]
        except (OSError, KeyError) as exc:
            raise InputFileError(f"{self.spec.path}: cannot read frame {index} ({exc})") from None


@register_reader("zspy")
class ZspySource(RsciioSource):
    """A HyperSpy Zarr store (``.zspy``, a folder or a zip store)."""

    plugin = "zspy"
    format_name = "HyperSpy Zarr"
    reader_options = {"mode": "r"}  # RosettaSciIO opens lazy signals for writing otherwise


def _hyperspy_hdf5(spec: FileSpec) -> bool:
    return not spec.options and spec.path.is_file() and is_hyperspy_file(spec.path)


# a HyperSpy file named .hdf5/.h5 opens without dataset= (with dataset= the HDF5 reader reads it)
register_content_rule(("hdf5", "h5"), _hyperspy_hdf5, "hspy")


# ---------------------------------------------------------------------------
# EMD: Velox (Thermo Fisher) and Berkeley (NCEM)
# ---------------------------------------------------------------------------


def _velox_version(h5) -> dict | None:
    version = h5.get("Version")
    if version is None or not hasattr(version, "shape"):
        return None
    try:
        value = json.loads(bytes(version[0]).decode("utf-8"))
    except (ValueError, TypeError, IndexError):
        return None
    return value if value.get("format") in ("Velox", "DevelopersKit") else None


_TIMESTAMP_KEY = re.compile(r"^Detectors\[.*\]\.TimeStamp$")


def velox_frame_times(metadata: np.ndarray) -> np.ndarray | None:
    """Per-frame acquisition times (s since 1970 UTC) of a Velox ``Metadata`` array.

    Velox keeps one JSON text per frame, as the bytes of one column. A frame's
    time is its detector's ``CustomProperties`` entry ``Detectors[NAME].TimeStamp``
    (µs), else ``Acquisition.AcquisitionStartDatetime.DateTime`` (s). None
    where a frame has neither.
    """
    times = []
    for column in range(metadata.shape[1]):
        text = np.asarray(metadata[:, column]).tobytes().decode("utf-8", "replace").rstrip("\x00")
        try:
            tree = json.loads(text)
        except ValueError:
            return None
        stamp = None
        custom = tree.get("CustomProperties")
        if isinstance(custom, dict):
            for key, entry in custom.items():
                if _TIMESTAMP_KEY.match(key):
                    value = to_float(entry.get("value") if isinstance(entry, dict) else entry)
                    if value is not None:
                        stamp = value * 1e-6
                        break
        if stamp is None:
            stamp = to_float(_lookup(tree, "Acquisition", "AcquisitionStartDatetime", "DateTime"))
        if stamp is None:
            return None
        times.append(stamp)
    return np.asarray(times, dtype=np.float64)


@register_reader("emd")
class EmdSource(RsciioSource):
    """An EMD file: Velox (frames stored as y, x, frame) or Berkeley EMD."""

    plugin = "emd"
    format_name = "EMD"

    def __init__(self, spec: FileSpec):
        import h5py

        try:
            with h5py.File(spec.path, "r") as h5:
                self._velox = _velox_version(h5) is not None
        except OSError as exc:
            raise InputFileError(f"{spec.path}: cannot read as EMD (HDF5) file ({exc})") from None
        self.reader_options = {"select_type": "images"} if self._velox else {}
        super().__init__(spec)

    def _setup(self, signal):
        self._dataset = None
        if not self._velox:
            return
        import h5py

        with h5py.File(self.spec.path, "r") as h5:
            keys = list(h5["Data/Image"].keys())
            group = h5[f"Data/Image/{keys[self._signal_number]}"]
            self._dataset = group["Data"].name
            if "Metadata" in group and self._n_frames >= 1:
                times = velox_frame_times(group["Metadata"])
                if times is not None and len(times) == self._n_frames:
                    spread = float(np.ptp(times)) if len(times) > 1 else 0.0
                    if len(times) == 1 or spread > 0 or "time_s" not in self._coords:
                        self._coords = {"time_s": times}
                    else:  # one start time for every frame: add the stack's frame times
                        self._coords = {"time_s": times[0] + self._coords["time_s"]}
        self._metadata.extra["variant"] = "Velox"

    def _read(self, index: int) -> np.ndarray:
        if self._dataset is None:
            return super()._read(index)
        import h5py

        with h5py.File(self.spec.path, "r") as h5:
            frame = h5[self._dataset][:, :, index]
        if frame.dtype.names:  # FFT / DPC images: a compound of real and imaginary parts
            real, imag = frame.dtype.names[:2]
            frame = frame[real] + 1j * frame[imag]
        return frame


# ---------------------------------------------------------------------------
# MRC
# ---------------------------------------------------------------------------


@register_reader("mrc", "ali")
class MrcSource(RsciioSource):
    """An MRC file (CCP-EM MRC2014, and FEI's extended header): a 3-D volume is a stack of frames."""

    plugin = "mrc"
    format_name = "MRC"
