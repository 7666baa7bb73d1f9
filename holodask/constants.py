"""Physical constants and small pure formulas that need no other holodask module."""

from __future__ import annotations

import math

from scipy import constants as _c

from holodask.errors import ParameterError


def electron_wavelength_nm(voltage_kV: float) -> float:
    """Relativistic de Broglie wavelength (nm) of electrons accelerated by ``voltage_kV``.

    ``lambda = h / sqrt(2 m0 e U (1 + e U / (2 m0 c^2)))``; about 0.0019687 nm at 300 kV.
    """
    try:
        voltage_V = float(voltage_kV) * 1e3
    except (TypeError, ValueError):
        raise ParameterError(f"voltage: expected a number in kV, got {voltage_kV!r}") from None
    if not math.isfinite(voltage_V) or voltage_V <= 0:
        raise ParameterError(f"voltage: expected a positive acceleration voltage in kV, got {voltage_kV!r}")
    energy_J = _c.e * voltage_V
    momentum = math.sqrt(2.0 * _c.m_e * energy_J * (1.0 + energy_J / (2.0 * _c.m_e * _c.c**2)))
    return _c.h / momentum * 1e9


__all__ = ["electron_wavelength_nm"]
