"""Iterative averaging of a reconstructed series, as one Dask graph.

The reconstructed waves are computed once and held (:func:`hold_frames`: in
memory with threads, on the workers that made them with a distributed
scheduler, or in a Zarr store with ``--scratch``). Every round maps the
per-frame fit (:func:`holodask.align.fit_to_average`) over batches of frames,
each batch task also returning the frames' summed contributions (their spectra
moved onto the average); one update task per round reduces them into the next
average and states. All rounds are built before any is computed, each depending
on the previous update, so rounds follow each other on the cluster without a
trip to the client; the frames never move (batches run where their frames are).

Schedule (that of the reference program): a first round that aligns every
frame to the first one (the reference aligns each to the running mean of the
previous ones, which is sequential; aligning to the first frame is parallel and
the later rounds converge to the same average), then ``iterations`` rounds of
fitting all frames to the previous average, the defocus fit starting with
round ``defocus_start``; factors normalised to a mean amplitude of 1 each round.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field

import numpy as np

from holodask import fft
from holodask.align import (
    AlignmentGrid,
    aligned_spectrum,
    fit_to_average,
    initial_state,
    model_error,
)

__all__ = ["AverageResult", "HeldFrames", "StoredFrame", "RoundPlan", "average_series", "average_tasks",
           "compute_graph", "hold_frames", "normalised_weights", "round_plan", "scheduler_of", "variance_denominator"]


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


def compute_graph(dsk: dict, keys: list, client=None) -> list:
    """Values of ``keys`` in the raw task graph ``dsk``.

    With a distributed client on its cluster; otherwise with Dask's threaded
    scheduler (``HOLODASK_SCHEDULER=sync``: the single-threaded one, for
    debugging).
    """
    if client is not None:
        futures = client.get(dsk, keys, sync=False)
        _follow(futures, client)
        return client.gather(futures)
    if scheduler_of(None) in ("sync", "synchronous", "single-threaded"):
        from dask.local import get_sync

        return get_sync(dsk, keys)
    from dask.threaded import get

    with _single_threaded_blas():
        return get(dsk, keys)


def _single_threaded_blas():
    """BLAS with one thread while Dask's threads compute: a BLAS thread pool per Dask
    thread only oversubscribes the cores (``holodask`` commands set this up front,
    through the environment, before numpy loads)."""
    import holodask

    if getattr(holodask, "_blas_single_threaded", False):  # set by the command line
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _reduce_parts(*parts):
    """Sum of ``(small values, array)`` parts: the small values one after the other
    (in the parts' order) and the sum of the arrays."""
    return _reduce_stream(parts)


def _reduce_stream(parts):
    """:func:`_reduce_parts` of an iterable, summed as the parts come: a batch task's
    per-frame parts (a spectrum each) are never all held at once, so its memory does not
    grow with the batch, which grows with the series."""
    smalls, total = [], None
    for small, array in parts:
        smalls.extend(small)
        if array is None:  # (skipped rounds give none)
            continue
        if total is None:
            total = np.array(array, dtype=np.complex64 if np.iscomplexobj(array) else np.float64, copy=True)
        else:
            total += array
    return smalls, total


def _frame(block) -> np.ndarray:
    """The 2-D frame of a held item (a frame, a (1, ny, nx) block or a :class:`StoredFrame`)."""
    block = _load(block)
    return block[0] if block.ndim == 3 else block


# ---------------------------------------------------------------- per-frame tasks


def _reference_task(block, defocus_nm, grid):
    """State and contribution of the first frame (factor = phase of its mean)."""
    wave = _frame(block)
    mean = complex(np.mean(wave, dtype=np.complex128))
    factor = mean / abs(mean) if abs(mean) > 0 else 1.0
    state = initial_state(factor, defocus_nm)
    return [state], aligned_spectrum(wave, state, grid)


#: the first round only seeds the average: its fits stop once a step is below this
#: (object pixels); the later rounds fit every frame to convergence (measured on the
#: 60-frame benchmark series: the same result within 1e-7 nm, first round 1.6x faster)
FIRST_ROUND_STEP_TOLERANCE_PX = 1.0


def _first_round_task(block, defocus_nm, reference, grid, fit_shift):
    """Fit a frame to the first frame (shift and factor only); factor made unit."""
    wave = _frame(block)
    reference_spectrum = reference[1]
    mean = complex(np.mean(wave, dtype=np.complex128))
    factor = mean / abs(mean) if abs(mean) > 0 else 1.0
    state = initial_state(factor, defocus_nm)
    state = fit_to_average(wave, reference_spectrum, state, grid, fit_shift=fit_shift,
                           step_tolerance_px=FIRST_ROUND_STEP_TOLERANCE_PX)
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
    and reduce the batch's parts (see :func:`_reduce_parts`) in the same task."""
    return _reduce_stream(kernel(_load(block), value, *shared) for block, value in zip(blocks, values))


# ---------------------------------------------------------------- weights
#
# A weighted average takes every frame's contribution times its weight; the weights
# are normalised to a mean of 1 (their sum is the number of frames), so that the
# reductions divide by the number of frames as the unweighted ones do. Without
# weights (None) none of this runs: the unweighted rounds are the same tasks.


def _weighted_part(part, weight):
    """A ``(small values, array)`` part with its array times ``weight``."""
    smalls, array = part
    return smalls, (None if array is None else array * np.float32(weight))


def _weighted_batch_task(kernel, blocks, values, weights, *shared):
    """:func:`_batch_task` with each frame's contribution times its weight."""
    return _reduce_stream(_weighted_part(kernel(_load(block), value, *shared), weight)
                          for block, value, weight in zip(blocks, values, weights))


def normalised_weights(weights, n_frames: int) -> np.ndarray | None:
    """Weights scaled to a mean of 1 (float64); None where there are none or all are equal
    (the unweighted average: the same numbers, bit for bit). At least two must be positive."""
    if weights is None:
        return None
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if weights.shape != (n_frames,):
        raise ValueError(f"weights: expected {n_frames} values (one per frame), got {weights.size}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights: every weight must be a finite number >= 0")
    if np.count_nonzero(weights) < 2:
        raise ValueError("weights: at least two frames need a positive weight")
    if np.all(weights == weights[0]):
        return None
    return weights * (n_frames / weights.sum())


@dataclass(frozen=True)
class StoredFrame:
    """Frame ``index`` of a Zarr array at ``store`` (read where a task runs)."""

    store: str
    index: int

    def load(self) -> np.ndarray:
        return np.asarray(_zarr_array(self.store)[self.index])


_ZARR_ARRAYS: dict = {}


def _create_zarr(zarr, store: str, shape, chunks):
    """An uncompressed complex64 Zarr array (noisy waves do not compress; reading a
    128 x 128 frame takes 0.5 instead of 1.3 ms)."""
    try:
        return zarr.open_array(store=store, mode="w", shape=shape, chunks=chunks, dtype=np.complex64,
                               zarr_format=2, compressor=None)
    except TypeError:  # zarr 2
        return zarr.open_array(store=store, mode="w", shape=shape, chunks=chunks, dtype=np.complex64,
                               compressor=None)


def _zarr_array(store: str, mode: str = "r"):
    """The Zarr array at ``store``, opened once per process (and mode)."""
    key = (store, mode)
    array = _ZARR_ARRAYS.get(key)
    if array is None:
        import zarr

        array = _ZARR_ARRAYS[key] = zarr.open_array(store=store, mode=mode)
        if len(_ZARR_ARRAYS) > 64:  # stores of earlier runs
            _ZARR_ARRAYS.pop(next(iter(_ZARR_ARRAYS)))
    return array


def _load(block):
    """The frame of a held item: an array, a :class:`StoredFrame`, or a pair whose
    first element is one of them (a frame held with a small value)."""
    if isinstance(block, tuple):
        block = block[0]
    return block.load() if isinstance(block, StoredFrame) else block


@dataclass
class HeldFrames:
    """The reconstructed frames kept for the averaging rounds.

    ``items[k]`` is frame ``k``: a numpy array (threads), a
    :class:`distributed.Future` of it (on a worker, which spills to disk under
    memory pressure) or a :class:`StoredFrame` (``--scratch``: a Zarr store);
    on a cluster also the future of a ``(frame, small value)`` pair.
    """

    items: list
    client: object = None
    #: the worker holding each frame, where already known
    holders: list | None = None

    def __len__(self) -> int:
        return len(self.items)

    def frame(self, k: int) -> np.ndarray:
        """Frame ``k`` here (for writing it)."""
        item = self.items[k]
        if self.client is not None and not isinstance(item, (np.ndarray, StoredFrame)):
            item = item.result()
        return _frame(np.asarray(_load(item)))


def _store_frame(block, store: str, index: int):
    """Write a frame (or the frame of a pair) into the Zarr array; its :class:`StoredFrame`
    (paired with the pair's second value)."""
    _zarr_array(store, "r+")[index] = _frame(block)
    stored = StoredFrame(store, index)
    return (stored, block[1]) if isinstance(block, tuple) else stored


def _seconds(*pairs) -> list:
    return [pair[1] for pair in pairs]


def _gather_seconds(futures, client, holders) -> list:
    """The second values of pairs held on a cluster, one small task per worker
    holding them (the frames themselves do not move)."""
    by_worker: dict = {}
    for index, worker in enumerate(holders):
        by_worker.setdefault(worker, []).append(index)
    tasks = [(indices, client.submit(_seconds, *[futures[i] for i in indices], pure=False,
                                     **({"workers": [worker], "allow_other_workers": True} if worker else {})))
             for worker, indices in by_worker.items()]
    values = [None] * len(futures)
    for indices, task in tasks:
        for index, value in zip(indices, task.result()):
            values[index] = value
    return values


def hold_frames(dsk: dict, keys: list, shape, client=None, store_dir=None, *, also=(), paired: bool = False,
                store=None):
    """Compute the frames ``keys`` of graph ``dsk`` once and keep them for the rounds.

    Without ``store_dir`` they stay in this process's memory (threads) or on
    the workers that computed them (distributed, as futures). With
    ``store_dir`` each frame is written into a Zarr array there where it is
    computed (one frame per chunk) and read back in every round, so memory
    stays bounded whatever the number of frames; the caller removes the folder.

    ``also``: keys of further (small) values computed in the same pass.
    ``paired``: the tasks give ``(frame, small value)`` pairs (one task per
    frame does both); the small values come back first in the returned list.
    Returns ``(HeldFrames, [values of also])``.
    """
    dsk = dict(dsk)
    n_frames = len(keys)
    name = "held-" + uuid.uuid4().hex
    if store_dir is not None or store is not None:
        import tempfile

        import zarr

        if store is None:
            store = tempfile.mkdtemp(prefix="stack-", suffix=".zarr", dir=store_dir)
        store = str(store)
        _ZARR_ARRAYS.pop((store, "r"), None)
        _ZARR_ARRAYS.pop((store, "r+"), None)
        _create_zarr(zarr, store, (n_frames, *shape), (1, *shape))
        for k, key in enumerate(keys):
            dsk[(name, k)] = (_store_frame, key, store, k)
        held_keys = [(name, k) for k in range(n_frames)]
    else:
        held_keys = list(keys)
    if client is None:
        values = compute_graph(dsk, held_keys + list(also))
        items, others = list(values[:n_frames]), list(values[n_frames:])
        if paired:
            items, others = [item[0] for item in items], [[item[1] for item in items]] + others
        return HeldFrames(items), others
    futures = client.get(dsk, held_keys + list(also), sync=False)
    _follow(futures, client)
    others = list(client.gather(futures[n_frames:]))
    items = futures[:n_frames]
    if store is not None:
        items = client.gather(items)
        if paired:
            items, others = [item[0] for item in items], [[item[1] for item in items]] + others
        return HeldFrames(list(items), client), others
    holders = _holding_workers(client, items)
    if paired:
        others = [_gather_seconds(items, client, holders)] + others
    return HeldFrames(list(items), client, holders), others


def _follow(futures, client) -> None:
    """Wait for futures, with the progress bar of the current context if it shows one."""
    from distributed import wait

    from holodask.cluster import progress_enabled

    if progress_enabled():
        import contextlib
        import sys

        from distributed import progress

        with contextlib.redirect_stdout(sys.stderr):
            progress(futures, notebook=False, multi=False)
            print(file=sys.stderr)
    wait(futures)


#: up to this many workers, every worker computes the round state itself
MAX_UPDATE_REPLICAS = 8


def _batch_size(n_frames: int, client=None) -> int:
    """Frames per task: about four tasks per thread, fewer tasks (and less
    scheduling) when the series is long."""
    if client is not None:
        threads = sum(client.nthreads().values()) or 1
    else:
        threads = os.cpu_count() or 1
    return max(1, n_frames // (4 * threads))


def _holders(held: HeldFrames) -> list | None:
    """The worker holding each frame (distributed, frames as futures), else None."""
    if held.client is None or not held.items or isinstance(held.items[0], (np.ndarray, StoredFrame)):
        return None
    if held.holders is not None and None not in held.holders:
        return list(held.holders)
    return _holding_workers(held.client, held.items)


def _holding_workers(client, futures) -> list:
    """The worker holding each future's value (None where the scheduler knows none)."""
    who_has = client.who_has(futures)
    return [sorted(who_has.get(future.key) or [None])[0] for future in futures]


def _copy_frame(frame):
    return frame


def _balance(held: HeldFrames, holders: list) -> list:
    """Move frames so that every worker holds a share proportional to its threads.

    The rounds run each batch where its frames are; a worker holding more
    frames than its share would make every round wait for it. Returns the new
    holders (``held.items`` is updated in place).
    """
    client = held.client
    threads = {worker: n for worker, n in client.nthreads().items() if n > 0}
    if len(threads) < 2 or any(h not in threads for h in holders):
        return holders
    total_threads = sum(threads.values())
    n_frames = len(holders)
    share = {w: n_frames * n // total_threads for w, n in threads.items()}
    for w in sorted(threads, key=lambda w: -threads[w])[: n_frames - sum(share.values())]:
        share[w] += 1
    by_worker: dict = {w: [] for w in threads}
    for index, worker in enumerate(holders):
        by_worker[worker].append(index)
    surplus = [i for w, indices in by_worker.items() for i in indices[share[w]:]]
    deficit = [w for w, indices in by_worker.items() for _ in range(share[w] - len(indices))]
    holders = list(holders)
    for index, worker in zip(surplus, deficit):
        held.items[index] = client.submit(_copy_frame, held.items[index], workers=[worker],
                                          allow_other_workers=False, pure=False)
        holders[index] = worker
    held.holders = list(holders)
    return holders


def _frame_groups(indices: list[int], batch: int, holders: list | None = None, threads=None) -> list[list[int]]:
    """Frame indices in batches of at most ``batch``.

    With ``holders`` (the worker of each frame) and ``threads`` (of each
    worker), the frames of a batch are held by one worker, so that a batch task
    runs there on local data instead of gathering frames from other workers in
    every round, and each worker gets one batch per thread (frames cost the
    same, so more tasks would only add scheduling).
    """
    if holders is None:
        return [indices[i:i + batch] for i in range(0, len(indices), batch)]
    by_worker: dict = {}
    for index in indices:
        by_worker.setdefault(holders[index], []).append(index)
    groups = []
    for worker, group in by_worker.items():
        parts = max(1, (threads or {}).get(worker, 1))
        size = -(-len(group) // parts)
        groups += [group[i:i + size] for i in range(0, len(group), size)]
    return groups


class _Graph:
    """Tasks added one by one and computed together: a raw graph run by Dask's
    threaded scheduler, or futures submitted at once to a distributed client.

    Every round of the averaging is added before any is computed: each round's
    tasks depend on the previous round's update task, so the scheduler starts
    a round as soon as the previous one ends, with no trip to the client in
    between.
    """

    def __init__(self, client=None):
        self.client = client
        self.dsk: dict = {}
        self.name = "average-" + uuid.uuid4().hex

    def add(self, label: str, func, *args, worker=None):
        """A task ``func(*args)``; ``args`` may hold what earlier calls returned."""
        if self.client is None:
            key = (f"{label}-{self.name}", len(self.dsk))
            self.dsk[key] = (func, *args)
            return key
        where = {"workers": [worker], "allow_other_workers": True} if worker is not None else {}
        return self.client.submit(func, *args, pure=False, **where)

    def share(self, *values) -> list:
        """Large constants used by many tasks (scattered to a cluster at once, in one call)."""
        if self.client is None:
            keys = []
            for value in values:
                keys.append((f"constant-{self.name}", len(self.dsk)))
                self.dsk[keys[-1]] = value
            return keys
        return self.client.scatter(list(values), broadcast=True, hash=False)

    def reduce_into(self, label: str, func, parts: list, *args, split_every: int = 16, worker=None):
        """``func(summed part, *args)``, where the summed part reduces the ``(small values,
        array)`` parts (see :func:`_reduce_parts`): in a tree of sums where there are many,
        inside the same task where there are few (one scheduling step less per round)."""
        while len(parts) > split_every:
            parts = [self.add("sum", _reduce_parts, *parts[i:i + split_every])
                     for i in range(0, len(parts), split_every)]
        return self.add(label, _reduced_call, func, len(args), *args, *parts, worker=worker)

    def compute(self, ref):
        if self.client is None:
            return compute_graph(self.dsk, [ref])[0]
        _follow([ref], self.client)  # the progress bar follows every round behind it
        return ref.result()


def _reduced_call(func, n_args, *args_and_parts):
    """``func(sum of the parts, *args)`` (the first ``n_args`` values are the args)."""
    args, parts = args_and_parts[:n_args], args_and_parts[n_args:]
    return func(_reduce_parts(*parts) if len(parts) > 1 else parts[0], *args)


def _round_batch(blocks, indices, round_state, grid, fit_shift, fit_tilt, fit_defocus, weights=None):
    """:func:`_round_task` on a batch of frames, states and average from the previous round
    (nothing once the rounds have converged); contributions times ``weights[index]`` if given."""
    states, average, _, converged = round_state
    if converged:
        return [], None
    parts = (_round_task(_load(block), states[index], average, grid, fit_shift, fit_tilt, fit_defocus)
             for block, index in zip(blocks, indices))
    if weights is not None:
        parts = (_weighted_part(part, weights[index]) for part, index in zip(parts, indices))
    return _reduce_stream(parts)


def _first_update(part, order, n_frames):
    """Round state ``(states, average spectrum, convergence, converged)`` after the first round."""
    states, total = part
    return np.array(_in_frame_order(states, order)), total / np.complex64(n_frames), [], False


def _converged(convergence: list, tolerance: float | None) -> bool:
    """Whether the residual changed by less than ``tolerance`` (relative) in the last round."""
    if not tolerance or len(convergence) < 2:
        return False
    return abs(convergence[-1] - convergence[-2]) <= tolerance * abs(convergence[-1])


def _update(part, order, round_state, n_frames, grid, nominal_defocus, fit_shift, fit_defocus, tolerance=None,
            weighting=None):
    """The next round state: factors normalised to a mean amplitude of 1, gauge pinned;
    converged once the residual changes by less than ``tolerance`` (None: never).

    ``weighting``: ``(weights, reference)`` of a weighted average (the mean amplitude and
    the focus gauge are weighted means, the position that of frame ``reference``)."""
    if round_state[3]:
        return round_state
    fits, total = part
    fits = _in_frame_order(fits, order)
    convergence = round_state[2] + [float(np.sum([error for _, error in fits]))]
    states = np.array([state for state, _ in fits])
    if weighting is None:
        norm = float(np.mean(np.hypot(states[:, 0], states[:, 1])))
    else:
        norm = float(np.average(np.hypot(states[:, 0], states[:, 1]), weights=weighting[0]))
    states[:, 0:2] /= norm
    average = total * np.complex64(norm / n_frames)
    if weighting is None:
        states, average = _pin_gauge(states, average, grid, nominal_defocus, fit_shift, fit_defocus)
    else:
        states, average = _pin_gauge(states, average, grid, nominal_defocus, fit_shift, fit_defocus,
                                     reference=weighting[1], weights=weighting[0])
    return states, average, convergence, _converged(convergence, tolerance)


def _update_round(part, order, n_frames, grid, nominal_defocus, fit_shift, fit_defocus, tolerance, round_state):
    """:func:`_update` with the previous round state last."""
    return _update(part, order, round_state, n_frames, grid, nominal_defocus, fit_shift, fit_defocus, tolerance)


def _weighted_update_round(part, order, n_frames, grid, nominal_defocus, fit_shift, fit_defocus, tolerance,
                           weighting, round_state):
    """:func:`_update` of a weighted average, with the previous round state last."""
    return _update(part, order, round_state, n_frames, grid, nominal_defocus, fit_shift, fit_defocus, tolerance,
                   weighting)


def _saved(round_state, checkpoint, round_number):
    """The round state, once the checkpoint holds it (see :class:`holodask.stages.checkpoint.Checkpoint`)."""
    checkpoint.save_round(round_number, round_state)
    return round_state


def _final_state(round_state):
    states, average, convergence, _ = round_state
    return states, average, fft.ifft2(average).astype(np.complex64), convergence


def _final_batch(blocks, indices, final_state, grid, weights=None):
    """:func:`_final_task` on a batch of frames (squared deviations times ``weights[index]``
    if given)."""
    states, average, average_wave, _ = final_state
    parts = (_final_task(_load(block), states[index], average, average_wave, grid)
             for block, index in zip(blocks, indices))
    if weights is not None:
        parts = (_weighted_part(part, weights[index]) for part, index in zip(parts, indices))
    return _reduce_stream(parts)


def variance_denominator(n_frames: int, weights=None) -> float:
    """What the summed squared deviations are divided by: ``N - 1``, or for weights of
    mean 1 (reliability weights) ``N - sum(w^2) / N``, which is ``N - 1`` for equal ones."""
    if weights is None:
        return n_frames - 1
    weights = np.asarray(weights, dtype=np.float64)
    return float(n_frames - np.sum(weights**2) / n_frames)


def _finish(part, order, final_state, n_frames, variance, weights=None):
    errors, squared = part
    states, _, average_wave, convergence = final_state
    errors = np.array(_in_frame_order(errors, order), dtype=float)
    if weights is None:
        var = (squared / (n_frames - 1)).astype(np.float32) if variance else None
    else:
        var = (squared / variance_denominator(n_frames, weights)).astype(np.float32) if variance else None
    return AverageResult(average_wave, var, states, errors, convergence + [float(errors.sum())])


def _in_frame_order(values: list, order: list[int]) -> list:
    """Undo the grouping: ``values[k]`` belongs to frame ``order[k]``."""
    result = [None] * len(order)
    for value, index in zip(values, order):
        result[index] = value
    return result


def _pin_gauge(states, average, grid, nominal_defocus, shifts, defocus, reference=0, weights=None):
    """Fix the free position and focus of the average.

    A common shift (or defocus) of all frames, with the average moved the
    opposite way, fits equally well; noise lets it wander from round to round.
    The average is kept at the first frame's position (the ROI is defined
    there) and at the mean nominal focus: the first frame's shift and the mean
    defocus offset from the nominal values are subtracted from every frame and
    the average spectrum moved accordingly, which is exact (both act in
    Fourier space only). A weighted average: the position of frame
    ``reference`` (its first frame of positive weight) and the weighted mean focus.
    """
    states = states.copy()
    qy, qx = grid.qy.astype(np.float64), grid.qx.astype(np.float64)
    phase_y, phase_x = np.zeros_like(qy), np.zeros_like(qx)  # the phase is separable in y and x
    if shifts:
        shift0 = states[reference, 2:4].copy()
        states[:, 2:4] -= shift0
        phase_y += 2.0 * np.pi * shift0[0] * qy
        phase_x += 2.0 * np.pi * shift0[1] * qx
    if defocus:
        if weights is None:
            offset = float(np.mean(states[:, 6] - nominal_defocus))
        else:
            offset = float(np.average(states[:, 6] - nominal_defocus, weights=weights))
        states[:, 6] -= offset
        phase_y -= np.pi * grid.wavelength_nm * offset * qy**2
        phase_x -= np.pi * grid.wavelength_nm * offset * qx**2
    if shifts or defocus:
        average = average * np.exp(1j * phase_y).astype(np.complex64)
        average *= np.exp(1j * phase_x).astype(np.complex64)
    return states, average.astype(np.complex64, copy=False)


# ---------------------------------------------------------------- the rounds


def _hold_array(stack, client=None, store_dir=None) -> HeldFrames:
    """:func:`hold_frames` of a (N, ny, nx) numpy or Dask array."""
    if isinstance(stack, HeldFrames):
        return stack
    if isinstance(stack, np.ndarray):
        if store_dir is None and client is None:
            return HeldFrames([np.asarray(frame, dtype=np.complex64) for frame in stack])
        name = "frames-" + uuid.uuid4().hex
        dsk = {(name, k): np.asarray(frame, dtype=np.complex64) for k, frame in enumerate(stack)}
        held, _ = hold_frames(dsk, list(dsk), stack.shape[1:], client, store_dir)
        return held
    from dask.core import flatten

    stack = stack.rechunk({0: 1, 1: -1, 2: -1})
    dsk = dict(stack.__dask_graph__())
    keys = list(flatten(stack.__dask_keys__()))
    held, _ = hold_frames(dsk, keys, stack.shape[1:], client, store_dir)
    return held



def average_series(
    stack,
    grid: AlignmentGrid,
    defocus_nm=None,
    *,
    iterations: int = 7,
    fit_shift: bool = True,
    fit_tilt: bool = False,
    fit_defocus: bool = False,
    defocus_start: int = 4,
    variance: bool = True,
    tolerance: float | None = None,
    checkpoint=None,
    client=None,
    store_dir=None,
    weights=None,
) -> AverageResult:
    """Average a stack of reconstructed waves with per-frame alignment.

    Parameters
    ----------
    stack : :class:`HeldFrames` (from :func:`hold_frames`), or a (N, ny, nx)
        complex numpy or Dask array (held here first).
    grid : :func:`holodask.align.alignment_grid` of the wave shape.
    defocus_nm : (N,) nominal defocus of each frame (start values of the fit).
    iterations : rounds after the first (reference: 7 for objects, 4 for empties).
    fit_shift, fit_tilt, fit_defocus : what is fitted besides the factor; the
        defocus only from round ``defocus_start`` on (0-based, counting the rounds
        after the first).
    variance : also compute the per-pixel variance.
    tolerance : stop the rounds once the total residual changes by less than this
        (relative) from one round to the next (None: all ``iterations``, the
        reference's schedule); with ``fit_defocus`` not before a round with it.
    checkpoint : a :class:`holodask.stages.checkpoint.Checkpoint`: the state after
        every round is kept there, and the rounds continue from the last one kept.
    client : a ``dask.distributed.Client`` (None: Dask's threaded scheduler).
    store_dir : folder for a Zarr store of the stack (None: frames in memory, on the
        workers with a distributed scheduler).
    weights : (N,) weights >= 0 of a weighted average (None, or all equal: the
        unweighted one, bit for bit). Every frame is still fitted; its contribution
        to the average and the variance counts with its weight (normalised to a
        mean of 1), the mean amplitude and focus are weighted means, the first round
        aligns to the first frame of positive weight and the average keeps its
        position; the variance is the reliability-weighted one,
        ``sum(w d^2) / (N - sum(w^2) / N)``. A frame of weight 0 is left out of the
        average as if it were not in the stack.
    """
    held = _hold_array(stack, client, store_dir)
    graph, ref = _rounds_graph(held, grid, defocus_nm, iterations=iterations, fit_shift=fit_shift,
                               fit_tilt=fit_tilt, fit_defocus=fit_defocus, defocus_start=defocus_start,
                               variance=variance, tolerance=tolerance, checkpoint=checkpoint, weights=weights)
    return graph.compute(ref)


def average_tasks(dsk: dict, keys: list, grid: AlignmentGrid, defocus_nm=None, **options) -> tuple[dict, tuple]:
    """The averaging of :func:`average_series` as tasks of a raw Dask graph, computed later.

    ``keys`` are the keys of the frames in ``dsk``. Returns the graph (``dsk``
    with the rounds) and the key of the :class:`AverageResult`; the frames are
    held by the scheduler while the rounds need them (for short series such as
    the empty holograms, whose average other tasks depend on).
    """
    graph, ref = _rounds_graph(HeldFrames(list(keys)), grid, defocus_nm, **options)
    return {**dsk, **graph.dsk}, ref


def _rounds_graph(held: HeldFrames, grid, defocus_nm, *, iterations, fit_shift, fit_tilt, fit_defocus,
                  defocus_start, variance, tolerance=None, checkpoint=None, weights=None, graph=None):
    """The :class:`_Graph` of every round over the held frames, and its final task.

    Rounds are numbered 0 (the first, against the first frame) to ``iterations``;
    with a ``checkpoint`` each round's state is saved, and the rounds start after
    the last one saved there. ``graph``: add the tasks to this :class:`_Graph`
    (several averages computed together); ``weights``: see :func:`average_series`.
    """
    plan = round_plan(held, grid, defocus_nm, iterations=iterations, fit_shift=fit_shift, fit_tilt=fit_tilt,
                      fit_defocus=fit_defocus, defocus_start=defocus_start, tolerance=tolerance,
                      checkpoint=checkpoint, weights=weights, graph=graph)
    return plan.graph, plan.final_pass(plan.finals, variance)


@dataclass
class RoundPlan:
    """The rounds of one average added to a :class:`_Graph`, up to the final state.

    ``finals`` maps each replica (the worker computing the round state, or None)
    to the task of the final state ``(states, average spectrum, average wave,
    convergence)``; :meth:`final_pass` adds the pass over the frames that gives
    the errors and the variance against it (or against a state derived from it:
    :mod:`holodask.stages.windows` registers the average first).
    """

    graph: "_Graph"
    items: list
    groups: list
    order: list
    replicas: list
    holders: list | None
    grid_ref: object
    n_frames: int
    finals: dict
    weights: np.ndarray | None = None
    weights_ref: object = None

    def where(self, group):
        return self.holders[group[0]] if self.holders is not None else None

    def state_for(self, states: dict, group):
        return states[self.where(group)] if len(self.replicas) > 1 else states[self.replicas[0]]

    def per_replica(self, label: str, func, finals: dict, *args) -> dict:
        """``func(final state, *args)`` on every replica (e.g. the registered final state)."""
        return {worker: self.graph.add(label, func, finals[worker], *args, worker=worker) for worker in self.replicas}

    def final_pass(self, finals: dict, variance: bool, final_batch=None, finish=None, extra=()):
        """The errors and the variance against ``finals`` (see the class): the key of the
        result of ``finish(part, order, final state, n_frames, variance[, weights], *extra)``
        (default :func:`_finish`, an :class:`AverageResult`), its parts made by
        ``final_batch(blocks, indices, final state, grid[, weights])`` (default :func:`_final_batch`)."""
        final_batch = final_batch or _final_batch
        finish = finish or _finish
        graph, weighted = self.graph, ([] if self.weights is None else [self.weights_ref])
        parts = [graph.add("final", final_batch, [self.items[i] for i in group], group,
                           self.state_for(finals, group), self.grid_ref, *weighted, worker=self.where(group))
                 for group in self.groups]
        first = self.replicas[0]
        return graph.reduce_into("finish", finish, parts, self.order, finals[first], self.n_frames, variance,
                                 *([] if self.weights is None else [self.weights]), *extra, worker=first)


def round_plan(held: HeldFrames, grid, defocus_nm, *, iterations, fit_shift, fit_tilt, fit_defocus,
               defocus_start, tolerance=None, checkpoint=None, weights=None, graph=None, batch=None) -> RoundPlan:
    """The rounds of :func:`_rounds_graph` up to the final state (a :class:`RoundPlan`);
    ``batch``: frames per task (None: :func:`_batch_size` of these frames)."""
    client = held.client
    n_frames = len(held)
    if n_frames == 1:
        raise ValueError("average_series needs at least two frames")
    defocus_nm = np.zeros(n_frames) if defocus_nm is None else np.asarray(defocus_nm, dtype=float)
    weights = normalised_weights(weights, n_frames)
    holders = _holders(held)
    threads = client.nthreads() if client is not None else None
    if holders is not None:
        holders = _balance(held, holders)
    items = held.items

    def where(group):
        return holders[group[0]] if holders is not None else None

    graph = graph if graph is not None else _Graph(client)
    grid_ref, defocus_ref = graph.share(grid, defocus_nm)
    weights_ref = graph.share(weights)[0] if weights is not None else None
    reference = 0 if weights is None else int(np.flatnonzero(weights > 0)[0])
    batch = batch if batch is not None else _batch_size(n_frames, client)
    groups = _frame_groups(list(range(n_frames)), batch, holders, threads)
    order = [i for group in groups for i in group]
    # the round state: one update task in all, or (a few workers) one on every worker
    # holding frames, all computing the same from the same parts, so that each
    # worker's next batch needs no transfer from a worker that is busy again
    replicas = sorted({where(group) for group in groups}) if holders is not None else [None]
    if len(replicas) > MAX_UPDATE_REPLICAS:
        replicas = [None]

    def updates(func, parts, *args, previous=None, round_number):
        states = {worker: graph.reduce_into("update", func, parts, *args,
                                            *([] if previous is None else [previous[worker]]), worker=worker)
                  for worker in replicas}
        if checkpoint is not None:  # the first replica's rounds wait for the state on disk
            states[replicas[0]] = graph.add("checkpoint", _saved, states[replicas[0]], checkpoint, round_number,
                                            worker=replicas[0])
        return states

    def state_for(states, group):
        return states[where(group)] if len(replicas) > 1 else states[replicas[0]]

    saved = checkpoint.last_round() if checkpoint is not None else None
    if saved is not None:
        done, state = saved
        (shared,) = graph.share(state)
        states = {worker: shared for worker in replicas}
    else:
        done = 0
        states = _first_round(graph, items, defocus_nm, grid_ref, fit_shift, batch, holders, threads, where,
                              lambda parts, first_order: updates(_first_update, parts, first_order, n_frames,
                                                                 round_number=0),
                              reference=reference, weights=weights)
    weighted = [] if weights is None else [weights_ref]
    if weights is None:
        update, weighting = _update_round, []
    else:
        update, weighting = _weighted_update_round, [(weights, reference)]
    for iteration in range(done, iterations):
        fit_defocus_now = bool(fit_defocus and iteration >= defocus_start)
        # with the defocus fit, the rounds stop only once it has run
        stop_at = tolerance if (not fit_defocus or iteration > defocus_start) else None
        parts = [graph.add("round", _round_batch, [items[i] for i in group], group, state_for(states, group),
                           grid_ref, fit_shift, fit_tilt, fit_defocus_now, *weighted, worker=where(group))
                 for group in groups]
        states = updates(update, parts, order, n_frames, grid_ref, defocus_ref, fit_shift, fit_defocus_now,
                         stop_at, *weighting, previous=states, round_number=iteration + 1)

    finals = {worker: graph.add("final-state", _final_state, states[worker], worker=worker) for worker in replicas}
    return RoundPlan(graph, items, groups, order, replicas, holders, grid_ref, n_frames, finals, weights, weights_ref)


def _first_round(graph, items, defocus_nm, grid_ref, fit_shift, batch, holders, threads, where, update,
                 reference=0, weights=None):
    """The first round: every frame fitted to the first one (``reference``: the first of
    positive weight); its update tasks. ``weights``: contributions times them."""
    others = [i for i in range(len(items)) if i != reference]
    first_groups = _frame_groups(others, batch, holders, threads)
    reference_task = graph.add("reference", _reference_task, items[reference], float(defocus_nm[reference]),
                               grid_ref, worker=where([reference]))
    if weights is None:
        parts = [reference_task] + [
            graph.add("first", _batch_task, _first_round_task, [items[i] for i in group],
                      [float(defocus_nm[i]) for i in group], reference_task, grid_ref, fit_shift, worker=where(group))
            for group in first_groups
        ]
    else:
        parts = [graph.add("reference-part", _weighted_part, reference_task, float(weights[reference]),
                           worker=where([reference]))] + [
            graph.add("first", _weighted_batch_task, _first_round_task, [items[i] for i in group],
                      [float(defocus_nm[i]) for i in group], [float(weights[i]) for i in group], reference_task,
                      grid_ref, fit_shift, worker=where(group))
            for group in first_groups
        ]
    return update(parts, [reference] + [i for group in first_groups for i in group])
