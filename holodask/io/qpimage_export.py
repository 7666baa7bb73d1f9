"""Export of results to the QPImage / QPSeries HDF5 format of the quantitative
phase imaging tools (``qpimage``).

A QPImage file has groups ``amplitude`` and ``phase``, each with a float32
dataset ``raw`` and an (empty) group ``bg_data``; the root attributes hold
``wavelength`` (m; the relativistic electron wavelength), ``pixel size`` (m),
``medium index`` (1.0, vacuum), ``time`` (s) when the result knows it,
``identifier``, ``software`` (holodask) and ``qpimage version`` (the
qpimage release whose layout is followed; qpimage needs it to open a file
read-only). A QPSeries file holds one such QPImage per
hologram in groups ``qpi_0``, ``qpi_1``, ... (no leading zeros, numbered from
0 as :class:`qpimage.QPSeries` numbers them). The window averages of a windowed
result (``holodask run --window``) are a QPSeries too, one QPImage per window
(``time``: the window's mean acquisition time, seconds since 1970 UTC, where
the holograms carry acquisition times, else its time since the first hologram).

The files are written with h5py (qpimage itself is not needed), each through a
temporary file that replaces the destination only when complete.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from holodask import __version__
from holodask.constants import electron_wavelength_nm
from holodask.errors import DataError, ParameterError
from holodask.io.holo_hdf5 import HoloOutputFile, check_output_path
from holodask.io.safe_write import AtomicOutput, same_file_as

#: refractive index of the medium: electrons travel in vacuum
MEDIUM_INDEX = 1.0

#: the qpimage release whose file layout is written; recorded as ``qpimage version``
#: (qpimage opens a file read-only only when that attribute is present)
QPIMAGE_FORMAT_VERSION = "0.9.3"


def wave_to_amplitude_phase(wave: np.ndarray, unwrap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude and phase (rad) of a complex wave, both float32.

    With ``unwrap`` the phase is unwrapped with
    :func:`skimage.restoration.unwrap_phase`; otherwise it lies in [-pi, pi].
    """
    wave = np.asarray(wave)
    amplitude = np.abs(wave).astype(np.float32)
    phase = np.angle(wave)
    if unwrap:
        from skimage.restoration import unwrap_phase

        phase = unwrap_phase(phase)
    return amplitude, np.asarray(phase, dtype=np.float32)


def qpimage_meta(result, *, voltage_kV=None, identifier=None) -> dict:
    """Root attributes of a QPImage for a result opened with :func:`open_result`."""
    attrs = result.attrs
    if voltage_kV is None:
        voltage_kV = attrs.get("voltage_kV")
    if voltage_kV is None:
        raise DataError(f"result {attrs.get('source', '')} has no voltage(kV) attribute; "
                        "give the acceleration voltage (--voltage) to compute the wavelength")
    sampling_nm = attrs.get("sampling_nm")
    if sampling_nm is None:
        raise DataError(f"result {attrs.get('source', '')} has no dim_scale attribute; "
                        "the pixel size is unknown")
    meta = {
        "wavelength": electron_wavelength_nm(voltage_kV) * 1e-9,
        "pixel size": float(sampling_nm) * 1e-9,
        "medium index": MEDIUM_INDEX,
        "qpimage version": QPIMAGE_FORMAT_VERSION,
        "software": f"holodask {__version__}",
    }
    time_s = attrs.get("time", attrs.get("time(s)"))
    if time_s is not None:
        meta["time"] = float(np.ravel(time_s)[0])
    if identifier is not None:
        meta["identifier"] = str(identifier)
    return meta


def _write_qpimage(group: h5py.Group, wave, meta: dict, unwrap: bool) -> None:
    amplitude, phase = wave_to_amplitude_phase(wave, unwrap=unwrap)
    for name, image in (("amplitude", amplitude), ("phase", phase)):
        sub = group.create_group(name)
        sub.create_dataset("raw", data=image)
        sub.create_group("bg_data")
    for key, value in meta.items():
        group.attrs[key] = value


def _windowed(result) -> bool:
    return "data" in result and "window" in result["data"].dims


def _window_time(result, w: int) -> float | None:
    """A window's ``time`` for its QPImage (s): absolute where known, else since the first hologram."""
    if "window_time_s" in result.coords:
        return float(result["window_time_s"].values[w])
    if "time" in result.coords and result["time"].attrs.get("units") == "s":
        return float(result["time"].values[w])
    return None


def _write_windows(file: h5py.File, result, meta: dict, label: str, unwrap: bool) -> None:
    """The window averages as a QPSeries (``qpi_0``, ``qpi_1``, ... one per window)."""
    file.attrs["identifier"] = f"holodask:{label}data"
    file.attrs["qpimage version"] = QPIMAGE_FORMAT_VERSION
    for w in range(result.sizes["window"]):
        group = file.create_group(f"qpi_{w}")
        window_meta = {**meta, "identifier": f"holodask:{label}data:window:{w}"}
        when = _window_time(result, w)
        if when is not None:
            window_meta["time"] = when
        _write_qpimage(group, result["data"].isel(window=w).values, window_meta, unwrap)


def average_path(out_path) -> Path:
    """Where the average goes when ``out_path`` receives the series: ``OUT_average.h5``."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}_average{out_path.suffix or '.h5'}")


def not_a_qpimage(path: Path) -> str | None:
    """Why an existing HDF5 file is no QPImage/QPSeries to replace (None: it is one)."""
    with h5py.File(path, "r") as f:
        if "qpimage version" in f.attrs or "amplitude" in f and "phase" in f:
            return None
        if len(f) == 0 or any(name.startswith("qpi_") for name in f):
            return None
    return "is not a QPImage or QPSeries file"


def export_qpimage(result_path, out_path, prefix: str = "", series: bool = False,
                   unwrap: bool = True, voltage_kV: float | None = None, *,
                   protected=(), what: str = "--qpimage") -> list[Path]:
    """Export a result file to QPImage (average) or QPSeries (individual holograms).

    Parameters
    ----------
    result_path : str or Path
        Result HDF5 file (holodask or reference program).
    out_path : str or Path
        QPImage file of the averaged object wave ``data``; with ``series`` the
        QPSeries file of the result's ``series`` output, and the average goes
        to ``OUT_average.h5`` beside it (see :func:`average_path`) when the
        result holds ``data``. A windowed result's ``data`` (its window
        averages) is a QPSeries, one QPImage per window.
    prefix : str
        The result's ``output_prefix``.
    series : bool
        Export the individual reconstructions as a QPSeries.
    unwrap : bool
        Unwrap the phase (:func:`skimage.restoration.unwrap_phase`).
    voltage_kV : float, optional
        Acceleration voltage, when the result does not record it.
    protected : iterable of paths
        Further files that must not be overwritten (the result file never is).
    what : str
        The option or parameter naming ``out_path``, for messages.

    Returns
    -------
    list of Path
        The files written.
    """
    from holodask.results import open_result

    out_path = check_output_path(out_path, what)
    protected = [result_path, *protected]
    targets = [out_path] + ([average_path(out_path)] if series else [])
    for target in targets:
        match = same_file_as(target, protected)
        if match is not None:
            raise ParameterError(f"{what}: {target} is the input {match}; it would be overwritten "
                                 "(choose another name)")
    result = open_result(result_path, prefix=prefix)
    source = Path(result_path).name
    label = f"{source}:{prefix}"
    written: list[Path] = []
    options = dict(protected=protected, what=what, accept_existing=not_a_qpimage)
    if not series:
        if "data" not in result:
            raise DataError(f"result file {result_path} holds no averaged object wave "
                            f"'{prefix}data' to export")
        meta = qpimage_meta(result, voltage_kV=voltage_kV, identifier=f"holodask:{label}data")
        with HoloOutputFile(out_path, fresh=True, **options) as out:
            if _windowed(result):
                _write_windows(out.file, result, meta, label, unwrap)
            else:
                _write_qpimage(out.file, result["data"].values, meta, unwrap)
        return [out_path]
    if "series" not in result:
        raise DataError(f"result file {result_path} holds no series '{prefix}series' to export "
                        "(run with output_series set)")
    meta = qpimage_meta(result, voltage_kV=voltage_kV)
    frames = result["series"]
    average = average_path(out_path) if "data" in result else None
    if average is not None and average.resolve() == out_path.resolve():
        raise ParameterError(f"--qpimage: {out_path} would hold both the series and the average")
    with HoloOutputFile(out_path, fresh=True, **options) as out:
        out.file.attrs["identifier"] = f"holodask:{label}series"
        out.file.attrs["qpimage version"] = QPIMAGE_FORMAT_VERSION
        for k, frame_index in enumerate(frames["frame"].values):
            wave = frames.isel(frame=k).values  # one frame in memory at a time
            group = out.file.create_group(f"qpi_{k}")
            _write_qpimage(group, wave, {**meta, "identifier":
                                         f"holodask:{label}series:{int(frame_index)}"}, unwrap)
        if average is not None:
            with HoloOutputFile(average, fresh=True, **options) as out_average:
                if _windowed(result):
                    _write_windows(out_average.file, result, meta, label, unwrap)
                else:
                    _write_qpimage(out_average.file, result["data"].values,
                                   {**meta, "identifier": f"holodask:{label}data"}, unwrap)
            written.append(average)
    written.insert(0, out_path)
    return written


def check_run_export(params, output_path, voltage_kV=None) -> Path | None:
    """Check a run's ``output_qpimage`` before the run starts; the export path or None.

    The export needs the averaged object wave: a run with ``object_names`` and
    without ``only_align``, and the voltage (``voltage_kV``: what the files or
    the parameters give) for the wavelength; it must not overwrite the run's
    own output file.
    """
    if not params.output_qpimage:
        return None
    if params.object_series is None or params.only_align:
        raise ParameterError("output_qpimage: needs an averaged object wave (object_names, "
                             "without only_align)")
    if voltage_kV is None:
        raise ParameterError("output_qpimage: the wavelength needs the voltage; the files carry none, "
                             "give the parameter 'voltage' in kV")
    out_path = check_output_path(params.output_qpimage, "output_qpimage")
    targets = [out_path] + ([average_path(out_path)] if params.output_series else [])
    if any(Path(t).resolve() == Path(output_path).resolve() for t in targets):
        raise ParameterError(f"output_qpimage: {out_path} would overwrite the output file "
                             f"{output_path} (output_name)")
    for target in targets:
        match = same_file_as(target, [output_path, *params.protected_paths()])
        if match is not None:
            raise ParameterError(f"output_qpimage: {target} would overwrite the input {match}; "
                                 "set 'output_qpimage' to another file")
        # every check of the writer, before the run
        AtomicOutput(target, what="output_qpimage", kind="hdf5", accept_existing=not_a_qpimage).check()
    return out_path


def export_run(params, output_path) -> list[Path]:
    """Export a finished run's result file as ``output_qpimage`` says (QPSeries with
    ``output_series``); the files written (none without ``output_qpimage``)."""
    if not params.output_qpimage:
        return []
    return export_qpimage(output_path, params.output_qpimage, prefix=params.output_prefix,
                          series=bool(params.output_series), protected=params.protected_paths(),
                          what="output_qpimage")


__all__ = ["export_qpimage", "check_run_export", "export_run", "wave_to_amplitude_phase", "qpimage_meta", "average_path",
           "MEDIUM_INDEX", "QPIMAGE_FORMAT_VERSION"]
