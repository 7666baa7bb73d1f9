"""Image-series containers: writers, and the metadata conventions readers share.

Two writable containers (see ``imageseries-load-options.txt``):

* an HDF5 image series: a group holding the 3-D dataset ``images``
  (frames x rows x cols), scalar metadata as the group's attributes and
  per-frame values as 1-D datasets of length n_frames beside ``images``;
* a frame cache: frames stored sparsely (only values above a threshold) in a
  ``.npz`` file with keys ``{i}_row``, ``{i}_col``, ``{i}_data``, ``shape``,
  ``nframes``, ``dtype`` plus metadata keys, or the YAML form (a ``.yml`` file
  with ``data: {file, dtype, nframes, shape}`` and ``meta``, the arrays in a
  ``.npz`` beside it).

Both writers take any iterable of 2-D frames, write them one at a time (memory
bounded by one frame) and atomically: into a temporary file in the output's
folder that replaces the output only when everything was written.

Metadata is a mapping: ``sampling_nm``, ``voltage_kV``, ``binning``,
``microscope``, ``detector`` and any other scalar, plus per-frame values
(1-D sequences of length n_frames, e.g. ``angle``); ``None`` values are skipped.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from holodask.errors import DataError, InputFileError, ParameterError
from holodask.io.registry import FrameMetadata

__all__ = [
    "write_hdf5_series",
    "write_frame_cache",
    "split_metadata",
    "metadata_to_mapping",
    "FRAME_CACHE_KEYS",
    "SPARSE_WARNING_FRACTION",
]

#: keys of a frame-cache ``.npz`` that are not metadata (besides ``{i}_row/col/data``)
FRAME_CACHE_KEYS = ("shape", "nframes", "dtype")

#: a frame with more than this fraction of kept (above-threshold) pixels is reported
SPARSE_WARNING_FRACTION = 0.10

_CALIBRATION_ALIASES = {
    "sampling_nm": ("sampling_nm", "sampling"),
    "voltage_kV": ("voltage_kV", "voltage_kv", "voltage"),
    "binning": ("binning",),
    "microscope": ("microscope",),
    "detector": ("detector",),
}


# --------------------------------------------------------------------------- metadata


def _plain(value: Any) -> Any:
    """numpy scalars / 0-d arrays / bytes -> plain Python values."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value


def split_metadata(
    meta: Mapping[str, Any] | None, n_frames: int, source: str = ""
) -> tuple[FrameMetadata, dict[str, np.ndarray]]:
    """Split a metadata mapping into calibration and per-frame values.

    Parameters
    ----------
    meta
        Keys as described in the module docstring (aliases ``sampling`` and
        ``voltage`` are accepted).
    n_frames
        Number of frames; 1-D sequences of this length become per-frame values.
    source
        Name of the file the metadata came from, for error messages.

    Returns
    -------
    (FrameMetadata, dict)
        The calibration (other scalars in ``extra``) and the per-frame arrays.
    """
    metadata = FrameMetadata()
    coords: dict[str, np.ndarray] = {}
    if not meta:
        return metadata, coords
    used: set[str] = set()
    for field_name, aliases in _CALIBRATION_ALIASES.items():
        for alias in aliases:
            if alias in meta and meta[alias] is not None:
                value = _plain(meta[alias])
                kind = {"sampling_nm": float, "voltage_kV": float, "binning": int}.get(field_name, str)
                try:
                    if isinstance(value, (list, tuple, dict, np.ndarray)):
                        raise TypeError
                    value = kind(value)
                except (TypeError, ValueError):
                    expected = "a string" if kind is str else "a number"
                    raise InputFileError(
                        f"{source}: metadata {alias!r} must be {expected}, got {meta[alias]!r}"
                    ) from None
                setattr(metadata, field_name, value)
                used.add(alias)
                break
    for key, value in meta.items():
        if key in used or value is None:
            continue
        value = _plain(value)
        if isinstance(value, (list, tuple, np.ndarray)):
            array = np.asarray(value)
            if array.ndim == 1 and len(array) == n_frames and array.dtype != object:
                coords[key] = array
                continue
            metadata.extra[key] = array
        else:
            metadata.extra[key] = value
    return metadata, coords


def metadata_to_mapping(
    metadata: FrameMetadata | None = None, frame_coords: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The inverse of :func:`split_metadata`: one mapping for the writers."""
    out: dict[str, Any] = {}
    if metadata is not None:
        for name in _CALIBRATION_ALIASES:
            value = getattr(metadata, name)
            if value is not None:
                out[name] = value
        for key, value in metadata.extra.items():
            if value is not None:
                out.setdefault(key, value)
    for key, values in (frame_coords or {}).items():
        out[key] = np.asarray(values)
    return out


def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ParameterError(f"metadata must be a mapping, got {type(metadata).__name__}")
    out = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if not isinstance(key, str) or not key or "/" in key:
            raise ParameterError(f"metadata key {key!r} must be a non-empty name without '/'")
        out[key] = _plain(value)
    return out


def _is_per_frame(value: Any, n_frames: int) -> bool:
    if isinstance(value, (str, bytes)):
        return False
    array = np.asarray(value)
    return array.ndim == 1 and len(array) == n_frames


# --------------------------------------------------------------------------- helpers


def _iter_frames(frames: Iterable[Any]) -> Iterator[np.ndarray]:
    """Yield 2-D numpy frames of one shape from an iterable (arrays, DataArrays...)."""
    shape = None
    dtype = None
    for index, frame in enumerate(frames):
        array = np.asarray(getattr(frame, "values", frame))
        if array.ndim != 2:
            raise DataError(f"frame {index} is not 2-D (shape {array.shape})")
        if shape is None:
            shape, dtype = array.shape, array.dtype
        elif array.shape != shape:
            raise DataError(f"frame {index} has shape {array.shape}, frame 0 has {shape}")
        elif array.dtype != dtype:
            raise DataError(f"frame {index} has dtype {array.dtype}, frame 0 has {dtype}")
        yield array


def _n_frames_if_known(frames: Any) -> int | None:
    try:
        return len(frames)
    except TypeError:
        return None


@contextmanager
def _atomic_output(path: Path, kind: str, *, keep_except: str | None = None, protected=(),
                   what: str | None = "OUTPUT") -> Iterator[str]:
    """A name of a new temporary file beside ``path`` that replaces it on a clean exit
    (:class:`holodask.io.safe_write.AtomicOutput`). With ``keep_except`` (an HDF5 group),
    every other object of an existing HDF5 file is kept."""
    from holodask.io.safe_write import AtomicOutput

    merge = None
    if keep_except is not None:
        def merge(open_name: str, existing: Path) -> None:
            import h5py

            from holodask.io.holo_hdf5 import keep_objects

            with h5py.File(open_name, "r+") as new, h5py.File(existing, "r") as old:
                keep_objects(old, new, {keep_except}, what="path")

    with AtomicOutput(path, what=what, kind=kind, protected=protected, merge=merge) as out:
        yield out.open_name()


def _validate_gzip(gzip: Any) -> int:
    if isinstance(gzip, bool) or not isinstance(gzip, (int, np.integer)) or not 0 <= gzip <= 9:
        raise ParameterError(f"gzip: compression level must be an integer from 0 to 9, got {gzip!r}")
    return int(gzip)


# --------------------------------------------------------------------------- HDF5 series


def write_hdf5_series(
    frames: Iterable[Any],
    path: str | os.PathLike,
    group_path: str,
    gzip: int = 1,
    shuffle: bool = True,
    chunk_rows: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    protected: Iterable = (),
) -> int:
    """Write frames as an HDF5 image series (group ``group_path``, dataset ``images``).

    Parameters
    ----------
    frames
        Iterable of 2-D arrays of one shape and dtype (a 3-D array works too).
    path
        HDF5 file; an existing file keeps everything but ``group_path``.
    group_path
        Group to create (intermediate groups are made; an existing one is replaced).
    gzip
        Compression level 0-9 (0: no compression).
    shuffle
        Apply the HDF5 shuffle filter.
    chunk_rows
        Rows per chunk; chunks are ``1 x chunk_rows x cols`` (default: all rows).
    metadata
        Scalars become attributes of the group, per-frame 1-D values of length
        n_frames become datasets beside ``images``.
    protected
        Files that must not be overwritten (the inputs).

    Returns
    -------
    int
        The number of frames written.
    """
    import h5py

    gzip = _validate_gzip(gzip)
    group_path = str(group_path).strip("/") if group_path is not None else ""
    if not group_path:
        raise ParameterError("path: the HDF5 group to write the series into must be given (e.g. 'images')")
    if chunk_rows is not None and (
        isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1
    ):
        raise ParameterError(f"chunk_rows: expected a positive integer, got {chunk_rows!r}")
    meta = _check_metadata(metadata)
    if "images" in meta:
        raise ParameterError("metadata key 'images' clashes with the dataset of the series")
    path = Path(path)
    n_known = _n_frames_if_known(frames)
    frame_iter = _iter_frames(frames)
    with _atomic_output(path, "hdf5", keep_except=group_path, protected=protected) as tmp:
        with h5py.File(tmp, "w") as h5:
            group = h5.create_group(group_path)
            dataset = None
            count = 0
            for frame in frame_iter:
                if dataset is None:
                    rows, cols = frame.shape
                    rows_per_chunk = rows if chunk_rows is None else min(int(chunk_rows), rows)
                    options: dict[str, Any] = {"chunks": (1, rows_per_chunk, cols)}
                    if gzip > 0:
                        options.update(compression="gzip", compression_opts=gzip)
                    if shuffle:
                        options["shuffle"] = True
                    n_alloc = n_known if n_known else 1
                    dataset = group.create_dataset(
                        "images",
                        shape=(n_alloc, rows, cols),
                        maxshape=(None, rows, cols),
                        dtype=frame.dtype,
                        **options,
                    )
                if count >= dataset.shape[0]:
                    dataset.resize(count + 1, axis=0)
                dataset[count] = frame
                count += 1
            if dataset is None:
                raise DataError(f"{path}: no frames to write")
            if count != dataset.shape[0]:
                dataset.resize(count, axis=0)
            for key, value in meta.items():
                if _is_per_frame(value, count):
                    array = np.asarray(value)
                    if array.dtype.kind == "U":
                        array = array.astype(h5py.string_dtype())
                    group.create_dataset(key, data=array)
                elif isinstance(value, str):
                    group.attrs[key] = value
                else:
                    group.attrs[key] = np.asarray(value)
    return count


# --------------------------------------------------------------------------- frame cache


def _index_dtype(size: int) -> np.dtype:
    return np.dtype(np.uint16) if size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def _write_npy(archive: zipfile.ZipFile, name: str, array: Any) -> None:
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _yaml_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_yaml_value(v) for v in value.tolist()] if value.ndim else _yaml_value(value.item())
    if isinstance(value, (list, tuple)):
        return [_yaml_value(v) for v in value]
    return _plain(value)


def _summarise_indices(indices: list[int], limit: int = 20) -> str:
    text = ", ".join(str(i) for i in indices[:limit])
    if len(indices) > limit:
        text += f", ... ({len(indices)} frames)"
    return text


def write_frame_cache(
    frames: Iterable[Any],
    path: str | os.PathLike,
    threshold: float,
    output_yaml: bool = False,
    metadata: Mapping[str, Any] | None = None,
    protected: Iterable = (),
) -> int:
    """Write frames as a sparse frame cache.

    Parameters
    ----------
    frames
        Iterable of real 2-D arrays of one shape and dtype.
    path
        The ``.npz`` file, or with ``output_yaml`` the ``.yml``/``.yaml`` file
        (its arrays go to a ``.npz`` of the same name beside it).
    threshold
        Values at or below it are dropped (read back as zero).
    output_yaml
        Write the YAML form (metadata in the YAML ``meta``) instead of one ``.npz``.
    metadata
        See the module docstring; stored as extra ``.npz`` keys, or in ``meta``.
    protected
        Files that must not be overwritten (the inputs).

    Returns
    -------
    int
        The number of frames written.

    Warns
    -----
    UserWarning
        Naming the frames that are less than 90 % empty (the cache saves little).
    """
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ParameterError(f"threshold: expected a number, got {threshold!r}") from None
    if not np.isfinite(threshold):
        raise ParameterError(f"threshold: expected a finite number, got {threshold!r}")
    meta = _check_metadata(metadata)
    path = Path(path)
    if output_yaml:
        if path.suffix.lower() not in (".yml", ".yaml"):
            raise ParameterError(
                f"{path}: with output_yaml the output must be a .yml or .yaml file"
            )
        npz_path = path.with_suffix(".npz")
    else:
        npz_path = path
        for key in meta:
            if key in FRAME_CACHE_KEYS or key.split("_", 1)[0].isdigit():
                raise ParameterError(f"metadata key {key!r} clashes with the frame-cache keys")
    shape = None
    dtype = None
    dense_frames: list[int] = []
    count = 0
    with _atomic_output(npz_path, "zip", protected=protected) as tmp_npz:
        with open(tmp_npz, "wb") as npz_file, zipfile.ZipFile(npz_file, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for index, frame in enumerate(_iter_frames(frames)):
                if frame.dtype.kind == "c":
                    raise DataError("frame cache: complex frames cannot be thresholded")
                if shape is None:
                    shape, dtype = frame.shape, frame.dtype
                    index_dtype = _index_dtype(max(shape))
                rows, cols = np.nonzero(frame > threshold)
                _write_npy(zf, f"{index}_row", rows.astype(index_dtype))
                _write_npy(zf, f"{index}_col", cols.astype(index_dtype))
                _write_npy(zf, f"{index}_data", frame[rows, cols])
                if len(rows) > SPARSE_WARNING_FRACTION * frame.size:
                    dense_frames.append(index)
                count = index + 1
            if shape is None:
                raise DataError(f"{path}: no frames to write")
            if not output_yaml:
                _write_npy(zf, "shape", np.array(shape, dtype=np.int64))
                _write_npy(zf, "nframes", np.array(count, dtype=np.int64))
                _write_npy(zf, "dtype", np.array(str(dtype)))
                for key, value in meta.items():
                    array = np.asarray(value)
                    if array.dtype == object:
                        raise ParameterError(f"metadata {key!r} cannot be stored in an .npz file")
                    _write_npy(zf, key, array)
        if output_yaml:
            import yaml

            document = {
                "data": {
                    "file": npz_path.name,
                    "dtype": str(dtype),
                    "nframes": count,
                    "shape": [int(s) for s in shape],
                },
                "meta": {key: _yaml_value(value) for key, value in meta.items()},
            }
            with _atomic_output(path, "frame-cache-yaml", protected=[*protected, npz_path]) as tmp_yaml:
                with open(tmp_yaml, "w", encoding="utf-8") as stream:
                    yaml.safe_dump(document, stream, sort_keys=False)
    if dense_frames:
        warnings.warn(
            f"frame cache {path}: frames less than 90 % empty at threshold {threshold:g} "
            f"(little is saved; raise the threshold?): {_summarise_indices(dense_frames)}",
            UserWarning,
            stacklevel=2,
        )
    return count
