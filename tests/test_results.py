"""Reading results back: round trip of holodask files and files of the reference program."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys

import dask.array as da
import h5py
import numpy as np
import pytest

from holodask.errors import InputFileError
from holodask.io.holo_hdf5 import HoloOutputFile, hologram_attrs, standard_attrs
from holodask.params import FilterSpec, HoloParams
from holodask.results import describe_result, open_result, result_prefixes


def _wave(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


@pytest.fixture()
def written(tmp_path):
    """A result written by holodask under prefix ``runs/a_`` plus an unrelated dataset."""
    params = HoloParams(voltage_kV=300.0, cut_off2_per_nm2=np.eye(2) * 0.01,
                        filter_func=FilterSpec("EDGE"), raw={"cut_off": 0.1, "object_size": 6})
    frames = [_wave((6, 5), k) for k in range(3)]
    base = standard_attrs(params, sampling_nm=2.0, offset_nm=(10.0, -4.0),
                          carrier_per_nm=[0.1, 0.2], microscope="Titan")
    per = hologram_attrs(shift_nm=[[0, 0], [1.0, 2.0], [-0.5, 3.0]],
                         tilt_per_nm=[[0, 0], [0.01, 0.02], [0.0, -0.01]],
                         defocus_nm=[0.0, 5.0, 10.0], factor=[1, 0.9j, -1.1],
                         error=[1e-3, 2e-3, 3e-3], raw_shift_px=[[0, 0], [1, 2], [3, 4]],
                         convergence=[5.0, 1.0, 0.5], frame_index=[2, 3, 5])
    data = np.mean(frames, axis=0)
    path = tmp_path / "res.hdf5"
    with h5py.File(path, "w") as f:
        f["unrelated"] = np.arange(3)
    with HoloOutputFile(path, prefix="runs/a_") as out:
        out.write_dataset("data", data, {**base, **per})
        out.write_dataset("variance", np.var(frames, axis=0), {**base, **per})
        out.write_dataset("empty", _wave((6, 5), 9), base)
        out.write_frames("series", iter(frames), base)
    return path, frames, data


def test_round_trip(written):
    path, frames, data = written
    ds = open_result(path, prefix="runs/a_")
    assert ds["data"].dtype == np.complex64 and ds["data"].dims == ("y", "x")
    np.testing.assert_array_equal(ds["data"].values, data)
    np.testing.assert_allclose(ds["variance"].values, np.var(frames, axis=0), rtol=1e-6)
    assert ds["empty"].dims == ("y", "x")
    np.testing.assert_allclose(ds["x"].values, 10.0 + 2.0 * np.arange(5))
    np.testing.assert_allclose(ds["y"].values, -4.0 + 2.0 * np.arange(6))
    np.testing.assert_array_equal(ds["frame"].values, [2, 3, 5])
    np.testing.assert_array_equal(ds["factor"].values, [1, 0.9j, -1.1])
    assert ds["shift_nm"].dims == ("frame", "xy")
    assert list(ds["xy"].values) == ["x", "y"]
    np.testing.assert_array_equal(ds["shift_nm"].sel(xy="y").values, [0.0, 2.0, 3.0])
    np.testing.assert_array_equal(ds["tilt_per_nm"].sel(xy="x").values, [0.0, 0.01, 0.0])
    np.testing.assert_array_equal(ds["defocus_nm"].values, [0.0, 5.0, 10.0])
    np.testing.assert_array_equal(ds["error"].values, [1e-3, 2e-3, 3e-3])
    np.testing.assert_array_equal(ds["raw_shift_px"].values, [[0, 0], [1, 2], [3, 4]])
    np.testing.assert_array_equal(ds["convergence"].values, [5.0, 1.0, 0.5])
    assert ds["convergence"].dims == ("iteration",)
    series = ds["series"]
    assert isinstance(series.data, da.Array)
    assert series.data.chunks[0] == (1, 1, 1)
    np.testing.assert_array_equal(series.values, np.stack(frames))
    np.testing.assert_array_equal(series.isel(frame=1, y=slice(2, 4)).values, frames[1][2:4])
    assert ds.attrs["parameters"] == {"cut_off": 0.1, "object_size": 6}
    assert ds.attrs["sampling_nm"] == 2.0
    assert ds.attrs["voltage_kV"] == 300.0
    assert ds.attrs["microscope"] == "Titan"
    assert "holodask_version" in ds.attrs
    pickle.loads(pickle.dumps(series.data))  # lazily readable by other processes


def test_series_as_3d_dataset(tmp_path):
    frames = [_wave((4, 4), k) for k in range(2)]
    path = tmp_path / "res.hdf5"
    with HoloOutputFile(path) as out:
        out.write_dataset("data", frames[0], standard_attrs(sampling_nm=0.5))
        out.write_frames("series", iter(frames), standard_attrs(sampling_nm=0.5), as_dataset=True)
    ds = open_result(path)
    assert isinstance(ds["series"].data, da.Array)
    np.testing.assert_array_equal(ds["series"].values, np.stack(frames))
    np.testing.assert_array_equal(ds["frame"].values, [0, 1])


def test_missing_prefix_names_the_ones_present(written):
    path, _, _ = written
    with pytest.raises(InputFileError, match=r"prefix 'b_'.*'runs/a_'"):
        open_result(path, prefix="b_")
    with pytest.raises(InputFileError, match="does not exist"):
        open_result(path.parent / "nope.hdf5")
    assert result_prefixes(path) == ["runs/a_"]
    (path.parent / "text.hdf5").write_text("no")
    assert result_prefixes(path.parent / "text.hdf5") == []
    with pytest.raises(InputFileError, match="not a readable HDF5 file"):
        open_result(path.parent / "text.hdf5")


def test_describe_result(written):
    path, _, _ = written
    text = describe_result(path, prefix="runs/a_")
    assert "runs/a_data" in text and "6x5" in text and "complex (r/i float32)" in text
    assert "unrelated" in text
    assert "object_size: 6" in text
    assert "5.0000e+00  1.0000e+00  5.0000e-01" in text
    row = [line for line in text.splitlines() if line.strip().startswith("3 ")]
    assert len(row) == 1
    fields = row[0].split()
    assert fields[1:3] == ["1.0000", "2.0000"] and fields[5] == "5.000" and fields[6] == "0.9000"


# -- files written by the reference program -------------------------------------

@pytest.fixture(scope="module")
def reference_result(fe_needle, tmp_path_factory):
    if importlib.util.find_spec("holoaverage") is None:
        pytest.skip("the reference program holoaverage is not installed")
    folder = tmp_path_factory.mktemp("reference")
    obj, ref = fe_needle
    params = {
        "object_names": [obj, obj], "empty_names": [ref], "sideband_pos": [314, 134],
        "sampling": 0.9197516, "voltage": 300, "object_size": 256, "empty_size": 256,
        "filter_func": ["BUTTERWORTH", 14], "cut_off": 0.07,
        "output_name": str(folder / "ref.hdf5"), "output_series": True,
        "output_prefix": "grp/b_",
    }
    (folder / "params.json").write_text(json.dumps(params))
    run = subprocess.run([sys.executable, "-m", "holoaverage", str(folder / "params.json")],
                         capture_output=True, text=True, cwd=folder)
    assert run.returncode == 0, run.stdout + run.stderr
    return folder / "ref.hdf5"


@pytest.mark.reference
def test_open_result_on_reference_file(reference_result):
    path = reference_result
    ds = open_result(path, prefix="grp/b_")
    with h5py.File(path, "r") as f:
        assert isinstance(f["grp"], h5py.Group)
        stored = f["grp/b_data"][()]
        attrs = dict(f["grp/b_data"].attrs)
        np.testing.assert_allclose(ds["series"].values[1], f["grp/b_series/001"][()],
                                   rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(ds["empty"].values, f["grp/b_empty"][()], rtol=1e-6, atol=1e-4)
    assert stored.dtype == np.complex128  # the reference stores <c16
    assert ds["data"].dtype == np.complex64
    np.testing.assert_allclose(ds["data"].values, stored, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(np.diff(ds["x"].values), 0.9197516 * 2)
    assert ds.sizes["frame"] == 2 and ds.sizes["y"] == 256
    np.testing.assert_array_equal(ds["factor"].values, attrs["factor"])
    np.testing.assert_array_equal(ds["shift_nm"].values, attrs["shift(nm)"])
    np.testing.assert_array_equal(ds["error"].values, attrs["error"])
    np.testing.assert_array_equal(ds["convergence"].values, attrs["convergence"])
    assert ds.attrs["parameters"]["sideband_pos"] == [314, 134]
    assert ds.attrs["voltage_kV"] == 300.0
    assert ds.attrs["reconstructionMaskType"] == ["BUTTERWORTH", "14"]
    np.testing.assert_allclose(ds.attrs["reconstructionCutOff2(nm2)"], np.eye(2) * 0.0049)
    assert isinstance(ds["series"].data, da.Array)
    text = describe_result(path, prefix="grp/b_")
    assert "holoaverage_version: 1.1" in text and "complex (r/i float64)" in text
