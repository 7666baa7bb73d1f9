"""Electron-optical helpers: wavelength, carrier, sideband masks, MTF, propagation.

Conventions (those of the reference program):

* frequency grids are *unshifted* (FFT order) unless a name says ``shifted``;
* 2-vectors given by the user are ``(x, y)``; arrays are indexed ``[y, x]``;
* the ``cut_off2`` matrix is ``[[xx, xy], [yx, yy]]`` in 1/nm^2 and the normalised
  frequency is ``g^2 = q^T inv(cut_off2) q``;
* propagation by a defocus ``d`` multiplies the spectrum by ``exp(i pi lambda d q^2)``.

Masks, frequency grids and propagators are cached per shape.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from holodask import fft
from holodask.params import FilterSpec, MtfTerm

__all__ = [
    "wavelength_nm",
    "carrier_per_nm",
    "frequency_grid",
    "normalised_frequency2",
    "filter_function",
    "fresnel_line_weights",
    "mtf_array",
    "fourier_rescale",
    "fourier_upsample",
    "fourier_downsample",
    "defocus_kernel",
    "propagate",
]

# CODATA 2006 (what the reference uses)
_PLANCK_eVs = 4.13566733e-15
_SPEED_OF_LIGHT_m_s = 299792458.0
_ELECTRON_MASS_keV = 0.510998910e3


def wavelength_nm(voltage_kV: float) -> float:
    """Relativistic electron wavelength in nm for an acceleration voltage in kV."""
    voltage_kV = float(voltage_kV)
    return _PLANCK_eVs * _SPEED_OF_LIGHT_m_s * 1e6 / np.sqrt(
        voltage_kV * (2.0 * _ELECTRON_MASS_keV + voltage_kV)
    )


def carrier_per_nm(sideband_pos_px, image_shape, sampling_nm: float) -> tuple[float, float]:
    """Carrier frequency ``(x, y)`` in 1/nm of a sideband at ``(x, y)`` px of the centred FFT."""
    height, width = int(image_shape[0]), int(image_shape[1])
    x, y = float(sideband_pos_px[0]), float(sideband_pos_px[1])
    return ((x - width // 2) / width / sampling_nm, (y - height // 2) / height / sampling_nm)


@lru_cache(maxsize=64)
def _fftfreq(n: int, spacing: float) -> np.ndarray:
    out = np.fft.fftfreq(n, spacing)
    out.flags.writeable = False
    return out


def frequency_grid(shape, sampling_yx) -> tuple[np.ndarray, np.ndarray]:
    """Unshifted spatial frequencies ``(qy[:, None], qx[None, :])`` in 1/nm (float64)."""
    sy, sx = np.broadcast_to(np.asarray(sampling_yx, dtype=float), (2,))
    qy = _fftfreq(int(shape[0]), float(sy)).reshape(-1, 1)
    qx = _fftfreq(int(shape[1]), float(sx)).reshape(1, -1)
    return qy, qx


def normalised_frequency2(qy: np.ndarray, qx: np.ndarray, cut_off2_per_nm2) -> np.ndarray:
    """``g^2 = q^T inv(cut_off2) q`` for frequencies in 1/nm (broadcasting ``qy``, ``qx``)."""
    inverse = np.linalg.inv(np.asarray(cut_off2_per_nm2, dtype=float))
    return qx**2 * inverse[0, 0] + qy**2 * inverse[1, 1] + qx * qy * (inverse[0, 1] + inverse[1, 0])


def filter_function(g2: np.ndarray, filter_spec: FilterSpec) -> np.ndarray:
    """Sideband mask as float32 for squared normalised frequencies ``g2``.

    EDGE: ``g < 1``; GAUSSIAN: ``exp(-g^2/2)``; BUTTERWORTH(n): ``1/(1+g^(2n))``.
    """
    kind = (filter_spec.kind or "EDGE").upper()
    with np.errstate(over="ignore", under="ignore"):
        if kind == "EDGE":
            out = (g2 < 1.0).astype(np.float32)
        elif kind == "GAUSSIAN":
            out = np.exp(-0.5 * g2)
        elif kind == "BUTTERWORTH":
            order = abs(int(filter_spec.order))
            out = 1.0 / (1.0 + np.power(g2, order))
        elif kind == "NONE":
            out = np.ones_like(g2)
        else:
            raise ValueError(f"unknown filter kind {filter_spec.kind!r}")
    return np.asarray(out, dtype=np.float32)


#: order of the Butterworth profiles of the Fresnel line filter (across the line and at its gap)
FRESNEL_ORDER = 4


def fresnel_line_weights(qy: np.ndarray, qx: np.ndarray, carrier_xy_per_nm, fresnel) -> np.ndarray:
    """Factor (float64) suppressing a line through the sideband: the Fresnel-fringe streak.

    The Fresnel fringes of the biprism wire's edges run parallel to the wire,
    like the interference fringes; their spectrum is a streak perpendicular to
    the wire, i.e. along the carrier, through the centre band and through each
    sideband. ``qy``/``qx`` are frequencies (1/nm) relative to the sideband's
    centre (broadcasting). With ``d`` the distance from the line through the
    centre in the direction ``fresnel.angle_deg`` (default: the carrier's
    direction) and ``a`` the distance along it, the factor is
    ``1 - B(d / (width/2)) * (1 - B(a / gap))`` with the Butterworth profile
    ``B(g) = 1 / (1 + g^8)``: 0 on the line, 1 off it, and 1 within ``gap``
    (default: the width) of the centre, which holds the object's lowest frequencies.
    """
    if fresnel.angle_deg is None:
        angle = float(np.arctan2(float(carrier_xy_per_nm[1]), float(carrier_xy_per_nm[0])))
    else:
        angle = float(np.deg2rad(fresnel.angle_deg))
    qy = np.asarray(qy, dtype=np.float64)
    qx = np.asarray(qx, dtype=np.float64)
    along = qx * np.cos(angle) + qy * np.sin(angle)
    across = qy * np.cos(angle) - qx * np.sin(angle)
    half_width = 0.5 * float(fresnel.width_per_nm)
    gap = float(fresnel.gap_per_nm if fresnel.gap_per_nm is not None else fresnel.width_per_nm)
    order = 2 * FRESNEL_ORDER
    with np.errstate(over="ignore"):
        line = 1.0 / (1.0 + np.power(across / half_width, order))
        outside_gap = 1.0 - 1.0 / (1.0 + np.power(along / gap, order))
    return 1.0 - line * outside_gap


def mtf_array(terms, shape, binning: int = 1) -> np.ndarray:
    """Parametrised MTF on the unshifted frequency grid of ``shape`` (float32).

    Terms are summed (CONSTANT ``A``, GAUSSIAN ``A exp(-B q^2)``, LORENTZIAN
    ``A / (B + q^2)``) with ``q = fftfreq(n, binning)`` (Nyquist of the unbinned
    detector at 0.5) and multiplied by ``sinc(qx binning) sinc(qy binning)``.
    """
    binning = float(binning or 1)
    qy = np.fft.fftfreq(int(shape[0]), binning).reshape(-1, 1)
    qx = np.fft.fftfreq(int(shape[1]), binning).reshape(1, -1)
    q2 = qx**2 + qy**2
    total = np.zeros(tuple(int(s) for s in shape), dtype=float)
    for term in terms:
        kind = term.kind.upper() if isinstance(term, MtfTerm) else str(term[0]).upper()
        coefficients = term.coefficients if isinstance(term, MtfTerm) else tuple(term[1:])
        if kind == "CONSTANT":
            total += coefficients[0]
        elif kind == "GAUSSIAN":
            total += coefficients[0] * np.exp(-coefficients[1] * q2)
        elif kind == "LORENTZIAN":
            total += coefficients[0] / (coefficients[1] + q2)
        else:
            raise ValueError(f"unknown MTF term {kind!r}")
    total *= np.sinc(qx * binning) * np.sinc(qy * binning)
    return total.astype(np.float32)


_scratch = threading.local()


def _transform_buffers(kind: str, shape, axis: int | None = None, n: int | tuple | None = None):
    """Input buffer and runner of one *unnormalised* transform, for kernels that
    fill the input in place and read the output without copies.

    ``kind``: fft2, ifft2, irfft2 (onto the shape ``n``), or the 1-D fft,
    ifft, rfft, irfft (onto ``n`` points) along ``axis``. Returns ``(input,
    run)``; ``run()`` returns the output array. Both belong to this thread and
    are overwritten by the next transform of the same kind and shape here: copy
    what must outlive it. An irfft or irfft2 may overwrite its input.
    """
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(np.float32 if kind == "rfft" else np.complex64)
    if fft.backend() == "pyfftw":
        out_shape = None if n is None else tuple(int(v) for v in n) if kind == "irfft2" else int(n)
        plan = fft._plan(kind, shape, dtype, out_shape=out_shape, axis=axis)

        def run():
            plan.execute()
            return plan.output_array

        return plan.input_array, run
    import scipy.fft

    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    buffer = buffers.get((kind, shape, dtype.str))
    if buffer is None:
        buffer = buffers[(kind, shape, dtype.str)] = np.empty(shape, dtype=dtype)
    function = getattr(scipy.fft, kind)
    options = {"workers": fft.get_fft_threads(), "norm": "forward" if kind.startswith("i") else "backward"}
    if axis is not None:
        options["axis"] = axis
    if n is not None and kind == "irfft2":
        options["s"] = tuple(int(v) for v in n)
    elif n is not None:
        options["n"] = int(n)
    out_dtype = np.float32 if kind.startswith("irfft") else np.complex64

    def run():
        return np.asarray(function(buffer, **options), dtype=out_dtype)

    return buffer, run


def _transpose_into(out: np.ndarray, a: np.ndarray) -> None:
    """``out[...] = a.T``, in blocks of a few rows of ``a`` where its rows lie a
    multiple of 2 KiB apart (read column-wise, such rows thrash the cache)."""
    if a.strides[0] % 2048 or a.shape[0] <= 8:
        out[...] = a.T
        return
    for start in range(0, a.shape[0], 8):
        out[:, start:start + 8] = a[start:start + 8].T


def _centred_window(n_from: int, n_to: int) -> tuple[slice, slice]:
    half = (min(n_from, n_to) - 1) // 2
    return slice(n_from // 2 - half, n_from // 2 + half + 1), slice(n_to // 2 - half, n_to // 2 + half + 1)


def fourier_rescale(wave: np.ndarray, shape, once: bool = False) -> np.ndarray:
    """Resample a complex wave to ``shape`` by cropping / zero-padding its spectrum.

    Keeps the centred ``2*half+1`` frequencies common to both sizes (the
    reference's convention). Like the reference the transforms are not
    renormalised, so amplitudes scale by ``wave.size / prod(shape)``.
    ``once``: done once per run (FFT plans are not measured).
    """
    shape = (int(shape[0]), int(shape[1]))
    spectrum = np.fft.fftshift(fft.fft2(wave, once=once))
    src_y, dst_y = _centred_window(wave.shape[0], shape[0])
    src_x, dst_x = _centred_window(wave.shape[1], shape[1])
    padded = np.zeros(shape, dtype=np.complex64)
    padded[dst_y, dst_x] = spectrum[src_y, src_x]
    return fft.ifft2(np.fft.ifftshift(padded), once=once)


def _window_indices(n: int, half: int) -> np.ndarray:
    """Unshifted indices of the centred frequencies -half..half of an n-point FFT."""
    return np.arange(-half, half + 1) % n


def fourier_upsample(wave: np.ndarray, shape) -> np.ndarray:
    """:func:`fourier_rescale` to a larger ``shape``, skipping the transforms of zeros.

    Only the columns that hold the kept frequencies are transformed along y; a
    large transform of a mostly empty spectrum costs little more than half of
    a full one.
    """
    shape = (int(shape[0]), int(shape[1]))
    if shape[0] < wave.shape[0] or shape[1] < wave.shape[1]:
        return fourier_rescale(wave, shape)
    spectrum = fft.fft2(wave)
    half_y, half_x = (min(wave.shape[0], shape[0]) - 1) // 2, (min(wave.shape[1], shape[1]) - 1) // 2
    src_y, dst_y = _window_indices(wave.shape[0], half_y), _window_indices(shape[0], half_y)
    src_x, dst_x = _window_indices(wave.shape[1], half_x), _window_indices(shape[1], half_x)
    # columns that hold kept frequencies first (few, short), then every row (contiguous);
    # the 1/ny and 1/nx of ifft2 come from the two 1-D transforms
    columns = np.zeros((shape[0], len(dst_x)), dtype=np.complex64)
    columns[dst_y, :] = spectrum[np.ix_(src_y, src_x)]
    columns = fft.ifft_axis(columns, 0)
    full = np.zeros(shape, dtype=np.complex64)
    full[:, dst_x] = columns
    return fft.ifft_axis(full, 1)


def fourier_downsample(big: np.ndarray, shape) -> np.ndarray:
    """:func:`fourier_rescale` to a smaller ``shape``, computing only the kept frequencies."""
    shape = (int(shape[0]), int(shape[1]))
    if shape[0] > big.shape[0] or shape[1] > big.shape[1]:
        return fourier_rescale(big, shape)
    half_y, half_x = (min(big.shape[0], shape[0]) - 1) // 2, (min(big.shape[1], shape[1]) - 1) // 2
    src_y, dst_y = _window_indices(big.shape[0], half_y), _window_indices(shape[0], half_y)
    src_x, dst_x = _window_indices(big.shape[1], half_x), _window_indices(shape[1], half_x)
    columns = np.ascontiguousarray(fft.fft_axis(big, 1)[:, src_x])
    kept = fft.fft_axis(columns, 0)[src_y, :]
    small = np.zeros(shape, dtype=np.complex64)
    small[np.ix_(dst_y, dst_x)] = kept
    return fft.ifft2(small)


@lru_cache(maxsize=32)
def _q2_grid(shape: tuple[int, int], sampling_yx: tuple[float, float]) -> np.ndarray:
    qy, qx = frequency_grid(shape, sampling_yx)
    out = qx**2 + qy**2
    out.flags.writeable = False
    return out


def defocus_kernel(shape, sampling_yx, defocus_nm: float, wavelength: float) -> np.ndarray:
    """Fourier-space propagator ``exp(i pi lambda d q^2)`` (complex64, unshifted)."""
    sampling_yx = tuple(float(s) for s in np.broadcast_to(np.asarray(sampling_yx, float), (2,)))
    q2 = _q2_grid((int(shape[0]), int(shape[1])), sampling_yx)
    return np.exp(1j * np.pi * wavelength * defocus_nm * q2).astype(np.complex64)


def propagate(wave: np.ndarray, defocus_nm: float, voltage_kV: float, sampling_yx) -> np.ndarray:
    """Propagate a complex wave by ``defocus_nm`` (positive: towards Gaussian focus of the series)."""
    if defocus_nm == 0.0:
        return np.asarray(wave, dtype=np.complex64).copy()
    kernel = defocus_kernel(wave.shape, sampling_yx, defocus_nm, wavelength_nm(voltage_kV))
    return fft.ifft2(fft.fft2(wave) * kernel).astype(np.complex64)
