"""File readers on real files and on files written here: DM, HDF5, raw, spec parsing."""

from __future__ import annotations

import pickle
import warnings

import h5py
import numpy as np
import pytest

from holodask.errors import InputFileError
from holodask.io import open_source, parse_spec
from holodask.io.calibration import length_to_nm
from holodask.io.raw import parse_dtype
from holodask.series import open_series

DM_TYPES = {  # file number -> dtype RosettaSciIO reads
    1: "int16", 2: "float32", 3: "complex64", 5: "complex64", 6: "uint8", 7: "int32",
    9: "int8", 10: "uint16", 11: "uint32", 12: "float64", 13: "complex128", 14: "bool",
}
RGB_NUMBERS = (8, 23)


def _rsciio_image(path):
    from rsciio.digitalmicrograph import file_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = file_reader(str(path))
    return [s for s in signals if s["data"].ndim >= 2][0]["data"]


# ---------------------------------------------------------------- DM
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("number", sorted(DM_TYPES))
def test_dm_every_pixel_type_matches_rsciio(dm_dir, dims, number):
    path = dm_dir / f"{dims}D_test-{number}.dm3"
    source = open_source(str(path))
    expected = np.asarray(_rsciio_image(path))
    assert source.dtype == np.dtype(DM_TYPES[number])
    frames = np.stack([source.read_frame(i) for i in range(source.n_frames)])
    assert source.n_frames == (1 if dims == 2 else expected.shape[0])
    assert frames.dtype == expected.dtype
    np.testing.assert_array_equal(frames.reshape(expected.shape), expected)


@pytest.mark.parametrize("number", [1, 2, 10, 12])
def test_dm4_matches_rsciio(dm_dir, number):
    path = dm_dir / f"2D_test-{number}.dm4"
    source = open_source(str(path))
    np.testing.assert_array_equal(source.read_frame(0), _rsciio_image(path))


@pytest.mark.parametrize("name", [f"2D_test-{n}.dm3" for n in RGB_NUMBERS]
                         + [f"3D_test-{n}.dm3" for n in RGB_NUMBERS])
def test_dm_rgb_is_read_as_grey(dm_dir, name):
    source = open_source(str(dm_dir / name))
    rgb = np.asarray(_rsciio_image(dm_dir / name))
    rgb = rgb.reshape((-1, *rgb.shape[-2:]))
    assert source.dtype == np.float32
    for k in range(source.n_frames):
        expected = 0.299 * rgb[k]["R"] + 0.587 * rgb[k]["G"] + 0.114 * rgb[k]["B"]
        np.testing.assert_allclose(source.read_frame(k), expected, rtol=1e-6)


def test_dm_multi_signal_calibration(dm_dir):
    source = open_source(str(dm_dir / "2D_multi_signal.dm3"))
    assert source.n_frames == 1 and source.shape == (512, 512)
    assert source.dtype == np.uint16
    assert source.metadata.sampling_nm == pytest.approx(0.01775, abs=5e-6)
    assert source.metadata.voltage_kV == pytest.approx(300.0)
    assert source.metadata.microscope == "FEI Tecnai Remote"
    np.testing.assert_array_equal(source.read_frame(0), _rsciio_image(dm_dir / "2D_multi_signal.dm3"))


def test_dm_micrometre_stack_is_three_frames_in_nm(dm_dir):
    path = dm_dir / "test_stackbuilder_imagestack.dm3"
    series = open_series(str(path))
    assert series.shape == (3, 2, 16)
    assert series.attrs["sampling_nm"] == pytest.approx(59.98290330171585)
    np.testing.assert_allclose(series.x.values, np.arange(16) * 59.98290330171585)
    np.testing.assert_array_equal(series.values, _rsciio_image(path))


def test_dm_inverse_length_calibration_needs_sampling(dm_dir):
    path = dm_dir / "2D_test_diffraction_pattern.dm3"
    source = open_source(str(path))
    assert source.metadata.sampling_nm is None
    assert source.metadata.extra["sampling_unit"] == "1/nm"
    with pytest.raises(InputFileError, match=r"2D_test_diffraction_pattern\.dm3.*1/nm"):
        open_series(str(path))

    class Given:
        sampling_nm = 0.5

    assert open_series(str(path), Given()).attrs["sampling_nm"] == 0.5


def test_dm_stem_image_nm_calibration_and_voltage(dm_dir):
    source = open_source(str(dm_dir / "2D_test_STEM_image.dm3"))
    assert source.metadata.sampling_nm == pytest.approx(0.24853801727294922)
    assert source.metadata.voltage_kV == pytest.approx(200.0)


def test_dm_source_is_picklable(dm_dir):
    source = open_source(str(dm_dir / "3D_test-2.dm3"))
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone.read_frame(1), source.read_frame(1))


@pytest.mark.parametrize(
    "scale, unit, nm",
    [(2.0, "nm", 2.0), (0.5, "µm", 500.0), (0.5, "um", 500.0), (3.0, "Å", 0.3),
     (3.0, "A", 0.3), (40.0, "pm", 0.04), (1.0, "1/nm", None), (1.0, "", None), (0.0, "nm", None)],
)
def test_length_units(scale, unit, nm):
    result = length_to_nm(scale, unit)
    assert result == (pytest.approx(nm) if nm is not None else None)


# ---------------------------------------------------------------- HDF5
def test_fe_needle_hyperspy_dataset(fe_needle):
    object_spec, reference_spec = fe_needle
    series = open_series(object_spec)
    assert series.shape == (1, 512, 512) and series.dtype == np.int64
    assert series.attrs["sampling_nm"] == pytest.approx(0.9197516441345215)
    assert series.attrs["voltage_kV"] == pytest.approx(300.0)
    assert series.attrs["microscope"] == "FEI Titan G2 60-300 HOLO at ER-C"
    path = object_spec.partition("?")[0]
    with h5py.File(path, "r") as h5:
        expected = h5["Experiments/Hologram of Fe needle/data"][()]
    np.testing.assert_array_equal(series.values[0], expected)
    assert open_series(reference_spec).attrs["sampling_nm"] == pytest.approx(0.9197516441345215)


def test_hdf5_2d_and_3d_datasets(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(6, 5)).astype(np.float32)
    stack = rng.integers(0, 1000, size=(4, 6, 5)).astype(np.uint16)
    path = tmp_path / "data file.h5"
    with h5py.File(path, "w") as h5:
        h5["one image"] = image
        h5["group/stack"] = stack
        h5["group/stack"].attrs["sampling_nm"] = 0.25
        h5["group/stack"].attrs["voltage_kV"] = 200.0
    single = open_series(f"{path}?dataset=one image")
    assert single.shape == (1, 6, 5) and single.dtype == np.float32
    np.testing.assert_array_equal(single.values[0], image)
    assert single.attrs["sampling_nm"] is None
    series = open_series(f"{path}?dataset=/group/stack")
    assert series.shape == (4, 6, 5) and series.dtype == np.uint16
    np.testing.assert_array_equal(series.values, stack)
    assert series.attrs["sampling_nm"] == 0.25 and series.attrs["voltage_kV"] == 200.0


def test_hdf5_image_series_group(tmp_path):
    stack = np.arange(3 * 4 * 5, dtype=np.int32).reshape(3, 4, 5)
    path = tmp_path / "series.hdf5"
    with h5py.File(path, "w") as h5:
        group = h5.create_group("scan/raw")
        group["images"] = stack
        group["angle"] = np.array([0.0, 0.5, 1.0])
        group["laser"] = np.array([1, 0, 1])
        group["not_per_frame"] = np.arange(7)
        group.attrs.update(sampling_nm=0.1, voltage_kV=300.0, binning=2,
                           microscope="Titan", detector="K2")
    series = open_series(f"{path}?path=scan/raw")
    np.testing.assert_array_equal(series.values, stack)
    np.testing.assert_array_equal(series.angle.values, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(series.laser.values, [1, 0, 1])
    assert "not_per_frame" not in series.coords
    assert series.attrs == {"sampling_nm": 0.1, "voltage_kV": 300.0, "binning": 2,
                            "microscope": "Titan", "detector": "K2",
                            "source": f"{path}?path=scan/raw"}


def test_hdf5_errors_name_file_and_dataset(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as h5:
        h5["line"] = np.arange(5)
        h5["ok"] = np.zeros((2, 2))
    with pytest.raises(InputFileError, match=r"x\.h5.*'missing data'"):
        open_source(f"{path}?dataset=missing data")
    with pytest.raises(InputFileError, match=r"x\.h5.*dataset="):
        open_source(str(path))
    with pytest.raises(InputFileError, match=r"'/line'.*shape \(5,\)"):
        open_source(f"{path}?dataset=line")
    with pytest.raises(InputFileError, match=r"no HDF5 group 'nope'"):
        open_source(f"{path}?path=nope")
    noth5 = tmp_path / "fake.hdf5"
    noth5.write_bytes(b"not an hdf5 file")
    with pytest.raises(InputFileError, match=r"fake\.hdf5: cannot read as HDF5"):
        open_source(f"{noth5}?dataset=ok")


# ---------------------------------------------------------------- raw
@pytest.mark.parametrize("dtype", ["int32", "uint16", "F4", "float64", "complex64", "int8"])
@pytest.mark.parametrize("offset", [0, 17])
@pytest.mark.parametrize("swap", [0, 1])
def test_raw_round_trip(tmp_path, dtype, offset, swap):
    rng = np.random.default_rng(3)
    data = (rng.normal(size=(2, 3, 4)) * 50).astype(parse_dtype(dtype))
    if data.dtype.kind == "c":
        data = data + 1j * np.float32(2.5)
    stored = data.astype(data.dtype.newbyteorder()) if swap else data
    path = tmp_path / "frames.raw"
    path.write_bytes(b"h" * offset + stored.tobytes())
    spec = f"{path}?xsize=4&ysize=3&dtype={dtype}&offset={offset}&swap_bytes={swap}"
    source = open_source(spec)
    assert source.n_frames == 2 and source.shape == (3, 4)
    assert source.dtype == parse_dtype(dtype)
    for k in range(2):
        frame = source.read_frame(k)
        assert frame.dtype.isnative
        np.testing.assert_array_equal(frame, data[k])


def test_raw_swap_bytes_reads_big_endian(tmp_path):
    values = np.array([[1, 256], [65535, 2]], dtype=">u2")
    path = tmp_path / "be.raw"
    path.write_bytes(values.tobytes())
    frame = open_source(f"{path}?xsize=2&ysize=2&dtype=uint16&swap_bytes=1").read_frame(0)
    np.testing.assert_array_equal(frame, [[1, 256], [65535, 2]])
    plain = open_source(f"{path}?xsize=2&ysize=2&dtype=uint16").read_frame(0)
    np.testing.assert_array_equal(plain, [[256, 1], [65535, 512]])


def test_raw_too_short_and_missing_options(tmp_path):
    path = tmp_path / "short.raw"
    path.write_bytes(bytes(100))
    with pytest.raises(InputFileError, match=r"short\.raw.*expected at least 138 bytes.*found 100"):
        open_source(f"{path}?xsize=4&ysize=4&dtype=float64&offset=10")
    with pytest.raises(InputFileError, match=r"short\.raw.*option ysize="):
        open_source(f"{path}?xsize=4&dtype=int8")
    with pytest.raises(InputFileError, match=r"short\.raw.*option dtype="):
        open_source(f"{path}?xsize=4&ysize=4")
    with pytest.raises(InputFileError, match=r"dtype='pixels' is not a numpy type"):
        open_source(f"{path}?xsize=4&ysize=4&dtype=pixels")
    with pytest.raises(InputFileError, match=r"swap_bytes=2 must be 0 or 1"):
        open_source(f"{path}?xsize=4&ysize=4&dtype=int8&swap_bytes=2")


def test_raw_trailing_bytes_warn(tmp_path):
    path = tmp_path / "tail.raw"
    path.write_bytes(bytes(4 * 3 + 2))
    with pytest.warns(UserWarning, match="2 trailing bytes"):
        source = open_source(f"{path}?xsize=2&ysize=2&dtype=uint8")
    assert source.n_frames == 3


# ---------------------------------------------------------------- spec parsing
def test_spec_question_mark_separator_is_deprecated(tmp_path):
    path = tmp_path / "a.raw"
    path.write_bytes(np.arange(6, dtype=np.int16).tobytes())
    with pytest.warns(DeprecationWarning, match="deprecated"):
        source = open_source(f"{path}?xsize=3?ysize=2?dtype=int16")
    np.testing.assert_array_equal(source.read_frame(0), [[0, 1, 2], [3, 4, 5]])


def test_spec_type_override_and_backslashes(tmp_path):
    folder = tmp_path / "sub dir"
    folder.mkdir()
    path = folder / "image.dat"
    path.write_bytes(np.arange(4, dtype=np.uint8).tobytes())
    spec = parse_spec("sub dir\\image.dat?type=raw&xsize=2&ysize=2&dtype=uint8", tmp_path)
    assert spec.type == "raw" and spec.path == path
    assert "type" not in spec.options
    np.testing.assert_array_equal(open_source(spec).read_frame(0), [[0, 1], [2, 3]])
    h5path = folder / "frames.bin"
    with h5py.File(h5path, "w") as h5:
        h5["a b/c d"] = np.ones((2, 3))
    series = open_series("sub dir/frames.bin?type=hdf5&dataset=a b/c d", basepath=tmp_path)
    assert series.shape == (1, 2, 3)


def test_unknown_type_and_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="unknown file type 'xyz'"):
        open_source(str(tmp_path / "a.xyz"))
    with pytest.raises(InputFileError, match=r"nothere\.raw: file not found"):
        open_source(f"{tmp_path / 'nothere.raw'}?xsize=1&ysize=1&dtype=int8")


@pytest.mark.parametrize(
    "text, expected",
    [("int32", "int32"), ("F4", "float32"), ("f8", "float64"), ("complex64", "complex64"),
     ("<u2", "uint16"), ("I2", "int16"), ("U2", "uint16"), ("str", None), ("words", None)],
)
def test_parse_dtype(text, expected):
    assert parse_dtype(text) == (np.dtype(expected) if expected else None)
