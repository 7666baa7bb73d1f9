"""Outlier repair before reconstruction (``outlier_cutoff``), end to end on simulated series.

The simulator draws every feature from its own random stream, so the series
with cosmic-ray hits equals the clean series of the same seed except for the
hits: the repaired run must come back to the clean run's phase error.
"""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

import h5py
import json5

from holodask.cli import main  # noqa: E402
from holodask.errors import ParameterError  # noqa: E402
from holodask.outliers import MIN_FRAMES, outlier_trim_percent, repair_series  # noqa: E402
from holodask.params import load_parameters  # noqa: E402
from holodask.pipeline import run  # noqa: E402
from holodask.series import open_series  # noqa: E402
from holodask.simulate import simulate_series  # noqa: E402
from holodask.stats import removed_count  # noqa: E402

N_FRAMES = 14
N_EMPTY = 4
CUTOFF = 6.0
SERIES = dict(n_frames=N_FRAMES, size_px=256, object_size_px=64, dose_e_per_px=200.0, n_empty=N_EMPTY, seed=3)


def _params(series, **extra) -> dict:
    params = json5.loads(Path(series.params_path).read_text())
    params["path"] = str(series.outdir)
    params["enable_raw_alignment"] = False  # no drift; on noise alone it finds spurious shifts
    params.update(extra)
    return params


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Phase errors and results of the clean series, and of the series with hits with and without repair."""
    folder = tmp_path_factory.mktemp("outliers")
    clean = simulate_series(folder / "clean", **SERIES)
    hit = simulate_series(folder / "hits", n_cosmic_rays=10, **SERIES)
    out = {"clean": clean, "hit": hit}
    out["clean_plain"] = run(_params(clean))
    out["clean_repaired"] = run(_params(clean, outlier_cutoff=CUTOFF, output_name="repaired.hdf5"))
    out["hit_plain"] = run(_params(hit))
    out["hit_repaired"] = run(_params(hit, outlier_cutoff=CUTOFF, output_name="repaired.hdf5"))
    return out


def _error(runs, series, name) -> float:
    return runs[series].phase_error_rad(runs[name]["data"].values)


def test_repair_brings_back_the_phase_error_of_the_clean_series(runs):
    clean = _error(runs, "clean", "clean_plain")
    hit = _error(runs, "hit", "hit_plain")
    repaired = _error(runs, "hit", "hit_repaired")
    numbers = f"clean {clean:.4f} rad, with hits {hit:.4f} rad, hits repaired {repaired:.4f} rad"
    assert repaired <= 1.1 * clean, numbers
    assert hit > 1.5 * clean, numbers
    # on a clean series the repair changes next to nothing
    assert _error(runs, "clean", "clean_repaired") <= 1.05 * clean


def test_outlier_counts_find_the_hits(runs):
    truth = runs["hit"].truth
    hits_per_frame = np.bincount(truth["cosmic_rays"][:, 0], minlength=N_FRAMES)
    assert 0 < np.count_nonzero(hits_per_frame) < N_FRAMES  # frames with and without hits
    counts = runs["hit_repaired"]["outliers"].values
    assert counts.dtype.kind == "i" and counts.shape == (N_FRAMES,)
    np.testing.assert_array_equal(runs["hit_repaired"]["frame"].values, np.arange(N_FRAMES))
    # the clean series of the same seed shows the false alarms: at most 0.05 % of the pixels
    false_alarms = runs["clean_repaired"]["outliers"].values
    assert false_alarms.max() <= 0.0005 * 256 * 256, false_alarms
    hit_frames = hits_per_frame > 0
    assert np.all(counts[hit_frames] >= hits_per_frame[hit_frames]), (counts, hits_per_frame)
    np.testing.assert_array_equal(counts[~hit_frames], false_alarms[~hit_frames])
    # noise-free empty holograms: exactly the hit pixels are replaced
    empty_hits = np.bincount(truth["empty_cosmic_rays"][:, 0], minlength=N_EMPTY)
    assert empty_hits.sum() > 0
    np.testing.assert_array_equal(runs["hit_repaired"]["empty_outliers"].values, empty_hits)
    assert "outliers" not in runs["hit_plain"]


def test_outlier_attributes_in_the_file(runs):
    path = runs["hit"].outdir / "repaired.hdf5"
    with h5py.File(path, "r") as f:
        for name in ("data", "variance"):
            np.testing.assert_array_equal(f[name].attrs["outliers"], runs["hit_repaired"]["outliers"].values)
        assert f["empty"].attrs["outliers"].shape == (N_EMPTY,)
    with h5py.File(runs["hit"].outdir / "result.hdf5", "r") as f:
        assert "outliers" not in f["data"].attrs


def test_hot_pixels_are_not_temporal_outliers(runs, tmp_path):
    """Hot pixels sit in every frame: the temporal test takes them for background (documented)."""
    series = simulate_series(tmp_path, n_hot_pixels=30, **SERIES)
    hot = series.truth["hot_pixels_xy"]
    with h5py.File(series.object_specs[0].partition("?")[0], "r") as f:
        frame = f["hologram"][()].astype(float)
    assert np.all(frame[hot[:, 1], hot[:, 0]] > 10 * np.median(frame))
    plain = run(_params(series))
    repaired = run(_params(series, outlier_cutoff=CUTOFF, output_name="repaired.hdf5"))
    # same noise as the clean series: exactly its false alarms, none at a hot pixel
    np.testing.assert_array_equal(repaired["outliers"].values, runs["clean_repaired"]["outliers"].values)
    error_plain = series.phase_error_rad(plain["data"].values)
    error_repaired = series.phase_error_rad(repaired["data"].values)
    assert error_repaired == pytest.approx(error_plain, rel=0.05)


def test_repair_series_is_lazy_and_replaces_by_the_trimmed_average(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.poisson(100.0, (10, 24, 32)).astype(np.uint16)
    stack[4, 5, 6] = 5000
    stack[7, 20, 30] = 4000
    path = tmp_path / "stack.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("holo", data=stack)
    series = open_series(f"{path}?dataset=holo")
    repaired, counts = repair_series(series, 8.0)
    assert isinstance(repaired.data, da.Array) and repaired.data.chunks[0] == (1,) * 10
    assert repaired.dtype == np.float32
    assert counts.tolist() == [0, 0, 0, 0, 1, 0, 0, 1, 0, 0]
    n_removed = removed_count(10, outlier_trim_percent(10))
    assert n_removed == 1  # 10 %, at least one value
    trimmed = np.sort(stack.astype(float), axis=0)[:-n_removed]
    values = repaired.values
    assert values[4, 5, 6] == pytest.approx(trimmed[:, 5, 6].mean())
    assert values[7, 20, 30] == pytest.approx(trimmed[:, 20, 30].mean())
    untouched = np.ones(stack.shape, bool)
    untouched[4, 5, 6] = untouched[7, 20, 30] = False
    np.testing.assert_array_equal(values[untouched], stack[untouched])
    # too short a series is left alone
    short, none = repair_series(series.isel(frame=slice(0, MIN_FRAMES - 1)), 8.0)
    assert none is None and short.dtype == np.uint16


@pytest.mark.parametrize("n_frames, removed", [(3, 1), (12, 1), (16, 2), (100, 10)])
def test_trim_percentage_drops_ten_percent_but_at_least_one(n_frames, removed):
    assert removed_count(n_frames, outlier_trim_percent(n_frames)) == removed


@pytest.mark.parametrize("value", [0, -1.5, "high"])
def test_bad_outlier_cutoff(value, tmp_path, capsys):
    params = {"object_names": "h_%d.h5?dataset=x", "object_first": 0, "object_last": 2, "object_size": 32,
              "sideband_pos": [10, 10], "cut_off": 1.0, "outlier_cutoff": value}
    with pytest.raises(ParameterError, match="outlier_cutoff"):
        load_parameters(params, tmp_path)
    param_file = tmp_path / "p.json"
    param_file.write_text(json.dumps(params))
    assert main(["run", str(param_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("holodask: error: ") and "outlier_cutoff" in err and "Traceback" not in err
