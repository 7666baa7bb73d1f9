"""Exceptions of holodask.

Every error a user can cause by bad input derives from :class:`HolodaskError`;
the command line prints its message (no traceback) and exits with code 1.
"""


class HolodaskError(Exception):
    """Base class of all errors caused by bad input or bad files."""


class ParameterError(HolodaskError, ValueError):
    """A parameter is missing, of the wrong type, or inconsistent.

    The message names the parameter and says what was expected.
    """


class InputFileError(HolodaskError, OSError):
    """An input file is missing, unreadable, or not what was expected.

    The message names the file.
    """


class DataError(HolodaskError, ValueError):
    """Pixel data cannot be processed (NaN/Inf pixels, inconsistent frames, ...)."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGTERM: a batch system's walltime, ``kill``).

    A :class:`KeyboardInterrupt`, so that everything that cleans up after Ctrl-C (temporary
    files, clusters, batch jobs) does so here too.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
