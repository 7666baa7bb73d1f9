"""The public xarray stages: reconstruct, hold, average, find_sideband, the .holo accessor.

They must give the command line's numbers, stay lazy until computed, and carry
nm coordinates.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import holodask
from holodask.cli import main
from holodask.errors import DataError, ParameterError
from holodask.io.holo_hdf5 import read_complex
from simulated import simulated_params


def _simulate(folder: Path, **kwargs):
    defaults = {"n_frames": 5, "size_px": 128, "object_size_px": 64, "seed": 3, "dose_e_per_px": 400.0,
                "drift_step_px": 1.5, "n_empty": 2, "empty_noise_free": False}
    return simulated_params(folder, defaults, **kwargs)


def _cli_data(folder: Path, params: dict, name: str = "cli") -> np.ndarray:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(dict(params, output_name=f"{name}.hdf5")))
    assert main(["run", str(path)]) == 0
    with h5py.File(folder / f"{name}.hdf5", "r") as f:
        return read_complex(f["data"])


def _specs(series):
    return series.object_specs, series.empty_specs


def _relative_difference(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.mean(np.abs(b)))


def test_reconstruct_then_average_equals_the_command_line(tmp_path):
    series, params = _simulate(tmp_path)
    expected = _cli_data(tmp_path, params)
    p = holodask.load_parameters(dict(params))
    objects, empties = _specs(series)
    waves = holodask.reconstruct(holodask.open_series(objects, params=p), params=p,
                                 empty=holodask.open_series(empties, params=p))
    result = holodask.average(waves, params=p)
    assert _relative_difference(result["data"].values, expected) <= 1e-4
    # the stage's defaults are the parameters the waves were made with
    again = holodask.average(waves)
    assert _relative_difference(again["data"].values, expected) <= 1e-4
    assert set(result.data_vars) >= {"data", "variance", "empty", "factor", "shift_nm", "tilt_per_nm",
                                     "defocus_nm", "error", "raw_shift_px", "convergence"}
    cli = holodask.open_result(tmp_path / "cli.hdf5")
    for name in ("shift_nm", "factor", "error", "raw_shift_px", "convergence"):
        np.testing.assert_allclose(result[name].values, cli[name].values, rtol=1e-5, atol=1e-6, err_msg=name)
    # the empty wave's fit was computed with the holograms, once
    assert result["empty"].attrs["hdf5_attrs"]["factor"].shape == (2,)


def test_nothing_is_read_before_compute(tmp_path, monkeypatch):
    import holodask.series as series_module

    series, params = _simulate(tmp_path)
    reads = []
    original = series_module.read_source_frame

    def counting(source, index):
        reads.append((str(source.spec), index))
        return original(source, index)

    monkeypatch.setattr(series_module, "read_source_frame", counting)
    p = holodask.load_parameters(dict(params))
    objects, empties = _specs(series)
    holograms = holodask.open_series(objects, params=p)
    waves = holodask.reconstruct(holograms, params=p, empty=holodask.open_series(empties, params=p))
    phase = waves.holo.phase
    assert reads == []
    import dask.array as da

    for name in ("raw_shift_x_px", "raw_shift_y_px", "saturated_px"):
        assert isinstance(waves.coords[name].data, da.Array), name
    assert waves.attrs["empty"].lazy
    one = phase.isel(frame=2).values
    assert one.shape == (64, 64) and np.isfinite(one).all()
    assert {spec for spec, _ in reads} >= set(objects[:3])


def test_waves_carry_nm_coordinates_and_the_stage_attributes(tmp_path):
    series, params = _simulate(tmp_path, n_frames=3)
    p = holodask.load_parameters(dict(params))
    holograms = holodask.open_series(series.object_specs, params=p)
    assert holograms.x.attrs["units"] == "nm"
    assert float(holograms.x[1] - holograms.x[0]) == pytest.approx(series.sampling_nm)
    waves = holodask.reconstruct(holograms, params=p, empty=False)
    left, top, right, bottom = params["roi"]
    sampling_out = series.sampling_nm * (right - left) / params["object_size"]
    for dim in ("x", "y"):
        assert waves[dim].attrs["units"] == "nm"
        np.testing.assert_allclose(np.diff(waves[dim].values), sampling_out)
    assert waves.dims == ("frame", "y", "x") and waves.dtype == np.complex64
    assert waves.attrs["voltage_kV"] == pytest.approx(series.voltage_kV)
    sy = series.sideband_pos
    expected = ((sy[0] - 128 // 2) / 128 / series.sampling_nm, (sy[1] - 128 // 2) / 128 / series.sampling_nm)
    np.testing.assert_allclose(waves.attrs["carrier_per_nm"], expected)
    assert waves.attrs["cut_off_per_nm"] == pytest.approx(params["cut_off"])
    result = holodask.average(waves)
    assert result.x.attrs["units"] == "nm"
    np.testing.assert_allclose(result.x.values, waves.x.values)
    assert "empty" not in result


def test_keywords_override_the_parameters_with_their_file_names_and_units(tmp_path):
    series, params = _simulate(tmp_path, n_frames=3)
    narrow = dict(params, cut_off=params["cut_off"] * 0.6, filter_func=["BUTTERWORTH", 8])
    expected = _cli_data(tmp_path, narrow, "narrow")
    p = holodask.load_parameters(dict(params))
    objects, empties = _specs(series)
    waves = holodask.reconstruct(holodask.open_series(objects), params=p, empty=holodask.open_series(empties),
                                 cut_off=narrow["cut_off"], filter_func=["BUTTERWORTH", 8])
    assert waves.attrs["cut_off_per_nm"] == pytest.approx(narrow["cut_off"])
    assert _relative_difference(holodask.average(waves)["data"].values, expected) <= 1e-4
    with pytest.raises(ParameterError, match="cut_of.*did you mean 'cut_off'"):
        holodask.reconstruct(holodask.open_series(objects), params=p, cut_of=0.1)
    with pytest.raises(ParameterError, match="object_size"):
        holodask.reconstruct(holodask.open_series(objects), params=p, object_size=-3)


def test_known_raw_shifts_skip_the_alignment_and_give_the_same_waves(tmp_path):
    series, params = _simulate(tmp_path, n_frames=4, drift_step_px=3.0)
    p = holodask.load_parameters(dict(params))
    holograms = holodask.open_series(series.object_specs)
    first = holodask.reconstruct(holograms, params=p, empty=False).compute()
    shifts = np.stack([first.raw_shift_x_px.values, first.raw_shift_y_px.values], axis=1)
    assert np.abs(shifts).max() >= 2  # the series drifts
    second = holodask.reconstruct(holograms, params=p, empty=False, raw_shifts=shifts)
    np.testing.assert_array_equal(second.raw_shift_x_px.values, shifts[:, 0])
    np.testing.assert_array_equal(second.values, first.values)
    aligned = holodask.raw_alignment(holograms, params=p)
    np.testing.assert_array_equal(aligned.values, shifts)


def test_run_without_output_name_computes_in_memory_and_writes_nothing(tmp_path):
    series, params = _simulate(tmp_path, n_frames=3)
    expected = _cli_data(tmp_path, params)
    before = sorted(p.name for p in tmp_path.iterdir())
    in_memory = dict(params, output_series=True)
    del in_memory["output_name"]
    result = holodask.run(in_memory)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert _relative_difference(result["data"].values, expected) <= 1e-4
    assert result["series"].dims == ("frame", "y", "x") and result.sizes["frame"] == 3
    np.testing.assert_allclose(result["series"].x.values, result.x.values)


def test_open_series_resolves_relative_paths_against_the_current_folder(tmp_path, monkeypatch):
    series, params = _simulate(tmp_path, n_frames=2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "params.json").write_text(json.dumps(dict(params, path=str(elsewhere))))
    p = holodask.load_parameters(elsewhere / "params.json")
    assert Path(p.basepath) == elsewhere
    monkeypatch.chdir(tmp_path)
    names = [Path(spec).name for spec in series.object_specs]
    opened = holodask.open_series(names, params=p)
    assert opened.sizes["frame"] == 2
    with pytest.raises(holodask.InputFileError, match="elsewhere"):
        holodask.open_series(names, params=p, basepath=elsewhere)


@pytest.mark.parametrize("carrier", [(40.0, 18.0), (-30.0, 25.0), (37.0, 0.0)])
def test_find_sideband_on_simulated_holograms(tmp_path, carrier):
    series, _ = _simulate(tmp_path, n_frames=1, size_px=256, carrier_px=carrier)
    image = np.asarray(holodask.open_series(series.object_specs[:1])[0].values)
    found = holodask.find_sideband(image, sampling=series.sampling_nm)
    truth = np.asarray(series.sideband_pos, dtype=float)
    conjugate = np.array([256 - truth[0], 256 - truth[1]])
    distance = min(np.hypot(*(np.asarray(found.position) - truth)), np.hypot(*(np.asarray(found.position) - conjugate)))
    assert distance <= 1.5, (found.position, truth)
    assert found.confidence > 0.8
    carrier_per_nm = np.hypot(*carrier) / 256 / series.sampling_nm
    assert found.cut_off == pytest.approx(carrier_per_nm / 3, rel=0.02)
    x, y = found  # unpacks as the position
    assert (x, y) == found.position


def test_find_sideband_has_low_confidence_on_noise_and_smooth_images():
    rng = np.random.default_rng(5)
    for _ in range(3):
        assert holodask.find_sideband(rng.poisson(200.0, (128, 128)).astype(float)).low_confidence
    yy, xx = np.mgrid[:128, :128]
    assert holodask.find_sideband(100 + 0.2 * xx + 50 * np.exp(-((xx - 40) ** 2 + (yy - 70) ** 2) / 900)).low_confidence
    fringes = rng.poisson(200.0 * (1 + 0.1 * np.cos(2 * np.pi * (0.21 * xx + 0.08 * yy))))
    assert not holodask.find_sideband(fringes).low_confidence
    with pytest.raises(DataError):
        holodask.find_sideband(np.zeros((32, 32)))


def test_info_fft_prints_the_sideband_with_its_confidence(tmp_path, capsys):
    series, _ = _simulate(tmp_path, n_frames=1)
    assert main(["info", series.object_specs[0], "--fft"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("sideband"))
    x, y = (float(v) for v in line.split("[")[1].split("]")[0].split(","))
    truth = np.asarray(series.sideband_pos, dtype=float)
    assert min(np.hypot(x - truth[0], y - truth[1]), np.hypot(x - 128 + truth[0], y - 128 + truth[1])) <= 1.5
    assert "confidence 0.9" in line and "LOW" not in line
    # the simulated files carry no pixel size: the fringe spacing instead of a cut-off in 1/nm
    assert "fringe spacing" in line


def test_the_holo_accessor(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    series, params = _simulate(tmp_path, n_frames=2)
    p = holodask.load_parameters(dict(params))
    holograms = holodask.open_series(series.object_specs, params=p)
    waves = holodask.reconstruct(holograms, params=p, empty=False)
    one = waves.isel(frame=0).compute()
    np.testing.assert_allclose(one.holo.phase.values, np.angle(one.values), atol=1e-6)
    np.testing.assert_allclose(one.holo.amplitude.values, np.abs(one.values), rtol=1e-6)
    assert one.holo.phase.attrs["units"] == "rad" and one.holo.phase.x.attrs["units"] == "nm"
    # a phase ramp of several cycles, unwrapped by scikit-image, image by image of a lazy stack
    yy, xx = np.mgrid[:48, :48]
    ramp = 0.4 * xx + 0.25 * yy
    import dask.array as da
    import xarray as xr

    stack = xr.DataArray(da.from_array(np.exp(1j * np.stack([ramp, -ramp])), chunks=(1, 48, 48)),
                         dims=("frame", "y", "x"))
    unwrapped = stack.holo.unwrapped_phase()
    assert isinstance(unwrapped.data, da.Array)
    for k, truth in enumerate((ramp, -ramp)):
        values = unwrapped.values[k]
        np.testing.assert_allclose(values - values[0, 0], truth - truth[0, 0], atol=1e-4)
    spectrum = holograms.isel(frame=0).holo.fft()
    assert spectrum.qx.attrs["units"] == "1/nm"
    truth = np.asarray(series.sideband_pos)
    position = np.asarray(spectrum.attrs["sideband_pos_px"])
    assert min(np.hypot(*(position - truth)), np.hypot(*(position - (128 - truth)))) <= 1.5
    figure = spectrum.holo.plot()
    assert figure.axes[0].get_xlabel() == "qx (1/nm)" and len(figure.axes[0].patches) == 2
    figure = one.holo.plot()
    assert [ax.get_xlabel() for ax in figure.axes[:2]] == ["x (nm)", "x (nm)"]
    result = holodask.average(waves)
    assert result.holo.phase.dims == ("y", "x")
    assert result.holo.plot().axes
