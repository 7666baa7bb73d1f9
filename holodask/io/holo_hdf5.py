"""Output files in the layout of the reference program (HDF5).

A result file holds the datasets ``data`` (averaged object wave), ``empty``
(averaged empty wave) and ``variance``, optionally a group ``series`` with the
individual reconstructions ``000``, ``001``, ... (or one 3-D dataset), each
name preceded by the run's ``output_prefix`` (a ``/`` in the prefix makes
subgroups). Complex images are stored as the 8-byte compound of two float32
members ``r`` (offset 0) and ``i`` (offset 4), which h5py reads back as
complex64.

Writes are atomic, checked and locked (:mod:`holodask.io.safe_write`):
:class:`HoloOutputFile` writes a new temporary file in the destination folder;
when the ``with`` block ends without an exception, the objects of an existing
file are copied into it, except the result under the prefix (see
:data:`RESULT_NAMES`), and it is moved into place with :func:`os.replace`, under
a lock. On an exception or an interrupt the temporary file is removed and an
earlier file is left untouched. If the writing process is killed outright
(SIGKILL), a small watcher process started with the file removes the temporary
file as soon as the writer's end of a pipe closes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from holodask import __version__
from holodask.errors import DataError, HolodaskError, InputFileError, ParameterError
from holodask.io.safe_write import TEMP_SUFFIX, AtomicOutput, check_output_name

#: complex values on disk: compound of float32 ``r`` (offset 0) and ``i`` (offset 4)
COMPLEX_DTYPE = np.dtype({"names": ["r", "i"], "formats": ["<f4", "<f4"],
                          "offsets": [0, 4], "itemsize": 8})

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

#: what a run writes under its prefix; writing a prefix replaces all of them
RESULT_NAMES = ("data", "variance", "empty", "series", "aligned_rois")


def check_output_path(path, what: str | None = None) -> Path:
    """Validate an output path: not empty, not a folder, not ending in a separator, in an
    existing folder (the checks that need no file system access beyond that)."""
    path = check_output_name(path, what or "output_name")
    folder = path.parent
    if not folder.is_dir():
        raise InputFileError(f"output file {path}: folder {folder} does not exist")
    if path.exists() and not os.access(path, os.R_OK):
        raise InputFileError(f"output file {path} exists but cannot be read")
    return path


def _copy_link_or_object(source: h5py.Group, name: str, destination: h5py.Group) -> None:
    link = source.get(name, getlink=True)
    if isinstance(link, h5py.SoftLink):
        destination[name] = h5py.SoftLink(link.path)
    elif isinstance(link, h5py.ExternalLink):
        destination[name] = h5py.ExternalLink(link.filename, link.path)
    else:
        source.copy(name, destination, name=name)


def _copy_attrs(source, destination) -> None:
    for key, value in source.attrs.items():
        if key not in destination.attrs:
            destination.attrs[key] = value


def keep_objects(existing: h5py.Group, new: h5py.Group, replaced: set[str], what: str = "output_prefix") -> None:
    """Copy every object of ``existing`` into ``new`` except those named in ``replaced``
    (full names without the leading ``/``) and what lies under them; groups that hold
    both kept and new objects are merged, attributes the new group lacks are copied."""
    _copy_attrs(existing, new)
    for name in existing:
        full = f"{existing.name.rstrip('/')}/{name}".lstrip("/")
        if full in replaced:
            continue
        link = existing.get(name, getlink=True)
        is_group = isinstance(link, h5py.HardLink) and isinstance(existing.get(name), h5py.Group)
        holds_replaced = any(r.startswith(full + "/") for r in replaced)
        if name in new:
            if is_group and isinstance(new.get(name), h5py.Group):
                keep_objects(existing[name], new[name], replaced, what)
                continue
            raise ParameterError(
                f"{what}: {full!r} is a {'group' if is_group else 'dataset'} in the existing "
                f"output file and cannot hold what this run writes there"
            )
        if is_group and holds_replaced:
            keep_objects(existing[name], new.create_group(name), replaced, what)
            continue
        _copy_link_or_object(existing, name, new)


class HoloOutputFile:
    """Atomic writer of a result file in the reference program's layout.

    Use as a context manager::

        with HoloOutputFile("result.hdf5", prefix="run1/") as out:
            out.write_dataset("data", wave, attrs)

    The datasets go to a new temporary file (see
    :class:`holodask.io.safe_write.AtomicOutput`: checked, exclusive, locked);
    when the block ends without an exception, the objects of an existing
    destination are copied into it, except everything the run replaces, and
    it is moved into place.

    Parameters
    ----------
    path : str or Path
        Destination file. Its folder must exist. Of an existing file (which
        must be an HDF5 file that no other program has open for writing)
        everything is kept except the result under ``prefix``: the objects
        written, and every one of :data:`RESULT_NAMES` (a rewritten prefix
        leaves no stale ``series`` behind). Other prefixes stay untouched.
    prefix : str
        Prepended to every name (``output_prefix``); a ``/`` makes subgroups.
    fresh : bool
        Start from an empty file instead of merging with the existing one (the
        existing file, whatever it holds, is replaced on a clean exit).
    protected : iterable of paths
        Files that must not be overwritten (inputs, the parameter file).
    what : str
        The parameter or option naming the file, for messages.
    accept_existing : callable, optional
        See :class:`~holodask.io.safe_write.AtomicOutput`.
    """

    def __init__(self, path, prefix: str = "", *, fresh: bool = False, protected: Iterable = (),
                 what: str | None = "output_name", accept_existing=None):
        self.path = Path(path)
        self.prefix = (prefix or "").lstrip("/")
        self.fresh = bool(fresh)
        self._output = AtomicOutput(path, what=what, kind="hdf5", protected=protected,
                                    merge=None if fresh else self._merge, accept_existing=accept_existing)
        self._file: h5py.File | None = None
        self._written: set[str] = set()

    # -- context management --------------------------------------------------
    def __enter__(self) -> "HoloOutputFile":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
            return False
        self._close_file()
        return self._output.__exit__(exc_type, exc, tb)

    def open(self) -> None:
        """Check the destination and create the temporary file."""
        self._output.open()
        self.path = self._output.path
        try:
            if not self.fresh:
                self._check_prefix_against(self.path)
            self._file = h5py.File(self._output.open_name(), "w")
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError) and not isinstance(exc, HolodaskError):
                raise InputFileError(f"cannot write output file {self.path}: {exc.strerror or exc}") from exc
            raise

    def _check_prefix_against(self, existing: Path) -> None:
        """Refuse a prefix that runs through a dataset of the existing file (before any work)."""
        parts = [p for p in self.prefix.split("/")[:-1] if p]
        if not parts or not existing.exists():
            return
        with h5py.File(existing, "r") as f:
            group = f
            for part in parts:
                item = group.get(part)
                if item is None:
                    return
                if not isinstance(item, h5py.Group):
                    raise ParameterError(
                        f"output_prefix: {item.name!r} in {existing} is a dataset, "
                        f"cannot create {self.prefix!r} under it")
                group = item

    def replaced_names(self) -> set[str]:
        """Full names of what this file replaces in an existing destination."""
        return set(self._written) | {self.full_name(name) for name in RESULT_NAMES}

    def _merge(self, open_name: str, existing: Path) -> None:
        with h5py.File(open_name, "r+") as new, h5py.File(existing, "r") as old:
            keep_objects(old, new, self.replaced_names())

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - closing a broken file must not mask the error
                pass
            self._file = None

    def commit(self) -> None:
        """Close the temporary file, merge it with the existing one and move it into place."""
        if self._file is not None:
            try:
                self._file.close()
            except BaseException:
                self._file = None
                self.abort()
                raise
            self._file = None
        self._output.commit()

    def abort(self) -> None:
        """Close and remove the temporary file; the destination stays untouched."""
        self._close_file()
        self._output.abort()

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
        self._written.add(full)
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
    "to_complex_array", "CUT_OFF_ATTR", "CUT_OFF_ATTR_REFERENCE", "RESULT_NAMES", "TEMP_SUFFIX",
    "keep_objects",
]
