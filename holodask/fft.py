"""FFT backend: pyFFTW plans when available, else :mod:`scipy.fft`.

All transforms work in single precision (float32 / complex64). Plans are built
once per (transform, shape, dtype, threads) and cached per thread, because an
FFTW plan object owns its input/output buffers and must not be used by two
threads at once (Dask runs tasks in several threads).

The number of threads *inside* one FFT is one switch, :func:`set_fft_threads`
(default 1: Dask already runs one task per core, so FFT threads would only
oversubscribe the cores). The environment variable ``HOLODASK_FFT_THREADS``
sets the default; ``HOLODASK_FFT_BACKEND=scipy`` disables pyFFTW.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import platform
import sys
import tempfile
import threading

import numpy as np

__all__ = [
    "backend",
    "set_fft_threads",
    "get_fft_threads",
    "fft2",
    "ifft2",
    "rfft2",
    "irfft2",
    "fft_axis",
    "ifft_axis",
    "rfft_axis",
    "irfft_axis",
    "prepare",
    "next_fast_len",
    "export_wisdom",
    "import_wisdom",
]

#: optional interfaces ``import pyfftw`` loads when it can; they import dask.array and
#: scipy.fft (about 0.6 s) and holodask does not use them
_PYFFTW_EXTRAS = ("dask.array.fft", "scipy.fftpack")


def _import_pyfftw():
    """``import pyfftw`` without its dask and scipy interfaces (unless already imported)."""
    skipped = [name for name in _PYFFTW_EXTRAS if name not in sys.modules]
    for name in skipped:
        sys.modules[name] = None  # makes "import name" fail inside pyfftw.interfaces
    try:
        import pyfftw
        import pyfftw.builders
    finally:
        for name in skipped:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return pyfftw


try:  # pragma: no cover - depends on the installation
    if os.environ.get("HOLODASK_FFT_BACKEND", "").lower() == "scipy":
        raise ImportError("disabled by HOLODASK_FFT_BACKEND")
    pyfftw = _import_pyfftw()
    _HAVE_PYFFTW = True
except ImportError:  # pragma: no cover
    pyfftw = None
    _HAVE_PYFFTW = False
    import scipy.fft

_fft_threads = max(1, int(os.environ.get("HOLODASK_FFT_THREADS", "1") or 1))
#: folder where measured plans are kept between runs, one small file per transform, so
#: that a run reads only the plans of its own transforms ("" or "none": nowhere)
WISDOM_DIR = os.environ.get(
    "HOLODASK_FFTW_WISDOM",
    os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "holodask", "fftw-plans"),
)
_wisdom_lock = threading.Lock()
_wisdom: dict[str, tuple] = {}  # transform's file name -> its FFTW wisdom (read, measured or imported)
_unsaved: dict[str, tuple] = {}  # measured in this process, written at exit
_planner_effort = os.environ.get("HOLODASK_FFTW_EFFORT", "FFTW_MEASURE")
_local = threading.local()


def backend() -> str:
    """Name of the active FFT backend: ``"pyfftw"`` or ``"scipy"``."""
    return "pyfftw" if _HAVE_PYFFTW else "scipy"


def set_fft_threads(threads: int) -> None:
    """Set the number of threads used inside each FFT (default 1)."""
    global _fft_threads
    _fft_threads = max(1, int(threads))


def get_fft_threads() -> int:
    """Number of threads used inside each FFT."""
    return _fft_threads


def _wisdom_enabled() -> bool:
    return bool(WISDOM_DIR) and WISDOM_DIR.lower() != "none"


_machine_tag = None


def _machine() -> str:
    """CPU model and FFTW build: measured plans are kept apart per machine kind (a home
    folder shared by the nodes of a cluster may see several)."""
    global _machine_tag
    if _machine_tag is None:
        try:
            with open("/proc/cpuinfo") as file:
                model = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), "")
        except OSError:  # not Linux (platform.processor() may start a subprocess: only here)
            model = platform.processor() or ""
        _machine_tag = f"{platform.machine()} {model} pyfftw {getattr(pyfftw, '__version__', '')}"
    return _machine_tag


def _wisdom_name(key: tuple) -> str:
    """File name of the plans of one transform (``key`` of :func:`_plan`)."""
    return hashlib.sha1(repr((key, _machine())).encode()).hexdigest()[:24] + ".wisdom"


#: first line of a plan file: FFTW's own wisdom follows as bytes (never pickled objects)
_WISDOM_MAGIC = b"holodask fftw wisdom 1\n"
#: a plan file is a few kB; anything much larger is not one of ours
_WISDOM_MAX_BYTES = 1 << 20


def _encode_wisdom(wisdom: tuple) -> bytes:
    """FFTW's exported wisdom (double, single, long double: bytes each) as one file's content."""
    parts = [bytes(part) for part in wisdom]
    return _WISDOM_MAGIC + b"".join(len(part).to_bytes(8, "big") + part for part in parts)


def _decode_wisdom(data: bytes):
    """The wisdom tuple of a plan file, or None where the content is not one."""
    if not data.startswith(_WISDOM_MAGIC):
        return None
    parts, position = [], len(_WISDOM_MAGIC)
    for _ in range(3):
        if position + 8 > len(data):
            return None
        size = int.from_bytes(data[position:position + 8], "big")
        position += 8
        if position + size > len(data):
            return None
        parts.append(data[position:position + size])
        position += size
    if position != len(data) or not all(p == b"" or p.startswith(b"(fftw") for p in parts):
        return None
    return tuple(parts)


def _read_wisdom(name: str):
    """The stored plans of one transform, or None (absent, damaged, foreign, or in a folder
    or file that another user could have written)."""
    if not _wisdom_enabled():
        return None
    try:
        folder = os.stat(WISDOM_DIR)
        if not _trusted(folder):
            return None
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(os.path.join(WISDOM_DIR, name), flags)
        with os.fdopen(fd, "rb") as file:
            if not _trusted(os.fstat(file.fileno())):
                return None
            data = file.read(_WISDOM_MAX_BYTES + 1)
    except OSError:  # absent or unreadable: only costs planning time
        return None
    return _decode_wisdom(data) if len(data) <= _WISDOM_MAX_BYTES else None


def _trusted(info: os.stat_result) -> bool:
    """Owned by this user (or root) and writable by nobody else."""
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    return (uid is None or info.st_uid in (uid, 0)) and not info.st_mode & 0o022


def _save_wisdom() -> None:
    """Keep the plans measured in this process for later runs (atomic replace; errors ignored)."""
    if not _wisdom_enabled():
        return
    with _wisdom_lock:
        unsaved = dict(_unsaved)
        _unsaved.clear()
    for name, wisdom in unsaved.items():
        try:
            os.makedirs(WISDOM_DIR, mode=0o700, exist_ok=True)
            if not _trusted(os.stat(WISDOM_DIR)):
                return
            handle, temp = tempfile.mkstemp(dir=WISDOM_DIR, prefix=".plan-")  # exclusive, mode 0600
            with os.fdopen(handle, "wb") as file:
                file.write(_encode_wisdom(wisdom))
            os.replace(temp, os.path.join(WISDOM_DIR, name))
        except Exception:
            pass


def _plan(kind: str, shape: tuple[int, ...], dtype: np.dtype, out_shape=None, effort=None, axis=None):
    cache = getattr(_local, "plans", None)
    if cache is None:
        cache = _local.plans = {}
    effort = effort or _planner_effort
    in_place = kind in _IN_PLACE and out_shape is None
    key = (kind, shape, dtype.str, out_shape, _fft_threads, effort, axis, "in place" if in_place else "out of place")
    plan = cache.get(key)
    if plan is None:
        template = pyfftw.empty_aligned(shape, dtype=dtype)
        builder = _in_place_builder(kind) if in_place else getattr(pyfftw.builders, kind)
        kwargs = dict(threads=_fft_threads, planner_effort=effort)
        if out_shape is not None:
            kwargs["n" if axis is not None else "s"] = out_shape
        if axis is not None:
            kwargs["axis"] = axis
        if effort == "FFTW_ESTIMATE":
            with _wisdom_lock:  # FFTW's planner and its wisdom are shared by all threads
                plan = builder(template, **kwargs)
        else:
            plan = _measured_plan(key, builder, template, kwargs)
        cache[key] = plan
    return plan


#: complex transforms run in place, their output in their input buffer: half the memory
#: (20 x 2048^2 holograms: 780 -> 550 MiB peak) and a smaller working set for the caches
_IN_PLACE = {"fft": "FFTW_FORWARD", "ifft": "FFTW_BACKWARD", "fft2": "FFTW_FORWARD", "ifft2": "FFTW_BACKWARD"}


def _in_place_builder(kind: str):
    """A builder of an in-place plan of ``kind``, called as pyFFTW's builders are."""
    def build(template, threads=1, planner_effort="FFTW_MEASURE", axis=None):
        axes = (axis,) if kind in ("fft", "ifft") else (-2, -1)
        return pyfftw.FFTW(template, template, axes=axes, direction=_IN_PLACE[kind], flags=(planner_effort,),
                           threads=threads)
    return build


def _measured_plan(key: tuple, builder, template, kwargs):
    """A measured plan made from this transform's own wisdom alone: the stored (or
    shared) one where there is one, else measured now and kept for later runs. Every
    thread and process then makes the same plan from the same wisdom."""
    name = _wisdom_name(key)
    with _wisdom_lock:
        wisdom = _wisdom.get(name)
        if wisdom is None:
            wisdom = _read_wisdom(name)
        pyfftw.forget_wisdom()
        if wisdom is not None:
            pyfftw.import_wisdom(wisdom)
        plan = builder(template, **kwargs)
        if wisdom is None:
            wisdom = pyfftw.export_wisdom()
            _unsaved[name] = wisdom
        _wisdom[name] = wisdom
    return plan


if _HAVE_PYFFTW:
    atexit.register(_save_wisdom)


def next_fast_len(n: int) -> int:
    """The smallest length >= ``n`` that the FFT backend transforms fast."""
    if _HAVE_PYFFTW:
        return int(pyfftw.next_fast_len(int(n)))
    return int(scipy.fft.next_fast_len(int(n)))


def prepare(kind: str, shape, out_shape=None, axis=None) -> None:
    """Plan a transform now (``kind``: fft2, ifft2, rfft2, irfft2, or the 1-D fft, ifft,
    rfft, irfft along ``axis``; ``shape`` of its input)."""
    if not _HAVE_PYFFTW:
        return
    dtype = np.dtype(np.float32 if kind in ("rfft2", "rfft") else np.complex64)
    if out_shape is not None and axis is None:
        out_shape = tuple(int(s) for s in out_shape)
    elif out_shape is not None:
        out_shape = int(out_shape)
    _plan(kind, tuple(int(s) for s in shape), dtype, out_shape, axis=axis)


def export_wisdom():
    """The plans of the transforms planned here (None without pyFFTW), for
    :func:`import_wisdom` elsewhere.

    Plans measured by FFTW may differ between processes, and with them the
    last bits of the results; workers that import the client's wisdom use the
    same plans and give the same numbers as a local run.
    """
    if not _HAVE_PYFFTW:
        return None
    with _wisdom_lock:
        return dict(_wisdom)


def import_wisdom(wisdom) -> None:
    """Use plans exported by :func:`export_wisdom` (forgets the plans made so far in this thread)."""
    if not _HAVE_PYFFTW or wisdom is None:
        return
    with _wisdom_lock:
        _wisdom.update(wisdom)
    plans = getattr(_local, "plans", None)
    if plans is not None:
        plans.clear()


def _as(a: np.ndarray, dtype) -> np.ndarray:
    return np.asarray(a, dtype=dtype)


def _execute(plan, a: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Copy ``a`` into the plan's own input buffer, run it, return a copy of the output.

    The plan's buffers are always used (never the caller's arrays), so a plan
    behaves the same whatever the alignment or ownership of its inputs (arrays
    received by a distributed worker are read-only views of a message buffer).
    """
    plan.input_array[...] = a
    plan.execute()
    out = plan.output_array.copy()
    if scale is not None:
        out *= out.real.dtype.type(scale)
    return out


def fft2(a: np.ndarray, once: bool = False) -> np.ndarray:
    """Forward 2-D FFT of a complex64 array (unnormalised).

    ``once``: a transform of a shape used only once per run (not worth measuring a plan).
    """
    a = _as(a, np.complex64)
    if _HAVE_PYFFTW:
        return _execute(_plan("fft2", a.shape, a.dtype, effort="FFTW_ESTIMATE" if once else None), a)
    return scipy.fft.fft2(a, workers=_fft_threads)


def ifft2(a: np.ndarray, once: bool = False) -> np.ndarray:
    """Inverse 2-D FFT of a complex64 array (divided by the number of pixels)."""
    a = _as(a, np.complex64)
    if _HAVE_PYFFTW:
        effort = "FFTW_ESTIMATE" if once else None
        return _execute(_plan("ifft2", a.shape, a.dtype, effort=effort), a, 1.0 / a.size)
    return scipy.fft.ifft2(a, workers=_fft_threads)


def rfft2(a: np.ndarray) -> np.ndarray:
    """Forward 2-D FFT of real input as float32: the half spectrum ``(H, W//2+1)``."""
    a = _as(a, np.float32)
    if _HAVE_PYFFTW:
        return _execute(_plan("rfft2", a.shape, a.dtype), a)
    return scipy.fft.rfft2(a, workers=_fft_threads)


def fft_axis(a: np.ndarray, axis: int) -> np.ndarray:
    """Forward 1-D FFTs of a complex64 array along ``axis`` (unnormalised)."""
    a = _as(a, np.complex64)
    if _HAVE_PYFFTW:
        return _execute(_plan("fft", a.shape, a.dtype, axis=axis), a)
    return scipy.fft.fft(a, axis=axis, workers=_fft_threads)


def ifft_axis(a: np.ndarray, axis: int) -> np.ndarray:
    """Inverse 1-D FFTs of a complex64 array along ``axis`` (divided by its length)."""
    a = _as(a, np.complex64)
    if _HAVE_PYFFTW:
        return _execute(_plan("ifft", a.shape, a.dtype, axis=axis), a, 1.0 / a.shape[axis])
    return scipy.fft.ifft(a, axis=axis, workers=_fft_threads)


def rfft_axis(a: np.ndarray, axis: int) -> np.ndarray:
    """Forward 1-D FFTs of real float32 input along ``axis`` (half spectra)."""
    a = _as(a, np.float32)
    if _HAVE_PYFFTW:
        return _execute(_plan("rfft", a.shape, a.dtype, axis=axis), a)
    return scipy.fft.rfft(a, axis=axis, workers=_fft_threads)


def irfft_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Inverse of :func:`rfft_axis` onto ``n`` real points along ``axis``."""
    a = _as(a, np.complex64)
    if _HAVE_PYFFTW:
        out_shape = list(a.shape)
        out_shape[axis] = int(n)
        return _execute(_plan("irfft", a.shape, a.dtype, out_shape=int(n), axis=axis), a, 1.0 / n)
    return scipy.fft.irfft(a, n=n, axis=axis, workers=_fft_threads)


def irfft2(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rfft2` onto a real array of ``shape``."""
    a = _as(a, np.complex64)
    shape = tuple(int(s) for s in shape)
    if _HAVE_PYFFTW:
        return _execute(_plan("irfft2", a.shape, a.dtype, out_shape=shape), a, 1.0 / (shape[0] * shape[1]))
    return scipy.fft.irfft2(a, s=shape, workers=_fft_threads)
