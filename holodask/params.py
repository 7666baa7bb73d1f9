"""Parameter files of the reference program, parsed once into a typed object.

A parameter file is a JSON object that may also hold ``//`` and ``/* */``
comments and trailing commas (parsed with the maintained ``json5`` library).
:func:`load_parameters` reads one (from a file, stdin or a dict) and
:func:`parse_parameters` validates the mapping into a frozen
:class:`HoloParams`; every mistake raises one :class:`ParameterError` naming
the parameter and what was expected. Downstream code reads only
:class:`HoloParams`, never raw dictionaries.
"""

from __future__ import annotations

import copy
import difflib
import io
import json
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import json5
import numpy as np

from holodask import limits
from holodask.errors import InputFileError, ParameterError
from holodask.io.registry import normalise_path

__all__ = [
    "FilterSpec",
    "FresnelFilter",
    "FrameWeights",
    "MtfTerm",
    "SeriesSpec",
    "HoloParams",
    "KNOWN_PARAMETERS",
    "ParameterError",
    "parse_parameter_text",
    "load_parameters",
    "parse_parameters",
    "parameters_json",
    "expand_names",
    "stage_parameters",
    "input_paths",
]


@dataclass(frozen=True)
class FilterSpec:
    """Sideband mask function: ``kind`` is "EDGE", "GAUSSIAN" or "BUTTERWORTH"."""

    kind: str = "EDGE"
    order: float | None = None  # BUTTERWORTH only

    def as_attribute(self) -> list[str]:
        """Value of the ``reconstructionMaskType`` output attribute."""
        if self.kind == "BUTTERWORTH":
            return [self.kind, f"{self.order:g}"]
        return [self.kind]


@dataclass(frozen=True)
class FresnelFilter:
    """Line filter against the streak of the biprism's Fresnel fringes (``fresnel_filter``).

    ``width_per_nm``: full width of the line (1/nm); ``angle_deg``: its direction in
    the Fourier transform (degrees from +x towards +y, as ``sideband_pos``; None:
    along the carrier); ``gap_per_nm``: radius around the sideband's centre left
    unfiltered (None: the width).
    """

    width_per_nm: float
    angle_deg: float | None = None
    gap_per_nm: float | None = None


@dataclass(frozen=True)
class FrameWeights:
    """Weights of the holograms in the average (``weights``): ``values`` (one per
    hologram, in series order: from the parameter file's list or from the file
    ``source``) or ``coordinate``, the name of a per-frame coordinate of the
    reconstructed stack whose values are taken (e.g. a per-hologram quality)."""

    values: tuple[float, ...] | None = None
    coordinate: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class MtfTerm:
    """One term of the parametrised MTF: kind "CONSTANT", "GAUSSIAN" or "LORENTZIAN"."""

    kind: str
    coefficients: tuple[float, ...]


@dataclass(frozen=True)
class SeriesSpec:
    """One hologram series after expanding patterns, ranges and exclusions.

    ``indices[k]`` is the series index of file spec ``specs[k]`` (a string
    ``path?key=value&...`` with ``path`` already made absolute).
    """

    specs: tuple[str, ...]
    indices: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class HoloParams:
    """All parameters of a run, validated, with defaults applied.

    Optional values that are "taken from the files" are ``None`` here.
    """

    # series
    object_series: SeriesSpec | None = None
    empty_series: SeriesSpec | None = None
    empty_override: str | None = None
    synthesize_empty: bool = False
    camera_distortions: tuple[str, str] | None = None
    # sizes and regions (px)
    object_size: int | None = None
    empty_size: int | None = None
    roi: tuple[int, int, int, int] | None = None  # left, top, right, bottom; None: full image
    align_roi: tuple[int, int, int, int] | None = None  # None: same as roi
    # optics / calibration (None: from files)
    sampling_nm: float | None = None
    voltage_kV: float | None = None
    binning: int | None = None
    sideband_pos_px: tuple[float, float] | None = (0.0, 0.0)  # x, y in the centred FFT; None: not given
    cut_off2_per_nm2: np.ndarray | None = field(default_factory=lambda: np.zeros((2, 2)))  # 2x2; None: not given
    cut_off_given: bool = True  # True when given as scalar cut_off
    align_cut_off_per_nm: float | None = 0.0  # None: not given (the cut-off)
    filter_func: FilterSpec = field(default_factory=FilterSpec)
    mtf: tuple[MtfTerm, ...] | None = None
    # switches
    adjust_defocus: bool = False
    adjust_shift: bool = True
    adjust_tilt: bool = False
    enable_raw_alignment: bool = True
    only_phase: bool = False
    only_align: bool = False
    # focal series
    defocus_first_nm: float = 0.0
    defocus_step_nm: float = 0.0
    # outputs
    output_name: str | None = None
    output_prefix: str = ""
    output_series: bool = False
    output_aligned: bool = False
    output_series_as_dataset: bool = False
    output_qpimage: str | None = None
    # holodask extensions
    outlier_cutoff: float | None = None
    tolerance: float | None = None  # relative change of the residual that ends the rounds; None: all rounds
    reject_outliers: float | None = None  # robust sigmas of fringe contrast / residual that reject a hologram
    sideband_found: tuple | None = None  # ((x, y), confidence) where a stage found sideband_pos, not given
    fresnel_filter: FresnelFilter | None = None
    normalize_vacuum: bool | tuple[int, int, int, int] = False  # True: found; a box: given (px of the wave)
    remove_ramp: bool = False  # with normalize_vacuum: the vacuum's phase ramp taken out too
    window: int | None = None  # holograms per window average; None: one average of the whole series
    window_step: int | None = None  # frames from one window's start to the next; None: the window
    window_log: Any = None  # a holodask.io.timelog.TimeLog joined onto the window axis
    window_phase_roi: tuple[int, int, int, int] | None = None  # px of the averaged wave: global phase referred there
    weights: FrameWeights | None = None
    # provenance
    basepath: Path = Path(".")  # folder relative paths were taken from
    folder: Path = Path(".")  # the folder given to the parser (``path`` is relative to it)
    parameter_file: str | None = None  # absolute path; None for stdin or a dict
    raw: dict[str, Any] = field(default_factory=dict)  # the parsed JSON as given

    @property
    def cut_off_per_nm(self) -> float | None:
        """Isotropic cut-off (geometric mean radius of ``cut_off2``); None where not given."""
        if self.cut_off2_per_nm2 is None:
            return None
        return float(np.sqrt(np.sqrt(abs(np.linalg.det(self.cut_off2_per_nm2)))))

    def protected_paths(self) -> list[str]:
        """Files no output of the run may overwrite: its inputs and the parameter file."""
        paths = input_paths(self)
        return paths + [self.parameter_file] if self.parameter_file else paths

    @property
    def align_roi_or_roi(self) -> tuple[int, int, int, int] | None:
        """The region used for raw alignment: ``align_roi``, else ``roi`` (None: full image)."""
        return self.align_roi if self.align_roi is not None else self.roi


# ---------------------------------------------------------------------------
# known parameters
# ---------------------------------------------------------------------------

#: every parameter name a parameter file may hold (reference + newer + holodask)
KNOWN_PARAMETERS: tuple[str, ...] = (
    "adjust_defocus",
    "adjust_shift",
    "adjust_tilt",
    "align_cut_off",
    "align_roi",
    "binning",
    "camera_distortions",
    "cut_off",
    "cut_off2",
    "defocus_first",
    "defocus_step",
    "empty_exclude",
    "empty_first",
    "empty_last",
    "empty_names",
    "empty_override",
    "empty_size",
    "enable_raw_alignment",
    "filter_func",
    "mtf",
    "object_exclude",
    "object_first",
    "object_last",
    "object_names",
    "object_size",
    "only_phase",
    "output_aligned",
    "output_name",
    "output_prefix",
    "output_series",
    "path",
    "roi",
    "sampling",
    "sideband_pos",
    "synthesize_empty",
    "voltage",
    # newer releases of the reference program
    "only_align",
    "output_series_as_dataset",
    # deprecated alias of output_name
    "output",
    # holodask extensions
    "output_qpimage",
    "outlier_cutoff",
    "tolerance",
    "fresnel_filter",
    "reject_outliers",
    "normalize_vacuum",
    "remove_ramp",
    "window",
    "window_step",
    "window_log",
    "window_phase_roi",
    "weights",
)

_FILTER_KINDS = ("EDGE", "GAUSSIAN", "BUTTERWORTH")
_MTF_ARITY = {"CONSTANT": 1, "GAUSSIAN": 2, "LORENTZIAN": 2}


# ---------------------------------------------------------------------------
# text -> mapping
# ---------------------------------------------------------------------------

_JSON5_ERROR = re.compile(r"^<string>:(?P<line>\d+) (?P<what>.*) at column (?P<column>\d+)$", re.S)

#: a JSON string, a comment (a line comment ends at any JSON5 line terminator), or something else
_STRING = r'"(?:[^"\\]|\\.)*"'
_COMMENTS = re.compile(_STRING + r"|//[^\n\r\u2028\u2029]*|/\*.*?\*/", re.S)
_TRAILING_COMMAS = re.compile(_STRING + r"|,(?=\s*[\]}])", re.S)
_BRACKETS = re.compile(_STRING + r"|[\[\]{}]", re.S)
_NOT_NEWLINE = re.compile(r"[^\n\r\u2028\u2029]")


class _DuplicateKey(ValueError):
    def __init__(self, key: str, first: Any, second: Any):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


def _object_without_duplicates(pairs) -> dict:
    """``object_pairs_hook`` of both parsers: a dict, refusing a key given twice."""
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key, result[key], value)
        result[key] = value
    return result


def _blank(match: re.Match) -> str:
    """A comment (or trailing comma) as blanks of the same length, line ends kept
    (so that line and column of a later syntax error stay those of the file)."""
    text = match.group()
    return text if text.startswith('"') else _NOT_NEWLINE.sub(" ", text)


def _plain_json(text: str) -> str:
    """The text with comments and trailing commas blanked (strings untouched)."""
    if "/" in text:
        text = _COMMENTS.sub(_blank, text)
    if "," in text:
        text = _TRAILING_COMMAS.sub(_blank, text)
    return text


def _nesting(text: str) -> int:
    """Deepest nesting of arrays and objects in JSON text (strings skipped)."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def _value_nesting(value: Any) -> int:
    """Deepest nesting of lists and dicts in a parsed value (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def _too_deep(source_name: str, depth: int | None = None) -> ParameterError:
    found = f" ({depth} levels)" if depth else ""
    return ParameterError(
        f"{source_name}: arrays and objects are nested too deeply{found}; a parameter file nests "
        f"at most {limits.MAX_NESTING} levels"
    )


def _parse_json5(text: str, source_name: str) -> Any:
    """The JSON5 parser, for what the standard parser does not read (and its messages)."""
    if len(text) > limits.MAX_JSON5_BYTES:
        return None
    depth = _nesting(_plain_json(text))
    if depth > limits.MAX_NESTING:
        raise _too_deep(source_name, depth)
    try:
        value = json5.loads(text, object_pairs_hook=_object_without_duplicates)
    except _DuplicateKey:
        raise
    except RecursionError:
        raise _too_deep(source_name) from None
    except ValueError as exc:
        message = str(exc)
        match = _JSON5_ERROR.match(message)
        if match:
            message = (
                f"{source_name}: syntax error at line {match['line']}, column {match['column']}: "
                f"{match['what']}"
            )
        else:
            message = f"{source_name}: syntax error: {message}"
        raise ParameterError(message) from None
    return _join_surrogates(value)


def _parse_text(text: str, source_name: str) -> Any:
    """Plain JSON with the standard (fast) parser; comments and trailing commas blanked
    first where needed; the JSON5 parser only for the rest."""
    error = None
    for candidate in (text, None):
        if candidate is None:
            candidate = _plain_json(text)
            if candidate == text:
                break
        try:
            return json.loads(candidate, object_pairs_hook=_object_without_duplicates)
        except json.JSONDecodeError as exc:
            error = exc
        except RecursionError:
            raise _too_deep(source_name) from None
    value = _parse_json5(text, source_name)
    if value is None:  # too long for the JSON5 parser: the standard parser's message
        raise ParameterError(
            f"{source_name}: syntax error at line {error.lineno}, column {error.colno}: {error.msg} "
            f"(a parameter file over {limits.MAX_JSON5_BYTES // 1024} kB must be JSON with at most "
            "comments and trailing commas)"
        )
    return value


def parse_parameter_text(text: str, source_name: str = "parameters") -> dict:
    """Parse the text of a parameter file into a dictionary.

    The text is JSON that may also hold ``//`` line and ``/* */`` block
    comments and trailing commas (comment markers and commas inside strings
    stay intact); other JSON5 syntax is read by ``json5``. Plain JSON, and
    JSON with only comments and trailing commas, go through Python's own
    (fast) parser.

    Parameters
    ----------
    text : str
        The parameter text.
    source_name : str
        Where the text came from, for error messages.

    Returns
    -------
    dict
        The top-level JSON object.

    Raises
    ------
    ParameterError
        On a syntax error (with line and column), a key given twice in one
        object, nesting deeper than :data:`holodask.limits.MAX_NESTING`, or
        when the top level is not an object.
    """
    if not isinstance(text, str):
        raise ParameterError(
            f"{source_name}: parameter text must be a str, got {type(text).__name__}"
        )
    if text.startswith("\ufeff"):  # byte order mark left by some Windows editors
        text = text[1:]
    if not text.strip():
        raise ParameterError(
            f"{source_name}: empty parameter text (expected a JSON object {{...}})"
        )
    try:
        value = _parse_text(text, source_name)
    except _DuplicateKey as exc:
        raise ParameterError(
            f"{source_name}: parameter '{exc.key}' is given twice ({_show(exc.first)}, then "
            f"{_show(exc.second)}); keep one"
        ) from None
    if not isinstance(value, dict):
        raise ParameterError(
            f"{source_name}: the parameters must be a JSON object {{...}}, "
            f"got a JSON {_json_kind(value)}"
        )
    depth = _value_nesting(value)
    if depth > limits.MAX_NESTING:
        raise _too_deep(source_name, depth)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _join_surrogates(value: Any) -> Any:
    """Join escaped UTF-16 surrogate pairs (``"\\ud83d\\ude00"``) into one character.

    ``json5`` keeps the two halves apart where the standard JSON parser joins
    them; lone surrogates stay as they are.
    """
    if isinstance(value, str):
        if _SURROGATE.search(value):
            return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return value
    if isinstance(value, list):
        return [_join_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_join_surrogates(k): _join_surrogates(v) for k, v in value.items()}
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------


def load_parameters(
    source: str | os.PathLike | Mapping[str, Any],
    basepath: str | os.PathLike | None = None,
) -> HoloParams:
    """Read and validate a parameter set.

    Parameters
    ----------
    source : str, path-like or mapping
        A parameter file (read as UTF-8), ``"-"`` for standard input (read
        with Python's standard encoding, see ``PYTHONIOENCODING``) or an
        already parsed mapping.
    basepath : str or path-like, optional
        Folder relative paths are taken from. Default: the parameter file's
        folder; the current folder for stdin or a mapping. The ``path``
        parameter, when present, replaces it (a relative ``path`` is taken
        relative to this folder).

    Returns
    -------
    HoloParams
    """
    if isinstance(source, Mapping):
        base = Path(basepath) if basepath is not None else Path.cwd()
        return parse_parameters(source, base)
    if not isinstance(source, (str, os.PathLike)):
        raise ParameterError(
            "parameters must be given as a file name, '-' (stdin) or a dict, "
            f"got {type(source).__name__}"
        )
    name = os.fspath(source)
    if name == "-":
        text = sys.stdin.read(limits.MAX_PARAMETER_BYTES + 1)
        _check_text_size(len(text), "parameters from stdin")
        base = Path(basepath) if basepath is not None else Path.cwd()
        mapping = parse_parameter_text(text, "parameters from stdin")
        return parse_parameters(mapping, base)
    param_file = Path(os.path.abspath(name))
    try:
        with io.open(param_file, "rb") as file:
            data = file.read(limits.MAX_PARAMETER_BYTES + 1)
        _check_text_size(len(data), f"parameter file {param_file}")
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # universal newlines
    except FileNotFoundError:
        raise InputFileError(f"{param_file}: parameter file not found") from None
    except IsADirectoryError:
        raise InputFileError(f"{param_file}: is a folder, expected a parameter file") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{param_file}: parameter file is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    except OSError as exc:
        raise InputFileError(f"{param_file}: cannot read parameter file ({exc.strerror})") from None
    mapping = parse_parameter_text(text, f"parameter file {str(param_file)!r}")
    base = Path(basepath) if basepath is not None else param_file.parent
    return parse_parameters(mapping, base, parameter_file=param_file)


def _plain(value: Any) -> Any:
    """A keyword's value as the JSON parser would give it (tuples and arrays as lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def stage_parameters(params=None, options: Mapping[str, Any] | None = None) -> HoloParams:
    """The parameters of one stage of the Python API: ``params`` with keyword overrides.

    Parameters
    ----------
    params : HoloParams, parameter file, dict or None
        The loaded parameters (or what :func:`load_parameters` takes).
    options : mapping
        Parameters by their parameter-file names and units (``sideband_pos``,
        ``cut_off``, ``object_size``, ``roi``, ``adjust_tilt``, ...), replacing those
        of ``params``. ``None`` removes a parameter.

    Returns
    -------
    HoloParams
        Parsed with ``partial=True``: what is absent is None, nothing is required.
    """
    options = dict(options or {})
    unknown = [key for key in options if key not in KNOWN_PARAMETERS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, KNOWN_PARAMETERS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ParameterError(f"unknown parameter '{key}'{hint}; expected a parameter-file name")
    if params is None:
        mapping, folder, parameter_file = {}, None, None
    else:
        if not isinstance(params, HoloParams):
            params = load_parameters(params)
        if not options:
            return params
        mapping, folder, parameter_file = dict(params.raw), params.folder, params.parameter_file
    for key, value in options.items():
        if value is None:
            mapping.pop(key, None)
        else:
            mapping[key] = _plain(value)
    return parse_parameters(mapping, folder, parameter_file=parameter_file, partial=True)


def _check_text_size(size: int, what: str) -> None:
    if size > limits.MAX_PARAMETER_BYTES:
        raise ParameterError(
            f"{what}: larger than {limits.MAX_PARAMETER_BYTES // 2**20} MiB; a parameter file is "
            "a small JSON object (is this the right file?)"
        )


# ---------------------------------------------------------------------------
# value checks (each raises one ParameterError naming the parameter)
# ---------------------------------------------------------------------------


def _show(value: Any) -> str:
    """Short JSON-like rendering of a value for messages."""
    try:
        text = json.dumps(value, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_bool(name: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ParameterError(f"parameter '{name}' must be true or false, got {_show(value)}")


def _check_number(name: str, value: Any, what: str = "a number") -> float:
    if isinstance(value, str):
        raise ParameterError(
            f"parameter '{name}' must be {what}, got the string {_show(value)} "
            "(write numbers without quotes)"
        )
    if not _is_number(value):
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the range of floats
        number = math.inf
    if not math.isfinite(number):
        raise ParameterError(f"parameter '{name}' must be {what} (finite), got {_show(value)}")
    _check_bounds(name, number, value)
    return number


#: largest magnitude of each numeric parameter, and its unit: far above any real value,
#: low enough that squares, products and array sizes computed from it stay finite and small
_BOUNDS: dict[str, tuple[float, str]] = {
    "cut_off": (1e3, " 1/nm"),
    "align_cut_off": (1e3, " 1/nm"),
    "cut_off2": (1e6, " 1/nm^2"),
    "sampling": (1e6, " nm"),
    "voltage": (1e4, " kV"),
    "defocus_first": (1e9, " nm"),
    "defocus_step": (1e9, " nm"),
    "outlier_cutoff": (1e6, ""),
    "tolerance": (1.0, ""),
    "reject_outliers": (1e6, ""),
    "window": (limits.MAX_FRAMES, " holograms"),
    "window_step": (limits.MAX_FRAMES, " holograms"),
    "window_phase_roi": (limits.MAX_WAVE_SIDE, " px"),
    "weights": (1e30, ""),
    "fresnel_filter.width": (1e3, " 1/nm"),
    "fresnel_filter.gap": (1e3, " 1/nm"),
    "fresnel_filter.angle": (1e4, " degrees"),
    "normalize_vacuum": (limits.MAX_WAVE_SIDE, " px"),
    "filter_func": (1e3, ""),
    "mtf": (1e6, ""),
    "sideband_pos": (limits.MAX_IMAGE_SIDE, " px"),
    "roi": (limits.MAX_IMAGE_SIDE, " px"),
    "align_roi": (limits.MAX_IMAGE_SIDE, " px"),
    "object_size": (limits.MAX_WAVE_SIDE, " px"),
    "empty_size": (limits.MAX_WAVE_SIDE, " px"),
    "binning": (64, ""),
    "object_first": (1e9, ""),
    "object_last": (1e9, ""),
    "object_exclude": (1e9, ""),
    "empty_first": (1e9, ""),
    "empty_last": (1e9, ""),
    "empty_exclude": (1e9, ""),
}
#: smallest magnitude of a positive parameter where tiny values overflow later
_MINIMA: dict[str, tuple[float, str]] = {"sampling": (1e-6, " nm")}


def _check_bounds(name: str, number: float, value: Any) -> None:
    bound = _BOUNDS.get(name)
    if bound is not None and abs(number) > bound[0]:
        raise ParameterError(
            f"parameter '{name}' must lie between {-bound[0]:g} and {bound[0]:g}{bound[1]}, "
            f"got {_show(value)}"
        )
    minimum = _MINIMA.get(name)
    if minimum is not None and 0 < abs(number) < minimum[0]:
        raise ParameterError(
            f"parameter '{name}' must be at least {minimum[0]:g}{minimum[1]}, got {_show(value)}"
        )


def _check_float(name: str, value: Any, *, positive: bool = False) -> float:
    what = "a positive number" if positive else "a number"
    number = _check_number(name, value, what)
    if positive and not number > 0:
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}")
    return number


def _check_int(name: str, value: Any, *, positive: bool = False, what: str | None = None) -> int:
    what = what or ("a positive integer" if positive else "an integer")
    number = _check_number(name, value, what)
    if not float(number).is_integer():
        raise ParameterError(f"parameter '{name}' must be {what}, got the fraction {_show(value)}")
    integer = int(value)
    if positive and integer <= 0:
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}")
    return integer


def _check_str(name: str, value: Any, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}")
    return value


def _check_list(name: str, value: Any, what: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}")
    return list(value)


def _check_pair(name: str, value: Any, what: str) -> list:
    """A list of exactly two items (checked further by the caller)."""
    pair = _check_list(name, value, what)
    if len(pair) != 2:
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(pair)}")
    return pair


def _check_roi(name: str, value: Any) -> tuple[int, int, int, int]:
    what = "[left, top, right, bottom]: four integers with 0 <= left < right and 0 <= top < bottom"
    items = _check_list(name, value, what)
    if len(items) != 4:
        raise ParameterError(f"parameter '{name}' must be {what}, got {len(items)} values")
    left, top, right, bottom = (_check_int(name, item, what=what) for item in items)
    if not (0 <= left < right and 0 <= top < bottom):
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}")
    return left, top, right, bottom


def _check_cut_off2(value: Any) -> np.ndarray:
    what = "a symmetric positive-definite 2x2 matrix [[a, b], [b, c]] in 1/nm^2"
    rows = _check_list("cut_off2", value, what)
    if len(rows) != 2 or not all(isinstance(r, (list, tuple)) and len(r) == 2 for r in rows):
        raise ParameterError(f"parameter 'cut_off2' must be {what}, got {_show(value)}")
    matrix = np.array([[_check_number("cut_off2", v, what) for v in row] for row in rows])
    if not np.isclose(matrix[0, 1], matrix[1, 0], rtol=1e-9, atol=0.0):
        raise ParameterError(
            f"parameter 'cut_off2' must be {what}; it is not symmetric: {_show(value)}"
        )
    if not np.all(np.linalg.eigvalsh(matrix) > 0):
        raise ParameterError(
            f"parameter 'cut_off2' must be {what}; it is not positive-definite: {_show(value)}"
        )
    return matrix


def _check_filter(name: str, value: Any) -> FilterSpec:
    what = '"EDGE", "GAUSSIAN" or ["BUTTERWORTH", order] with order > 0'
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        items = list(value)
    else:
        raise ParameterError(f"parameter 'filter_func' must be {what}, got {_show(value)}")
    kind = items[0].upper()  # the reference program accepts any case
    if kind not in _FILTER_KINDS:
        raise ParameterError(
            f"parameter 'filter_func' must be {what}, got unknown filter {_show(items[0])}"
        )
    if kind == "BUTTERWORTH":
        if len(items) != 2:
            raise ParameterError(
                f"parameter 'filter_func' must be {what}; BUTTERWORTH needs exactly one order, "
                f"got {_show(value)}"
            )
        order = _check_float("filter_func", items[1], positive=True)
        return FilterSpec(kind=kind, order=order)
    if len(items) != 1:
        raise ParameterError(
            f"parameter 'filter_func' must be {what}; {kind} takes no arguments, "
            f"got {_show(value)}"
        )
    return FilterSpec(kind=kind)


def _check_fresnel(name: str, value: Any) -> FresnelFilter | None:
    what = ('null, a width in 1/nm, or {"width": 1/nm, "angle": degrees (optional), '
            '"gap": 1/nm (optional)}')
    if value is None or value is False:
        return None
    if _is_number(value):
        value = {"width": value}
    if not isinstance(value, Mapping):
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}")
    unknown = sorted(set(value) - {"width", "angle", "gap"})
    if unknown:
        raise ParameterError(f"parameter '{name}': unknown key {unknown[0]!r}; expected {what}")
    if "width" not in value:
        raise ParameterError(f"parameter '{name}' needs \"width\" (1/nm); expected {what}")
    width = _check_float(f"{name}.width", value["width"], positive=True)
    angle = value.get("angle")
    angle = None if angle is None else _check_float(f"{name}.angle", angle)
    gap = value.get("gap")
    gap = None if gap is None else _check_float(f"{name}.gap", gap, positive=True)
    return FresnelFilter(width_per_nm=width, angle_deg=angle, gap_per_nm=gap)


def _check_vacuum(name: str, value: Any) -> bool | tuple[int, int, int, int]:
    """``normalize_vacuum``: false (off), true (the vacuum found) or a box in px of the wave."""
    what = ("true (the vacuum region found), false, or a box [left, top, right, bottom] in px of the "
            "averaged wave (at least 2x2)")
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if not isinstance(value, (list, tuple)):
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}")
    if len(value) != 4:
        raise ParameterError(f"parameter '{name}' must be {what}, got {len(value)} values")
    left, top, right, bottom = (_check_int(name, item, what=what) for item in value)
    if not (0 <= left and 0 <= top and right - left >= 2 and bottom - top >= 2):
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}")
    return left, top, right, bottom


def _vacuum_options(given: "_Given", object_size: int | None) -> dict[str, Any]:
    """``normalize_vacuum`` and ``remove_ramp``, checked together (and a box against
    ``object_size``, the averaged wave's size, when known)."""
    vacuum = given.take("normalize_vacuum", _check_vacuum, False)
    ramp = given.take("remove_ramp", _check_bool, False)
    if ramp and vacuum is False:
        raise ParameterError("parameter 'remove_ramp' needs 'normalize_vacuum' (true or a box): the ramp is "
                             "fitted in the vacuum region")
    if isinstance(vacuum, tuple) and object_size is not None and max(vacuum[2], vacuum[3]) > object_size:
        raise ParameterError(f"parameter 'normalize_vacuum': the box {list(vacuum)} is not inside the "
                             f"{object_size}x{object_size} px averaged wave (object_size); expected "
                             "0 <= left < right <= object_size, 0 <= top < bottom <= object_size")
    return {"normalize_vacuum": vacuum, "remove_ramp": ramp}
def _check_window(name: str, value: Any) -> int:
    what = "an integer of at least 2 (holograms per window average)"
    window = _check_int(name, value, what=what)
    if window < 2:
        hint = " (the single reconstructions: output_series)" if window == 1 else ""
        raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}{hint}")
    return window


#: extensions of a ``weights`` file; any other string names a per-frame coordinate
WEIGHTS_FILE_EXTENSIONS = (".txt", ".csv", ".dat", ".npy")


def _weight_values(name: str, values, what: str) -> tuple[float, ...]:
    numbers = tuple(_check_number(name, v, what) for v in values)
    if not numbers:
        raise ParameterError(f"parameter '{name}' must be {what}, got no values")
    if any(v < 0 for v in numbers):
        raise ParameterError(f"parameter '{name}' must be {what}; got the negative weight "
                             f"{min(numbers):g}")
    if sum(1 for v in numbers if v > 0) < 2:
        raise ParameterError(f"parameter '{name}' must be {what}; fewer than two weights are positive")
    return numbers


def _read_weights_file(name: str, path: str, what: str) -> tuple[float, ...]:
    if not os.path.isfile(path):
        raise ParameterError(f"parameter '{name}': the weights file {path} does not exist")
    if os.path.getsize(path) > limits.MAX_PARAMETER_BYTES:
        raise ParameterError(f"parameter '{name}': {path} is larger than "
                             f"{limits.MAX_PARAMETER_BYTES // 2**20} MiB; expected one weight per hologram")
    if path.lower().endswith(".npy"):
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ParameterError(f"parameter '{name}': {path} is not a readable .npy array ({exc})") from None
        if values.ndim != 1 or values.dtype.kind not in "iuf":
            raise ParameterError(f"parameter '{name}': {path} must hold a 1-D array of numbers, got "
                                 f"{values.dtype} of shape {values.shape}")
        return _weight_values(name, [float(v) for v in values], what)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(f"parameter '{name}': cannot read {path} as text ({exc})") from None
    numbers = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0]
        for cell in re.split(r"[,;\s]+", line.strip()):
            if not cell:
                continue
            try:
                numbers.append(float(cell))
            except ValueError:
                raise ParameterError(f"parameter '{name}': {path} line {number}: {cell!r} is not a number "
                                     "(expected one weight per hologram)") from None
    return _weight_values(name, numbers, what)


def _check_weights(name: str, value: Any, basepath: Path) -> FrameWeights:
    what = ("a list of weights >= 0 (one per hologram), a file of them (.txt, .csv, .dat, .npy) or the name of "
            "a per-frame coordinate")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ParameterError(f"parameter '{name}' must be {what}, got an empty string")
        if text.lower().endswith(WEIGHTS_FILE_EXTENSIONS) or "/" in text or os.sep in text:
            path = str(normalise_path(text, basepath))
            return FrameWeights(values=_read_weights_file(name, path, what), source=path)
        return FrameWeights(coordinate=text)
    if isinstance(value, (list, tuple)):
        return FrameWeights(values=_weight_values(name, value, what))
    raise ParameterError(f"parameter '{name}' must be {what}, got {_show(value)}")


def _check_window_log(name: str, value: Any, basepath: Path):
    from holodask.io.timelog import read_time_log

    return read_time_log(_check_path(name, value, basepath), what=name)


def _windows(given: "_Given", base: Path) -> dict[str, Any]:
    """``window``, ``window_step``, ``window_log`` (the last two need the first) and ``weights``."""
    found: dict[str, Any] = {"window": given.take("window", _check_window)}
    found["window_step"] = given.take("window_step", _check_int, positive=True)
    for key in ("window_step", "window_log", "window_phase_roi"):
        if key in given and found["window"] is None:
            raise ParameterError(f"parameter '{key}' needs 'window' (the holograms per window average)")
    found["window_log"] = given.take("window_log", _check_window_log, basepath=base)
    found["window_phase_roi"] = given.take("window_phase_roi", _check_roi)
    found["weights"] = given.take("weights", _check_weights, basepath=base)
    return found


def _check_mtf(name: str, value: Any) -> tuple[MtfTerm, ...]:
    what = 'a non-empty list of terms ["CONSTANT", A], ["GAUSSIAN", A, B] or ["LORENTZIAN", A, B]'
    terms = _check_list("mtf", value, what)
    if not terms:
        raise ParameterError(f"parameter 'mtf' must be {what}, got an empty list")
    result = []
    for number, term in enumerate(terms):
        if not (isinstance(term, (list, tuple)) and term and isinstance(term[0], str)):
            raise ParameterError(f"parameter 'mtf' must be {what}; term {number} is {_show(term)}")
        kind = term[0].upper()
        if kind not in _MTF_ARITY:
            raise ParameterError(
                f"parameter 'mtf' must be {what}; term {number} has unknown kind {_show(term[0])}"
            )
        if len(term) != 1 + _MTF_ARITY[kind]:
            raise ParameterError(
                f"parameter 'mtf' must be {what}; term {number} ({kind}) needs "
                f"{_MTF_ARITY[kind]} number(s), got {_show(term)}"
            )
        coefficients = tuple(_check_number("mtf", c, f"{what} (term {number})") for c in term[1:])
        result.append(MtfTerm(kind=kind, coefficients=coefficients))
    return tuple(result)


def _check_exclude(name: str, value: Any) -> tuple[int, ...]:
    items = _check_list(name, value, "a list of integers")
    return tuple(_check_int(name, item, what="a list of integers") for item in items)


# ---------------------------------------------------------------------------
# names and paths
# ---------------------------------------------------------------------------


def _absolute_spec(spec: str, basepath: Path) -> str:
    """Make the path part of ``path?options`` absolute; keep the options as written."""
    name, sep, query = spec.partition("?")
    return str(normalise_path(name, basepath)) + sep + query


def _expand_pattern(name: str, pattern: str, index: int, several: bool) -> str:
    try:
        return pattern % index
    except (TypeError, ValueError) as exc:
        problem = str(exc)
    try:
        literal = pattern % ()  # no placeholder at all (only %% escapes)
    except (TypeError, ValueError):
        raise ParameterError(
            f"parameter '{name}': invalid printf pattern {pattern!r} ({problem}); expected exactly "
            "one placeholder such as %d or %03d (write %% for a literal %)"
        ) from None
    if several:
        raise ParameterError(
            f"parameter '{name}': pattern {pattern!r} has no placeholder (such as %d or %03d) "
            "but the range holds several indices"
        )
    return literal


def _without_placeholder(pattern: str) -> bool:
    """Whether a name holds no printf placeholder (``%%`` escapes allowed)."""
    try:
        pattern % ()
    except (TypeError, ValueError):
        return False
    return True


def expand_names(
    name: str,
    names: Any,
    first: int | None,
    last: int | None,
    exclude: tuple[int, ...] = (),
    basepath: str | os.PathLike = ".",
) -> SeriesSpec:
    """Expand a printf pattern or a list of names into a :class:`SeriesSpec`.

    Parameters
    ----------
    name : str
        Parameter name, for messages (e.g. ``"object_names"``).
    names : str or list of str
        A printf pattern (``pattern % index`` over ``first..last`` inclusive,
        without ``exclude``), or a list of file specs used as given with
        indices ``0..n-1``. A name without placeholder and without
        ``first``/``last`` is one file spec (e.g. a multi-frame container)
        with series index 0; its frames then count 0..N-1.
    first, last : int or None
        Index range of a pattern (ignored for a list).
    exclude : tuple of int
        Indices left out of a pattern's range.
    basepath : path-like
        Folder relative paths are taken from.

    Returns
    -------
    SeriesSpec
        Absolute file specs (reader options after ``?`` kept) and their indices.
    """
    prefix = name.rsplit("_", 1)[0]
    base = Path(basepath)
    if isinstance(names, (list, tuple)):
        if not names:
            raise ParameterError(f"parameter '{name}' must not be an empty list")
        for item in names:
            if not isinstance(item, str) or not item:
                raise ParameterError(
                    f"parameter '{name}' must be a printf pattern or a list of file names "
                    f"(strings), got the item {_show(item)}"
                )
        _check_series_length(name, len(names), "names")
        specs = tuple(_absolute_spec(item, base) for item in names)
        return SeriesSpec(specs=specs, indices=tuple(range(len(specs))))
    if not isinstance(names, str) or not names:
        raise ParameterError(
            f"parameter '{name}' must be a printf pattern (e.g. \"img_%03d.dm3\") or a list of "
            f"file names, got {_show(names)}"
        )
    if first is None and last is None and _without_placeholder(names):
        # one file spec naming a whole series (a multi-frame container): its frames are 0..N-1
        if exclude:
            raise ParameterError(
                f"parameter '{prefix}_exclude' needs '{prefix}_first'/'{prefix}_last' and a pattern; "
                f"{prefix}_names = {names!r} names one file (a whole series)"
            )
        return SeriesSpec(specs=(_absolute_spec(names % (), base),), indices=(0,))
    return _expand_range(name, prefix, names, first, last, exclude, base)


def _expand_range(name: str, prefix: str, names: str, first: int | None, last: int | None,
                  exclude: tuple[int, ...], base: Path) -> SeriesSpec:
    """The pattern ``names`` over ``first..last`` without ``exclude``."""
    if first is None or last is None:
        missing = [f"{prefix}_{k}" for k, v in (("first", first), ("last", last)) if v is None]
        raise ParameterError(
            f"parameter {' and '.join(repr(m) for m in missing)} "
            f"{'is' if len(missing) == 1 else 'are'} required with the pattern "
            f"{prefix}_names = {names!r}"
        )
    if first > last:
        raise ParameterError(
            f"parameter '{prefix}_first' ({first}) must not be greater than "
            f"'{prefix}_last' ({last})"
        )
    excluded = set(exclude)
    outside = sorted(i for i in excluded if not first <= i <= last)
    _check_series_length(f"{prefix}_last", last - first + 1 - (len(excluded) - len(outside)),
                         f"indices ({prefix}_first..{prefix}_last = {first}..{last})")
    if outside:
        warnings.warn(
            f"parameter '{prefix}_exclude': indices {outside} lie outside "
            f"{prefix}_first..{prefix}_last ({first}..{last}); ignored",
            UserWarning,
            stacklevel=4,
        )
    indices = tuple(i for i in range(first, last + 1) if i not in excluded)
    if not indices:
        raise ParameterError(
            f"parameter '{prefix}_exclude' removes every index of {prefix}_first..{prefix}_last "
            f"({first}..{last}); nothing left to process"
        )
    several = len(indices) > 1
    specs = tuple(
        _absolute_spec(_expand_pattern(name, names, index, several), base) for index in indices
    )
    return SeriesSpec(specs=specs, indices=indices)


def _check_series_length(name: str, count: int, what: str) -> None:
    """Refuse a series longer than :data:`holodask.limits.MAX_FRAMES` before it is built."""
    if count > limits.MAX_FRAMES:
        raise ParameterError(
            f"parameter '{name}' gives {count} {what}; a series holds at most {limits.MAX_FRAMES} "
            "holograms (split the series)"
        )


def _check_path(name: str, value: Any, basepath: Path) -> str:
    text = _check_str(name, value, "a file name (string)")
    if not text:
        raise ParameterError(f"parameter '{name}' must be a file name, got an empty string")
    return str(normalise_path(text, basepath))


def _check_output_path(name: str, value: Any, basepath: Path) -> str:
    """An output file name: not ending in a separator, not an existing folder."""
    text = _check_path(name, value, basepath)
    if value.endswith(("/", "\\")) or value.replace("\\", "/").rsplit("/", 1)[-1] in (".", ".."):
        folder = value.rstrip("/\\") or "/"
        raise ParameterError(
            f"parameter '{name}' ({value!r}) names a folder, expected a file name "
            f"(such as '{folder}/result.hdf5')"
        )
    if os.path.isdir(text):
        raise ParameterError(
            f"parameter '{name}' ({value!r}) is the existing folder {text}, expected a file name"
        )
    return text


def _check_spec(name: str, value: Any, basepath: Path) -> str:
    text = _check_str(name, value, "a file name (string)")
    if not text or text.startswith("?"):
        raise ParameterError(f"parameter '{name}' must be a file name, got {_show(value)}")
    return _absolute_spec(text, basepath)


# ---------------------------------------------------------------------------
# mapping -> HoloParams
# ---------------------------------------------------------------------------


def _warn_unknown(keys) -> None:
    for key in keys:
        if key in KNOWN_PARAMETERS:
            continue
        close = difflib.get_close_matches(key, KNOWN_PARAMETERS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        warnings.warn(f"unknown parameter '{key}'{hint}; ignored", UserWarning, stacklevel=5)


class _Given:
    """The parameters given (``null`` counts as absent, except for ``align_roi``)."""

    def __init__(self, mapping: Mapping[str, Any]):
        if not isinstance(mapping, Mapping):
            raise ParameterError(f"the parameters must be a JSON object, got {_json_kind(mapping)}")
        for key in mapping:
            if not isinstance(key, str):
                raise ParameterError(f"parameter names must be strings, got {key!r}")
        self.raw = copy.deepcopy(dict(mapping))
        _warn_unknown(self.raw)
        self.values = {k: v for k, v in self.raw.items() if v is not None or k == "align_roi"}

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def take(self, key: str, check, default=None, **options):
        """``check(key, value, **options)`` of a given parameter, else ``default``."""
        return check(key, self.values[key], **options) if key in self.values else default


def _switches(given: _Given) -> dict[str, Any]:
    values = {
        key: given.take(key, _check_bool, default)
        for key, default in (
            ("adjust_defocus", False),
            ("adjust_shift", True),
            ("adjust_tilt", False),
            ("enable_raw_alignment", True),
            ("only_phase", False),
            ("only_align", False),
            ("synthesize_empty", False),
            ("output_series", False),
            ("output_series_as_dataset", False),
        )
    }
    # the reference program writes the aligned ROIs by default when only aligning
    values["output_aligned"] = given.take("output_aligned", _check_bool, values["only_align"])
    return values


def _sizes_and_calibration(given: _Given, partial: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {
        key: given.take(key, _check_int, positive=True) for key in ("object_size", "empty_size", "binning")
    }
    values["sampling_nm"] = given.take("sampling", _check_float, positive=True)
    values["voltage_kV"] = given.take("voltage", _check_float, positive=True)
    values["roi"] = given.take("roi", _check_roi)
    values["align_roi"] = None
    if "align_roi" in given:
        if given["align_roi"] is None:
            warnings.warn(
                "setting 'align_roi' to null is deprecated; "
                "set 'enable_raw_alignment' to false instead",
                DeprecationWarning,
                stacklevel=4,
            )
            values["enable_raw_alignment"] = False
        else:
            values["align_roi"] = _check_roi("align_roi", given["align_roi"])
    if "sideband_pos" not in given:  # found on the first hologram (holodask.find_sideband)
        values["sideband_pos_px"] = None
        return values
    sideband_what = "[x, y]: two numbers (pixel position in the centred FFT)"
    sideband = _check_pair("sideband_pos", given["sideband_pos"], sideband_what)
    values["sideband_pos_px"] = tuple(_check_number("sideband_pos", v, sideband_what) for v in sideband)
    return values


def _cut_off_and_filters(given: _Given, partial: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "cut_off" in given and "cut_off2" in given:
        raise ParameterError("parameters 'cut_off' and 'cut_off2' exclude each other; give only one")
    if "cut_off" in given:
        cut_off_per_nm = _check_float("cut_off", given["cut_off"], positive=True)
        values["cut_off2_per_nm2"] = np.eye(2) * cut_off_per_nm**2
        values["cut_off_given"] = True
        default_align_cut_off = cut_off_per_nm
    elif "cut_off2" in given:
        values["cut_off2_per_nm2"] = _check_cut_off2(given["cut_off2"])
        values["cut_off_given"] = False
        # The reference program's text speaks of the geometric mean of both
        # radii (sqrt(a*b)), but its code takes sqrt(det(cut_off2)), which for
        # radii a and b is a*b. We follow what it computes.
        default_align_cut_off = float(np.sqrt(np.linalg.det(values["cut_off2_per_nm2"])))
    elif partial:
        values["cut_off2_per_nm2"] = None
        default_align_cut_off = None
    else:
        raise ParameterError(
            "parameter 'cut_off' (sideband radius in 1/nm) or 'cut_off2' "
            "(2x2 matrix in 1/nm^2) is required"
        )
    values["align_cut_off_per_nm"] = given.take(
        "align_cut_off", _check_float, default_align_cut_off, positive=True
    )
    values["filter_func"] = given.take("filter_func", _check_filter, FilterSpec())
    values["mtf"] = given.take("mtf", _check_mtf)
    values["defocus_first_nm"] = given.take("defocus_first", _check_float, 0.0)
    values["defocus_step_nm"] = given.take("defocus_step", _check_float, 0.0)
    return values


def _series(given: _Given, prefix: str, base: Path) -> SeriesSpec | None:
    """The object or empty series (``prefix``), or None when ``PREFIX_names`` is absent."""
    if f"{prefix}_names" not in given:
        return None
    names = given[f"{prefix}_names"]
    # first/last/exclude are checked even where a list of names ignores them
    first = given.take(f"{prefix}_first", _check_int)
    last = given.take(f"{prefix}_last", _check_int)
    exclude = given.take(f"{prefix}_exclude", _check_exclude, ())
    if isinstance(names, (list, tuple)):
        return expand_names(f"{prefix}_names", names, None, None, (), base)
    return expand_names(f"{prefix}_names", names, first, last, exclude, base)


def _inputs(given: _Given, values: dict[str, Any], base: Path, partial: bool = False) -> dict[str, Any]:
    """Object and empty series, the empty wave's source, and their consistency (``partial``:
    nothing required)."""
    found: dict[str, Any] = {"object_series": _series(given, "object", base)}
    if found["object_series"] is not None and values["object_size"] is None and not partial:
        raise ParameterError(
            "parameter 'object_size' (positive integer, px) is required with 'object_names'"
        )
    found["camera_distortions"] = None
    if "camera_distortions" in given:
        what = "[x-file, y-file]: two file names"
        pair = _check_pair("camera_distortions", given["camera_distortions"], what)
        found["camera_distortions"] = tuple(_check_spec("camera_distortions", p, base) for p in pair)
    found["empty_override"] = given.take("empty_override", _check_spec, basepath=base)
    found["empty_series"] = _series(given, "empty", base)
    _choose_empty(found, values["synthesize_empty"])
    empty_size = values["empty_size"] if values["empty_size"] is not None else values["object_size"]
    found["empty_size"] = empty_size
    if empty_size is None and (found["empty_series"] is not None or values["synthesize_empty"]) and not partial:
        raise ParameterError(
            "parameter 'empty_size' (or 'object_size') is required to reconstruct "
            "the empty holograms"
        )
    if (
        not partial
        and found["object_series"] is None
        and found["empty_series"] is None
        and found["empty_override"] is None
        and not values["synthesize_empty"]
    ):
        raise ParameterError(
            "nothing to do: give 'object_names' (object series), 'empty_names' (empty series) "
            "or 'empty_override'"
        )
    return found


def _choose_empty(found: dict[str, Any], synthesize: bool) -> None:
    """Keep the one source of the empty wave that is used (with a warning for the others)."""
    if synthesize:
        if found["camera_distortions"] is None:
            raise ParameterError(
                "parameter 'camera_distortions' ([x-file, y-file]) is required "
                "with 'synthesize_empty'"
            )
        for key in ("empty_override", "empty_series"):
            if found[key] is not None:
                what = "empty_names" if key == "empty_series" else key
                warnings.warn(
                    f"parameter '{what}' is ignored because 'synthesize_empty' is true",
                    UserWarning,
                    stacklevel=5,
                )
                found[key] = None
    elif found["empty_override"] is not None and found["empty_series"] is not None:
        warnings.warn(
            "parameter 'empty_names' is ignored because 'empty_override' is given",
            UserWarning,
            stacklevel=5,
        )
        found["empty_series"] = None


def _outputs(given: _Given, values: dict[str, Any], base: Path, parameter_file: Path | None) -> dict[str, Any]:
    """Output names, refused where they would overwrite the parameter file or an input."""
    found: dict[str, Any] = {}
    if "output" in given:
        if "output_name" in given:
            raise ParameterError(
                "parameters 'output' (deprecated) and 'output_name' are both given; "
                "keep only 'output_name'"
            )
        warnings.warn(
            "parameter 'output' is deprecated; use 'output_name'", DeprecationWarning, stacklevel=4
        )
        found["output_name"] = given.take("output", _check_output_path, basepath=base)
    elif "output_name" in given:
        found["output_name"] = given.take("output_name", _check_output_path, basepath=base)
    elif parameter_file is not None:
        found["output_name"] = str(parameter_file.with_suffix(".hdf5"))
    else:
        found["output_name"] = None
    output_name = found["output_name"]
    if parameter_file is not None and output_name and _same_file(output_name, parameter_file):
        raise ParameterError(
            f"parameter 'output_name' ({output_name}) would overwrite the parameter file "
            "itself; set 'output_name' to another file"
        )
    found["output_prefix"] = given.take("output_prefix", _check_str, "")
    found["output_qpimage"] = given.take("output_qpimage", _check_output_path, basepath=base)
    found["outlier_cutoff"] = given.take("outlier_cutoff", _check_float, positive=True)
    found["tolerance"] = given.take("tolerance", _check_float, positive=True)
    found["reject_outliers"] = given.take("reject_outliers", _check_float, positive=True)
    found["fresnel_filter"] = given.take("fresnel_filter", _check_fresnel)
    found.update(_vacuum_options(given, values.get("object_size")))
    inputs = input_paths(values)
    for key in ("output_name", "output_qpimage"):
        _check_not_input(key, found[key], inputs, parameter_file)
    return found


def input_paths(params: HoloParams | Mapping[str, Any]) -> list[str]:
    """The files a run reads (holograms, empty wave, distortions), paths without reader options."""
    def get(key):
        return params.get(key) if isinstance(params, Mapping) else getattr(params, key)

    specs: list[str] = []
    for key in ("object_series", "empty_series"):
        series = get(key)
        if series is not None:
            specs.extend(series.specs)
    if get("empty_override"):
        specs.append(get("empty_override"))
    specs.extend(get("camera_distortions") or ())
    paths = [spec.partition("?")[0] for spec in specs]
    log, weights = get("window_log"), get("weights")  # files the run reads besides the images
    if log is not None:
        paths.append(log.path)
    if weights is not None and weights.source:
        paths.append(weights.source)
    return list(dict.fromkeys(paths))


def _check_not_input(name: str, output: str | None, inputs: list[str], parameter_file) -> None:
    """Refuse an output that is one of the inputs or the parameter file (also through links)."""
    if not output:
        return
    from holodask.io.safe_write import same_file_as

    protected = inputs + ([str(parameter_file)] if parameter_file is not None else [])
    match = same_file_as(output, protected)
    if match is None:
        return
    what = "the parameter file" if match == str(parameter_file) else "the input file"
    raise ParameterError(
        f"parameter '{name}' ({output}) would overwrite {what} {match}; "
        f"set '{name}' to another file"
    )


def parse_parameters(
    mapping: Mapping[str, Any],
    basepath: str | os.PathLike | None = None,
    *,
    parameter_file: str | os.PathLike | None = None,
    partial: bool = False,
) -> HoloParams:
    """Validate a parsed parameter mapping and apply the defaults.

    The steps: the names given (:class:`_Given`), the folder relative paths
    are taken from, switches, sizes and calibration, cut-off and filters,
    the input series, and the outputs (which may overwrite neither the
    parameter file nor an input).

    Parameters
    ----------
    mapping : mapping
        The parameters as parsed from JSON. A ``null`` value counts as an
        absent parameter (except ``align_roi``, where the reference program
        reads ``null`` as a deprecated way to switch raw alignment off).
    basepath : path-like, optional
        Folder relative paths are taken from (default: current folder);
        replaced by the ``path`` parameter when that is given.
    parameter_file : path-like, optional
        The file the parameters came from: gives the default ``output_name``
        (its name with the extension ``.hdf5``) and may not be overwritten.
    partial : bool
        The parameters of one stage (:func:`holodask.reconstruct`,
        :func:`holodask.average`): nothing is required (no series, no
        ``sideband_pos``, ``cut_off`` or ``object_size``); what is absent is None.

    Returns
    -------
    HoloParams

    Raises
    ------
    ParameterError
        For the first wrong, missing or inconsistent parameter.
    """
    given = _Given(mapping)
    base = folder = Path(os.path.abspath(basepath if basepath is not None else os.getcwd()))
    if parameter_file is not None:
        parameter_file = Path(os.path.abspath(parameter_file))
    if "path" in given:
        base = normalise_path(_check_str("path", given["path"], "a folder name (string)"), base)

    values: dict[str, Any] = {"basepath": base, "raw": given.raw, "folder": folder}
    values["parameter_file"] = str(parameter_file) if parameter_file is not None else None
    values.update(_switches(given))
    values.update(_sizes_and_calibration(given, partial))
    values.update(_cut_off_and_filters(given, partial))
    values.update(_inputs(given, values, base, partial))
    values.update(_windows(given, base))
    values.update(_outputs(given, values, base, parameter_file))
    return HoloParams(**values)


def _same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    try:
        if os.path.exists(first) and os.path.exists(second):
            return os.path.samefile(first, second)
    except OSError:
        pass
    return os.path.normcase(os.path.abspath(first)) == os.path.normcase(os.path.abspath(second))


# ---------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def parameters_json(params: HoloParams) -> str:
    """The parameters as JSON text, for the ``holoaverage_param`` output attribute.

    The text is ``raw`` (the mapping as parsed). Like the reference program,
    an ``output_name`` that was not given but defaulted from the parameter
    file's name is added, so the attribute names the file actually written.
    """
    mapping = dict(params.raw)
    if "output_name" not in mapping and "output" not in mapping and params.output_name is not None:
        mapping["output_name"] = params.output_name
    return json.dumps(mapping, default=_json_default)
