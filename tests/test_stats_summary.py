"""``holodask stats`` on a hologram series: hot/dead pixels, cosmic rays, frame outliers.

A simulated series with known hot pixels gets two dead pixels (0 in every
frame), a burst of outlier pixels in frame 5 and a 30 % brighter frame 9;
the printed summary must name exactly these (the burst also raises frame
5's mean intensity).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from holodask.cli import main
from holodask.simulate import simulate_series
from holodask.stats import defect_pixels, outlying_frames

N_FRAMES = 12
DEAD_XY = [(20, 10), (60, 50)]


@pytest.fixture(scope="module")
def series_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stats-summary")
    series = simulate_series(folder, n_frames=N_FRAMES, size_px=96, object_size_px=32, dose_e_per_px=300.0,
                             n_hot_pixels=4, seed=21)
    frames = []
    for spec in series.object_specs:
        with h5py.File(spec.partition("?")[0], "r") as f:
            frames.append(f["hologram"][()].astype(np.float32))
    frames = np.stack(frames)
    for x, y in DEAD_XY:
        frames[:, y, x] = 0
    rng = np.random.default_rng(4)
    burst = rng.choice(96 * 96, size=150, replace=False)
    frames[5].ravel()[burst] += 20 * frames.mean()
    frames[9] *= 1.3
    path = folder / "holograms.h5"
    with h5py.File(path, "w") as f:
        f["holograms/images"] = frames
    return path, series.truth["hot_pixels_xy"]


def test_stats_prints_the_series_quality(series_file, capsys):
    path, hot_xy = series_file
    output = path.with_name("out__spots.h5")
    assert main(["stats", f"{path}?path=holograms", "-o", str(output), "-c", "6", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"hot pixels:  {len(hot_xy)} at [x, y]" in out
    for x, y in hot_xy:
        assert f"[{x}, {y}]" in out
    assert "dead pixels: 2 at [x, y] [20, 10] [60, 50]" in out
    assert "frames with many outlier pixels: 5, 9\n" in out
    assert "outlying frames: 5, 9\n" in out  # the burst raises frame 5's mean too
    with h5py.File(output, "r") as f:
        assert f["info"].attrs["n_hot_pixels"] == len(hot_xy)
        assert f["info"].attrs["n_dead_pixels"] == 2
        counts = f["masks_raw"][()].reshape(N_FRAMES, -1).sum(axis=1)
    assert counts[5] >= 150 and int(np.argmax(counts)) == 9  # the brighter frame exceeds avg + 6 std most
    assert f"median {np.median(counts):g}, max {counts[9]} (frame 9), total {counts.sum()}" in out

def test_defect_pixels_kernel():
    rng = np.random.default_rng(0)
    avg = rng.normal(1000.0, 5.0, (40, 50))
    std = np.full_like(avg, 30.0)
    avg[3, 4] += 500.0
    avg[10, 11] -= 400.0
    std[20, 30] = 0.0
    hot, dead = defect_pixels(avg, std)
    assert np.argwhere(hot).tolist() == [[3, 4]]
    assert np.argwhere(dead).tolist() == [[10, 11], [20, 30]]


def test_outlying_frames_kernel():
    values = np.array([10.0, 11, 9, 10, 12, 10, 40, 9, 11])
    assert outlying_frames(values).tolist() == [6]
    assert outlying_frames(np.full(8, 3.0)).tolist() == []
    assert outlying_frames([1.0, 100.0]).tolist() == []  # too few frames to tell
