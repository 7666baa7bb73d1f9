"""Per-call cost of the per-frame numpy kernels (serial, one FFT thread).

Reads a few holograms and the empty hologram of a series (default: the
simulated 60-frame series in ``/tmp/s60``), builds the sideband geometry, the
normalisation factor and the alignment grid as the pipeline does, and times

* ``reconstruct_hologram`` on the ROI,
* ``normalise_with_factor``,
* ``window_spectrum`` (raw alignment region) and ``correlate_spectra``,
* ``fit_to_average`` from an already converged state (shift only, and shift +
  defocus), ``aligned_spectrum``, and ``model_error``.

Each figure is the median of ``--repeat`` calls after a warm-up. Run with
``OPENBLAS_NUM_THREADS=1`` on a shared machine::

    PYTHONPATH=$PWD OPENBLAS_NUM_THREADS=1 python benchmarks/kernels.py [--params /tmp/s60/params.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def _median_ms(call, repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _read(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as file:
        return np.asarray(file["hologram"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="/tmp/s60/params.json")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import holodask
    from holodask import align, fft
    from holodask.normalise import factor_grid, normalisation_factor, normalise_with_factor
    from holodask.optics import carrier_per_nm
    from holodask.hologram import extract_roi, reconstruct_hologram, sideband_geometry

    fft.set_fft_threads(1)
    params_file = Path(args.params)
    folder = params_file.parent
    params = holodask.load_parameters(params_file)
    raw = [_read(folder / f"object_{k:03d}.hdf5") for k in range(3)]
    empty_raw = _read(folder / "empty_000.hdf5")
    camera_shape = raw[0].shape
    sampling = float(params.sampling_nm)
    size = int(params.object_size)
    roi = tuple(int(v) for v in params.roi)
    roi_shape = (roi[3] - roi[1], roi[2] - roi[0])
    carrier = carrier_per_nm(params.sideband_pos_px, camera_shape, sampling)
    geometry = sideband_geometry(roi_shape, sampling, carrier, (size, size), params.cut_off2_per_nm2,
                                 params.filter_func, None, 1, single_precision_mask=True)
    camera_geometry = sideband_geometry(camera_shape, sampling, carrier, (size, size), params.cut_off2_per_nm2,
                                        params.filter_func, None, 1, single_precision_mask=True)
    empty_wave = reconstruct_hologram(empty_raw, camera_geometry)
    from holodask.optics import fourier_rescale

    big_empty = fourier_rescale(empty_wave, camera_shape)
    grid2 = factor_grid(roi_shape, (size, size))
    factor = normalisation_factor(big_empty, roi, (0, 0), grid2)
    frames = [extract_roi(f, roi) for f in raw]

    results = {}
    results["reconstruct_hologram"] = _median_ms(lambda: reconstruct_hologram(frames[0], geometry), args.repeat)
    waves = [reconstruct_hologram(f, geometry) for f in frames]
    results["normalise_with_factor"] = _median_ms(lambda: normalise_with_factor(waves[0], factor, (size, size)),
                                                  args.repeat)
    waves = [normalise_with_factor(w, factor, (size, size)) for w in waves]

    window = align.correlation_window(roi_shape, sampling, params.align_cut_off_per_nm or params.cut_off_per_nm)
    results["window_spectrum"] = _median_ms(lambda: align.window_spectrum(frames[0], window), args.repeat)
    s0, s1 = align.window_spectrum(frames[0], window), align.window_spectrum(frames[1], window)
    results["correlate_spectra"] = _median_ms(lambda: align.correlate_spectra(s0, s1, window), args.repeat)

    grid = align.alignment_grid((size, size), geometry.sampling_out_nm, float(params.voltage_kV))
    reference = align.aligned_spectrum(waves[0], align.initial_state(), grid)
    state = align.fit_to_average(waves[1], reference, align.initial_state(), grid, fit_shift=True)
    state = align.fit_to_average(waves[1], reference, state, grid, fit_shift=True)
    results["fit_to_average (shift, converged)"] = _median_ms(
        lambda: align.fit_to_average(waves[1], reference, state, grid, fit_shift=True, return_start_error=True),
        args.repeat)
    state_d = align.fit_to_average(waves[1], reference, state, grid, fit_shift=True, fit_defocus=True)
    results["fit_to_average (shift+defocus, converged)"] = _median_ms(
        lambda: align.fit_to_average(waves[1], reference, state_d, grid, fit_shift=True, fit_defocus=True,
                                     return_start_error=True), args.repeat)
    results["aligned_spectrum"] = _median_ms(lambda: align.aligned_spectrum(waves[1], state, grid), args.repeat)
    if hasattr(align, "wave_spectrum"):
        spectrum = align.wave_spectrum(waves[1])
        results["aligned_spectrum (precomputed spectrum)"] = _median_ms(
            lambda: align.aligned_spectrum(waves[1], state, grid, spectrum=spectrum), args.repeat)
    results["model_error"] = _median_ms(lambda: align.model_error(waves[1], reference, state, grid), args.repeat)
    results["fft2 256^2 (for scale)"] = _median_ms(lambda: fft.fft2(waves[1]), args.repeat)

    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:8.3f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
