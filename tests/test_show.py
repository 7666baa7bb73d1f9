"""`holodask show` draws a result; its phase panel holds the phase of `data`."""

import numpy as np
import pytest

from holodask.cli import main
from holodask.io.holo_hdf5 import HoloOutputFile
from holodask.quicklook import render_result
from holodask.results import open_result


@pytest.fixture()
def result_file(tmp_path):
    y, x = np.mgrid[-32:32, -32:32]
    phase = 2.5 * np.exp(-(x**2 + y**2) / 200.0) + 0.02 * x  # wraps nowhere, but has structure
    wave = ((1 + 0.1 * np.cos(x / 5.0)) * np.exp(1j * phase)).astype(np.complex64)
    n = 5
    attrs = {
        "dim_scale": [0.5, 0.5],
        "dim_unit": ["nm", "nm"],
        "shift(nm)": np.c_[np.linspace(0, 1, n), np.linspace(0, -2, n)],
        "defocus(nm)": np.zeros(n),
        "factor": np.exp(1j * np.linspace(0, 1, n)).astype(np.complex64),
        "error": np.linspace(1, 2, n),
        "convergence": [10.0, 3.0, 1.0],
    }
    path = tmp_path / "result.hdf5"
    with HoloOutputFile(path) as out:
        out.write_dataset("data", wave, attrs=attrs)
        out.write_dataset("variance", np.full(wave.shape, 0.01, np.float32))
    return path, wave


def test_phase_panel_holds_the_phase_of_data(result_file):
    path, wave = result_file
    with open_result(path) as result:
        fig = render_result(result)
    panels = {ax.get_title(): ax for ax in fig.axes}
    shown = np.asarray(panels["data: phase (wrapped)"].images[0].get_array())
    np.testing.assert_allclose(shown, np.angle(wave), atol=1e-6)
    amplitude = np.asarray(panels["data: amplitude"].images[0].get_array())
    np.testing.assert_allclose(amplitude, np.abs(wave), rtol=1e-6)
    unwrapped = np.asarray(panels["data: phase (unwrapped)"].images[0].get_array())
    # unwrapping differs from the wrapped phase by whole turns only
    turns = (unwrapped - np.angle(wave)) / (2 * np.pi)
    np.testing.assert_allclose(turns, np.round(turns), atol=1e-6)
    assert "convergence" in panels and "shift (nm)" in panels
    # the image extent is in nm from dim_scale: 64 px x 0.5 nm
    left, right, _, _ = panels["data: amplitude"].images[0].get_extent()
    assert right - left == pytest.approx(32.0)


def test_show_command_writes_a_png(result_file, tmp_path, capsys):
    path, _ = result_file
    png = tmp_path / "look.png"
    assert main(["show", str(path), "--png", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert str(png) in capsys.readouterr().out


def test_show_missing_file_is_one_clear_error(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nope.hdf5")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("holodask: error:") and "nope.hdf5" in err and "Traceback" not in err
