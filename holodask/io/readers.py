"""Imports every built-in reader module so that they register themselves."""

from importlib import import_module

_READER_MODULES = (
    "holodask.io.dm",
    "holodask.io.hdf5",
    "holodask.io.raw",
    "holodask.io.imagefiles",
    "holodask.io.framecache",
    "holodask.io.tiff",
    "holodask.io.rsciio_formats",
    "holodask.io.tia",
)

for _name in _READER_MODULES:
    try:
        import_module(_name)
    except ModuleNotFoundError as exc:  # a reader module not written yet
        if exc.name != _name:
            raise
