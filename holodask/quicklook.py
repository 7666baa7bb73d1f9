"""Quick-look pictures of a result: amplitude, phase, variance and the per-hologram fit.

A windowed result (``holodask run --window``) is drawn as a strip of the
windows' phase, the phase change against the first window, and the windows'
registration and log along time; :func:`save_window_animation` writes the
windows' phase as an animated GIF (matplotlib's Pillow writer).

Rendered with matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["render_result", "render_windows", "save_quicklook", "save_window_animation", "windowed"]

#: at most this many windows are drawn in the strip (evenly chosen); the animation has all
MAX_STRIP_WINDOWS = 8

#: titles of the image panels, in the order they are drawn
IMAGE_PANELS = ("amplitude", "phase (wrapped)", "phase (unwrapped)", "variance")


def _figure(n_rows: int, n_cols: int):
    from matplotlib.figure import Figure

    return Figure(figsize=(4.2 * n_cols, 3.8 * n_rows), layout="constrained")


def _extent_nm(da: xr.DataArray):
    if "x" in da.coords and "y" in da.coords and da.sizes.get("x", 0) > 1:
        x = np.asarray(da["x"], dtype=float)
        y = np.asarray(da["y"], dtype=float)
        dx = x[1] - x[0]
        dy = y[1] - y[0] if len(y) > 1 else dx
        return (x[0] - dx / 2, x[-1] + dx / 2, y[-1] + dy / 2, y[0] - dy / 2), "nm"
    return None, "px"


def _image(fig, ax, values, title, extent, unit, cmap="gray", vmin=None, vmax=None, label=""):
    im = ax.imshow(values, cmap=cmap, extent=extent, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    return im


def render_result(result: xr.Dataset, *, unwrap: bool = True):
    """Draw a result as a matplotlib figure.

    Parameters
    ----------
    result : xarray.Dataset
        As returned by :func:`holodask.results.open_result` or :func:`holodask.pipeline.run`:
        complex ``data`` (or ``empty`` when only an empty series was averaged), optional
        ``variance``, per-hologram ``shift_nm``, ``defocus_nm``, ``factor``, ``error`` and
        ``convergence``.
    unwrap : bool
        Also draw the phase unwrapped with :func:`skimage.restoration.unwrap_phase`.

    Returns
    -------
    matplotlib.figure.Figure
        Image panels titled as :data:`IMAGE_PANELS` (those available), then the fit panels.
    """
    wave_name = "data" if "data" in result else "empty" if "empty" in result else None
    if wave_name is None:
        raise ValueError("the result holds neither 'data' nor 'empty'")
    if windowed(result):
        return render_windows(result, unwrap=unwrap)
    wave = result[wave_name]
    values = np.asarray(wave.values)
    extent, unit = _extent_nm(wave)

    panels = [("amplitude", np.abs(values), "gray", None, None, "amplitude")]
    panels.append(("phase (wrapped)", np.angle(values), "twilight", -np.pi, np.pi, "rad"))
    if unwrap:
        from skimage.restoration import unwrap_phase

        panels.append(("phase (unwrapped)", unwrap_phase(np.angle(values)), "viridis", None, None, "rad"))
    if "variance" in result:
        panels.append(("variance", np.asarray(result["variance"].values), "magma", None, None, ""))

    fit_vars = [v for v in ("shift_nm", "defocus_nm", "factor", "error", "fringe_contrast", "sideband_shift_px",
                            "phase_noise_rad") if v in result]
    has_convergence = "convergence" in result and result["convergence"].size > 0
    n_plots = len(fit_vars) + int(has_convergence)
    n_cols = 4
    n_rows = (len(panels) + n_cols - 1) // n_cols + (n_plots + n_cols - 1) // n_cols
    fig = _figure(n_rows, n_cols)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()

    for ax, (title, img, cmap, vmin, vmax, label) in zip(axes, panels):
        _image(fig, ax, img, f"{wave_name}: {title}", extent, unit, cmap, vmin, vmax, label)
    k = (len(panels) + n_cols - 1) // n_cols * n_cols
    for ax in axes[len(panels) : k]:
        ax.set_axis_off()

    def frame_axis(da):
        return np.asarray(da["frame"]) if "frame" in da.coords else np.arange(da.shape[0])

    for name in fit_vars:
        ax = axes[k]
        k += 1
        da = result[name]
        frames = frame_axis(da)
        vals = np.asarray(da.values)
        if name == "shift_nm":
            ax.plot(frames, vals[:, 0], "o-", label="x")
            ax.plot(frames, vals[:, 1], "s-", label="y")
            ax.set_ylabel("shift (nm)")
            ax.legend()
        elif name == "factor":
            ax.plot(frames, np.abs(vals), "o-", label="|factor|")
            ax2 = ax.twinx()
            ax2.plot(frames, np.angle(vals), "r.--", label="arg")
            ax2.set_ylabel("arg(factor) (rad)", color="r")
            ax.set_ylabel("|factor|")
        elif name == "defocus_nm":
            ax.plot(frames, vals, "o-")
            ax.set_ylabel("defocus (nm)")
        elif name == "sideband_shift_px":  # the sideband's drift from the first hologram's position
            ax.plot(frames, vals[:, 0] - vals[0, 0], "o-", label="x")
            ax.plot(frames, vals[:, 1] - vals[0, 1], "s-", label="y")
            ax.set_ylabel("sideband drift (FFT px)")
            ax.legend()
        elif name == "fringe_contrast":
            ax.plot(frames, vals, "o-")
            ax.set_ylabel("fringe contrast")
        elif name == "phase_noise_rad":
            ax.plot(frames, vals, "o-")
            ax.set_ylabel("phase noise (rad)")
        else:
            ax.plot(frames, vals, "o-")
            ax.set_ylabel("squared residual")
        ax.set_xlabel("hologram")
        ax.set_title({"sideband_shift_px": "sideband drift", "phase_noise_rad": "phase noise (shot noise)"}.get(
            name, name.replace("_nm", " (nm)").replace("_", " ")))
    if has_convergence:
        ax = axes[k]
        k += 1
        conv = np.asarray(result["convergence"].values)
        ax.semilogy(np.arange(1, conv.size + 1), conv, "o-")
        ax.set_xlabel("iteration")
        ax.set_ylabel("total squared residual")
        ax.set_title("convergence")
    for ax in axes[k:]:
        ax.set_axis_off()
    return fig


def windowed(result: xr.Dataset) -> bool:
    """Whether ``result`` holds window averages (``data`` along ``window``)."""
    return "data" in result and "window" in result["data"].dims


def _time_axis(result: xr.Dataset) -> tuple[np.ndarray, str]:
    """The windows' times and the axis label."""
    if "time" in result.coords:
        unit = result["time"].attrs.get("units", "frame")
        return np.asarray(result["time"].values, dtype=float), (
            "time since the first hologram (s)" if unit == "s" else "mean frame number")
    return np.arange(result.sizes["window"], dtype=float), "window"


def _window_title(result: xr.Dataset, w: int) -> str:
    title = f"window {w}"
    if "first_frame" in result.coords and "last_frame" in result.coords:
        title += f": frames {int(result['first_frame'].values[w])}-{int(result['last_frame'].values[w])}"
    if "time" in result.coords and result["time"].attrs.get("units") == "s":
        title += f", t = {float(result['time'].values[w]):.4g} s"
    return title


def window_phases(result: xr.Dataset, unwrap: bool = True) -> np.ndarray:
    """(W, ny, nx) phase of every window: unwrapped (each brought within pi, on average,
    of the first window's, so that all share one scale), else wrapped."""
    waves = np.asarray(result["data"].values)
    phases = np.angle(waves)
    if not unwrap:
        return phases
    from skimage.restoration import unwrap_phase

    first = unwrap_phase(phases[0])
    out = [first]
    for k in range(1, len(phases)):
        # the first window's unwrapping plus the (small) change: one scale for every window
        change = np.angle(waves[k] * np.conj(waves[0]))
        out.append(first + unwrap_phase(change))
    return np.array(out)


def _inner(values: np.ndarray) -> np.ndarray:
    """The inner region (1/6 margin, the alignment fit's) of (..., ny, nx) images: colour
    scales come from there, not from a registered window's border, which holds what its
    shift wrapped around."""
    ny, nx = values.shape[-2:]
    my, mx = ny // 6, nx // 6
    return values[..., my:ny - my, mx:nx - mx]


def _strip_windows(n_windows: int) -> list[int]:
    if n_windows <= MAX_STRIP_WINDOWS:
        return list(range(n_windows))
    return sorted({int(round(v)) for v in np.linspace(0, n_windows - 1, MAX_STRIP_WINDOWS)})


def render_windows(result: xr.Dataset, *, unwrap: bool = True):
    """Draw a windowed result: the windows' phase in a strip (one colour scale; at most
    :data:`MAX_STRIP_WINDOWS`, evenly chosen), below it the phase change against the
    first window, then along time the windows' registration (shift, global phase and
    amplitude), the joined log's columns and each window's final residual."""
    shown = _strip_windows(result.sizes["window"])
    phases = window_phases(result, unwrap)
    waves = np.asarray(result["data"].values)
    extent, unit = _extent_nm(result["data"].isel(window=0))
    times, time_label = _time_axis(result)
    log_names = [name for name, coord in result.coords.items()
                 if coord.dims == ("window",) and name not in ("window", "time", "window_time_s", "first_frame",
                                                               "last_frame")]
    plots = ["registration", "factor"] + (["log"] if log_names else []) + (["convergence"]
                                                                           if "convergence" in result else [])
    n_cols = max(len(shown), len(plots))
    fig = _figure(3, n_cols)
    axes = fig.subplots(3, n_cols, squeeze=False)
    low, high = np.percentile(_inner(phases[shown]), [0.5, 99.5])
    changes = np.angle(waves * np.conj(waves[0]))
    limit = float(np.percentile(np.abs(_inner(changes[shown[1:]])), 99.5)) if len(shown) > 1 else np.pi
    limit = limit if limit > 0 else np.pi
    for column, w in enumerate(shown):
        _image(fig, axes[0, column], phases[w], _window_title(result, w), extent, unit, "viridis", low, high,
               "phase (rad)")
        _image(fig, axes[1, column], changes[w], f"window {w} - window 0" if w else "window 0 (the reference)",
               extent, unit, "RdBu_r", -limit, limit, "phase change (rad)")
    for column in range(len(shown), n_cols):
        axes[0, column].set_axis_off()
        axes[1, column].set_axis_off()
    more = result.sizes["window"] - len(shown)
    fig.suptitle(f"{result.sizes['window']} windows" + (f" ({len(shown)} shown; holodask show --gif for all)"
                                                        if more else ""))
    for column, kind in enumerate(plots):
        ax = axes[2, column]
        if kind == "registration" and "window_shift_nm" in result:
            shift = np.asarray(result["window_shift_nm"].values)
            ax.plot(times, shift[:, 0], "o-", label="x")
            ax.plot(times, shift[:, 1], "s-", label="y")
            ax.set_ylabel("shift onto window 0 (nm)")
            ax.legend()
            ax.set_title("registration")
        elif kind == "factor" and "window_factor" in result:
            factor = np.asarray(result["window_factor"].values)
            ax.plot(times, np.angle(factor), "o-")
            ax.set_ylabel("global phase (rad)")
            ax2 = ax.twinx()
            ax2.plot(times, np.abs(factor), "r.--")
            ax2.set_ylabel("amplitude factor", color="r")
            ax.set_title("global factor onto window 0")
        elif kind == "log":
            for name in log_names:
                ax.plot(times, np.asarray(result[name].values, dtype=float), "o-", label=name)
            ax.legend()
            ax.set_title("log")
        elif kind == "convergence":
            conv = np.asarray(result["convergence"].values, dtype=float)
            last = np.array([row[np.isfinite(row)][-1] if np.any(np.isfinite(row)) else np.nan for row in conv])
            ax.plot(times, last, "o-")
            ax.set_ylabel("total squared residual")
            ax.set_title("final residual of each window")
        ax.set_xlabel(time_label)
    for column in range(len(plots), n_cols):
        axes[2, column].set_axis_off()
    return fig


class _GifWriter:
    """matplotlib's Pillow writer, saving to any name (a temporary file's) as GIF."""

    def __new__(cls, fps: float):
        from matplotlib.animation import PillowWriter

        class GifWriter(PillowWriter):
            def finish(self):
                with open(self.outfile, "wb") as file:
                    self._frames[0].save(file, format="GIF", save_all=True, append_images=self._frames[1:],
                                         duration=int(1000 / self.fps), loop=0)

        return GifWriter(fps=fps)


def save_window_animation(result: xr.Dataset, gif_path: str | Path, *, fps: float = 4.0, unwrap: bool = True,
                          dpi: int = 80, protected=()) -> Path:
    """The windows' phase (one colour scale) as an animated GIF, one frame per window,
    titled with its frames and time; written like :func:`save_quicklook`."""
    from holodask.io.safe_write import AtomicOutput

    try:
        import PIL  # noqa: F401  (matplotlib's Pillow writer)
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        raise ValueError("--gif: needs Pillow (pip install pillow)") from None
    if not windowed(result):
        raise ValueError("--gif: the result holds no window averages (holodask run --window)")
    gif_path = Path(gif_path)
    phases = window_phases(result, unwrap)
    low, high = np.percentile(_inner(phases), [0.5, 99.5])
    extent, unit = _extent_nm(result["data"].isel(window=0))
    protected = [*protected, result.attrs.get("source")]
    with AtomicOutput(gif_path, what="--gif", kind="gif", protected=protected) as out:
        fig = _figure(1, 1)
        ax = fig.subplots()
        image = _image(fig, ax, phases[0], _window_title(result, 0), extent, unit, "viridis", low, high, "phase (rad)")
        writer = _GifWriter(fps)
        with writer.saving(fig, out.open_name(), dpi):
            for w in range(len(phases)):
                image.set_data(phases[w])
                ax.set_title(_window_title(result, w))
                writer.grab_frame()
    return gif_path


def save_quicklook(result: xr.Dataset, png_path: str | Path, *, unwrap: bool = True, dpi: int = 80,
                   protected=()) -> Path:
    """Render :func:`render_result` to a PNG file and return its path.

    The file is written through :class:`holodask.io.safe_write.AtomicOutput`: it may not
    be the result file (``result.attrs["source"]``) nor one of ``protected``, nor replace
    anything but a PNG image.
    """
    from holodask.io.safe_write import AtomicOutput

    png_path = Path(png_path)
    protected = [*protected, result.attrs.get("source")]
    with AtomicOutput(png_path, what="--png", kind="png", protected=protected) as out:
        fig = render_result(result, unwrap=unwrap)
        with open(out.open_name(), "wb") as file:
            fig.savefig(file, dpi=dpi, format="png")
    return png_path
