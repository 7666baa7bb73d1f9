"""HyperSpy interop through RosettaSciIO: ``.hspy`` holograms in, ``.hspy`` waves out.

A simulated series is written as HyperSpy signals with RosettaSciIO (a stack
of object holograms and a stack of empty holograms, signal_type "hologram",
nm axes and beam energy); ``holodask run`` on them must give the result of the
simulator's own files, and ``holodask export --hspy`` must give files that
RosettaSciIO (and HyperSpy, where installed) reads as complex signals with nm
axes and the voltage.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import json5
import numpy as np
import pytest

from holodask.cli import main
from holodask.io.registry import open_source
from holodask.results import open_result
from holodask.simulate import simulate_series

N_FRAMES = 4
SIZE_PX = 128


def hologram_signal(frames: np.ndarray, sampling_nm: float, voltage_kV: float | None, title: str,
                    time_step_s: float | None = None) -> dict:
    """A RosettaSciIO signal dictionary of a hologram stack (or one hologram)."""
    axes = []
    if frames.ndim == 3:
        axes.append({"name": "time" if time_step_s else "frame", "size": frames.shape[0],
                     "scale": time_step_s or 1.0, "offset": 0.0,
                     "units": "s" if time_step_s else "", "navigate": True})
    axes += [{"name": name, "size": frames.shape[k], "scale": sampling_nm, "offset": 0.0,
              "units": "nm", "navigate": False} for k, name in ((-2, "y"), (-1, "x"))]
    metadata = {"General": {"title": title}, "Signal": {"signal_type": "hologram"}}
    if voltage_kV is not None:
        metadata["Acquisition_instrument"] = {"TEM": {"beam_energy": voltage_kV,
                                                      "Biprism": {"voltage": 120.0}}}
    return {"data": frames, "axes": axes, "metadata": metadata, "original_metadata": {},
            "tmp_parameters": {}, "attributes": {"_lazy": False}, "learning_results": {},
            "models": {}, "package_info": {}}


def write_hspy(path: Path, signal: dict) -> Path:
    from rsciio.hspy import file_writer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        file_writer(str(path), signal, show_progressbar=False)
    return path


def _frames(specs) -> np.ndarray:
    out = []
    for spec in specs:
        with h5py.File(spec.partition("?")[0], "r") as f:
            out.append(f["hologram"][()])
    return np.stack(out)


@pytest.fixture(scope="module")
def hspy_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hspy")
    series = simulate_series(folder / "sim", n_frames=N_FRAMES, size_px=SIZE_PX, object_size_px=48,
                             dose_e_per_px=300.0, drift_step_px=1.0, n_empty=2, seed=3)
    objects, empties = _frames(series.object_specs), _frames(series.empty_specs)
    write_hspy(folder / "object.hspy", hologram_signal(objects, series.sampling_nm, series.voltage_kV,
                                                       "object holograms", time_step_s=2.5))
    write_hspy(folder / "empty.hspy", hologram_signal(empties, series.sampling_nm, series.voltage_kV,
                                                      "empty holograms"))
    params = json5.loads(Path(series.params_path).read_text())
    baseline = dict(params, path=str(series.outdir), output_name=str(folder / "baseline.hdf5"))
    (folder / "baseline.json").write_text(json.dumps(baseline))
    assert main(["run", str(folder / "baseline.json")]) == 0
    # the .hspy run: no sampling or voltage in the parameters, no dataset= in the names
    hspy = {k: v for k, v in params.items()
            if not k.startswith(("object_", "empty_")) and k not in ("sampling", "voltage")}
    hspy.update(object_names="object.hspy", empty_names="empty.hspy", object_size=params["object_size"],
                empty_size=params.get("empty_size", params["object_size"]), output_series=True,
                path=str(folder), output_name=str(folder / "from_hspy.hdf5"))
    (folder / "from_hspy.json").write_text(json.dumps(hspy))
    return folder, series, objects


def test_hspy_stack_opens_with_calibration(hspy_series):
    folder, series, objects = hspy_series
    source = open_source(folder / "object.hspy")
    assert source.n_frames == N_FRAMES
    assert source.shape == (SIZE_PX, SIZE_PX)
    assert source.dtype == objects.dtype
    assert source.metadata.sampling_nm == pytest.approx(series.sampling_nm)
    assert source.metadata.voltage_kV == pytest.approx(series.voltage_kV)
    assert source.metadata.extra["signal_type"] == "hologram"
    np.testing.assert_array_equal(source.read_frame(2), objects[2])
    np.testing.assert_allclose(source.frame_coords()["time_s"], [0.0, 2.5, 5.0, 7.5])


def test_run_on_hspy_matches_the_simulator_files(hspy_series):
    folder, series, _ = hspy_series
    assert main(["run", str(folder / "from_hspy.json")]) == 0
    result = open_result(folder / "from_hspy.hdf5").load()
    baseline = open_result(folder / "baseline.hdf5").load()
    scale = float(np.mean(np.abs(baseline["data"].values)))
    assert float(np.max(np.abs(result["data"].values - baseline["data"].values))) <= 1e-5 * scale
    # sampling and voltage came from the .hspy axes and metadata (none in the parameters)
    assert result.attrs["sampling_nm"] == pytest.approx(baseline.attrs["sampling_nm"])
    assert result.attrs["voltage_kV"] == pytest.approx(series.voltage_kV)
    assert result.sizes["frame"] == N_FRAMES


def test_info_describes_a_hyperspy_hologram(hspy_series, capsys):
    folder, series, _ = hspy_series
    assert main(["info", str(folder / "object.hspy")]) == 0
    out = capsys.readouterr().out
    assert "reader:     HspySource" in out
    assert f"frames:     {N_FRAMES}" in out
    assert "dtype:      uint16" in out
    assert "sampling:   0.5 nm/px" in out
    assert "voltage:    300 kV" in out
    assert "signal_type 'hologram'" in out
    assert "biprism:    120 V" in out
    assert "result file" not in out.lower() and "complex" not in out


def test_export_hspy_reads_back_as_complex_with_nm_axes(hspy_series):
    from rsciio.hspy import file_reader

    folder, series, _ = hspy_series
    result_path = folder / "from_hspy.hdf5"
    if not result_path.exists():
        assert main(["run", str(folder / "from_hspy.json")]) == 0
    result = open_result(result_path).load()
    out = folder / "wave.hspy"
    assert main(["export", str(result_path), "--hspy", str(out)]) == 0
    (signal,) = file_reader(str(out))
    assert signal["data"].dtype == np.complex64
    np.testing.assert_array_equal(signal["data"], result["data"].values)
    assert [a["units"] for a in signal["axes"]] == ["nm", "nm"]
    assert [a["navigate"] for a in signal["axes"]] == [False, False]
    sampling = float(result["x"].values[1] - result["x"].values[0])
    assert signal["axes"][1]["scale"] == pytest.approx(sampling)
    assert signal["axes"][0]["offset"] == pytest.approx(float(result["y"].values[0]))
    assert signal["metadata"]["Acquisition_instrument"]["TEM"]["beam_energy"] == pytest.approx(300.0)
    assert signal["metadata"]["Signal"]["signal_type"] == ""
    holodask_meta = signal["original_metadata"]["holodask"]
    np.testing.assert_allclose(np.asarray(holodask_meta["shift_nm"]), result["shift_nm"].values)
    # the series: a stack along a navigation axis "frame", the average beside it
    stack = folder / "stack.hspy"
    assert main(["export", str(result_path), "--hspy", str(stack), "--series"]) == 0
    (frames,) = file_reader(str(stack))
    assert frames["data"].shape == (N_FRAMES, *result["data"].shape)
    assert [a["navigate"] for a in frames["axes"]] == [True, False, False]
    assert frames["axes"][0]["name"] == "frame"
    np.testing.assert_array_equal(frames["data"][1], result["series"].values[1])
    (average,) = file_reader(str(folder / "stack_average.hspy"))
    np.testing.assert_array_equal(average["data"], result["data"].values)
    # and the exported stack opens through holodask's registry again, calibrated
    source = open_source(stack)
    assert source.n_frames == N_FRAMES and source.dtype == np.complex64
    assert source.metadata.sampling_nm == pytest.approx(sampling)


def test_export_hspy_opens_in_hyperspy(hspy_series):
    hs = pytest.importorskip("hyperspy.api")
    folder, series, _ = hspy_series
    result_path = folder / "from_hspy.hdf5"
    if not result_path.exists():
        assert main(["run", str(folder / "from_hspy.json")]) == 0
    out = folder / "for_hyperspy.hspy"
    assert main(["export", str(result_path), "--hspy", str(out)]) == 0
    signal = hs.load(str(out))
    assert type(signal).__name__ == "ComplexSignal2D"
    assert signal.axes_manager[0].units == "nm"
    assert signal.metadata.Acquisition_instrument.TEM.beam_energy == pytest.approx(300.0)
    wave = open_result(result_path)["data"].values
    np.testing.assert_allclose(signal.phase.data, np.angle(wave), atol=1e-6)


def test_real_hyperspy_hdf5_opens_without_dataset(fe_needle):
    object_spec, _ = fe_needle
    path = object_spec.partition("?")[0]
    plain, explicit = open_source(path), open_source(object_spec)
    assert type(plain).__name__ == "HspySource" and type(explicit).__name__ == "HDF5Source"
    assert plain.metadata.sampling_nm == pytest.approx(0.9197516441345215)
    assert plain.metadata.voltage_kV == pytest.approx(300.0)
    assert plain.dtype == np.int64 and plain.shape == (512, 512)
    np.testing.assert_array_equal(plain.read_frame(0), explicit.read_frame(0))


def test_info_on_real_hyperspy_hologram(fe_needle, capsys):
    path = fe_needle[0].partition("?")[0]
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "Hologram of Fe needle (signal_type 'hologram')" in out
    assert "dtype:      int64" in out and "voltage:    300 kV" in out
    assert "datasets:" not in out


def test_real_pair_runs_without_dataset(fe_needle, tmp_path):
    """The real HyperSpy-layout pair named without ``dataset=`` gives the result of the explicit specs."""
    object_spec, reference_spec = fe_needle
    results = []
    for name, names in (("explicit", (object_spec, reference_spec)),
                        ("plain", tuple(spec.partition("?")[0] for spec in (object_spec, reference_spec)))):
        params = {"object_names": [names[0]], "empty_names": [names[1]], "sideband_pos": [314, 134],
                  "object_size": 256, "cut_off": 0.07, "filter_func": ["BUTTERWORTH", 14],
                  "output_name": str(tmp_path / f"{name}.hdf5")}
        (tmp_path / f"{name}.json").write_text(json.dumps(params))
        assert main(["run", str(tmp_path / f"{name}.json")]) == 0
        results.append(open_result(tmp_path / f"{name}.hdf5").load())
    np.testing.assert_array_equal(results[1]["data"].values, results[0]["data"].values)
    assert results[1].attrs["voltage_kV"] == pytest.approx(300.0)
    assert results[1].attrs["sampling_nm"] == pytest.approx(results[0].attrs["sampling_nm"])
