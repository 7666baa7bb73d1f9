"""Simulated off-axis electron hologram series with known truth.

:func:`simulate_series` writes an object series and an empty (vacuum) series
of holograms, the truth behind them (``truth.npz``) and a parameter file in the
reference program's format (``params.json``) that reconstructs them. Tests,
benchmarks and the demo of holodask run on such series, and so can the
reference program ``holoaverage``, which makes it the oracle for parity tests.

Conventions (the reference program's, checked by running it):

* The sideband at ``sideband_pos = (W//2 + carrier_x, H//2 + carrier_y)`` of
  ``fftshift(fft2(hologram))`` holds the object wave ``psi`` itself (not its
  conjugate): the hologram's interference term is
  ``2 mu Re(psi * exp(2 pi i (carrier_x x / W + carrier_y y / H)))``.
* Defocus: frame ``k`` shows the object wave propagated with the Fresnel
  factor ``exp(-i pi lambda defocus_nm[k] q^2)``; the reference, given
  ``defocus_first``/``defocus_step``, multiplies by ``exp(+i pi lambda D q^2)``
  and brings every frame back to focus.
* Drift: frame ``k`` shows the object moved by ``+drift_px[k]`` (x, y) pixels
  relative to frame 0, i.e. ``psi_k(r) = psi(r - drift_px[k])`` (a Fourier
  shift, sub-pixel exact). ``drift_px[0]`` is zero.

Everything here is plain numpy; no Dask, no holodask pipeline.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from holodask.errors import InputFileError, ParameterError

__all__ = [
    "SimulatedSeries",
    "simulate_series",
    "electron_wavelength_nm",
    "make_object_wave",
    "make_illumination",
    "specimen_mask",
    "vacuum_edge_px",
    "changed_object_wave",
    "propagate_and_shift",
    "hologram_intensity",
    "detector_mtf",
    "fourier_resample",
    "DEFAULT_MTF",
    "NOISE_FREE_COUNTS",
]

#: MTF used by ``holodask simulate --mtf`` (reference format; q in 1/px, Nyquist 0.5)
DEFAULT_MTF = [["GAUSSIAN", 0.6, 20.0], ["CONSTANT", 0.4]]

#: mean vacuum intensity (counts per pixel) of noise-free holograms
NOISE_FREE_COUNTS = 1000.0

_SEED_STREAMS = (
    "object",
    "illumination",
    "drift",
    "biprism",
    "contrast",
    "carrier",
    "noise",
    "hot_pixels",
    "cosmic_rays",
    "texture",
)


# --------------------------------------------------------------------------
# pure per-frame kernels
# --------------------------------------------------------------------------


def electron_wavelength_nm(voltage_kV: float) -> float:
    """Relativistic electron wavelength in nm for an acceleration voltage in kV."""
    planck_eVs = 4.135667696e-15
    speed_of_light_m_s = 299792458.0
    electron_mass_keV = 510.99895
    hc_keV_nm = planck_eVs * speed_of_light_m_s * 1e6  # keV * nm
    return hc_keV_nm / math.sqrt(voltage_kV * (2.0 * electron_mass_keV + voltage_kV))


def _frequencies_px(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """FFT frequencies (fy, fx) in cycles per pixel, broadcastable."""
    fy = np.fft.fftfreq(shape[0]).reshape(-1, 1)
    fx = np.fft.fftfreq(shape[1]).reshape(1, -1)
    return fy, fx


def _smooth_lowpass(shape, cut_off_px: float) -> np.ndarray:
    """Raised-cosine low pass (unshifted FFT layout): 1 below 0.75 cut-off, 0 above it.

    ``cut_off_px`` is a radius in FFT pixels of the full frame.
    """
    fy, fx = _frequencies_px(shape)
    radius_px = np.hypot(fy * shape[0], fx * shape[1])
    inner = 0.75 * cut_off_px
    t = np.clip((radius_px - inner) / max(cut_off_px - inner, 1e-9), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def make_object_wave(
    size_px: int,
    band_limit_px: float,
    rng: np.random.Generator,
    n_particles: int = 6,
    phase_range_rad: float = 1.6,
    texture_contrast: float = 0.0,
    texture_rng: np.random.Generator | None = None,
    vacuum_fraction: float = 0.0,
) -> np.ndarray:
    """A smooth, band-limited complex object wave relative to vacuum.

    A few Gaussian "particles" in the central part of the field, each with a
    phase shift and a weak absorption (so the centre band has contrast for raw
    alignment), then low-passed in Fourier space so that nothing lies beyond
    ``band_limit_px`` (FFT pixels of the ``size_px`` grid). Far from the
    particles the wave is 1.

    ``texture_contrast`` > 0 adds an amorphous support film: a random,
    band-limited absorption texture of that RMS (and a phase texture of the
    same RMS in rad), drawn from ``texture_rng``. Like a real specimen it gives
    the centre band contrast at every spatial frequency up to the band limit,
    which the raw alignment's phase correlation needs on noisy holograms.

    ``vacuum_fraction`` > 0 leaves the columns ``x < vacuum_fraction * size_px``
    as vacuum, like the edge of a specimen: the particles are spread over the
    other columns, and the specimen (particles and texture) ends at both sides
    of the vacuum band with a raised-cosine edge of :func:`vacuum_edge_px`
    (the field is periodic). Inside the band, away from the edges, the wave is 1
    (to the ringing of the band limit). 0 (default): no band, as before.

    Returns a complex128 array ``(size_px, size_px)``.
    """
    shape = (size_px, size_px)
    f_max = band_limit_px / size_px  # cycles per px
    sigma_min_px = 0.5 / max(f_max, 1e-9)
    y, x = np.mgrid[0:size_px, 0:size_px].astype(float)
    profile_sum = np.zeros(shape)
    phase = np.zeros(shape)
    absorption = np.zeros(shape)
    edge_px = vacuum_edge_px(band_limit_px, size_px)
    for i in range(n_particles):
        cx, cy = rng.uniform(0.32, 0.68, size=2) * size_px
        if vacuum_fraction > 0:  # the particles' x moved into the specimen's columns
            start, stop = vacuum_fraction * size_px + edge_px, size_px - edge_px
            cx = start + (cx / size_px - 0.32) / 0.36 * max(stop - start, 0.0)
        sigma_px = sigma_min_px * rng.uniform(1.0, 1.6)
        profile = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sigma_px**2))
        sign = 1.0 if i % 3 != 2 else -0.5
        phase += sign * rng.uniform(0.6, 1.0) * profile
        absorption += rng.uniform(0.15, 0.3) * profile
        profile_sum += profile
    span = phase.max() - phase.min()
    if span > 0:
        phase *= phase_range_rad / span
    if texture_contrast > 0:
        rng_texture = texture_rng if texture_rng is not None else rng
        lowpass = _smooth_lowpass(shape, band_limit_px)
        for target in (absorption, phase):
            field = np.fft.ifft2(np.fft.fft2(rng_texture.normal(size=shape)) * lowpass).real
            target += texture_contrast * field / max(field.std(), 1e-12)
    if vacuum_fraction > 0:
        specimen = specimen_mask(size_px, vacuum_fraction, edge_px)
        absorption, phase = absorption * specimen, phase * specimen
    wave = np.exp(-absorption + 1j * phase)
    spectrum = np.fft.fft2(wave) * _smooth_lowpass(shape, band_limit_px)
    return np.fft.ifft2(spectrum)


def vacuum_edge_px(band_limit_px: float, size_px: int) -> float:
    """Width (px) of the specimen's edge next to the vacuum band of :func:`make_object_wave`:
    two periods of the band limit, at least 4 px."""
    return max(4.0, 2.0 * size_px / max(band_limit_px, 1e-9))


def specimen_mask(size_px: int, vacuum_fraction: float, edge_px: float) -> np.ndarray:
    """(1, size_px) row: 0 in the vacuum band ``x < vacuum_fraction * size_px``, 1 in the
    specimen, raised-cosine edges of ``edge_px`` inside the specimen at both ends."""
    x = np.arange(size_px, dtype=float)
    band = vacuum_fraction * size_px
    rise = np.clip((x - band) / edge_px, 0.0, 1.0)
    fall = np.clip((size_px - x) / edge_px, 0.0, 1.0)
    ramp = np.minimum(rise, fall)
    return (0.5 - 0.5 * np.cos(np.pi * ramp))[np.newaxis, :]
def changed_object_wave(wave: np.ndarray, phase_scale: float, band_limit_px: float) -> np.ndarray:
    """The object wave with its phase scaled by ``phase_scale`` (amplitude kept), low-passed
    again to the band limit: a specimen whose phase changes (vacuum, phase 0, stays vacuum).

    The phase is taken as ``angle(wave)``: the simulated objects' phase stays within
    (-pi, pi). ``phase_scale`` 1 returns ``wave`` itself.
    """
    if phase_scale == 1.0:
        return wave
    changed = np.abs(wave) * np.exp(1j * phase_scale * np.angle(wave))
    return np.fft.ifft2(np.fft.fft2(changed) * _smooth_lowpass(wave.shape, band_limit_px))


def make_illumination(
    shape: tuple[int, int], rng: np.random.Generator, amplitude_variation: float = 0.15,
    phase_variation_rad: float = 0.4, max_order: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """A slowly varying illumination/camera gain and a slowly varying reference phase.

    Both are periodic sums of the lowest Fourier modes (up to ``max_order``
    FFT pixels), so they widen the sideband by at most ``max_order`` pixels.
    Returns ``(gain, phase_rad)``: gain around 1, phase around 0.
    """

    def smooth_field():
        field_ = np.zeros(shape)
        y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
        for ky in range(-max_order, max_order + 1):
            for kx in range(0, max_order + 1):
                if (kx == 0 and ky <= 0) or kx * kx + ky * ky > max_order**2:
                    continue
                a = rng.normal() / (1.0 + kx * kx + ky * ky)
                p = rng.uniform(0, 2 * np.pi)
                field_ += a * np.cos(2 * np.pi * (kx * x / shape[1] + ky * y / shape[0]) + p)
        return field_ / max(np.abs(field_).max(), 1e-12)

    gain = 1.0 + amplitude_variation * smooth_field()
    phase_rad = phase_variation_rad * smooth_field()
    return gain, phase_rad


def propagate_and_shift(
    wave: np.ndarray,
    shift_px: Sequence[float] = (0.0, 0.0),
    defocus_nm: float = 0.0,
    sampling_nm: float = 1.0,
    voltage_kV: float = 300.0,
) -> np.ndarray:
    """Move a wave by ``shift_px`` (x, y) and defocus it by ``defocus_nm``.

    The result is ``psi(r - shift)`` propagated with the factor
    ``exp(-i pi lambda defocus q^2)`` (reference-program sign: its
    ``defocus_first``/``defocus_step`` undo it). Periodic (Fourier) operations.
    """
    shape = wave.shape
    fy, fx = _frequencies_px(shape)
    factor = np.exp(-2j * np.pi * (fx * shift_px[0] + fy * shift_px[1]))
    if defocus_nm:
        q2_per_nm2 = (fx**2 + fy**2) / sampling_nm**2
        wavelength_nm = electron_wavelength_nm(voltage_kV)
        factor = factor * np.exp(-1j * np.pi * wavelength_nm * defocus_nm * q2_per_nm2)
    return np.fft.ifft2(np.fft.fft2(wave) * factor)


def hologram_intensity(
    wave: np.ndarray,
    carrier_px: Sequence[float],
    fringe_contrast: float,
    biprism_phase_rad: float = 0.0,
    gain: np.ndarray | float = 1.0,
    reference_phase_rad: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Noise-free hologram intensity, normalised so that vacuum has mean ``gain``.

    ``I = gain * (1 + |psi|^2 + 2 mu Re(psi exp(i (2 pi q_c.r + phi_ref + phi_b)))) / 2``
    with ``q_c.r = carrier_x x / W + carrier_y y / H`` (x, y in pixels), so the
    sideband at ``+carrier`` of ``fftshift(fft2(I))`` is ``psi``.
    """
    ny, nx = wave.shape
    y = np.arange(ny).reshape(-1, 1)
    x = np.arange(nx).reshape(1, -1)
    fringe = np.exp(
        1j * (2 * np.pi * (carrier_px[0] * x / nx + carrier_px[1] * y / ny) + reference_phase_rad + biprism_phase_rad)
    )
    interference = 2.0 * fringe_contrast * np.real(wave * fringe)
    return gain * (1.0 + np.abs(wave) ** 2 + interference) / 2.0


def detector_mtf(shape: tuple[int, int], mtf_terms, binning: int = 1) -> np.ndarray:
    """Detector MTF (unshifted FFT layout) from reference-format terms.

    Terms ``["CONSTANT", a]``, ``["GAUSSIAN", a, b]`` (``a exp(-b q^2)``) and
    ``["LORENTZIAN", a, b]`` (``a / (b + q^2)``) are summed, with q in 1/px of
    the unbinned detector, and multiplied by ``sinc(qx binning) sinc(qy binning)``.
    """
    qy = np.fft.fftfreq(shape[0], d=binning).reshape(-1, 1)
    qx = np.fft.fftfreq(shape[1], d=binning).reshape(1, -1)
    q2 = qx**2 + qy**2
    mtf = np.zeros(shape)
    for term in mtf_terms:
        kind = str(term[0]).upper()
        if kind == "CONSTANT" and len(term) == 2:
            mtf = mtf + float(term[1])
        elif kind == "GAUSSIAN" and len(term) == 3:
            mtf = mtf + float(term[1]) * np.exp(-float(term[2]) * q2)
        elif kind == "LORENTZIAN" and len(term) == 3:
            mtf = mtf + float(term[1]) / (float(term[2]) + q2)
        else:
            raise ParameterError(
                f"mtf: unknown term {term!r}; expected ['CONSTANT', a], ['GAUSSIAN', a, b] or ['LORENTZIAN', a, b]"
            )
    return mtf * np.sinc(qx * binning) * np.sinc(qy * binning)


def fourier_resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample a complex image to ``shape`` by cropping/zero-padding its centred spectrum.

    The symmetric band ``-(n-1)//2 .. (n-1)//2`` (n the smaller size) is kept,
    as the reference program does; values are scaled so that a constant stays
    the same constant.
    """
    image = np.asarray(image)
    half = ((min(shape[0], image.shape[0]) - 1) // 2, (min(shape[1], image.shape[1]) - 1) // 2)
    spectrum = np.fft.fftshift(np.fft.fft2(image))
    out = np.zeros(shape, dtype=complex)
    iy, ix = image.shape[0] // 2, image.shape[1] // 2
    oy, ox = shape[0] // 2, shape[1] // 2
    out[oy - half[0] : oy + half[0] + 1, ox - half[1] : ox + half[1] + 1] = spectrum[
        iy - half[0] : iy + half[0] + 1, ix - half[1] : ix + half[1] + 1
    ]
    scale = (shape[0] * shape[1]) / (image.shape[0] * image.shape[1])
    return np.fft.ifft2(np.fft.ifftshift(out)) * scale


# --------------------------------------------------------------------------
# the series
# --------------------------------------------------------------------------


@dataclass
class SimulatedSeries:
    """A simulated series on disk and its truth.

    ``object_specs``/``empty_specs`` are absolute file specs (``path?key=value``)
    of the holograms, in series order. ``truth`` holds every array of
    ``truth.npz``; the most used ones are also attributes. Positions are
    (x, y) pixels; ``drift_px[k]`` is how far frame ``k`` shows the object moved
    relative to frame 0.
    """

    outdir: Path
    params_path: Path
    truth_path: Path
    object_specs: list[str]
    empty_specs: list[str]
    object_wave: np.ndarray
    drift_px: np.ndarray
    defocus_nm: np.ndarray
    biprism_phase_rad: np.ndarray
    fringe_contrast: np.ndarray
    carrier_px: np.ndarray
    sideband_pos: np.ndarray
    sampling_nm: float
    voltage_kV: float
    params: dict[str, Any] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.object_specs)

    @property
    def result_path(self) -> Path:
        """Where a run with ``params.json`` writes its output."""
        return self.outdir / str(self.params.get("output_name", "result.hdf5"))

    @classmethod
    def load(cls, outdir: str | Path) -> "SimulatedSeries":
        """Open a series written earlier by :func:`simulate_series`."""
        outdir = Path(outdir).resolve()
        params_path = outdir / "params.json"
        truth_path = outdir / "truth.npz"
        for path in (params_path, truth_path):
            if not path.is_file():
                raise InputFileError(f"{path}: not found; expected a folder written by holodask simulate")
        params = _read_params(params_path)
        with np.load(truth_path) as npz:
            truth = {k: npz[k] for k in npz.files}
        return cls._from_truth(outdir, params_path, truth_path, params, truth)

    @classmethod
    def _from_truth(cls, outdir, params_path, truth_path, params, truth) -> "SimulatedSeries":
        object_specs = [str(outdir / (params["object_names"] % i)) for i in range(params["object_first"], params["object_last"] + 1)]
        empty_specs = []
        if "empty_names" in params:
            empty_specs = [str(outdir / (params["empty_names"] % i)) for i in range(params["empty_first"], params["empty_last"] + 1)]
        return cls(
            outdir=outdir,
            params_path=params_path,
            truth_path=truth_path,
            object_specs=object_specs,
            empty_specs=empty_specs,
            object_wave=truth["object_wave"],
            drift_px=truth["drift_px"],
            defocus_nm=truth["defocus_nm"],
            biprism_phase_rad=truth["biprism_phase_rad"],
            fringe_contrast=truth["fringe_contrast"],
            carrier_px=truth["carrier_px"],
            sideband_pos=truth["sideband_pos"],
            sampling_nm=float(truth["sampling_nm"]),
            voltage_kV=float(truth["voltage_kV"]),
            params=params,
            truth=truth,
        )

    @property
    def object_change_rate(self) -> float:
        """Relative change of the object's phase per frame (``simulate_series``)."""
        return float(self.truth.get("object_change_rate", 0.0))

    def object_wave_at(self, frame: int) -> np.ndarray:
        """The object wave (frame 0's position, in focus) that hologram ``frame`` shows:
        its phase scaled by ``1 + object_change_rate * frame``."""
        rate = self.object_change_rate
        if not rate:
            return self.object_wave
        band_limit_px = float(self.truth["object_band_limit_per_nm"]) * self.object_wave.shape[0] * self.sampling_nm
        return changed_object_wave(self.object_wave, 1.0 + rate * int(frame), band_limit_px)

    def expected_wave(self, object_size_px: int | None = None, roi: Sequence[int] | None = None,
                      frames=None) -> np.ndarray:
        """The truth wave as an ideal reconstruction gives it on the output grid.

        The region ``roi`` = [left, top, right, bottom] (default: the
        parameter file's ``roi``, else the full image) of the in-focus wave at
        frame 0's position, Fourier-resampled to ``object_size_px`` square
        (default: the parameter file's ``object_size``). Vacuum is 1.
        ``frames``: the wave of that frame (an object that changes), or the mean
        of those frames' waves (a window average); default frame 0.
        """
        if object_size_px is None:
            object_size_px = int(self.params["object_size"])
        if roi is None:
            roi = self.params.get("roi")
        if frames is None:
            wave = self.object_wave
        else:
            wave = np.mean([self.object_wave_at(k) for k in np.atleast_1d(frames)], axis=0)
        if roi is not None:
            left, top, right, bottom = (int(v) for v in roi)
            if not (0 <= left < right <= wave.shape[1] and 0 <= top < bottom <= wave.shape[0]):
                raise ParameterError(f"roi: {list(roi)} is not inside the {wave.shape[1]}x{wave.shape[0]} image")
            wave = wave[top:bottom, left:right]
        return fourier_resample(wave, (int(object_size_px), int(object_size_px)))

    def phase_error_rad(
        self,
        wave: np.ndarray,
        object_size_px: int | None = None,
        roi: Sequence[int] | None = None,
        inner_fraction: float = 0.5,
        frames=None,
    ) -> float:
        """RMS phase difference of ``wave`` from the truth over the inner region.

        ``wave`` is a reconstruction on the output grid (e.g. the ``data`` of
        a result file, of holodask or of the reference); the truth is
        :meth:`expected_wave` at ``wave``'s size unless ``object_size_px`` is
        given. One global phase is removed; the RMS is taken over the central
        ``inner_fraction`` of each axis. ``frames``: see :meth:`expected_wave`.
        """
        wave = np.asarray(wave)
        if wave.ndim != 2:
            raise ParameterError(f"wave: expected a 2-D complex array, got shape {wave.shape}")
        if object_size_px is None:
            object_size_px = wave.shape[0]
        expected = self.expected_wave(object_size_px, roi, frames)
        if expected.shape != wave.shape:
            raise ParameterError(f"wave: shape {wave.shape} differs from the expected {expected.shape}")
        ny, nx = wave.shape
        my = int(round(ny * (1.0 - inner_fraction) / 2.0))
        mx = int(round(nx * (1.0 - inner_fraction) / 2.0))
        inner = (slice(my, ny - my), slice(mx, nx - mx))
        product = wave[inner] * np.conj(expected[inner])
        unit = product / np.maximum(np.abs(product), 1e-30)
        global_phase = np.angle(np.sum(unit))
        difference = np.angle(unit * np.exp(-1j * global_phase))
        return float(np.sqrt(np.mean(difference**2)))


def _read_params(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("//")]
    return json.loads("\n".join(lines))


def _random_walk(rng: np.random.Generator, n: int, step: float, dims: int = 2) -> np.ndarray:
    """Gaussian random walk starting at zero: ``n`` x ``dims``, per-axis step SD ``step``."""
    steps = rng.normal(0.0, 1.0, size=(n, dims)) * step
    steps[:1] = 0.0
    return np.cumsum(steps, axis=0)


def _margin_for_fast_size(size_px: int, min_margin_px: int) -> int:
    """The smallest margin >= ``min_margin_px`` leaving a ROI of 2-3-5-smooth size.

    The reference's documentation asks for ROI sizes with low prime factors
    (FFTs of sizes like 964 = 4 x 241 are several times slower).
    """
    for margin in range(min_margin_px, size_px // 2):
        n = size_px - 2 * margin
        for prime in (2, 3, 5):
            while n % prime == 0:
                n //= prime
        if n == 1:
            return margin
    return min_margin_px


def _check_positive(name: str, value, allow_zero: bool = False):
    ok = value >= 0 if allow_zero else value > 0
    if not np.isfinite(value) or not ok:
        raise ParameterError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")


def simulate_series(
    outdir: str | Path,
    *,
    n_frames: int = 8,
    size_px: int = 256,
    object_size_px: int = 64,
    sampling_nm: float = 0.5,
    voltage_kV: float = 300.0,
    dose_e_per_px: float | None = None,
    fringe_contrast: float = 0.3,
    contrast_jitter: float = 0.0,
    carrier_px: Sequence[float] | None = None,
    carrier_drift_px: float = 0.0,
    drift_step_px: float = 0.0,
    biprism_phase_jitter_rad: float = 0.0,
    defocus_first_nm: float = 0.0,
    defocus_step_nm: float = 0.0,
    mtf: list | None = None,
    n_hot_pixels: int = 0,
    n_cosmic_rays: int = 0,
    n_empty: int = 1,
    empty_noise_free: bool = True,
    seed: int = 0,
    file_format: str = "hdf5",
    roi_margin_px: int | None = None,
    texture_contrast: float = 0.0,
    vacuum_fraction: float = 0.0,
    object_change_rate: float = 0.0,
) -> SimulatedSeries:
    """Write a simulated object series and empty series with known truth.

    Parameters
    ----------
    outdir
        Folder for the holograms (``object_000.hdf5`` ... dataset
        ``hologram``, ``empty_000.hdf5`` ...; or ``.raw`` float32 files),
        ``truth.npz`` and ``params.json``. Created if missing.
    n_frames, size_px
        Number of object holograms and their (square) size in pixels.
    object_size_px
        ``object_size``/``empty_size`` of the generated parameters.
    sampling_nm, voltage_kV
        Pixel size and acceleration voltage.
    dose_e_per_px
        Mean vacuum counts per pixel; holograms get Poisson noise and are
        stored as integer counts. ``None``: noise-free float32 holograms with
        mean vacuum intensity ``NOISE_FREE_COUNTS``.
    fringe_contrast, contrast_jitter
        Fringe contrast mu and its relative per-frame random spread.
    carrier_px
        Sideband offset (x, y) from the FFT centre in FFT pixels of frame 0;
        default ``(size_px // 4, size_px // 8)``.
    carrier_drift_px
        Per-frame random-walk step (FFT pixels) of the carrier (fringe tilt).
    drift_step_px
        Per-frame random-walk step (px, per axis) of the specimen drift:
        frame ``k`` shows the object moved by ``+drift_px[k]`` (x, y)
        relative to frame 0.
    biprism_phase_jitter_rad
        Standard deviation of the random per-frame fringe (biprism) phase.
    defocus_first_nm, defocus_step_nm
        Frame ``k`` is defocused by ``first + k * step`` (reference sign: the
        reference's ``defocus_first``/``defocus_step`` undo it). A focal
        series gets ``adjust_defocus: true``, and, without drift,
        ``enable_raw_alignment: false``: the defocus changes the centre band,
        and the raw alignment would mistake that for integer shifts.
    mtf
        Detector MTF terms in the reference format, e.g.
        ``[["GAUSSIAN", 0.6, 20.0], ["CONSTANT", 0.4]]``, applied to every
        hologram (with the pixel sinc) and written into the parameters.
    n_hot_pixels
        Hot pixels at fixed positions in every hologram (object and empty).
    n_cosmic_rays
        Cosmic-ray hits (short streaks) per series, at random frames.
    n_empty
        Number of empty holograms (0: none, and no ``empty_names``).
    empty_noise_free
        Keep the empty series free of Poisson noise even with a dose.
    seed
        Seed of all randomness (each feature draws from its own stream, so
        switching one feature on leaves the others unchanged).
    file_format
        ``"hdf5"`` or ``"raw"`` (float32, little-endian).
    roi_margin_px
        Margin of the ``roi`` written into the parameters, on every side.
        ``None``: no ``roi`` without drift; with drift the largest drift plus
        8 px, so that the drift-following ROI stays inside the image (the
        reference fills what falls outside with the mean, which spoils the
        reconstruction near the edges).

    texture_contrast
        RMS of an amorphous support-film texture (absorption, and phase in
        rad) added to the object; 0 (default) for the bare particles. Real
        specimens have such contrast; it lets raw alignment work on noisy
        holograms.
    vacuum_fraction
        Fraction of the field's width (the columns from x = 0) left as
        vacuum, the specimen ending at a smooth edge (see
        :func:`make_object_wave`); 0 (default): the bare particles lie in
        the middle and only the margins are vacuum (or, with a texture,
        nothing is).
    object_change_rate
        A specimen that changes during the series (in-situ): hologram ``k`` shows
        the object with its phase scaled by ``1 + object_change_rate * k``
        (:func:`changed_object_wave`; 0, the default: a static object). The
        truth of every frame: :meth:`SimulatedSeries.object_wave_at`.

    Returns
    -------
    SimulatedSeries
    """
    n_frames = int(n_frames)
    size_px = int(size_px)
    object_size_px = int(object_size_px)
    _check_series_arguments(
        n_frames=n_frames, size_px=size_px, object_size_px=object_size_px, sampling_nm=sampling_nm,
        voltage_kV=voltage_kV, dose_e_per_px=dose_e_per_px, fringe_contrast=fringe_contrast,
        file_format=file_format,
        non_negative={
            "contrast_jitter": contrast_jitter, "carrier_drift_px": carrier_drift_px, "drift_step_px": drift_step_px,
            "biprism_phase_jitter_rad": biprism_phase_jitter_rad, "n_hot_pixels": n_hot_pixels,
            "n_cosmic_rays": n_cosmic_rays, "n_empty": n_empty,
        },
    )
    if not (np.isfinite(vacuum_fraction) and 0.0 <= vacuum_fraction <= 0.6):
        raise ParameterError(f"vacuum_fraction: expected a fraction of the width from 0 to 0.6, "
                             f"got {vacuum_fraction!r}")
    if not np.isfinite(object_change_rate):
        raise ParameterError(f"object_change_rate: expected a finite number, got {object_change_rate!r}")
    carrier0_px = _frame0_carrier_px(carrier_px, size_px)
    if mtf is not None:
        detector_mtf((4, 4), mtf)  # validates the terms
    outdir = _created_outdir(outdir)

    streams = _seed_streams(seed)
    shape = (size_px, size_px)
    cut_off_px = _reconstruction_cut_off_px(carrier0_px, object_size_px)
    cut_off_per_nm = cut_off_px / (size_px * sampling_nm)
    band_limit_px = 0.5 * cut_off_px

    object_wave = make_object_wave(size_px, band_limit_px, streams["object"],
                                   texture_contrast=texture_contrast, texture_rng=streams["texture"],
                                   vacuum_fraction=vacuum_fraction)
    gain, reference_phase_rad = make_illumination(shape, streams["illumination"])
    conditions = _frame_conditions(
        streams, n_frames, n_empty, carrier0_px, fringe_contrast=fringe_contrast, contrast_jitter=contrast_jitter,
        carrier_drift_px=carrier_drift_px, drift_step_px=drift_step_px,
        biprism_phase_jitter_rad=biprism_phase_jitter_rad, defocus_first_nm=defocus_first_nm,
        defocus_step_nm=defocus_step_nm,
    )
    recording = _recording(
        streams, shape, gain, reference_phase_rad, mtf=mtf, dose_e_per_px=dose_e_per_px,
        n_hot_pixels=n_hot_pixels, n_cosmic_rays=n_cosmic_rays, n_frames=n_frames, n_empty=n_empty,
    )
    object_pattern, empty_pattern = _write_holograms(
        outdir, object_wave, conditions, recording, n_frames=n_frames, n_empty=n_empty, size_px=size_px,
        sampling_nm=sampling_nm, voltage_kV=voltage_kV, file_format=file_format,
        noisy=dose_e_per_px is not None, empty_noise_free=empty_noise_free,
        change=(float(object_change_rate), band_limit_px),
    )

    sideband_pos = np.array([size_px // 2, size_px // 2], dtype=float) + carrier0_px
    roi = _parameter_roi(roi_margin_px, conditions.drift_px, drift_step_px, size_px)
    params = _parameters(
        object_pattern=object_pattern, empty_pattern=empty_pattern, n_frames=n_frames, n_empty=int(n_empty),
        sampling_nm=sampling_nm, voltage_kV=voltage_kV, sideband_pos=sideband_pos, cut_off_per_nm=cut_off_per_nm,
        object_size_px=object_size_px, mtf=mtf, defocus_first_nm=defocus_first_nm, defocus_step_nm=defocus_step_nm,
        roi=roi, raw_alignment=not (defocus_step_nm and drift_step_px == 0),
    )
    params_path = outdir / "params.json"
    header = _params_header(n_frames, size_px, seed, dose_e_per_px)
    params_path.write_text(header + json.dumps(params, indent=4) + "\n", encoding="utf-8")

    truth = _truth_arrays(
        object_wave, conditions, recording, n_frames=n_frames, sideband_pos=sideband_pos, sampling_nm=sampling_nm,
        voltage_kV=voltage_kV, cut_off_per_nm=cut_off_per_nm,
        object_band_limit_per_nm=band_limit_px / (size_px * sampling_nm), dose_e_per_px=dose_e_per_px, seed=seed,
    )
    truth["vacuum_fraction"] = np.float64(vacuum_fraction)
    if object_change_rate:
        truth["object_change_rate"] = np.float64(object_change_rate)
    truth_path = outdir / "truth.npz"
    np.savez_compressed(truth_path, **truth)
    return SimulatedSeries._from_truth(outdir, params_path, truth_path, params, truth)


# --------------------------------------------------------------------------
# the steps of simulate_series
# --------------------------------------------------------------------------


def _check_series_arguments(
    *, n_frames: int, size_px: int, object_size_px: int, sampling_nm: float, voltage_kV: float,
    dose_e_per_px: float | None, fringe_contrast: float, file_format: str, non_negative: dict[str, float],
) -> None:
    """Raise :class:`ParameterError` for an argument of :func:`simulate_series` out of range.

    ``non_negative`` maps argument names to values that may be zero but not
    negative (checked in its order).
    """
    if n_frames < 1:
        raise ParameterError(f"n_frames: expected at least 1 frame, got {n_frames}")
    if size_px < 32:
        raise ParameterError(f"size_px: expected at least 32 px, got {size_px}")
    if not 4 <= object_size_px <= size_px:
        raise ParameterError(f"object_size_px: expected 4 to size_px ({size_px}), got {object_size_px}")
    _check_positive("sampling_nm", sampling_nm)
    _check_positive("voltage_kV", voltage_kV)
    if dose_e_per_px is not None:
        _check_positive("dose_e_per_px", dose_e_per_px)
    if not 0.0 < fringe_contrast <= 1.0:
        raise ParameterError(f"fringe_contrast: expected a value in (0, 1], got {fringe_contrast!r}")
    for name, value in non_negative.items():
        _check_positive(name, value, allow_zero=True)
    if file_format not in ("hdf5", "raw"):
        raise ParameterError(f"file_format: expected 'hdf5' or 'raw', got {file_format!r}")


def _frame0_carrier_px(carrier_px: Sequence[float] | None, size_px: int) -> np.ndarray:
    """The checked sideband offset (x, y) of frame 0 in FFT pixels from the centre (float64).

    ``None`` gives the default ``(size_px // 4, size_px // 8)``.
    """
    if carrier_px is None:
        carrier_px = (size_px // 4, size_px // 8)
    carrier0_px = np.asarray(carrier_px, dtype=float)
    if carrier0_px.shape != (2,) or np.hypot(*carrier0_px) < 8 or np.any(np.abs(carrier0_px) >= size_px / 2):
        raise ParameterError(
            f"carrier_px: expected (x, y) FFT pixels from the centre, at least 8 from it and inside the image, got {carrier_px!r}"
        )
    return carrier0_px


def _created_outdir(outdir: str | Path) -> Path:
    """``outdir`` resolved and created (with its parents) if missing."""
    outdir = Path(outdir).resolve()
    if outdir.exists() and not outdir.is_dir():
        raise ParameterError(f"outdir: {outdir} exists and is not a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    return outdir


def _seed_streams(seed: int) -> dict[str, np.random.Generator]:
    """One independent random generator per feature of ``_SEED_STREAMS``, all from ``seed``."""
    generators = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(_SEED_STREAMS)))
    return dict(zip(_SEED_STREAMS, generators))


def _reconstruction_cut_off_px(carrier0_px: np.ndarray, object_size_px: int) -> float:
    """Reconstruction cut-off in FFT px of the full frame: a third of the carrier,
    inside the output window of ``object_size_px``."""
    carrier_radius_px = float(np.hypot(*carrier0_px))
    return min(carrier_radius_px / 3.0, 0.45 * object_size_px)


@dataclass(frozen=True)
class _FrameConditions:
    """What changes from hologram to hologram of a simulated series.

    ``drift_px`` (n_frames, 2) and ``defocus_nm`` (n_frames,) are those of the
    object frames; the fringe arrays hold the object frames, then the empty
    frames.
    """

    drift_px: np.ndarray  # (n_frames, 2) x, y
    defocus_nm: np.ndarray  # (n_frames,)
    biprism_phase_rad: np.ndarray  # (n_all,)
    fringe_contrast: np.ndarray  # (n_all,)
    carrier_px: np.ndarray  # (n_all, 2) x, y from the FFT centre


def _frame_conditions(
    streams: dict[str, np.random.Generator], n_frames: int, n_empty, carrier0_px: np.ndarray, *,
    fringe_contrast: float, contrast_jitter: float, carrier_drift_px: float, drift_step_px: float,
    biprism_phase_jitter_rad: float, defocus_first_nm: float, defocus_step_nm: float,
) -> _FrameConditions:
    """Draw the per-frame drift, defocus, biprism phase, fringe contrast and carrier."""
    drift_px = _random_walk(streams["drift"], n_frames, drift_step_px)
    defocus_nm = defocus_first_nm + defocus_step_nm * np.arange(n_frames)
    n_all = n_frames + int(n_empty)
    biprism_phase_rad = streams["biprism"].normal(0.0, 1.0, n_all) * biprism_phase_jitter_rad
    contrast = fringe_contrast * (1.0 + contrast_jitter * streams["contrast"].normal(0.0, 1.0, n_all))
    contrast = np.clip(contrast, 0.01, 1.0)
    carrier_walk_px = np.concatenate(
        [_random_walk(streams["carrier"], n_frames, carrier_drift_px), _random_walk(streams["carrier"], int(n_empty), carrier_drift_px)]
    )
    return _FrameConditions(drift_px, defocus_nm, biprism_phase_rad, contrast, carrier0_px + carrier_walk_px)


@dataclass(frozen=True)
class _Recording:
    """What illumination and camera add to every hologram, the same for all frames
    (cosmic rays: rows (frame, x, y) of the object and of the empty series)."""

    gain: np.ndarray
    reference_phase_rad: np.ndarray
    mtf: np.ndarray | None  # unshifted FFT layout; None: no MTF
    mean_counts: float
    hot_pixels_xy: np.ndarray  # (n, 2)
    hot_pixel_counts: float
    cosmic_rays: np.ndarray  # (n, 3)
    empty_cosmic_rays: np.ndarray  # (n, 3)
    cosmic_ray_counts: float
    noise_rng: np.random.Generator


def _recording(
    streams: dict[str, np.random.Generator], shape: tuple[int, int], gain: np.ndarray,
    reference_phase_rad: np.ndarray, *, mtf, dose_e_per_px: float | None, n_hot_pixels, n_cosmic_rays,
    n_frames: int, n_empty,
) -> _Recording:
    """The detector MTF, the dose, and draw the hot pixels and cosmic-ray hits."""
    size_px = shape[0]
    mtf_array = detector_mtf(shape, mtf) if mtf is not None else None
    mean_counts = float(dose_e_per_px) if dose_e_per_px is not None else NOISE_FREE_COUNTS
    hot_rng = streams["hot_pixels"]
    hot_pixels_xy = np.stack([hot_rng.integers(0, size_px, int(n_hot_pixels)), hot_rng.integers(0, size_px, int(n_hot_pixels))], axis=1)
    cosmic_rng = streams["cosmic_rays"]
    cosmic_rays = _cosmic_ray_pixels(cosmic_rng, int(n_cosmic_rays), n_frames, size_px)
    empty_cosmic_rays = _cosmic_ray_pixels(cosmic_rng, int(n_cosmic_rays) if n_empty else 0, max(int(n_empty), 1), size_px)
    return _Recording(
        gain=gain, reference_phase_rad=reference_phase_rad, mtf=mtf_array, mean_counts=mean_counts,
        hot_pixels_xy=hot_pixels_xy, hot_pixel_counts=20.0 * mean_counts, cosmic_rays=cosmic_rays,
        empty_cosmic_rays=empty_cosmic_rays, cosmic_ray_counts=50.0 * mean_counts, noise_rng=streams["noise"],
    )


def _hologram_counts(
    wave: np.ndarray, k_all: int, conditions: _FrameConditions, recording: _Recording, noisy: bool,
    rays: np.ndarray, frame: int,
) -> np.ndarray:
    """Counts (float64) of one hologram of ``wave``.

    ``k_all`` indexes the fringe conditions (object frames, then empty frames),
    ``frame`` the cosmic-ray table ``rays``; ``noisy`` draws Poisson noise.
    """
    intensity = hologram_intensity(wave, conditions.carrier_px[k_all], conditions.fringe_contrast[k_all],
                                   conditions.biprism_phase_rad[k_all], recording.gain, recording.reference_phase_rad)
    if recording.mtf is not None:
        intensity = np.fft.ifft2(np.fft.fft2(intensity) * recording.mtf).real
    counts = np.clip(intensity, 0.0, None) * recording.mean_counts
    if noisy:
        counts = recording.noise_rng.poisson(counts).astype(float)
    hot_pixels_xy = recording.hot_pixels_xy
    if len(hot_pixels_xy):
        counts[hot_pixels_xy[:, 1], hot_pixels_xy[:, 0]] += recording.hot_pixel_counts
    hit = rays[rays[:, 0] == frame]
    if len(hit):
        counts[hit[:, 2], hit[:, 1]] += recording.cosmic_ray_counts
    return counts


def _write_holograms(
    outdir: Path, object_wave: np.ndarray, conditions: _FrameConditions, recording: _Recording, *,
    n_frames: int, n_empty, size_px: int, sampling_nm: float, voltage_kV: float, file_format: str,
    noisy: bool, empty_noise_free: bool, change: tuple[float, float] = (0.0, 0.0),
) -> tuple[str, str]:
    """Write the object holograms, then the empty ones (in this order: they share
    the noise generator); returns the object and empty spec patterns."""
    integer_counts = noisy and file_format == "hdf5"
    writer = _write_hdf5 if file_format == "hdf5" else _write_raw
    attrs = {"dim_scale": [sampling_nm, sampling_nm], "dim_unit": ["nm", "nm"], "voltage(kV)": float(voltage_kV)}

    object_pattern, object_files = _names("object", file_format, size_px)
    rate, band_limit_px = change
    for k in range(n_frames):
        frame_object = changed_object_wave(object_wave, 1.0 + rate * k, band_limit_px) if rate else object_wave
        wave = propagate_and_shift(frame_object, conditions.drift_px[k], conditions.defocus_nm[k], sampling_nm, voltage_kV)
        counts = _hologram_counts(wave, k, conditions, recording, noisy, recording.cosmic_rays, k)
        writer(outdir / (object_files % k), counts, integer_counts, attrs)
    empty_pattern, empty_files = _names("empty", file_format, size_px)
    vacuum = np.ones((size_px, size_px), dtype=complex)
    for k in range(int(n_empty)):
        counts = _hologram_counts(vacuum, n_frames + k, conditions, recording, noisy and not empty_noise_free,
                                  recording.empty_cosmic_rays, k)
        writer(outdir / (empty_files % k), counts, integer_counts, attrs)
    return object_pattern, empty_pattern


def _parameter_roi(roi_margin_px: int | None, drift_px: np.ndarray, drift_step_px: float, size_px: int) -> list[int] | None:
    """The ``roi`` of the parameters: ``roi_margin_px`` on every side (None: none).

    ``roi_margin_px=None`` chooses no margin without drift, else the largest
    drift plus 8 px, widened to a 2-3-5-smooth ROI size.
    """
    if roi_margin_px is None:
        roi_margin_px = int(np.ceil(np.abs(drift_px).max())) + 8 if drift_step_px > 0 else 0
        if roi_margin_px:
            roi_margin_px = _margin_for_fast_size(size_px, roi_margin_px)
        if roi_margin_px >= size_px // 4:
            raise ParameterError(
                f"drift_step_px: the drift reaches {np.abs(drift_px).max():.1f} px, too far for a {size_px} px image "
                f"(at most {size_px // 4 - 9} px); use a smaller step or fewer frames"
            )
    roi_margin_px = int(roi_margin_px)
    if not 0 <= roi_margin_px < size_px // 4:
        raise ParameterError(f"roi_margin_px: expected 0 to {size_px // 4 - 1} px, got {roi_margin_px}")
    return [roi_margin_px, roi_margin_px, size_px - roi_margin_px, size_px - roi_margin_px] if roi_margin_px else None


def _params_header(n_frames: int, size_px: int, seed: int, dose_e_per_px: float | None) -> str:
    """The comment line that opens ``params.json``."""
    return (
        f"// holodask simulate: {n_frames} object holograms of {size_px} px, seed {seed}, "
        f"dose {'noise-free' if dose_e_per_px is None else dose_e_per_px}; truth in truth.npz\n"
    )


def _truth_arrays(
    object_wave: np.ndarray, conditions: _FrameConditions, recording: _Recording, *, n_frames: int,
    sideband_pos: np.ndarray, sampling_nm: float, voltage_kV: float, cut_off_per_nm: float,
    object_band_limit_per_nm: float, dose_e_per_px: float | None, seed: int,
) -> dict[str, np.ndarray]:
    """The arrays of ``truth.npz`` (in the order written)."""
    return {
        "object_wave": object_wave.astype(np.complex128),
        "drift_px": conditions.drift_px,
        "defocus_nm": conditions.defocus_nm,
        "biprism_phase_rad": conditions.biprism_phase_rad[:n_frames],
        "fringe_contrast": conditions.fringe_contrast[:n_frames],
        "carrier_px": conditions.carrier_px[:n_frames],
        "empty_biprism_phase_rad": conditions.biprism_phase_rad[n_frames:],
        "empty_fringe_contrast": conditions.fringe_contrast[n_frames:],
        "empty_carrier_px": conditions.carrier_px[n_frames:],
        "sideband_pos": sideband_pos,
        "sampling_nm": np.float64(sampling_nm),
        "voltage_kV": np.float64(voltage_kV),
        "wavelength_nm": np.float64(electron_wavelength_nm(voltage_kV)),
        "cut_off_per_nm": np.float64(cut_off_per_nm),
        "object_band_limit_per_nm": np.float64(object_band_limit_per_nm),
        "illumination_gain": recording.gain,
        "reference_phase_rad": recording.reference_phase_rad,
        "mean_counts": np.float64(recording.mean_counts),
        "dose_e_per_px": np.float64(np.nan if dose_e_per_px is None else dose_e_per_px),
        "mtf": recording.mtf if recording.mtf is not None else np.ones((0, 0)),
        "hot_pixels_xy": recording.hot_pixels_xy.astype(np.int64).reshape(-1, 2),
        "hot_pixel_counts": np.float64(recording.hot_pixel_counts),
        "cosmic_rays": recording.cosmic_rays,
        "empty_cosmic_rays": recording.empty_cosmic_rays,
        "cosmic_ray_counts": np.float64(recording.cosmic_ray_counts),
        "seed": np.int64(seed),
    }


def _cosmic_ray_pixels(rng: np.random.Generator, n_events: int, n_frames: int, size_px: int) -> np.ndarray:
    """Pixels hit by ``n_events`` short cosmic-ray streaks: rows (frame, x, y), unique."""
    rows = []
    for _ in range(n_events):
        frame = int(rng.integers(0, n_frames))
        x, y = (int(v) for v in rng.integers(2, size_px - 2, 2))
        length = int(rng.integers(1, 5))
        dx, dy = [(1, 0), (0, 1), (1, 1), (1, -1)][int(rng.integers(0, 4))]
        rows.extend((frame, x + i * dx, y + i * dy) for i in range(length))
    out = np.array(sorted(set((f, min(max(x, 0), size_px - 1), min(max(y, 0), size_px - 1)) for f, x, y in rows)), dtype=np.int64)
    return out.reshape(-1, 3)


def _names(kind: str, file_format: str, size_px: int) -> tuple[str, str]:
    """(spec pattern for the parameters, file name pattern)."""
    if file_format == "hdf5":
        return f"{kind}_%03d.hdf5?dataset=hologram", f"{kind}_%03d.hdf5"
    return f"{kind}_%03d.raw?xsize={size_px}&ysize={size_px}&dtype=float32", f"{kind}_%03d.raw"


def _write_hdf5(path: Path, counts: np.ndarray, integer_counts: bool, attrs: dict) -> None:
    import h5py

    if integer_counts:
        rounded = np.rint(counts)
        data = rounded.astype(np.uint16 if rounded.max() < 65536 else np.uint32)
    else:
        data = counts.astype(np.float32)
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("hologram", data=data)
        for key, value in attrs.items():
            dataset.attrs[key] = value


def _write_raw(path: Path, counts: np.ndarray, integer_counts: bool, attrs: dict) -> None:
    counts.astype("<f4").tofile(path)


def _parameters(
    *, object_pattern, empty_pattern, n_frames, n_empty, sampling_nm, voltage_kV, sideband_pos,
    cut_off_per_nm, object_size_px, mtf, defocus_first_nm, defocus_step_nm, roi=None, raw_alignment=True,
) -> dict:
    """The reference-format parameter dictionary for a simulated series."""

    def number(v):
        v = float(v)
        return int(v) if v.is_integer() else v

    params: dict[str, Any] = {
        "object_names": object_pattern,
        "object_first": 0,
        "object_last": n_frames - 1,
    }
    if n_empty > 0:
        params.update({"empty_names": empty_pattern, "empty_first": 0, "empty_last": n_empty - 1})
    params.update(
        {
            "sampling": float(sampling_nm),
            "voltage": float(voltage_kV),
            "sideband_pos": [number(sideband_pos[0]), number(sideband_pos[1])],
            "cut_off": round(float(cut_off_per_nm), 6),
            "object_size": int(object_size_px),
            "empty_size": int(object_size_px),
            "filter_func": "EDGE",
        }
    )
    if roi is not None:
        params["roi"] = [int(v) for v in roi]
    if not raw_alignment:
        params["enable_raw_alignment"] = False
    if mtf is not None:
        params["mtf"] = [list(term) for term in mtf]
    if defocus_first_nm or defocus_step_nm:
        params["defocus_first"] = float(defocus_first_nm)
        params["defocus_step"] = float(defocus_step_nm)
        if defocus_step_nm:
            params["adjust_defocus"] = True
    params["output_name"] = "result.hdf5"
    return params
