"""Quick-look pictures of a result: amplitude, phase, variance and the per-hologram fit.

Rendered with matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["render_result", "save_quicklook"]

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
