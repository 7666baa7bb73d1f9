"""open_series / open_frames: laziness, coordinates, parameters, mismatched frames."""

from __future__ import annotations

import collections
import pickle

import dask
import h5py
import numpy as np
import pytest

from holodask.errors import InputFileError, ParameterError
from holodask.io import FrameMetadata, FrameSource, register_reader
from holodask.params import HoloParams, SeriesSpec
from holodask.series import open_frames, open_series

#: (path, frame) -> how often the counting reader read that frame
READS: collections.Counter = collections.Counter()


@register_reader("counted")
class CountingSource(FrameSource):
    """Test reader: a file ``name.counted`` holding ``frames=`` frames of 3 x 4."""

    @property
    def n_frames(self):
        return int(self.spec.options.get("frames", 1))

    @property
    def shape(self):
        return (3, int(self.spec.options.get("width", 4)))

    @property
    def dtype(self):
        return np.dtype(self.spec.options.get("dtype", "float32"))

    @property
    def metadata(self):
        return FrameMetadata(sampling_nm=0.5, voltage_kV=300.0, binning=2,
                             microscope="Sim", detector="Cam")

    def frame_coords(self):
        return {"angle": np.arange(self.n_frames) * 10.0}

    def read_frame(self, index):
        READS[(str(self.spec.path), index)] += 1
        value = float(self.spec.options.get("base", 0)) + index
        return np.full(self.shape, value, dtype=self.dtype)


@pytest.fixture
def counted_files(tmp_path):
    READS.clear()
    for name in ("a.counted", "b.counted"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_nothing_is_read_before_compute_and_each_frame_once(counted_files):
    a = f"{counted_files / 'a.counted'}?frames=3&base=0"
    b = f"{counted_files / 'b.counted'}?frames=2&base=100"
    series = open_series([a, b])
    assert series.shape == (5, 3, 4) and series.dtype == np.float32
    assert series.data.chunks == ((1,) * 5, (3,), (4,))
    subset = series.sel(frame=[1, 3]).mean(("y", "x"))
    assert sum(READS.values()) == 0
    np.testing.assert_array_equal(subset.values, [1.0, 100.0])
    assert sum(READS.values()) == 2
    READS.clear()
    values = series.values
    assert dict(READS) == {(str(counted_files / "a.counted"), i): 1 for i in range(3)} | {
        (str(counted_files / "b.counted"), i): 1 for i in range(2)
    }
    np.testing.assert_array_equal(values[:, 0, 0], [0, 1, 2, 100, 101])


def test_series_is_picklable_and_computes_after_unpickling(counted_files):
    series = open_series(f"{counted_files / 'a.counted'}?frames=2&base=7")
    clone = pickle.loads(pickle.dumps(series))
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(clone.values[:, 0, 0], [7, 8])


def test_coordinates_and_attributes(counted_files):
    series = open_series(
        [f"{counted_files / 'a.counted'}?frames=2", f"{counted_files / 'b.counted'}?frames=1"],
        indices=[4, 5, 7],
    )
    np.testing.assert_array_equal(series.frame.values, [4, 5, 7])
    np.testing.assert_array_equal(series.angle.values, [0.0, 10.0, 0.0])
    np.testing.assert_array_equal(series.defocus_nm.values, [0.0, 0.0, 0.0])
    np.testing.assert_allclose(series.x.values, [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(series.y.values, [0.0, 0.5, 1.0])
    assert series.attrs["sampling_nm"] == 0.5
    assert series.attrs["voltage_kV"] == 300.0
    assert series.attrs["binning"] == 2
    assert series.attrs["microscope"] == "Sim" and series.attrs["detector"] == "Cam"
    assert "a.counted" in series.attrs["source"] and "2 files" in series.attrs["source"]
    assert sum(READS.values()) == 0


def test_params_override_calibration_and_give_defocus(counted_files):
    params = HoloParams(sampling_nm=0.25, voltage_kV=200.0, binning=1,
                        defocus_first_nm=-100.0, defocus_step_nm=20.0)
    series = open_series(f"{counted_files / 'a.counted'}?frames=3", params, indices=[1, 2, 4])
    assert (series.attrs["sampling_nm"], series.attrs["voltage_kV"], series.attrs["binning"]) == (
        0.25, 200.0, 1)
    np.testing.assert_allclose(series.x.values, np.arange(4) * 0.25)
    # the reference program: defocus = index * defocus_step + defocus_first
    np.testing.assert_allclose(series.defocus_nm.values, [-80.0, -60.0, -20.0])


def test_wrong_number_of_indices(counted_files):
    with pytest.raises(ParameterError, match="expected 3 values"):
        open_series(f"{counted_files / 'a.counted'}?frames=3", indices=[0, 1])


@pytest.mark.parametrize("option, word", [("width=5", "shape"), ("dtype=int16", "pixel type")])
def test_mismatched_frames_name_the_file(counted_files, option, word):
    good = f"{counted_files / 'a.counted'}?frames=1"
    bad = f"{counted_files / 'b.counted'}?frames=1&{option}"
    with pytest.raises(InputFileError, match=rf"b\.counted.*{word}.*first file .*a\.counted"):
        open_series([good, bad])


def test_empty_spec_list():
    with pytest.raises(InputFileError, match="no input files"):
        open_series([])


def test_open_frames_from_series_spec(counted_files):
    spec = SeriesSpec(
        specs=(f"{counted_files / 'a.counted'}?frames=1&base=3",
               f"{counted_files / 'b.counted'}?frames=2&base=10"),
        indices=(2, 5),
    )
    series = open_frames(spec)
    np.testing.assert_array_equal(series.frame.values, [2, 5, 6])
    np.testing.assert_array_equal(series.values[:, 0, 0], [3, 10, 11])


def test_series_of_hdf5_files_reads_real_pixels(tmp_path):
    frames = np.random.default_rng(0).integers(0, 9, size=(3, 4, 5)).astype(np.int64)
    specs = []
    for k in range(3):
        path = tmp_path / f"holo_{k}.h5"
        with h5py.File(path, "w") as h5:
            h5["data"] = frames[k]
        specs.append(f"holo_{k}.h5?dataset=data")
    series = open_series(specs, basepath=tmp_path)
    assert series.dtype == np.int64
    np.testing.assert_array_equal(series.values, frames)
    np.testing.assert_array_equal(series.isel(frame=2).values, frames[2])
