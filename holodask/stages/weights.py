"""Per-hologram weights of a weighted average (the parameter ``weights``).

The weights are a list (or a file) of numbers, one per hologram in series
order, or the name of a per-frame coordinate of the reconstructed stack, e.g.
a per-hologram quality value computed during the reconstruction, or one a
notebook user assigned (``waves.assign_coords(quality=("frame", q))``). They
are resolved here, once the stack is held (its lazy coordinates computed),
and the rounds of :mod:`holodask.stages.rounds` take them
(:func:`~holodask.stages.rounds.average_series`: a weighted mean, weights
normalised to a mean of 1; all equal weights are the unweighted average, bit
for bit).
"""

from __future__ import annotations

import numpy as np

from holodask.errors import ParameterError
from holodask.series import FrameSeries

__all__ = ["frame_weights"]


def frame_weights(series: FrameSeries, params) -> np.ndarray | None:
    """The weights ``params.weights`` gives the frames of ``series`` (float64, as given,
    not normalised), or None without weights. One :class:`ParameterError` naming
    ``weights`` for a coordinate the stack lacks, a wrong count, or values that are
    not finite and >= 0 (with at least two positive)."""
    spec = getattr(params, "weights", None)
    if spec is None:
        return None
    n_frames = series.n_frames
    if spec.coordinate is not None:
        name = spec.coordinate
        if name not in series.coords:
            have = sorted(key for key, values in series.coords.items() if np.ndim(values) == 1)
            raise ParameterError(
                f"parameter 'weights': the reconstructed holograms have no per-frame coordinate {name!r} "
                f"(they have: {', '.join(have) or 'none'}); give the name of one, a list of weights or a "
                "file of them (.txt, .csv, .dat, .npy)")
        values = np.asarray(series.coords[name], dtype=np.float64).ravel()
        what = f"the coordinate {name!r}"
    else:
        values = np.asarray(spec.values, dtype=np.float64)
        what = f"the file {spec.source}" if spec.source else "the list"
    if values.size != n_frames:
        raise ParameterError(f"parameter 'weights': {what} holds {values.size} weights for {n_frames} holograms "
                             "(one per hologram, in series order)")
    bad = ~np.isfinite(values) | (values < 0)
    if np.any(bad):
        frames = ", ".join(str(int(i)) for i in np.asarray(series.frame_index)[bad][:10])
        raise ParameterError(f"parameter 'weights': {what} gives weights that are not numbers >= 0 to the "
                             f"holograms {frames}")
    if np.count_nonzero(values) < 2:
        raise ParameterError(f"parameter 'weights': {what} gives fewer than two holograms a positive weight")
    return values
