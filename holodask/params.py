"""Parameter files of the reference program, parsed once into a typed object.

INTERFACE CONTRACT (skeleton): the dataclasses below are the typed parameter
object every other module reads. Nothing downstream reads raw dictionaries.
``load_parameters`` / ``parse_parameters`` are filled in by the parameter work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from holodask.errors import ParameterError  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class FilterSpec:
    """Sideband mask function: ``kind`` is "EDGE", "GAUSSIAN" or "BUTTERWORTH"."""

    kind: str = "EDGE"
    order: float | None = None  # BUTTERWORTH only

    def as_attribute(self) -> list[str]:
        """Value of the ``reconstructionMaskType`` output attribute."""
        if self.kind == "BUTTERWORTH":
            return [self.kind, f"{self.order:g}"]
        return [self.kind]


@dataclass(frozen=True)
class MtfTerm:
    """One term of the parametrised MTF: kind "CONSTANT", "GAUSSIAN" or "LORENTZIAN"."""

    kind: str
    coefficients: tuple[float, ...]


@dataclass(frozen=True)
class SeriesSpec:
    """One hologram series after expanding patterns, ranges and exclusions.

    ``indices[k]`` is the series index of file spec ``specs[k]`` (a string
    ``path?key=value&...`` with ``path`` already made absolute).
    """

    specs: tuple[str, ...]
    indices: tuple[int, ...]


@dataclass(frozen=True)
class HoloParams:
    """All parameters of a run, validated, with defaults applied.

    Optional values that are "taken from the files" are ``None`` here.
    """

    # series
    object_series: SeriesSpec | None = None
    empty_series: SeriesSpec | None = None
    empty_override: str | None = None
    synthesize_empty: bool = False
    camera_distortions: tuple[str, str] | None = None
    # sizes and regions (px)
    object_size: int | None = None
    empty_size: int | None = None
    roi: tuple[int, int, int, int] | None = None  # left, top, right, bottom; None: full image
    align_roi: tuple[int, int, int, int] | None = None  # None: same as roi
    # optics / calibration (None: from files)
    sampling_nm: float | None = None
    voltage_kV: float | None = None
    binning: int | None = None
    sideband_pos_px: tuple[float, float] = (0.0, 0.0)  # x, y in the centred FFT
    cut_off2_per_nm2: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))  # 2x2
    cut_off_given: bool = True  # True when given as scalar cut_off
    align_cut_off_per_nm: float = 0.0
    filter_func: FilterSpec = field(default_factory=FilterSpec)
    mtf: tuple[MtfTerm, ...] | None = None
    # switches
    adjust_defocus: bool = False
    adjust_shift: bool = True
    adjust_tilt: bool = False
    enable_raw_alignment: bool = True
    only_phase: bool = False
    only_align: bool = False
    # focal series
    defocus_first_nm: float = 0.0
    defocus_step_nm: float = 0.0
    # outputs
    output_name: str | None = None
    output_prefix: str = ""
    output_series: bool = False
    output_aligned: bool = False
    output_series_as_dataset: bool = False
    output_qpimage: str | None = None
    # holodask extensions
    outlier_cutoff: float | None = None
    # provenance
    basepath: Path = Path(".")
    raw: dict[str, Any] = field(default_factory=dict)  # the parsed JSON as given

    @property
    def cut_off_per_nm(self) -> float:
        """Isotropic cut-off (geometric mean radius of ``cut_off2``)."""
        return float(np.sqrt(np.sqrt(abs(np.linalg.det(self.cut_off2_per_nm2)))))
