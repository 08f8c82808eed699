"""Which feedback labels a model can be judged on, and what /feedback says about the others."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbmlops.artifact.labels import accepted, label_problems, usable
from nbmlops.artifact.schema import Schema
from nbmlops.jsoncodec import NonFinite

INTEGERS = Schema(columns=(), task="classification", output_dtype="int64", classes=(0, 1))
STRINGS = Schema(columns=(), task="classification", output_dtype="object", classes=("no", "yes"))
BOOLEANS = Schema(columns=(), task="classification", output_dtype="bool", classes=(False, True))
REGRESSION = Schema(columns=(), task="regression", output_dtype="float64")

REFUSED_BY_INTEGERS = ["yes", "1", [1, 2], {"a": 1}, 1.5, True, False, None, 2, -1]


def test_integer_classes_take_their_numbers_and_refuse_the_rest_naming_each_id():
    items = [("a", 0), ("b", 1), ("c", 1.0), ("d", 0.0)]
    items += [(f"bad{i}", label) for i, label in enumerate(REFUSED_BY_INTEGERS)]
    problems = label_problems(INTEGERS, items)
    assert [p.record for p in problems] == list(range(4, len(items)))
    assert {p.field for p in problems} == {"label"}
    by_id = {p.message.split("'")[1]: p.message for p in problems}
    assert by_id["bad0"] == (
        "id 'bad0': label 'yes' is not one of the model's classes (0, 1): "
        "it is a string, the classes are numbers"
    )
    assert by_id["bad2"].startswith("id 'bad2': label [1,2] is not one of the model's classes")
    assert 'label {"a":1} is not' in by_id["bad3"]
    assert by_id["bad4"] == "id 'bad4': label 1.5 is not one of the model's classes (0, 1)"
    assert "label true" in by_id["bad5"] and "it is a boolean" in by_id["bad5"]
    assert "label null" in by_id["bad7"]


def test_string_and_boolean_classes_want_their_own_json_type():
    assert label_problems(STRINGS, [("a", "yes"), ("b", "no")]) == []
    refused = label_problems(STRINGS, [("a", "Yes"), ("b", 1), ("c", True)])
    assert [p.record for p in refused] == [0, 1, 2]
    assert refused[0].message == (
        "id 'a': label 'Yes' is not one of the model's classes ('no', 'yes')"
    )
    assert label_problems(BOOLEANS, [("a", True), ("b", False)]) == []
    refused = label_problems(BOOLEANS, [("a", 1), ("b", "true"), ("c", 0.0)])
    assert [p.record for p in refused] == [0, 1, 2]
    assert "(false, true)" in refused[0].message
    assert "the classes are booleans" in refused[0].message


def test_a_regressor_takes_finite_numbers_only():
    fine = [("a", 1), ("b", -2.5), ("c", 0), ("d", 10**30)]
    assert label_problems(REGRESSION, fine) == []
    bad = [("a", True), ("b", "3.5"), ("c", None), ("d", [1]), ("e", float("inf")), ("f", 10**400)]
    problems = label_problems(REGRESSION, bad)
    assert [p.record for p in problems] == list(range(len(bad)))
    assert problems[1].message == (
        "id 'b': label '3.5' is not a finite number (the model is a regressor)"
    )
    assert "label Infinity" in problems[4].message


def test_what_the_parser_hands_over_for_a_non_finite_number_is_refused():
    for schema in (INTEGERS, REGRESSION):
        (problem,) = label_problems(schema, [("x", NonFinite("Infinity"))])
        assert problem.message.startswith("id 'x': label Infinity is not ")
        assert accepted(schema) in problem.message
    assert label_problems(INTEGERS, [("x", object())])[0].record == 0


def test_long_class_lists_and_labels_are_shortened():
    many = Schema(columns=(), task="classification", output_dtype="int64", classes=tuple(range(30)))
    (problem,) = label_problems(many, [("x", "z" * 500)])
    assert "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (30 classes)" in problem.message
    assert len(problem.message) < 200


@pytest.mark.parametrize(
    ("schema", "values", "expected"),
    [
        (INTEGERS, pd.Series([0, 1, 1, 0]), [True] * 4),
        (INTEGERS, pd.Series([0.0, 1.0, np.nan, 2.0]), [True, True, False, False]),
        (INTEGERS, [0, 1, 1.0, *REFUSED_BY_INTEGERS], [True] * 3 + [False] * 10),
        (INTEGERS, pd.Series([True, False]), [False, False]),
        (STRINGS, pd.Series(["no", "yes", None, "maybe"]), [True, True, False, False]),
        (STRINGS, ["no", 1, ["yes"]], [True, False, False]),
        (BOOLEANS, [True, False, 1, None], [True, True, False, False]),
        (REGRESSION, pd.Series([1.5, np.nan, np.inf, 3]), [True, False, False, True]),
        (REGRESSION, [1, 2.5, True, "3", None, 10**400], [True, True, False, False, False, False]),
    ],
)
def test_usable_agrees_with_label_problems(schema, values, expected):
    mask = usable(schema, values)
    assert mask.dtype == bool and mask.tolist() == expected
    items = [(str(i), v) for i, v in enumerate(values)]
    refused = {p.record for p in label_problems(schema, items)}
    assert refused == {i for i, ok in enumerate(expected) if not ok}
