"""Window averages along a series, registered to one reference, on a time axis.

In-situ holography (heating, biasing, magnetising, gas or liquid cells) records
long series while the specimen changes: one average of everything blurs the
change, single holograms are too noisy. ``window=K`` averages consecutive
windows of ``K`` holograms instead (window ``w`` holds the holograms
``w*S .. w*S+K-1`` of the series, ``S = window_step``, default ``K``), each with
its variance and per-hologram fit, all in one frame of reference so that the
windows can be compared pixel by pixel.

How the windows are registered
------------------------------
Every window is averaged by the rounds of :mod:`holodask.stages.rounds`
unchanged (the first round aligns its holograms to its first one, the later
rounds to the window's average; the gauge pinned to its first hologram), all
windows in one graph over the stack held once (:func:`hold_stack`: each
hologram is reconstructed once, whatever the overlap of the windows). Each
window's average is then registered to the reference, the first window's
average, by the per-frame fit kernel itself
(:func:`holodask.align.fit_to_average`: complex factor, i.e. global phase and
amplitude, and the shift, tilt and defocus as ``adjust_shift``/``adjust_tilt``/
``adjust_defocus`` switch them on), and the fitted state is applied to the
window in Fourier space (:func:`holodask.align.aligned_spectrum`), before the
final pass over its holograms: the variance is that of the holograms moved
into the reference (each deviation from the window's average registered
itself, exact, not an interpolated variance map).

Why this and not the alternatives: seeding every window's rounds from an
average of the whole series would need one more full set of rounds over every
hologram (the goal is a windowed run at the cost of a plain one), and the gauge
of each window would still have to be tied to it. The first window as
reference costs one small fit per window, leaves the first window the average
of its holograms untouched (``average`` on them gives the same numbers, up to
the rounding of float32 sums grouped in other tasks; one window of the whole
series is the plain average bit for bit), and puts
every window where a plain average sits: at the position of the series' first
hologram (where the ROI is defined), its focus and its global phase; changes
are then read against the start of the experiment. Registering against a
specimen that changes is biased by the change itself (the fit cannot tell a
uniform phase change from a global phase); that is what a fixed reference
region would avoid, and why the per-window states are written out.

A last window that would run past the end of the series is left out (its
holograms are named in a warning); with ``window_step`` larger than ``window``
the holograms between windows are left out, too.

The time axis
-------------
Where every hologram carries an acquisition time (the coordinate ``time_s``,
seconds since 1970 UTC, from DM, Velox and TIA files, or assigned to the stack),
a window's ``time`` is the mean time of its holograms in seconds since the
series' first hologram and ``window_time_s`` the absolute one (the holograms'
own ``time_s`` stay a coordinate along ``frame``); otherwise ``time`` is
the mean frame number. An external log (``window_log``, see
:mod:`holodask.io.timelog`) is interpolated at each window's time.
"""

from __future__ import annotations

import dataclasses
import logging
import time as _time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from holodask import fft
from holodask.align import (
    AlignmentGrid,
    aligned_spectrum,
    alignment_grid,
    fit_to_average,
    initial_state,
    model_error,
    model_wave,
)
from holodask.errors import DataError, ParameterError
from holodask.params import HoloParams
from holodask.series import FrameSeries
from holodask.stages.averaging import (
    DEFOCUS_START,
    OBJECT_ITERATIONS,
    _STACK_ONLY_ATTRS,
    _wave_sampling,
    _with_empty,
    held_frames,
    hold_stack,
)
from holodask.stages.reconstruction import EmptyWave
from holodask.stages.rounds import (
    AverageResult,
    HeldFrames,
    _frame,
    _batch_size,
    _Graph,
    _in_frame_order,
    _load,
    _reduce_stream,
    _weighted_part,
    round_plan,
    variance_denominator,
)
from holodask.stages.weights import frame_weights

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Windows", "plan_windows", "average_windows", "average_windows_stack", "WindowAveraged", "WindowFits",
           "register_average", "registered_spectrum", "compose_states", "check_run_windows", "frame_times",
           "RESERVED_WINDOW_NAMES"]

log = logging.getLogger("holodask")

#: coordinates of the window axis a log column may not be named as
RESERVED_WINDOW_NAMES = ("window", "time", "window_time_s", "time_s", "first_frame", "last_frame", "frame", "y",
                         "x", "xy", "iteration")


# ------------------------------------------------------------------ the windows


@dataclass(frozen=True)
class Windows:
    """Windows of ``size`` frames starting every ``step`` frames of a series of ``n_frames``:
    window ``w`` holds the positions (0-based) ``starts[w] .. starts[w] + size - 1``."""

    size: int
    step: int
    n_frames: int
    starts: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.starts)

    def positions(self, w: int) -> list[int]:
        return list(range(self.starts[w], self.starts[w] + self.size))

    @property
    def left_out(self) -> list[int]:
        """Positions in no window (after the last one, or between windows when step > size)."""
        used = np.zeros(self.n_frames, dtype=bool)
        for start in self.starts:
            used[start:start + self.size] = True
        return [int(i) for i in np.flatnonzero(~used)]

    def first_window_of(self) -> np.ndarray:
        """(n_frames,) the first window holding each position (-1: none)."""
        first = np.full(self.n_frames, -1, dtype=np.int64)
        for w in range(self.count - 1, -1, -1):
            first[self.starts[w]:self.starts[w] + self.size] = w
        return first


def plan_windows(n_frames: int, size: int, step: int | None = None) -> Windows:
    """The :class:`Windows` of a series; ``step`` None: ``size`` (windows side by side).
    A window running past the end is left out."""
    size = int(size)
    step = int(step) if step else size
    if size < 2:
        raise ParameterError(f"parameter 'window' must be an integer of at least 2 (holograms per window "
                             f"average), got {size}")
    if size > n_frames:
        raise ParameterError(f"parameter 'window' ({size}) is larger than the series: {n_frames} hologram"
                             f"{'s' if n_frames != 1 else ''}")
    if step < 1:
        raise ParameterError(f"parameter 'window_step' must be a positive integer, got {step}")
    return Windows(size, step, int(n_frames), tuple(range(0, n_frames - size + 1, step)))


# ------------------------------------------------------------------ registration kernels (numpy)


def region_grid(grid: AlignmentGrid, region) -> AlignmentGrid:
    """``grid`` with its inner region (where the fit compares waves) replaced by ``region``
    = (left, top, right, bottom) px of the wave."""
    left, top, right, bottom = (int(v) for v in region)
    inner = (slice(top, bottom), slice(left, right))
    sy, sx = grid.sampling_nm
    y = (np.arange(grid.shape[0], dtype=np.float32) * sy)[inner[0]].reshape(-1, 1)
    x = (np.arange(grid.shape[1], dtype=np.float32) * sx)[inner[1]].reshape(1, -1)
    return dataclasses.replace(grid, inner=inner, y=y, x=x)


def register_average(wave: np.ndarray, reference_spectrum: np.ndarray, grid: AlignmentGrid, *, fit_shift=True,
                     fit_tilt=False, fit_defocus=False, phase_region=None) -> tuple[np.ndarray, float]:
    """The state that moves ``wave`` (an average) onto the reference whose spectrum is
    given, and the squared residual over the inner region: :func:`fit_to_average` from
    no shift, tilt or defocus (the factor starts at its least-squares value).

    ``phase_region`` (left, top, right, bottom) px: the complex factor (global phase
    and amplitude) is then the least-squares one over that region alone (vacuum, or
    a part of the specimen that does not change), the moves staying those fitted
    over the inner region: a specimen that changes elsewhere does not shift the
    global phase.
    """
    state = fit_to_average(wave, reference_spectrum, initial_state(1.0, 0.0), grid, fit_shift=fit_shift,
                           fit_tilt=fit_tilt, fit_defocus=fit_defocus)
    if phase_region is not None:
        region = region_grid(grid, phase_region)
        moved = state.copy()
        moved[0:2] = (1.0, 0.0)
        base = model_wave(reference_spectrum, moved, region).astype(np.complex128)
        target = np.asarray(wave)[region.inner].astype(np.complex128)
        power = float(np.vdot(base, base).real)
        if power > 0:
            factor = complex(np.vdot(base, target)) / power
            state[0], state[1] = factor.real, factor.imag
    return state, model_error(wave, reference_spectrum, state, grid)


def registered_spectrum(spectrum: np.ndarray, registration: np.ndarray, grid: AlignmentGrid) -> np.ndarray:
    """The spectrum of a wave (given by its ``spectrum``) moved by ``registration``
    (:func:`holodask.align.aligned_spectrum`; without a tilt in Fourier space only)."""
    if registration[4] == 0.0 and registration[5] == 0.0:
        return aligned_spectrum(None, registration, grid, spectrum=spectrum)
    return aligned_spectrum(fft.ifft2(spectrum), registration, grid)


def compose_states(states: np.ndarray, registration: np.ndarray) -> np.ndarray:
    """Fit states against a window's average as states against the reference.

    A hologram fitted with ``(f, s, t, d)`` to an average that the reference
    gives with ``(g, sigma, tau, delta)`` is the reference with ``(f g exp(2 pi i
    tau.s), s + sigma, t + tau, d + delta)``: exact without a tilt, and with a
    tilt where there is no defocus step (a tilt and a defocus do not commute:
    their cross term, a shift of lambda delta t, is left out).
    """
    states = np.array(states, dtype=np.float64, copy=True)
    factor = (states[:, 0] + 1j * states[:, 1]) * complex(registration[0], registration[1])
    factor = factor * np.exp(2j * np.pi * (states[:, 2:4] @ registration[4:6]))
    states[:, 0], states[:, 1] = factor.real, factor.imag
    states[:, 2:7] += registration[2:7]
    return states


# ------------------------------------------------------------------ graph tasks


def _registration_task(reference_final, final, grid, fit_shift, fit_tilt, fit_defocus, phase_region=None):
    """Register a window's final average (its final state) to the reference window's."""
    return register_average(final[2], reference_final[1], grid, fit_shift=fit_shift, fit_tilt=fit_tilt,
                            fit_defocus=fit_defocus, phase_region=phase_region)


def _registered_final_state(final_state, registration, grid):
    """The final state with the average registered: ``(states, average spectrum (the
    window's own), registered average wave, convergence, registration state)``."""
    states, average, _, convergence = final_state
    state = registration[0]
    wave = fft.ifft2(registered_spectrum(average, state, grid)).astype(np.complex64)
    return states, average, wave, convergence, state


def _registered_final_task(block, state, average_spectrum, registered_wave, registration, grid):
    """Error against the window's average, and the squared deviation from it moved into the
    reference (the deviation is linear in the wave: moving it is exact)."""
    wave = _frame(block)
    error = model_error(wave, average_spectrum, state, grid)
    moved = registered_spectrum(aligned_spectrum(wave, state, grid), registration, grid)
    deviation = registered_wave - fft.ifft2(moved)
    return [error], (deviation.real**2 + deviation.imag**2).astype(np.float32)


def _registered_final_batch(blocks, indices, final_state, grid, weights=None):
    """:func:`_registered_final_task` on a batch of frames (see ``rounds._final_batch``)."""
    states, average, registered_wave, _, registration = final_state
    parts = (_registered_final_task(_load(block), states[index], average, registered_wave, registration, grid)
             for block, index in zip(blocks, indices))
    if weights is not None:
        parts = (_weighted_part(part, weights[index]) for part, index in zip(parts, indices))
    return _reduce_stream(parts)


def _registered_finish(part, order, final_state, n_frames, variance, weights=None):
    """The window's :class:`AverageResult`, registered (see ``rounds._finish``)."""
    errors, squared = part
    states, _, wave, convergence, _ = final_state
    errors = np.array(_in_frame_order(errors, order), dtype=float)
    var = (squared / variance_denominator(n_frames, weights)).astype(np.float32) if variance else None
    return AverageResult(wave, var, states, errors, convergence + [float(errors.sum())])


def _collect(*values):
    return list(values)


# ------------------------------------------------------------------ the averaging


@dataclass
class WindowFits:
    """What :func:`average_windows` computes: per window its :class:`AverageResult`
    (the average and variance registered to the reference, the holograms' states
    against the window's own average), the registration states (W, 7) and their
    squared residuals; the reference is window 0 (identity)."""

    windows: Windows
    results: list
    registrations: np.ndarray
    registration_errors: np.ndarray


def _subset(held: HeldFrames, positions: list[int]) -> HeldFrames:
    holders = [held.holders[i] for i in positions] if held.holders is not None else None
    return HeldFrames([held.items[i] for i in positions], held.client, holders)


def average_windows(held: HeldFrames, grid: AlignmentGrid, defocus_nm, windows: Windows, *,
                    iterations: int = OBJECT_ITERATIONS, fit_shift: bool = True, fit_tilt: bool = False,
                    fit_defocus: bool = False, defocus_start: int = DEFOCUS_START, tolerance: float | None = None,
                    weights=None, variance: bool = True, phase_region=None) -> WindowFits:
    """Average every window of the held frames and register it to the first window.

    All windows' rounds, the registrations and the final passes are one graph
    (computed at once: the windows' rounds run side by side); the frames are
    those of ``held``, each read where it is held, never recomputed.
    ``weights`` (one per frame, or None): every window is a weighted average of its
    frames (normalised within the window). ``phase_region``: see :func:`register_average`.
    """
    n_frames = len(held)
    defocus_nm = np.zeros(n_frames) if defocus_nm is None else np.asarray(defocus_nm, dtype=float)
    graph = _Graph(held.client)
    # frames per task as for one series of all windows' frames (the windows' rounds run side by side):
    # a window of few frames in one or a few tasks, not one task per frame
    batch = min(windows.size, _batch_size(windows.size * windows.count, held.client))
    plans = []
    for w in range(windows.count):
        positions = windows.positions(w)
        plans.append(round_plan(_subset(held, positions), grid, defocus_nm[positions], iterations=iterations,
                                fit_shift=fit_shift, fit_tilt=fit_tilt, fit_defocus=fit_defocus,
                                defocus_start=defocus_start, tolerance=tolerance,
                                weights=None if weights is None else np.asarray(weights)[positions], graph=graph,
                                batch=batch))
    reference = plans[0]
    reference_final = reference.finals[reference.replicas[0]]
    results = [reference.final_pass(reference.finals, variance)]
    registrations = []
    for plan in plans[1:]:
        first = plan.replicas[0]
        registration = graph.add("register", _registration_task, reference_final, plan.finals[first],
                                 reference.grid_ref, fit_shift, fit_tilt, fit_defocus, phase_region, worker=first)
        finals = plan.per_replica("registered-state", _registered_final_state, plan.finals, registration,
                                  plan.grid_ref)
        results.append(plan.final_pass(finals, variance, final_batch=_registered_final_batch,
                                       finish=_registered_finish))
        registrations.append(registration)
    values = graph.compute(graph.add("windows", _collect, *results, *registrations))
    fits, registered = values[:windows.count], values[windows.count:]
    states = np.array([initial_state(1.0, 0.0)] + [state for state, _ in registered])
    errors = np.array([0.0] + [error for _, error in registered])
    return WindowFits(windows, fits, states, errors)


# ------------------------------------------------------------------ times and the log


def frame_times(series: FrameSeries) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(time, time_s, unit)`` of the frames: with acquisition times for every frame
    (the coordinate ``time_s``) the seconds since the first frame, the absolute times
    and ``"s"``; else the frame numbers, None and ``"frame"``."""
    absolute = series.coords.get("time_s")
    if absolute is not None:
        absolute = np.asarray(absolute, dtype=np.float64).ravel()
        if absolute.size == series.n_frames and np.all(np.isfinite(absolute)):
            return absolute - absolute[0], absolute, "s"
        if absolute.size == series.n_frames and np.any(np.isfinite(absolute)):
            warnings.warn("time_s: some holograms carry no acquisition time; the window axis counts frames")
    return np.asarray(series.frame_index, dtype=np.float64), None, "frame"


def _log_coords(timelog, window_time, window_time_s, unit: str) -> dict:
    """The log's columns at the windows' times (name -> values)."""
    if timelog is None:
        return {}
    for name in timelog.names:
        if name in RESERVED_WINDOW_NAMES:
            raise ParameterError(f"parameter 'window_log': the column {name!r} of {timelog.path} has the name of "
                                 "a coordinate of the window axis; rename it")
    if timelog.absolute:
        if window_time_s is None:
            raise ParameterError(
                f"parameter 'window_log': the first column of {timelog.path} is 'time_s' (seconds since 1970 UTC), "
                "but the holograms carry no acquisition times; give the times relative to the first hologram "
                "(in frames for this series) under another name, such as 'time'")
        at = window_time_s
    else:
        at = window_time
    inside = timelog.covers(at)
    clock = ("seconds since 1970 UTC" if timelog.absolute else
             "seconds since the first hologram" if unit == "s" else "frame numbers")
    if not np.any(inside):
        raise ParameterError(
            f"parameter 'window_log': the log {timelog.path} covers {timelog.times[0]:g} .. {timelog.times[-1]:g} "
            f"and the windows lie at {at.min():g} .. {at.max():g} ({clock}): no window within it"
            + ("" if timelog.absolute else "; name the first column 'time_s' for absolute times"))
    if not np.all(inside):
        outside = ", ".join(str(int(w)) for w in np.flatnonzero(~inside)[:20])
        warnings.warn(f"window_log: windows {outside} lie outside the log's time span; their log values are NaN")
    values = timelog.at(at)
    return {name: values[:, k] for k, name in enumerate(timelog.names)}


def check_run_windows(params: HoloParams, objects: FrameSeries | None) -> None:
    """What a windowed run can check before any work: the windows fit the series, a list
    of weights has one per hologram, an absolute log has acquisition times to meet."""
    if params.window is None:
        if params.weights is not None and params.only_align:
            raise ParameterError("parameter 'weights': only_align averages nothing")
        return
    if params.only_align:
        raise ParameterError("parameter 'window': only_align averages nothing")
    if getattr(params, "normalize_vacuum", False) is not False:
        raise ParameterError("parameter 'normalize_vacuum': not with 'window' (the windows' phase is referred to "
                             "the first window's; window_phase_roi refers it to a vacuum region, and "
                             ".holo.normalized() normalises a window of the result)")
    if getattr(params, "reject_outliers", None) is not None:
        raise ParameterError("parameter 'reject_outliers': not with 'window' (give 'weights' instead, e.g. "
                             "\"fringe_contrast\")")
    if objects is None:
        raise ParameterError("parameter 'window': needs object holograms (object_names)")
    plan_windows(objects.n_frames, params.window, params.window_step)
    if params.weights is not None and params.weights.values is not None \
            and len(params.weights.values) != objects.n_frames:
        raise ParameterError(f"parameter 'weights': {len(params.weights.values)} weights for {objects.n_frames} "
                             "holograms (one per hologram, in series order)")
    if params.window_log is not None:
        _, absolute, unit = frame_times(objects)
        if params.window_log.absolute and absolute is None:
            _log_coords(params.window_log, None, None, unit)  # the error


# ------------------------------------------------------------------ the stage


@dataclass
class WindowAveraged:
    """What :func:`average_windows_stack` found, without xarray (see :meth:`to_dataset`).

    ``data`` (W, ny, nx) complex64 and ``variance`` (W, ny, nx) float32, registered;
    ``registrations`` (W, 7) the states that moved each window onto the first;
    ``frame_states`` (N, 7) and ``frame_errors`` (N,) every hologram's fit, in the
    reference's frame, from the first window holding it (NaN: in none);
    ``window_coords`` the coordinates along ``window`` (name -> (values, attrs)).
    """

    data: np.ndarray
    variance: np.ndarray | None
    windows: Windows
    fits: list
    registrations: np.ndarray
    registration_errors: np.ndarray
    sampling_yx_nm: tuple[float, float]
    frame_index: np.ndarray
    frame_states: np.ndarray
    frame_errors: np.ndarray
    window_coords: dict = field(default_factory=dict)
    frame_values: dict = field(default_factory=dict)
    frame_coords: dict = field(default_factory=dict)
    coord_attrs: dict = field(default_factory=dict)
    empty: EmptyWave | None = None
    hdf5_attrs: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    @property
    def convergence(self) -> np.ndarray:
        """(W, rounds) total squared residual of each window per round (NaN-padded where
        ``tolerance`` ended a window's rounds early)."""
        length = max(len(fit.convergence) for fit in self.fits)
        out = np.full((len(self.fits), length), np.nan)
        for w, fit in enumerate(self.fits):
            out[w, :len(fit.convergence)] = fit.convergence
        return out

    def to_dataset(self) -> "xr.Dataset":
        """The result as an :class:`xarray.Dataset`: the names of :func:`holodask.open_result`
        for a windowed result (``data``/``variance`` with dims ``(window, y, x)``)."""
        from holodask.accessor import xr

        sy, sx = self.sampling_yx_nm
        n_windows, ny, nx = self.data.shape
        coords = {"window": np.arange(n_windows), "y": ("y", np.arange(ny) * sy, {"units": "nm"}),
                  "x": ("x", np.arange(nx) * sx, {"units": "nm"}), "frame": self.frame_index, "xy": ["x", "y"],
                  "iteration": np.arange(self.convergence.shape[1])}
        coords.update({name: ("window", values, dict(attrs)) for name, (values, attrs) in self.window_coords.items()})
        coords.update({name: ("frame", values, dict(self.coord_attrs.get(name, {})))
                       for name, values in self.frame_coords.items()})
        registration = self.registrations
        variables: dict = {
            "data": (("window", "y", "x"), self.data),
            "window_factor": (("window",), registration[:, 0] + 1j * registration[:, 1]),
            "window_shift_nm": (("window", "xy"), registration[:, 2:4][:, ::-1]),
            "window_tilt_per_nm": (("window", "xy"), registration[:, 4:6][:, ::-1]),
            "window_defocus_nm": (("window",), registration[:, 6]),
            "window_error": (("window",), self.registration_errors),
            "convergence": (("window", "iteration"), self.convergence),
            "factor": (("frame",), self.frame_states[:, 0] + 1j * self.frame_states[:, 1]),
            "shift_nm": (("frame", "xy"), self.frame_states[:, 2:4][:, ::-1]),
            "tilt_per_nm": (("frame", "xy"), self.frame_states[:, 4:6][:, ::-1]),
            "defocus_nm": (("frame",), self.frame_states[:, 6]),
            "error": (("frame",), self.frame_errors),
        }
        if self.variance is not None:
            variables["variance"] = (("window", "y", "x"), self.variance)
        for name, values in self.frame_values.items():
            variables[name] = (("frame", "xy") if np.ndim(values) == 2 else ("frame",), values)
        result = xr.Dataset(variables, coords=coords, attrs={**self.attrs, "hdf5_attrs": self.hdf5_attrs})
        if self.empty is not None:
            result = _with_empty(result, self.empty)
        return result


#: smallest side (px) of ``window_phase_roi``
MIN_PHASE_REGION_PX = 4


def _phase_region(params: HoloParams, shape) -> tuple[int, int, int, int] | None:
    """``window_phase_roi`` checked against the waves' (ny, nx)."""
    region = params.window_phase_roi
    if region is None:
        return None
    left, top, right, bottom = region
    ny, nx = (int(v) for v in shape)
    if right > nx or bottom > ny:
        raise ParameterError(f"parameter 'window_phase_roi': [{left}, {top}, {right}, {bottom}] reaches outside "
                             f"the {nx} x {ny} px averaged wave (object_size)")
    if right - left < MIN_PHASE_REGION_PX or bottom - top < MIN_PHASE_REGION_PX:
        raise ParameterError(f"parameter 'window_phase_roi': [{left}, {top}, {right}, {bottom}] is smaller than "
                             f"{MIN_PHASE_REGION_PX} x {MIN_PHASE_REGION_PX} px")
    return region


def _check_window_weights(weights, windows: Windows, frame_index) -> None:
    if weights is None:
        return
    for w in range(windows.count):
        positions = windows.positions(w)
        if np.count_nonzero(np.asarray(weights)[positions]) < 2:
            raise ParameterError(
                f"parameter 'weights': window {w} (holograms {int(frame_index[positions[0]])}.."
                f"{int(frame_index[positions[-1]])}) has fewer than two holograms of positive weight")


def average_windows_stack(series: FrameSeries, params: HoloParams, *, client=None) -> WindowAveraged:
    """:func:`holodask.average` with ``window``: the window averages of a
    :class:`FrameSeries` of waves (held here first, once), registered, on a time axis."""
    from holodask.io.holo_hdf5 import hologram_attrs

    voltage = series.attrs.get("voltage_kV") or params.voltage_kV
    defocus = np.asarray(series.coords.get("defocus_nm", np.zeros(series.n_frames)), dtype=float)
    if (params.adjust_defocus or np.any(defocus != 0)) and not voltage:
        raise ParameterError("voltage: needed for defocus (the files carry no voltage); give the parameter 'voltage' in kV")
    windows = plan_windows(series.n_frames, params.window, params.window_step)
    frame_index = np.asarray(series.frame_index)
    if windows.left_out:
        left = [int(frame_index[i]) for i in windows.left_out]
        shown = f"{left[0]}..{left[-1]}" if left == list(range(left[0], left[-1] + 1)) else ", ".join(map(str, left))
        warnings.warn(f"window: the holograms {shown} ({len(left)}) are in no window of {windows.size} "
                      f"(step {windows.step}) and are left out")
    sampling = _wave_sampling(series)
    series = hold_stack(series, client=client)
    held = held_frames(series)
    weights = frame_weights(series, params)
    _check_window_weights(weights, windows, frame_index)
    grid = alignment_grid(series.shape[1:], sampling, voltage)
    phase_region = _phase_region(params, series.shape[1:])
    started = _time.perf_counter()
    fits = average_windows(held, grid, defocus, windows, iterations=OBJECT_ITERATIONS,
                           fit_shift=params.adjust_shift, fit_tilt=params.adjust_tilt,
                           fit_defocus=params.adjust_defocus, defocus_start=DEFOCUS_START,
                           tolerance=params.tolerance, weights=weights, phase_region=phase_region)
    log.info("averaging: %d windows of %d holograms (step %d) in %.2f s", windows.count, windows.size,
             windows.step, _time.perf_counter() - started)
    data = np.stack([fit.wave for fit in fits.results]).astype(np.complex64, copy=False)
    variance = np.stack([fit.variance for fit in fits.results]).astype(np.float32, copy=False)

    # every hologram's fit in the reference's frame, from the first window holding it
    n_frames = series.n_frames
    frame_states = np.full((n_frames, 7), np.nan)
    frame_errors = np.full(n_frames, np.nan)
    first = windows.first_window_of()
    for w, fit in enumerate(fits.results):
        positions = np.asarray(windows.positions(w))
        mine = first[positions] == w
        frame_states[positions[mine]] = compose_states(fit.states, fits.registrations[w])[mine]
        frame_errors[positions[mine]] = fit.errors[mine]

    # the window axis
    times, absolute, unit = frame_times(series)
    window_coords: dict = {}
    mean_of = []
    for w in range(windows.count):
        positions = windows.positions(w)
        mean_of.append(None if weights is None else np.asarray(weights)[positions])
    window_time = np.array([np.average(times[windows.positions(w)], weights=mean_of[w])
                            for w in range(windows.count)])
    window_coords["time"] = (window_time, {"units": unit, "long_name": (
        "mean acquisition time since the first hologram" if unit == "s" else "mean frame number")})
    window_time_s = None
    if absolute is not None:
        window_time_s = np.array([np.average(absolute[windows.positions(w)], weights=mean_of[w])
                                  for w in range(windows.count)])
        window_coords["window_time_s"] = (window_time_s, {"units": "s", "long_name": "mean acquisition time, "
                                                   "seconds since 1970-01-01 UTC"})
    window_coords["first_frame"] = (np.array([frame_index[s] for s in windows.starts], dtype=np.int64), {})
    window_coords["last_frame"] = (np.array([frame_index[s + windows.size - 1] for s in windows.starts],
                                            dtype=np.int64), {})
    logged = _log_coords(params.window_log, window_time, window_time_s, unit)
    for name, values in logged.items():
        window_coords[name] = (values, {"source": params.window_log.path})

    # per-frame values and attributes (as a plain average gives them)
    coords = series.coords
    aligned = params.enable_raw_alignment and n_frames > 1
    frame_values: dict = {}
    raw_shift = None
    if "raw_shift_x_px" in coords:
        raw_shift = np.stack([coords["raw_shift_x_px"], coords["raw_shift_y_px"]], axis=1)
        if aligned:
            frame_values["raw_shift_px"] = raw_shift
    for name in ("saturated_px", "outliers"):
        if name in coords:
            frame_values[name] = np.asarray(coords[name])
    if weights is not None:
        frame_values["weight"] = weights
    hdf5_attrs = dict(series.attrs.get("hdf5_attrs") or {})
    hdf5_attrs.update(hologram_attrs(
        shift_nm=frame_states[:, 2:4][:, ::-1], tilt_per_nm=frame_states[:, 4:6][:, ::-1],
        defocus_nm=frame_states[:, 6], factor=frame_states[:, 0] + 1j * frame_states[:, 1], error=frame_errors,
        raw_shift_px=raw_shift if aligned else None, frame_index=frame_index))
    result = WindowAveraged(data, variance, windows, fits.results, fits.registrations, fits.registration_errors,
                            sampling, frame_index, frame_states, frame_errors, window_coords, frame_values,
                            {name: values for name, values in coords.items()
                             if name not in ("raw_shift_x_px", "raw_shift_y_px", "saturated_px", "outliers",
                                             "defocus_nm")},
                            dict(series.coord_attrs))
    hdf5_attrs.update(window_attrs(result, params, unit))
    if weights is not None:
        hdf5_attrs["weight"] = weights
    result.hdf5_attrs = hdf5_attrs
    attrs = {key: value for key, value in series.attrs.items() if key not in _STACK_ONLY_ATTRS and value is not None}
    attrs["parameters"] = dict(params.raw)
    attrs["window_size"], attrs["window_step"] = windows.size, windows.step
    result.attrs = attrs
    empty = series.attrs.get("empty")
    result.empty = empty if isinstance(empty, EmptyWave) else None
    if not np.all(np.isfinite(data)):
        raise DataError("window: a window average holds NaN or infinite values")
    return result


def window_attrs(result: WindowAveraged, params: HoloParams, unit: str) -> dict:
    """The per-window attributes of the output's ``data``/``variance`` (README, "Output layout")."""
    windows, registration = result.windows, result.registrations
    coords = result.window_coords
    attrs = {
        "window_size": windows.size,
        "window_step": windows.step,
        "window_reference": 0,
        "window_first_frame": coords["first_frame"][0],
        "window_last_frame": coords["last_frame"][0],
        "window_time": coords["time"][0],
        "window_time_unit": unit,
        "window_shift(nm)": registration[:, 2:4][:, ::-1],
        "window_tilt(1/nm)": registration[:, 4:6][:, ::-1],
        "window_defocus(nm)": registration[:, 6],
        "window_factor": registration[:, 0] + 1j * registration[:, 1],
        "window_error": result.registration_errors,
        "window_convergence": result.convergence,
    }
    if "window_time_s" in coords:
        attrs["window_time_s"] = coords["window_time_s"][0]
    if params.window_phase_roi is not None:
        attrs["window_phase_roi"] = np.asarray(params.window_phase_roi, dtype=np.int64)
    if windows.left_out:
        attrs["window_left_out"] = np.asarray(result.frame_index)[windows.left_out].astype(np.int64)
    if params.window_log is not None:
        names = list(params.window_log.names)
        attrs["window_log_file"] = params.window_log.path
        attrs["window_log_columns"] = names
        attrs["window_log"] = np.stack([coords[name][0] for name in names], axis=1)
    return attrs
