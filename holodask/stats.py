"""Per-pixel series statistics, outlier masks and spot tables.

The statistics follow the ``lu_hdf2spots`` specification: for every pixel the
values of all frames are sorted, the ``n_removed`` largest are dropped, and the
average, standard deviation and interquartile range are taken over the rest
(the *trimmed sample*); maximum and arg-maximum use the full sample.  A pixel
of frame ``i`` is part of a reflexion (spot) when
``frame[i] >= avg + cutoff * std``; the raw masks are cleaned by ``erosions``
binary erosions followed by ``dilations`` binary dilations, optionally
synchronised over laser off/on pairs or angle blocks, labelled, and each
labelled region gives one row of the spot table.

The module has two layers:

* pure numpy kernels on one block (``trimmed_statistics``,
  ``kruskal_statistics``, ``raw_masks``, ``filter_mask``, ``label_mask``,
  ``spot_table``, ``repair_outliers``, ``sync_groups``), which know nothing of
  Dask or files;
* a thin Dask layer (``series_statistics``, ``trimmed_background``,
  ``find_spots``): statistics are computed blockwise over ``(y, x)`` chunks
  holding all frames of the chunk, chunk size chosen from a memory budget;
  masks, labels and spots are mapped over frames and written to HDF5 frame by
  frame into a temporary file that replaces the output only on success.

Conventions
-----------
* ``std`` is the population standard deviation (``ddof=0``) of the trimmed
  sample; ``iqr`` is ``Q75 - Q25`` with linear interpolation
  (:func:`numpy.percentile`).
* ``arg`` and ``spots/frame`` are positions in the series (0-based), not file
  numbers; ``arg`` is the first frame reaching the maximum.
* ``spots/XY`` is ``[x, y]`` = ``[column, row]`` of the most intense pixel of
  the spot on its frame; ``spots/box`` is ``[left, top, right, bottom]`` with
  right/bottom exclusive; ``spots/I`` is ``sum(frame - avg)`` over the spot.
* ``*_BE`` arrays hold ``[begin, end)`` index pairs, one row per item:
  ``pixel_list[pixel_list_BE[k, 0]:pixel_list_BE[k, 1]]`` are the flattened
  pixel indices (``row * width + column``) of spot ``k``, and
  ``spots/<x>[frame2spotsBE[f, 0]:frame2spotsBE[f, 1]]`` the spots of frame ``f``.

Method ``kruskal``
------------------
Laser data only.  Per pixel, a Kruskal-Wallis H-test
(:func:`scipy.stats.kruskal`) compares the laser-off and the laser-on values
(full samples).  Where ``p >= alpha`` the two groups are taken as one
population and the statistics are those of the ``n_removed`` method on all
frames.  Where ``p < alpha`` the laser changes the pixel (e.g. a reflexion that
appears or brightens with the laser); the group with the higher median is
rejected as outlying and the background (avg/std/iqr) comes from the other
group alone, trimmed by the same percentage.  ``stats/kruskal_p`` keeps the
p-values.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from holodask.errors import DataError, ParameterError

__all__ = [
    "STAT_NAMES",
    "SpotSettings",
    "removed_count",
    "trimmed_statistics",
    "kruskal_statistics",
    "raw_masks",
    "binary_structure",
    "filter_mask",
    "label_mask",
    "sync_groups",
    "spot_table",
    "repair_outliers",
    "defect_pixels",
    "outlying_frames",
    "spatial_chunks",
    "series_statistics",
    "trimmed_background",
    "find_spots",
]

#: names of the per-pixel statistics, in the order the kernels stack them
STAT_NAMES = ("avg", "std", "iqr", "max", "arg")
SYNC_MODES = ("none", "pairs", "blocks")
METHODS = ("n_removed", "kruskal")
COMPRESSIONS = ("gzip", "lzf", "none")
DEFAULT_MEMORY_BYTES = 256 * 2**20
#: bytes of working memory per value of a statistics block (input + sorted copy + temporaries)
_BYTES_PER_STAT_VALUE = 32
#: a hot/dead pixel's average lies this many robust sigmas above/below its 3x3 neighbourhood
DEFECT_SIGMAS = 8.0
#: a frame outlier's value lies this many robust sigmas from the median over the frames
FRAME_OUTLIER_SIGMAS = 5.0


# --------------------------------------------------------------------------
# pure kernels
# --------------------------------------------------------------------------


def removed_count(n_frames: int, n_percent: float) -> int:
    """Number of largest values dropped per pixel for ``n_percent`` percent.

    ``n_percent == 0`` means the default 25 %.  The count is
    ``round(n_frames * n_percent / 100)`` (halves rounded up), at most
    ``n_frames - 1`` so that one value always remains.
    """
    if not (0 <= n_percent < 100) or not math.isfinite(n_percent):
        raise ParameterError(f"-n/--n: expected a percentage in [0, 100), got {n_percent!r}")
    if n_frames < 1:
        raise DataError("the series holds no frame")
    percent = 25.0 if n_percent == 0 else float(n_percent)
    count = int(math.floor(n_frames * percent / 100.0 + 0.5))
    return max(0, min(count, n_frames - 1))


def _trimmed(sorted_block: np.ndarray, n_removed: int) -> tuple[np.ndarray, ...]:
    """avg, std, iqr of an ascending-sorted block without its ``n_removed`` largest values."""
    kept = sorted_block[: sorted_block.shape[0] - n_removed]
    avg = kept.mean(axis=0)
    std = kept.std(axis=0)
    q25, q75 = np.percentile(kept, [25.0, 75.0], axis=0)
    return avg, std, q75 - q25


def trimmed_statistics(block: np.ndarray, n_removed: int) -> np.ndarray:
    """Per-pixel statistics of a ``(frames, rows, cols)`` block.

    Parameters
    ----------
    block
        Pixel values, frames along axis 0.
    n_removed
        Number of largest values per pixel left out of avg/std/iqr.

    Returns
    -------
    numpy.ndarray
        float64 array ``(5, rows, cols)``: avg, std, iqr (trimmed sample), max
        and arg (frame position of the maximum; full sample), in the order of
        :data:`STAT_NAMES`.
    """
    block = np.asarray(block)
    if block.ndim != 3:
        raise DataError(f"statistics need a (frames, rows, cols) block, got shape {block.shape}")
    n_frames = block.shape[0]
    if block.dtype.kind in "fc" and not np.isfinite(block).all():
        raise DataError("the series holds NaN or infinite pixel values; statistics need finite values")
    if not 0 <= n_removed < n_frames:
        raise ParameterError(f"n_removed must be in [0, {n_frames - 1}], got {n_removed}")
    sorted_block = np.sort(block.astype(np.float64, copy=False), axis=0)
    avg, std, iqr = _trimmed(sorted_block, n_removed)
    out = np.empty((len(STAT_NAMES),) + block.shape[1:], dtype=np.float64)
    out[0], out[1], out[2] = avg, std, iqr
    out[3] = sorted_block[-1]
    out[4] = np.argmax(block, axis=0)
    return out


def kruskal_statistics(
    block: np.ndarray, laser_on: np.ndarray, n_percent: float, alpha: float
) -> np.ndarray:
    """Per-pixel statistics with a Kruskal-Wallis test between laser off and on.

    See the module notes ("Method kruskal").

    Returns
    -------
    numpy.ndarray
        float64 array ``(6, rows, cols)``: the five :data:`STAT_NAMES` followed
        by the p-value of the test.
    """
    from scipy import stats as scipy_stats

    block = np.asarray(block)
    laser_on = np.asarray(laser_on, dtype=bool)
    if laser_on.shape != block.shape[:1]:
        raise DataError(f"laser flags ({laser_on.size}) do not match the frames ({block.shape[0]})")
    n_on = int(laser_on.sum())
    n_off = laser_on.size - n_on
    if n_on < 2 or n_off < 2:
        raise DataError(
            f"method kruskal needs at least 2 laser-off and 2 laser-on frames, "
            f"got {n_off} off and {n_on} on"
        )
    values = block.astype(np.float64, copy=False)
    off, on = values[~laser_on], values[laser_on]
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        p_value = np.asarray(scipy_stats.kruskal(off, on, axis=0).pvalue, dtype=np.float64)
    p_value = np.broadcast_to(p_value, block.shape[1:])

    out = np.empty((len(STAT_NAMES) + 1,) + block.shape[1:], dtype=np.float64)
    out[:5] = trimmed_statistics(values, removed_count(values.shape[0], n_percent))
    out[5] = p_value
    differs = p_value < alpha  # NaN (all values tied) counts as "no difference"
    if differs.any():
        off_sorted = np.sort(off, axis=0)
        on_sorted = np.sort(on, axis=0)
        off_lower = np.median(off_sorted, axis=0) <= np.median(on_sorted, axis=0)
        off_stats = _trimmed(off_sorted, removed_count(n_off, n_percent))
        on_stats = _trimmed(on_sorted, removed_count(n_on, n_percent))
        for k in range(3):
            group = np.where(off_lower, off_stats[k], on_stats[k])
            out[k] = np.where(differs, group, out[k])
    return out


def raw_masks(frames: np.ndarray, avg: np.ndarray, std: np.ndarray, cutoff: float) -> np.ndarray:
    """``frames >= avg + cutoff * std`` (one frame or a stack)."""
    return np.asarray(frames) >= (np.asarray(avg) + cutoff * np.asarray(std))


def _robust_sigma(values: np.ndarray) -> float:
    """1.4826 times the median absolute deviation (the standard deviation of normal data)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def defect_pixels(avg: np.ndarray, std: np.ndarray, sigmas: float = DEFECT_SIGMAS) -> tuple[np.ndarray, np.ndarray]:
    """Hot and dead pixels of a series, from its per-pixel statistics: ``(hot, dead)`` masks.

    A pixel is *hot* when its trimmed average lies ``sigmas`` robust standard
    deviations or more above the median of its 3x3 neighbourhood (the spread
    measured over every pixel's difference from its neighbourhood), *dead* when
    it lies as far below, or when its value never changes over the series
    (``std == 0``) while a typical pixel's does. Hot pixels sit in every frame,
    so the temporal outlier test (cosmic rays, ``-c``) takes them for background.
    """
    avg = np.asarray(avg, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    residual = avg - ndimage.median_filter(avg, size=3, mode="reflect")
    spread = _robust_sigma(residual)
    if spread == 0.0:
        spread = max(float(np.median(std)), 1e-12)
    hot = residual >= sigmas * spread
    dead = residual <= -sigmas * spread
    if np.median(std) > 0:
        dead |= std == 0
    return hot, dead & ~hot


def outlying_frames(values, sigmas: float = FRAME_OUTLIER_SIGMAS, floor: float = 0.0) -> np.ndarray:
    """Indices of the frames whose value lies ``sigmas`` robust standard deviations
    (at least ``floor``) or more from the median over the frames."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 3:
        return np.zeros(0, dtype=np.int64)
    spread = max(_robust_sigma(values), float(floor), 1e-12 * abs(float(np.median(values))))
    return np.flatnonzero(np.abs(values - np.median(values)) >= sigmas * spread)


def binary_structure(rank: int, connectivity: int) -> np.ndarray:
    """Structuring element of ``-s RANK,CONNECTIVITY`` (frames are 2-D: rank 2)."""
    if rank != 2:
        raise ParameterError(
            f"-s/--structure: masks are filtered frame by frame, so RANK must be 2, got {rank}"
        )
    if connectivity not in (1, 2):
        raise ParameterError(
            f"-s/--structure: CONNECTIVITY must be 1 or 2 for RANK 2, got {connectivity}"
        )
    return ndimage.generate_binary_structure(rank, connectivity)


def filter_mask(
    mask: np.ndarray, structure: np.ndarray, erosions: int, dilations: int
) -> np.ndarray:
    """``erosions`` binary erosions, then ``dilations`` binary dilations (0: none)."""
    out = np.asarray(mask, dtype=bool)
    if erosions > 0:
        out = ndimage.binary_erosion(out, structure=structure, iterations=erosions)
    if dilations > 0:
        out = ndimage.binary_dilation(out, structure=structure, iterations=dilations)
    return out


def label_mask(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions of a 2-D mask: (int32 labels 1..n, 0 outside; n)."""
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=structure)
    return labels.astype(np.int32, copy=False), int(count)


def laser_flags(values: Any) -> np.ndarray:
    """Per-frame laser values as booleans (non-zero / true = laser on)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return arr.astype(bool)
    if arr.dtype.kind in "US":
        text = np.char.lower(arr.astype(str))
        known = np.isin(text, ["on", "off", "true", "false", "1", "0"])
        if known.all():
            return np.isin(text, ["on", "true", "1"])
    raise DataError(f"laser values must be numbers or on/off, got {arr.dtype} {arr[:4]!r}")


def sync_groups(
    n_frames: int,
    mode: str = "none",
    laser_on: np.ndarray | None = None,
    angles: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Frame positions synchronised into each mask.

    ``none``: one group per frame.  ``pairs``: a laser-off frame directly
    followed by a laser-on frame (at the same angle, when angles are known)
    forms a pair; other frames stay alone.  ``blocks``: every run of
    consecutive frames taken at the same angle (all its off/on pairs).
    """
    if mode not in SYNC_MODES:
        raise ParameterError(f"-S: expected one of {', '.join(SYNC_MODES)}, got {mode!r}")
    if mode == "none":
        return [np.array([i]) for i in range(n_frames)]
    if laser_on is None:
        raise DataError(f"-S {mode} works only on laser data (a per-frame 'laser' coordinate)")
    laser_on = np.asarray(laser_on, dtype=bool)
    if mode == "pairs":
        groups, i = [], 0
        while i < n_frames:
            same_angle = angles is None or (i + 1 < n_frames and angles[i] == angles[i + 1])
            if i + 1 < n_frames and not laser_on[i] and laser_on[i + 1] and same_angle:
                groups.append(np.array([i, i + 1]))
                i += 2
            else:
                groups.append(np.array([i]))
                i += 1
        return groups
    if angles is None:
        raise DataError("-S blocks needs a per-frame 'angle' coordinate to define the blocks")
    angles = np.asarray(angles)
    starts = [0] + [i for i in range(1, n_frames) if angles[i] != angles[i - 1]] + [n_frames]
    return [np.arange(a, b) for a, b in zip(starts[:-1], starts[1:])]


def spot_table(frame: np.ndarray, avg: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Spots of one frame from a label image.

    Returns
    -------
    dict
        ``label`` (n,), ``I`` (n,) = sum of ``frame - avg`` over the spot,
        ``XY`` (n, 2) = [column, row] of the most intense frame pixel, ``box``
        (n, 4) = [left, top, right, bottom) and ``pixel_list`` (flattened pixel
        indices grouped by spot) with ``n_pixels`` (n,) per spot.
    """
    frame = np.asarray(frame)
    labels = np.asarray(labels)
    present = np.unique(labels)
    present = present[present > 0].astype(np.int32)
    n = present.size
    if n == 0:
        return {
            "label": np.zeros(0, np.int32),
            "I": np.zeros(0, np.float64),
            "XY": np.zeros((0, 2), np.int32),
            "box": np.zeros((0, 4), np.int32),
            "pixel_list": np.zeros(0, np.int64),
            "n_pixels": np.zeros(0, np.int64),
        }
    excess = frame.astype(np.float64) - avg
    intensity = np.asarray(ndimage.sum_labels(excess, labels, index=present), dtype=np.float64)
    brightest = np.asarray(ndimage.maximum_position(frame, labels, index=present), dtype=np.int64)
    xy = brightest[:, ::-1].astype(np.int32)
    slices = ndimage.find_objects(labels)
    box = np.array(
        [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in (slices[k - 1] for k in present)],
        dtype=np.int32,
    )
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    order = np.argsort(flat[inside], kind="stable")
    pixel_list = inside[order].astype(np.int64)
    n_pixels = np.bincount(flat[inside], minlength=int(present.max()) + 1)[present].astype(np.int64)
    return {
        "label": present,
        "I": intensity,
        "XY": xy,
        "box": box,
        "pixel_list": pixel_list,
        "n_pixels": n_pixels,
    }


def repair_outliers(
    frame: np.ndarray, avg: np.ndarray, std: np.ndarray, cutoff: float
) -> tuple[np.ndarray, int]:
    """Replace pixels with ``frame >= avg + cutoff * std`` by the pixel's trimmed average.

    A pixel equal to its average (``std == 0``, e.g. identical frames) is no
    outlier: it is neither replaced nor counted.

    Returns
    -------
    (repaired_frame, n_replaced)
        The repaired frame (floating point) and the number of replaced pixels.
    """
    frame = np.asarray(frame)
    avg = np.asarray(avg)
    hits = raw_masks(frame, avg, std, cutoff) & (frame > avg)
    dtype = np.result_type(frame.dtype, avg.dtype, np.float32)
    repaired = np.where(hits, avg, frame).astype(dtype, copy=False)
    return repaired, int(np.count_nonzero(hits))


# --------------------------------------------------------------------------
# Dask layer
# --------------------------------------------------------------------------


def spatial_chunks(
    n_frames: int,
    shape: tuple[int, int],
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    bytes_per_value: int = _BYTES_PER_STAT_VALUE,
) -> tuple[int, int]:
    """(rows, cols) of a statistics block holding all ``n_frames`` within ``memory_bytes``.

    Whole rows are preferred (full-width bands); when even one row of all
    frames exceeds the budget, the row is split into columns.
    """
    rows, cols = shape
    per_pixel = max(1, n_frames * bytes_per_value)
    pixels = max(1, int(memory_bytes) // per_pixel)
    if pixels >= cols:
        return max(1, min(rows, pixels // cols)), cols
    return 1, max(1, pixels)


def _as_dask_series(series: Any):
    """(dask array (frames, y, x), per-frame coords dict, attrs) of a series."""
    import dask.array as da

    coords: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {}
    data = series
    try:
        import xarray as xr

        if isinstance(series, xr.DataArray):
            if series.ndim != 3:
                raise DataError(f"a series needs dims (frame, y, x), got {series.dims}")
            frame_dim = series.dims[0]
            for name, coord in series.coords.items():
                if coord.dims == (frame_dim,) and name != frame_dim:
                    coords[name] = np.asarray(coord.values)
            attrs = dict(series.attrs)
            data = series.data
    except ImportError:  # pragma: no cover - xarray is a dependency
        pass
    if not isinstance(data, da.Array):
        data = np.asarray(data)
        data = da.from_array(data, chunks=(1,) + data.shape[1:])
    if data.ndim != 3:
        raise DataError(f"a series needs 3 dimensions (frame, y, x), got shape {data.shape}")
    if data.shape[0] < 1:
        raise DataError("the series holds no frame")
    if data.dtype.kind not in "biuf":
        raise DataError(f"statistics need real pixel values, got dtype {data.dtype}")
    return data, coords, attrs


def series_statistics(
    series: Any,
    n_percent: float = 0.0,
    method: str = "n_removed",
    alpha: float = 0.05,
    laser_on: np.ndarray | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
):
    """Lazy per-pixel statistics of a series.

    Parameters
    ----------
    series
        ``xr.DataArray`` with dims (frame, y, x), a Dask or numpy array.
    n_percent, method, alpha
        As ``-n``, ``-m`` and ``-A`` of ``holodask stats``.
    laser_on
        Per-frame laser flags (method kruskal); default: the series' ``laser`` coord.
    memory_bytes
        Working-memory budget of one block; sets the (y, x) chunk size.

    Returns
    -------
    (stack, n_removed)
        ``stack`` is a Dask float64 array ``(k, y, x)`` with the layers of
        :data:`STAT_NAMES` (plus ``kruskal_p`` for method kruskal), chunked
        along y/x only; ``n_removed`` the count of dropped values per pixel.
    """
    import dask.array as da

    if method not in METHODS:
        raise ParameterError(f"-m/--method: expected one of {', '.join(METHODS)}, got {method!r}")
    data, coords, _ = _as_dask_series(series)
    n_frames = data.shape[0]
    n_removed = removed_count(n_frames, n_percent)
    rows, cols = spatial_chunks(n_frames, data.shape[1:], memory_bytes)
    blocks = data.rechunk({0: -1, 1: rows, 2: cols})
    if method == "kruskal":
        if laser_on is None:
            if "laser" not in coords:
                raise DataError(
                    "method kruskal works only on laser data: the series has no per-frame "
                    "'laser' coordinate"
                )
            laser_on = laser_flags(coords["laser"])
        if not 0 < alpha < 1:
            raise ParameterError(f"-A/--alpha: expected a value in (0, 1), got {alpha!r}")
        layers = len(STAT_NAMES) + 1
        stack = da.map_blocks(
            kruskal_statistics,
            blocks,
            laser_on=np.asarray(laser_on, dtype=bool),
            n_percent=n_percent,
            alpha=alpha,
            chunks=((layers,),) + blocks.chunks[1:],
            dtype=np.float64,
        )
    else:
        stack = da.map_blocks(
            trimmed_statistics,
            blocks,
            n_removed=n_removed,
            chunks=((len(STAT_NAMES),),) + blocks.chunks[1:],
            dtype=np.float64,
        )
    return stack, n_removed


def trimmed_background(series: Any, n_percent: float = 0.0, memory_bytes: int = DEFAULT_MEMORY_BYTES):
    """Lazy per-pixel trimmed (avg, std) of a series, for :func:`repair_outliers`.

    Returns xarray DataArrays (dims y, x, with the series' y/x coords) for an
    xarray input, Dask arrays otherwise; nothing is computed.
    """
    stack, _ = series_statistics(series, n_percent, memory_bytes=memory_bytes)
    avg, std = stack[0], stack[1]
    try:
        import xarray as xr

        if isinstance(series, xr.DataArray):
            ydim, xdim = series.dims[1:]
            coords = {d: series.coords[d] for d in (ydim, xdim) if d in series.coords}
            avg = xr.DataArray(avg, dims=(ydim, xdim), coords=coords, name="avg")
            std = xr.DataArray(std, dims=(ydim, xdim), coords=coords, name="std")
    except ImportError:  # pragma: no cover
        pass
    return avg, std


@dataclass(frozen=True)
class SpotSettings:
    """Options of ``holodask stats`` (defaults of the specification)."""

    method: str = "n_removed"
    n_percent: float = 0.0
    alpha: float = 0.05
    cutoff: float = 3.0
    erosions: int = 1
    dilations: int = 2
    structure: tuple[int, int] = (2, 2)
    min_angles: int | None = None  # None: 10 when angles exist, else no check
    sync: str = "none"
    compression: str = "gzip"
    memory_bytes: int = DEFAULT_MEMORY_BYTES

    def validate(self) -> None:
        """Raise :class:`ParameterError` for an inconsistent option."""
        if self.method not in METHODS:
            raise ParameterError(f"-m/--method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if self.sync not in SYNC_MODES:
            raise ParameterError(f"-S: expected one of {', '.join(SYNC_MODES)}, got {self.sync!r}")
        if self.compression not in COMPRESSIONS:
            raise ParameterError(
                f"-C/--compression: expected one of {', '.join(COMPRESSIONS)}, got {self.compression!r}"
            )
        removed_count(100, self.n_percent)  # checks the range
        if not 0 < self.alpha < 1:
            raise ParameterError(f"-A/--alpha: expected a value in (0, 1), got {self.alpha!r}")
        if not math.isfinite(self.cutoff):
            raise ParameterError(f"-c/--cutoff: expected a finite number, got {self.cutoff!r}")
        if self.erosions < 0 or self.dilations < 0:
            raise ParameterError("-e/--erosions and -d/--dilations: expected counts >= 0")
        if self.min_angles is not None and self.min_angles < 0:
            raise ParameterError(f"-a/--angles: expected a count >= 0, got {self.min_angles}")
        if self.memory_bytes < 2**20:
            raise ParameterError("--memory: expected at least 1 MiB")
        binary_structure(*self.structure)


def check_angles(angles: np.ndarray | None, min_angles: int | None) -> None:
    """The ``-a`` check: at least ``min_angles`` distinct angle values.

    ``min_angles=None`` (the default) checks for 10 values when the series has
    angles and skips the check otherwise; an explicit count demands angles.
    """
    if angles is None:
        if min_angles:
            raise DataError(
                f"-a/--angles {min_angles}: the series has no per-frame 'angle' values "
                "(give --angle-dataset, or -a 0 to skip the check)"
            )
        return
    needed = 10 if min_angles is None else min_angles
    distinct = np.unique(np.asarray(angles)).size
    if distinct < needed:
        raise DataError(
            f"-a/--angles: found {distinct} distinct angle value(s), at least {needed} needed "
            "(lower -a to accept this series)"
        )


def _not_a_spots_file(path: Path) -> str | None:
    """Why an existing HDF5 file is no earlier ``stats`` output to replace (None: it is one)."""
    import h5py

    with h5py.File(path, "r") as f:
        if len(f) == 0 or ("info" in f and "stats" in f):
            return None
    return "is not a holodask stats (spots) file"


class _AtomicH5:
    """An h5py file written through :class:`holodask.io.safe_write.AtomicOutput`
    (checked, exclusive temporary file, moved into place on success)."""

    def __init__(self, path: str | os.PathLike, protected=()):
        from holodask.io.safe_write import AtomicOutput

        self.path = Path(path)
        self._output = AtomicOutput(path, what="-o/--output", kind="hdf5", protected=protected,
                                    accept_existing=_not_a_spots_file)

    def __enter__(self):
        import h5py

        self._output.open()
        try:
            self.file = h5py.File(self._output.open_name(), "w")
        except BaseException:
            self._output.abort()
            raise
        return self.file

    def __exit__(self, exc_type, exc, tb):
        try:
            self.file.close()
        except BaseException:
            if exc_type is None:
                self._output.abort()
                raise
        if exc_type is None:
            self._output.commit()
            return False
        return self._output.__exit__(exc_type, exc, tb)


def _compression_kwargs(compression: str) -> dict[str, Any]:
    return {} if compression == "none" else {"compression": compression}


def _compute(*tasks):
    from holodask.cluster import compute_with_progress

    return compute_with_progress(*tasks)


def find_spots(
    series: Any,
    output: str | os.PathLike,
    settings: SpotSettings = SpotSettings(),
    *,
    laser: Sequence | None = None,
    angles: Sequence | None = None,
    source: str | None = None,
    protected: Sequence = (),
) -> dict[str, Any]:
    """Statistics, masks and spot table of a series, written to an HDF5 file.

    Parameters
    ----------
    series
        ``xr.DataArray`` (frame, y, x) as from :func:`holodask.series.open_series`,
        or a Dask/numpy array.
    output
        HDF5 file written atomically (temporary file, then ``os.replace``).
    settings
        The options (see :class:`SpotSettings`).
    laser, angles
        Per-frame laser flags / angle values; default: the series' ``laser``
        / ``angle`` coordinates when present.
    source
        Text stored as attribute ``source`` of group ``info``.
    protected
        Files the output must not overwrite (the inputs).

    Returns
    -------
    dict
        ``n_frames``, ``n_masks``, ``n_spots``, ``n_removed``, ``counts``; the
        series quality: ``hot_pixels``/``dead_pixels`` ([x, y] rows, see
        :func:`defect_pixels`), ``frame_outlier_pixels`` (pixels of each frame
        at or above ``avg + cutoff * std``: cosmic rays and other short
        outliers), ``frame_mean``, and the frames that stand out
        (:func:`outlying_frames`): ``frames_many_outliers`` (positions in the
        series), ``frames_odd_mean``. The file keeps the ``lu_hdf2spots``
        layout: it gets only the counts, as ``info`` attributes ``n_hot_pixels``
        and ``n_dead_pixels`` (the per-frame outlier pixels are the sums of
        ``masks_raw``).

    Notes
    -----
    Memory stays within about ``settings.memory_bytes`` for any number of
    frames: the statistics run on row bands holding all frames (several
    bands at once sharing the budget), and every band pass reads each frame
    once, so a series larger than the budget is read once per pass.  Masks
    and spots are computed for batches of frames and written frame by frame;
    with ``-S`` the frames are read once more for the spot table.
    """
    settings.validate()
    data, coords, attrs = _as_dask_series(series)
    n_frames, rows, cols = data.shape
    laser_on, angle_values = _checked_laser_and_angles(coords, laser, angles, n_frames, settings)
    groups = sync_groups(n_frames, settings.sync, laser_on, angle_values)
    structure = binary_structure(*settings.structure)
    comp = _compression_kwargs(settings.compression)

    # several blocks run at once: the budget is shared between them
    parallel = max(1, min(os.cpu_count() or 1, 8))
    stack, n_removed = series_statistics(
        data, settings.n_percent, settings.method, settings.alpha, laser_on,
        settings.memory_bytes // parallel,
    )
    frames = data.rechunk({0: 1, 1: -1, 2: -1}).to_delayed().ravel()
    itemsize = max(data.dtype.itemsize, 1)
    batch = int(max(1, min(n_frames, settings.memory_bytes // max(1, rows * cols * (itemsize + 24)))))

    with _AtomicH5(output, protected) as h5:
        _write_info(h5, settings, n_removed, n_frames, source or str(attrs.get("source", "")))
        avg, std = _write_statistics(h5, stack, settings, data.dtype, parallel, comp)
        counts, n_spots, per_frame = _write_masks_and_spots(h5, frames, avg, std, groups, structure, settings,
                                                            batch, comp)
        quality = _series_quality(h5, avg, std, per_frame)
    return {
        "n_frames": n_frames,
        "n_masks": len(groups),
        "n_spots": n_spots,
        "n_removed": n_removed,
        "counts": counts,
        "n_pixels": rows * cols,
        **quality,
    }


def _series_quality(h5, avg: np.ndarray, std: np.ndarray, per_frame: dict) -> dict[str, Any]:
    """Hot/dead pixels and the frames that stand out (holodask additions); the file keeps the
    ``lu_hdf2spots`` layout: only scalar attributes of ``info`` are added."""
    frame_outlier_pixels, frame_mean = per_frame["outlier_pixels"], per_frame["mean"]
    hot, dead = defect_pixels(avg, std)
    many = outlying_frames(frame_outlier_pixels, floor=np.sqrt(max(np.median(frame_outlier_pixels), 1.0)))
    many = many[frame_outlier_pixels[many] > np.median(frame_outlier_pixels)]
    odd_mean = outlying_frames(frame_mean)
    h5["info"].attrs.update({"n_hot_pixels": int(hot.sum()), "n_dead_pixels": int(dead.sum()),
                             "defect_sigmas": DEFECT_SIGMAS, "frame_outlier_sigmas": FRAME_OUTLIER_SIGMAS})
    return {
        "hot_pixels": np.argwhere(hot)[:, ::-1],
        "dead_pixels": np.argwhere(dead)[:, ::-1],
        "frame_outlier_pixels": frame_outlier_pixels,
        "frame_mean": frame_mean,
        "frames_many_outliers": many,
        "frames_odd_mean": odd_mean,
    }


def _checked_laser_and_angles(
    coords: dict[str, np.ndarray], laser: Sequence | None, angles: Sequence | None, n_frames: int,
    settings: SpotSettings,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-frame laser flags and angle values (given, else the series' coordinates; None:
    none), checked against the frames, the ``-a`` count and the method."""
    if laser is None:
        laser = _frame_coord(coords, "laser")
    if angles is None:
        angles = _frame_coord(coords, "angle")
    laser_on = None if laser is None else laser_flags(laser)
    angle_values = None if angles is None else np.asarray(angles)
    for name, values in (("laser", laser_on), ("angle", angle_values)):
        if values is not None and values.shape != (n_frames,):
            raise DataError(f"{name} values ({values.size}) do not match the frames ({n_frames})")
    check_angles(angle_values, settings.min_angles)
    if settings.method == "kruskal" and laser_on is None:
        raise DataError(
            "method kruskal works only on laser data: the series has no per-frame 'laser' values"
        )
    return laser_on, angle_values


def _write_info(h5, settings: SpotSettings, n_removed: int, n_frames: int, source: str) -> None:
    """Group ``info``: the options of the run as attributes."""
    info = h5.create_group("info")
    info.attrs.update(
        {
            "n_removed": n_removed,
            "n_percent": 25.0 if settings.n_percent == 0 else float(settings.n_percent),
            "n_frames": n_frames,
            "method": settings.method,
            "alpha": settings.alpha,
            "cutoff": settings.cutoff,
            "erosions": settings.erosions,
            "dilations": settings.dilations,
            "structure": np.array(settings.structure, dtype=np.int32),
            "sync": settings.sync,
            "source": source,
        }
    )


def _write_statistics(h5, stack, settings: SpotSettings, pixel_dtype, parallel: int,
                      comp: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Group ``stats``, computed one band of rows at a time (memory bounded).

    ``stack`` is the lazy (layer, y, x) statistics of :func:`series_statistics`;
    ``parallel`` row bands run per pass, and each pass reads every frame once
    (a series that fits the budget is read in a single pass). Returns the
    per-pixel ``avg`` and ``std``.
    """
    _, rows, cols = stack.shape
    grp = h5.create_group("stats")
    out_dtypes = {"avg": np.float64, "std": np.float64, "iqr": np.float64,
                  "max": pixel_dtype, "arg": np.int32}
    layers = list(STAT_NAMES) + (["kruskal_p"] if settings.method == "kruskal" else [])
    out_dtypes["kruskal_p"] = np.float64
    dsets = {name: grp.create_dataset(name, (rows, cols), dtype=out_dtypes[name], **comp)
             for name in layers}
    bounds = np.cumsum((0,) + stack.chunks[1])
    for first in range(0, len(bounds) - 1, parallel):
        last = min(first + parallel, len(bounds) - 1)
        r0, r1 = int(bounds[first]), int(bounds[last])
        (band,) = _compute(stack[:, r0:r1, :])
        for k, name in enumerate(layers):
            dsets[name][r0:r1] = band[k].astype(out_dtypes[name])
    return dsets["avg"][()], dsets["std"][()]


@dataclass(frozen=True)
class _MaskDatasets:
    """The mask datasets of the output (frame or synchronised-group, y, x)."""

    raw: Any  # masks_raw, per frame
    filtered: Any  # masks_filtered, per frame
    synced: Any  # masks_synced, per group; None without -S
    labels: Any  # masks/labels, per group (per frame without -S)


def _write_masks_and_spots(h5, frames, avg: np.ndarray, std: np.ndarray, groups: list[np.ndarray], structure,
                           settings: SpotSettings, batch: int, comp: dict[str, Any]) -> tuple[np.ndarray, int, dict]:
    """The masks, labels and spot table, frame by frame in batches of ``batch`` frames.

    ``frames`` are the delayed frames, ``groups`` the frames of each mask
    (:func:`sync_groups`). Returns the labels per mask, the number of spots and,
    per frame, its ``outlier_pixels`` (raw mask) and ``mean``.
    """
    import dask

    n_frames = len(frames)
    rows, cols = avg.shape
    synced = settings.sync != "none"

    def stack_dataset(name, n, dtype):
        return h5.create_dataset(name, (n, rows, cols), dtype=dtype, chunks=(1, rows, cols), **comp)

    masks = _MaskDatasets(
        raw=stack_dataset("masks_raw", n_frames, np.uint8),
        filtered=stack_dataset("masks_filtered", n_frames, np.uint8),
        synced=stack_dataset("masks_synced", len(groups), np.uint8) if synced else None,
        labels=stack_dataset("masks/labels", len(groups), np.int32),
    )
    counts = np.zeros(len(groups), dtype=np.int32)
    spots = _SpotWriter(h5, comp, n_frames)
    avg_d = dask.delayed(avg, pure=True)
    std_d = dask.delayed(std, pure=True)
    per_frame = {"outlier_pixels": np.zeros(n_frames, dtype=np.int64), "mean": np.zeros(n_frames, dtype=np.float64)}
    _write_frame_masks(masks, spots, counts, per_frame, frames, avg_d, std_d, settings, structure, batch, synced)
    if synced:
        _write_synced_masks(masks, counts, groups, structure)
        _write_synced_spots(spots, frames, avg_d, masks.labels, groups, batch)
    h5.create_dataset("masks/counts", data=counts, **comp)
    spots.finish()
    return counts, spots.n_spots, per_frame


def _write_frame_masks(masks: _MaskDatasets, spots: "_SpotWriter", counts: np.ndarray, per_frame: dict, frames,
                       avg_d, std_d, settings: SpotSettings, structure, batch: int, synced: bool) -> None:
    """Raw and filtered masks of every frame (and its outlier pixels and mean into
    ``per_frame``); without synchronisation also the labels, their counts and the
    spots of each frame."""
    import dask

    n_frames = len(frames)
    for b0 in range(0, n_frames, batch):
        b1 = min(n_frames, b0 + batch)
        tasks = [
            dask.delayed(_frame_kernel)(frames[i], avg_d, std_d, settings.cutoff, structure,
                                        settings.erosions, settings.dilations, not synced)
            for i in range(b0, b1)
        ]
        for i, result in zip(range(b0, b1), _compute(*tasks)):
            masks.raw[i] = result["raw"]
            masks.filtered[i] = result["filtered"]
            per_frame["outlier_pixels"][i] = result["n_raw"]
            per_frame["mean"][i] = result["mean"]
            if not synced:
                masks.labels[i] = result["labels"]
                counts[i] = result["count"]
                spots.append(i, i, result["spots"])


def _write_synced_masks(masks: _MaskDatasets, counts: np.ndarray, groups: list[np.ndarray], structure) -> None:
    """Per group: the union of its frames' filtered masks, its labels and their count."""
    rows, cols = masks.filtered.shape[1:]
    for m, members in enumerate(groups):
        union = np.zeros((rows, cols), dtype=bool)
        for i in members:
            union |= masks.filtered[int(i)].astype(bool)
        masks.synced[m] = union
        labels, counts[m] = label_mask(union, structure)
        masks.labels[m] = labels


def _write_synced_spots(spots: "_SpotWriter", frames, avg_d, labels_ds, groups: list[np.ndarray],
                        batch: int) -> None:
    """The spots of every frame, measured on the labels of its group (frames read once more)."""
    import dask

    n_frames = len(frames)
    mask_of_frame = np.empty(n_frames, dtype=np.int32)
    for m, members in enumerate(groups):
        mask_of_frame[members] = m
    for b0 in range(0, n_frames, batch):
        b1 = min(n_frames, b0 + batch)
        tasks = [
            dask.delayed(_spot_kernel)(frames[i], avg_d, labels_ds[int(mask_of_frame[i])])
            for i in range(b0, b1)
        ]
        for i, table in zip(range(b0, b1), _compute(*tasks)):
            spots.append(i, int(mask_of_frame[i]), table)


def _frame_coord(coords: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    """A per-frame coordinate; None where absent or NaN for every frame (files without it)."""
    values = coords.get(name)
    if values is None:
        return None
    values = np.asarray(values)
    if values.dtype.kind == "f":
        missing = np.isnan(values)
        if missing.all():
            return None
        if missing.any():
            raise DataError(
                f"{name} values are missing for {int(missing.sum())} of {values.size} frames "
                "(some input files have none)"
            )
    return values


def _frame_kernel(frame, avg, std, cutoff, structure, erosions, dilations, with_spots):
    """Masks (and, unsynchronised, labels and spots) of one frame."""
    frame = np.asarray(frame).reshape(avg.shape)
    raw = raw_masks(frame, avg, std, cutoff)
    filtered = filter_mask(raw, structure, erosions, dilations)
    result = {"raw": raw, "filtered": filtered, "n_raw": int(np.count_nonzero(raw)),
              "mean": float(np.mean(frame, dtype=np.float64))}
    if with_spots:
        labels, count = label_mask(filtered, structure)
        result.update(labels=labels, count=count, spots=spot_table(frame, avg, labels))
    return result


def _spot_kernel(frame, avg, labels):
    return spot_table(np.asarray(frame).reshape(avg.shape), avg, labels)


class _SpotWriter:
    """Appends per-frame spot tables to resizable datasets of group ``spots``."""

    _SPECS = {
        "I": ((), np.float64),
        "XY": ((2,), np.int32),
        "box": ((4,), np.int32),
        "frame": ((), np.int32),
        "label": ((), np.int32),
        "mask": ((), np.int32),
        "pixel_list_BE": ((2,), np.int64),
        "pixel_list": ((), np.int64),
    }

    def __init__(self, h5, comp: dict[str, Any], n_frames: int):
        self.dsets = {}
        for name, (tail, dtype) in self._SPECS.items():
            chunk = 65536 if name == "pixel_list" else 4096
            self.dsets[name] = h5.create_dataset(
                f"spots/{name}", (0,) + tail, maxshape=(None,) + tail, dtype=dtype,
                chunks=(chunk,) + tail, **comp,
            )
        self.frame2spots = np.zeros((n_frames, 2), dtype=np.int64)
        self.h5, self.comp = h5, comp
        self.n_spots = 0
        self.n_pixels = 0

    def _extend(self, name: str, values: np.ndarray) -> None:
        ds = self.dsets[name]
        start = ds.shape[0]
        if len(values):
            ds.resize(start + len(values), axis=0)
            ds[start:] = values

    def append(self, frame: int, mask: int, table: dict[str, np.ndarray]) -> None:
        n = len(table["label"])
        self.frame2spots[frame] = (self.n_spots, self.n_spots + n)
        if n == 0:
            return
        ends = self.n_pixels + np.cumsum(table["n_pixels"])
        be = np.stack([ends - table["n_pixels"], ends], axis=1)
        self._extend("I", table["I"])
        self._extend("XY", table["XY"])
        self._extend("box", table["box"])
        self._extend("frame", np.full(n, frame, np.int32))
        self._extend("label", table["label"])
        self._extend("mask", np.full(n, mask, np.int32))
        self._extend("pixel_list_BE", be)
        self._extend("pixel_list", table["pixel_list"])
        self.n_spots += n
        self.n_pixels = int(ends[-1])

    def finish(self) -> None:
        self.h5.create_dataset("frame2spotsBE", data=self.frame2spots, **self.comp)
