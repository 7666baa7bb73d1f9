"""The pipeline on a real distributed LocalCluster with process workers.

It must give the threaded scheduler's result, and survive losing a worker
process in the middle of the run (its tasks are recomputed elsewhere).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from holodask.params import load_parameters  # noqa: E402
from holodask.pipeline import run as run_pipeline  # noqa: E402
from holodask.simulate import simulate_series  # noqa: E402


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    sim = simulate_series(folder, n_frames=12, size_px=256, object_size_px=64, dose_e_per_px=500.0,
                          drift_step_px=0.5, biprism_phase_jitter_rad=0.3, seed=5)
    params = load_parameters(sim.params_path)
    threaded = run_pipeline(params)
    return sim, params, threaded


@pytest.fixture()
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", memory_limit="2GB")
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _assert_same_data(got, expected):
    scale = float(np.abs(expected["data"].values).mean())
    difference = float(np.abs(got["data"].values - expected["data"].values).max())
    assert difference <= 1e-5 * scale, f"max |difference| {difference:.3g} > 1e-5 x mean amplitude {scale:.3g}"
    np.testing.assert_allclose(got["shift_nm"].values, expected["shift_nm"].values, atol=1e-4)


def test_local_cluster_gives_the_threaded_result(series, client, tmp_path):
    sim, params, threaded = series
    from dataclasses import replace

    got = run_pipeline(replace(params, output_name=str(tmp_path / "distributed.hdf5")), client=client)
    _assert_same_data(got, threaded)
    assert len(client.scheduler_info()["workers"]) == 2


def test_run_survives_a_killed_worker(series, client, tmp_path):
    sim, params, threaded = series
    from dataclasses import replace

    worker_pids = client.run(os.getpid)
    victim_address, victim_pid = sorted(worker_pids.items())[0]
    finished = threading.Event()
    state = {"killed_during_run": False}

    def done_tasks(dask_scheduler=None):
        return sum(1 for ts in dask_scheduler.tasks.values() if ts.state == "memory")

    def killer():
        deadline = time.monotonic() + 60
        while not finished.is_set() and time.monotonic() < deadline:
            try:
                if client.run_on_scheduler(done_tasks) >= 6:
                    break
            except Exception:  # the scheduler is busy; try again
                pass
            time.sleep(0.02)
        if not finished.is_set():
            os.kill(victim_pid, signal.SIGKILL)
            state["killed_during_run"] = not finished.is_set()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        got = run_pipeline(replace(params, output_name=str(tmp_path / "killed.hdf5")), client=client)
    finally:
        finished.set()
        thread.join()
    assert state["killed_during_run"], "the worker was not killed while the run was going on"
    _assert_same_data(got, threaded)
    # the nanny restarted a worker in place of the killed process
    assert victim_pid not in client.run(os.getpid).values()


@pytest.mark.parametrize("memory_limit, spilled", [("64kB", True), (None, False)])
def test_a_stack_over_the_budget_spills_to_scratch_and_gives_the_same_result(series, tmp_path, memory_limit,
                                                                             spilled, caplog):
    """Over half the memory budget the stack lives in a Zarr store in --scratch between rounds
    (bounded memory), with one message; under it in memory. The store is gone after the run."""
    sim, params, threaded = series
    from dataclasses import replace

    from holodask.cluster import compute_context

    scratch = tmp_path / "scratch"
    seen = []

    import holodask.stages.rounds as average

    import holodask.stages.averaging as pipeline

    original = average.hold_frames

    def spy(dsk, keys, shape, client=None, store_dir=None, **kwargs):
        held = original(dsk, keys, shape, client, store_dir, **kwargs)
        seen.append((store_dir, sorted(p.name for p in scratch.rglob("*.zarr")),
                     all(isinstance(item, average.StoredFrame) for item in held[0].items)))
        return held

    pipeline.hold_frames = spy
    try:
        with compute_context(scratch=scratch, memory_limit=memory_limit):
            got = run_pipeline(replace(params, output_name=str(tmp_path / "scratch.hdf5")))
    finally:
        pipeline.hold_frames = original
    _assert_same_data(got, threaded)
    assert len(seen) == 1
    store, zarrs, stored = seen[0]
    assert (store is not None, bool(zarrs), stored) == (spilled, spilled, spilled)
    messages = [r.getMessage() for r in caplog.records if "Zarr store" in r.getMessage()]
    assert len(messages) == int(spilled)
    if spilled:
        assert str(scratch) in messages[0] and "exceed half of the memory budget (64 kB)" in messages[0]
    assert list(scratch.iterdir()) == []  # the stores are gone after the run


def test_held_frames_are_spread_evenly_and_batches_stay_on_their_worker(client):
    """The rounds run each batch where its frames are held; frames are first spread
    so that no worker holds more than its share (a round waits for the slowest)."""
    from holodask.stages.rounds import _balance, _frame_groups, _holders, hold_frames

    frames = np.arange(10 * 4, dtype=np.complex64).reshape(10, 2, 2)
    only = sorted(client.scheduler_info()["workers"])[0]
    dsk = {("f", k): frames[k] for k in range(10)}
    futures = client.get(dsk, list(dsk), sync=False, workers=[only])  # all on one worker
    distributed.wait(futures)
    from holodask.stages.rounds import HeldFrames

    held = HeldFrames(list(futures), client)
    holders = _holders(held)
    assert set(holders) == {only}
    balanced = _balance(held, holders)
    assert sorted(balanced.count(w) for w in set(balanced)) == [5, 5]
    distributed.wait(held.items)
    assert _holders(held) == balanced  # the moved frames are where _balance says
    for k in range(10):
        np.testing.assert_array_equal(held.frame(k), frames[k])
    groups = _frame_groups(list(range(10)), 3, balanced, client.nthreads())
    assert sorted(i for g in groups for i in g) == list(range(10))
    assert len(groups) == 2 and all(len({balanced[i] for i in g}) == 1 for g in groups)
    # held pairs (frame, small value) from one task per frame: the small values come back
    pairs = {("p", k): (lambda k: (frames[k], k * k), k) for k in range(10)}
    held_pairs, (squares,) = hold_frames(pairs, list(pairs), (2, 2), client, paired=True)
    assert squares == [k * k for k in range(10)]
    np.testing.assert_array_equal(held_pairs.frame(3), frames[3])


def test_workers_get_the_malloc_setup(client):
    from holodask.cluster import register_worker_setup, tune_malloc

    assert tune_malloc()  # glibc: both thresholds set
    register_worker_setup(client)
    assert all(client.run(lambda dask_worker: "holodask-worker-setup" in dask_worker.plugins).values())
