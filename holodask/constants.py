"""Physical constants and small pure formulas that need no other holodask module."""

from __future__ import annotations

import math

from holodask.errors import ParameterError

#: CODATA 2022 values (as scipy.constants has them; importing that takes 0.1 s)
ELEMENTARY_CHARGE_C = 1.602176634e-19
ELECTRON_MASS_KG = 9.1093837139e-31
PLANCK_J_S = 6.62607015e-34
SPEED_OF_LIGHT_M_S = 299792458.0


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
    energy_J = ELEMENTARY_CHARGE_C * voltage_V
    rest_energy_J = ELECTRON_MASS_KG * SPEED_OF_LIGHT_M_S**2
    momentum = math.sqrt(2.0 * ELECTRON_MASS_KG * energy_J * (1.0 + energy_J / (2.0 * rest_energy_J)))
    return PLANCK_J_S / momentum * 1e9


__all__ = ["electron_wavelength_nm"]
