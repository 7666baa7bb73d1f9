"""File specs and the registry of frame readers.

A *file spec* is ``path?key=value&key=value``: a file name followed by reader
options (the old separator ``?`` between options is still accepted, with a
deprecation warning). ``type=`` selects the reader instead of the extension.

Readers subclass :class:`FrameSource` and register themselves with
:func:`register_reader` for one or more type names (extensions without dot).
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping

import numpy as np

from holodask.errors import InputFileError

__all__ = [
    "FileSpec",
    "FrameMetadata",
    "FrameSource",
    "StoredHeaderSource",
    "parse_spec",
    "register_reader",
    "register_content_rule",
    "open_source",
    "reader_types",
]


@dataclass(frozen=True)
class FileSpec:
    """A parsed file spec: absolute ``path``, reader ``options`` and ``type``."""

    path: Path
    type: str
    options: Mapping[str, str] = field(default_factory=dict)
    text: str = ""

    def __str__(self) -> str:
        return self.text or str(self.path)


def normalise_path(name: str, basepath: str | os.PathLike | None = None) -> Path:
    """Turn a path with ``/`` or ``\\`` separators into an absolute path.

    Relative paths are taken relative to ``basepath`` (default: current folder).
    """
    name = name.replace("\\", "/")
    path = Path(*PurePosixPath(name).parts) if name else Path(".")
    if name.startswith("/"):
        path = Path("/") / path
    if not path.is_absolute():
        path = Path(basepath if basepath is not None else os.getcwd()) / path
    return Path(os.path.normpath(path))


def parse_spec(spec: str | FileSpec, basepath: str | os.PathLike | None = None) -> FileSpec:
    """Parse ``name?key=value&key=value`` into a :class:`FileSpec`."""
    if isinstance(spec, FileSpec):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise InputFileError(f"file spec must be a string, got {type(spec).__name__}: {spec!r}")
    text = os.fspath(spec)
    name, sep, query = text.partition("?")
    options: dict[str, str] = {}
    if sep:
        parts = query.split("&")
        if len(parts) == 1 and query.count("?") >= 1:
            warnings.warn(
                f"file spec {text!r}: separating reader options with '?' is deprecated, use '&'",
                DeprecationWarning,
                stacklevel=2,
            )
            parts = query.split("?")
        elif any("?" in p for p in parts):
            raise InputFileError(f"file spec {text!r}: mixes '?' and '&' between options")
        for part in parts:
            if not part:
                continue
            key, eq, value = part.partition("=")
            if not eq or not key:
                raise InputFileError(
                    f"file spec {text!r}: option {part!r} is not of the form key=value"
                )
            options[key.strip()] = value
    path = normalise_path(name, basepath)
    kind = options.pop("type", None)
    if kind is None:
        suffixes = path.name.lower().split(".")
        kind = suffixes[-1] if len(suffixes) > 1 else ""
    return FileSpec(path=path, type=kind.lower(), options=options, text=text)


@dataclass
class FrameMetadata:
    """Calibration found in a file; ``None`` where the file does not say."""

    sampling_nm: float | None = None
    voltage_kV: float | None = None
    binning: int | None = None
    microscope: str | None = None
    detector: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class FrameSource(ABC):
    """One file (or container) holding one or more 2-D frames of equal shape.

    Implementations must be cheap to construct (read headers only), picklable
    (so Dask workers can read frames where the work runs) and must not keep
    file handles open between calls of :meth:`read_frame`.
    """

    #: type names (extensions) the reader is registered for
    types: tuple[str, ...] = ()

    def __init__(self, spec: FileSpec):
        self.spec = spec

    @property
    @abstractmethod
    def n_frames(self) -> int:
        """Number of frames in the file."""

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of one frame."""

    @property
    @abstractmethod
    def dtype(self) -> np.dtype:
        """Pixel type of the frames as stored."""

    @property
    def metadata(self) -> FrameMetadata:
        """Calibration of the file (default: nothing known)."""
        return FrameMetadata()

    def frame_coords(self) -> dict[str, np.ndarray]:
        """Per-frame values (e.g. ``angle``, ``laser``), each of length ``n_frames``."""
        return {}

    @abstractmethod
    def read_frame(self, index: int) -> np.ndarray:
        """Read frame ``index`` (0-based) as a 2-D array of :attr:`dtype`."""

    #: whether :meth:`read_region` reads only the region (not the whole frame first)
    reads_regions: bool = False

    def read_region(self, index: int, rows: slice, cols: slice) -> np.ndarray:
        """Read the part ``[rows, cols]`` of frame ``index``. This default reads the whole
        frame; readers that can read less override it (and set :attr:`reads_regions`)."""
        return np.asarray(self.read_frame(index))[rows, cols]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.spec)!r})"


class StoredHeaderSource(FrameSource):
    """A :class:`FrameSource` whose header is read once, in ``__init__``.

    Subclasses set ``_n_frames``, ``_shape``, ``_dtype`` and, where known,
    ``_metadata`` and ``_coords`` (per-frame values); they implement
    :meth:`read_frame`, starting with :meth:`_check_index`.
    """

    _metadata: FrameMetadata = FrameMetadata()
    _coords: dict[str, np.ndarray] = {}

    @property
    def n_frames(self) -> int:
        return int(self._n_frames)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self._shape[0]), int(self._shape[1]))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._dtype)

    @property
    def metadata(self) -> FrameMetadata:
        return self._metadata

    def frame_coords(self) -> dict[str, np.ndarray]:
        return dict(self._coords)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.n_frames:
            raise IndexError(f"{self.spec.path}: frame {index} out of range 0..{self.n_frames - 1}")


_REGISTRY: dict[str, type[FrameSource] | Callable[[FileSpec], FrameSource]] = {}


def register_reader(*types: str):
    """Class decorator registering a :class:`FrameSource` for type names."""

    def decorate(cls):
        for kind in types:
            _REGISTRY[kind.lower()] = cls
        cls.types = tuple(t.lower() for t in types)
        return cls

    return decorate


#: (types, predicate, target type): a file of one of ``types`` for which
#: ``predicate(spec)`` holds is read by the reader of ``target``
_CONTENT_RULES: list[tuple[tuple[str, ...], Callable[[FileSpec], bool], str]] = []


def register_content_rule(types, predicate: Callable[[FileSpec], bool], target: str) -> None:
    """Let the reader of ``target`` read files of ``types`` whose content ``predicate`` recognises.

    E.g. a HyperSpy file named ``.hdf5`` (given without ``dataset=``) is read
    as ``hspy``. ``type=`` in a file spec bypasses every rule.
    """
    rule = (tuple(t.lower() for t in types), predicate, target.lower())
    if rule not in _CONTENT_RULES:
        _CONTENT_RULES.append(rule)


def reader_types() -> list[str]:
    """The registered type names."""
    _load_builtin_readers()
    return sorted(_REGISTRY)


def _load_builtin_readers() -> None:
    import holodask.io.readers  # noqa: F401  (registers the built-in readers)


def open_source(spec: str | FileSpec, basepath: str | os.PathLike | None = None) -> FrameSource:
    """Open a file spec with the reader registered for its type.

    Raises
    ------
    InputFileError
        If the file does not exist or no reader knows its type.
    """
    _load_builtin_readers()
    fs = parse_spec(spec, basepath)
    query = (fs.text or "").partition("?")[2]
    given_type = any(part.partition("=")[0].strip() == "type" for part in query.replace("?", "&").split("&"))
    factory = _REGISTRY.get(fs.type)
    if factory is None:
        known = ", ".join(sorted(_REGISTRY))
        raise InputFileError(
            f"{fs.text or fs.path}: unknown file type {fs.type!r} (known: {known}; "
            "choose one with ?type=...)"
        )
    if not fs.path.exists():
        raise InputFileError(f"{fs.path}: file not found")
    if not given_type:
        for types, predicate, target in _CONTENT_RULES:
            if fs.type in types and target in _REGISTRY and predicate(fs):
                factory = _REGISTRY[target]
                break
    return factory(fs)
