"""The ``.holo`` accessor on xarray objects: what a holographer reads off a wave.

``import holodask`` (or any stage that returns an xarray object) registers it::

    waves = holodask.reconstruct(holograms, params)
    waves.holo.phase                      # lazy, like the waves
    waves.isel(frame=0).holo.unwrapped_phase()
    holograms.isel(frame=0).holo.fft().holo.plot()   # spectrum with the sideband mask
    result.holo.plot()                    # a result Dataset: amplitude, phase, variance, fit
    result.holo.normalized(ramp=True)     # amplitude 1, phase 0 (and flat) in the vacuum found
    result.holo.thickness()               # t/lambda = -2 ln(A/A0)
    wave.holo.phase_gradient(), wave.holo.contours(n=8), wave.holo.find_vacuum()

Phases are in rad, amplitudes in the wave's own units; ``y``/``x`` stay in nm.
The kernels behind the vacuum methods are those of :mod:`holodask.vacuum`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["HoloDataArrayAccessor", "HoloDatasetAccessor", "xr"]


def _phase(values):
    return np.angle(values).astype(np.float32)


def _unwrap(values):
    from skimage.restoration import unwrap_phase

    return unwrap_phase(np.angle(values)).astype(np.float32)


def _per_image(func, dtype=np.float32):
    """``func`` of a 2-D image applied to every image of an (..., y, x) block."""
    def apply(block):
        block = np.asarray(block)
        out = np.empty(block.shape, dtype=dtype)
        for index in np.ndindex(block.shape[:-2]):
            out[index] = func(block[index])
        return out

    return apply


def _as_image_dims(array: xr.DataArray) -> xr.DataArray:
    if "y" not in array.dims or "x" not in array.dims:
        raise ValueError(f"expected an image with dims y and x, got {array.dims}")
    return array


def _extent(array: xr.DataArray):
    """imshow extent and unit from the y/x coordinates."""
    x, y = array.coords.get("x"), array.coords.get("y")
    if x is None or y is None or x.size < 2 or y.size < 2:
        return None, "px"
    xv, yv = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = xv[1] - xv[0], yv[1] - yv[0]
    unit = x.attrs.get("units", "px")
    return (xv[0] - dx / 2, xv[-1] + dx / 2, yv[-1] + dy / 2, yv[0] - dy / 2), unit


@xr.register_dataarray_accessor("holo")
class HoloDataArrayAccessor:
    """Holography on a DataArray: a complex wave (or stack of waves), a hologram, a spectrum."""

    def __init__(self, array: xr.DataArray):
        self._array = array

    # ------------------------------------------------------------ derived maps
    def _map(self, func, name: str, units: str, *, per_image: bool = False, dtype=np.float32,
             attrs: dict | None = None) -> xr.DataArray:
        """``func`` on the values (image by image with ``per_image``), lazily where they are."""
        import dask.array as da

        array = self._array
        if per_image:
            _as_image_dims(array)
            array = array.transpose(..., "y", "x")
            func = _per_image(func, dtype)
        data = array.data
        if isinstance(data, da.Array):
            if per_image:
                data = data.rechunk({data.ndim - 2: -1, data.ndim - 1: -1})
            values = data.map_blocks(func, dtype=dtype, meta=np.empty((0,) * data.ndim, dtype))
        else:
            values = func(np.asarray(data))
        result = array.copy(data=values)
        result.name = name
        result.attrs = attrs if attrs is not None else {"units": units, "long_name": name.replace("_", " ")}
        return result

    def _image_values(self, first: bool = True) -> np.ndarray:
        """The (first) image's values as numpy (computed if lazy)."""
        array = _as_image_dims(self._array).transpose(..., "y", "x")
        if first:
            array = array.isel({dim: 0 for dim in array.dims[:-2]})
        return np.asarray(array.values)

    def _sampling(self) -> tuple[tuple[float, float], str]:
        """((y, x) pixel size, its unit): nm from the coordinates, else 1 px."""
        steps, unit = [], "nm"
        for name in ("y", "x"):
            coord = self._array.coords[name] if name in self._array.coords else None
            if coord is None or coord.size < 2 or coord.attrs.get("units", "nm") != "nm":
                return (1.0, 1.0), "px"
            steps.append(float(coord.values[1] - coord.values[0]))
        return (steps[0], steps[1]), unit

    def _vacuum_box(self, vacuum, **options) -> tuple[tuple[int, int, int, int], bool]:
        """(box, found): ``vacuum`` given, else the box a normalised wave records, else found."""
        from holodask.vacuum import check_box, find_vacuum

        _as_image_dims(self._array)
        shape = (self._array.sizes["y"], self._array.sizes["x"])
        if vacuum is None:
            vacuum = self._array.attrs.get("vacuum_box_px")
        if vacuum is not None:
            return check_box(vacuum, shape), False
        return find_vacuum(self._image_values(), **options).box, True

    # ------------------------------------------------------------ vacuum
    def find_vacuum(self, **options) -> tuple[int, int, int, int]:
        """The vacuum region: bright (amplitude near the highest) and flat (the phase and
        amplitude vary no more than the noise, a uniform phase ramp allowed), as
        :func:`holodask.vacuum.find_vacuum` finds it.

        Parameters
        ----------
        **options
            ``block_px``, ``margin_px``, ``amplitude_tolerance``, ``roughness_factor``
            of :func:`holodask.vacuum.find_vacuum`.

        Returns
        -------
        tuple
            ``(left, top, right, bottom)`` in px of the wave (right/bottom exclusive,
            as ``roi``), the value ``normalized(vacuum=...)`` and the parameter
            ``normalize_vacuum`` take. A stack: found on its first image (computed).
        """
        from holodask.vacuum import find_vacuum

        return find_vacuum(self._image_values(), **options).box

    def normalized(self, vacuum=None, *, ramp: bool = False) -> xr.DataArray:
        """The wave normalised to vacuum: amplitude 1 and phase 0 in the vacuum region.

        ``psi * exp(-i (gx x + gy y)) / factor``: ``factor`` is the region's mean
        amplitude times the phase of its complex mean (after the ramp); the ramp ``(gx, gy)`` (with ``ramp``) the
        least-squares plane through the region's phase
        (:func:`holodask.vacuum.fit_phase_ramp`), x/y from the first pixel.

        Parameters
        ----------
        vacuum : (left, top, right, bottom), optional
            The region in px of the wave; default: found (:meth:`find_vacuum`).
        ramp : bool
            Also take out the vacuum's phase ramp.

        Returns
        -------
        xarray.DataArray
            Complex, the coordinates kept; ``attrs``: ``vacuum_box_px``,
            ``vacuum_region`` ("found"/"given"), for one image ``vacuum_factor``
            and, with ``ramp``, ``vacuum_ramp_rad_per_nm`` (x, y; ``_per_px``
            without nm coordinates). A stack is normalised image by image (each by
            its own mean over the box; lazily where it is lazy; the box found on
            its first image).
        """
        from holodask.vacuum import normalize_wave

        box, found = self._vacuum_box(vacuum)
        array = self._array
        attrs = {**array.attrs, "vacuum_box_px": list(box), "vacuum_region": "found" if found else "given"}
        dtype = array.dtype if np.iscomplexobj(np.empty(0, array.dtype)) else np.complex64
        if array.ndim == 2:
            values, normalization = normalize_wave(np.asarray(_as_image_dims(array).transpose("y", "x").values),
                                                   box, remove_ramp=ramp)
            result = array.transpose("y", "x").copy(data=values.astype(dtype, copy=False))
            attrs["vacuum_factor"] = complex(normalization.factor)
            if ramp:
                (sy, sx), unit = self._sampling()
                gx, gy = normalization.ramp_px
                attrs[f"vacuum_ramp_rad_per_{unit}"] = [gx / sx, gy / sy]
            result.attrs = attrs
            return result.transpose(*array.dims)

        def one(image):
            return normalize_wave(image, box, remove_ramp=ramp)[0]

        return self._map(one, array.name, "", per_image=True, dtype=dtype, attrs=attrs)

    def thickness(self, vacuum=None) -> xr.DataArray:
        """The relative thickness ``t/lambda = -2 ln(A / A0)`` (inelastic mean free paths).

        ``A0`` is the mean amplitude in the vacuum region: ``vacuum`` (px), else the
        region a :meth:`normalized` wave records (``A0`` then about 1), else found.
        Lazy where the wave is (a stack: ``A0`` per image).
        """
        from holodask.vacuum import relative_thickness

        left, top, right, bottom = self._vacuum_box(vacuum)[0]

        def one(image):
            return relative_thickness(image, np.abs(image[top:bottom, left:right]).mean())

        return self._map(one, "thickness", "t/lambda", per_image=True,
                         attrs={"units": "t/lambda", "long_name": "relative thickness t/lambda",
                                "vacuum_box_px": [left, top, right, bottom]})

    def phase_gradient(self) -> xr.Dataset:
        """The phase gradient in rad/nm (rad/px without nm coordinates), from neighbouring
        pixels' phase differences (no unwrapping; :func:`holodask.vacuum.phase_gradient`).

        Returns
        -------
        xarray.Dataset
            ``phase_gradient_x``, ``phase_gradient_y`` (d phi/dx, d phi/dy) and
            ``phase_gradient`` (the magnitude), on the wave's coordinates; lazy where
            the wave is.
        """
        from holodask.vacuum import phase_gradient

        sampling, unit = self._sampling()
        units = f"rad/{unit}"
        parts = {}
        for k, axis in enumerate("xy"):
            parts[f"phase_gradient_{axis}"] = self._map(
                lambda image, k=k: phase_gradient(image, sampling)[k], f"phase_gradient_{axis}", units,
                per_image=True, attrs={"units": units, "long_name": f"d phase / d{axis}"})
        magnitude = np.hypot(parts["phase_gradient_x"], parts["phase_gradient_y"]).astype(np.float32)
        magnitude.attrs = {"units": units, "long_name": "phase gradient magnitude"}
        return xr.Dataset({**parts, "phase_gradient": magnitude.rename("phase_gradient")})

    def contours(self, n: float = 1) -> xr.DataArray:
        """Cosine contours ``cos(n phi)``: the phase amplified ``n`` times (an integer ``n``
        from the wrapped phase, lazily elementwise; another from the unwrapped one)."""
        from holodask.vacuum import phase_contours

        n = float(n)
        attrs = {"units": "", "long_name": f"cos({n:g} phase)", "amplification": n}
        if n.is_integer():
            return self._map(lambda values: phase_contours(values, n), "contours", "", attrs=attrs)
        return self._map(lambda image: phase_contours(image, n), "contours", "", per_image=True, attrs=attrs)

    @property
    def phase(self) -> xr.DataArray:
        """The wrapped phase in rad (-pi..pi), lazy where the wave is."""
        return self._map(_phase, "phase", "rad")

    @property
    def amplitude(self) -> xr.DataArray:
        """The amplitude |psi|, lazy where the wave is."""
        result = abs(self._array).astype(np.float32)
        result.name = "amplitude"
        result.attrs = {"long_name": "amplitude"}
        return result

    def unwrapped_phase(self) -> xr.DataArray:
        """The phase unwrapped with :func:`skimage.restoration.unwrap_phase`, image by image (rad)."""
        return self._map(_unwrap, "unwrapped_phase", "rad", per_image=True)

    # ------------------------------------------------------------ spectrum
    def fft(self, *, sideband_pos=None, cut_off=None, log: bool = True) -> xr.DataArray:
        """The centred power spectrum of one hologram (or wave), with its sideband.

        Parameters
        ----------
        sideband_pos : (x, y), optional
            The sideband in pixels of the centred FFT (``sideband_pos``); default:
            the stack's own, or found with :func:`holodask.find_sideband`.
        cut_off : float, optional
            Mask radius in 1/nm (``cut_off``); default: the stack's, or a third
            of the carrier.
        log : bool
            ``log10(1 + |FFT|^2)`` (else the power itself).

        Returns
        -------
        xarray.DataArray
            Dims ``qy``/``qx`` (1/nm where the image is calibrated in nm, else
            cycles/px) and the attributes ``sideband_pos_px``, ``cut_off_per_nm``
            and ``sideband_confidence``, which :meth:`plot` draws as the mask.
        """
        from holodask.sideband import find_sideband

        array = _as_image_dims(self._array)
        if array.ndim != 2:
            raise ValueError(f"fft: one image (y, x) at a time, got dims {array.dims}; select one, e.g. .isel(frame=0)")
        values = np.asarray(array.values)
        rows, cols = values.shape
        x = array.coords.get("x")
        sampling = float(x.values[1] - x.values[0]) if x is not None and x.size > 1 and \
            x.attrs.get("units") == "nm" else None
        found = find_sideband(values, sampling=sampling)
        if sideband_pos is None:
            sideband_pos = array.attrs.get("sideband_pos_px") or found.position
        if cut_off is None:
            cut_off = array.attrs.get("cut_off_per_nm") or found.cut_off
        spectrum = np.fft.fftshift(np.fft.fft2(values - values.mean()))
        power = np.abs(spectrum) ** 2
        if log:
            power = np.log10(1.0 + power)
        step = 1.0 / sampling if sampling else 1.0
        unit = "1/nm" if sampling else "1/px"
        qy = (np.arange(rows) - rows // 2) / rows * step
        qx = (np.arange(cols) - cols // 2) / cols * step
        return xr.DataArray(
            power.astype(np.float32), dims=("qy", "qx"), name="power",
            coords={"qy": ("qy", qy, {"units": unit}), "qx": ("qx", qx, {"units": unit})},
            attrs={"long_name": "log10(1 + power)" if log else "power",
                   "sideband_pos_px": tuple(float(v) for v in sideband_pos),
                   "cut_off_per_nm": float(cut_off) if cut_off is not None else None,
                   "sideband_confidence": found.confidence, "spectrum_shape": (rows, cols)})

    # ------------------------------------------------------------ pictures
    def plot(self, ax=None, **kwargs):
        """Draw the array with nm axes: a complex wave as amplitude and phase, a real
        image as it is, a spectrum from :meth:`fft` with the sideband mask drawn on it.
        A stack draws its first frame (or ``frame=`` k). Returns the matplotlib Figure
        (shown inline in Jupyter)."""
        array = self._array
        if "qx" in array.dims:
            return _plot_spectrum(array, ax)
        if "frame" in array.dims:
            array = array.isel(frame=int(kwargs.pop("frame", 0)))
        array = _as_image_dims(array)
        if np.iscomplexobj(np.empty(0, array.dtype)):
            wave = array.compute()
            return _plot_panels([(wave.holo.amplitude, "amplitude", "gray"),
                                 (wave.holo.phase, "phase (rad)", "twilight")], ax)
        return _plot_panels([(array.compute(), array.name or "", "gray")], ax)


def _figure(n_panels: int, ax):
    import matplotlib.pyplot as plt

    if ax is not None:
        axes = np.atleast_1d(ax)
        return axes[0].figure, list(axes)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.6 * n_panels, 4.0), layout="constrained", squeeze=False)
    return fig, list(axes[0])


def _plot_panels(panels, ax):
    fig, axes = _figure(len(panels), ax)
    for axis, (image, title, cmap) in zip(axes, panels):
        extent, unit = _extent(image)
        values = np.asarray(image.values)
        # colour limits robust to a few extreme pixels (edges, hot pixels), except for a phase
        limits = (None, None) if cmap == "twilight" else tuple(np.nanpercentile(values, (0.5, 99.5)))
        shown = axis.imshow(values, cmap=cmap, extent=extent, interpolation="nearest", vmin=limits[0],
                            vmax=limits[1])
        axis.set_title(title)
        axis.set_xlabel(f"x ({unit})")
        axis.set_ylabel(f"y ({unit})")
        fig.colorbar(shown, ax=axis, shrink=0.8, label=image.attrs.get("units", ""))
    return fig


def _plot_spectrum(spectrum: xr.DataArray, ax):
    from matplotlib.patches import Circle

    fig, axes = _figure(1, ax)
    axis = axes[0]
    qx, qy = spectrum.coords["qx"].values, spectrum.coords["qy"].values
    unit = spectrum.coords["qx"].attrs.get("units", "")
    axis.imshow(spectrum.values, cmap="magma", origin="upper", interpolation="nearest",
                extent=(qx[0], qx[-1], qy[-1], qy[0]))
    rows, cols = spectrum.attrs.get("spectrum_shape", spectrum.shape)
    x_px, y_px = spectrum.attrs.get("sideband_pos_px") or (None, None)
    if x_px is not None:
        step_x, step_y = qx[1] - qx[0], qy[1] - qy[0]
        centre = (qx[0] + x_px * step_x, qy[0] + y_px * step_y)
        axis.plot(*centre, "+", color="cyan", markersize=12)
        cut_off = spectrum.attrs.get("cut_off_per_nm")
        if cut_off and unit == "1/nm":
            axis.add_patch(Circle(centre, cut_off, fill=False, color="cyan", linewidth=1.2))
            axis.add_patch(Circle((0.0, 0.0), 2 * cut_off, fill=False, color="white", linestyle=":", linewidth=1))
        confidence = spectrum.attrs.get("sideband_confidence")
        title = f"spectrum: sideband [{x_px:.1f}, {y_px:.1f}] px"
        if confidence is not None:
            title += f", confidence {confidence:.2f}"
        axis.set_title(title)
    axis.set_xlabel(f"qx ({unit})")
    axis.set_ylabel(f"qy ({unit})")
    return fig


@xr.register_dataset_accessor("holo")
class HoloDatasetAccessor:
    """Holography on a result Dataset (:func:`holodask.average`, :func:`holodask.open_result`)."""

    def __init__(self, dataset: xr.Dataset):
        self._dataset = dataset

    def _wave_name(self) -> str:
        for name in ("data", "empty"):
            if name in self._dataset:
                return name
        raise KeyError("the Dataset holds no 'data' or 'empty' wave")

    def _wave(self) -> xr.DataArray:
        """The averaged wave (``data``, else ``empty``); with ``vacuum_box_px`` where the
        result was normalised to vacuum (its attribute ``vacuum_box(px)``)."""
        from holodask.vacuum import BOX_ATTR

        name = self._wave_name()
        wave = self._dataset[name]
        box = self._dataset.attrs.get(BOX_ATTR)
        if name == "data" and box is not None:
            wave = wave.copy(deep=False)
            wave.attrs = {**wave.attrs, "vacuum_box_px": [int(v) for v in np.ravel(box)]}
        return wave

    def find_vacuum(self, **options) -> tuple[int, int, int, int]:
        """The vacuum region of the averaged wave (px); see :meth:`HoloDataArrayAccessor.find_vacuum`."""
        return self._wave().holo.find_vacuum(**options)

    def normalized(self, vacuum=None, *, ramp: bool = False) -> xr.Dataset:
        """The result normalised to vacuum, as the parameter ``normalize_vacuum`` (and
        ``remove_ramp``) does in a run: ``data`` as :meth:`HoloDataArrayAccessor.normalized`
        says, ``variance`` divided by ``|vacuum_factor|^2``; ``attrs`` (and ``hdf5_attrs``)
        get ``vacuum_box(px)``, ``vacuum_factor``, ``vacuum_region`` and, with ``ramp``,
        ``vacuum_ramp(rad/nm)``. ``vacuum``: (left, top, right, bottom) px, default found
        (or the region an already normalised result records). The per-hologram fit and
        ``empty`` stay as they are."""
        from holodask.vacuum import normalize_wave, result_attributes

        dataset = self._dataset
        name = self._wave_name()
        wave = self._wave().transpose(..., "y", "x") if name == "data" else dataset[name]
        box, found = wave.holo._vacuum_box(vacuum)
        values, normalization = normalize_wave(np.asarray(wave.values), box, remove_ramp=ramp)
        attrs = result_attributes(normalization, wave.holo._sampling()[0], found)
        result = dataset.copy()
        result[name] = dataset[name].copy(data=values.astype(dataset[name].dtype, copy=False))
        if name == "data" and "variance" in dataset:
            variance = dataset["variance"]
            result["variance"] = (variance / abs(normalization.factor) ** 2).astype(variance.dtype)
        result.attrs = {**dataset.attrs, **attrs}
        if isinstance(dataset.attrs.get("hdf5_attrs"), dict):
            result.attrs["hdf5_attrs"] = {**dataset.attrs["hdf5_attrs"], **attrs}
        return result

    def thickness(self, vacuum=None) -> xr.DataArray:
        """``t/lambda`` of the averaged wave; see :meth:`HoloDataArrayAccessor.thickness`."""
        return self._wave().holo.thickness(vacuum)

    def phase_gradient(self) -> xr.Dataset:
        """The phase gradient (rad/nm); see :meth:`HoloDataArrayAccessor.phase_gradient`."""
        return self._wave().holo.phase_gradient()

    def contours(self, n: float = 1) -> xr.DataArray:
        """``cos(n phase)``; see :meth:`HoloDataArrayAccessor.contours`."""
        return self._wave().holo.contours(n)

    @property
    def phase(self) -> xr.DataArray:
        return self._wave().holo.phase

    @property
    def amplitude(self) -> xr.DataArray:
        return self._wave().holo.amplitude

    def unwrapped_phase(self) -> xr.DataArray:
        return self._wave().holo.unwrapped_phase()

    def plot(self, *, unwrap: bool = True):
        """The quick look of ``holodask show``: amplitude, phase (wrapped and unwrapped),
        variance, the per-hologram fit and the convergence. Returns the Figure."""
        from holodask.quicklook import render_result

        return render_result(self._dataset, unwrap=unwrap)
