"""Scheduler selection (holodask.cluster): job scripts, local clusters, clients, errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from holodask import cluster as hc
from holodask.cluster import (
    SchedulerOptions,
    add_scheduler_arguments,
    compute_context,
    compute_with_progress,
    load_cluster_config,
    make_job_cluster,
    options_from_args,
)
from holodask.errors import HolodaskError, ParameterError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue (the 'cluster' extra) is not installed")


@pytest.fixture(scope="module")
def inprocess_client():
    """A small in-process distributed cluster shared by the client/scheduler tests."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                           dashboard_address=":0", silence_logs=40)
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


def _directives(script: str, prefix: str) -> list[str]:
    return [line[len(prefix):].strip() for line in script.splitlines() if line.startswith(prefix)]


# ----------------------------------------------------------------- job scripts


def test_slurm_job_script_from_example_config():
    cluster = make_job_cluster("slurm", CONFIGS / "slurm.yaml")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    directives = _directives(script, "#SBATCH")
    # 8 cores, 32 GB = 29.8 GiB rounded up by dask-jobqueue, 1 h, partition, account, extras
    assert directives == [
        "-J holodask",
        "-p normal",
        "-A my-project",
        "-n 1",
        "--cpus-per-task=8",
        "--mem=30G",
        "-t 01:00:00",
        "--constraint=intel",
        "--output=holodask-%x-%j.out",
    ]
    worker_line = script.strip().splitlines()[-1]
    assert "--nworkers 2" in worker_line and "--nthreads 4" in worker_line
    assert "--memory-limit 14.90GiB" in worker_line  # 32 GB / 2 workers
    assert "--local-directory $TMPDIR" in worker_line
    # the workers keep mid-sized arrays on the heap (see holodask.cluster.WORKER_ENVIRONMENT)
    assert "export MALLOC_MMAP_THRESHOLD_=16777216" in script.splitlines()
    assert "export MALLOC_TRIM_THRESHOLD_=16777216" in script.splitlines()


def test_slurm_overrides_and_scratch_replace_config_values(tmp_path):
    cluster = make_job_cluster("slurm", CONFIGS / "slurm.yaml", scratch=tmp_path, queue="debug",
                               account=None, walltime="00:10:00")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert f"--local-directory {tmp_path}" in script and "$TMPDIR" not in script
    directives = _directives(script, "#SBATCH")
    assert "-p debug" in directives and "-t 00:10:00" in directives
    assert not any(d.startswith("-A") for d in directives)


def test_mapping_config_and_scratch(tmp_path):
    cluster = make_job_cluster("slurm", {"cores": 2, "memory": "4GB"}, scratch=tmp_path)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert f"--local-directory {tmp_path}" in script
    assert "--cpus-per-task=2" in _directives(script, "#SBATCH")


def test_pbs_job_script_from_example_config():
    cluster = make_job_cluster("pbs", CONFIGS / "pbs.yaml")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert _directives(script, "#PBS") == [
        "-N dask-worker",
        "-q workq",
        "-A my-project",
        "-l select=1:ncpus=8:mem=30GB",
        "-l walltime=01:00:00",
        "-j oe",
        "-V",
    ]
    assert "--nworkers 2" in script and "--nthreads 4" in script


@pytest.mark.parametrize("kind, prefix, expected", [
    ("sge", "#$", ["-q all.q", "-l h_rt=01:00:00", "-pe smp 8"]),
    ("lsf", "#BSUB", ["-q normal", "-n 8", "-W 01:00", "-M 32000000"]),
])
def test_sge_and_lsf_example_configs_build(kind, prefix, expected):
    cluster = make_job_cluster(kind, CONFIGS / f"{kind}.yaml")
    try:
        directives = _directives(cluster.job_script(), prefix)
    finally:
        cluster.close()
    for item in expected:
        assert item in directives


def test_config_keys_with_dashes_and_holodask_keys():
    config = load_cluster_config(
        {"cores": 1, "memory": "1GB", "job-extra-directives": ["--exclusive"], "jobs": 3}, "slurm")
    assert config == {"cores": 1, "memory": "1GB", "job_extra_directives": ["--exclusive"], "jobs": 3}


# ----------------------------------------------------------------- bad configs


def test_missing_config_file(tmp_path):
    with pytest.raises(ParameterError, match=r"cluster_config: file .*nope\.yaml does not exist"):
        load_cluster_config(tmp_path / "nope.yaml", "slurm")


def test_unknown_key_names_key_and_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cores: 4\nmemroy: 8GB\n")
    with pytest.raises(ParameterError, match=r"unknown key 'memroy'.*did you mean 'memory'"):
        load_cluster_config(path, "slurm")


def test_bad_yaml_gives_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cores: 4\nmemory: [8GB\n")
    with pytest.raises(ParameterError, match=r"c\.yaml: not valid YAML at line \d+"):
        load_cluster_config(path, "pbs")


def test_config_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- cores\n- memory\n")
    with pytest.raises(ParameterError, match="expected a mapping"):
        load_cluster_config(path, "slurm")


def test_directives_must_be_a_list():
    with pytest.raises(ParameterError, match="job_extra_directives must be a list"):
        load_cluster_config({"job_extra_directives": "--exclusive"}, "slurm")


def test_missing_cores_is_a_parameter_error():
    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}):
        with pytest.raises(ParameterError, match="cannot set up the slurm cluster"):
            make_job_cluster("slurm", {})


def test_bad_option_values():
    with pytest.raises(ParameterError, match="cluster: expected one of"):
        SchedulerOptions(cluster="kubernetes")
    with pytest.raises(ParameterError, match="workers: expected a positive integer"):
        SchedulerOptions(workers=0)
    with pytest.raises(ParameterError, match="give only one"):
        SchedulerOptions(cluster="local", scheduler="tcp://127.0.0.1:8786")


def test_config_with_local_cluster_is_refused(tmp_path):
    with pytest.raises(ParameterError, match="cluster_config: applies to --cluster slurm"):
        with compute_context(cluster="local", cluster_config=CONFIGS / "slurm.yaml", quiet=True):
            pass


def test_local_sizes_with_job_cluster_are_refused():
    with pytest.raises(ParameterError, match="memory_limit: applies to --cluster local"):
        with compute_context(cluster="slurm", cluster_config={"cores": 1, "memory": "1GB"},
                             memory_limit="2GB", quiet=True):
            pass


def test_missing_dask_jobqueue_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(ParameterError, match=r"pip install 'holodask\[cluster\]'"):
        make_job_cluster("pbs", CONFIGS / "pbs.yaml")


def test_no_worker_gives_a_clear_timeout_and_closes(monkeypatch):
    import dask_jobqueue

    made = []

    class NoSubmitSLURMCluster(dask_jobqueue.SLURMCluster):
        def __init__(self, *args, **kwargs):
            self.requested_jobs = []
            super().__init__(*args, **kwargs)
            made.append(self)

        def scale(self, n=None, jobs=0, memory=None, cores=None):  # submit nothing
            self.requested_jobs.append(jobs)

    monkeypatch.setattr(dask_jobqueue, "SLURMCluster", NoSubmitSLURMCluster)
    options = SchedulerOptions(cluster="slurm", jobs=2, quiet=True, wait_for_workers_s=0.5,
                               cluster_config={"cores": 1, "memory": "1GB",
                                               "scheduler_options": {"host": "127.0.0.1"}})
    with pytest.raises(HolodaskError, match=r"no Dask worker started within 0\.5 s after submitting 2 slurm"):
        with compute_context(options):
            pass
    (cluster,) = made
    assert cluster.requested_jobs[0] == 2
    assert cluster.status.name == "closed"


# ----------------------------------------------------------------- CLI options


def test_cli_options_round_trip(tmp_path):
    parser = argparse.ArgumentParser()
    add_scheduler_arguments(parser)
    args = parser.parse_args(["--cluster", "slurm", "--cluster-config", "c.yaml", "--jobs", "3",
                              "--quiet", "--report", "r.html", "--scratch", str(tmp_path)])
    options = options_from_args(args)
    assert (options.cluster, options.cluster_config, options.jobs, options.quiet) == ("slurm", "c.yaml", 3, True)
    assert (options.report, options.scratch, options.kind) == ("r.html", str(tmp_path), "slurm")
    options = options_from_args(parser.parse_args([]))
    assert options.kind == "threads" and options.quiet is False
    assert options_from_args(parser.parse_args(["--workers", "2"])).kind == "local"
    # a performance report needs a distributed scheduler: a local cluster is started for it
    assert options_from_args(parser.parse_args(["--report", "r.html"])).kind == "local"
    with pytest.raises(SystemExit):
        parser.parse_args(["--workers", "0"])


# ----------------------------------------------------------------- computing


def test_default_is_the_threaded_scheduler(tmp_path):
    array = da.arange(100, chunks=10)
    with compute_context(quiet=True, scratch=tmp_path / "scratch") as client:
        assert client is None
        assert dask.config.get("scheduler") == "threads"
        assert dask.config.get("temporary_directory") == str(tmp_path / "scratch")
        (total,) = compute_with_progress(array.sum())
    assert total == 4950
    assert (tmp_path / "scratch").is_dir()


def test_threaded_progress_bar_goes_to_stderr(monkeypatch, capsys):
    monkeypatch.setattr(hc, "_show_progress", lambda options: True)
    monkeypatch.setattr(hc, "PROGRESS_MINIMUM_S", 0.0)
    with compute_context():
        (total,) = compute_with_progress(da.ones(50, chunks=5).sum())
    assert total == 50
    captured = capsys.readouterr()
    assert "100% Completed" in captured.err and "Completed" not in captured.out


def test_local_cluster_computes_and_is_closed(tmp_path):
    array = da.from_array(np.arange(64.0).reshape(8, 8), chunks=(4, 4))
    with compute_context(cluster="local", workers=1, threads_per_worker=1, memory_limit="1GB",
                         scratch=tmp_path, quiet=True) as client:
        cluster = client.cluster
        info = client.scheduler_info()
        (worker,) = info["workers"].values()
        assert worker["nthreads"] == 1 and worker["memory_limit"] == 10**9
        assert worker["local_directory"].startswith(str(tmp_path))
        # dask.compute uses the client inside the block
        assert dask.compute((array**2).sum())[0] == pytest.approx(np.sum(np.arange(64.0) ** 2))
        environment = client.run(lambda: [os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                                          os.environ.get("MALLOC_TRIM_THRESHOLD_")])
        assert list(environment.values()) == [["16777216", "16777216"]]  # Dask's 65536 replaced
    assert client.status == "closed"
    assert cluster.status.name == "closed"


def test_local_cluster_is_closed_after_an_error():
    with pytest.raises(RuntimeError, match="boom"):
        with compute_context(cluster="local", workers=1, threads_per_worker=1, quiet=True) as client:
            raise RuntimeError("boom")
    assert client.status == "closed"
    assert client.cluster.status.name == "closed"


def test_existing_client_is_used_and_not_closed(inprocess_client, tmp_path, capsys):
    report = tmp_path / "report.html"
    with compute_context(client=inprocess_client, report=report) as client:
        assert client is inprocess_client
        (total,) = dask.compute(da.ones(20, chunks=5).sum())
    assert total == 20
    assert inprocess_client.status == "running"
    assert "<html" in report.read_text(errors="replace").lower()
    assert "Dask dashboard: http" in capsys.readouterr().err


def test_distributed_progress_goes_to_stderr(inprocess_client, monkeypatch, capsys):
    monkeypatch.setattr(hc, "_show_progress", lambda options: True)
    with compute_context(client=inprocess_client):
        a, b = compute_with_progress(da.ones(10, chunks=2).sum(), da.arange(4, chunks=2).sum())
    assert (a, b) == (10, 6)
    captured = capsys.readouterr()
    assert "100% Completed" in captured.err and "Completed" not in captured.out


def test_connect_by_address_and_scheduler_file(inprocess_client, tmp_path):
    address = inprocess_client.scheduler.address
    with compute_context(scheduler=address, quiet=True) as client:
        assert client.scheduler.address == address
        assert client.submit(lambda x: x + 1, 41).result() == 42
    assert client.status == "closed"
    assert inprocess_client.status == "running"

    scheduler_file = tmp_path / "scheduler.json"
    # the part of a scheduler file (dask scheduler --scheduler-file) that clients read
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": address}))
    with compute_context(scheduler=str(scheduler_file), quiet=True) as client:
        assert client.scheduler.address == address
    assert client.status == "closed"


def test_bad_scheduler_address():
    with pytest.raises(ParameterError, match="scheduler: expected an address tcp://HOST:PORT"):
        with compute_context(scheduler="no-such-scheduler-file.json", quiet=True):
            pass


def test_report_without_a_cluster_starts_a_local_one(tmp_path, capsys):
    report = tmp_path / "report.html"
    with compute_context(report=report, workers=1, threads_per_worker=1) as client:
        assert client is not None and type(client.cluster).__name__ == "LocalCluster"
        assert dask.compute(da.arange(10, chunks=5).sum())[0] == 45
    assert client.status == "closed"
    assert "<html" in report.read_text(errors="replace").lower()
    with pytest.raises(ParameterError, match="report: folder .*missing does not exist"):
        with compute_context(report=tmp_path / "missing" / "r.html"):
            pass
