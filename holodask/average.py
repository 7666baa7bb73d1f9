"""Iterative averaging of a reconstructed series, as a Dask graph.

The stack of reconstructed waves (one frame per chunk) is persisted once; every
round then maps the per-frame fit (:func:`holodask.align.fit_to_average`) over
the frames, each task also returning the frame's contribution (its spectrum
moved onto the average), and tree-reduces the contributions into the next
average. Only the small per-frame fit states and the summed spectrum travel
back to the client; the frames never do.

Schedule (that of the reference program): a first round that aligns every
frame to the first one (the reference aligns each to the running mean of the
previous ones, which is sequential; aligning to the first frame is parallel and
the later rounds converge to the same average), then ``iterations`` rounds of
fitting all frames to the previous average, the defocus fit starting with
round ``defocus_start``; factors normalised to a mean amplitude of 1 each round.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
from dask import delayed

from holodask import fft
from holodask.align import (
    AlignmentGrid,
    aligned_spectrum,
    fit_to_average,
    initial_state,
    model_error,
)

__all__ = ["AverageResult", "average_series", "scheduler_of", "tree_reduce"]


@dataclass
class AverageResult:
    """Result of :func:`average_series`.

    ``wave``: averaged complex64 wave; ``variance``: float32 per-pixel variance
    (None for one frame); ``states``: (N, 7) fit states (see
    :mod:`holodask.align`); ``errors``: (N,) squared residuals against the final
    average; ``convergence``: total squared residual after each round.
    """

    wave: np.ndarray
    variance: np.ndarray | None
    states: np.ndarray
    errors: np.ndarray
    convergence: list[float] = field(default_factory=list)

    @property
    def factors(self) -> np.ndarray:
        return self.states[:, 0] + 1j * self.states[:, 1]

    @property
    def shifts_nm(self) -> np.ndarray:
        """(N, 2) fitted shifts (y, x) in nm."""
        return self.states[:, 2:4]

    @property
    def tilts_per_nm(self) -> np.ndarray:
        """(N, 2) fitted tilts (y, x) in 1/nm."""
        return self.states[:, 4:6]

    @property
    def defocus_nm(self) -> np.ndarray:
        return self.states[:, 6]


def scheduler_of(client=None):
    """The ``scheduler=`` argument for :func:`dask.compute`: the client, or threads."""
    return client if client is not None else os.environ.get("HOLODASK_SCHEDULER", "threads")


def tree_reduce(parts: list, split_every: int = 8):
    """Reduce per-frame ``(small_values, array)`` parts in a tree (one delayed).

    The root holds the per-frame small values in frame order and the sum of the
    arrays. Everything a round needs comes back in one result, so a round is one
    task per frame plus the few tree nodes, with no selection tasks.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("nothing to reduce")
    while len(parts) > 1:
        parts = [
            delayed(_reduce_parts, pure=True)(*parts[i:i + split_every])
            for i in range(0, len(parts), split_every)
        ]
    return parts[0]


def _reduce_parts(*parts):
    smalls = [value for part in parts for value in part[0]]
    first = parts[0][1]
    total = np.array(first, dtype=np.complex64 if np.iscomplexobj(first) else np.float64, copy=True)
    for part in parts[1:]:
        total += part[1]
    return smalls, total


def _frame(block: np.ndarray) -> np.ndarray:
    return block[0] if block.ndim == 3 else block


# ---------------------------------------------------------------- per-frame tasks


def _reference_task(block, defocus_nm, grid):
    """State and contribution of the first frame (factor = phase of its mean)."""
    wave = _frame(block)
    mean = complex(np.mean(wave, dtype=np.complex128))
    factor = mean / abs(mean) if abs(mean) > 0 else 1.0
    state = initial_state(factor, defocus_nm)
    return [state], aligned_spectrum(wave, state, grid)


def _first_round_task(block, defocus_nm, reference, grid, fit_shift):
    """Fit a frame to the first frame (shift and factor only); factor made unit."""
    wave = _frame(block)
    reference_spectrum = reference[1]
    mean = complex(np.mean(wave, dtype=np.complex128))
    factor = mean / abs(mean) if abs(mean) > 0 else 1.0
    state = initial_state(factor, defocus_nm)
    state = fit_to_average(wave, reference_spectrum, state, grid, fit_shift=fit_shift)
    amplitude = np.hypot(state[0], state[1])
    if amplitude > 0:
        state[0:2] /= amplitude
    return [state], aligned_spectrum(wave, state, grid)


def _round_task(block, state, average_spectrum, grid, fit_shift, fit_tilt, fit_defocus):
    """Error of the previous state, new fit, and the (unnormalised) contribution."""
    wave = _frame(block)
    state, error = fit_to_average(
        wave, average_spectrum, state, grid,
        fit_shift=fit_shift, fit_tilt=fit_tilt, fit_defocus=fit_defocus, return_start_error=True,
    )
    return [(state, error)], aligned_spectrum(wave, state, grid)


def _final_task(block, state, average_spectrum, average_wave, grid):
    """Error against the final average and the squared deviation for the variance."""
    wave = _frame(block)
    error = model_error(wave, average_spectrum, state, grid)
    deviation = average_wave - fft.ifft2(aligned_spectrum(wave, state, grid))
    return [error], (deviation.real**2 + deviation.imag**2).astype(np.float32)


def _batch_task(kernel, blocks, values, *shared):
    """Run a per-frame kernel ``kernel(block, value, *shared)`` on a batch of frames
    and reduce the batch's parts (see :func:`tree_reduce`) in the same task."""
    return _reduce_parts(*(kernel(block, value, *shared) for block, value in zip(blocks, values)))


def _batch_size(n_frames: int, client=None) -> int:
    """Frames per task: about four tasks per thread, fewer tasks (and less
    scheduling) when the series is long."""
    if client is not None:
        threads = sum(client.nthreads().values()) or 1
    else:
        threads = os.cpu_count() or 1
    return max(1, n_frames // (4 * threads))


def _frame_groups(blocks, batch: int, client=None) -> list[list[int]]:
    """Frame indices in batches of at most ``batch``.

    With a distributed client, the frames of a batch are held by one worker
    (the stack is persisted there), so that a batch task reads only local data
    instead of gathering frames from other workers in every round.
    """
    n = len(blocks)
    if client is None:
        return [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    who_has = client.who_has(blocks)
    by_worker: dict = {}
    for index, block in enumerate(blocks):
        holders = who_has.get(block.key) or [None]
        by_worker.setdefault(sorted(holders)[0], []).append(index)
    return [indices[i:i + batch] for indices in by_worker.values() for i in range(0, len(indices), batch)]


def _batched(kernel, blocks, values, shared, groups) -> list:
    """Delayed batch tasks, one per group of frame indices (see :func:`_frame_groups`)."""
    return [
        delayed(_batch_task, pure=True)(kernel, [blocks[i] for i in group], [values[i] for i in group], *shared)
        for group in groups
    ]


def _in_frame_order(values: list, order: list[int]) -> list:
    """Undo the grouping: ``values[k]`` belongs to frame ``order[k]``."""
    result = [None] * len(order)
    for value, index in zip(values, order):
        result[index] = value
    return result


def _pin_gauge(states, average, grid, nominal_defocus, shifts, defocus):
    """Fix the free position and focus of the average.

    A common shift (or defocus) of all frames, with the average moved the
    opposite way, fits equally well; noise lets it wander from round to round.
    The average is kept at the first frame's position (the ROI is defined
    there) and at the mean nominal focus: the first frame's shift and the mean
    defocus offset from the nominal values are subtracted from every frame and
    the average spectrum moved accordingly, which is exact (both act in
    Fourier space only).
    """
    states = states.copy()
    phase = np.zeros(grid.shape, dtype=np.float64)
    if shifts:
        shift0 = states[0, 2:4].copy()
        states[:, 2:4] -= shift0
        phase = phase + 2.0 * np.pi * (shift0[0] * grid.qy + shift0[1] * grid.qx)
    if defocus:
        offset = float(np.mean(states[:, 6] - nominal_defocus))
        states[:, 6] -= offset
        phase = phase - np.pi * grid.wavelength_nm * offset * grid.q2
    if shifts or defocus:
        average = (average * np.exp(1j * phase)).astype(np.complex64)
    return states, average


# ---------------------------------------------------------------- the rounds


_STORE_DIR: contextvars.ContextVar[str | None] = contextvars.ContextVar("holodask_stack_store", default=None)


@contextlib.contextmanager
def stack_store(scratch=None):
    """Within the block, :func:`average_series` keeps its stacks in Zarr stores under
    a temporary folder in ``scratch`` (removed at the end); ``None``: in memory."""
    if scratch is None:
        yield None
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="holodask-stacks-", dir=scratch) as folder:
        token = _STORE_DIR.set(folder)
        try:
            yield folder
        finally:
            _STORE_DIR.reset(token)


def hold_stack(stack: da.Array, scheduler, store_dir=None, *, also=()):
    """Keep the reconstructed stack for the averaging rounds.

    Without ``store_dir`` it is persisted: in this process's memory with the
    threaded scheduler, on the workers (which spill to disk under memory
    pressure) with a distributed one. With ``store_dir`` it is computed once
    into a Zarr store there (one frame per chunk, written where each frame is
    computed) and read back from it in every round, so memory stays bounded
    whatever the number of frames. The caller removes the folder.

    ``also``: further (small) collections computed in the same pass over the
    frames; with them the result is ``(held_stack, [computed values])``.
    """
    if store_dir is None:
        held, *others = dask.persist(stack, *also, scheduler=scheduler)
        if not isinstance(scheduler, str):  # a distributed client: persist returned at once
            from distributed import wait

            wait(held)
        values = [np.asarray(o.compute(scheduler=scheduler)) for o in others]
    else:
        import tempfile

        store = tempfile.mkdtemp(prefix="stack-", suffix=".zarr", dir=store_dir)
        _, *values = dask.compute(da.to_zarr(stack, store, overwrite=True, compute=False), *also,
                                  scheduler=scheduler)
        held = da.from_zarr(store)
    return (held, values) if also else held


def current_store_dir():
    """The folder :func:`stack_store` set for this context (None: stacks stay in memory)."""
    return _STORE_DIR.get()


def average_series(
    stack: da.Array,
    grid: AlignmentGrid,
    defocus_nm=None,
    *,
    iterations: int = 7,
    fit_shift: bool = True,
    fit_tilt: bool = False,
    fit_defocus: bool = False,
    defocus_start: int = 4,
    variance: bool = True,
    client=None,
    store_dir=None,
    held: bool = False,
) -> AverageResult:
    """Average a stack of reconstructed waves with per-frame alignment.

    Parameters
    ----------
    stack : Dask array (N, ny, nx) complex64, one frame per chunk (persisted here).
    grid : :func:`holodask.align.alignment_grid` of the wave shape.
    defocus_nm : (N,) nominal defocus of each frame (start values of the fit).
    iterations : rounds after the first (reference: 7 for objects, 4 for empties).
    fit_shift, fit_tilt, fit_defocus : what is fitted besides the factor; the
        defocus only from round ``defocus_start`` on (0-based, counting the rounds
        after the first).
    variance : also compute the per-pixel variance.
    client : a ``dask.distributed.Client`` (None: local threads).
    store_dir : folder for a Zarr store of the stack (None: the stack is persisted
        in memory, on the workers with a distributed scheduler).
    held : the stack is already held (by :func:`hold_stack`); use it as it is.
    """
    n_frames = stack.shape[0]
    defocus_nm = np.zeros(n_frames) if defocus_nm is None else np.asarray(defocus_nm, dtype=float)
    scheduler = scheduler_of(client)
    if store_dir is None:
        store_dir = _STORE_DIR.get()
    stack = stack.rechunk({0: 1, 1: -1, 2: -1})
    if not held:
        stack = hold_stack(stack, scheduler, store_dir)
    blocks = list(stack.to_delayed().ravel())
    grid_d = delayed(grid, pure=True)

    if n_frames == 1:
        raise ValueError("average_series needs at least two frames")

    # first round: everything against the first frame
    reference = delayed(_reference_task, pure=True)(blocks[0], float(defocus_nm[0]), grid_d)
    batch = _batch_size(n_frames, client)
    first_groups = [[i + 1 for i in group] for group in _frame_groups(blocks[1:], batch, client)]
    groups = _frame_groups(blocks, batch, client)
    order = [i for group in groups for i in group]
    defocus_values = [float(d) for d in defocus_nm]
    results = [reference] + _batched(_first_round_task, blocks, defocus_values, (reference, grid_d, fit_shift),
                                     first_groups)
    ((states, total),) = dask.compute(tree_reduce(results), scheduler=scheduler)
    states = np.array(_in_frame_order(states, [0] + [i for group in first_groups for i in group]))
    average = total / np.complex64(n_frames)
    convergence: list[float] = []

    for iteration in range(iterations):
        average_d = delayed(average, pure=True)
        fit_defocus_now = bool(fit_defocus and iteration >= defocus_start)
        results = _batched(_round_task, blocks, states,
                           (average_d, grid_d, fit_shift, fit_tilt, fit_defocus_now), groups)
        ((fits, total),) = dask.compute(tree_reduce(results), scheduler=scheduler)
        fits = _in_frame_order(fits, order)
        convergence.append(float(np.sum([error for _, error in fits])))
        states = np.array([state for state, _ in fits])
        norm = float(np.mean(np.hypot(states[:, 0], states[:, 1])))
        states[:, 0:2] /= norm
        average = total * np.complex64(norm / n_frames)
        states, average = _pin_gauge(states, average, grid, defocus_nm, fit_shift, fit_defocus_now)

    average_wave = fft.ifft2(average).astype(np.complex64)
    average_d = delayed(average, pure=True)
    wave_d = delayed(average_wave, pure=True)
    results = _batched(_final_task, blocks, states, (average_d, wave_d, grid_d), groups)
    ((errors, squared),) = dask.compute(tree_reduce(results), scheduler=scheduler)
    errors = np.array(_in_frame_order(errors, order), dtype=float)
    convergence.append(float(errors.sum()))
    var = (squared / (n_frames - 1)).astype(np.float32) if variance else None
    return AverageResult(average_wave, var, states, errors, convergence)
