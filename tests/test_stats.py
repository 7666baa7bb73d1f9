"""Series statistics, masks, spot tables and ``holodask stats``."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage, stats as scipy_stats

import dask.array as da

from holodask import stats
from holodask.cli import main
from holodask.commands import stats as stats_cmd
from holodask.errors import DataError, ParameterError

EXPECTED_LAYOUT = {
    "info",
    "stats", "stats/avg", "stats/std", "stats/iqr", "stats/max", "stats/arg",
    "masks_raw", "masks_filtered",
    "masks", "masks/labels", "masks/counts",
    "spots", "spots/I", "spots/XY", "spots/box", "spots/frame", "spots/label", "spots/mask",
    "spots/pixel_list_BE", "spots/pixel_list",
    "frame2spotsBE",
}


def direct_statistics(stack, n_removed):
    """Per-pixel loop with plain numpy: the oracle for the kernels."""
    _, rows, cols = stack.shape
    out = np.zeros((5, rows, cols))
    for r in range(rows):
        for c in range(cols):
            values = np.sort(stack[:, r, c].astype(float))
            kept = values[: len(values) - n_removed]
            out[0, r, c] = np.mean(kept)
            out[1, r, c] = np.std(kept)
            out[2, r, c] = np.percentile(kept, 75) - np.percentile(kept, 25)
            out[3, r, c] = values[-1]
            out[4, r, c] = int(np.argmax(stack[:, r, c]))
    return out


def gaussian_spot(shape, row, col, amplitude, sigma):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return amplitude * np.exp(-((yy - row) ** 2 + (xx - col) ** 2) / (2 * sigma**2))


def read_layout(path):
    names = set()
    with h5py.File(path, "r") as h5:
        h5.visit(names.add)
    return names


# ---------------------------------------------------------------- statistics


def test_removed_count_percent_and_default():
    assert stats.removed_count(40, 0) == 10  # 0 means 25 %
    assert stats.removed_count(40, 25) == 10
    assert stats.removed_count(40, 10) == 4
    assert stats.removed_count(10, 15) == 2  # 1.5 rounds up
    assert stats.removed_count(3, 99) == 2  # one value always remains
    with pytest.raises(ParameterError, match="-n"):
        stats.removed_count(40, 100)


def test_trimmed_statistics_against_numpy():
    rng = np.random.default_rng(1)
    stack = rng.poisson(50, (13, 5, 6)).astype(np.uint16)
    stack[3, 2, 2] = 5000  # an outlier that trimming removes
    got = stats.trimmed_statistics(stack, 3)
    np.testing.assert_allclose(got, direct_statistics(stack, 3), rtol=1e-12, atol=1e-12)
    assert got[0, 2, 2] < 60 and got[3, 2, 2] == 5000 and got[4, 2, 2] == 3


def test_series_statistics_n0_means_25_percent_and_chunks_do_not_matter():
    rng = np.random.default_rng(2)
    stack = rng.normal(100, 10, (20, 24, 30)).astype(np.float32)
    whole, n_removed = stats.series_statistics(stack, n_percent=0)
    assert n_removed == 5
    assert whole.chunks[1:] == ((24,), (30,))
    # a tiny budget splits rows and even columns
    tiny = 20 * 32 * 7  # 7 pixels per block
    assert stats.spatial_chunks(20, (24, 30), tiny) == (1, 7)
    chunked, _ = stats.series_statistics(stack, n_percent=0, memory_bytes=tiny)
    assert len(chunked.chunks[2]) > 1
    a, b = whole.compute(), chunked.compute()
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, direct_statistics(stack, 5), rtol=1e-9)


def test_trimmed_background_is_lazy_and_correct():
    rng = np.random.default_rng(3)
    stack = rng.poisson(20, (8, 6, 7)).astype(np.float64)
    series = xr.DataArray(
        da.from_array(stack, chunks=(1, 6, 7)), dims=("frame", "y", "x"),
        coords={"y": np.arange(6) * 0.5, "x": np.arange(7) * 0.5},
    )
    avg, std = stats.trimmed_background(series, 25)
    assert isinstance(avg.data, da.Array) and avg.dims == ("y", "x")
    np.testing.assert_allclose(avg.values, direct_statistics(stack, 2)[0])
    np.testing.assert_allclose(std.values, direct_statistics(stack, 2)[1])
    np.testing.assert_array_equal(avg.x.values, series.x.values)


def test_kruskal_uses_lower_group_where_laser_differs():
    rng = np.random.default_rng(4)
    laser = np.tile([False, True], 10)
    stack = rng.normal(100, 5, (20, 3, 3))
    stack[laser, 1, 1] += 200  # laser-on reflexion at pixel (1, 1)
    got = stats.kruskal_statistics(stack, laser, 25, 0.05)
    p = scipy_stats.kruskal(stack[~laser, 1, 1], stack[laser, 1, 1]).pvalue
    assert got[5, 1, 1] == pytest.approx(p) and p < 0.05
    off = np.sort(stack[~laser, 1, 1])[: 10 - 3]  # 25 % of 10 -> 3 removed (2.5 rounds up)
    assert got[0, 1, 1] == pytest.approx(off.mean())
    assert got[1, 1, 1] == pytest.approx(off.std())
    # pixels without a significant difference keep the pooled trimmed statistics
    pooled = stats.trimmed_statistics(stack, 5)
    same = got[5] >= 0.05
    assert same.sum() >= 5
    np.testing.assert_allclose(got[:5][:, same], pooled[:, same])


# ----------------------------------------------------------------- masks


def test_masks_and_filtering_match_scipy(tmp_path):
    rng = np.random.default_rng(5)
    stack = rng.poisson(30, (12, 32, 32)).astype(np.int32)
    stack[4, 10:14, 10:15] += 300
    stack[7, 20, 20] += 300  # single pixel: removed by erosion
    settings = stats.SpotSettings(cutoff=2.0, erosions=1, dilations=3, structure=(2, 1))
    out = tmp_path / "m.h5"
    stats.find_spots(stack, out, settings)
    structure = ndimage.generate_binary_structure(2, 1)
    with h5py.File(out, "r") as h5:
        avg, std = h5["stats/avg"][()], h5["stats/std"][()]
        raw = stack >= avg + 2.0 * std
        np.testing.assert_array_equal(h5["masks_raw"][()], raw)
        expected = np.stack([
            ndimage.binary_dilation(ndimage.binary_erosion(m, structure), structure, iterations=3)
            for m in raw
        ])
        np.testing.assert_array_equal(h5["masks_filtered"][()], expected)
        labels = np.stack([ndimage.label(m, structure)[0] for m in expected])
        np.testing.assert_array_equal(h5["masks/labels"][()], labels)
        np.testing.assert_array_equal(h5["masks/counts"][()], labels.max(axis=(1, 2)))
        assert h5["masks_filtered"][7, 20, 20] == 0 and raw[7, 20, 20]
        assert h5["info"].attrs["n_removed"] == 3


def test_filter_mask_zero_iterations_means_none():
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    s = stats.binary_structure(2, 2)
    assert np.array_equal(stats.filter_mask(mask, s, 0, 0), mask)
    with pytest.raises(ParameterError, match="RANK"):
        stats.binary_structure(3, 1)


# ------------------------------------------------------------- spot table


def test_spot_table_finds_every_injected_spot(tmp_path):
    rng = np.random.default_rng(6)
    n_frames, shape = 40, (64, 64)
    background = 100.0
    frames = rng.poisson(background, (n_frames,) + shape).astype(np.float64)
    injected = {  # frame -> [(row, col, amplitude)]
        3: [(15, 20, 2000.0)],
        11: [(40, 45, 1500.0), (12, 50, 2500.0)],
        25: [(30, 10, 1800.0)],
        33: [(50, 30, 2200.0)],
    }
    sigma = 1.2
    truth = {}
    for f, spots in injected.items():
        for row, col, amp in spots:
            spot = gaussian_spot(shape, row, col, amp, sigma)
            frames[f] += spot
            truth[(f, col, row)] = spot.sum()
    series = xr.DataArray(frames, dims=("frame", "y", "x"))
    out = tmp_path / "spots.h5"
    summary = stats.find_spots(series, out)
    assert summary["n_spots"] == len(truth)
    with h5py.File(out, "r") as h5:
        frame = h5["spots/frame"][()]
        xy = h5["spots/XY"][()]
        intensity = h5["spots/I"][()]
        f2s = h5["frame2spotsBE"][()]
        counts = h5["masks/counts"][()]
        be = h5["spots/pixel_list_BE"][()]
        pixel_list = h5["spots/pixel_list"][()]
        labels = h5["masks/labels"]
        found = {}
        for k in range(len(frame)):
            found[(int(frame[k]), int(xy[k, 0]), int(xy[k, 1]))] = intensity[k]
            # the pixel list is exactly the labelled region
            lab = labels[frame[k]]
            region = np.flatnonzero(lab.ravel() == h5["spots/label"][k])
            np.testing.assert_array_equal(np.sort(pixel_list[be[k, 0]:be[k, 1]]), region)
            box = h5["spots/box"][k]
            ys, xs = np.unravel_index(region, shape)
            assert list(box) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert set(found) == set(truth)  # brightest pixel exactly at each centre
        for key, total in truth.items():
            assert found[key] == pytest.approx(total, rel=0.05)
        clean = [f for f in range(n_frames) if f not in injected]
        assert not counts[clean].any()
        for f in range(n_frames):
            b, e = f2s[f]
            assert np.all(frame[b:e] == f) and e - b == len(injected.get(f, []))


# ------------------------------------------------------------------- sync


def laser_series(n_angles=4, pairs_per_angle=2, shape=(40, 40), seed=7):
    """Off/on pairs at each angle; one reflexion on a laser-on frame."""
    rng = np.random.default_rng(seed)
    n_frames = n_angles * pairs_per_angle * 2
    frames = rng.poisson(50, (n_frames,) + shape).astype(np.float64)
    laser = np.tile([0, 1], n_frames // 2)
    angles = np.repeat(np.arange(n_angles) * 1.5, pairs_per_angle * 2)
    frames[5] += gaussian_spot(shape, 20, 22, 1500.0, 1.2)  # frame 5: laser on, angle 1 block
    series = xr.DataArray(
        frames, dims=("frame", "y", "x"), coords={"laser": ("frame", laser), "angle": ("frame", angles)}
    )
    return series, laser, angles


def test_sync_groups():
    laser = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    groups = stats.sync_groups(8, "pairs", laser)
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3], [4], [5], [6, 7]]
    angles = np.array([1, 1, 2, 2, 2, 2, 3, 3])
    groups = stats.sync_groups(8, "blocks", laser, angles)
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3, 4, 5], [6, 7]]
    with pytest.raises(DataError, match="laser"):
        stats.sync_groups(8, "pairs", None)
    with pytest.raises(DataError, match="angle"):
        stats.sync_groups(8, "blocks", laser, None)


@pytest.mark.parametrize("mode, members", [("pairs", [4, 5]), ("blocks", [4, 5, 6, 7])])
def test_synced_masks_join_frames(tmp_path, mode, members):
    series, _, _ = laser_series()
    out = tmp_path / f"{mode}.h5"
    settings = stats.SpotSettings(sync=mode, min_angles=4)
    summary = stats.find_spots(series, out, settings)
    n_masks = 8 if mode == "pairs" else 4
    assert summary["n_masks"] == n_masks
    with h5py.File(out, "r") as h5:
        assert "masks_synced" in h5
        filtered = h5["masks_filtered"][()].astype(bool)
        synced = h5["masks_synced"][()].astype(bool)
        assert synced.shape == (n_masks, 40, 40)
        mask_index = 2 if mode == "pairs" else 1
        np.testing.assert_array_equal(synced[mask_index], filtered[members].any(axis=0))
        assert filtered[5].any() and not filtered[4].any()
        # the spot is measured on every frame of its synchronised group
        assert sorted(h5["spots/frame"][()].tolist()) == members
        assert set(h5["spots/mask"][()].tolist()) == {mask_index}
        xy = h5["spots/XY"][()][h5["spots/frame"][()] == 5]
        assert xy.tolist() == [[22, 20]]
        i_on = h5["spots/I"][()][h5["spots/frame"][()] == 5][0]
        i_off = h5["spots/I"][()][h5["spots/frame"][()] == 4][0]
        assert i_on > 20 * abs(i_off)
        assert h5["masks/counts"][mask_index] == 1


# ------------------------------------------------------------------ errors


def test_kruskal_and_sync_need_laser(tmp_path):
    stack = np.random.default_rng(8).poisson(10, (10, 8, 8))
    with pytest.raises(DataError, match="laser"):
        stats.find_spots(stack, tmp_path / "k.h5", stats.SpotSettings(method="kruskal"))
    with pytest.raises(DataError, match="laser"):
        stats.find_spots(stack, tmp_path / "s.h5", stats.SpotSettings(sync="pairs"))
    assert not list(tmp_path.iterdir())  # no output, no temporary file left


def test_too_few_angles(tmp_path):
    series, _, _ = laser_series(n_angles=4)
    with pytest.raises(DataError, match="4 distinct angle"):
        stats.find_spots(series, tmp_path / "a.h5")  # default: 10 angles when angles exist
    with pytest.raises(DataError, match="no per-frame 'angle'"):
        stats.find_spots(series.drop_vars("angle"), tmp_path / "a.h5", stats.SpotSettings(min_angles=3))
    stats.find_spots(series.drop_vars("angle"), tmp_path / "ok.h5")  # no angles, default: no check
    assert (tmp_path / "ok.h5").exists() and not (tmp_path / "a.h5").exists()


# ---------------------------------------------------------------------- CLI


def write_mccd(path, series, laser=None, angles=None):
    with h5py.File(path, "w") as h5:
        h5["data"] = np.asarray(series)
        if laser is not None:
            h5["lauecollect/laser"] = laser
            h5["lauecollect/angle"] = angles


def test_default_output_name(tmp_path):
    assert stats_cmd.default_output(str(tmp_path / "run1__mccd.h5")) == tmp_path / "run1__spots.h5"
    assert stats_cmd.default_output(f"{tmp_path / 'a.hdf5'}?dataset=x") == tmp_path / "a__spots.h5"


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_cli_writes_layout_with_laser_datasets(tmp_path, compression, capsys):
    series, laser, angles = laser_series(n_angles=4)
    src = tmp_path / "scan__mccd.h5"
    write_mccd(src, series.values, laser, angles)
    rc = main(["stats", f"{src}?dataset=data", "-a", "4", "-S", "pairs", "-m", "kruskal", "-n", "10",
               "-C", compression])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "scan__spots.h5"
    assert read_layout(out) == EXPECTED_LAYOUT | {"masks_synced", "stats/kruskal_p"}
    with h5py.File(out, "r") as h5:
        assert h5["info"].attrs["n_removed"] == 2  # 10 % of 16 frames
        assert h5["info"].attrs["method"] == "kruskal"
        assert h5["masks_raw"].shape == (16, 40, 40)
        assert h5["masks_synced"].shape == (8, 40, 40)
        assert h5["frame2spotsBE"].shape == (16, 2)
        expected = None if compression == "none" else compression
        for name in ("stats/avg", "masks_raw", "masks/labels", "spots/I", "frame2spotsBE"):
            assert h5[name].compression == expected, name
        assert 5 in h5["spots/frame"][()]


def test_cli_plain_layout_and_errors(tmp_path, capsys):
    stack = np.random.default_rng(9).poisson(40, (12, 16, 16)).astype(np.uint16)
    src = tmp_path / "plain.h5"
    write_mccd(src, stack)
    out = tmp_path / "o.h5"
    spec = f"{src}?dataset=data"
    assert main(["stats", spec, "-o", str(out), "-n", "0"]) == 0
    assert read_layout(out) == EXPECTED_LAYOUT
    with h5py.File(out, "r") as h5:
        assert h5["info"].attrs["n_removed"] == 3
        assert h5["stats/max"].dtype == np.uint16
        np.testing.assert_array_equal(h5["stats/max"][()], stack.max(axis=0))
        np.testing.assert_array_equal(h5["stats/arg"][()], stack.argmax(axis=0))
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["stats", spec, "-o", str(out), "-m", "kruskal"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("holodask: error:") and "laser" in err and "Traceback" not in err
    assert main(["stats", spec, "-o", str(out), "-a", "5"]) == 1
    assert "angle" in capsys.readouterr().err
    assert main(["stats", spec, "-o", str(out), "-s", "2"]) == 1
    assert "RANK,CONNECTIVITY" in capsys.readouterr().err
    assert out.read_bytes() == before  # failed runs leave the earlier output untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.h5", "plain.h5"]


# ------------------------------------------------------------------ repair


def test_repair_outliers_replaces_hits_by_average():
    rng = np.random.default_rng(10)
    stack = rng.normal(100, 5, (30, 20, 20))
    frame = rng.normal(100, 5, (20, 20))
    hits = [(3, 4), (10, 17), (15, 2)]
    for r, c in hits:
        frame[r, c] += 500
    avg, std = (np.asarray(a) for a in stats.trimmed_background(stack, 10))
    repaired, n = stats.repair_outliers(frame, avg, std, 6.0)
    assert n == 3
    for r, c in hits:
        assert repaired[r, c] == avg[r, c]
    untouched = np.ones_like(frame, bool)
    untouched[tuple(np.array(hits).T)] = False
    np.testing.assert_array_equal(repaired[untouched], frame[untouched])
    same, n0 = stats.repair_outliers(stack[0], avg, std, 6.0)
    assert n0 == 0 and np.array_equal(same, stack[0])


def test_find_spots_in_many_bands_matches_one_block(tmp_path):
    rng = np.random.default_rng(11)
    stack = rng.normal(10, 2, (100, 20, 30))
    out = tmp_path / "bands.h5"
    stats.find_spots(stack, out, stats.SpotSettings(memory_bytes=2**20))
    expected = stats.trimmed_statistics(stack, 25)
    with h5py.File(out, "r") as h5:
        for k, name in enumerate(stats.STAT_NAMES):
            np.testing.assert_array_equal(h5[f"stats/{name}"][()], expected[k].astype(h5[f"stats/{name}"].dtype))


def test_non_finite_pixels_are_a_clear_error(tmp_path):
    stack = np.ones((6, 4, 4))
    stack[2, 1, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        stats.find_spots(stack, tmp_path / "nan.h5")
    assert not list(tmp_path.iterdir())


def test_cli_uses_per_frame_coords_of_an_image_series_group(tmp_path, capsys):
    series, laser, angles = laser_series(n_angles=4)
    src = tmp_path / "group.h5"
    with h5py.File(src, "w") as h5:
        h5["scan/images"] = series.values
        h5["scan/laser"] = laser  # 1-D per-frame datasets -> coords of open_series
        h5["scan/angle"] = angles
    out = tmp_path / "g.h5"
    rc = main(["stats", f"{src}?path=scan", "-o", str(out), "-S", "blocks", "-a", "4", "-C", "none"])
    assert rc == 0, capsys.readouterr().err
    with h5py.File(out, "r") as h5:
        assert h5["masks_synced"].shape == (4, 40, 40)
        assert sorted(h5["spots/frame"][()].tolist()) == [4, 5, 6, 7]
    # too few angles for the default check of 10
    assert main(["stats", f"{src}?path=scan", "-o", str(out)]) == 1
    assert "4 distinct angle value(s), at least 10" in capsys.readouterr().err


def test_cli_angle_and_laser_dataset_options(tmp_path, capsys):
    series, laser, angles = laser_series(n_angles=4)
    src = tmp_path / "custom.h5"
    with h5py.File(src, "w") as h5:
        h5["data"] = series.values
        h5["meta/on"] = laser
        h5["meta/phi"] = angles
    out = tmp_path / "c.h5"
    spec = f"{src}?dataset=data"
    assert main(["stats", spec, "-o", str(out), "--laser-dataset", "meta/on",
                 "--angle-dataset", "meta/phi", "-a", "4", "-S", "pairs"]) == 0
    with h5py.File(out, "r") as h5:
        assert h5["masks_synced"].shape == (8, 40, 40)
    capsys.readouterr()
    assert main(["stats", spec, "-o", str(out), "--laser-dataset", "meta/nothing"]) == 1
    err = capsys.readouterr().err
    assert "custom.h5" in err and "meta/nothing" in err
    # without the options the default lauecollect/... datasets are absent: no laser data
    assert main(["stats", spec, "-o", str(out), "-S", "pairs"]) == 1
    assert "laser" in capsys.readouterr().err


def test_cli_on_real_dm_stack(dm_dir, tmp_path):
    from rsciio.digitalmicrograph import file_reader

    path = dm_dir / "test_stackbuilder_imagestack.dm3"
    stack = file_reader(str(path))[0]["data"]
    out = tmp_path / "dm__spots.h5"
    assert main(["stats", str(path), "-o", str(out), "-n", "34"]) == 0
    expected = direct_statistics(stack, 1)  # 34 % of 3 frames -> 1 removed
    with h5py.File(out, "r") as h5:
        assert h5["info"].attrs["n_removed"] == 1
        for k, name in enumerate(stats.STAT_NAMES):
            np.testing.assert_allclose(h5[f"stats/{name}"][()], expected[k], rtol=1e-12)
        assert h5["stats/max"].dtype == stack.dtype
        assert h5["masks_raw"].shape == stack.shape
