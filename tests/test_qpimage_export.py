"""QPImage / QPSeries export, checked by opening the files with qpimage itself."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from holodask.cli import main
from holodask.constants import electron_wavelength_nm
from holodask.errors import ParameterError
from holodask.io.holo_hdf5 import HoloOutputFile, standard_attrs
from holodask.io.qpimage_export import average_path, export_qpimage

qpimage = pytest.importorskip("qpimage", reason="the qpimage library is needed to read exports")

SAMPLING_NM = 0.5
SHAPE = (32, 40)


def _wave(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A wave whose phase ramps over several multiples of 2 pi, and that phase."""
    y, x = np.mgrid[: SHAPE[0], : SHAPE[1]]
    phase = 0.35 * x + 0.2 * y + 0.1 * seed + 0.3
    amplitude = 1.0 + 0.2 * np.cos(x / 5.0 + seed)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64), phase


@pytest.fixture()
def result_file(tmp_path):
    path = tmp_path / "res.hdf5"
    attrs = standard_attrs(sampling_nm=SAMPLING_NM, voltage_kV=300.0)
    waves = [_wave(k)[0] for k in range(3)]
    with HoloOutputFile(path) as out:
        out.write_dataset("data", _wave(0)[0], attrs)
        out.write_frames("series", iter(waves), attrs)
    return path, waves


def _wrapped(phase):
    return np.angle(np.exp(1j * phase))


def test_electron_wavelength():
    # h / sqrt(2 m0 e U (1 + eU / 2 m0 c^2)): 1.9687 pm at 300 kV, 2.5079 pm at 200 kV
    assert electron_wavelength_nm(300) == pytest.approx(1.96875e-3, rel=1e-5)
    assert electron_wavelength_nm(200) == pytest.approx(2.50793e-3, rel=1e-5)
    with pytest.raises(ParameterError, match="voltage"):
        electron_wavelength_nm(0)


def test_average_unwrapped(result_file, tmp_path, capsys):
    path, _ = result_file
    wave, phase = _wave(0)
    out = tmp_path / "avg.h5"
    assert main(["export", str(path), "--qpimage", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    with qpimage.QPImage(h5file=out, h5mode="r") as qpi:
        np.testing.assert_allclose(qpi.amp, np.abs(wave), rtol=1e-6)
        pha = qpi.pha
        # unwrapped: equals the wrapped phase + 2 pi k per pixel, and is continuous
        k = (pha - np.angle(wave)) / (2 * np.pi)
        np.testing.assert_allclose(k, np.round(k), atol=1e-4)
        assert np.ptp(pha) > 4 * np.pi
        np.testing.assert_allclose(pha - pha[0, 0], phase - phase[0, 0], atol=1e-4)
        assert qpi.meta["wavelength"] == pytest.approx(1.96875e-12, rel=1e-5)
        assert qpi.meta["pixel size"] == pytest.approx(SAMPLING_NM * 1e-9)
        assert qpi.meta["medium index"] == 1.0
        assert qpi["identifier"] == "holodask:res.hdf5:data"
    with h5py.File(out, "r") as f:
        for group in ("amplitude", "phase"):
            assert f[group]["raw"].dtype == np.float32
            assert isinstance(f[group]["bg_data"], h5py.Group)


def test_average_no_unwrap(result_file, tmp_path):
    path, _ = result_file
    wave, phase = _wave(0)
    out = tmp_path / "avg.h5"
    assert main(["export", str(path), "--qpimage", str(out), "--no-unwrap"]) == 0
    with qpimage.QPImage(h5file=out, h5mode="r") as qpi:
        pha = qpi.pha
        assert pha.min() >= -np.pi - 1e-6 and pha.max() <= np.pi + 1e-6
        np.testing.assert_allclose(np.exp(1j * pha), np.exp(1j * phase), atol=1e-5)


def test_series(result_file, tmp_path):
    path, waves = result_file
    out = tmp_path / "series.h5"
    written = export_qpimage(path, out, series=True)
    assert written == [out, average_path(out)]
    assert average_path(out).name == "series_average.h5"
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["qpi_0", "qpi_1", "qpi_2"]
    with qpimage.QPSeries(h5file=out, h5mode="r") as qps:
        assert len(qps) == 3
        for k, wave in enumerate(waves):
            qpi = qps[k]
            np.testing.assert_allclose(qpi.amp, np.abs(wave), rtol=1e-6)
            true_phase = _wave(k)[1]
            np.testing.assert_allclose(qpi.pha - qpi.pha[0, 0], true_phase - true_phase[0, 0],
                                       atol=1e-4)
            assert qpi.meta["wavelength"] == pytest.approx(1.96875e-12, rel=1e-5)
            assert qpi.meta["pixel size"] == pytest.approx(SAMPLING_NM * 1e-9)
            assert qpi["identifier"] == f"holodask:res.hdf5:series:{k}"
    with qpimage.QPImage(h5file=average_path(out), h5mode="r") as qpi:
        np.testing.assert_allclose(qpi.amp, np.abs(_wave(0)[0]), rtol=1e-6)


def test_missing_data_or_series_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "empty_only.hdf5"
    with HoloOutputFile(path) as out:
        out.write_dataset("empty", _wave(0)[0], standard_attrs(sampling_nm=1.0, voltage_kV=300))
    out = tmp_path / "x.h5"
    assert main(["export", str(path), "--qpimage", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("holodask: error:") and "'data'" in err and "Traceback" not in err
    assert main(["export", str(path), "--qpimage", str(out), "--series"]) == 1
    assert "no series" in capsys.readouterr().err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty_only.hdf5"]


def test_missing_voltage_needs_option(tmp_path, capsys):
    path = tmp_path / "res.hdf5"
    with HoloOutputFile(path) as out:
        out.write_dataset("data", _wave(0)[0], standard_attrs(sampling_nm=1.0))
    out = tmp_path / "x.h5"
    assert main(["export", str(path), "--qpimage", str(out)]) == 1
    assert "--voltage" in capsys.readouterr().err
    assert main(["export", str(path), "--qpimage", str(out), "--voltage", "200"]) == 0
    with qpimage.QPImage(h5file=out, h5mode="r") as qpi:
        assert qpi.meta["wavelength"] == pytest.approx(2.50793e-12, rel=1e-5)
