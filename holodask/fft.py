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

import os
import threading

import numpy as np
import scipy.fft

__all__ = [
    "backend",
    "set_fft_threads",
    "get_fft_threads",
    "fft2",
    "ifft2",
    "rfft2",
    "irfft2",
]

try:  # pragma: no cover - depends on the installation
    if os.environ.get("HOLODASK_FFT_BACKEND", "").lower() == "scipy":
        raise ImportError("disabled by HOLODASK_FFT_BACKEND")
    import pyfftw
    import pyfftw.builders

    _HAVE_PYFFTW = True
except ImportError:  # pragma: no cover
    pyfftw = None
    _HAVE_PYFFTW = False

_fft_threads = max(1, int(os.environ.get("HOLODASK_FFT_THREADS", "1") or 1))
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


def _plan(kind: str, shape: tuple[int, ...], dtype: np.dtype, out_shape=None):
    cache = getattr(_local, "plans", None)
    if cache is None:
        cache = _local.plans = {}
    key = (kind, shape, dtype.str, out_shape, _fft_threads)
    plan = cache.get(key)
    if plan is None:
        template = pyfftw.empty_aligned(shape, dtype=dtype)
        builder = getattr(pyfftw.builders, kind)
        kwargs = dict(threads=_fft_threads, planner_effort=_planner_effort)
        if out_shape is not None:
            kwargs["s"] = out_shape
        plan = builder(template, **kwargs)
        cache[key] = plan
    return plan


def _as(a: np.ndarray, dtype) -> np.ndarray:
    return np.asarray(a, dtype=dtype)


def fft2(a: np.ndarray) -> np.ndarray:
    """Forward 2-D FFT of a complex64 array (unnormalised)."""
    a = _as(a, np.complex64)
    if _HAVE_PYFFTW:
        return _plan("fft2", a.shape, a.dtype)(a).copy()
    return scipy.fft.fft2(a, workers=_fft_threads)


def ifft2(a: np.ndarray) -> np.ndarray:
    """Inverse 2-D FFT of a complex64 array (divided by the number of pixels)."""
    a = _as(a, np.complex64)
    if _HAVE_PYFFTW:
        return _plan("ifft2", a.shape, a.dtype)(a).copy()
    return scipy.fft.ifft2(a, workers=_fft_threads)


def rfft2(a: np.ndarray) -> np.ndarray:
    """Forward 2-D FFT of real input as float32: the half spectrum ``(H, W//2+1)``."""
    a = _as(a, np.float32)
    if _HAVE_PYFFTW:
        return _plan("rfft2", a.shape, a.dtype)(a).copy()
    return scipy.fft.rfft2(a, workers=_fft_threads)


def irfft2(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rfft2` onto a real array of ``shape``."""
    a = _as(a, np.complex64)
    shape = tuple(int(s) for s in shape)
    if _HAVE_PYFFTW:
        return _plan("irfft2", a.shape, a.dtype, out_shape=shape)(a).copy()
    return scipy.fft.irfft2(a, s=shape, workers=_fft_threads)
