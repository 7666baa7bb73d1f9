"""The HDF5 result writer: layout, dtypes, attributes, atomic replacement."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from holodask.errors import HolodaskError, InputFileError
from holodask.io.holo_hdf5 import (
    COMPLEX_DTYPE,
    TEMP_SUFFIX,
    HoloOutputFile,
    hologram_attrs,
    read_complex,
    standard_attrs,
)
from holodask.params import FilterSpec, HoloParams

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _wave(shape=(8, 6), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex128)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def _params():
    return HoloParams(
        sampling_nm=0.9197516, voltage_kV=300.0, binning=1, roi=(0, 0, 512, 512),
        cut_off2_per_nm2=np.eye(2) * 0.07**2, align_cut_off_per_nm=0.07,
        filter_func=FilterSpec("BUTTERWORTH", 14), raw={"cut_off": 0.07, "object_size": 256},
    )


def test_complex_compound_dtype_on_disk(tmp_path):
    wave = _wave()
    with HoloOutputFile(tmp_path / "out.hdf5") as out:
        out.write_dataset("data", wave)
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        tid = f["data"].id.get_type()
        assert tid.get_class() == h5py.h5t.COMPOUND
        assert tid.get_size() == 8
        assert [tid.get_member_name(k) for k in range(2)] == [b"r", b"i"]
        assert [tid.get_member_offset(k) for k in range(2)] == [0, 4]
        for k in range(2):
            member = tid.get_member_type(k)
            assert member.get_class() == h5py.h5t.FLOAT and member.get_size() == 4
        assert f["data"].dtype == np.complex64
        np.testing.assert_array_equal(f["data"][()], wave.astype(np.complex64))
        np.testing.assert_array_equal(read_complex(f["data"]), wave.astype(np.complex64))
    assert COMPLEX_DTYPE.itemsize == 8
    assert COMPLEX_DTYPE.fields["r"][1] == 0 and COMPLEX_DTYPE.fields["i"][1] == 4


def test_real_float_and_integer_dtypes(tmp_path):
    with HoloOutputFile(tmp_path / "out.hdf5") as out:
        out.write_dataset("variance", np.arange(12.0).reshape(3, 4))
        out.write_dataset("counts", np.arange(12, dtype=np.uint16).reshape(3, 4))
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        assert f["variance"].dtype == np.float32
        assert f["counts"].dtype == np.uint16
        np.testing.assert_array_equal(f["variance"][()], np.arange(12.0).reshape(3, 4))


def test_read_complex_of_reference_compounds(tmp_path):
    wave = _wave()
    with h5py.File(tmp_path / "ref.hdf5", "w") as f:
        f["c16"] = wave  # reference program: float64 compound (<c16)
        pair = np.zeros(wave.shape, dtype=[("re", "<f8"), ("im", "<f8")])
        pair["re"], pair["im"] = wave.real, wave.imag
        f["pair"] = pair
        f["real"] = wave.real
        assert f["c16"].dtype == np.complex128
        for name in ("c16", "pair"):
            got = read_complex(f[name])
            assert got.dtype == np.complex64
            np.testing.assert_allclose(got, wave, rtol=1e-6)
        np.testing.assert_allclose(read_complex(f["real"]), wave.real, rtol=1e-6)


def test_standard_attributes_names_and_types(tmp_path):
    attrs = standard_attrs(_params(), sampling_nm=1.8395032, carrier_per_nm=[0.123, -0.259],
                           microscope="Titan", detector="US1000")
    attrs.update(hologram_attrs(
        shift_nm=[[0.0, 0.0], [1.5, -2.0]], tilt_per_nm=[[0, 0], [1e-3, 2e-3]],
        defocus_nm=[0.0, 3.0], factor=[1 + 0j, 0.5 - 0.5j], error=[1e-3, 2e-3],
        raw_shift_px=[[0, 0], [2, -3]], convergence=[3.0, 2.0, 1.0]))
    with HoloOutputFile(tmp_path / "out.hdf5") as out:
        out.write_dataset("data", _wave(), attrs)
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        a = f["data"].attrs
        assert "holoaverage_version" not in a
        assert a["holodask_version"] == __import__("holodask").__version__
        assert isinstance(a["holoaverage_param"], str)
        assert isinstance(a["microscope"], str) and a["microscope"] == "Titan"
        assert a["detector"] == "US1000"
        assert list(a["dim_unit"]) == ["nm", "nm"]
        assert list(a["reconstructionMaskType"]) == ["BUTTERWORTH", "14"]
        np.testing.assert_allclose(a["dim_scale"], [1.8395032, 1.8395032])
        np.testing.assert_array_equal(a["dim_offset"], [0.0, 0.0])
        np.testing.assert_allclose(a["carrier(nm-1)"], [0.123, -0.259])
        np.testing.assert_allclose(a["reconstructionCutOff2(nm2)"], np.eye(2) * 0.0049)
        np.testing.assert_allclose(a["reconstructionCutOff2(nm-2)"], np.eye(2) * 0.0049)
        assert a["voltage(kV)"] == 300.0
        np.testing.assert_array_equal(a["binning"], [1, 1])
        np.testing.assert_array_equal(a["roi"], [0, 0, 512, 512])
        np.testing.assert_array_equal(a["align_roi"], [0, 0, 512, 512])
        assert a["roi"].dtype.kind == "i"
        np.testing.assert_array_equal(a["shift(nm)"], [[0, 0], [1.5, -2.0]])
        assert a["shift(nm)"].shape == (2, 2) and a["tilt(1/nm)"].shape == (2, 2)
        np.testing.assert_array_equal(a["defocus(nm)"], [0.0, 3.0])
        np.testing.assert_array_equal(a["factor"], [1 + 0j, 0.5 - 0.5j])
        np.testing.assert_array_equal(a["error"], [1e-3, 2e-3])
        np.testing.assert_array_equal(a["raw_shift"], [[0, 0], [2, -3]])
        assert a["raw_shift"].dtype.kind == "i"
        np.testing.assert_array_equal(a["convergence"], [3.0, 2.0, 1.0])


def test_prefix_with_slash_makes_groups(tmp_path):
    with HoloOutputFile(tmp_path / "out.hdf5", prefix="runs/alpha_") as out:
        out.write_dataset("data", _wave())
        out.write_frames("series", (_wave(seed=k) for k in range(2)))
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        assert isinstance(f["runs"], h5py.Group)
        assert sorted(f["runs"].keys()) == ["alpha_data", "alpha_series"]
        assert sorted(f["runs/alpha_series"].keys()) == ["000", "001"]


def test_existing_file_keeps_other_objects_and_replaces_written(tmp_path):
    path = tmp_path / "out.hdf5"
    with h5py.File(path, "w") as f:
        f["other"] = np.arange(5)
        f["other"].attrs["note"] = "keep me"
        f.create_group("grp/sub").attrs["x"] = 3
        f["grp/sub/d"] = np.ones(3)
        f["a_data"] = np.zeros((2, 2))
        f["a_data"].attrs["stale"] = 1
    new = _wave((4, 4))
    with HoloOutputFile(path, prefix="a_") as out:
        out.write_dataset("data", new, {"voltage(kV)": 200.0})
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["other"][()], np.arange(5))
        assert f["other"].attrs["note"] == "keep me"
        assert f["grp/sub"].attrs["x"] == 3
        np.testing.assert_array_equal(f["grp/sub/d"][()], np.ones(3))
        np.testing.assert_array_equal(f["a_data"][()], new.astype(np.complex64))
        assert "stale" not in f["a_data"].attrs
        assert f["a_data"].attrs["voltage(kV)"] == 200.0
    assert _temp_files(tmp_path) == []


def test_exception_inside_with_leaves_earlier_file_identical(tmp_path):
    path = tmp_path / "out.hdf5"
    with HoloOutputFile(path) as out:
        out.write_dataset("data", _wave())
    before = _digest(path)
    with pytest.raises(RuntimeError, match="boom"):
        with HoloOutputFile(path) as out:
            out.write_dataset("data", _wave(seed=5))
            out.write_dataset("extra", _wave(seed=6))
            raise RuntimeError("boom")
    assert _digest(path) == before
    assert _temp_files(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with HoloOutputFile(path) as out:
            out.write_frames("series", (_wave(seed=k) for k in range(3)))
            raise KeyboardInterrupt
    assert _digest(path) == before
    assert _temp_files(tmp_path) == []


def test_exception_on_new_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with HoloOutputFile(tmp_path / "new.hdf5") as out:
            out.write_dataset("data", _wave())
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_sigkill_mid_write_leaves_earlier_file_and_no_temp(tmp_path):
    path = tmp_path / "out.hdf5"
    with HoloOutputFile(path) as out:
        out.write_dataset("data", _wave())
    before = _digest(path)
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from holodask.io.holo_hdf5 import HoloOutputFile
        with HoloOutputFile({str(path)!r}) as out:
            out.write_dataset("data", np.ones((64, 64), np.complex64))
            def frames():
                for k in range(10000):
                    if k == 2:
                        print("writing", flush=True)
                    yield np.full((64, 64), k, np.complex64)
                    time.sleep(0.01)
            out.write_frames("series", frames())
    """)
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"writing"
        assert len(_temp_files(tmp_path)) == 1  # the write is in progress
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    for _ in range(500):  # the watcher removes the temporary file once the pipe closes
        if not _temp_files(tmp_path):
            break
        time.sleep(0.01)
    assert _temp_files(tmp_path) == []
    assert _digest(path) == before


def test_series_as_group_and_as_dataset(tmp_path):
    frames = [_wave((5, 7), seed=k) for k in range(3)]
    path = tmp_path / "out.hdf5"
    consumed = []

    def generate():
        for k, frame in enumerate(frames):
            consumed.append(k)
            yield frame

    with HoloOutputFile(path) as out:
        assert out.write_frames("series", generate(), {"roi": [0, 0, 5, 7]}) == 3
        assert out.write_frames("stack", iter(frames), {"roi": [0, 0, 5, 7]}, as_dataset=True) == 3
    assert consumed == [0, 1, 2]
    with h5py.File(path, "r") as f:
        group = f["series"]
        assert isinstance(group, h5py.Group)
        assert list(group.keys()) == ["000", "001", "002"]
        np.testing.assert_array_equal(group.attrs["roi"], [0, 0, 5, 7])
        for k in range(3):
            assert group[f"{k:03d}"].dtype == np.complex64
            np.testing.assert_array_equal(group[f"{k:03d}"][()], frames[k].astype(np.complex64))
        stack = f["stack"]
        assert stack.shape == (3, 5, 7) and stack.dtype == np.complex64
        assert stack.chunks == (1, 5, 7)
        np.testing.assert_array_equal(stack[()], np.stack(frames).astype(np.complex64))
        np.testing.assert_array_equal(stack.attrs["roi"], [0, 0, 5, 7])


def test_series_names_grow_past_999(tmp_path):
    path = tmp_path / "out.hdf5"
    with HoloOutputFile(path) as out:
        out.write_frames("series", (np.full((1, 1), k, np.float32) for k in range(1001)))
    with h5py.File(path, "r") as f:
        names = set(f["series"].keys())
        assert {"000", "999", "1000"} <= names and len(names) == 1001
        assert f["series/1000"][0, 0] == 1000


def test_bad_output_paths(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        with HoloOutputFile(tmp_path / "missing" / "out.hdf5"):
            pass
    with pytest.raises(InputFileError, match="is a directory"):
        with HoloOutputFile(tmp_path):
            pass
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(InputFileError, match="not an HDF5 file"):
        with HoloOutputFile(text):
            pass
    assert text.read_text() == "not hdf5"
    assert _temp_files(tmp_path) == []


def test_prefix_under_existing_dataset_is_a_clear_error(tmp_path):
    path = tmp_path / "out.hdf5"
    with HoloOutputFile(path) as out:
        out.write_dataset("data", _wave())
    before = _digest(path)
    with pytest.raises(HolodaskError, match="output_prefix"):
        with HoloOutputFile(path, prefix="data/") as out:
            out.write_dataset("data", _wave())
    assert _digest(path) == before


def test_new_file_permissions_follow_umask(tmp_path):
    path = tmp_path / "out.hdf5"
    with HoloOutputFile(path) as out:
        out.write_dataset("data", _wave())
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
