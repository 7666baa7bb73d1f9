"""``holodask simulate``: write a simulated hologram series with known truth."""

from __future__ import annotations

import argparse

from holodask.simulate import DEFAULT_MTF, simulate_series

HELP = "write a simulated object and empty hologram series, its truth and a parameter file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("outdir", metavar="OUTDIR", help="folder for the holograms, truth.npz and params.json")
    parser.add_argument("--frames", type=int, default=8, metavar="N", help="number of object holograms (default 8)")
    parser.add_argument("--size", type=int, default=256, metavar="PX", help="hologram size in pixels (default 256)")
    parser.add_argument("--object-size", type=int, default=64, metavar="PX", help="object_size of the parameters (default 64)")
    parser.add_argument("--sampling", type=float, default=0.5, metavar="NM", help="pixel size in nm (default 0.5)")
    parser.add_argument("--voltage", type=float, default=300.0, metavar="KV", help="acceleration voltage in kV (default 300)")
    parser.add_argument("--dose", type=float, default=None, metavar="E", help="mean vacuum counts per pixel, with Poisson noise (default: noise-free)")
    parser.add_argument("--contrast", type=float, default=0.3, metavar="MU", help="fringe contrast (default 0.3)")
    parser.add_argument("--contrast-jitter", type=float, default=0.0, metavar="F", help="relative per-frame spread of the fringe contrast")
    parser.add_argument("--biprism-jitter", type=float, default=0.0, metavar="RAD", help="per-frame fringe phase spread in rad")
    parser.add_argument("--carrier-drift", type=float, default=0.0, metavar="PX", help="per-frame random-walk step of the carrier, FFT px")
    parser.add_argument("--defocus-first", type=float, default=0.0, metavar="NM", help="defocus of the first frame in nm")
    parser.add_argument("--defocus-step", type=float, default=0.0, metavar="NM", help="defocus step per frame in nm (focal series)")
    parser.add_argument("--drift", type=float, default=0.0, metavar="PX", help="per-frame random-walk step of the specimen drift, px")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--hot-pixels", type=int, default=0, metavar="N", help="number of hot pixels")
    parser.add_argument("--cosmic-rays", type=int, default=0, metavar="N", help="number of cosmic-ray hits per series")
    parser.add_argument("--mtf", action="store_true", help=f"apply (and write into the parameters) the detector MTF {DEFAULT_MTF}")
    parser.add_argument("--empty", type=int, default=1, metavar="N", help="number of empty holograms (default 1)")
    parser.add_argument("--no-empty", action="store_true", help="write no empty series")
    parser.add_argument("--format", choices=("hdf5", "raw"), default="hdf5", help="file format of the holograms (default hdf5)")
    parser.add_argument("--texture", type=float, default=0.0, metavar="RMS",
                        help="support-film texture (absorption, and phase in rad) of the object (lets the raw "
                             "alignment work on noisy holograms)")
    parser.add_argument("--change-rate", type=float, default=0.0, metavar="R",
                        help="a specimen that changes (in-situ): hologram k shows the object's phase scaled by "
                             "1 + R k")


def run(args: argparse.Namespace) -> int:
    series = simulate_series(
        args.outdir,
        n_frames=args.frames,
        size_px=args.size,
        object_size_px=args.object_size,
        sampling_nm=args.sampling,
        voltage_kV=args.voltage,
        dose_e_per_px=args.dose,
        fringe_contrast=args.contrast,
        contrast_jitter=args.contrast_jitter,
        biprism_phase_jitter_rad=args.biprism_jitter,
        carrier_drift_px=args.carrier_drift,
        defocus_first_nm=args.defocus_first,
        defocus_step_nm=args.defocus_step,
        drift_step_px=args.drift,
        seed=args.seed,
        n_hot_pixels=args.hot_pixels,
        n_cosmic_rays=args.cosmic_rays,
        mtf=DEFAULT_MTF if args.mtf else None,
        n_empty=0 if args.no_empty else args.empty,
        file_format=args.format,
        texture_contrast=args.texture,
        object_change_rate=args.change_rate,
    )
    print(f"object holograms: {series.n_frames} x {series.params['object_names']} in {series.outdir}")
    if series.empty_specs:
        print(f"empty holograms:  {len(series.empty_specs)} x {series.params['empty_names']}")
    else:
        print("empty holograms:  none")
    print(f"truth:            {series.truth_path}")
    print(f"parameters:       {series.params_path}")
    print(f"reconstruct with: holodask run {series.params_path}  (or holoaverage {series.params_path})")
    return 0
