"""Dask workers in real SLURM jobs (run with ``-m slurm``; CI starts ci/local-slurm.sh).

Skipped when ``sbatch``/``sinfo`` are absent or no SLURM node is up.
"""

from __future__ import annotations

import functools
import json
import re
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from holodask.cluster import SchedulerOptions, compute_context

pytestmark = pytest.mark.slurm

JOB_WAIT_S = 60
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: called on a worker: the SLURM job it runs in (os.getenv pickles by reference)
_slurm_job_id = functools.partial(os.getenv, "SLURM_JOB_ID")


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout


@pytest.fixture(scope="module")
def slurm_partition() -> str:
    """Name of the default partition of a running SLURM with an idle node."""
    missing = [tool for tool in ("sbatch", "sinfo", "squeue", "scancel") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"SLURM commands {', '.join(missing)} are absent (start one with ci/local-slurm.sh start)")
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue (the 'cluster' extra) is not installed")
    try:
        lines = _run("sinfo", "-h", "-o", "%P %t").split()
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"sinfo does not answer ({exc}); no SLURM controller is running")
    states = dict(zip(lines[::2], lines[1::2]))
    up = [p for p, state in states.items() if state.rstrip("*~#") in ("idle", "mix", "mixed")]
    if not up:
        pytest.skip(f"no idle SLURM node (sinfo: {states or 'nothing'})")
    default = [p for p in up if p.endswith("*")]
    return (default or up)[0].rstrip("*")


def _queued_job_ids(job_name: str) -> set[str]:
    """Ids of the jobs named ``job_name`` that are still pending or running."""
    out = _run("squeue", "-h", "-n", job_name, "-t", "PENDING,RUNNING,CONFIGURING", "-o", "%i")
    return set(out.split())


def _wait_until_gone(job_name: str, timeout_s: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while (left := _queued_job_ids(job_name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _slurm_config(partition: str, job_name: str, log_dir) -> dict:
    return {
        "cores": 1,
        "processes": 1,
        "memory": "2GB",
        "queue": partition,
        "walltime": "00:10:00",
        "job_name": job_name,
        "log_directory": str(log_dir),
        "scheduler_options": {"host": "127.0.0.1", "dashboard_address": ":0"},
        "wait_for_workers_s": JOB_WAIT_S,
    }


def test_workers_run_in_slurm_jobs_and_jobs_are_cancelled(slurm_partition, tmp_path):
    job_name = f"hd-test-{uuid.uuid4().hex[:8]}"
    options = SchedulerOptions(cluster="slurm", jobs=2, quiet=True,
                               cluster_config=_slurm_config(slurm_partition, job_name, tmp_path))
    try:
        with compute_context(options) as client:
            cluster = client.cluster
            script = cluster.job_script()
            assert f"#SBATCH -p {slurm_partition}" in script and "#SBATCH --cpus-per-task=1" in script
            client.wait_for_workers(2, timeout=JOB_WAIT_S)

            # every worker runs inside one of the two jobs this cluster submitted
            worker_job_ids = set(client.run(_slurm_job_id).values())
            submitted = {job.job_id for job in cluster.workers.values()}
            assert len(submitted) == 2 and worker_job_ids == submitted
            assert _queued_job_ids(job_name) == submitted

            array = da.from_array(np.arange(1000.0).reshape(10, 100), chunks=(1, 100))
            (row_sums,) = dask.compute(array.sum(axis=1))
            np.testing.assert_allclose(row_sums, np.arange(1000.0).reshape(10, 100).sum(axis=1))
            # tasks run inside the jobs
            assert client.submit(_slurm_job_id, pure=False).result() in submitted
    finally:
        left = _wait_until_gone(job_name)
        if left:  # leave nothing behind, then fail
            subprocess.run(["scancel", *sorted(left)], check=False)
    assert not left, f"jobs {sorted(left)} were still queued after the cluster closed"


def test_holodask_run_on_slurm_matches_threads(slurm_partition, tmp_path):
    """End to end: ``holodask run --cluster slurm`` gives the threaded scheduler's result."""
    from holodask import simulate
    from holodask.results import open_result

    from holodask.params import parse_parameter_text

    sim_dir = tmp_path / "sim"
    simulate.simulate_series(sim_dir, n_frames=8, dose_e_per_px=500.0, drift_step_px=0.5)
    params = parse_parameter_text((sim_dir / "params.json").read_text())
    outputs = {}
    messages = {}
    for name in ("threads", "slurm"):
        params["output_name"] = str(tmp_path / f"{name}.hdf5")
        path = sim_dir / f"params-{name}.json"
        path.write_text(json.dumps(params))
        outputs[name] = tmp_path / f"{name}.hdf5"
        cmd = [sys.executable, "-m", "holodask", "run", str(path)]
        if name == "slurm":
            config = tmp_path / "slurm.yaml"
            job_name = f"hd-run-{uuid.uuid4().hex[:8]}"
            config.write_text(json.dumps(_slurm_config(slurm_partition, job_name, tmp_path / "logs")))
            cmd += ["--cluster", "slurm", "--cluster-config", str(config), "--jobs", "2"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=sim_dir, env=env)
        elapsed = time.perf_counter() - started
        assert done.returncode == 0, done.stderr
        messages[name] = done.stderr
    left = _wait_until_gone(job_name)
    assert not left, f"jobs {sorted(left)} were still queued after holodask run"
    # the work ran in SLURM jobs: holodask names the job ids, and SLURM knows them under our job name
    found = re.search(r"slurm job ids: ([0-9 ]+)", messages["slurm"])
    assert found, messages["slurm"]
    job_ids = found.group(1).split()
    assert len(job_ids) == 2
    for job_id in job_ids:
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
        assert f"JobName={job_name}" in shown.stdout, shown.stdout + shown.stderr
    print(f"holodask run --cluster slurm --jobs 2: {elapsed:.1f} s, SLURM job ids {' '.join(job_ids)}")
    with open_result(outputs["threads"]) as expected, open_result(outputs["slurm"]) as got:
        assert set(got.data_vars) == set(expected.data_vars)
        scale = float(np.abs(expected["data"].values).mean())
        difference = float(np.abs(got["data"].values - expected["data"].values).max())
        assert difference <= 1e-5 * scale, (difference, scale)
