"""QPImage / QPSeries export at the end of ``holodask run`` (``output_qpimage``), read with qpimage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import constants

h5py = pytest.importorskip("h5py")
json5 = pytest.importorskip("json5")
qpimage = pytest.importorskip("qpimage")

from holodask.cli import main  # noqa: E402
from holodask.results import open_result  # noqa: E402
from holodask.simulate import simulate_series  # noqa: E402

SIZE_PX = 128
OBJECT_SIZE = 48
SAMPLING_NM = 0.5
VOLTAGE_KV = 300.0


def _wavelength_m(voltage_kV: float) -> float:
    """Relativistic electron wavelength, from CODATA constants."""
    energy_J = voltage_kV * 1e3 * constants.e
    momentum = np.sqrt(2 * constants.m_e * energy_J * (1 + energy_J / (2 * constants.m_e * constants.c**2)))
    return constants.h / momentum


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qpimage_run")
    series = simulate_series(folder, n_frames=3, size_px=SIZE_PX, object_size_px=OBJECT_SIZE,
                             sampling_nm=SAMPLING_NM, voltage_kV=VOLTAGE_KV, seed=2,
                             biprism_phase_jitter_rad=2.0)
    params = json5.loads(Path(series.params_path).read_text())
    params["path"] = str(folder)
    return folder, params


def _run(folder: Path, name: str, params: dict) -> int:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(params))
    return main(["run", str(path)])


def _check_qpimage(qpi, wave: np.ndarray) -> None:
    np.testing.assert_allclose(qpi.amp, np.abs(wave), rtol=1e-5, atol=1e-6)
    # the phase is the data's, modulo 2 pi ...
    wrapped = np.angle(np.exp(1j * (qpi.pha - np.angle(wave))))
    np.testing.assert_allclose(wrapped, 0.0, atol=1e-4)
    # ... and unwrapped: no jump between neighbours reaches pi
    assert np.abs(np.diff(qpi.pha, axis=0)).max() < np.pi
    assert np.abs(np.diff(qpi.pha, axis=1)).max() < np.pi
    assert qpi.meta["wavelength"] == pytest.approx(_wavelength_m(VOLTAGE_KV), rel=1e-6)
    assert qpi.meta["pixel size"] == pytest.approx(SIZE_PX * SAMPLING_NM / OBJECT_SIZE * 1e-9, rel=1e-6)
    assert qpi.meta["medium index"] == 1.0


def test_run_writes_a_qpimage(simulated):
    folder, params = simulated
    params = dict(params, output_name="avg.hdf5", output_qpimage="avg_qpi.h5")
    assert _run(folder, "avg", params) == 0
    result = open_result(folder / "avg.hdf5")
    assert result.attrs["sampling_nm"] == pytest.approx(SIZE_PX * SAMPLING_NM / OBJECT_SIZE)
    with qpimage.QPImage(h5file=folder / "avg_qpi.h5", h5mode="r") as qpi:
        _check_qpimage(qpi, result["data"].values)
        assert qpi.shape == (OBJECT_SIZE, OBJECT_SIZE)


def test_run_with_output_series_writes_a_qpseries_and_the_average(simulated):
    folder, params = simulated
    params = dict(params, output_name="series.hdf5", output_series=True, output_qpimage="out/series_qps.h5")
    (folder / "out").mkdir()
    assert _run(folder, "series", params) == 0
    result = open_result(folder / "series.hdf5")
    with qpimage.QPSeries(h5file=folder / "out" / "series_qps.h5", h5mode="r") as qps:
        assert len(qps) == 3
        # the biprism phase jitter puts some frames across +-pi: their phase needs unwrapping
        jumps = [np.abs(np.diff(np.angle(result["series"][k].values), axis=0)).max() for k in range(3)]
        wrapped_frames = [k for k in range(3) if jumps[k] > np.pi]
        assert wrapped_frames, "no frame crosses +-pi; the unwrapping goes untested"
        for k in range(3):
            _check_qpimage(qps.get_qpimage(k), result["series"].isel(frame=k).values)
    with qpimage.QPImage(h5file=folder / "out" / "series_qps_average.h5", h5mode="r") as qpi:
        _check_qpimage(qpi, result["data"].values)


def test_export_command_on_a_run_result(simulated, capsys):
    folder, params = simulated
    params = dict(params, output_name="plain.hdf5")
    assert _run(folder, "plain", params) == 0
    assert not list(folder.glob("plain*.h5"))  # no export without output_qpimage
    assert main(["export", str(folder / "plain.hdf5"), "--qpimage", str(folder / "plain_qpi.h5")]) == 0
    assert "plain_qpi.h5" in capsys.readouterr().out
    with qpimage.QPImage(h5file=folder / "plain_qpi.h5", h5mode="r") as qpi:
        _check_qpimage(qpi, open_result(folder / "plain.hdf5")["data"].values)


@pytest.mark.parametrize("extra, message", [
    ({"only_align": True}, "output_qpimage: needs an averaged object wave"),
    ({"output_qpimage": "bad.hdf5"}, "would overwrite the output file"),
    ({"output_qpimage": "missing/q.h5"}, "folder"),
    ({"voltage": None}, "output_qpimage: the wavelength needs the voltage"),
])
def test_bad_output_qpimage_stops_before_the_run(simulated, extra, message, capsys):
    folder, params = simulated
    params = {**params, "output_name": "bad.hdf5", "output_qpimage": "bad_qpi.h5", **extra}
    assert _run(folder, "bad", params) == 1
    err = capsys.readouterr().err
    assert err.startswith("holodask: error: ") and message in err, err
    assert not (folder / "bad.hdf5").exists() and not (folder / "bad_qpi.h5").exists()
