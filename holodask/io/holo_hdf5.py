"""Output files in the layout of the reference program (HDF5).

A result file holds the datasets ``data`` (averaged object wave), ``empty``
(averaged empty wave) and ``variance``, optionally a group ``series`` with the
individual reconstructions ``000``, ``001``, ... (or one 3-D dataset), each
name preceded by the run's ``output_prefix`` (a ``/`` in the prefix makes
subgroups). Complex images are stored as the 8-byte compound of two float32
members ``r`` (offset 0) and ``i`` (offset 4), which h5py reads back as
complex64.

Writes are atomic: :class:`HoloOutputFile` works on a temporary file in the
destination folder (a copy of the existing file, if there is one) and moves it
into place with :func:`os.replace` only when the ``with`` block ends without an
exception. On an exception or an interrupt the temporary file is removed and an
earlier file is left untouched. If the writing process is killed outright
(SIGKILL), a small watcher process started with the file removes the temporary
file as soon as the writer's end of a pipe closes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from holodask import __version__
from holodask.errors import DataError, HolodaskError, InputFileError, ParameterError

#: complex values on disk: compound of float32 ``r`` (offset 0) and ``i`` (offset 4)
COMPLEX_DTYPE = np.dtype({"names": ["r", "i"], "formats": ["<f4", "<f4"],
                          "offsets": [0, 4], "itemsize": 8})

#: suffix of temporary files (hidden, in the destination folder)
TEMP_SUFFIX = ".holodask-tmp"

#: name of the cut-off attribute in the reference program's documentation
CUT_OFF_ATTR = "reconstructionCutOff2(nm2)"
#: name the reference program (1.1.x) actually writes; written as well for compatibility
CUT_OFF_ATTR_REFERENCE = "reconstructionCutOff2(nm-2)"


# ----------------------------------------------------------------------------
# value conversion
# ----------------------------------------------------------------------------

def to_complex_array(array) -> np.ndarray:
    """``array`` as complex64 (compound ``r``/``i`` float32 on disk)."""
    return np.asarray(array).astype(np.complex64, copy=False)


def _storage_array(array) -> np.ndarray:
    """Pixel array converted for storage: complex -> complex64, real floats ->
    float32, integer and boolean data keep their dtype."""
    if hasattr(array, "compute") and not isinstance(array, np.ndarray):
        array = array.compute()
    if hasattr(array, "values") and not isinstance(array, np.ndarray):  # xarray
        array = array.values
    array = np.asarray(array)
    if np.iscomplexobj(array):
        return array.astype(np.complex64, copy=False)
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind in "iub":
        return array
    raise DataError(f"cannot store pixel data of dtype {array.dtype} in an HDF5 result")


def attribute_value(value: Any) -> Any:
    """Convert a Python/numpy value to something h5py stores sensibly.

    Strings become UTF-8 strings, lists of strings arrays of variable-length
    strings, lists of numbers numpy arrays, dicts JSON text; ``None`` is
    returned as ``None`` (the attribute is then skipped).
    """
    if value is None:
        return None
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return json.dumps(dict(value), default=_json_default)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        return np.int64(value)
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    if isinstance(value, (complex, np.complexfloating)):
        return np.complex128(value)
    if hasattr(value, "values") and not isinstance(value, np.ndarray):  # xarray
        value = value.values
    if isinstance(value, (list, tuple, np.ndarray)):
        flat = list(np.asarray(value, dtype=object).ravel()) if len(value) else []
        if any(isinstance(v, (str, bytes, np.str_, np.bytes_)) for v in flat):
            strings = [v.decode("utf-8", "replace") if isinstance(v, (bytes, np.bytes_))
                       else str(v) for v in flat]
            shape = np.shape(np.asarray(value, dtype=object))
            return np.array(strings, dtype=h5py.string_dtype("utf-8")).reshape(shape)
        array = np.asarray(value)
        if array.dtype == object:
            raise ParameterError(f"cannot store attribute value {value!r} in HDF5")
        if array.dtype.kind == "b":
            return array
        if array.dtype.kind in "iu":
            return array.astype(np.int64)
        if array.dtype.kind == "f":
            return array.astype(np.float64)
        if array.dtype.kind == "c":
            return array.astype(np.complex128)
        return array
    raise ParameterError(f"cannot store attribute value of type {type(value).__name__} in HDF5")


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def set_attributes(obj: h5py.HLObject, attrs: Mapping[str, Any] | None) -> None:
    """Write ``attrs`` onto an HDF5 group or dataset (``None`` values skipped)."""
    for key, value in (attrs or {}).items():
        converted = attribute_value(value)
        if converted is None:
            continue
        if key in obj.attrs:
            del obj.attrs[key]
        obj.attrs[key] = converted


def read_complex(dataset) -> np.ndarray:
    """Read a complex image as complex64 numpy array.

    Accepts the float32 ``r``/``i`` compound written by holodask, the float64
    compound (``<c16``) of the reference program, any two-member compound
    (real, imaginary) and real data (imaginary part zero).
    """
    if isinstance(dataset, (h5py.Dataset,)):
        dtype = dataset.dtype
        if dtype.names and dtype.kind == "V" and not np.issubdtype(dtype, np.complexfloating):
            raw = dataset[()]
            return (raw[dtype.names[0]] + 1j * raw[dtype.names[1]]).astype(np.complex64)
        return np.asarray(dataset[()]).astype(np.complex64, copy=False)
    array = np.asarray(dataset)
    if array.dtype.names:
        return (array[array.dtype.names[0]] + 1j * array[array.dtype.names[1]]).astype(np.complex64)
    return array.astype(np.complex64, copy=False)


# ----------------------------------------------------------------------------
# standard attributes
# ----------------------------------------------------------------------------

def _parameters_json(params) -> str:
    try:
        from holodask.params import parameters_json
    except ImportError:  # parameter work not merged yet
        parameters_json = None
    if parameters_json is not None:
        return parameters_json(params)
    return json.dumps(getattr(params, "raw", {}) or {}, default=_json_default)


def dim_attrs(sampling_nm, offset_nm=(0.0, 0.0), unit: str = "nm") -> dict:
    """``dim_scale``, ``dim_offset``, ``dim_unit`` (each (X, Y)) of an image.

    ``sampling_nm`` is one number or an (X, Y) pair.
    """
    scale = np.broadcast_to(np.asarray(sampling_nm, dtype=np.float64), (2,)).copy()
    offset = np.broadcast_to(np.asarray(offset_nm, dtype=np.float64), (2,)).copy()
    return {"dim_scale": scale, "dim_offset": offset, "dim_unit": [unit, unit]}


def standard_attrs(params=None, *, sampling_nm=None, offset_nm=(0.0, 0.0),
                   carrier_per_nm=None, voltage_kV=None, binning=None,
                   microscope=None, detector=None, roi=None, align_roi=None,
                   cut_off2_per_nm2=None, mask_type=None) -> dict:
    """Attributes every reconstructed dataset carries.

    Values not given are taken from ``params`` (a :class:`HoloParams`) where it
    has them; values that remain ``None`` are left out. The result holds
    ``holoaverage_param``, ``holodask_version``, ``carrier(nm-1)``, the cut-off
    matrix, ``reconstructionMaskType``, ``align_cut_off``, ``voltage(kV)``,
    ``binning`` (X, Y), ``microscope``, ``detector``, ``roi``, ``align_roi``,
    ``dim_scale``/``dim_offset``/``dim_unit`` and ``space`` (1: real space).
    ``holoaverage_version`` is never written: holodask is not the reference.
    """
    attrs: dict[str, Any] = {}
    if params is not None:
        attrs["holoaverage_param"] = _parameters_json(params)
        if voltage_kV is None:
            voltage_kV = params.voltage_kV
        if binning is None:
            binning = params.binning
        if sampling_nm is None:
            sampling_nm = params.sampling_nm
        if roi is None:
            roi = params.roi
        if align_roi is None:
            align_roi = params.align_roi if params.align_roi is not None else roi
        if cut_off2_per_nm2 is None:
            cut_off2_per_nm2 = params.cut_off2_per_nm2
        if mask_type is None:
            mask_type = params.filter_func.as_attribute()
        attrs["align_cut_off"] = float(params.align_cut_off_per_nm)
    attrs["holodask_version"] = __version__
    if carrier_per_nm is not None:
        attrs["carrier(nm-1)"] = np.asarray(carrier_per_nm, dtype=np.float64)
    if cut_off2_per_nm2 is not None:
        cut = np.asarray(cut_off2_per_nm2, dtype=np.float64)
        attrs[CUT_OFF_ATTR] = cut
        attrs[CUT_OFF_ATTR_REFERENCE] = cut
    if mask_type is not None:
        attrs["reconstructionMaskType"] = [str(m) for m in mask_type]
    if voltage_kV is not None:
        attrs["voltage(kV)"] = float(voltage_kV)
    if binning is not None:
        attrs["binning"] = np.broadcast_to(np.asarray(binning, dtype=np.int64), (2,)).copy()
    if microscope is not None:
        attrs["microscope"] = str(microscope)
    if detector is not None:
        attrs["detector"] = str(detector)
    if roi is not None:
        attrs["roi"] = np.asarray(roi, dtype=np.int64)
    if align_roi is not None:
        attrs["align_roi"] = np.asarray(align_roi, dtype=np.int64)
    if sampling_nm is not None:
        attrs.update(dim_attrs(sampling_nm, offset_nm))
    attrs["space"] = 1
    return attrs


def hologram_attrs(*, shift_nm=None, tilt_per_nm=None, defocus_nm=None, factor=None,
                   error=None, raw_shift_px=None, convergence=None, frame_index=None) -> dict:
    """Per-hologram attributes of the averaged object wave (``data``/``variance``).

    ``shift_nm``, ``tilt_per_nm`` and ``raw_shift_px`` are (N, 2) arrays (X, Y),
    ``defocus_nm`` and ``error`` length N, ``factor`` N complex global factors
    (stored as complex, i.e. the compound (real, imaginary) the reference
    writes), ``convergence`` the total residual per iteration, ``frame_index``
    the series indices of the holograms (holodask extension).
    """
    attrs: dict[str, Any] = {}
    if shift_nm is not None:
        attrs["shift(nm)"] = np.asarray(shift_nm, dtype=np.float64).reshape(-1, 2)
    if tilt_per_nm is not None:
        attrs["tilt(1/nm)"] = np.asarray(tilt_per_nm, dtype=np.float64).reshape(-1, 2)
    if defocus_nm is not None:
        attrs["defocus(nm)"] = np.asarray(defocus_nm, dtype=np.float64).ravel()
    if factor is not None:
        attrs["factor"] = np.asarray(factor, dtype=np.complex128).ravel()
    if error is not None:
        attrs["error"] = np.asarray(error, dtype=np.float64).ravel()
    if raw_shift_px is not None:
        attrs["raw_shift"] = np.asarray(np.round(raw_shift_px), dtype=np.int64).reshape(-1, 2)
    if convergence is not None:
        attrs["convergence"] = np.asarray(convergence, dtype=np.float64).ravel()
    if frame_index is not None:
        attrs["frame_index"] = np.asarray(frame_index, dtype=np.int64).ravel()
    return attrs


def frame_name(index: int) -> str:
    """Name of frame ``index`` inside a series group: ``000``, ``001``, ...,
    ``999``, ``1000`` (at least 3 digits, as the reference program names them)."""
    return f"{index:03d}"


# ----------------------------------------------------------------------------
# the writer
# ----------------------------------------------------------------------------

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_path(path) -> Path:
    """Validate an output path: its folder must exist and it must not be a folder."""
    if path is None or str(path) == "":
        raise ParameterError("output_name: an output file name is required")
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"output file {path} is a directory, expected a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputFileError(f"output file {path}: folder {folder} does not exist")
    if path.exists() and not os.access(path, os.R_OK):
        raise InputFileError(f"output file {path} exists but cannot be read")
    return path


class _TempWatcher:
    """Removes a temporary file if the writing process dies without cleaning up.

    A tiny shell process waits for end-of-file on a pipe whose write end only
    this process holds; end-of-file comes on a clean close or when the process
    is killed (even with SIGKILL), and the watcher then removes the file (a
    no-op when it has already been moved into place).
    """

    def __init__(self, temp_path: Path):
        self._proc = None
        if os.name != "posix" or shutil.which("sh") is None:
            return
        try:
            self._proc = subprocess.Popen(
                ["sh", "-c", 'cat >/dev/null; rm -f -- "$1"', "holodask-tmp-watch", str(temp_path)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=True, start_new_session=True)
        except OSError:
            self._proc = None

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._proc = None


class HoloOutputFile:
    """Atomic writer of a result file in the reference program's layout.

    Use as a context manager::

        with HoloOutputFile("result.hdf5", prefix="run1/") as out:
            out.write_dataset("data", wave, attrs)

    Parameters
    ----------
    path : str or Path
        Destination file. Its folder must exist. An existing file is copied
        and updated: datasets written replace those of the same name, every
        other dataset and group is kept.
    prefix : str
        Prepended to every name (``output_prefix``); a ``/`` makes subgroups.
    fresh : bool
        Start from an empty file instead of a copy of the existing one (the
        existing file, whatever it holds, is replaced on a clean exit).
    """

    def __init__(self, path, prefix: str = "", *, fresh: bool = False):
        self.path = Path(path)
        self.prefix = (prefix or "").lstrip("/")
        self.fresh = bool(fresh)
        self._file: h5py.File | None = None
        self._temp_path: Path | None = None
        self._watcher: _TempWatcher | None = None

    # -- context management --------------------------------------------------
    def __enter__(self) -> "HoloOutputFile":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

    def open(self) -> None:
        """Create the temporary file (a copy of an existing destination)."""
        path = check_output_path(self.path)
        exists = path.exists()
        copy = exists and not self.fresh
        if copy and not h5py.is_hdf5(path):
            raise InputFileError(f"output file {path} exists and is not an HDF5 file; "
                                 "remove it or choose another output_name")
        folder = path.parent if str(path.parent) else Path(".")
        try:
            fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX,
                                             dir=folder)
        except OSError as exc:
            raise InputFileError(f"cannot write output file {path}: {exc.strerror}") from exc
        os.close(fd)
        self._temp_path = Path(temp_name)
        try:
            self._watcher = _TempWatcher(self._temp_path)
            if copy:
                shutil.copyfile(path, self._temp_path)
            mode = os.stat(path).st_mode & 0o7777 if exists else 0o666 & ~_umask()
            os.chmod(self._temp_path, mode)
            self._file = h5py.File(self._temp_path, "r+" if copy else "w")
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise InputFileError(f"cannot write output file {path}: {exc}") from exc
            raise

    def commit(self) -> None:
        """Close the temporary file and move it into place."""
        if self._temp_path is None:
            return
        try:
            if self._file is not None:
                self._file.close()
                self._file = None
            os.replace(self._temp_path, self.path)
            self._temp_path = None
        except BaseException:
            self.abort()
            raise
        finally:
            self._close_watcher()

    def abort(self) -> None:
        """Close and remove the temporary file; the destination stays untouched."""
        try:
            if self._file is not None:
                try:
                    self._file.close()
                except Exception:  # noqa: BLE001 - closing a broken file must not mask the error
                    pass
                self._file = None
        finally:
            if self._temp_path is not None:
                try:
                    os.unlink(self._temp_path)
                except FileNotFoundError:
                    pass
                self._temp_path = None
            self._close_watcher()

    def _close_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    # -- access ----------------------------------------------------------------
    @property
    def file(self) -> h5py.File:
        """The open (temporary) h5py file."""
        if self._file is None:
            raise HolodaskError(f"output file {self.path} is not open (use 'with HoloOutputFile(...)')")
        return self._file

    def full_name(self, name: str) -> str:
        """``name`` with the prefix applied."""
        return f"{self.prefix}{name}".lstrip("/")

    def _prepare(self, name: str) -> str:
        """Full name, with parent groups present and an old object of that name removed."""
        full = self.full_name(name)
        if not full or full.endswith("/"):
            raise ParameterError(f"output_prefix: dataset name {full!r} is empty or ends with '/'")
        parts = full.split("/")
        group = self.file
        for part in parts[:-1]:
            if not part:
                continue
            if part in group:
                if not isinstance(group[part], h5py.Group):
                    raise ParameterError(
                        f"output_prefix: {group[part].name!r} in {self.path} is a dataset, "
                        f"cannot create {full!r} under it")
            else:
                group.create_group(part)
            group = group[part]
        if full in self.file:
            del self.file[full]
        return full

    # -- writing -----------------------------------------------------------------
    def write_dataset(self, name: str, array, attrs: Mapping[str, Any] | None = None) -> h5py.Dataset:
        """Write one dataset (replacing one of the same name).

        Complex data is stored as the ``r``/``i`` float32 compound, real floats
        as float32, integer data keeps its dtype.
        """
        data = _storage_array(array)
        full = self._prepare(name)
        dataset = self.file.create_dataset(full, data=data)
        set_attributes(dataset, attrs)
        return dataset

    def write_frames(self, name: str, frames: Iterable, attrs: Mapping[str, Any] | None = None,
                     as_dataset: bool = False) -> int:
        """Write 2-D frames one at a time; returns their number.

        Frames go into a group ``name`` with datasets ``000``, ``001``, ... or,
        with ``as_dataset``, into one 3-D dataset ``name`` (chunked per frame,
        grown as frames arrive). Frames are never stacked in memory.
        """
        full = self._prepare(name)
        count = 0
        if as_dataset:
            dataset = None
            for frame in frames:
                data = _storage_array(frame)
                if data.ndim != 2:
                    raise DataError(f"frame {count} of {full!r} has {data.ndim} dimensions, expected 2")
                if dataset is None:
                    dataset = self.file.create_dataset(
                        full, shape=(0, *data.shape), maxshape=(None, *data.shape),
                        dtype=data.dtype, chunks=(1, *data.shape))
                elif data.shape != dataset.shape[1:]:
                    raise DataError(f"frame {count} of {full!r} has shape {data.shape}, "
                                    f"expected {dataset.shape[1:]}")
                dataset.resize(count + 1, axis=0)
                dataset[count] = data.astype(dataset.dtype, copy=False)
                count += 1
            if dataset is None:
                dataset = self.file.create_dataset(full, shape=(0, 0, 0), dtype=np.complex64)
            set_attributes(dataset, attrs)
            return count
        group = self.file.create_group(full)
        for frame in frames:
            data = _storage_array(frame)
            if data.ndim != 2:
                raise DataError(f"frame {count} of {full!r} has {data.ndim} dimensions, expected 2")
            group.create_dataset(frame_name(count), data=data)
            count += 1
        set_attributes(group, attrs)
        return count

    def write_attributes(self, name: str, attrs: Mapping[str, Any]) -> None:
        """Add attributes to an existing object ``name`` (prefix applied)."""
        set_attributes(self.file[self.full_name(name)], attrs)


__all__ = [
    "COMPLEX_DTYPE", "HoloOutputFile", "read_complex", "standard_attrs", "hologram_attrs",
    "dim_attrs", "attribute_value", "set_attributes", "frame_name", "check_output_path",
    "to_complex_array", "CUT_OFF_ATTR", "CUT_OFF_ATTR_REFERENCE",
]
