"""Microscope formats through the reader registry: write a stack, read it back.

Each format is written by the library that can write it — RosettaSciIO (EMD
Berkeley), ``mrcfile`` (MRC), ``tifffile`` (TIFF stacks) — or, where no
available library writes it, laid out byte for byte / dataset for dataset as
the format describes it (Velox EMD, TIA ``.ser``, HyperSpy ``.zspy``: the
installed RosettaSciIO cannot write zspy with zarr 3), and RosettaSciIO's own
reader is checked to read the same frames from those files. The frames,
calibration and per-frame times read through :func:`open_source` must be
those written; a pattern naming several stacks gives each file's frames in
order, numbered on from the first file's index.
"""

from __future__ import annotations

import json
import struct
import warnings

import h5py
import numpy as np
import pytest

from holodask.io.registry import open_source
from holodask.params import load_parameters
from holodask.series import open_frames

RNG = np.random.default_rng(7)
FRAMES = RNG.poisson(400, size=(3, 24, 40)).astype(np.uint16)


def _rsciio_read(module: str, path, **options):
    from importlib import import_module

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return import_module(f"rsciio.{module}").file_reader(str(path), **options)


def _assert_frames(source, frames):
    assert source.n_frames == len(frames)
    assert source.shape == frames.shape[1:]
    for k in range(len(frames)):
        np.testing.assert_array_equal(source.read_frame(k), frames[k])


# ---------------------------------------------------------------- EMD Berkeley


def test_emd_berkeley_stack_written_by_rosettasciio(tmp_path):
    from rsciio.emd import file_writer

    axes = [{"name": "time", "size": 3, "scale": 0.2, "offset": 0.0, "units": "s", "navigate": True},
            {"name": "y", "size": 24, "scale": 0.125, "offset": 0.0, "units": "nm", "navigate": False},
            {"name": "x", "size": 40, "scale": 0.125, "offset": 0.0, "units": "nm", "navigate": False}]
    signal = {"data": FRAMES, "axes": axes, "metadata": {"General": {"title": "holograms"},
                                                         "Signal": {"signal_type": ""}},
              "original_metadata": {}}
    path = tmp_path / "stack.emd"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_writer(str(path), signal)
    source = open_source(path)
    assert type(source).__name__ == "EmdSource"
    _assert_frames(source, FRAMES)
    assert source.dtype == np.uint16
    assert source.metadata.sampling_nm == pytest.approx(0.125)
    np.testing.assert_allclose(source.frame_coords()["time_s"], [0.0, 0.2, 0.4])


# ---------------------------------------------------------------- Velox EMD


def _velox_metadata(frame: int, start_s: float) -> dict:
    return {
        "BinaryResult": {"PixelSize": {"width": "2.5e-10", "height": "2.5e-10"}, "PixelUnitX": "m",
                         "PixelUnitY": "m", "Offset": {"x": "0", "y": "0"}, "DetectorIndex": "0"},
        "Detectors": {"Detector-0": {"DetectorName": "BM-Ceta", "ExposureTime": "0.25"}},
        "Scan": {},
        "Optics": {"AccelerationVoltage": "300000"},
        "Instrument": {"InstrumentClass": "Titan"},
        "Acquisition": {"AcquisitionStartDatetime": {"DateTime": str(int(start_s))}},
        "CustomProperties": {"Detectors[BM-Ceta].TimeStamp": {"type": "double",
                                                             "value": str((start_s + 0.5 * frame) * 1e6)}},
    }


def write_velox(path, frames: np.ndarray, start_s: float) -> None:
    """A Velox EMD file: ``Data/Image/<id>/Data`` (y, x, frame) and one JSON metadata column per frame."""
    texts = [json.dumps(_velox_metadata(k, start_s)).encode() for k in range(len(frames))]
    width = max(len(t) for t in texts) + 16
    metadata = np.zeros((width, len(frames)), dtype=np.uint8)
    for k, text in enumerate(texts):
        metadata[:len(text), k] = np.frombuffer(text, dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=np.array([json.dumps({"format": "Velox", "version": "11"}).encode()]))
        group = f.create_group("Data/Image/6fdbde41eecc4375b45cd86bd2be17c0")
        group.create_dataset("Data", data=np.moveaxis(frames, 0, -1), chunks=(*frames.shape[1:], 1))
        group.create_dataset("Metadata", data=metadata)


def test_velox_stack_frames_calibration_and_times(tmp_path):
    path = tmp_path / "velox.emd"
    start = 1_600_000_000.0
    write_velox(path, FRAMES, start)
    # RosettaSciIO reads this file as a Velox image stack
    (signal,) = _rsciio_read("emd", path, select_type="images")
    np.testing.assert_array_equal(signal["data"], FRAMES)
    source = open_source(path)
    _assert_frames(source, FRAMES)
    assert source.metadata.extra["variant"] == "Velox"
    assert source.metadata.sampling_nm == pytest.approx(0.25)
    assert source.metadata.voltage_kV == pytest.approx(300.0)
    np.testing.assert_allclose(source.frame_coords()["time_s"], start + np.array([0.0, 0.5, 1.0]))


# ---------------------------------------------------------------- MRC


def test_mrc_stack_written_by_mrcfile(tmp_path):
    mrcfile = pytest.importorskip("mrcfile")
    path = tmp_path / "stack.mrc"
    frames = FRAMES.astype(np.float32) / 7
    with mrcfile.new(str(path)) as mrc:
        mrc.set_data(frames)
        mrc.voxel_size = 1.5  # Å
    source = open_source(path)
    assert type(source).__name__ == "MrcSource"
    assert source.dtype == np.float32
    _assert_frames(source, frames)
    assert source.metadata.sampling_nm == pytest.approx(0.15)


# ---------------------------------------------------------------- TIFF stacks


def test_tiff_stack_written_by_tifffile(tmp_path):
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, FRAMES, imagej=True, resolution=(1 / 0.2, 1 / 0.2), metadata={"unit": "nm"})
    source = open_source(path)
    _assert_frames(source, FRAMES)
    assert source.metadata.sampling_nm == pytest.approx(0.2)


# ---------------------------------------------------------------- TIA .ser


def write_ser(path, frames: np.ndarray, pixel_m: float, times_s) -> None:
    """A TIA series file of 2-D elements (series version 0x0210, 4-byte offsets, time tags).

    Each data element is followed by its tag; TIA stores the bottom row first.
    """
    n, rows, cols = frames.shape
    codes = {np.dtype("<u2"): 2, np.dtype("<f4"): 7, np.dtype("<i4"): 6}
    description, units = b"Number", b""
    dimension = struct.pack("<IddII", n, 0.0, 1.0, 0, len(description)) + description + struct.pack(
        "<I", len(units)) + units
    header_size = 30  # 3 shorts, 5 longs (the last: where the offset arrays start), number of dimensions
    offset_array = header_size + len(dimension)
    first_element = offset_array + 8 * n
    element_size = 50 + frames[0].nbytes + 8
    data_offsets = [first_element + k * element_size for k in range(n)]
    tag_offsets = [offset + 50 + frames[0].nbytes for offset in data_offsets]
    head = struct.pack("<HHHIIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, n, n, offset_array) + struct.pack(
        "<I", 1)
    with open(path, "wb") as f:
        f.write(head + dimension)
        f.write(np.asarray(data_offsets + tag_offsets, dtype="<u4").tobytes())
        for k in range(n):
            f.write(struct.pack("<ddIddIHII", 0.0, pixel_m, 0, 0.0, pixel_m, 0, codes[frames.dtype], cols, rows))
            f.write(np.ascontiguousarray(frames[k][::-1]).tobytes())
            f.write(struct.pack("<HHI", 0x4152, 0, int(times_s[k])))


def test_tia_ser_series(tmp_path):
    path = tmp_path / "series_1.ser"
    times = [1_500_000_000, 1_500_000_002, 1_500_000_005]
    write_ser(path, FRAMES, 0.3e-9, times)
    # RosettaSciIO's TIA reader reads the same frames and calibration from this file
    (signal,) = _rsciio_read("tia", path)
    np.testing.assert_array_equal(signal["data"], FRAMES)
    assert signal["axes"][-1]["scale"] == pytest.approx(0.3)
    source = open_source(path)
    assert type(source).__name__ == "SerSource"
    assert source.dtype == np.uint16
    _assert_frames(source, FRAMES)
    assert source.metadata.sampling_nm == pytest.approx(0.3)
    np.testing.assert_array_equal(source.frame_coords()["time_s"], times)


def test_tia_ser_rejects_other_files(tmp_path):
    from holodask.errors import InputFileError

    path = tmp_path / "bad.ser"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(InputFileError, match="not a TIA .ser file"):
        open_source(path)


# ---------------------------------------------------------------- zspy


def write_zspy(path, frames: np.ndarray, sampling_nm: float, voltage_kV: float) -> None:
    """A HyperSpy Zarr store (zspy layout, zarr format 2) of a hologram stack."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.attrs.update({"file_format": "ZSpy", "file_format_version": "3.3"})
    group = root.require_group("Experiments").require_group("holograms")
    group.create_array("data", data=frames, chunks=(1, *frames.shape[1:]))
    axes = [("frame", frames.shape[0], 1.0, "", True), ("y", frames.shape[1], sampling_nm, "nm", False),
            ("x", frames.shape[2], sampling_nm, "nm", False)]
    for k, (name, size, scale, units, navigate) in enumerate(axes):
        group.require_group(f"axis-{k}").attrs.update(
            {"name": name, "size": size, "scale": scale, "offset": 0.0, "units": units, "navigate": navigate})
    metadata = group.require_group("metadata")
    metadata.require_group("General").attrs.update({"title": "holograms"})
    metadata.require_group("Signal").attrs.update({"signal_type": "hologram"})
    metadata.require_group("Acquisition_instrument").require_group("TEM").attrs.update(
        {"beam_energy": voltage_kV})
    for name in ("original_metadata", "learning_results", "attributes"):
        group.require_group(name)


def test_zspy_stack(tmp_path):
    import pickle

    path = tmp_path / "holograms.zspy"
    write_zspy(path, FRAMES, 0.4, 200.0)
    (signal,) = _rsciio_read("zspy", path, mode="r")
    np.testing.assert_array_equal(signal["data"], FRAMES)
    source = open_source(path)
    assert type(source).__name__ == "ZspySource"
    _assert_frames(source, FRAMES)
    assert source.metadata.sampling_nm == pytest.approx(0.4)
    assert source.metadata.voltage_kV == pytest.approx(200.0)
    # a worker process gets the source pickled and reads its frames itself
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(source)).read_frame(2), FRAMES[2])


# ---------------------------------------------------------------- patterns naming stacks


def test_pattern_of_stacks_numbers_frames_file_after_file(tmp_path):
    import tifffile

    stacks = [RNG.poisson(300, size=(n, 16, 16)).astype(np.uint16) for n in (3, 2, 4)]
    for k, stack in enumerate(stacks, start=1):
        tifffile.imwrite(tmp_path / f"object_{k:03d}.tif", stack, photometric="minisblack")
    params = load_parameters({"object_names": "object_%03d.tif", "object_first": 1, "object_last": 3,
                              "object_size": 8, "sideband_pos": [12, 4], "cut_off": 0.1, "sampling": 1.0,
                              "voltage": 300}, basepath=tmp_path)
    series = open_frames(params.object_series, params, basepath=tmp_path)
    np.testing.assert_array_equal(series["frame"].values, np.arange(1, 10))
    np.testing.assert_array_equal(series.values, np.concatenate(stacks))
    # one frame per file: the frames keep their files' numbers (gaps from exclusions too)
    for k in (1, 2, 4):
        tifffile.imwrite(tmp_path / f"single_{k:03d}.tif", stacks[0][0])
    params = load_parameters({"object_names": "single_%03d.tif", "object_first": 1, "object_last": 4,
                              "object_exclude": [3], "object_size": 8, "sideband_pos": [12, 4],
                              "cut_off": 0.1}, basepath=tmp_path)
    series = open_frames(params.object_series, params, basepath=tmp_path)
    np.testing.assert_array_equal(series["frame"].values, [1, 2, 4])


def test_signal_option_picks_a_signal():
    from holodask.errors import InputFileError
    from holodask.io.rsciio_formats import pick_image

    def signal(shape, navigate):
        return {"data": np.zeros(shape, np.float32),
                "axes": [{"navigate": nav, "scale": 1.0, "units": "nm"} for nav in navigate]}

    spectrum = signal((5, 100), (True, False))
    image = signal((8, 9), (False, False))
    stack = signal((3, 8, 9), (True, False, False))
    spectrum_image = signal((8, 9, 100), (True, True, False))
    signals = [spectrum, spectrum_image, image, stack]
    assert pick_image(signals, "f")[0] == 2  # the first image
    assert pick_image(signals, "f", "3")[0] == 3
    with pytest.raises(InputFileError, match="signal 1 .* is not a 2-D image"):
        pick_image(signals, "f", "1")
    with pytest.raises(InputFileError, match="signal=7: the file holds signals 0: "):
        pick_image(signals, "f", "7")
    with pytest.raises(InputFileError, match="holds no 2-D image"):
        pick_image([spectrum, spectrum_image], "f")
