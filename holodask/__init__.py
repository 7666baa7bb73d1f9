"""holodask: parallel, out-of-core reconstruction and averaging of off-axis
electron hologram series with Dask and xarray.

The public API is imported lazily so that ``import holodask`` stays cheap.
"""

from importlib import import_module

__version__ = "0.1.0"

#: the command line loaded numpy with single-threaded BLAS (see holodask.cli)
_blas_single_threaded = False

_LAZY = {
    "open_series": "holodask.series",
    "load_parameters": "holodask.params",
    "HoloParams": "holodask.params",
    "simulate": "holodask.simulate",
    "run": "holodask.pipeline",
    "open_result": "holodask.results",
    "HolodaskError": "holodask.errors",
    "ParameterError": "holodask.errors",
    "InputFileError": "holodask.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        module = import_module(_LAZY[name])
        # ``holodask.simulate`` is both a module and its main function.
        value = getattr(module, name, module)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'holodask' has no attribute {name!r}")
