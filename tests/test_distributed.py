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


def test_scratch_store_gives_the_same_result_and_is_removed(series, tmp_path):
    """With --scratch the stack lives in a Zarr store between rounds (bounded memory)."""
    sim, params, threaded = series
    from dataclasses import replace

    from holodask.cluster import compute_context

    scratch = tmp_path / "scratch"
    seen = []

    import holodask.average as average

    import holodask.pipeline as pipeline

    original = average.hold_frames

    def spy(dsk, keys, shape, client=None, store_dir=None, **kwargs):
        held = original(dsk, keys, shape, client, store_dir, **kwargs)
        seen.append((store_dir, sorted(p.name for p in scratch.rglob("*.zarr")),
                     all(isinstance(item, average.StoredFrame) for item in held[0].items)))
        return held

    pipeline.hold_frames = spy
    try:
        with compute_context(scratch=scratch):
            got = run_pipeline(replace(params, output_name=str(tmp_path / "scratch.hdf5")))
    finally:
        pipeline.hold_frames = original
    _assert_same_data(got, threaded)
    assert seen and all(store is not None and zarrs and stored for store, zarrs, stored in seen)
    assert list(scratch.iterdir()) == []  # the stores are gone after the run
