"""External logs of an in-situ experiment (holder temperature, bias, pressure, ...) as CSV.

A log is a text table (UTF-8) of times and values, joined onto the window axis
of a windowed run (:mod:`holodask.stages.windows`) as coordinates:

* a header row with the column names, then one row per reading; cells
  separated by commas, semicolons or tabs (the header's separator is used for
  every row); lines starting with ``#`` and blank lines are skipped;
* the first column is the time in seconds, strictly increasing. Its name
  chooses the clock: ``time_s`` means seconds since 1970-01-01 UTC, the clock
  of the holograms' acquisition times (the coordinate ``time_s`` that DM,
  Velox and TIA files give); any other name (``time``, ``t``, ``elapsed_s``
  ...) means the clock of the window axis' ``time`` coordinate: seconds since
  the series' first hologram, or, in a series without acquisition times, the
  frame number;
* every other column is a number per reading (an empty cell, ``nan`` or
  ``NaN``: no reading); each becomes a coordinate of that name along ``window``,
  interpolated linearly at each window's mean time (NaN outside the log's time
  span).

For example::

    time_s,temperature_C,bias_V
    1716370000.0,25.0,0
    1716370060.0,150.5,0.5
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from holodask.errors import ParameterError

__all__ = ["TimeLog", "read_time_log", "ABSOLUTE_TIME_NAME", "MAX_LOG_BYTES"]

#: the first column's name for times on the holograms' own clock (s since 1970 UTC)
ABSOLUTE_TIME_NAME = "time_s"
#: largest log file read (a reading a second for a year is about 30 MB)
MAX_LOG_BYTES = 256 * 2**20
_SEPARATORS = (",", ";", "\t")


@dataclass(frozen=True, eq=False)
class TimeLog:
    """A parsed log: ``times`` (R,) strictly increasing, ``values`` (R, C) float64 with
    the column names ``names``; ``time_name`` is the first column's name."""

    path: str
    time_name: str
    names: tuple[str, ...]
    times: np.ndarray
    values: np.ndarray

    @property
    def absolute(self) -> bool:
        """Whether the times are seconds since 1970 UTC (the first column is ``time_s``)."""
        return self.time_name == ABSOLUTE_TIME_NAME

    def at(self, times) -> np.ndarray:
        """The values (len(times), C) interpolated linearly at ``times``; NaN outside the
        log's span (and where a column has no reading on either side)."""
        times = np.asarray(times, dtype=np.float64)
        out = np.full((times.size, len(self.names)), np.nan)
        for k in range(len(self.names)):
            column = self.values[:, k]
            known = np.isfinite(column)
            if np.count_nonzero(known) == 0:
                continue
            xp, fp = self.times[known], column[known]
            inside = (times >= xp[0]) & (times <= xp[-1])
            out[inside, k] = np.interp(times[inside], xp, fp)
        return out

    def covers(self, times) -> np.ndarray:
        """Which ``times`` lie within the log's time span."""
        times = np.asarray(times, dtype=np.float64)
        return (times >= self.times[0]) & (times <= self.times[-1])


def _number(text: str, path, line: int, name: str, what: str) -> float:
    cell = text.strip()
    if cell == "" or cell.lower() == "nan":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise ParameterError(f"parameter '{what}': {path} line {line}, column {name!r}: {cell!r} is not a number") from None


def read_time_log(path, what: str = "window_log") -> TimeLog:
    """Read a log (see the module) from ``path``; one :class:`ParameterError` naming
    ``what`` (the parameter) for whatever is wrong with it."""
    path = Path(os.fspath(path))
    if not path.exists():
        raise ParameterError(f"parameter '{what}': the log file {path} does not exist")
    if not path.is_file():
        raise ParameterError(f"parameter '{what}': {path} is not a file (expected a CSV log)")
    size = path.stat().st_size
    if size > MAX_LOG_BYTES:
        raise ParameterError(f"parameter '{what}': {path} is larger than {MAX_LOG_BYTES // 2**20} MiB; expected a CSV log "
                             "of times and values")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ParameterError(f"parameter '{what}': {path} is not a UTF-8 text file (expected a CSV log)") from None
    except OSError as exc:
        raise ParameterError(f"parameter '{what}': cannot read {path}: {exc.strerror or exc}") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ParameterError(f"parameter '{what}': {path} holds no header row (expected e.g. 'time_s,temperature_C')")
    header_line, header = lines[0]
    separator = max(_SEPARATORS, key=header.count)
    if header.count(separator) == 0:
        raise ParameterError(f"parameter '{what}': {path} line {header_line}: the header {header.strip()!r} has one column; "
                             "expected the time and at least one value, separated by commas, semicolons or tabs")
    names = [name.strip() for name in next(csv.reader([header], delimiter=separator))]
    if any(not name for name in names):
        raise ParameterError(f"parameter '{what}': {path} line {header_line}: a column has no name")
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise ParameterError(f"parameter '{what}': {path} line {header_line}: the column {twice!r} is named twice")
    rows = []
    for number, cells in zip((n for n, _ in lines[1:]),
                             csv.reader((line for _, line in lines[1:]), delimiter=separator)):
        if len(cells) != len(names):
            raise ParameterError(f"parameter '{what}': {path} line {number}: {len(cells)} cells, expected {len(names)} "
                                 f"({', '.join(names)})")
        rows.append([_number(cell, path, number, name, what) for cell, name in zip(cells, names)])
    if len(rows) < 2:
        raise ParameterError(f"parameter '{what}': {path} holds {len(rows)} reading(s); a log needs at least two rows to "
                             "interpolate between")
    table = np.array(rows, dtype=np.float64)
    times = table[:, 0]
    if not np.all(np.isfinite(times)):
        bad = int(np.flatnonzero(~np.isfinite(times))[0])
        raise ParameterError(f"parameter '{what}': {path} line {lines[1 + bad][0]}: the time {names[0]!r} is missing")
    steps = np.diff(times)
    if np.any(steps <= 0):
        bad = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise ParameterError(f"parameter '{what}': {path} line {lines[1 + bad][0]}: the times must increase from row to row "
                             f"({times[bad - 1]:g} then {times[bad]:g})")
    return TimeLog(str(path.resolve()), names[0], tuple(names[1:]), times, table[:, 1:])
