"""holodask: parallel, out-of-core reconstruction and averaging of off-axis
electron hologram series with Dask and xarray.

The public API is imported lazily so that ``import holodask`` stays cheap:
:func:`open_series` loads a lazy labelled stack, :func:`reconstruct` and
:func:`average` are the stages of ``holodask run``, :func:`open_result` reads a
result file; ``import holodask.accessor`` (done by the stages) adds the
``.holo`` accessor to xarray objects.
"""

from importlib import import_module

__version__ = "0.1.0"

#: the command line loaded numpy with single-threaded BLAS (see holodask.cli)
_blas_single_threaded = False

_LAZY = {
    "open_series": "holodask.series",
    "reconstruct": "holodask.stages.reconstruction",
    "reconstruct_empty": "holodask.stages.reconstruction",
    "raw_alignment": "holodask.stages.reconstruction",
    "repair_outliers": "holodask.stages.reconstruction",
    "hold": "holodask.stages.averaging",
    "average": "holodask.stages.averaging",
    "find_sideband": "holodask.sideband",
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
