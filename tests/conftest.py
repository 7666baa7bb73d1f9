"""Shared fixtures: the real data folder ``../shared/data`` beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HOLODASK_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))

FE_OBJECT = SHARED_DATA / "holograms" / "fe_needle_object.hdf5"
FE_REFERENCE = SHARED_DATA / "holograms" / "fe_needle_reference.hdf5"
FE_OBJECT_SPEC = f"{FE_OBJECT}?dataset=Experiments/Hologram of Fe needle/data"
FE_REFERENCE_SPEC = f"{FE_REFERENCE}?dataset=Experiments/Vacuum reference hologram/data"
DM_DIR = SHARED_DATA / "dm"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set HOLODASK_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dm_dir(shared_data) -> Path:
    if not DM_DIR.is_dir():
        pytest.skip(f"Digital Micrograph test files {DM_DIR} are absent")
    return DM_DIR


@pytest.fixture(scope="session")
def fe_needle(shared_data) -> tuple[str, str]:
    """File specs of the real Fe-needle object and vacuum holograms."""
    if not (FE_OBJECT.exists() and FE_REFERENCE.exists()):
        pytest.skip(f"Fe-needle holograms are absent from {shared_data / 'holograms'}")
    return FE_OBJECT_SPEC, FE_REFERENCE_SPEC
