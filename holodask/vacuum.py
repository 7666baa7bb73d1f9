"""Vacuum-normalised waves and the maps derived from them: pure numpy kernels.

A reconstructed wave carries the reference program's scale (its amplitude in
vacuum is (ROI/object_size)^2 times the vacuum's, times the empty wave's) and a
global phase. Normalised to a vacuum region, amplitude is 1 and phase 0 there,
and the amplitude gives the relative thickness ``t/lambda = -2 ln(A/A0)``.

* :func:`find_vacuum`: the vacuum region of a wave, found as the largest
  rectangle of blocks that are bright (amplitude near the brightest) and flat
  (the complex log-derivative ``grad(psi)/psi = grad(ln A) + i grad(phi)``
  barely varies inside the block: a uniform phase ramp counts as flat, a
  specimen's texture, edges and Fresnel fringes do not), inside the largest
  connected group of such blocks.
* :func:`fit_phase_ramp`: the phase ramp of the vacuum region, a least-squares
  plane through its phase. A first slope comes from the phases of the sums of
  neighbouring-pixel products (``angle(sum conj(psi[x]) psi[x+1])``), so no
  unwrapping is needed; the plane is then fitted to the wrapped residual phase,
  which is small.
* :func:`normalize_wave`: divide by the region's mean amplitude and mean phase
  (the phase of its complex mean; after taking out the ramp, optionally):
  ``psi_n = psi exp(-i (gx x + gy y)) / F``. Not by the complex mean itself:
  where the vacuum's phase is not flat (a specimen's stray field, a ramp left
  in) its phases cancel, and the complex mean is smaller than the amplitude.
* :func:`relative_thickness`, :func:`phase_gradient`, :func:`phase_contours`,
  :func:`unwrapped_phase`: the derived maps.

Positions are pixels of the wave (x: column, y: row; a box is ``[left, top,
right, bottom]``, right and bottom exclusive, as ``roi``); slopes are rad/px
here (the accessor converts them to rad/nm). No Dask, no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "VacuumRegion", "Normalization", "find_vacuum", "check_box", "fit_phase_ramp", "normalize_wave",
    "relative_thickness", "phase_gradient", "phase_contours", "unwrapped_phase", "block_scores",
]

#: defaults of :func:`find_vacuum`
AMPLITUDE_TOLERANCE = 0.1
ROUGHNESS_FACTOR = 2.0
#: roughness (1/px) below which a block counts as flat whatever the others are (noise-free waves)
ROUGHNESS_FLOOR = 1e-3


@dataclass(frozen=True)
class VacuumRegion:
    """A vacuum region found by :func:`find_vacuum`.

    ``box``: ``(left, top, right, bottom)`` px, the largest rectangle of vacuum
    blocks; ``mask``: the vacuum blocks it was chosen from (bool, the wave's
    shape); ``amplitude``: mean amplitude in ``box``; ``roughness``: the
    largest block roughness in ``box`` (1/px).
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray
    amplitude: float
    roughness: float


@dataclass(frozen=True)
class Normalization:
    """What :func:`normalize_wave` did: ``normalised = wave * exp(-i (gx x + gy y)) / factor``.

    ``box``: the vacuum region (px); ``factor``: the mean amplitude over it
    times the phase of the (de-ramped) wave's complex mean over it;
    ``ramp_px``: ``(gx, gy)`` in rad/px (zeros without ramp removal), x/y the
    pixel column/row.
    """

    box: tuple[int, int, int, int]
    factor: complex
    ramp_px: tuple[float, float] = (0.0, 0.0)


def _as_wave(wave) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 2:
        raise ValueError(f"expected one 2-D wave, got shape {wave.shape}")
    return wave.astype(np.complex128, copy=False)


def check_box(box, shape, name: str = "vacuum") -> tuple[int, int, int, int]:
    """``box`` as four ints, checked to lie inside an image of ``shape`` (at least 2x2 px)."""
    try:
        left, top, right, bottom = (int(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a box [left, top, right, bottom] in px, got {box!r}") from exc
    ny, nx = int(shape[-2]), int(shape[-1])
    if not (0 <= left < right <= nx and 0 <= top < bottom <= ny):
        raise ValueError(f"{name}: the box {[left, top, right, bottom]} is not inside the {nx}x{ny} px wave "
                         "(expected 0 <= left < right <= width, 0 <= top < bottom <= height)")
    if right - left < 2 or bottom - top < 2:
        raise ValueError(f"{name}: the box {[left, top, right, bottom]} is smaller than 2x2 px")
    return left, top, right, bottom


# ---------------------------------------------------------------------------
# finding the vacuum
# ---------------------------------------------------------------------------


def _complex_log_gradient(wave: np.ndarray, axis: int) -> np.ndarray:
    """d(ln psi)/d(axis) per px, from ln(psi[k+1]/psi[k-1]) / 2 (one-sided at the edges)."""
    psi = np.moveaxis(wave, axis, 0)
    out = np.empty(psi.shape, dtype=np.complex128)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if psi.shape[0] >= 3:
            out[1:-1] = np.log(psi[2:] / psi[:-2]) / 2.0
        if psi.shape[0] >= 2:
            out[0] = np.log(psi[1] / psi[0])
            out[-1] = np.log(psi[-1] / psi[-2])
        else:
            out[:] = 0.0
    return np.moveaxis(out, 0, axis)


def _default_block(shape) -> int:
    return int(np.clip(min(shape) // 16, 4, 32))


def block_scores(wave, *, block_px: int | None = None, margin_px: int | None = None):
    """Per block of ``block_px`` square (default: a 16th of the smaller side, 4..32 px),
    tiling the wave inside ``margin_px`` (default: a 32nd of the smaller side, at least 2)
    from its edges: the mean amplitude and the roughness, the RMS deviation of
    ``grad(psi)/psi`` (1/px) from its block mean.

    Returns ``(amplitude, roughness, origin)``: two ``(rows, cols)`` arrays and the
    (top, left) px of block (0, 0).
    """
    wave = _as_wave(wave)
    ny, nx = wave.shape
    block = int(block_px) if block_px else _default_block(wave.shape)
    margin = int(margin_px) if margin_px is not None else max(2, min(ny, nx) // 32)
    rows, cols = (ny - 2 * margin) // block, (nx - 2 * margin) // block
    if block < 2 or rows < 1 or cols < 1:
        raise ValueError(f"find_vacuum: a {nx}x{ny} px wave holds no {block} px block inside a {margin} px margin")
    top = margin + ((ny - 2 * margin) - rows * block) // 2
    left = margin + ((nx - 2 * margin) - cols * block) // 2
    region = (slice(top, top + rows * block), slice(left, left + cols * block))
    dx = _complex_log_gradient(wave, 1)[region]
    dy = _complex_log_gradient(wave, 0)[region]
    amplitude = np.abs(wave[region])

    def blocks(values):
        return values.reshape(rows, block, cols, block).swapaxes(1, 2).reshape(rows, cols, block * block)

    mean_amplitude = blocks(amplitude).mean(axis=-1)
    spread = np.zeros((rows, cols))
    for derivative in (dx, dy):
        values = blocks(derivative)
        spread += np.mean(np.abs(values - values.mean(axis=-1, keepdims=True)) ** 2, axis=-1)
    roughness = np.sqrt(spread)
    roughness[~np.isfinite(roughness)] = np.inf
    mean_amplitude[~np.isfinite(mean_amplitude)] = 0.0
    return mean_amplitude, roughness, (top, left)


def _components(mask: np.ndarray) -> np.ndarray:
    """Labels (1, 2, ...) of the 4-connected groups of True cells, 0 elsewhere."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask)
    return labels


def _largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1), exclusive ends, of the largest all-True rectangle of ``mask``
    (histogram method, row by row)."""
    rows, cols = mask.shape
    heights = np.zeros(cols, dtype=int)
    best, best_box = 0, (0, 0, 0, 0)
    for r in range(rows):
        heights = np.where(mask[r], heights + 1, 0)
        stack: list[int] = []
        for c in range(cols + 1):
            h = heights[c] if c < cols else 0
            while stack and heights[stack[-1]] >= h:
                top = stack.pop()
                height = heights[top]
                start = stack[-1] + 1 if stack else 0
                area = height * (c - start)
                if area > best:
                    best, best_box = area, (r - height + 1, start, r + 1, c)
            stack.append(c)
    return best_box


def find_vacuum(wave, *, block_px: int | None = None, margin_px: int | None = None,
                amplitude_tolerance: float = AMPLITUDE_TOLERANCE,
                roughness_factor: float = ROUGHNESS_FACTOR) -> VacuumRegion:
    """The vacuum region of a wave: bright and flat.

    The wave is tiled into blocks (:func:`block_scores`). A block is vacuum when
    its mean amplitude is at least ``1 - amplitude_tolerance`` times the 95th
    percentile of the blocks' and its roughness at most ``roughness_factor``
    times the 10th percentile of those bright blocks' roughness (or below
    ``ROUGHNESS_FLOOR``, 1e-3/px). The largest 4-connected group of vacuum
    blocks loses the blocks next to other blocks (where a specimen's faint edge
    may begin; unless that leaves none), and the largest rectangle of what
    remains is the region.

    Parameters
    ----------
    wave : (y, x) complex array
    block_px, margin_px : int, optional
        Block size and the margin left out at the edges (px).
    amplitude_tolerance, roughness_factor : float
        The thresholds above.

    Returns
    -------
    VacuumRegion
    """
    wave = _as_wave(wave)
    amplitude, roughness, (top, left) = block_scores(wave, block_px=block_px, margin_px=margin_px)
    block = int(block_px) if block_px else _default_block(wave.shape)
    bright_level = np.percentile(amplitude, 95)
    bright = amplitude >= (1.0 - amplitude_tolerance) * bright_level
    if bright_level <= 0 or not np.any(bright & np.isfinite(roughness)):
        raise ValueError("find_vacuum: the wave has no bright, finite region (all zero or NaN?)")
    reference = np.percentile(roughness[bright & np.isfinite(roughness)], 10)
    flat = roughness <= max(roughness_factor * reference, ROUGHNESS_FLOOR)
    labels = _components(bright & flat)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    if not sizes.any():  # (the 10th percentile block is always bright and flat)
        raise ValueError("find_vacuum: no block is both bright and flat")
    # the largest group; of equal ones, the brightest
    candidates = np.flatnonzero(sizes == sizes.max())
    chosen = max(candidates, key=lambda k: amplitude[labels == k].mean())
    group = labels == chosen
    # less the blocks next to anything that is not vacuum (the wave's margin counts as vacuum),
    # where a specimen's edge, too faint to tell from the noise, may begin
    from scipy import ndimage

    eroded = ndimage.binary_erosion(group, structure=np.ones((3, 3), dtype=bool), border_value=1)
    if eroded.any():
        group = eroded
    r0, c0, r1, c1 = _largest_rectangle(group)
    box = tuple(int(v) for v in (left + c0 * block, top + r0 * block, left + c1 * block, top + r1 * block))
    mask = np.zeros(wave.shape, dtype=bool)
    mask[top:top + group.shape[0] * block, left:left + group.shape[1] * block] = \
        np.kron(group, np.ones((block, block), dtype=bool)).astype(bool)
    inside = group[r0:r1, c0:c1]
    return VacuumRegion(box=box, mask=mask,
                        amplitude=float(np.abs(wave[box[1]:box[3], box[0]:box[2]]).mean()),
                        roughness=float(roughness[r0:r1, c0:c1][inside].max()))


# ---------------------------------------------------------------------------
# normalising
# ---------------------------------------------------------------------------


def _region(wave: np.ndarray, box) -> np.ndarray:
    left, top, right, bottom = box
    return wave[top:bottom, left:right]


def fit_phase_ramp(wave, box) -> tuple[float, float]:
    """The phase ramp ``(gx, gy)`` (rad/px) of ``wave`` in ``box``: the least-squares plane
    through the region's phase.

    The first slope is the phase of the sum of neighbour products over the region
    (the mean phase difference of adjacent pixels, wrap-free); the residual phase,
    now small, is fitted by a plane (least squares, twice) and its slope added.
    """
    wave = _as_wave(wave)
    box = check_box(box, wave.shape)
    region = _region(wave, box)
    gx = float(np.angle(np.sum(np.conj(region[:, :-1]) * region[:, 1:])))
    gy = float(np.angle(np.sum(np.conj(region[:-1, :]) * region[1:, :])))
    rows, cols = np.mgrid[0:region.shape[0], 0:region.shape[1]]
    design = np.column_stack([np.ones(region.size), cols.ravel(), rows.ravel()]).astype(float)
    for _ in range(2):
        residual = region * np.exp(-1j * (gx * cols + gy * rows))
        residual = residual * np.exp(-1j * np.angle(np.sum(residual)))
        phase = np.angle(residual).ravel()
        ok = np.isfinite(phase)
        (_, dgx, dgy), *_ = np.linalg.lstsq(design[ok], phase[ok], rcond=None)
        gx, gy = gx + float(dgx), gy + float(dgy)
    return gx, gy


def normalize_wave(wave, box, *, remove_ramp: bool = False, name: str = "vacuum") -> tuple[np.ndarray, Normalization]:
    """The wave normalised to the vacuum region ``box``: amplitude 1 and phase 0 there.

    ``normalised = wave * exp(-i (gx x + gy y)) / factor`` with the ramp of
    :func:`fit_phase_ramp` (``remove_ramp``; else no ramp) and ``factor`` the mean
    amplitude over ``box`` times the phase of the de-ramped wave's complex mean
    there: the normalised wave's mean amplitude over ``box`` is 1, its mean phase 0. Returns the normalised wave
    (the input's complex dtype) and the :class:`Normalization`; ``name`` is what
    the messages of a bad box call it.
    """
    values = np.asarray(wave)
    dtype = values.dtype if np.iscomplexobj(values) else np.complex128
    wave = _as_wave(values)
    box = check_box(box, wave.shape, name)
    ramp = (0.0, 0.0)
    if remove_ramp:
        ramp = fit_phase_ramp(wave, box)
        ny, nx = wave.shape
        wave = wave * np.exp(-1j * (ramp[0] * np.arange(nx)[np.newaxis, :] + ramp[1] * np.arange(ny)[:, np.newaxis]))
    region = _region(wave, box)
    total = complex(np.sum(region))
    factor = float(np.mean(np.abs(region))) * np.exp(1j * np.angle(total))
    if not (np.isfinite(factor) and abs(factor) > 0 and abs(total) > 0):
        raise ValueError(f"{name}: the wave's mean over the box {list(box)} is {total / region.size}; "
                         "not a vacuum region")
    return (wave / factor).astype(dtype, copy=False), Normalization(box=box, factor=factor, ramp_px=ramp)


# ---------------------------------------------------------------------------
# derived maps
# ---------------------------------------------------------------------------


def relative_thickness(wave, reference_amplitude: float = 1.0) -> np.ndarray:
    """``t/lambda = -2 ln(A / A0)`` (inelastic mean free paths), ``A0`` the vacuum amplitude."""
    with np.errstate(divide="ignore"):
        return (-2.0 * np.log(np.abs(np.asarray(wave)) / float(reference_amplitude))).astype(np.float32)


def phase_gradient(wave, sampling=(1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """The phase gradient ``(d phi/dx, d phi/dy)`` in rad per unit of ``sampling`` ((y, x) pixel
    size; default rad/px): central differences of the phase, taken as the phases of
    ``psi[k+1] conj(psi[k-1])`` (so without unwrapping; exact up to pi/2 rad/px), one-sided
    at the edges."""
    wave = _as_wave(wave)
    sy, sx = np.broadcast_to(np.asarray(sampling, dtype=float), (2,))
    out = []
    for axis, step in ((1, sx), (0, sy)):
        psi = np.moveaxis(wave, axis, 0)
        grad = np.empty(psi.shape, dtype=np.float64)
        if psi.shape[0] >= 3:
            grad[1:-1] = np.angle(psi[2:] * np.conj(psi[:-2])) / 2.0
        if psi.shape[0] >= 2:
            grad[0] = np.angle(psi[1] * np.conj(psi[0]))
            grad[-1] = np.angle(psi[-1] * np.conj(psi[-2]))
        else:
            grad[:] = 0.0
        out.append((np.moveaxis(grad, 0, axis) / step).astype(np.float32))
    return out[0], out[1]


def unwrapped_phase(wave) -> np.ndarray:
    """The phase unwrapped with :func:`skimage.restoration.unwrap_phase` (rad)."""
    from skimage.restoration import unwrap_phase

    return unwrap_phase(np.angle(np.asarray(wave))).astype(np.float32)


def phase_contours(wave, n: float = 1.0) -> np.ndarray:
    """Cosine contours ``cos(n phi)``: the phase amplified ``n`` times. An integer ``n`` needs
    no unwrapping (``cos(n phi)`` is the same for the wrapped phase); another uses
    :func:`unwrapped_phase` (and depends on the multiple of 2 pi it starts at)."""
    n = float(n)
    if n.is_integer():
        phase = np.angle(np.asarray(wave))
    else:
        phase = unwrapped_phase(wave)
    return np.cos(n * phase).astype(np.float32)


# ---------------------------------------------------------------------------
# the run's option (parameter ``normalize_vacuum``)
# ---------------------------------------------------------------------------

#: names of the attributes a normalised result carries (``data``/``variance`` in the file)
BOX_ATTR, FACTOR_ATTR, RAMP_ATTR = "vacuum_box(px)", "vacuum_factor", "vacuum_ramp(rad/nm)"


def result_attributes(normalization: Normalization, sampling_yx_nm, found: bool) -> dict:
    """The attributes of a normalised result: ``vacuum_box(px)`` (left, top, right, bottom),
    ``vacuum_factor`` (complex: what the de-ramped wave was divided by; its modulus the
    vacuum's mean amplitude), ``vacuum_region``
    ("found" or "given") and, with a ramp removed, ``vacuum_ramp(rad/nm)`` (x, y)."""
    sy, sx = (float(v) for v in sampling_yx_nm)
    attrs = {BOX_ATTR: np.asarray(normalization.box, dtype=np.int64),
             FACTOR_ATTR: complex(normalization.factor),
             "vacuum_region": "found" if found else "given"}
    if normalization.ramp_px != (0.0, 0.0):
        attrs[RAMP_ATTR] = np.array([normalization.ramp_px[0] / sx, normalization.ramp_px[1] / sy])
    return attrs


def normalize_averaged(averaged, params):
    """An averaged result (:class:`holodask.stages.averaging.Averaged`) normalised to vacuum as
    ``params.normalize_vacuum``/``remove_ramp`` say; unchanged (the same object) when off.

    ``data`` is divided as :func:`normalize_wave` says, ``variance`` by ``|factor|^2``
    (the variance of the normalised wave); the attributes of :func:`result_attributes`
    go to ``hdf5_attrs`` (those of ``data``/``variance`` in the file) and ``attrs``.
    """
    from dataclasses import replace

    from holodask.errors import DataError, ParameterError

    vacuum = getattr(params, "normalize_vacuum", False)
    if vacuum is False or vacuum is None:
        return averaged
    data = np.asarray(averaged.data)
    found = vacuum is True
    name = "parameter 'normalize_vacuum'"
    if found:
        try:
            box = find_vacuum(data).box
        except ValueError as exc:
            raise DataError(f"{name}: no vacuum region found in the averaged wave ({exc}); give the box "
                            "[left, top, right, bottom] in px") from exc
    else:
        try:
            box = check_box(vacuum, data.shape, name)
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
    try:
        normalised, normalization = normalize_wave(data, box, remove_ramp=bool(params.remove_ramp), name=name)
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    variance = averaged.variance
    if variance is not None:
        variance = (np.asarray(variance) / abs(normalization.factor) ** 2).astype(np.asarray(variance).dtype)
    attrs = result_attributes(normalization, averaged.sampling_yx_nm, found)
    return replace(averaged, data=normalised.astype(data.dtype, copy=False), variance=variance,
                   hdf5_attrs={**averaged.hdf5_attrs, **attrs}, attrs={**averaged.attrs, **attrs})
