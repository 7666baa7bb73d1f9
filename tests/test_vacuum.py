"""Vacuum-normalised results and the maps derived from them (issue 19, part 2).

The simulated series leaves the left 30 % of the field as vacuum (``vacuum_fraction``),
the rest a textured specimen with particles; the truth is ``series.expected_wave()``
(vacuum 1 to the band limit's ringing). The reconstruction's own amplitude scale
(about 16 in vacuum here) is what the normalisation takes out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import holodask
from holodask import vacuum
from holodask.errors import ParameterError
from holodask.params import parse_parameters
from holodask.simulate import make_object_wave, simulate_series
from simulated import simulated_params

SERIES = dict(n_frames=8, size_px=256, object_size_px=64, dose_e_per_px=10000.0, vacuum_fraction=0.3,
              texture_contrast=0.05, seed=1)
#: no drift: the raw alignment stays off (it would mistake the noise for integer shifts)
RUN = {"enable_raw_alignment": False, "output_name": None}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """(series, parameters, in-memory result) of the simulated series with a vacuum band."""
    folder = tmp_path_factory.mktemp("vacuum")
    series, params = simulated_params(folder, SERIES)
    return series, params, holodask.run({**params, **RUN})


def _true_vacuum(series, tolerance=0.01) -> np.ndarray:
    """Where the truth on the output grid is vacuum (|psi - 1| < tolerance), 2 px from the edges."""
    truth = series.expected_wave()
    mask = np.abs(truth - 1) < tolerance
    edge = np.zeros_like(mask)
    edge[2:-2, 2:-2] = True
    return mask & edge


def _inside(box, mask) -> bool:
    left, top, right, bottom = box
    return bool(mask[top:bottom, left:right].all())


# ---------------------------------------------------------------- the simulator's vacuum


def test_the_simulator_leaves_a_vacuum_band_and_keeps_the_default():
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    band = make_object_wave(256, 12.0, rng(), texture_contrast=0.05, texture_rng=rng(), vacuum_fraction=0.3)
    columns = np.abs(band - 1).max(axis=0)
    assert columns[10:70].max() < 0.01  # vacuum up to the edge at 0.3 * 256 = 77 px (ringing: 0.003-0.009)
    assert columns[100:240].min() > 0.05  # specimen (texture) everywhere else
    # off: the wave as before (the same draws), with texture nowhere vacuum
    plain = make_object_wave(256, 12.0, rng(), texture_contrast=0.1, texture_rng=rng())
    np.testing.assert_array_equal(plain, make_object_wave(256, 12.0, rng(), texture_contrast=0.1,
                                                          texture_rng=rng(), vacuum_fraction=0.0))
    assert np.abs(plain - 1).max(axis=0).min() > 0.05
    with pytest.raises(ParameterError, match="vacuum_fraction"):
        simulate_series(Path("unused"), vacuum_fraction=0.9)


def test_the_truth_has_the_band(simulated):
    series, _, _ = simulated
    assert float(series.truth["vacuum_fraction"]) == 0.3
    vacuum_mask = _true_vacuum(series)
    columns = np.flatnonzero(vacuum_mask[2:-2].all(axis=0))
    assert columns.min() == 2 and 15 <= columns.max() <= 19  # 0.3 * 64 = 19.2 output px


# ---------------------------------------------------------------- finding the vacuum


def test_find_vacuum_finds_a_region_inside_the_true_vacuum(simulated):
    series, _, result = simulated
    box = result.holo.find_vacuum()
    truth = _true_vacuum(series)
    assert _inside(box, truth)
    left, top, right, bottom = box
    assert (right - left) * (bottom - top) >= 0.4 * truth.sum()  # most of it, not a corner


def test_find_vacuum_on_a_rough_specimen_with_a_ramp():
    """Vacuum (left third) with a strong phase ramp everywhere: the ramp is flat, the texture is not."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:128, 0:128]
    texture = np.fft.ifft2(np.fft.fft2(rng.normal(size=(128, 128))) * (np.hypot(*np.meshgrid(
        np.fft.fftfreq(128), np.fft.fftfreq(128))) < 0.1)).real
    specimen = np.clip((x - 45) / 6, 0, 1)
    wave = 7 * np.exp(specimen * (-0.3 + 0.2 * texture / texture.std() + 1j * texture / texture.std())
                      + 1j * (0.4 * x - 0.25 * y + 1.0))
    wave = wave + 0.05 * (rng.normal(size=wave.shape) + 1j * rng.normal(size=wave.shape))
    region = vacuum.find_vacuum(wave)
    left, top, right, bottom = region.box
    assert right <= 45 and (right - left) >= 24 and (bottom - top) >= 96
    assert region.mask[:, 60:].sum() == 0


# ---------------------------------------------------------------- normalising


def test_normalised_amplitude_is_one_and_phase_zero_in_vacuum(simulated):
    series, _, result = simulated
    truth = _true_vacuum(series)
    raw = result.data.values
    assert np.abs(raw[truth]).mean() > 10  # the reference's scale: far from 1 before
    normalised = result.holo.normalized()
    wave = normalised.data.values
    amplitude_error = np.abs(np.abs(wave[truth]) - 1).max()
    phase_error = np.abs(np.angle(wave[truth])).max()
    assert amplitude_error < 0.02 and phase_error < 0.02  # measured: 0.016, 0.014 (per pixel: noise)
    assert abs(np.abs(wave[truth]).mean() - 1) < 0.002
    factor = normalised.attrs["vacuum_factor"]
    np.testing.assert_allclose(wave, raw / factor, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(normalised.variance.values, result.variance.values / abs(factor) ** 2, rtol=1e-5)
    assert normalised.attrs["vacuum_region"] == "found"
    assert list(normalised.attrs["vacuum_box(px)"]) == list(result.holo.find_vacuum())


def test_relative_thickness_matches_the_truth(simulated):
    series, _, result = simulated
    expected = -2 * np.log(np.abs(series.expected_wave()))
    assert expected.max() > 1.0  # the particles are thick enough to matter
    for thickness in (result.holo.thickness(), result.holo.normalized().holo.thickness()):
        assert thickness.attrs["units"] == "t/lambda"
        error = np.abs(thickness.values - expected)[4:-4, 4:-4]
        assert error.max() < 0.05  # measured 0.020 (RMS 0.005)
    # A0 from the given box, as the DataArray's method takes it
    box = result.holo.find_vacuum()
    np.testing.assert_allclose(result.data.holo.thickness(vacuum=box).values, result.holo.thickness().values,
                               atol=1e-6)


def test_ramp_removal_removes_an_injected_ramp(simulated):
    series, _, result = simulated
    truth = _true_vacuum(series)
    x, y = np.meshgrid(result.x.values, result.y.values)  # nm
    slope = (0.1, -0.05)  # rad/nm (0.2 and -0.1 rad/px)
    ramped = result.copy()
    ramped["data"] = result.data * np.exp(1j * (slope[0] * x + slope[1] * y)).astype(np.complex64)
    kept = ramped.holo.normalized()
    assert np.ptp(np.angle(kept.data.values[truth])) > 1.0  # the ramp is there without ramp=True
    removed = ramped.holo.normalized(ramp=True)
    fitted = removed.attrs["vacuum_ramp(rad/nm)"]
    np.testing.assert_allclose(fitted, slope, atol=2e-4)
    assert np.abs(np.angle(removed.data.values[truth])).max() < 0.02
    # and the whole wave is the one without the injected ramp (the ramp extrapolated)
    plain = result.holo.normalized(vacuum=removed.attrs["vacuum_box(px)"])
    difference = np.angle(removed.data.values * np.conj(plain.data.values))
    assert np.abs(difference).max() < 0.02
    # the DataArray's method says the same, in its own attribute names
    one = ramped.data.holo.normalized(ramp=True)
    np.testing.assert_allclose(one.attrs["vacuum_ramp_rad_per_nm"], fitted, rtol=1e-9)
    np.testing.assert_allclose(one.values, removed.data.values, rtol=1e-6, atol=1e-6)


def test_a_given_box_and_bad_boxes(simulated):
    _, _, result = simulated
    normalised = result.data.holo.normalized(vacuum=[2, 2, 12, 40])
    assert normalised.attrs["vacuum_box_px"] == [2, 2, 12, 40] and normalised.attrs["vacuum_region"] == "given"
    inside = normalised.values[2:40, 2:12]
    assert abs(np.abs(inside).mean() - 1) < 1e-5 and abs(np.angle(inside.sum())) < 1e-5
    np.testing.assert_array_equal(normalised.x.values, result.x.values)  # nm coordinates kept
    for bad in ([2, 2, 80, 40], [10, 2, 5, 40], [2, 2, 3, 3]):
        with pytest.raises(ValueError, match="box"):
            result.data.holo.normalized(vacuum=bad)


# ---------------------------------------------------------------- derived maps


def _plane_wave(slope=(0.3, -0.2), sampling=0.5, n=48):
    import xarray as xr

    y, x = np.mgrid[0:n, 0:n] * sampling
    values = (2.0 * np.exp(1j * (slope[0] * x + slope[1] * y))).astype(np.complex64)
    axis = ("y", np.arange(n) * sampling, {"units": "nm"})
    coords = {"y": axis, "x": ("x", *axis[1:])}
    return xr.DataArray(values, dims=("y", "x"), coords=coords)


def test_phase_gradient_of_a_plane_wave():
    wave = _plane_wave()
    gradient = wave.holo.phase_gradient()
    np.testing.assert_allclose(gradient.phase_gradient_x.values, 0.3, atol=1e-5)
    np.testing.assert_allclose(gradient.phase_gradient_y.values, -0.2, atol=1e-5)
    np.testing.assert_allclose(gradient.phase_gradient.values, np.hypot(0.3, 0.2), atol=1e-5)
    assert gradient.phase_gradient.attrs["units"] == "rad/nm"
    # in px without nm coordinates
    in_px = wave.drop_vars(["x", "y"]).holo.phase_gradient()
    assert in_px.phase_gradient_x.attrs["units"] == "rad/px"
    np.testing.assert_allclose(in_px.phase_gradient_x.values, 0.15, atol=1e-5)


def test_phase_gradient_follows_the_truth(simulated):
    series, _, result = simulated
    expected = np.stack(vacuum.phase_gradient(series.expected_wave(), (2.0, 2.0)))
    measured = result.holo.phase_gradient()
    got = np.stack([measured.phase_gradient_x.values, measured.phase_gradient_y.values])
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert np.abs(expected[inner]).max() > 0.05  # the particles' phase has slopes
    assert np.sqrt(np.mean((got - expected)[inner] ** 2)) < 0.005


def test_contours_amplify_the_phase():
    wave = _plane_wave(slope=(0.6, 0.0))
    np.testing.assert_allclose(wave.holo.contours(1).values, np.cos(0.6 * wave.x.values)[None, :] * np.ones((48, 1)),
                               atol=1e-5)
    crossings = [int(np.sum(np.diff(np.sign(wave.holo.contours(n).values[0])) != 0)) for n in (1, 4)]
    assert crossings[1] >= 4 * crossings[0] - 1 and crossings[0] >= 2
    # a non-integer n takes the unwrapped phase (up to the 2 pi k scikit-image starts it at)
    amplified = wave.holo.contours(1.5).values[0]
    errors = [np.abs(amplified - np.cos(1.5 * (0.6 * wave.x.values + 2 * np.pi * k))).max() for k in range(-20, 21)]
    assert min(errors) < 1e-4
    wrapped = np.cos(1.5 * np.angle(wave.values[0]))  # not the wrapped phase's
    assert np.abs(amplified - wrapped).max() > 0.5
    assert wave.holo.contours(8).attrs["amplification"] == 8


def test_the_maps_of_a_stack_stay_lazy(simulated):
    import dask.array as da

    series, params, result = simulated
    waves = holodask.reconstruct(holodask.open_series(series.object_specs), {**params, **RUN},
                                 empty=holodask.open_series(series.empty_specs))
    box = result.holo.find_vacuum()
    maps = {"normalized": waves.holo.normalized(vacuum=box), "thickness": waves.holo.thickness(vacuum=box),
            "gradient": waves.holo.phase_gradient().phase_gradient, "contours": waves.holo.contours(3)}
    for name, array in maps.items():
        assert isinstance(array.data, da.Array), name
        assert array.sizes == waves.sizes, name
    first = waves.isel(frame=2).compute()
    np.testing.assert_allclose(maps["normalized"].isel(frame=2).values, first.holo.normalized(vacuum=box).values,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(maps["thickness"].isel(frame=2).values, first.holo.thickness(vacuum=box).values,
                               atol=1e-5)
    left, top, right, bottom = box
    assert abs(np.abs(maps["normalized"].isel(frame=2).values[top:bottom, left:right]).mean() - 1) < 0.01


# ---------------------------------------------------------------- the parameter file


BASE = {"object_names": ["a.tif"], "object_size": 64, "sideband_pos": [10, 20], "cut_off": 0.1}


def test_parameter_forms():
    assert parse_parameters(BASE).normalize_vacuum is False
    assert parse_parameters({**BASE, "normalize_vacuum": True}).normalize_vacuum is True
    given = parse_parameters({**BASE, "normalize_vacuum": [0, 4, 20, 60], "remove_ramp": True})
    assert given.normalize_vacuum == (0, 4, 20, 60) and given.remove_ramp is True
    assert parse_parameters({**BASE, "normalize_vacuum": None}).normalize_vacuum is False


@pytest.mark.parametrize("extra, message", [
    ({"normalize_vacuum": "yes"}, "parameter 'normalize_vacuum' must be true"),
    ({"normalize_vacuum": [0, 0, 10]}, "parameter 'normalize_vacuum' must be .* got 3 values"),
    ({"normalize_vacuum": [0, 0, 1, 10]}, "parameter 'normalize_vacuum' must be"),
    ({"normalize_vacuum": [0, 0, 10.5, 10]}, "parameter 'normalize_vacuum' must be .* fraction"),
    ({"normalize_vacuum": [0, 0, 65, 10]}, "parameter 'normalize_vacuum': the box .* not inside the 64x64"),
    ({"normalize_vacuum": [0, 0, 1e9, 10]}, "parameter 'normalize_vacuum' must lie between"),
    ({"remove_ramp": True}, "parameter 'remove_ramp' needs 'normalize_vacuum'"),
    ({"normalize_vacuum": True, "remove_ramp": "yes"}, "parameter 'remove_ramp' must be true or false"),
])
def test_bad_values_give_one_clear_error(extra, message):
    with pytest.raises(ParameterError, match=message):
        parse_parameters({**BASE, **extra})


def _run_file(folder: Path, params: dict, name: str, **extra):
    from holodask.cli import main

    path = folder / f"{name}.json"
    path.write_text(json.dumps({**params, "enable_raw_alignment": False, "output_name": f"{name}.hdf5", **extra}))
    assert main(["run", str(path)]) == 0
    return holodask.open_result(folder / f"{name}.hdf5")


def test_the_key_round_trips_through_a_run(tmp_path):
    series, params = simulated_params(tmp_path, {**SERIES, "n_frames": 3})
    params["path"] = str(tmp_path)
    absent = _run_file(tmp_path, params, "absent")
    off = _run_file(tmp_path, params, "off", normalize_vacuum=False)
    np.testing.assert_array_equal(off.data.values, absent.data.values)  # off: bit-identical
    np.testing.assert_array_equal(off.variance.values, absent.variance.values)
    assert not any(key.startswith("vacuum") for key in off.attrs)

    on = _run_file(tmp_path, params, "on", normalize_vacuum=True, remove_ramp=True)
    expected = absent.holo.normalized(ramp=True)
    np.testing.assert_allclose(on.data.values, expected.data.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(on.variance.values, expected.variance.values, rtol=1e-5)
    for key in ("vacuum_box(px)", "vacuum_ramp(rad/nm)"):
        np.testing.assert_allclose(on.attrs[key], expected.attrs[key], rtol=1e-6, atol=1e-9)
    assert on.attrs["vacuum_factor"] == pytest.approx(expected.attrs["vacuum_factor"], rel=1e-6)
    assert on.attrs["vacuum_region"] == "found" and on.attrs["parameters"]["normalize_vacuum"] is True
    assert _inside(on.attrs["vacuum_box(px)"], _true_vacuum(series))
    left, top, right, bottom = on.attrs["vacuum_box(px)"]
    assert abs(np.abs(on.data.values[top:bottom, left:right]).mean() - 1) < 0.002
    # the file's normalised result knows its box: t/lambda takes A0 there
    assert on.holo.thickness().attrs["vacuum_box_px"] == [int(v) for v in on.attrs["vacuum_box(px)"]]

    given = _run_file(tmp_path, params, "given", normalize_vacuum=[2, 2, 12, 40])
    assert list(given.attrs["vacuum_box(px)"]) == [2, 2, 12, 40] and given.attrs["vacuum_region"] == "given"
    assert "vacuum_ramp(rad/nm)" not in given.attrs
    factor = given.attrs["vacuum_factor"]
    np.testing.assert_allclose(given.data.values, absent.data.values / factor, rtol=1e-5, atol=1e-6)


def test_average_takes_the_same_options(simulated):
    series, params, result = simulated
    waves = holodask.reconstruct(holodask.open_series(series.object_specs), {**params, **RUN},
                                 empty=holodask.open_series(series.empty_specs))
    box = [int(v) for v in result.holo.find_vacuum()]
    averaged = holodask.average(waves, normalize_vacuum=box, remove_ramp=True)
    expected = result.holo.normalized(vacuum=box, ramp=True)
    np.testing.assert_allclose(averaged.data.values, expected.data.values, rtol=1e-5, atol=1e-5)
    assert averaged.attrs["hdf5_attrs"]["vacuum_region"] == "given"
    np.testing.assert_allclose(averaged.attrs["vacuum_ramp(rad/nm)"], expected.attrs["vacuum_ramp(rad/nm)"],
                               atol=1e-6)


# ---------------------------------------------------------------- the real Fe needle


def test_the_vacuum_of_the_fe_needle_lies_away_from_the_needle(fe_needle):
    from scipy import ndimage

    object_spec, reference_spec = fe_needle
    waves = holodask.reconstruct(holodask.open_series(object_spec), sideband_pos=[316, 131], cut_off=0.07,
                                 object_size=256, empty=holodask.open_series(reference_spec))
    result = holodask.average(waves)
    amplitude = ndimage.uniform_filter(np.abs(result.data.values), 9)
    vacuum_level = np.median(amplitude)
    needle = amplitude < 0.7 * vacuum_level  # the needle (t/lambda above about 0.7)
    assert 0.05 < needle.mean() < 0.4
    box = result.holo.find_vacuum()
    left, top, right, bottom = box
    assert (right - left) * (bottom - top) > 0.1 * amplitude.size
    # away from the needle: none of it in the box, nor within 10 px of it
    near = ndimage.binary_dilation(needle, iterations=10)
    assert not near[top:bottom, left:right].any()
    normalised = result.holo.normalized()
    inside = normalised.data.values[top:bottom, left:right]
    # (the needle's stray field turns the vacuum's phase: its mean amplitude is 1, its mean phase 0)
    assert abs(np.abs(inside).mean() - 1) < 1e-5 and abs(np.angle(inside.mean())) < 1e-5
    raw = result.data.values[top:bottom, left:right]
    expected_factor = np.abs(raw).mean() * np.exp(1j * np.angle(raw.sum()))
    assert normalised.attrs["vacuum_factor"] == pytest.approx(expected_factor, rel=1e-5)
    thickness = normalised.holo.thickness().values
    assert np.median(thickness[needle]) > 0.7 and abs(np.median(thickness[top:bottom, left:right])) < 0.05
