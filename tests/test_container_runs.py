"""``holodask run`` on one hologram series stored in different containers gives one result.

The simulator's own files (one HDF5 file per hologram) are the baseline; the
same frames are written by hand into an image-files YAML list of TIFF files,
an HDF5 image-series group, a sparse frame cache (``.npz``, threshold 0, and
the YAML form through holodask's writer). A single ``object_names`` entry
naming the whole container (a string without placeholder, or a one-element
list) is the series, with indices 0..N-1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import h5py
import json5
import tifffile

from holodask.cli import main  # noqa: E402
from holodask.errors import ParameterError  # noqa: E402
from holodask.io.imageseries import write_frame_cache  # noqa: E402
from holodask.params import load_parameters  # noqa: E402
from holodask.results import open_result  # noqa: E402
from holodask.simulate import simulate_series  # noqa: E402

N_FRAMES = 5
SIZE_PX = 128


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A noisy drifting series (uint16 counts), its frames, and the baseline run."""
    folder = tmp_path_factory.mktemp("containers")  # containers beside the simulator's files
    series = simulate_series(folder, n_frames=N_FRAMES, size_px=SIZE_PX, object_size_px=48,
                             dose_e_per_px=300.0, drift_step_px=1.5, n_empty=2, seed=5)
    params = json5.loads(Path(series.params_path).read_text())
    frames = []
    for spec in series.object_specs:
        with h5py.File(spec.partition("?")[0], "r") as f:
            frames.append(f["hologram"][()])
    empties = []
    for spec in series.empty_specs:
        with h5py.File(spec.partition("?")[0], "r") as f:
            empties.append(f["hologram"][()])
    assert frames[0].dtype == np.uint16
    baseline = _run(folder, "baseline", params, folder)
    return folder, series, params, np.stack(frames), np.stack(empties), baseline


def _run(folder: Path, name: str, params: dict, path: Path):
    """``holodask run`` on ``params`` (relative names from ``path``); the opened result."""
    params = dict(params, path=str(path), output_name=str(folder / f"{name}.hdf5"))
    param_file = folder / f"{name}.json"
    param_file.write_text(json.dumps(params))
    assert main(["run", str(param_file)]) == 0
    return open_result(folder / f"{name}.hdf5").load()


def _container_params(params: dict, object_names, empty_names=None) -> dict:
    out = {k: v for k, v in params.items() if not k.startswith("object_")}
    out["object_names"] = object_names
    out["object_size"] = params["object_size"]
    if empty_names is not None:
        out = {k: v for k, v in out.items() if not k.startswith("empty_") or k == "empty_size"}
        out["empty_names"] = empty_names
    return out


def _assert_same_result(result, baseline, what: str) -> None:
    scale = float(np.mean(np.abs(baseline["data"].values)))
    difference = float(np.max(np.abs(result["data"].values - baseline["data"].values)))
    assert difference <= 1e-5 * scale, f"{what}: data differs by {difference:g} (mean amplitude {scale:g})"
    np.testing.assert_array_equal(result["frame"].values, np.arange(N_FRAMES))
    np.testing.assert_array_equal(result["raw_shift_px"].values, baseline["raw_shift_px"].values)
    for name in ("shift_nm", "tilt_per_nm", "factor", "error"):
        np.testing.assert_allclose(result[name].values, baseline[name].values, rtol=1e-5, atol=1e-7,
                                   err_msg=f"{what}: {name}")


def test_baseline_reconstructs_the_object(simulated):
    _, series, _, _, _, baseline = simulated
    assert baseline.sizes["frame"] == N_FRAMES
    error = series.phase_error_rad(baseline["data"].values)
    assert error < 0.1, f"baseline phase error {error:.3f} rad"


def test_image_files_yaml_of_tiffs(simulated):
    folder, _, params, frames, _, baseline = simulated
    tiff_dir = folder / "tiffs"
    tiff_dir.mkdir()
    for k, frame in enumerate(frames):
        tifffile.imwrite(tiff_dir / f"holo_{k:02d}.tif", frame)
    (folder / "series.yml").write_text("image-files:\n  directory: tiffs\n  files: holo_*.tif\nmeta: {}\n")
    result = _run(folder, "tiffs", _container_params(params, "series.yml?type=image-files"), folder)
    _assert_same_result(result, baseline, "image-files YAML")


def test_hdf5_image_series_group(simulated):
    folder, _, params, frames, empties, baseline = simulated
    with h5py.File(folder / "stack.h5", "w") as f:
        f.create_group("holograms").create_dataset("images", data=frames)
        f.create_group("empty").create_dataset("images", data=empties)
    # object series as one-element list, empty series as a plain string: both whole containers
    result = _run(folder, "stack", _container_params(params, ["stack.h5?path=holograms"], "stack.h5?path=empty"),
                  folder)
    _assert_same_result(result, baseline, "HDF5 stack")
    np.testing.assert_allclose(result["empty"].values, baseline["empty"].values, rtol=0, atol=1e-6)


def test_frame_cache_npz_threshold_zero(simulated):
    folder, _, params, frames, _, baseline = simulated
    arrays = {"shape": np.array(frames.shape[1:]), "nframes": np.array(len(frames)),
              "dtype": np.array(str(frames.dtype))}
    for k, frame in enumerate(frames):
        rows, cols = np.nonzero(frame > 0)
        arrays[f"{k}_row"], arrays[f"{k}_col"], arrays[f"{k}_data"] = rows, cols, frame[rows, cols]
    np.savez(folder / "cache.npz", **arrays)
    result = _run(folder, "cache", _container_params(params, "cache.npz"), folder)
    _assert_same_result(result, baseline, "frame cache (npz)")


def test_frame_cache_yaml_written_by_holodask(simulated):
    folder, _, params, frames, _, baseline = simulated
    with pytest.warns(UserWarning):  # holograms are not sparse: the writer says so
        write_frame_cache(iter(frames), folder / "cache_yaml.yml", threshold=0, output_yaml=True)
    result = _run(folder, "cache_yaml", _container_params(params, "cache_yaml.yml?type=frame-cache"), folder)
    _assert_same_result(result, baseline, "frame cache (YAML)")


def test_container_name_in_parameters(tmp_path):
    base = {"sideband_pos": [10, 10], "cut_off": 1.0, "object_size": 32}
    p = load_parameters({**base, "object_names": "stack.h5?path=holograms"}, tmp_path)
    assert p.object_series.specs == (f"{tmp_path / 'stack.h5'}?path=holograms",)
    assert p.object_series.indices == (0,)
    # a placeholder still needs the range; exclusions need a pattern
    with pytest.raises(ParameterError, match="'object_first' and 'object_last' are required"):
        load_parameters({**base, "object_names": "h_%03d.h5?dataset=x"}, tmp_path)
    with pytest.raises(ParameterError, match="'object_exclude' needs 'object_first'/'object_last'"):
        load_parameters({**base, "object_names": "stack.h5?path=h", "object_exclude": [1]}, tmp_path)
