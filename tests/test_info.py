"""``holodask info`` and the sideband search."""

from __future__ import annotations

import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from holodask.cli import main
from holodask.errors import DataError
from holodask.sideband import find_sideband

SIDEBAND_LINE = re.compile(r"sideband:\s+\[([-\d.]+), ([-\d.]+)\]")


def _hologram(rows, cols, fx, fy, phase=None):
    yy, xx = np.mgrid[:rows, :cols]
    phase = 0.0 if phase is None else phase
    return 1000.0 * (1.0 + 0.4 * np.cos(2 * np.pi * (fx * xx / cols + fy * yy / rows) + phase))


@pytest.mark.parametrize("fx, fy", [(37.3, -51.6), (-20.0, -30.5), (45.5, 25.25)])
def test_find_sideband_subpixel_on_synthetic_fringes(fx, fy):
    rows, cols = 192, 256
    yy, xx = np.mgrid[:rows, :cols]
    image = _hologram(rows, cols, fx, fy, phase=0.8 * np.exp(-((xx - 120) ** 2 + (yy - 90) ** 2) / 800))
    x, y = find_sideband(image)
    # upper sideband (y < H//2): the carrier itself or its mirror image
    sign = 1 if fy < 0 else -1
    assert x == pytest.approx(cols // 2 + sign * fx, abs=0.15)
    assert y == pytest.approx(rows // 2 + sign * fy, abs=0.15)
    assert y < rows // 2


def test_find_sideband_ignores_strong_centre_band():
    rows = cols = 128
    yy, xx = np.mgrid[:rows, :cols]
    envelope = 5000.0 * np.exp(-((xx - 64) ** 2 + (yy - 64) ** 2) / 2000.0)  # slow intensity
    image = envelope + _hologram(rows, cols, 30, -25) * 0.2
    x, y = find_sideband(image)
    assert (x, y) == (pytest.approx(94, abs=0.1), pytest.approx(39, abs=0.1))


def test_find_sideband_rejects_bad_images():
    with pytest.raises(DataError, match="2-D"):
        find_sideband(np.zeros(10))
    image = _hologram(32, 32, 5, -6)
    image[3, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        find_sideband(image)


def test_info_on_fe_needle_object_with_fft(fe_needle, capsys):
    object_spec, reference_spec = fe_needle
    assert main(["info", object_spec, reference_spec, "--fft"]) == 0
    out = capsys.readouterr().out
    assert out.count("shape:      512 x 512") == 2
    assert "dtype:      int64" in out
    assert "sampling:   0.9197516441 nm/px" in out
    assert "voltage:    300 kV" in out
    assert "microscope: FEI Titan G2 60-300 HOLO at ER-C" in out
    (obj_x, obj_y), (ref_x, ref_y) = [tuple(map(float, m)) for m in SIDEBAND_LINE.findall(out)]
    # the vacuum reference gives the carrier: [314, 134] of the reference program's parameters
    assert np.hypot(ref_x - 314, ref_y - 134) < 1.0
    # the needle's stray field bends the object's fringes: its strongest sideband peak
    # sits at about [315.3, 131.0], 3 px from the carrier (checked by a direct FFT below)
    assert np.hypot(obj_x - 314, obj_y - 134) < 3.5
    with h5py.File(object_spec.partition("?")[0], "r") as h5:
        image = h5["Experiments/Hologram of Fe needle/data"][()].astype(float)
    amplitude = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean())))
    amplitude[256:] = 0
    amplitude[216:297, 216:297] = 0
    peak_y, peak_x = np.unravel_index(np.argmax(amplitude), amplitude.shape)
    assert np.hypot(obj_x - peak_x, obj_y - peak_y) < 1.5


def test_info_cli_subprocess_dm_and_errors(dm_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "holodask", "info", str(dm_dir / "test_stackbuilder_imagestack.dm3")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "frames:     3" in result.stdout
    assert "shape:      2 x 16 (rows x columns)" in result.stdout
    assert "dtype:      uint32" in result.stdout
    assert "sampling:   59.9829033 nm/px" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "holodask", "info", str(tmp_path / "gone.dm3")],
        capture_output=True, text=True, check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"holodask: error: {tmp_path / 'gone.dm3'}: file not found"


def test_info_reports_non_length_unit(dm_dir, capsys):
    assert main(["info", str(dm_dir / "2D_test_diffraction_pattern.dm3")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"sampling:\s+unknown \(0\.1744\d* 1/nm/px is not a length", out)
    assert "voltage:    200 kV" in out


def test_info_raw_file(tmp_path, capsys):
    path = tmp_path / "img.raw"
    path.write_bytes(_hologram(64, 64, 10, -12).astype("<f4").tobytes())
    assert main(["info", f"{path}?xsize=64&ysize=64&dtype=float32", "--fft"]) == 0
    out = capsys.readouterr().out
    assert "sampling:   unknown (give the parameter 'sampling')" in out
    assert "sideband:   [42.0, 20.0]" in out


def test_info_on_a_result_file_prints_the_result_summary(tmp_path, capsys):
    """`holodask info RESULT.hdf5` summarises a result instead of asking for ?dataset=."""
    import numpy as np

    from holodask.cli import main
    from holodask.io.holo_hdf5 import HoloOutputFile

    path = tmp_path / "result.hdf5"
    wave = (np.ones((8, 8)) * np.exp(1j * 0.5)).astype(np.complex64)
    with HoloOutputFile(path, prefix="run1/") as out:
        out.write_dataset("data", wave, attrs={"shift(nm)": np.zeros((3, 2)), "error": [0.1, 0.2, 0.3]})
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "run1/data" in text
    assert "8x8" in text.replace(" x ", "x")
