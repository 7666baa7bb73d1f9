"""Lazy hologram series: many files (or frames inside files) as one Dask-backed DataArray.

Nothing is read when the series is opened except the file headers; each frame
is one Dask chunk whose task reads that frame from its (picklable) source where
the task runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from dask.base import tokenize

from holodask.errors import InputFileError, ParameterError
from holodask.limits import check_frame_count, check_source_size
from holodask.io.registry import FileSpec, FrameMetadata, FrameSource, open_source

if TYPE_CHECKING:  # xarray and dask.array are imported where a DataArray is built
    import xarray as xr

__all__ = [
    "FrameSeries",
    "open_frame_series",
    "open_series",
    "open_frames",
    "open_sources",
    "series_from_sources",
    "read_source_frame",
    "frames_of",
]

SpecLike = str | os.PathLike | FileSpec


def read_source_frame(source: FrameSource, index: int, check=None) -> np.ndarray:
    """Read frame ``index`` of ``source`` as a (1, rows, columns) block; ``check(frame,
    source, index)`` (e.g. :func:`holodask.checks.check_hologram_frame`) may refuse it."""
    frame = np.asarray(source.read_frame(index))
    if frame.shape != tuple(source.shape):
        raise InputFileError(
            f"{source.spec}: frame {index} has shape {frame.shape}, "
            f"expected {tuple(source.shape)}"
        )
    if check is not None:
        check(frame, source, index)
    return frame.astype(source.dtype, copy=False)[np.newaxis]


def _as_spec_list(specs) -> list[SpecLike]:
    if isinstance(specs, (str, os.PathLike, FileSpec)):
        return [specs]
    if specs is None:
        raise InputFileError("no input files given")
    spec_list = list(specs)
    if not spec_list:
        raise InputFileError("no input files given (empty list of file specs)")
    return spec_list


def open_sources(specs, basepath=None) -> list[FrameSource]:
    """Open every file spec (headers only) with its registered reader."""
    return [open_source(spec, basepath) for spec in _as_spec_list(specs)]


def _check_consistent(sources: Sequence[FrameSource]) -> None:
    first = sources[0]
    for source in sources:
        check_source_size(source)  # declared sizes bounded before anything is allocated
    check_frame_count(sum(int(s.n_frames) for s in sources), f"{first.spec} ... {sources[-1].spec}")
    for source in sources:
        if source.n_frames < 1:
            raise InputFileError(f"{source.spec}: file holds no frames")
        if tuple(source.shape) != tuple(first.shape):
            raise InputFileError(
                f"{source.spec}: frames of shape {tuple(source.shape)} differ from "
                f"{tuple(first.shape)} of the first file {first.spec}"
            )
        if np.dtype(source.dtype) != np.dtype(first.dtype):
            raise InputFileError(
                f"{source.spec}: pixel type {np.dtype(source.dtype)} differs from "
                f"{np.dtype(first.dtype)} of the first file {first.spec}"
            )


def _sampling_nm(first: FrameSource, meta: FrameMetadata, params) -> float | None:
    given = getattr(params, "sampling_nm", None) if params is not None else None
    if given is not None:
        return float(given)
    if meta.sampling_nm is None and meta.extra.get("sampling_unit"):
        raise InputFileError(
            f"{first.spec}: pixel size is calibrated in {meta.extra['sampling_unit']!r}, "
            "not a length unit (nm, µm, Å, pm); give the parameter 'sampling' in nm"
        )
    return meta.sampling_nm


@dataclass
class FrameSeries:
    """An opened series before it becomes a DataArray: frames as tasks of a Dask graph.

    ``graph`` maps keys to tasks; ``keys[k]`` is the key whose value is frame
    ``k`` as a (1, rows, columns) block. ``coords`` holds the per-frame
    coordinates (``defocus_nm`` and those of the sources), ``attrs`` the
    attributes of :func:`open_series`. The pipeline runs these graphs directly
    (no dask.array or xarray needed); :meth:`to_dataarray` gives the lazy
    DataArray.
    """

    name: str
    graph: dict
    keys: list
    shape: tuple[int, int, int]
    dtype: np.dtype
    frame_index: np.ndarray
    coords: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    #: per-frame coordinates still to be computed: name -> (dtype, [(key, number of frames), ...], column)
    #: (keys of ``graph`` whose values, concatenated, are the coordinate; ``column``: of 2-D values,
    #: the column that is, None for 1-D values)
    lazy_coords: dict = field(default_factory=dict)
    #: attributes of the coordinates (``units``), by name
    coord_attrs: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return self.shape[0]

    def frame_task(self, k: int):
        """What a task of another graph takes for frame ``k``: the reading task itself,
        inlined (so that frame k is read where that task runs, with no task of its
        own), or the key of frame ``k`` where it depends on other tasks."""
        key = self.keys[k]
        task = self.graph.get(key)
        if isinstance(task, tuple) and task and task[0] is read_source_frame:
            return task
        return key

    @property
    def defocus_nm(self) -> np.ndarray:
        return np.asarray(self.coords["defocus_nm"], dtype=float)

    def to_dataarray(self) -> "xr.DataArray":
        """The lazy ``(frame, y, x)`` DataArray (one frame per chunk)."""
        import dask.array as da
        from dask.highlevelgraph import HighLevelGraph

        from holodask.accessor import xr

        n_frames, rows, cols = self.shape
        tasks = dict(self.graph)
        name = "frames-" + self.name
        for k, key in enumerate(self.keys):
            if key != (name, k, 0, 0):
                tasks[(name, k, 0, 0)] = key
        graph = HighLevelGraph.from_collections(name, tasks, dependencies=())
        data = da.Array(graph, name, chunks=((1,) * n_frames, (rows,), (cols,)), dtype=self.dtype)
        pixel_nm = self.attrs.get("sampling_yx_nm") or self.attrs.get("sampling_nm")
        units = "nm" if pixel_nm else "px"
        pixel_y, pixel_x = np.broadcast_to(np.asarray(pixel_nm if pixel_nm is not None else 1.0, dtype=float), (2,))
        coords: dict = {
            "frame": ("frame", self.frame_index),
            "y": ("y", np.arange(rows) * pixel_y, {"units": units}),
            "x": ("x", np.arange(cols) * pixel_x, {"units": units}),
        }
        coords.update({key: ("frame", values, dict(self.coord_attrs.get(key, {})))
                       for key, values in self.coords.items()})
        for key, (dtype, parts, column) in self.lazy_coords.items():
            coord_name = f"{key}-{self.name}"
            coord_tasks = dict(self.graph)
            coord_tasks.update({(coord_name, i): part if column is None else (_column_of, part, column, dtype)
                                for i, (part, _) in enumerate(parts)})
            values = da.Array(HighLevelGraph.from_collections(coord_name, coord_tasks, dependencies=()), coord_name,
                              chunks=(tuple(length for _, length in parts),), dtype=dtype)
            coords[key] = ("frame", values, dict(self.coord_attrs.get(key, {})))
        return xr.DataArray(data, dims=("frame", "y", "x"), coords=coords, attrs=dict(self.attrs),
                            name=self.attrs.get("name", "hologram"))

    @classmethod
    def from_dataarray(cls, array: "xr.DataArray", *, coords: bool = True) -> "FrameSeries":
        """The frames of a ``(frame, y, x)`` DataArray (one frame per chunk; numpy-backed
        arrays become one chunk per frame).

        Keys that only rename another key (xarray's and Dask's selections of whole
        frames) are followed to the task they name, and the graph holds only what
        the frames need, so that a frame's reading task can be inlined into the
        tasks that use it. ``coords``: also the per-frame coordinates (those
        backed by Dask as :attr:`lazy_coords`; False leaves them out).
        """
        import dask.array as da
        from dask.core import flatten
        from dask.optimization import cull

        data = array.data
        if not isinstance(data, da.Array):
            data = da.from_array(np.asarray(data), chunks=(1, -1, -1), name="frames-" + tokenize(np.asarray(data)))
        data = data.rechunk({0: 1, 1: -1, 2: -1})
        graph = dict(data.__dask_graph__())
        keys = [_alias_target(graph, key) for key in flatten(data.__dask_keys__())]
        frame_coords, lazy_coords, coord_attrs, wanted = {}, {}, {}, list(keys)
        if coords:
            for name, coord in array.coords.items():
                if coord.dims != ("frame",) or name == "frame":
                    continue
                coord_attrs[name] = dict(coord.attrs)
                if isinstance(coord.data, da.Array):
                    coord_keys = list(flatten(coord.data.__dask_keys__()))
                    graph.update(dict(coord.data.__dask_graph__()))
                    lazy_coords[name] = (coord.dtype, list(zip(coord_keys, coord.data.chunks[0])), None)
                    wanted += coord_keys
                else:
                    frame_coords[name] = np.asarray(coord.values)
        graph, _ = cull(graph, wanted)
        return cls(data.name, graph, keys, tuple(int(n) for n in array.shape), np.dtype(array.dtype),
                   np.asarray(array["frame"].values), frame_coords, dict(array.attrs), lazy_coords, coord_attrs)


def _column_of(values, column: int, dtype) -> np.ndarray:
    """Column ``column`` of a 2-D block of per-frame values, as ``dtype``."""
    return np.asarray(values)[:, column].astype(dtype)


def lazy_coordinate(values: dict, lazy: tuple) -> np.ndarray:
    """A lazy coordinate (see :attr:`FrameSeries.lazy_coords`) from the computed ``values`` of its keys."""
    dtype, parts, column = lazy
    chunks = [np.atleast_1d(values[key]) for key, _ in parts]
    if column is not None:
        chunks = [np.asarray(chunk)[:, column] for chunk in chunks]
    return np.concatenate(chunks).astype(dtype, copy=False)


def _alias_target(graph: dict, key):
    """The key a chain of aliases (a task that is only another key) ends at."""
    try:
        from dask._task_spec import Alias
    except ImportError:  # pragma: no cover - older Dask
        Alias = ()
    seen = set()
    while key not in seen:
        seen.add(key)
        task = graph.get(key)
        if Alias and isinstance(task, Alias):
            target = task.target
            key = getattr(target, "key", target)
        elif isinstance(task, tuple) and task in graph and not callable(task[0]):
            key = task
        else:
            break
    return key


def frame_series_from_sources(sources: Sequence[FrameSource], params=None, *, indices=None,
                              check=None) -> FrameSeries:
    """The :class:`FrameSeries` of already opened sources (see :func:`open_series`);
    ``check`` is run on every frame as it is read (see :func:`read_source_frame`)."""
    sources = list(sources)
    if not sources:
        raise InputFileError("no input files given (empty list of file specs)")
    _check_consistent(sources)
    first = sources[0]
    rows, cols = (int(n) for n in first.shape)
    dtype = np.dtype(first.dtype)
    frame_table = [(source, k) for source in sources for k in range(source.n_frames)]
    n_frames = len(frame_table)

    if indices is None:
        frame_index = np.arange(n_frames)
    else:
        frame_index = np.asarray(list(indices))
        if frame_index.ndim != 1 or len(frame_index) != n_frames:
            raise ParameterError(
                f"series indices: expected {n_frames} values (one per frame), "
                f"got {len(frame_index) if frame_index.ndim == 1 else frame_index.shape}"
            )

    name = "open-series-" + tokenize(
        [str(s.spec) for s in sources], [_mtime(s) for s in sources], frame_index.tolist()
    )
    checked = () if check is None else (check,)
    tasks = {(name, k): (read_source_frame, source, i, *checked) for k, (source, i) in enumerate(frame_table)}

    meta = first.metadata
    sampling_nm = _sampling_nm(first, meta, params)
    voltage_kV = getattr(params, "voltage_kV", None) if params is not None else None
    voltage_kV = float(voltage_kV) if voltage_kV is not None else meta.voltage_kV
    binning = getattr(params, "binning", None) if params is not None else None
    binning = int(binning) if binning is not None else (meta.binning or 1)
    defocus_first = float(getattr(params, "defocus_first_nm", 0.0) or 0.0) if params else 0.0
    defocus_step = float(getattr(params, "defocus_step_nm", 0.0) or 0.0) if params else 0.0

    coords: dict = {"defocus_nm": defocus_first + defocus_step * frame_index.astype(float)}
    per_frame: dict[str, list] = {}
    for source in sources:
        for key, values in source.frame_coords().items():
            per_frame.setdefault(key, [])
    for key in per_frame:
        parts = []
        for source in sources:
            values = source.frame_coords().get(key)
            if values is None or len(values) != source.n_frames:
                values = np.full(source.n_frames, np.nan)
            parts.append(np.asarray(values))
        coords[key] = np.concatenate(parts)

    if len(sources) == 1:
        source_text = str(first.spec)
    else:
        source_text = f"{first.spec} ... {sources[-1].spec} ({len(sources)} files)"
    attrs = {
        "sampling_nm": sampling_nm,
        "voltage_kV": voltage_kV,
        "binning": binning,
        "microscope": meta.microscope,
        "detector": meta.detector,
        "source": source_text,
    }
    return FrameSeries(name, tasks, [(name, k) for k in range(n_frames)], (n_frames, rows, cols), dtype,
                       frame_index, coords, attrs)


def series_from_sources(
    sources: Sequence[FrameSource], params=None, *, indices=None
) -> "xr.DataArray":
    """Build the lazy ``(frame, y, x)`` DataArray from already opened sources.

    See :func:`open_series` for the coordinates and attributes.
    """
    return frame_series_from_sources(sources, params, indices=indices).to_dataarray()


def _mtime(source: FrameSource) -> float:
    try:
        return os.stat(source.spec.path).st_mtime_ns
    except OSError:
        return 0


def open_series(specs, params=None, *, indices=None, basepath=None) -> "xr.DataArray":
    """Open file specs as one lazy series of 2-D frames.

    Parameters
    ----------
    specs : str, FileSpec or sequence of them
        File specs ``path?key=value&...``; a file with several frames
        contributes all of them, in order.
    params : HoloParams, optional
        Overrides sampling, voltage and binning; gives ``defocus_first_nm`` and
        ``defocus_step_nm`` for the ``defocus_nm`` coordinate.
    indices : sequence of int, optional
        Series index of each frame (the ``frame`` coordinate); default 0..N-1.
    basepath : path, optional
        Folder relative paths are taken from (default: the current folder, also
        when ``params`` come from a parameter file elsewhere).

    Returns
    -------
    xarray.DataArray
        Dims ``(frame, y, x)``, Dask-backed with one frame per chunk, dtype as
        stored; coords ``frame``, ``y``/``x`` in nm (pixel index where the
        sampling is unknown), ``defocus_nm`` and per-frame coords of the
        sources; attrs ``sampling_nm``, ``voltage_kV``, ``binning``,
        ``microscope``, ``detector``, ``source`` (``None`` where unknown).

    Raises
    ------
    InputFileError
        Missing or unreadable files, frames of differing shape or dtype, a
        calibration in a non-length unit without ``params.sampling_nm``.
    """
    return series_from_sources(open_sources(specs, basepath), params, indices=indices)


def open_frames(series_spec, params=None, *, basepath=None) -> "xr.DataArray":
    """Open a :class:`holodask.params.SeriesSpec` (specs plus series indices).

    The frames are taken file after file, each file's frames in stored order.
    A file's frames are numbered consecutively from the file's index, or, where
    the previous file's frames already reach that number, on from the previous
    file's last frame: one frame per file keeps the files' numbers; stacks named
    by ``object_%03d.tif`` (``object_first`` 1, three files of 10 frames) give
    frames 1..30.
    """
    return open_frame_series(series_spec, params, basepath=basepath).to_dataarray()


def open_frame_series(series_spec, params=None, *, basepath=None, check=None) -> FrameSeries:
    """:func:`open_frames` as a :class:`FrameSeries` (what the pipeline runs on); ``check``
    is run on every frame as it is read (see :func:`read_source_frame`)."""
    if series_spec is None:
        raise ParameterError("no series given (object_names / empty_names missing)")
    sources = open_sources(list(series_spec.specs), basepath)
    spec_indices = list(series_spec.indices)
    if len(spec_indices) != len(sources):
        raise ParameterError(
            f"series: {len(sources)} file specs but {len(spec_indices)} indices"
        )
    indices: list[int] = []
    for source, start in zip(sources, spec_indices):
        # from the file's number, or on from the previous file's last frame where that reaches it
        first = int(start) if not indices else max(int(start), indices[-1] + 1)
        indices.extend(range(first, first + source.n_frames))
    return frame_series_from_sources(sources, params, indices=indices, check=check)


def frames_of(array: "xr.DataArray") -> Iterable[np.ndarray]:
    """Compute the frames of a series one at a time (for writers)."""
    for k in range(array.sizes["frame"]):
        yield np.asarray(array.isel(frame=k).values)
