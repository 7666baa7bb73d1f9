"""Checkpoints of a run (``holodask run --resume``), so that a run killed by a batch
system's walltime, or by anything else, continues where it stopped.

A checkpoint is a folder (``OUTPUT.holodask-checkpoint`` beside the output, or
in ``--scratch``) holding, each written whole or not at all:

* ``manifest.json``: a digest of the parameters, the input files (names, sizes,
  modification times) and the holodask version, so that a checkpoint of another
  run is refused;
* ``raw_shifts.npy``: the raw drift of every hologram;
* ``frames.zarr`` and ``frames.npz``: the reconstructed holograms (one per
  chunk) and their per-frame values; ``frames.npz`` is written once they all are;
* ``round-NN.npz``: the averaging state after round NN.

Files are written to a temporary name and renamed, so a kill (SIGKILL
included) leaves either the old or the new step, never a half one. The folder
is removed once the output is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np

from holodask import __version__
from holodask.errors import ParameterError

__all__ = ["Checkpoint", "checkpoint_folder"]

log = logging.getLogger("holodask")

_ROUND = re.compile(r"^round-(\d+)\.npz$")


def checkpoint_folder(output_name, scratch=None) -> Path:
    """Where the checkpoint of a run writing ``output_name`` lives."""
    output = Path(os.path.abspath(os.fspath(output_name)))
    name = f"{output.name}.holodask-checkpoint"
    return (Path(scratch) / name) if scratch is not None else output.with_name(name)


def _input_facts(params) -> list:
    """(spec, size, modification time) of every input file the parameters name."""
    from holodask.io.registry import parse_spec

    specs = []
    for series in (params.object_series, params.empty_series):
        if series is not None:
            specs += list(series.specs)
    specs += [s for s in (params.empty_override, *(params.camera_distortions or ())) if s]
    for extra in (getattr(params, "window_log", None), getattr(params, "weights", None)):  # files read besides
        path = getattr(extra, "path", None) or getattr(extra, "source", None)
        if path:
            specs.append(path)
    facts = []
    for spec in specs:
        path = parse_spec(spec, params.basepath).path
        try:
            info = os.stat(path)
            facts.append([str(spec), info.st_size, info.st_mtime_ns])
        except OSError:
            facts.append([str(spec), None, None])
    return facts


def run_digest(params) -> str:
    """A digest of what makes a run's result: parameters, inputs, holodask's version."""
    from holodask.params import parameters_json

    text = json.dumps({"parameters": json.loads(parameters_json(params)), "basepath": str(params.basepath),
                       "inputs": _input_facts(params), "holodask": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_save(path: Path, write) -> None:
    """``write(temporary name)`` and rename it to ``path``."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        write(temp)
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


class Checkpoint:
    """The checkpoint folder of one run (see the module).

    Picklable (only its folder travels), so that tasks on a cluster's workers
    can save the round states where the folder is shared.
    """

    def __init__(self, folder, digest: str):
        self.folder = Path(folder)
        self.digest = digest

    def __reduce__(self):
        return (Checkpoint, (str(self.folder), self.digest))

    @classmethod
    def open(cls, params, scratch=None) -> "Checkpoint":
        """The checkpoint of the run ``params`` describe: the one there (refused when it
        is another run's), or a new one."""
        if not params.output_name:
            raise ParameterError("resume: needs 'output_name' (the checkpoint is kept beside the output)")
        folder = checkpoint_folder(params.output_name, scratch)
        digest = run_digest(params)
        manifest = folder / "manifest.json"
        if manifest.exists():
            try:
                stored = json.loads(manifest.read_text())
            except (OSError, ValueError):
                stored = {}
            if stored.get("digest") != digest:
                raise ParameterError(
                    f"resume: the checkpoint {folder} was made by a run with other parameters or input files "
                    "(or another holodask version); remove it, or run without --resume"
                )
            log.warning("holodask: resuming from the checkpoint %s", folder)
            return cls(folder, digest)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ParameterError(f"resume: cannot create the checkpoint folder {folder}: "
                                 f"{exc.strerror or exc}") from None
        _atomic_save(manifest, lambda temp: temp.write_text(json.dumps({"digest": digest, "holodask": __version__})))
        return cls(folder, digest)

    # -- the raw alignment
    def raw_shifts(self) -> np.ndarray | None:
        path = self.folder / "raw_shifts.npy"
        return np.load(path, allow_pickle=False) if path.exists() else None

    def save_raw_shifts(self, shifts) -> None:
        def write(temp):
            with open(temp, "wb") as file:
                np.save(file, np.asarray(shifts, dtype=np.int64), allow_pickle=False)
        _atomic_save(self.folder / "raw_shifts.npy", write)

    # -- the reconstructed holograms
    @property
    def frames_store(self) -> Path:
        return self.folder / "frames.zarr"

    def frames(self) -> dict | None:
        """The per-frame values kept with the reconstructed holograms (None: not all kept yet)."""
        path = self.folder / "frames.npz"
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}

    def save_frames(self, values: dict) -> None:
        """Mark the reconstructed holograms complete, with their per-frame values."""
        def write(temp):
            with open(temp, "wb") as file:
                np.savez(file, **{name: np.asarray(v) for name, v in values.items()})
        _atomic_save(self.folder / "frames.npz", write)
        for path in self.folder.glob("round-*.npz"):  # rounds of earlier frames are void
            path.unlink()

    # -- the averaging rounds
    def save_round(self, number: int, round_state) -> None:
        states, average, convergence, converged = round_state

        def write(temp):
            with open(temp, "wb") as file:
                np.savez(file, states=states, average=average, convergence=np.asarray(convergence, dtype=float),
                         converged=np.asarray(bool(converged)))
        _atomic_save(self.folder / f"round-{number:02d}.npz", write)

    def last_round(self):
        """``(round number, round state)`` of the last round kept, or None."""
        numbers = sorted(int(m.group(1)) for p in self.folder.glob("round-*.npz") if (m := _ROUND.match(p.name)))
        if not numbers:
            return None
        number = numbers[-1]
        with np.load(self.folder / f"round-{number:02d}.npz", allow_pickle=False) as stored:
            state = (stored["states"], stored["average"], [float(v) for v in stored["convergence"]],
                     bool(stored["converged"]))
        log.info("averaging: continuing after round %d of the checkpoint", number)
        return number, state

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
