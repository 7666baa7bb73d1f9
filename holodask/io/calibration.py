"""Unit conversion of pixel calibrations found in files."""

from __future__ import annotations

import math

__all__ = ["LENGTH_UNITS_NM", "length_to_nm", "to_float", "to_text"]

#: length unit -> nanometres per unit (the spellings files use)
LENGTH_UNITS_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "µm": 1e3,  # micro sign
    "μm": 1e3,  # Greek mu
    "micron": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "å": 0.1,  # A with ring
    "Å": 0.1,  # angstrom sign
    "a": 0.1,
    "angstrom": 0.1,
    "pm": 1e-3,
    "mm": 1e6,
    "m": 1e9,
}


def length_to_nm(scale: float | None, unit: str | None) -> float | None:
    """Convert a pixel size ``scale`` given in ``unit`` to nm.

    Returns ``None`` where the scale is missing, not a positive finite number,
    or the unit is not a length unit (e.g. ``1/nm`` or an empty unit).
    """
    value = to_float(scale)
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    key = (unit or "").strip()
    factor = LENGTH_UNITS_NM.get(key, LENGTH_UNITS_NM.get(key.lower()))
    if factor is None:
        return None
    return value * factor


def to_float(value) -> float | None:
    """``value`` as a float (first element of a sequence), or ``None``."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    try:
        if hasattr(value, "__len__") and not isinstance(value, str):
            if len(value) == 0:
                return None
            value = list(value)[0]
        return float(value)
    except (TypeError, ValueError):
        return None


def to_text(value) -> str | None:
    """``value`` as a non-empty string, or ``None``."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    text = str(value).strip()
    return text or None
