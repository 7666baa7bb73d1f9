"""Reader of ``image-files`` YAML lists, and the content-sniffing ``.yml`` opener.

An image-files list (type ``image-files``, or any ``.yml``/``.yaml`` whose
content has the key ``image-files``)::

    image-files:
      directory: frames            # relative to the YAML file (default: its folder)
      files: "a_*.tif stack.tif"   # space-separated names or glob patterns (or a list)
    options:
      empty-frames: 0              # frames skipped at the start of each multi-frame file
      max-total-frames: 0          # 0: all
      max-file-frames: 0           # per multi-frame file, 0: all
      dtype: float32               # convert frames; values that would change are an error
    meta:                          # (or metadata:) sampling_nm, voltage_kV, per-frame lists ...
      sampling_nm: 0.05

Each file is opened through the reader registry, so every format holodask reads
works; a name may carry reader options (``stack.h5?dataset=data``). The options
may also stand at the top level, beside ``image-files``.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from holodask.errors import InputFileError
from holodask.io.framecache import load_yaml_document, resolve_yaml_meta
from holodask.io.imageseries import split_metadata
from holodask.io.registry import (
    FileSpec,
    FrameSource,
    StoredHeaderSource,
    open_source,
    register_reader,
)

__all__ = ["ImageFilesSource", "open_yaml_container", "check_lossless_cast"]

_NAME_WITH_OPTIONS = re.compile(r"^(?P<name>.*?)\?(?P<options>[A-Za-z_][\w-]*=.*)$")
_OPTION_NAMES = ("empty-frames", "max-total-frames", "max-file-frames", "dtype")


def check_lossless_cast(frame: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """Convert ``frame`` to ``dtype``; values that would change raise InputFileError.

    A safe cast (``np.can_cast``) always passes. Otherwise the actual values
    are checked: float to float must stay finite (range), anything else must
    convert back to the same values (integer ranges, fractional parts, NaN).
    """
    dtype = np.dtype(dtype)
    if np.can_cast(frame.dtype, dtype, casting="safe"):
        return frame.astype(dtype, copy=False)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = frame.astype(dtype)
        if frame.dtype.kind in "fc" and dtype.kind in "fc" and not (
            frame.dtype.kind == "c" and dtype.kind == "f"
        ):
            lossless = bool(np.all(np.isfinite(converted) | ~np.isfinite(frame)))
        else:
            back = converted.astype(frame.dtype)
            lossless = bool(np.array_equal(back, frame))
    if not lossless:
        raise InputFileError(
            f"{where}: dtype {dtype} would truncate the {frame.dtype} values "
            f"(range {_value_range(frame)})"
        )
    return converted


def _value_range(frame: np.ndarray) -> str:
    if frame.size == 0:
        return "empty"
    if frame.dtype.kind == "c":
        return f"complex, max |z| {np.nanmax(np.abs(frame)):g}"
    return f"{np.nanmin(frame)} to {np.nanmax(frame)}"


def _non_negative_int(value: Any, name: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputFileError(f"{path}: option {name!r} must be a non-negative integer, got {value!r}")
    return int(value)


@register_reader("image-files")
class ImageFilesSource(StoredHeaderSource):
    """The frames of a list of image files, in list order (globs sorted)."""

    def __init__(self, spec: FileSpec, document: Any = None):
        super().__init__(spec)
        path = spec.path
        if document is None:
            document = load_yaml_document(path)
        section = document.get("image-files") if isinstance(document, Mapping) else None
        if not isinstance(section, Mapping):
            raise InputFileError(
                f"{path}: not an image-files list (expected 'image-files:' with 'directory' and 'files')"
            )
        directory = section.get("directory", ".")
        folder = path.parent / str(directory if directory is not None else ".")
        if not folder.is_dir():
            raise InputFileError(f"{path}: image-files directory {folder} does not exist")
        files = self._expand(section.get("files"), folder, path)

        raw_options = document.get("options")
        if raw_options is not None and not isinstance(raw_options, Mapping):
            raise InputFileError(f"{path}: 'options' must be a mapping, got {raw_options!r}")
        options = dict(raw_options or {})
        for name in _OPTION_NAMES:
            if name not in options and name in document:
                options[name] = document[name]
        unknown = sorted(set(options) - set(_OPTION_NAMES))
        if unknown:
            raise InputFileError(
                f"{path}: unknown option(s) {', '.join(unknown)} (known: {', '.join(_OPTION_NAMES)})"
            )
        empty_frames = _non_negative_int(options.get("empty-frames", 0), "empty-frames", path)
        max_total = _non_negative_int(options.get("max-total-frames", 0), "max-total-frames", path)
        max_file = _non_negative_int(options.get("max-file-frames", 0), "max-file-frames", path)

        # (source, first frame in the file, number of frames used)
        self._parts: list[tuple[StoredHeaderSource, int, int]] = []
        total = 0
        shape = None
        dtypes = []
        for file_spec in files:
            if max_total and total >= max_total:
                break
            source = open_source(file_spec, folder)
            available = source.n_frames
            first, count = 0, available
            if available > 1:
                if empty_frames >= available:
                    raise InputFileError(
                        f"{source.spec.path}: empty-frames is {empty_frames} but the file has "
                        f"only {available} frames"
                    )
                first, count = empty_frames, available - empty_frames
                if max_file:
                    count = min(count, max_file)
            if max_total:
                count = min(count, max_total - total)
            if shape is None:
                shape = tuple(source.shape)
            elif tuple(source.shape) != shape:
                raise InputFileError(
                    f"{source.spec.path}: frames are {tuple(source.shape)}, earlier files' are {shape}"
                )
            dtypes.append(np.dtype(source.dtype))
            self._parts.append((source, first, count))
            total += count
        self._shape = shape
        self._n_frames = total
        self._stored_dtype = np.result_type(*dtypes)
        requested = options.get("dtype")
        if requested is not None:
            try:
                self._dtype = np.dtype(str(requested))
            except TypeError:
                raise InputFileError(f"{path}: option 'dtype': {requested!r} is not a numpy type name") from None
        else:
            self._dtype = self._stored_dtype

        meta_section = document.get("meta", document.get("metadata"))
        meta = resolve_yaml_meta(meta_section, path)
        file_meta = self._parts[0][0].metadata
        metadata, coords = split_metadata(meta, total, str(path))
        for name in ("sampling_nm", "voltage_kV", "binning", "microscope", "detector"):
            if getattr(metadata, name) is None:
                setattr(metadata, name, getattr(file_meta, name))
        self._metadata = metadata
        self._coords = self._file_coords()
        self._coords.update(coords)

    @staticmethod
    def _expand(files: Any, folder: Path, path: Path) -> list[str]:
        if isinstance(files, str):
            entries = files.split()
        elif isinstance(files, (list, tuple)) and all(isinstance(f, str) for f in files):
            entries = list(files)
        else:
            raise InputFileError(
                f"{path}: image-files 'files' must be a space-separated string of names or "
                f"glob patterns (or a list), got {files!r}"
            )
        if not entries:
            raise InputFileError(f"{path}: image-files 'files' lists no file")
        specs: list[str] = []
        for entry in entries:
            match = _NAME_WITH_OPTIONS.match(entry)
            name, options = (match["name"], "?" + match["options"]) if match else (entry, "")
            if glob.has_magic(name):
                matches = sorted(glob.glob(os.path.join(glob.escape(str(folder)), name)))
                matches = [m for m in matches if os.path.isfile(m)]
                if not matches:
                    raise InputFileError(f"{path}: pattern {name!r} matches no file in {folder}")
                specs.extend(m + options for m in matches)
            else:
                if not (folder / name).is_file():
                    raise InputFileError(f"{path}: listed file {folder / name} not found")
                specs.append(str(folder / name) + options)
        return specs

    def _file_coords(self) -> dict[str, np.ndarray]:
        """Per-frame values every file gives, concatenated over the used frames."""
        per_file = [(source.frame_coords(), first, count) for source, first, count in self._parts]
        common = set(per_file[0][0])
        for coords, _, _ in per_file[1:]:
            common &= set(coords)
        return {
            key: np.concatenate([np.asarray(c[key])[first:first + count] for c, first, count in per_file])
            for key in sorted(common)
        }

    def locate(self, index: int) -> tuple[StoredHeaderSource, int]:
        """The file source holding frame ``index`` and the frame's index in it."""
        self._check_index(index)
        for source, first, count in self._parts:
            if index < count:
                return source, first + index
            index -= count
        raise AssertionError("unreachable")

    def read_frame(self, index: int) -> np.ndarray:
        source, file_index = self.locate(index)
        frame = np.asarray(source.read_frame(file_index))
        if frame.dtype != self._dtype:
            frame = check_lossless_cast(
                frame, self._dtype, f"{source.spec.path} (frame {file_index}, listed in {self.spec.path})"
            )
        return frame


def open_yaml_container(spec: FileSpec) -> FrameSource:
    """Open a ``.yml``/``.yaml`` container by its content.

    ``image-files:`` makes an :class:`ImageFilesSource`; ``data:`` with
    ``file`` makes a :class:`~holodask.io.framecache.FrameCacheSource`.
    """
    from holodask.io.framecache import FrameCacheSource

    document = load_yaml_document(spec.path)
    if isinstance(document, Mapping):
        if "image-files" in document:
            return ImageFilesSource(spec, document)
        if isinstance(document.get("data"), Mapping) and "file" in document["data"]:
            return FrameCacheSource(spec, document)
    raise InputFileError(
        f"{spec.path}: YAML file is neither an image-files list (key 'image-files') nor a "
        "frame cache (key 'data' with 'file'); choose a reader with ?type=..."
    )


register_reader("yml", "yaml")(open_yaml_container)
