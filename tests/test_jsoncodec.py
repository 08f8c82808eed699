"""JSON for answers and the prediction log: always valid JSON, whatever the model returns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nbmlops import jsoncodec


def test_nan_and_infinities_are_null_and_numpy_values_are_numbers():
    value = {"p": float("nan"), "q": [float("inf"), np.float64(0.25)], "n": np.int64(3)}
    text = jsoncodec.dumps(value)
    assert json.loads(text) == {"p": None, "q": [None, 0.25], "n": 3}
    assert json.loads(jsoncodec.dumps(np.array([1.5, np.nan]))) == [1.5, None]


def test_what_orjson_refuses_still_encodes():
    value = {"big": 10**30, "x": float("nan"), 7: "seven"}
    assert json.loads(jsoncodec.dumps(value)) == {"big": 10**30, "x": None, "7": "seven"}


@pytest.mark.parametrize("text", [b"\xff", b"{", b'{"a": 1,}', b"[1, 2"])
def test_parsing_refuses_what_is_not_json(text):
    with pytest.raises(jsoncodec.DecodeError):
        jsoncodec.loads(text)


def test_nan_is_missing_and_what_no_float_holds_is_kept_to_be_named():
    value = jsoncodec.loads(b'{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1e400, "e": 1.5}')
    assert value["a"] is None and value["e"] == 1.5
    assert [repr(value[k]) for k in "bcd"] == ["Infinity", "-Infinity", "1e400"]
    assert all(isinstance(value[k], jsoncodec.NonFinite) for k in "bcd")


@pytest.mark.parametrize(
    "text",
    [
        b'{"records": [{"t": "10:00:00", "x": 1}, {"x": 2, "x": 3}]}',
        b'{"records": [{"t": "a\\u003ab", "x": 1}, {"x": 2, "x": 3}]}',
        b'{"x": 2, "x": 3}',
    ],
)
def test_a_key_given_twice_is_named_wherever_it_is(text):
    value = jsoncodec.loads(text)
    marked = value["records"][1] if "records" in value else value
    assert jsoncodec.duplicates(marked) == ("x",) and marked == {"x": 3}


def test_colons_inside_strings_are_not_taken_for_repeated_keys():
    value = jsoncodec.loads(b'{"t": "2026-01-01T10:00:00", "k:v": "a\\u003ab"}')
    assert value == {"t": "2026-01-01T10:00:00", "k:v": "a:b"}
    assert type(value) is dict
