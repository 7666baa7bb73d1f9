"""Outlier repair of hologram series before reconstruction (parameter ``outlier_cutoff``).

Cosmic-ray hits and other short-lived outliers are found with the per-pixel
series statistics of :mod:`holodask.stats` (the ``lu_hdf2spots`` test): pixel
``(y, x)`` of hologram ``i`` is an outlier when
``frame[i, y, x] >= avg[y, x] + outlier_cutoff * std[y, x]``, where ``avg`` and
``std`` are the trimmed average and standard deviation of that pixel over the
series. Each outlier is replaced by ``avg[y, x]``; the number of replaced
pixels per hologram is reported (attribute ``outliers``).

Trim percentage
---------------
The statistics leave out the :func:`outlier_trim_percent` largest values of
each pixel: 10 % of the frames, but at least one. A cosmic ray rarely hits the
same pixel twice in one series, so dropping the single largest value already
keeps a hit out of ``avg``/``std`` for short series (3 to 14 frames); longer
series drop more (10 % of them) for pixels hit more than once. A larger trim
would bias ``avg`` low and shrink ``std``, flagging ordinary noise.

Only a series of at least :data:`MIN_FRAMES` holograms is repaired; with fewer,
the trimmed sample is a single value whose spread is zero. In short series the
trimmed standard deviation of few values scatters widely, so some ordinary
pixels pass the test too (with ``outlier_cutoff`` 6: about 0.5 % of the pixels
at 6 frames, 0.02 % at 14); they are replaced by the average of the other
frames, an estimate of the same pixel, which costs little. Choose a larger
cutoff for very short series.

Pixels that do not change the image (``std == 0`` and the value equal to
``avg``, e.g. identical noise-free frames) are neither replaced nor counted.

Fixed-pattern defects (hot pixels) sit in every frame: the temporal statistics
take them for the background, so this repair leaves them alone.

Everything is lazy: the statistics are computed blockwise by Dask over bands
of all frames (:func:`holodask.stats.trimmed_background`), the repair is mapped
over the frames (one chunk each).
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from holodask.errors import HolodaskError
from holodask.stats import repair_outliers, trimmed_background

__all__ = ["MIN_FRAMES", "TRIM_PERCENT", "outlier_trim_percent", "repair_frame", "repair_series",
           "write_outlier_counts"]

#: fewest holograms a series needs for its statistics to flag outliers
MIN_FRAMES = 3
#: percentage of the largest values per pixel left out of the statistics (at least one value)
TRIM_PERCENT = 10.0


def outlier_trim_percent(n_frames: int) -> float:
    """Trim percentage for ``n_frames`` holograms: 10 %, but at least one frame."""
    return max(TRIM_PERCENT, 100.0 / max(int(n_frames), 1))


def repair_frame(frame: np.ndarray, avg: np.ndarray, std: np.ndarray, cutoff: float,
                 dtype=np.float32) -> tuple[np.ndarray, int]:
    """Repair one hologram: outliers replaced by ``avg``; (repaired frame as ``dtype``, count)."""
    repaired, count = repair_outliers(frame, avg, std, cutoff)
    return repaired.astype(dtype, copy=False), count


def _repair_block(block, avg, std, cutoff, dtype):
    return repair_frame(block[0], avg, std, cutoff, dtype)[0][None]


def _count_block(block, avg, std, cutoff):
    return np.array([repair_outliers(block[0], avg, std, cutoff)[1]], dtype=np.int64)


def _float_dtype(dtype) -> np.dtype:
    """float32 for pixels of at most 4 bytes (exact for 16-bit counts), else float64."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)


def repair_series(series: xr.DataArray, cutoff: float, scheduler=None) -> tuple[xr.DataArray, np.ndarray | None]:
    """Replace the outliers of a lazy hologram series by the pixels' trimmed averages.

    Parameters
    ----------
    series : xarray.DataArray
        Dims ``(frame, y, x)``, Dask-backed, one frame per chunk (as
        :func:`holodask.series.open_series` gives).
    cutoff : float
        ``outlier_cutoff``: outliers lie ``cutoff`` trimmed standard
        deviations or more above the trimmed average.
    scheduler
        ``scheduler=`` for :func:`dask.compute` (a distributed client, or a
        local scheduler name).

    Returns
    -------
    (repaired, counts)
        ``repaired`` is the lazy repaired series (float32 for pixels of up to
        4 bytes, else float64; same coords and attrs), ``counts`` the number
        of replaced pixels per hologram (int64). A series of fewer than
        :data:`MIN_FRAMES` holograms is returned unchanged with ``counts`` None.
    """
    n_frames = series.shape[0]
    if n_frames < MIN_FRAMES:
        return series, None
    dtype = _float_dtype(series.dtype)
    avg, std = trimmed_background(series.data, outlier_trim_percent(n_frames))
    avg_full = avg.rechunk(-1)
    std_full = std.rechunk(-1)
    counts = da.map_blocks(_count_block, series.data, avg_full, std_full, float(cutoff),
                           chunks=((1,) * n_frames,), drop_axis=(1, 2), dtype=np.int64)
    try:
        # one pass over the files: the statistics and the counts share the frame reads
        avg_values, std_values, counts = dask.compute(avg_full, std_full, counts,
                                                      scheduler=scheduler or "threads")
    except HolodaskError as exc:
        source = series.attrs.get("source") or "the series"
        raise type(exc)(f"{source}: {exc}") from None
    avg_d = dask.delayed(np.asarray(avg_values), pure=True)
    std_d = dask.delayed(np.asarray(std_values), pure=True)
    repaired = series.data.map_blocks(_repair_block, avg_d, std_d, float(cutoff), dtype, dtype=dtype)
    out = series.copy(data=repaired)
    return out, np.asarray(counts, dtype=np.int64)


def write_outlier_counts(out, counts, params) -> None:
    """Attach the per-hologram ``outliers`` counts to what a run wrote from the object series.

    ``out`` is an open :class:`holodask.io.holo_hdf5.HoloOutputFile`, ``params``
    the run's HoloParams: ``data`` and ``variance``, and ``series`` /
    ``aligned_rois`` where the run wrote them.
    """
    if counts is None:
        return
    names = ["aligned_rois"] if params.only_align else ["data", "variance"]
    if params.output_series and not params.only_align:
        names.append("series")
    if params.output_aligned and not params.only_align:
        names.append("aligned_rois")
    for name in names:
        if out.full_name(name) in out.file:
            out.write_attributes(name, {"outliers": np.asarray(counts, dtype=np.int64)})
