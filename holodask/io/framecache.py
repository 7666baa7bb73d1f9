"""Reader of sparse frame caches (type ``frame-cache``, also ``.npz``).

Two forms (see :mod:`holodask.io.imageseries` for the layout):

* one ``.npz`` with ``{i}_row``, ``{i}_col``, ``{i}_data``, ``shape``,
  ``nframes``, ``dtype`` and metadata keys;
* a YAML file ``data: {file, dtype, nframes, shape}`` plus ``meta`` (``file``
  relative to the YAML file's folder).

Frames are rebuilt densely one at a time, reading only that frame's three arrays.
YAML ``meta`` values of the form ``"! load-numpy-array NAME.npy"`` are loaded
from that file (relative to the YAML file).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from holodask.errors import InputFileError
from holodask.io.imageseries import FRAME_CACHE_KEYS, split_metadata
from holodask.io.registry import FileSpec, StoredHeaderSource, register_reader

__all__ = ["FrameCacheSource", "load_yaml_document", "resolve_yaml_meta"]

_FRAME_KEY = re.compile(r"^\d+_(row|col|data)$")
_LOAD_ARRAY = re.compile(r"^\s*!\s*load-numpy-array\s+(.+?)\s*$")


def load_yaml_document(path: Path) -> Any:
    """Parse a YAML file; a syntax error is an :class:`InputFileError` naming it."""
    import yaml

    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.safe_load(stream)
    except yaml.YAMLError as exc:
        raise InputFileError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: cannot read ({exc})") from None


def resolve_yaml_meta(meta: Any, path: Path) -> dict[str, Any]:
    """The ``meta`` mapping of a YAML container, with ``! load-numpy-array`` values loaded."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InputFileError(f"{path}: 'meta' must be a mapping, got {type(meta).__name__}")
    out: dict[str, Any] = {}
    for key, value in meta.items():
        match = _LOAD_ARRAY.match(value) if isinstance(value, str) else None
        if match:
            array_path = path.parent / match.group(1)
            try:
                value = np.load(array_path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputFileError(
                    f"{path}: meta {key!r}: cannot load array {array_path} ({exc})"
                ) from None
        out[str(key)] = value
    return out


def _as_int(value: Any, what: str, path: Path) -> int:
    try:
        array = np.asarray(value)
        if array.ndim != 0 or array.dtype.kind not in "iu":
            raise ValueError
        return int(array)
    except (TypeError, ValueError):
        raise InputFileError(f"{path}: {what} must be an integer, got {value!r}") from None


def _as_shape(value: Any, path: Path) -> tuple[int, int]:
    try:
        array = np.asarray(value)
        if array.shape != (2,) or array.dtype.kind not in "iu" or (array < 1).any():
            raise ValueError
        return int(array[0]), int(array[1])
    except (TypeError, ValueError):
        raise InputFileError(f"{path}: shape must be [rows, cols], got {value!r}") from None


def _as_dtype(value: Any, path: Path) -> np.dtype:
    value = np.asarray(value).item() if isinstance(value, np.ndarray) else value
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    try:
        return np.dtype(value)
    except TypeError:
        raise InputFileError(f"{path}: dtype {value!r} is not a numpy type name") from None


@register_reader("frame-cache", "npz")
class FrameCacheSource(StoredHeaderSource):
    """A sparse frame cache, ``.npz`` or YAML form (chosen by the content)."""

    def __init__(self, spec: FileSpec, document: Any = None):
        super().__init__(spec)
        path = spec.path
        if document is None and zipfile.is_zipfile(path):
            self._init_npz(path)
        else:
            if document is None:
                document = load_yaml_document(path)
            self._init_yaml(path, document)
        self._check_members()

    # -- header reading
    def _init_npz(self, path: Path) -> None:
        self.npz_path = path
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = set(archive.files)
                missing = [k for k in FRAME_CACHE_KEYS if k not in keys]
                if missing:
                    raise InputFileError(
                        f"{path}: not a frame cache (missing key(s) {', '.join(missing)})"
                    )
                self._n_frames = _as_int(archive["nframes"], "nframes", path)
                self._shape = _as_shape(archive["shape"], path)
                self._dtype = _as_dtype(archive["dtype"], path)
                meta = {k: archive[k] for k in sorted(keys) if k not in FRAME_CACHE_KEYS
                        and not _FRAME_KEY.match(k)}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise InputFileError(f"{path}: cannot read frame cache ({exc})") from None
        self._members = keys
        self._set_metadata(meta)

    def _init_yaml(self, path: Path, document: Any) -> None:
        data = document.get("data") if isinstance(document, Mapping) else None
        if not isinstance(data, Mapping) or "file" not in data:
            raise InputFileError(
                f"{path}: not a frame-cache YAML file (expected 'data:' with 'file', 'dtype', "
                "'nframes', 'shape')"
            )
        missing = [k for k in ("dtype", "nframes", "shape") if k not in data]
        if missing:
            raise InputFileError(f"{path}: 'data' lacks {', '.join(missing)}")
        self.npz_path = path.parent / str(data["file"])
        if not self.npz_path.exists():
            raise InputFileError(f"{path}: frame-cache file {self.npz_path} not found")
        self._n_frames = _as_int(data["nframes"], "data.nframes", path)
        self._shape = _as_shape(data["shape"], path)
        self._dtype = _as_dtype(data["dtype"], path)
        try:
            with np.load(self.npz_path, allow_pickle=False) as archive:
                self._members = set(archive.files)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise InputFileError(f"{self.npz_path}: cannot read frame cache ({exc})") from None
        meta = dict(document.get("meta") or {}) if isinstance(document.get("meta"), Mapping) else {}
        if not meta and isinstance(document.get("metadata"), Mapping):
            meta = dict(document["metadata"])
        self._set_metadata(resolve_yaml_meta(meta, path))

    def _set_metadata(self, meta: dict[str, Any]) -> None:
        self._metadata, self._coords = split_metadata(meta, self._n_frames, str(self.spec.path))

    def _check_members(self) -> None:
        if self._n_frames < 1:
            raise InputFileError(f"{self.spec.path}: frame cache holds no frames")
        for key in ("0_row", f"{self._n_frames - 1}_data"):
            if key not in self._members:
                raise InputFileError(
                    f"{self.npz_path}: frame cache lacks array {key!r} "
                    f"(nframes is {self._n_frames})"
                )
        del self._members

    # -- FrameSource interface
    def read_frame(self, index: int) -> np.ndarray:
        self._check_index(index)
        frame = np.zeros(self._shape, dtype=self._dtype)
        try:
            with np.load(self.npz_path, allow_pickle=False) as archive:
                rows = archive[f"{index}_row"]
                cols = archive[f"{index}_col"]
                data = archive[f"{index}_data"]
        except KeyError as exc:
            raise InputFileError(f"{self.npz_path}: frame {index} is missing ({exc})") from None
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise InputFileError(f"{self.npz_path}: cannot read frame {index} ({exc})") from None
        if not (rows.shape == cols.shape == data.shape) or rows.ndim != 1:
            raise InputFileError(
                f"{self.npz_path}: frame {index}: row, col and data arrays differ in length"
            )
        try:
            frame[rows, cols] = data
        except IndexError:
            raise InputFileError(
                f"{self.npz_path}: frame {index}: indices outside the frame shape {self._shape}"
            ) from None
        return frame
