"""Image-series containers: TIFF, image-files YAML, frame caches, HDF5 series; ``convert``.

Every container read here is written directly with tifffile/numpy/yaml/h5py,
never with holodask.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import yaml

from holodask.cli import main
from holodask.errors import DataError, InputFileError, ParameterError
from holodask.io import open_source
from holodask.io.imagefiles import check_lossless_cast
from holodask.io.imageseries import write_frame_cache, write_hdf5_series

RNG = np.random.default_rng(20240611)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def read_all(source):
    return np.stack([source.read_frame(i) for i in range(source.n_frames)])


def write_yaml(path: Path, document) -> Path:
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def stack(n, shape=(6, 7), dtype=np.uint16, high=1000):
    return RNG.integers(0, high, size=(n, *shape)).astype(dtype)


# --------------------------------------------------------------------------- TIFF


def test_tiff_single_and_multi_frame(tmp_path):
    frames = stack(4)
    tifffile.imwrite(tmp_path / "one.tif", frames[0])
    tifffile.imwrite(tmp_path / "many.tiff", frames, photometric="minisblack")
    one = open_source(str(tmp_path / "one.tif"))
    many = open_source(str(tmp_path / "many.tiff"))
    assert (one.n_frames, one.shape, one.dtype) == (1, (6, 7), np.uint16)
    assert (many.n_frames, many.shape, many.dtype) == (4, (6, 7), np.uint16)
    np.testing.assert_array_equal(one.read_frame(0), frames[0])
    np.testing.assert_array_equal(read_all(many), frames)
    np.testing.assert_array_equal(read_all(pickle.loads(pickle.dumps(many))), frames)
    with pytest.raises(IndexError):
        many.read_frame(4)


def test_tiff_several_series_and_imagej_calibration(tmp_path):
    frames = stack(3, dtype=np.float32)
    with tifffile.TiffWriter(tmp_path / "parts.tif") as writer:
        writer.write(frames[:2], photometric="minisblack")
        writer.write(frames[2])
    parts = open_source(str(tmp_path / "parts.tif"))
    np.testing.assert_array_equal(read_all(parts), frames)
    tifffile.imwrite(
        tmp_path / "ij.tif", frames, imagej=True, resolution=(1 / 0.025, 1 / 0.025),
        metadata={"unit": "um"},
    )
    assert open_source(str(tmp_path / "ij.tif")).metadata.sampling_nm == pytest.approx(25.0)


def test_tiff_rgb_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputFileError, match="rgb.tif.*grey-scale"):
        open_source(str(tmp_path / "rgb.tif"))


# --------------------------------------------------------------------------- image-files


@pytest.fixture
def image_folder(tmp_path):
    """Single-frame files f_2, f_10, f_1 (sorted: f_1, f_10, f_2) and a 5-frame stack."""
    folder = tmp_path / "frames"
    folder.mkdir()
    singles = {name: stack(1)[0] for name in ("f_2", "f_10", "f_1")}
    for name, frame in singles.items():
        tifffile.imwrite(folder / f"{name}.tif", frame)
    multi = stack(5)
    tifffile.imwrite(folder / "multi.tif", multi, photometric="minisblack")
    return folder, singles, multi


def test_image_files_globs_sorted_and_relative_directory(tmp_path, image_folder):
    folder, singles, multi = image_folder
    spec = write_yaml(
        tmp_path / "series.yml",
        {"image-files": {"directory": "frames", "files": "f_*.tif multi.tif"}, "meta": {}},
    )
    source = open_source(str(spec))
    expected = np.stack([singles["f_1"], singles["f_10"], singles["f_2"], *multi])
    assert source.n_frames == 8 and source.shape == (6, 7) and source.dtype == np.uint16
    np.testing.assert_array_equal(read_all(source), expected)
    np.testing.assert_array_equal(read_all(pickle.loads(pickle.dumps(source))), expected)
    # explicit type on a file with another extension
    other = tmp_path / "list.txt"
    other.write_text(spec.read_text())
    np.testing.assert_array_equal(read_all(open_source(f"{other}?type=image-files")), expected)


def test_image_files_empty_and_max_frames(tmp_path, image_folder):
    folder, singles, multi = image_folder
    base = {"image-files": {"directory": str(folder), "files": "f_1.tif multi.tif multi.tif"}}
    doc = dict(base, options={"empty-frames": 2})
    source = open_source(str(write_yaml(tmp_path / "a.yml", doc)))
    # the single-frame file keeps its frame; each multi-frame file loses its first two
    np.testing.assert_array_equal(read_all(source), np.stack([singles["f_1"], *multi[2:], *multi[2:]]))

    doc = dict(base, options={"empty-frames": 1, "max-file-frames": 2})
    source = open_source(str(write_yaml(tmp_path / "b.yml", doc)))
    np.testing.assert_array_equal(read_all(source), np.stack([singles["f_1"], *multi[1:3], *multi[1:3]]))

    doc = dict(base, options={"empty-frames": 1, "max-total-frames": 4})
    source = open_source(str(write_yaml(tmp_path / "c.yml", doc)))
    np.testing.assert_array_equal(read_all(source), np.stack([singles["f_1"], *multi[1:4]]))

    # options at the top level, as older files write them
    doc = dict(base, **{"max-total-frames": 2})
    source = open_source(str(write_yaml(tmp_path / "d.yml", doc)))
    np.testing.assert_array_equal(read_all(source), np.stack([singles["f_1"], multi[0]]))

    doc = dict(base, options={"empty-frames": 5})
    with pytest.raises(InputFileError, match="multi.tif: empty-frames is 5"):
        open_source(str(write_yaml(tmp_path / "e.yml", doc)))


def test_image_files_dtype_conversion(tmp_path):
    small = RNG.integers(0, 256, size=(2, 4, 4)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "small.tif", small, photometric="minisblack")
    large = small.copy()
    large[1, 2, 3] = 300
    tifffile.imwrite(tmp_path / "large.tif", large, photometric="minisblack")
    fractional = small.astype(np.float32)
    tifffile.imwrite(tmp_path / "whole.tif", fractional, photometric="minisblack")
    fractional[0, 0, 0] = 1.5
    tifffile.imwrite(tmp_path / "fraction.tif", fractional, photometric="minisblack")

    def source(files, dtype):
        doc = {"image-files": {"directory": ".", "files": files}, "options": {"dtype": dtype}}
        return open_source(str(write_yaml(tmp_path / "s.yml", doc)))

    converted = source("small.tif", "uint8")
    assert converted.dtype == np.uint8
    frames = read_all(converted)
    assert frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, small)
    widened = read_all(source("small.tif", "float64"))
    assert widened.dtype == np.float64
    np.testing.assert_array_equal(widened, small)
    whole = read_all(source("whole.tif", "int16"))
    assert whole.dtype == np.int16
    np.testing.assert_array_equal(whole, small)

    truncating = source("large.tif", "uint8")
    np.testing.assert_array_equal(truncating.read_frame(0), small[0])
    with pytest.raises(InputFileError, match=r"large.tif \(frame 1.*uint8 would truncate"):
        truncating.read_frame(1)
    with pytest.raises(InputFileError, match=r"fraction.tif \(frame 0.*int16 would truncate"):
        source("fraction.tif", "int16").read_frame(0)
    with pytest.raises(InputFileError, match="'dtype'"):
        source("small.tif", "not-a-type")


@pytest.mark.parametrize(
    "values, dtype, ok",
    [
        ([0, 255], np.uint8, True),
        ([0, 256], np.uint8, False),
        ([-1, 3], np.uint16, False),
        ([2.0, -7.0], np.int8, True),
        ([2.5, 1.0], np.int32, False),
        ([np.nan, 1.0], np.int32, False),
        ([1e39, 1.0], np.float32, False),  # float64 beyond float32's range
        ([np.inf, 1.5], np.float32, True),  # infinite stays infinite
        ([2**24 + 1, 0], np.float32, False),  # int64 not exactly representable
        ([1 + 0j, 2 + 0j], np.float32, True),
        ([1 + 1j, 2 + 0j], np.float32, False),
    ],
)
def test_check_lossless_cast(values, dtype, ok):
    frame = np.array(values)
    if ok:
        converted = check_lossless_cast(frame, dtype, "f")
        assert converted.dtype == dtype
        expected = (frame.real if np.iscomplexobj(frame) else frame).astype(dtype)
        np.testing.assert_array_equal(converted, expected)
    else:
        with pytest.raises(InputFileError, match=f"f: dtype {np.dtype(dtype)} would truncate"):
            check_lossless_cast(frame, dtype, "f")


def test_image_files_metadata_and_reader_options(tmp_path):
    frames = stack(3, dtype=np.float32)
    with h5py.File(tmp_path / "a.h5", "w") as h5:
        h5["data"] = frames[:2]
    tifffile.imwrite(tmp_path / "b.tif", frames[2])
    np.save(tmp_path / "angle.npy", np.array([0.5, 1.5, 2.5]))
    doc = {
        "image-files": {"directory": ".", "files": ["b.tif"]},
        "metadata": {
            "sampling_nm": 0.125, "voltage": 300, "detector": "K3", "note": "test",
            "angle": "! load-numpy-array angle.npy", "laser": [1, 0, 1],
        },
    }
    # metadata from 'meta' (the 'metadata' spelling too); lists of n_frames are per-frame
    source = open_source(str(write_yaml(tmp_path / "m.yml", dict(doc, **{"image-files": {
        "directory": ".", "files": "b.tif b.tif b.tif"}}))))
    meta = source.metadata
    assert (meta.sampling_nm, meta.voltage_kV, meta.detector) == (0.125, 300.0, "K3")
    assert meta.extra == {"note": "test"}
    coords = source.frame_coords()
    np.testing.assert_array_equal(coords["angle"], [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(coords["laser"], [1, 0, 1])
    doc["image-files"] = {"directory": ".", "files": ["a.h5?dataset=data", "b.tif"]}
    source = open_source(str(write_yaml(tmp_path / "h.yml", doc)))
    np.testing.assert_array_equal(read_all(source), frames)


def test_image_files_bad_lists(tmp_path, image_folder):
    folder, _, _ = image_folder
    cases = {
        "no-match": ({"image-files": {"directory": str(folder), "files": "g_*.tif"}}, "pattern 'g_\\*.tif' matches no file"),
        "missing": ({"image-files": {"directory": str(folder), "files": "nope.tif"}}, "nope.tif not found"),
        "no-dir": ({"image-files": {"directory": "absent", "files": "x.tif"}}, "directory .*absent does not exist"),
        "option": ({"image-files": {"directory": str(folder), "files": "f_1.tif"}, "options": {"empty": 1}}, "unknown option"),
        "shape": ({"image-files": {"directory": str(tmp_path), "files": "frames/f_1.tif odd.tif"}}, "odd.tif: frames are \\(3, 3\\)"),
    }
    tifffile.imwrite(tmp_path / "odd.tif", np.zeros((3, 3), np.uint16))
    for name, (doc, message) in cases.items():
        with pytest.raises(InputFileError, match=message):
            open_source(str(write_yaml(tmp_path / f"{name}.yml", doc)))
    write_yaml(tmp_path / "neither.yaml", {"something": 1})
    with pytest.raises(InputFileError, match="neither an image-files list .* nor a frame cache"):
        open_source(str(tmp_path / "neither.yaml"))
    (tmp_path / "broken.yml").write_text("image-files: [unclosed\n")
    with pytest.raises(InputFileError, match="broken.yml: not valid YAML"):
        open_source(str(tmp_path / "broken.yml"))


# --------------------------------------------------------------------------- frame cache


def sparse_frames(n=3, shape=(8, 9), dtype=np.float32):
    frames = np.zeros((n, *shape), dtype)
    mask = RNG.random((n, *shape)) < 0.05
    frames[mask] = RNG.uniform(5, 100, size=mask.sum())
    return frames


def npz_arrays(frames):
    arrays = {}
    for i, frame in enumerate(frames):
        rows, cols = np.nonzero(frame)
        arrays[f"{i}_row"], arrays[f"{i}_col"], arrays[f"{i}_data"] = rows, cols, frame[rows, cols]
    return arrays


def test_frame_cache_npz(tmp_path):
    frames = sparse_frames()
    np.savez_compressed(
        tmp_path / "cache.npz", shape=np.array(frames.shape[1:]), nframes=len(frames),
        dtype=np.array(str(frames.dtype).encode()), sampling_nm=0.2, voltage_kV=200.0,
        angle=np.array([1.0, 2.0, 3.0]), **npz_arrays(frames),
    )
    source = open_source(str(tmp_path / "cache.npz"))
    assert (source.n_frames, source.shape, source.dtype) == (3, (8, 9), np.float32)
    np.testing.assert_array_equal(read_all(source), frames)
    assert (source.metadata.sampling_nm, source.metadata.voltage_kV) == (0.2, 200.0)
    np.testing.assert_array_equal(source.frame_coords()["angle"], [1.0, 2.0, 3.0])
    copy = tmp_path / "cache.bin"
    copy.write_bytes((tmp_path / "cache.npz").read_bytes())
    np.testing.assert_array_equal(read_all(open_source(f"{copy}?type=frame-cache")), frames)
    np.testing.assert_array_equal(read_all(pickle.loads(pickle.dumps(source))), frames)


def test_frame_cache_reads_only_that_frames_arrays(tmp_path, monkeypatch):
    frames = sparse_frames(4)
    np.savez(tmp_path / "c.npz", shape=np.array(frames.shape[1:]), nframes=4,
             dtype=np.array("float32"), **npz_arrays(frames))
    source = open_source(str(tmp_path / "c.npz"))
    accessed = []
    original = np.lib.npyio.NpzFile.__getitem__

    def spy(self, key):
        accessed.append(key)
        return original(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", spy)
    np.testing.assert_array_equal(source.read_frame(2), frames[2])
    assert sorted(accessed) == ["2_col", "2_data", "2_row"]


def test_frame_cache_yaml(tmp_path):
    frames = sparse_frames(dtype=np.uint16)
    np.savez(tmp_path / "arrays.npz", **npz_arrays(frames))
    np.save(tmp_path / "angle.npy", np.array([10.0, 20.0, 30.0]))
    doc = {
        "data": {"file": "arrays.npz", "dtype": "uint16", "nframes": 3, "shape": [8, 9]},
        "meta": {"sampling": 0.5, "angle": "! load-numpy-array angle.npy", "microscope": "Titan"},
    }
    for name in ("cache.yml", "cache.yaml"):
        source = open_source(str(write_yaml(tmp_path / name, doc)))
        assert source.dtype == np.uint16
        np.testing.assert_array_equal(read_all(source), frames)
        assert (source.metadata.sampling_nm, source.metadata.microscope) == (0.5, "Titan")
        np.testing.assert_array_equal(source.frame_coords()["angle"], [10.0, 20.0, 30.0])
    other = tmp_path / "cache.cfg"
    other.write_text((tmp_path / "cache.yml").read_text())
    np.testing.assert_array_equal(read_all(open_source(f"{other}?type=frame-cache")), frames)
    doc["data"]["nframes"] = 4
    with pytest.raises(InputFileError, match="lacks array '3_data'"):
        open_source(str(write_yaml(tmp_path / "bad.yml", doc)))
    del doc["data"]["shape"]
    with pytest.raises(InputFileError, match="'data' lacks shape"):
        open_source(str(write_yaml(tmp_path / "bad.yml", doc)))


# --------------------------------------------------------------------------- writers


def test_write_hdf5_series_layout(tmp_path):
    frames = stack(3, shape=(10, 12), dtype=np.int32)
    path = tmp_path / "out.h5"
    with h5py.File(path, "w") as h5:
        h5["keep/me"] = np.arange(3)
        h5["series/images"] = np.zeros(1)
        h5["series/run1/images"] = np.zeros(1)  # replaced, with the whole group
        h5["series/run1/old"] = np.zeros(1)
    count = write_hdf5_series(
        (f for f in frames), path, "/series/run1", gzip=6, shuffle=False, chunk_rows=4,
        metadata={"sampling_nm": 0.3, "detector": "cam", "angle": np.array([1.0, 2.0, 3.0]),
                  "binning": None},
    )
    assert count == 3
    with h5py.File(path, "r") as h5:
        np.testing.assert_array_equal(h5["keep/me"][()], np.arange(3))
        assert h5["series/images"].shape == (1,)  # beside the new group: kept
        group = h5["series/run1"]
        images = group["images"]
        assert sorted(group) == ["angle", "images"]
        assert images.shape == (3, 10, 12) and images.dtype == np.int32
        assert images.chunks == (1, 4, 12)
        assert (images.compression, images.compression_opts, images.shuffle) == ("gzip", 6, False)
        np.testing.assert_array_equal(images[()], frames)
        assert dict(group.attrs) == {"sampling_nm": 0.3, "detector": "cam"}
        np.testing.assert_array_equal(group["angle"][()], [1.0, 2.0, 3.0])
    # defaults: gzip 1, shuffle, all rows per chunk
    write_hdf5_series(frames, path, "plain")
    with h5py.File(path, "r") as h5:
        images = h5["plain/images"]
        assert images.chunks == (1, 10, 12)
        assert (images.compression, images.compression_opts, images.shuffle) == ("gzip", 1, True)
        assert "series/run1/images" in h5
    write_hdf5_series(frames.astype(np.float32), path, "raw", gzip=0)
    with h5py.File(path, "r") as h5:
        assert h5["raw/images"].compression is None and h5["raw/images"].dtype == np.float32


def test_writers_refuse_and_leave_no_partial_file(tmp_path):
    frames = stack(3)
    path = tmp_path / "out.h5"
    with pytest.raises(ParameterError, match="gzip.*0 to 9, got 10"):
        write_hdf5_series(frames, path, "g", gzip=10)
    assert not path.exists()
    with h5py.File(path, "w") as h5:
        h5["old"] = np.arange(2)
    before = path.read_bytes()

    def failing():
        yield frames[0]
        yield frames[1]
        raise DataError("reader failed")

    with pytest.raises(DataError, match="reader failed"):
        write_hdf5_series(failing(), path, "g")
    with pytest.raises(DataError, match="frame 1 has shape"):
        write_hdf5_series([frames[0], frames[1, :3]], path, "g")
    with pytest.raises(DataError):
        write_frame_cache(failing(), tmp_path / "c.npz", 10)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_write_frame_cache_npz_layout_and_threshold(tmp_path):
    frames = stack(3, shape=(20, 20), dtype=np.uint16, high=50)
    frames[0][frames[0] < 49] = 0  # sparse; frames 1 and 2 stay dense
    path = tmp_path / "cache.npz"
    with pytest.warns(UserWarning, match=r"less than 90 % empty.*: 1, 2$"):
        write_frame_cache(iter(frames), path, threshold=20, metadata={"voltage_kV": 300.0, "laser": [0, 1, 1]})
    with np.load(path) as npz:
        keys = set(npz.files)
        expected = {f"{i}_{k}" for i in range(3) for k in ("row", "col", "data")}
        assert keys == expected | {"shape", "nframes", "dtype", "voltage_kV", "laser"}
        assert npz["shape"].tolist() == [20, 20] and int(npz["nframes"]) == 3
        assert str(npz["dtype"]) == "uint16"
        assert npz["1_data"].dtype == np.uint16 and npz["1_row"].dtype == np.uint16
        assert float(npz["voltage_kV"]) == 300.0
        np.testing.assert_array_equal(npz["laser"], [0, 1, 1])
        for i in range(3):
            rebuilt = np.zeros((20, 20), np.uint16)
            rebuilt[npz[f"{i}_row"], npz[f"{i}_col"]] = npz[f"{i}_data"]
            np.testing.assert_array_equal(rebuilt, np.where(frames[i] > 20, frames[i], 0))
    source = open_source(str(path))
    np.testing.assert_array_equal(read_all(source), np.where(frames > 20, frames, 0))
    assert source.metadata.voltage_kV == 300.0


def test_write_frame_cache_yaml_form(tmp_path):
    frames = sparse_frames()
    path = tmp_path / "cache.yml"
    write_frame_cache(frames, path, 0.0, output_yaml=True, metadata={"sampling_nm": 0.1, "angle": np.arange(3.0)})
    document = yaml.safe_load(path.read_text())
    assert document == {
        "data": {"file": "cache.npz", "dtype": "float32", "nframes": 3, "shape": [8, 9]},
        "meta": {"sampling_nm": 0.1, "angle": [0.0, 1.0, 2.0]},
    }
    with np.load(tmp_path / "cache.npz") as npz:
        assert set(npz.files) == {f"{i}_{k}" for i in range(3) for k in ("row", "col", "data")}
    source = open_source(str(path))
    np.testing.assert_array_equal(read_all(source), frames)
    np.testing.assert_array_equal(source.frame_coords()["angle"], [0.0, 1.0, 2.0])
    with pytest.raises(ParameterError, match="must be a .yml or .yaml file"):
        write_frame_cache(frames, tmp_path / "x.npz", 0, output_yaml=True)


# --------------------------------------------------------------------------- convert


def test_convert_to_hdf5_round_trip_with_metadata(tmp_path, capsys):
    frames = stack(4, shape=(9, 11), dtype=np.float32)
    tifffile.imwrite(tmp_path / "in.tif", frames, photometric="minisblack")
    spec = write_yaml(tmp_path / "in.yml", {
        "image-files": {"directory": ".", "files": "in.tif"},
        "meta": {"sampling_nm": 0.05, "voltage_kV": 300, "angle": [0.0, 0.5, 1.0, 1.5]},
    })
    out = tmp_path / "out.h5"
    code = main(["convert", str(spec), str(out), "--format", "hdf5", "--path", "a/b",
                 "--gzip", "4", "--no-shuffle", "--chunk-rows", "3"])
    assert code == 0
    assert "wrote 4 frames" in capsys.readouterr().out
    with h5py.File(out, "r") as h5:
        images = h5["a/b/images"]
        np.testing.assert_array_equal(images[()], frames)
        assert images.dtype == np.float32 and images.chunks == (1, 3, 11)
        assert (images.compression, images.compression_opts, images.shuffle) == ("gzip", 4, False)
        assert h5["a/b"].attrs["sampling_nm"] == 0.05 and h5["a/b"].attrs["voltage_kV"] == 300.0
        np.testing.assert_array_equal(h5["a/b/angle"][()], [0.0, 0.5, 1.0, 1.5])
    back = open_source(f"{out}?path=a/b")
    np.testing.assert_array_equal(read_all(back), frames)
    assert back.metadata.sampling_nm == 0.05


def test_convert_to_frame_cache_round_trip(tmp_path):
    frames = stack(3, shape=(16, 16), dtype=np.uint16, high=100)
    frames[frames < 95] = 0
    tifffile.imwrite(tmp_path / "in.tif", frames, photometric="minisblack")
    out = tmp_path / "out.npz"
    assert main(["convert", str(tmp_path / "in.tif"), str(out), "--threshold", "96"]) == 0
    expected = np.where(frames > 96, frames, 0)
    np.testing.assert_array_equal(read_all(open_source(str(out))), expected)
    with np.load(out) as npz:
        assert str(npz["dtype"]) == "uint16" and npz["shape"].tolist() == [16, 16]
    yml = tmp_path / "out.yml"
    assert main(["convert", str(tmp_path / "in.tif"), str(yml), "--format", "frame-cache",
                 "--threshold", "96", "--output-yaml"]) == 0
    np.testing.assert_array_equal(read_all(open_source(str(yml))), expected)


def test_convert_hdf5_series_to_frame_cache_carries_metadata(tmp_path):
    frames = stack(4, shape=(12, 10), dtype=np.int16, high=60)
    with h5py.File(tmp_path / "in.h5", "w") as h5:
        group = h5.create_group("scan/holograms")
        group["images"] = frames
        group["angle"] = np.array([0.0, 1.0, 2.0, 3.0])
        group.attrs["sampling_nm"] = 0.04
        group.attrs["voltage_kV"] = 200.0
        group.attrs["detector"] = "OneView"
    out = tmp_path / "cache.npz"
    assert main(["convert", f"{tmp_path / 'in.h5'}?path=scan/holograms", str(out),
                 "--format", "frame-cache", "--threshold", "30"]) == 0
    with np.load(out) as npz:
        assert float(npz["sampling_nm"]) == 0.04 and float(npz["voltage_kV"]) == 200.0
        assert str(npz["detector"]) == "OneView" and str(npz["dtype"]) == "int16"
        np.testing.assert_array_equal(npz["angle"], [0.0, 1.0, 2.0, 3.0])
    back = open_source(str(out))
    np.testing.assert_array_equal(read_all(back), np.where(frames > 30, frames, 0))
    assert back.metadata.sampling_nm == 0.04 and back.metadata.detector == "OneView"
    # and back into an HDF5 series: frame cache -> hdf5 keeps values and metadata
    assert main(["convert", str(out), str(tmp_path / "again.h5"), "--path", "s"]) == 0
    again = open_source(f"{tmp_path / 'again.h5'}?path=s")
    np.testing.assert_array_equal(read_all(again), np.where(frames > 30, frames, 0))
    assert (again.metadata.sampling_nm, again.metadata.voltage_kV) == (0.04, 200.0)
    np.testing.assert_array_equal(again.frame_coords()["angle"], [0.0, 1.0, 2.0, 3.0])


def test_convert_bad_options_exit_1_without_output(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "in.tif", stack(1)[0])
    out = tmp_path / "out.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "holodask", "convert", str(tmp_path / "in.tif"), str(out),
         "--format", "hdf5", "--path", "g", "--gzip", "10"],
        capture_output=True, text=True, cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "holodask: error: --gzip: compression level must be from 0 to 9, got 10"
    assert "Traceback" not in proc.stderr
    for argv, message in [
        (["--format", "hdf5"], "--path: the HDF5 group to write is required"),
        (["--format", "frame-cache"], "--threshold: required"),
        (["--path", "g", "--threshold", "1"], "--threshold applies only to --format frame-cache"),
        (["--format", "frame-cache", "--threshold", "1", "--gzip", "2"], "--gzip applies only"),
    ]:
        assert main(["convert", str(tmp_path / "in.tif"), str(out), *argv]) == 1
        assert message in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.tif"), str(out), "--path", "g"]) == 1
    assert "missing.tif: file not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


# --------------------------------------------------------------------------- real files


def test_image_files_of_real_dm_files_and_convert(tmp_path, dm_dir):
    stack_file = dm_dir / "3D_test-1.dm3"
    if not stack_file.exists():
        pytest.skip(f"{stack_file} is absent")
    dm_stack = open_source(str(stack_file))
    expected = read_all(dm_stack)
    assert expected.shape[0] > 1
    spec = write_yaml(tmp_path / "dm.yml", {
        "image-files": {"directory": str(dm_dir), "files": "3D_test-1.d?3"},
        "options": {"empty-frames": 1},
    })
    listed = open_source(str(spec))
    assert listed.dtype == dm_stack.dtype and listed.metadata.sampling_nm == dm_stack.metadata.sampling_nm
    np.testing.assert_array_equal(read_all(listed), expected[1:])
    out = tmp_path / "dm.h5"
    assert main(["convert", str(stack_file), str(out), "--path", "dm"]) == 0
    with h5py.File(out, "r") as h5:
        np.testing.assert_array_equal(h5["dm/images"][()], expected)
        assert h5["dm/images"].dtype == expected.dtype
        # nothing invented: the stack carries no calibration, its title is not carried
        assert "sampling_nm" not in h5["dm"].attrs and dm_stack.metadata.sampling_nm is None
        assert sorted(h5["dm"]) == ["images"]


def test_image_files_take_calibration_from_the_files(tmp_path, dm_dir):
    dm_file = dm_dir / "2D_multi_signal.dm3"
    if not dm_file.exists():
        pytest.skip(f"{dm_file} is absent")
    spec = write_yaml(tmp_path / "one.yml", {
        "image-files": {"directory": str(dm_dir), "files": "2D_multi_signal.dm3 2D_multi_signal.dm3"},
    })
    listed = open_source(str(spec))
    assert listed.n_frames == 2
    assert listed.metadata.sampling_nm == pytest.approx(0.01775, rel=1e-3)
    assert listed.metadata.voltage_kV == pytest.approx(300.0)
    spec = write_yaml(tmp_path / "two.yml", {
        "image-files": {"directory": str(dm_dir), "files": "2D_multi_signal.dm3"},
        "meta": {"sampling_nm": 0.02},
    })
    assert open_source(str(spec)).metadata.sampling_nm == 0.02
