"""The example parameter files in configs/ are valid and say what their comments claim."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from holodask.params import load_parameters

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _load(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unknown keys, no deprecated forms
        return load_parameters(CONFIGS / name)


def test_series_with_empty_and_defocus():
    p = _load("series_with_empty_and_defocus.json")
    assert len(p.object_series.specs) == 59  # 1..60 without 17
    assert 17 not in p.object_series.indices
    assert p.object_series.specs[0].endswith("object_001.dm3")
    assert len(p.empty_series.specs) == 10
    assert p.adjust_defocus and p.defocus_first_nm == -200.0 and p.defocus_step_nm == 10.0
    assert p.output_prefix == "run1/" and p.output_series
    assert p.filter_func.kind == "BUTTERWORTH" and p.filter_func.order == 14
    assert [t.kind for t in p.mtf] == ["GAUSSIAN", "CONSTANT"]


def test_empty_only():
    p = _load("empty_only.json")
    assert p.object_series is None
    assert len(p.empty_series.specs) == 3 and p.empty_series.indices == (0, 1, 2)
    assert p.sampling_nm == pytest.approx(0.9197516) and p.voltage_kV == 300


def test_empty_override():
    p = _load("empty_override.json")
    assert p.empty_override.endswith("empty_average.hdf5?dataset=empty")
    assert p.only_phase and p.filter_func.kind == "GAUSSIAN"
    assert p.object_series.indices == tuple(range(30))


def test_synthesized_empty():
    p = _load("synthesized_empty.json")
    assert p.synthesize_empty and len(p.camera_distortions) == 2
    np.testing.assert_allclose(p.cut_off2_per_nm2, [[0.0049, 0.0005], [0.0005, 0.0036]])
    assert not p.cut_off_given


@pytest.mark.parametrize("name", ["slurm.yaml", "pbs.yaml"])
def test_cluster_configs_exist(name):
    assert (CONFIGS / name).is_file()
