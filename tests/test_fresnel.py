"""The Fresnel-fringe line filter (parameter ``fresnel_filter``).

A hologram of a smooth phase object is modulated by a packet of Fresnel
fringes parallel to the interference fringes (a function of the coordinate
along the carrier only), which puts a streak through the sideband along the
carrier. The artifact is what the modulation changes in the reconstructed
wave; the filter must remove most of it, leave the object's wave nearly
unchanged, do nothing when turned the wrong way, and change nothing at all
when it is off.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from holodask.errors import ParameterError
from holodask.optics import carrier_per_nm, fresnel_line_weights
from holodask.params import FilterSpec, FresnelFilter, parse_parameters
from holodask.hologram import reconstruct_hologram, sideband_geometry
from simulated import simulated_params

N, SAMPLING, SIZE, CUT_OFF = 256, 0.5, 64, 0.09


def _holograms(carrier_px):
    """(clean hologram, hologram with Fresnel fringes, carrier in 1/nm)."""
    carrier = np.array(carrier_per_nm((N // 2 + carrier_px[0], N // 2 + carrier_px[1]), (N, N), SAMPLING))
    y, x = np.mgrid[0:N, 0:N] * SAMPLING
    phase = np.exp(-((x - 60) ** 2 + (y - 70) ** 2) / (2 * 10.0**2))
    clean = 2 + 0.6 * np.cos(2 * np.pi * (carrier[0] * x + carrier[1] * y) + phase)
    direction = carrier / np.hypot(*carrier)
    u = x * direction[0] + y * direction[1]  # across the fringes
    fringes = 0.2 * np.exp(-((u - 90) ** 2) / (2 * 15.0**2)) * np.cos(2 * np.pi * 0.05 * u)
    return clean.astype(np.float32), (clean * (1 + fringes)).astype(np.float32), carrier


def _reconstruct(hologram, carrier, fresnel=None):
    geometry = sideband_geometry((N, N), SAMPLING, carrier, (SIZE, SIZE), np.eye(2) * CUT_OFF**2,
                                 FilterSpec("BUTTERWORTH", 14), fresnel_filter=fresnel)
    return reconstruct_hologram(hologram, geometry)


def _rms(a) -> float:
    return float(np.sqrt(np.mean(np.abs(a) ** 2)))


def _artifact(carrier_px, fresnel):
    clean, fringed, carrier = _holograms(carrier_px)
    reference = _reconstruct(clean, carrier, fresnel)
    return _rms(_reconstruct(fringed, carrier, fresnel) - reference) / _rms(reference)


@pytest.mark.parametrize("carrier_px, most", [((32, 0), 0.1), ((32, 16), 0.4), ((24, 24), 0.4)])
def test_filter_removes_the_fresnel_streak(carrier_px, most):
    without = _artifact(carrier_px, None)
    assert without > 0.05  # the fringes do disturb the wave (6-7 % RMS)
    with_filter = _artifact(carrier_px, FresnelFilter(width_per_nm=0.02))
    assert with_filter < most * without


def test_filter_keeps_the_object_wave():
    clean, _, carrier = _holograms((32, 16))
    plain = _reconstruct(clean, carrier)
    filtered = _reconstruct(clean, carrier, FresnelFilter(width_per_nm=0.02))
    assert _rms(np.angle(filtered / plain)) < 0.05
    assert abs(np.mean(np.abs(filtered)) / np.mean(np.abs(plain)) - 1) < 0.02


def test_filter_turned_across_the_streak_does_nothing_against_it():
    _, _, carrier = _holograms((32, 16))
    across = float(np.degrees(np.arctan2(carrier[1], carrier[0]))) + 90.0
    without = _artifact((32, 16), None)
    assert _artifact((32, 16), FresnelFilter(width_per_nm=0.02, angle_deg=across)) > 0.9 * without


def test_line_weights_shape():
    carrier = (0.25, 0.0)
    q = np.linspace(-0.1, 0.1, 201)
    weights = fresnel_line_weights(q.reshape(-1, 1), q.reshape(1, -1), carrier, FresnelFilter(0.02, gap_per_nm=0.03))
    centre = 100
    assert weights[centre, centre] == pytest.approx(1.0)  # the gap keeps the sideband's centre
    assert weights[centre, centre + 80] == pytest.approx(0.0, abs=1e-3)  # on the line (qy = 0), 0.08 out
    assert weights[centre + 10, centre + 80] == pytest.approx(0.5, abs=1e-3)  # at half the width: half
    assert weights[centre + 50, centre + 80] == pytest.approx(1.0, abs=1e-4)  # off the line
    assert weights[centre, centre + 30] == pytest.approx(0.5)  # at the gap's edge: half


def test_parameter_forms():
    base = {"object_names": ["a.tif"], "object_size": 64, "sideband_pos": [10, 20], "cut_off": 0.1}
    assert parse_parameters(base, Path(".")).fresnel_filter is None
    assert parse_parameters({**base, "fresnel_filter": None}, Path(".")).fresnel_filter is None
    assert parse_parameters({**base, "fresnel_filter": 0.02}, Path(".")).fresnel_filter == FresnelFilter(0.02)
    full = parse_parameters({**base, "fresnel_filter": {"width": 0.02, "angle": 30, "gap": 0.01}}, Path("."))
    assert full.fresnel_filter == FresnelFilter(0.02, 30.0, 0.01)
    for bad, message in (({"angle": 3}, "needs"), ({"width": -1}, "positive"), ({"width": 1, "wdth": 2}, "wdth"),
                         ("wide", "must be")):
        with pytest.raises(ParameterError, match=message):
            parse_parameters({**base, "fresnel_filter": bad}, Path("."))


def test_run_off_is_unchanged_and_on_changes_the_result(tmp_path):
    import holodask

    series, params = simulated_params(tmp_path, dict(n_frames=3, size_px=128, object_size_px=48,
                                                     dose_e_per_px=500.0, seed=11))
    results = {}
    for name, extra in (("absent", {}), ("null", {"fresnel_filter": None}),
                        ("on", {"fresnel_filter": {"width": 0.05}})):
        run_params = dict(params, output_name=str(tmp_path / f"{name}.hdf5"), **extra)
        (tmp_path / f"{name}.json").write_text(json.dumps(run_params))
        results[name] = holodask.run(holodask.load_parameters(tmp_path / f"{name}.json"))["data"].values
    np.testing.assert_array_equal(results["null"], results["absent"])
    difference = np.abs(results["on"] - results["absent"]).max() / np.abs(results["absent"]).mean()
    assert difference > 1e-3


def test_a_run_applies_the_filter_to_objects_and_empties(tmp_path):
    """The parameter reaches the reconstruction stage (and the empty wave's): the result changes."""
    import holodask
    from simulated import simulated_params

    _, params = simulated_params(tmp_path, {"n_frames": 2, "size_px": 128, "object_size_px": 64, "seed": 2})
    plain = holodask.run(dict(params, output_name=None))
    filtered = holodask.run(dict(params, output_name=None, fresnel_filter={"width": 0.05}))
    assert filtered.attrs["parameters"]["fresnel_filter"] == {"width": 0.05}
    changed = np.abs(filtered["data"].values - plain["data"].values).max() / np.abs(plain["data"].values).mean()
    assert changed > 1e-3
    assert not np.array_equal(filtered["empty"].values, plain["empty"].values)
