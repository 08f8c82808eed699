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


@pytest.mark.parametrize("text", [b'{"a": NaN}', b"[1e400]", b"\xff", b"{"])
def test_parsing_refuses_what_json_cannot_spell(text):
    with pytest.raises(jsoncodec.DecodeError):
        jsoncodec.loads(text)
