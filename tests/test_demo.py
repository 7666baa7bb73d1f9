"""`holodask demo` simulates, reconstructs, averages and draws, all in one folder."""

import subprocess
import sys

import h5py
import numpy as np


def test_demo_writes_result_and_png(tmp_path):
    folder = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "holodask", "demo", str(folder), "--frames", "8", "--size", "256"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = folder / "result.hdf5"
    png = folder / "result.png"
    assert f"result:      {result}" in done.stdout
    assert f"quick look:  {png}" in done.stdout
    with h5py.File(result, "r") as f:
        data = f["data"]
        stored = data.id.get_type()  # the HDF5 type on disk: compound of float32 r, i
        assert isinstance(stored, h5py.h5t.TypeCompoundID) and stored.get_size() == 8
        assert [stored.get_member_name(k) for k in range(2)] == [b"r", b"i"]
        assert data.shape == (64, 64)
        assert f["variance"].dtype == np.float32
        assert len(f["data"].attrs["shift(nm)"]) == 8
    head = png.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    # the printed phase error is the one of the written average, and it is small
    line = next(s for s in done.stdout.splitlines() if s.startswith("phase error"))
    error = float(line.split(":")[1].split("rad")[0])
    from holodask.simulate import SimulatedSeries

    sim = SimulatedSeries.load(folder)
    with h5py.File(result, "r") as f:
        wave = f["data"][()]  # h5py reads the r/i compound as complex64
    assert abs(sim.phase_error_rad(wave) - error) < 1e-3
    assert error < 0.1
