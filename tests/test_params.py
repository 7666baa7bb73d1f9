"""Parameter files: syntax, validation, defaults, names and paths."""

from __future__ import annotations

import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holodask.errors import InputFileError, ParameterError
from holodask.params import (
    FilterSpec,
    HoloParams,
    MtfTerm,
    SeriesSpec,
    load_parameters,
    parameters_json,
    parse_parameter_text,
    parse_parameters,
)

#: the smallest valid parameter set
MINIMAL = {
    "object_names": ["holo.dm3"],
    "object_size": 256,
    "sideband_pos": [314, 134],
    "cut_off": 0.07,
}


def params(base: Path | str = "/data", **changes) -> HoloParams:
    """Parse MINIMAL with ``changes`` (a value of ``...`` removes the key)."""
    mapping = dict(MINIMAL)
    for key, value in changes.items():
        if value is ...:
            mapping.pop(key, None)
        else:
            mapping[key] = value
    return parse_parameters(mapping, base)


def error_of(**changes) -> str:
    with pytest.raises(ParameterError) as info:
        params(**changes)
    return str(info.value)


# ---------------------------------------------------------------------------
# syntax
# ---------------------------------------------------------------------------


def test_comment_markers_and_commas_inside_strings_stay_intact():
    text = r"""
    {
        // a line comment with "quotes" and a , before ]
        "url": "http://example.org/a//b", // comment after a value
        "block": "/* not a comment */",
        "commas": "[1, 2,]",
        "brace": ",}",
        "escaped": "say \"//\" /*",  /* a block comment
           over two lines, with // inside */
        "win": "C:\\data\\holo.dm3",
    } // trailing comment
    """
    assert parse_parameter_text(text) == {
        "url": "http://example.org/a//b",
        "block": "/* not a comment */",
        "commas": "[1, 2,]",
        "brace": ",}",
        "escaped": 'say "//" /*',
        "win": "C:\\data\\holo.dm3",
    }


def test_nested_trailing_commas():
    text = '{"a": [[1, 2,], {"b": [3,], "c": {"d": 4,},},], "e": 5,}'
    assert parse_parameter_text(text) == {"a": [[1, 2], {"b": [3], "c": {"d": 4}}], "e": 5}


def test_block_comment_between_keys_and_values():
    text = '{/* first */ "cut_off" /* here */ : /* and here */ 0.25 /* after */}'
    assert parse_parameter_text(text) == {"cut_off": 0.25}


@pytest.mark.parametrize(
    "text, kind", [("[1, 2]", "array"), ('"x"', "string"), ("3", "number"), ("null", "null")]
)
def test_top_level_must_be_an_object(text, kind):
    with pytest.raises(ParameterError, match=f"must be a JSON object.*got a JSON {kind}"):
        parse_parameter_text(text)


def test_syntax_error_gives_line_and_column():
    text = '{\n  "cut_off": 0.1,\n  "roi": [0, 0, 1 2]\n}'
    with pytest.raises(ParameterError) as info:
        parse_parameter_text(text, "p.json")
    assert str(info.value).startswith("p.json: syntax error at line 3, column 19:")


def test_empty_text_is_an_error():
    with pytest.raises(ParameterError, match="empty parameter text"):
        parse_parameter_text("  \n\t ")


def test_byte_order_mark_is_skipped():
    assert parse_parameter_text('\ufeff{"a": 1}') == {"a": 1}


@settings(max_examples=60, deadline=None)
@given(key=st.text(max_size=12), value=st.text(max_size=40), ascii_only=st.booleans())
def test_arbitrary_strings_survive_comments_and_commas(key, value, ascii_only):
    dump = lambda s: json.dumps(s, ensure_ascii=ascii_only)  # noqa: E731
    # U+2028/U+2029 end a line comment in JSON5 (as in JavaScript): keep them out of it
    in_line_comment = dump(value).translate({0x2028: None, 0x2029: None})
    text = (
        "/* head */ {\n"
        f"  {dump(key)}: {dump(value)}, // tail of line {in_line_comment}\n"
        f"  \"list\": [{dump(value)}, /* {value.replace('*/', '')} */ [{dump(key)},],],\n"
        "}\n"
    )
    assert parse_parameter_text(text) == {key: value, "list": [value, [key]]}


# ---------------------------------------------------------------------------
# loading from files, stdin and dicts
# ---------------------------------------------------------------------------


def test_file_with_non_ascii_names(tmp_path):
    folder = tmp_path / "Messung_äöü µ"
    folder.mkdir()
    param_file = folder / "Fe-Nadel_ß.json"
    param_file.write_text(
        '{"object_names": "Hologramm_é_%02d.dm3", "object_first": 1, "object_last": 2,\n'
        ' "object_size": 128, "sideband_pos": [1, 2], "cut_off": 0.5, "output_prefix": "α/",}',
        encoding="utf-8",
    )
    p = load_parameters(str(param_file))
    assert p.object_series == SeriesSpec(
        specs=(str(folder / "Hologramm_é_01.dm3"), str(folder / "Hologramm_é_02.dm3")),
        indices=(1, 2),
    )
    assert p.output_name == str(folder / "Fe-Nadel_ß.hdf5")
    assert p.output_prefix == "α/"
    assert p.parameter_file == str(param_file)
    assert p.basepath == folder


def test_relative_file_name_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "p.json5").write_text(json.dumps(MINIMAL), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    p = load_parameters("p.json5")
    assert p.parameter_file == str(tmp_path / "p.json5")
    assert p.output_name == str(tmp_path / "p.hdf5")
    assert p.object_series.specs == (str(tmp_path / "holo.dm3"),)


def test_parameters_from_stdin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (
        '{"empty_names": ["vac.dm3",], // c\n'
        '"sideband_pos": [1, 2], "cut_off": 1, "empty_size": 64}'
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    p = load_parameters("-")
    assert p.empty_series == SeriesSpec(specs=(str(tmp_path / "vac.dm3"),), indices=(0,))
    assert p.object_series is None
    assert p.output_name is None
    assert p.parameter_file is None
    assert p.basepath == tmp_path


def test_dict_uses_given_basepath_or_current_folder(tmp_path, monkeypatch):
    assert load_parameters(MINIMAL, "/some/where").object_series.specs == ("/some/where/holo.dm3",)
    monkeypatch.chdir(tmp_path)
    assert load_parameters(MINIMAL).object_series.specs == (str(tmp_path / "holo.dm3"),)


def test_missing_parameter_file_names_the_file(tmp_path):
    with pytest.raises(InputFileError, match=r"absent\.json: parameter file not found"):
        load_parameters(tmp_path / "absent.json")


def test_parameter_file_not_utf8(tmp_path):
    bad = tmp_path / "latin1.json"
    bad.write_bytes('{"output_prefix": "Übung"}'.encode("latin-1"))
    with pytest.raises(InputFileError, match=r"latin1\.json: parameter file is not UTF-8 text"):
        load_parameters(bad)


def test_syntax_error_in_file_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n "cut_off": 0.1\n "roi": [0, 0, 8, 8]\n}', encoding="utf-8")
    with pytest.raises(ParameterError) as info:
        load_parameters(bad)
    expected = f"parameter file {str(bad)!r}: syntax error at line 3, column 2:"
    assert str(info.value).startswith(expected)


def test_hdf5_parameter_file_without_output_name_is_refused(tmp_path):
    param_file = tmp_path / "run.hdf5"
    param_file.write_text(json.dumps(MINIMAL), encoding="utf-8")
    with pytest.raises(ParameterError, match="would overwrite the parameter file"):
        load_parameters(param_file)


def test_output_name_equal_to_parameter_file_is_refused(tmp_path):
    param_file = tmp_path / "run.json"
    param_file.write_text(json.dumps({**MINIMAL, "output_name": "./sub/../run.json"}), encoding="utf-8")
    with pytest.raises(ParameterError, match=r"'output_name' \(.*run\.json\) would overwrite"):
        load_parameters(param_file)


# ---------------------------------------------------------------------------
# unknown keys
# ---------------------------------------------------------------------------


def test_unknown_key_warns_with_suggestion():
    with pytest.warns(UserWarning) as record:
        p = params(objct_size=3)
    messages = [str(w.message) for w in record]
    assert messages == ["unknown parameter 'objct_size' (did you mean 'object_size'?); ignored"]
    assert p.object_size == 256
    assert p.raw["objct_size"] == 3


def test_unknown_key_without_close_match():
    with pytest.warns(UserWarning) as record:
        params(zzzzzz=1)
    assert [str(w.message) for w in record] == ["unknown parameter 'zzzzzz'; ignored"]


def test_known_keys_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params(only_align=True, output_series_as_dataset=True, outlier_cutoff=5.0,
               output_qpimage="q.h5", path=".")


# ---------------------------------------------------------------------------
# wrong types
# ---------------------------------------------------------------------------

WRONG = [
    ("adjust_shift", 1, "parameter 'adjust_shift' must be true or false, got 1"),
    ("adjust_defocus", "true", "parameter 'adjust_defocus' must be true or false, got \"true\""),
    ("only_phase", 0, "parameter 'only_phase' must be true or false, got 0"),
    ("synthesize_empty", [], "parameter 'synthesize_empty' must be true or false"),
    ("output_series_as_dataset", "yes", "'output_series_as_dataset' must be true or false"),
    ("object_size", 256.5, "parameter 'object_size' must be a positive integer, got the fraction 256.5"),
    ("object_size", "256", "parameter 'object_size' must be a positive integer, got the string \"256\""),
    ("object_size", 0, "parameter 'object_size' must be a positive integer, got 0"),
    ("object_size", -8, "parameter 'object_size' must be a positive integer, got -8"),
    ("object_size", True, "parameter 'object_size' must be a positive integer, got true"),
    ("empty_size", 1.5, "parameter 'empty_size' must be a positive integer, got the fraction 1.5"),
    ("binning", 0, "parameter 'binning' must be a positive integer, got 0"),
    ("sampling", "0.9", "parameter 'sampling' must be a positive number, got the string \"0.9\""),
    ("sampling", -0.9, "parameter 'sampling' must be a positive number, got -0.9"),
    ("voltage", [300], "parameter 'voltage' must be a positive number, got [300]"),
    ("voltage", float("nan"), "parameter 'voltage' must be a positive number (finite)"),
    ("cut_off", 0, "parameter 'cut_off' must be a positive number, got 0"),
    ("cut_off", "0.07", "parameter 'cut_off' must be a positive number, got the string"),
    ("align_cut_off", -1, "parameter 'align_cut_off' must be a positive number, got -1"),
    ("defocus_first", "10", "parameter 'defocus_first' must be a number, got the string \"10\""),
    ("defocus_step", {}, "parameter 'defocus_step' must be a number, got {}"),
    ("outlier_cutoff", 0.0, "parameter 'outlier_cutoff' must be a positive number, got 0.0"),
    ("roi", [0, 0, 10], "parameter 'roi' must be [left, top, right, bottom]: four integers"),
    ("roi", [0, 0, 10, 10.5], "parameter 'roi' must be [left, top, right, bottom]"),
    ("roi", [10, 0, 10, 10], "0 <= left < right and 0 <= top < bottom, got [10, 0, 10, 10]"),
    ("roi", [0, 20, 10, 10], "got [0, 20, 10, 10]"),
    ("roi", [-1, 0, 10, 10], "got [-1, 0, 10, 10]"),
    ("roi", "0 0 10 10", "parameter 'roi' must be [left, top, right, bottom]"),
    ("align_roi", [0, 0, 5, 0], "parameter 'align_roi' must be [left, top, right, bottom]"),
    ("sideband_pos", [1, 2, 3], "parameter 'sideband_pos' must be [x, y]: two numbers"),
    ("sideband_pos", 5, "parameter 'sideband_pos' must be [x, y]: two numbers"),
    ("sideband_pos", ["1", 2], "parameter 'sideband_pos' must be [x, y]: two numbers"),
    ("filter_func", "HANN", 'filter_func\' must be "EDGE", "GAUSSIAN" or ["BUTTERWORTH", order]'),
    ("filter_func", ["BUTTERWORTH"], "BUTTERWORTH needs exactly one order"),
    ("filter_func", ["BUTTERWORTH", 0], "parameter 'filter_func' must be a positive number, got 0"),
    ("filter_func", ["BUTTERWORTH", "4"], "got the string \"4\""),
    ("filter_func", ["EDGE", 3], "EDGE takes no arguments"),
    ("filter_func", 14, "parameter 'filter_func' must be \"EDGE\""),
    ("mtf", [], "parameter 'mtf' must be a non-empty list of terms"),
    ("mtf", [["CONSTANT"]], "term 0 (CONSTANT) needs 1 number(s)"),
    ("mtf", [["CONSTANT", 1], ["GAUSSIAN", 0.8]], "term 1 (GAUSSIAN) needs 2 number(s)"),
    ("mtf", [["BESSEL", 1, 2]], "term 0 has unknown kind \"BESSEL\""),
    ("mtf", [["LORENTZIAN", 1, "2"]], "(term 0), got the string \"2\""),
    ("mtf", ["CONSTANT", 1], "term 0 is \"CONSTANT\""),
    ("cut_off2", [[1, 0], [0]], "parameter 'cut_off2' must be a symmetric positive-definite 2x2"),
    ("cut_off2", [[1, 0.5], [0, 1]], "it is not symmetric"),
    ("cut_off2", [[1, 0], [0, -1]], "it is not positive-definite"),
    ("cut_off2", [[1, 2], [2, 1]], "it is not positive-definite"),
    ("object_exclude", 3, "parameter 'object_exclude' must be a list of integers, got 3"),
    ("object_exclude", [1.5],
     "parameter 'object_exclude' must be a list of integers, got the fraction 1.5"),
    ("object_names", 7, "parameter 'object_names' must be a printf pattern"),
    ("object_names", [], "parameter 'object_names' must not be an empty list"),
    ("object_names", ["a.dm3", 3], "got the item 3"),
    ("empty_override", 3, "parameter 'empty_override' must be a file name (string), got 3"),
    ("camera_distortions", ["x.npy"], "parameter 'camera_distortions' must be [x-file, y-file]"),
    ("output_name", ["a.hdf5"], "parameter 'output_name' must be a file name (string)"),
    ("output_name", "", "parameter 'output_name' must be a file name, got an empty string"),
    ("output_prefix", 3, "parameter 'output_prefix' must be a string, got 3"),
    ("output_qpimage", False, "parameter 'output_qpimage' must be a file name (string), got false"),
    ("path", 1, "parameter 'path' must be a folder name (string), got 1"),
]


@pytest.mark.parametrize("key, value, message", WRONG, ids=[f"{k}={v!r}" for k, v, _ in WRONG])
def test_wrong_type_names_parameter_and_expectation(key, value, message):
    changes = {key: value}
    if key == "cut_off2":
        changes["cut_off"] = ...
    assert message in error_of(**changes)


# ---------------------------------------------------------------------------
# missing or inconsistent values
# ---------------------------------------------------------------------------

MISSING = [
    ({"cut_off": ...}, "parameter 'cut_off' (sideband radius in 1/nm) or 'cut_off2'"),
    ({"object_size": ...},
     "parameter 'object_size' (positive integer, px) is required with 'object_names'"),
    ({"object_names": "h_%d.dm3"},
     "parameter 'object_first' and 'object_last' are required with the pattern"),
    ({"object_names": "h_%d.dm3", "object_first": 1},
     "parameter 'object_last' is required with the pattern"),
    ({"object_names": ..., "empty_names": "e_%d.dm3", "empty_last": 3},
     "parameter 'empty_first' is required with the pattern empty_names = 'e_%d.dm3'"),
    ({"synthesize_empty": True},
     "parameter 'camera_distortions' ([x-file, y-file]) is required with 'synthesize_empty'"),
    ({"object_names": ...}, "nothing to do: give 'object_names'"),
    ({"object_names": None}, "nothing to do"),
    ({"object_names": ..., "object_size": ..., "empty_names": ["e.dm3"]},
     "parameter 'empty_size' (or 'object_size') is required"),
    ({"cut_off2": [[1, 0], [0, 1]]}, "parameters 'cut_off' and 'cut_off2' exclude each other"),
    ({"object_names": "h_%d.dm3", "object_first": 5, "object_last": 4},
     "parameter 'object_first' (5) must not be greater than 'object_last' (4)"),
    ({"object_names": "h_%d.dm3", "object_first": 1, "object_last": 2, "object_exclude": [1, 2]},
     "parameter 'object_exclude' removes every index of object_first..object_last (1..2)"),
    ({"object_names": "holo.dm3", "object_first": 1, "object_last": 2},
     "parameter 'object_names': pattern 'holo.dm3' has no placeholder"),
    ({"object_names": "h_%d_%d.dm3", "object_first": 1, "object_last": 2},
     "parameter 'object_names': invalid printf pattern 'h_%d_%d.dm3'"),
    ({"object_names": "h_%q.dm3", "object_first": 1, "object_last": 1},
     "invalid printf pattern 'h_%q.dm3'"),
    ({"output": "a.hdf5", "output_name": "b.hdf5"},
     "parameters 'output' (deprecated) and 'output_name' are both given"),
]


@pytest.mark.parametrize("changes, message", MISSING, ids=[m[:40] for _, m in MISSING])
def test_missing_or_inconsistent_values(changes, message):
    assert message in error_of(**changes)


# ---------------------------------------------------------------------------
# names, patterns and paths
# ---------------------------------------------------------------------------


def test_pattern_range_with_exclusions():
    p = params(object_names="img_%03d.dm3", object_first=8, object_last=12, object_exclude=[9, 11])
    assert p.object_series == SeriesSpec(
        specs=("/data/img_008.dm3", "/data/img_010.dm3", "/data/img_012.dm3"), indices=(8, 10, 12)
    )


def test_pattern_percent_escape_and_plain_d():
    p = params(object_names="100%%_%d.dm3", object_first=9, object_last=10)
    assert p.object_series.specs == ("/data/100%_9.dm3", "/data/100%_10.dm3")


def test_pattern_without_placeholder_for_one_index():
    p = params(object_names="only_100%%.dm3", object_first=4, object_last=4)
    assert p.object_series == SeriesSpec(specs=("/data/only_100%.dm3",), indices=(4,))


def test_exclude_outside_range_warns():
    with pytest.warns(UserWarning, match=r"'object_exclude': indices \[7\] lie outside"):
        p = params(object_names="h%d.dm3", object_first=1, object_last=2, object_exclude=[7])
    assert p.object_series.indices == (1, 2)


def test_list_of_names_ignores_range():
    p = params(object_names=["b.dm3", "sub/a.dm3"], object_first=5, object_last=3, object_exclude=[0])
    assert p.object_series == SeriesSpec(specs=("/data/b.dm3", "/data/sub/a.dm3"), indices=(0, 1))


def test_reader_options_are_kept_and_not_normalised():
    p = params(object_names=["folder\\s.h5?dataset=a b/c&type=h5", "s2.h5?dataset=x\\y"])
    assert p.object_series.specs == (
        "/data/folder/s.h5?dataset=a b/c&type=h5",
        "/data/s2.h5?dataset=x\\y",
    )


def test_pattern_inside_reader_options():
    p = params(object_names="stack.h5?dataset=frames/%02d", object_first=1, object_last=2)
    assert p.object_series.specs == (
        "/data/stack.h5?dataset=frames/01",
        "/data/stack.h5?dataset=frames/02",
    )


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sub\\dir/img.dm3", "/data/sub/dir/img.dm3"),
        ("sub\\\\dir\\img.dm3", "/data/sub/dir/img.dm3"),
        ("../other/img.dm3", "/other/img.dm3"),
        ("/abs/img.dm3", "/abs/img.dm3"),
        ("\\abs\\img.dm3", "/abs/img.dm3"),
        ("./a/./b.dm3", "/data/a/b.dm3"),
    ],
)
def test_both_separators(name, expected):
    assert params(object_names=[name]).object_series.specs == (expected,)


def test_path_parameter_relative_and_absolute(tmp_path):
    param_file = tmp_path / "p.json"
    param_file.write_text(
        json.dumps({**MINIMAL, "path": "raw\\day1", "empty_override": "vac.hdf5?dataset=w",
                    "camera_distortions": ["dx.npy", "/cal/dy.npy"], "output_qpimage": "q.h5",
                    "output_name": "out/result.hdf5"}),
        encoding="utf-8",
    )
    p = load_parameters(param_file)
    base = tmp_path / "raw" / "day1"
    assert p.basepath == base
    assert p.object_series.specs == (str(base / "holo.dm3"),)
    assert p.empty_override == str(base / "vac.hdf5") + "?dataset=w"
    assert p.camera_distortions == (str(base / "dx.npy"), "/cal/dy.npy")
    assert p.output_qpimage == str(base / "q.h5")
    assert p.output_name == str(base / "out" / "result.hdf5")

    p = params(base="/data", path="/elsewhere/x")
    assert p.basepath == Path("/elsewhere/x")
    assert p.object_series.specs == ("/elsewhere/x/holo.dm3",)


def test_default_output_name_ignores_path_parameter(tmp_path):
    param_file = tmp_path / "series.b.json"
    param_file.write_text(json.dumps({**MINIMAL, "path": "raw"}), encoding="utf-8")
    p = load_parameters(param_file)
    assert p.output_name == str(tmp_path / "series.b.hdf5")
    assert p.object_series.specs == (str(tmp_path / "raw" / "holo.dm3"),)


def test_path_parameter_from_stdin_is_relative_to_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({**MINIMAL, "path": "d"})))
    assert load_parameters("-").object_series.specs == (str(tmp_path / "d" / "holo.dm3"),)


def test_empty_series_pattern():
    p = params(empty_names="vac/e%d.dm3", empty_first=0, empty_last=2, empty_exclude=[1], empty_size=64)
    assert p.empty_series == SeriesSpec(specs=("/data/vac/e0.dm3", "/data/vac/e2.dm3"), indices=(0, 2))
    assert p.empty_size == 64
    assert p.object_size == 256


def test_names_match_reference_expansion():
    main = pytest.importorskip("holoaverage.main", reason="reference program not installed")
    pattern, first, last, exclude = "h_%04d.dm3", 3, 9, [4, 8]
    p = params(object_names=pattern, object_first=first, object_last=last, object_exclude=exclude)
    names = main.join_path_list(main.expand_file_names(pattern, first, last, exclude), "/data")
    assert list(p.object_series.specs) == names


# ---------------------------------------------------------------------------
# defaults and derived values
# ---------------------------------------------------------------------------


def test_defaults_of_every_parameter():
    p = params()
    expected = {
        "object_series": SeriesSpec(specs=("/data/holo.dm3",), indices=(0,)),
        "empty_series": None,
        "empty_override": None,
        "synthesize_empty": False,
        "camera_distortions": None,
        "object_size": 256,
        "empty_size": 256,  # object_size
        "roi": None,
        "align_roi": None,
        "sampling_nm": None,
        "voltage_kV": None,
        "binning": None,
        "sideband_pos_px": (314.0, 134.0),
        "cut_off_given": True,
        "align_cut_off_per_nm": 0.07,
        "filter_func": FilterSpec("EDGE", None),
        "mtf": None,
        "adjust_defocus": False,
        "adjust_shift": True,
        "adjust_tilt": False,
        "enable_raw_alignment": True,
        "only_phase": False,
        "only_align": False,
        "defocus_first_nm": 0.0,
        "defocus_step_nm": 0.0,
        "output_name": None,
        "output_prefix": "",
        "output_series": False,
        "output_aligned": False,
        "output_series_as_dataset": False,
        "output_qpimage": None,
        "outlier_cutoff": None,
        "basepath": Path("/data"),
        "parameter_file": None,
        "raw": MINIMAL,
    }
    for name, value in expected.items():
        assert getattr(p, name) == value, name
    np.testing.assert_allclose(p.cut_off2_per_nm2, [[0.07**2, 0], [0, 0.07**2]], rtol=1e-15)
    assert p.cut_off_per_nm == pytest.approx(0.07, rel=1e-12)
    assert p.align_roi_or_roi is None
    assert p.filter_func.as_attribute() == ["EDGE"]


def test_given_values_are_typed():
    p = params(
        object_size=384.0, empty_size=192, binning=2, sampling=0.9197516, voltage=300,
        roi=[10, 20, 394, 404], align_roi=[0, 0, 512, 512], defocus_first=-120.5, defocus_step=20,
        filter_func=["butterworth", 14], mtf=[["GAUSSIAN", 0.8, 0.03], ["constant", 0.2]],
        adjust_defocus=True, adjust_shift=False, adjust_tilt=True, enable_raw_alignment=False,
        only_phase=True, output_series=True, output_series_as_dataset=True, output_prefix="a/b_",
        align_cut_off=0.03, outlier_cutoff=6, output_name="out\\r.hdf5",
    )
    assert (p.object_size, p.empty_size, p.binning) == (384, 192, 2)
    assert type(p.object_size) is int
    assert (p.sampling_nm, p.voltage_kV) == (0.9197516, 300.0)
    assert p.roi == (10, 20, 394, 404)
    assert p.align_roi == (0, 0, 512, 512)
    assert p.align_roi_or_roi == (0, 0, 512, 512)
    assert (p.defocus_first_nm, p.defocus_step_nm) == (-120.5, 20.0)
    assert p.filter_func == FilterSpec("BUTTERWORTH", 14.0)
    assert p.filter_func.as_attribute() == ["BUTTERWORTH", "14"]
    assert p.mtf == (MtfTerm("GAUSSIAN", (0.8, 0.03)), MtfTerm("CONSTANT", (0.2,)))
    assert (p.adjust_defocus, p.adjust_shift, p.adjust_tilt) == (True, False, True)
    assert (p.enable_raw_alignment, p.only_phase, p.output_series) == (False, True, True)
    assert p.output_series_as_dataset is True
    assert p.output_prefix == "a/b_"
    assert p.align_cut_off_per_nm == 0.03
    assert p.outlier_cutoff == 6.0
    assert p.output_name == "/data/out/r.hdf5"


@pytest.mark.parametrize(
    "value, kind", [("EDGE", "EDGE"), ("gaussian", "GAUSSIAN"), (["GAUSSIAN"], "GAUSSIAN")]
)
def test_filter_names(value, kind):
    assert params(filter_func=value).filter_func == FilterSpec(kind, None)


def test_roi_defaults_align_roi():
    p = params(roi=[1, 2, 3, 4])
    assert p.align_roi is None
    assert p.align_roi_or_roi == (1, 2, 3, 4)


def test_cut_off2_and_align_cut_off_as_the_reference_computes():
    a, b = 0.2, 0.05  # radii along x and y, 1/nm
    p = params(cut_off=..., cut_off2=[[a**2, 0], [0, b**2]])
    np.testing.assert_allclose(p.cut_off2_per_nm2, [[0.04, 0], [0, 0.0025]])
    assert p.cut_off_given is False
    # sqrt(det(cut_off2)) = a * b (what the reference program uses), not sqrt(a * b)
    assert p.align_cut_off_per_nm == pytest.approx(a * b, rel=1e-12)
    assert p.cut_off_per_nm == pytest.approx(np.sqrt(a * b), rel=1e-12)


def test_rotated_cut_off2_is_accepted():
    alpha = np.deg2rad(30.0)
    rot = np.array([[np.cos(alpha), np.sin(alpha)], [-np.sin(alpha), np.cos(alpha)]])
    matrix = rot.T @ np.diag([0.09, 0.01]) @ rot
    p = params(cut_off=..., cut_off2=matrix.tolist())
    np.testing.assert_allclose(p.cut_off2_per_nm2, matrix, rtol=1e-14)
    assert p.align_cut_off_per_nm == pytest.approx(0.03, rel=1e-12)


def test_only_align_makes_output_aligned_default_true():
    assert params(only_align=True).output_aligned is True
    assert params(only_align=True, output_aligned=False).output_aligned is False
    assert params(output_aligned=True).output_aligned is True


def test_null_counts_as_absent():
    p = params(roi=None, sampling=None, filter_func=None, output_prefix=None)
    assert (p.roi, p.sampling_nm, p.filter_func, p.output_prefix) == (None, None, FilterSpec(), "")


def test_null_align_roi_switches_raw_alignment_off():
    with pytest.warns(DeprecationWarning, match="'align_roi' to null is deprecated"):
        p = params(align_roi=None)
    assert p.enable_raw_alignment is False
    assert p.align_roi is None


def test_empty_override_and_synthesize_empty_take_precedence():
    with pytest.warns(UserWarning, match="'empty_names' is ignored because 'empty_override' is given"):
        p = params(empty_override="w.hdf5?dataset=empty", empty_names=["e.dm3"])
    assert (p.empty_override, p.empty_series) == ("/data/w.hdf5?dataset=empty", None)

    with pytest.warns(UserWarning, match="'empty_override' is ignored because 'synthesize_empty'"):
        p = params(synthesize_empty=True, camera_distortions=["dx.npy", "dy.npy"], empty_override="w.h5")
    assert p.synthesize_empty is True
    assert p.empty_override is None
    assert p.camera_distortions == ("/data/dx.npy", "/data/dy.npy")


def test_empty_override_alone_is_something_to_do():
    p = params(object_names=..., object_size=..., empty_override="w.hdf5")
    assert (p.object_series, p.empty_override, p.empty_size) == (None, "/data/w.hdf5", None)


# ---------------------------------------------------------------------------
# output alias and provenance
# ---------------------------------------------------------------------------


def test_output_alias_is_deprecated(tmp_path):
    with pytest.warns(DeprecationWarning, match="parameter 'output' is deprecated; use 'output_name'"):
        p = params(output="res\\avg.hdf5")
    assert p.output_name == "/data/res/avg.hdf5"


def test_parameters_json_keeps_raw_and_adds_default_output_name(tmp_path):
    text = '{"object_names": ["holo.dm3"], // c\n "object_size": 256, "sideband_pos": [314, 134],' \
           ' "cut_off": 0.07, "output_prefix": "ä",}'
    param_file = tmp_path / "p.json"
    param_file.write_text(text, encoding="utf-8")
    p = load_parameters(param_file)
    out = parameters_json(p)
    default_output = str(tmp_path / "p.hdf5")
    assert json.loads(out) == {**MINIMAL, "output_prefix": "ä", "output_name": default_output}
    assert '"output_prefix": "\\u00e4"' in out  # plain ASCII JSON like the reference
    assert p.raw == {**MINIMAL, "output_prefix": "ä"}


def test_parameters_json_of_dict_is_raw():
    p = params(output_name="x.hdf5")
    assert json.loads(parameters_json(p)) == {**MINIMAL, "output_name": "x.hdf5"}
    assert p.output_name == "/data/x.hdf5"


def test_raw_is_a_copy():
    mapping = {**MINIMAL, "roi": [0, 0, 8, 8]}
    p = parse_parameters(mapping, "/data")
    mapping["roi"][2] = 99
    assert p.raw["roi"] == [0, 0, 8, 8]
    assert p.roi == (0, 0, 8, 8)


def test_error_message_is_one_clear_line():
    message = error_of(object_size="big")
    assert message == (
        "parameter 'object_size' must be a positive integer, got the string \"big\" "
        "(write numbers without quotes)"
    )


def test_sideband_pos_may_be_left_out_to_be_found():
    """Without sideband_pos the reconstruction finds it on the first hologram (holodask.find_sideband)."""
    assert params(sideband_pos=...).sideband_pos_px is None
    assert params().sideband_pos_px is not None
