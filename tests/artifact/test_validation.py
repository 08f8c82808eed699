"""Records checked against schema.json and built back into the frame the model was trained on."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nbmlops.artifact.frames import to_records
from nbmlops.artifact.schema import infer_schema
from nbmlops.artifact.validation import Validator
from nbmlops.errors import UsageError, ValidationError


@pytest.fixture
def training() -> pd.DataFrame:
    n = 40
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "amount": rng.normal(100, 10, n).round(2),
            "calls": rng.integers(0, 9, n),
            "calls_or_missing": pd.array([None if i % 7 == 0 else i for i in range(n)], "Int64"),
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], n)),
            "city": pd.array(rng.choice(["oslo", "lima", None], n), dtype="string"),
            "region": pd.array(rng.choice(["east", "west"], n), dtype="str"),
            "flag": rng.random(n) < 0.5,
            "when": pd.date_range("2026-01-01", periods=n, freq="h"),
        }
    )


def validator(training: pd.DataFrame, unknown: str = "reject") -> Validator:
    predictions = pd.Series(np.zeros(len(training), dtype=int))
    schema = infer_schema(training, "classification", predictions, [0, 1])
    return Validator(schema, unknown)


def as_records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))


@pytest.mark.parametrize("rows", [1, 3, 40])
def test_records_build_back_with_the_training_dtypes_and_values(training, rows):
    part = training.iloc[:rows]
    built = validator(training).frame(as_records(part))
    assert list(built.columns) == list(training.columns)
    for name in training.columns:
        want, got = part[name], built[name]
        assert got.dtype == want.dtype, name
        assert got.tolist() == want.tolist(), name
    assert list(built["plan"].cat.categories) == ["basic", "plus", "pro"]


def test_an_unknown_policy_is_a_usage_error_naming_it(training):
    with pytest.raises(UsageError, match="not 'maybe'") as info:
        validator(training, "maybe")
    assert "\n" not in str(info.value)


def test_unseen_categories_are_named_or_kept_when_allowed(training):
    record = as_records(training.iloc[:1])[0] | {"plan": "enterprise"}
    with pytest.raises(ValidationError) as caught:
        validator(training).frame([record])
    (problem,) = caught.value.problems
    assert (problem.record, problem.field) == (0, "plan") and "never seen" in problem.message
    built = validator(training, "allow").frame([record, as_records(training.iloc[1:2])[0]])
    assert built["plan"].tolist()[0] == "enterprise"
    assert list(built["plan"].cat.categories)[:3] == ["basic", "plus", "pro"]


def test_each_bad_value_is_named_by_record_and_field(training):
    good = as_records(training.iloc[:2])
    bad = [good[0] | {"amount": "lots", "flag": 1}, good[1] | {"calls": 2.5, "region": None}]
    with pytest.raises(ValidationError) as caught:
        validator(training).frame(bad)
    named = {(p.record, p.field) for p in caught.value.problems}
    assert named == {(0, "amount"), (0, "flag"), (1, "calls"), (1, "region")}


def test_frames_of_the_training_dtypes_pass_and_loose_dtypes_too(training):
    validator(training).check_frame(training)
    loose = training.astype({"amount": object, "flag": object, "plan": str})
    loose["calls"] = loose["calls"].astype(float)  # whole numbers as floats are fine
    validator(training).check_frame(loose)


def test_each_bad_row_of_a_frame_is_named_by_position_and_column(training):
    bad = training.iloc[:6].astype({"amount": object, "flag": object, "plan": str}).copy()
    bad["calls"] = bad["calls"].astype(float)
    bad.iloc[1, bad.columns.get_loc("amount")] = "lots"
    bad.iloc[2, bad.columns.get_loc("calls")] = 2.5
    bad.iloc[3, bad.columns.get_loc("flag")] = "yes"
    bad.iloc[4, bad.columns.get_loc("plan")] = "enterprise"
    bad.iloc[5, bad.columns.get_loc("region")] = None
    with pytest.raises(ValidationError) as caught:
        validator(training).check_frame(bad.drop(columns=["when"]))
    named = {(p.record, p.field) for p in caught.value.problems}
    assert named == {
        (None, "when"),
        (1, "amount"),
        (2, "calls"),
        (3, "flag"),
        (4, "plan"),
        (5, "region"),
    }
    allowed = validator(training, "allow")
    with pytest.raises(ValidationError) as caught:
        allowed.check_frame(bad)
    assert (4, "plan") not in {(p.record, p.field) for p in caught.value.problems}


BAD_VALUES = [
    ("amount", float("nan")),
    ("amount", float("inf")),
    ("amount", True),
    ("amount", "lots"),
    ("amount", 10**400),
    ("amount", None),
    ("calls", 2.5),
    ("calls", 2**63),
    ("calls", False),
    ("calls", "3"),
    ("calls_or_missing", 1.5),
    ("plan", "enterprise"),
    ("plan", 3),
    ("city", 5),
    ("city", ["oslo"]),
    ("region", None),
    ("flag", 1),
    ("flag", None),
    ("unknown_field", 1),
]


@pytest.mark.parametrize("field, value", BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_one_bad_value_among_many_good_records_is_named(training, field, value):
    records = as_records(training.iloc[:30])
    records[17] = records[17] | {field: value}
    with pytest.raises(ValidationError) as caught:
        validator(training).check(records)
    assert [(p.record, p.field) for p in caught.value.problems] == [(17, field)]


def test_good_records_in_every_accepted_spelling_pass(training):
    records = as_records(training.iloc[:30])
    records[3] |= {"amount": 7, "calls": 4.0, "calls_or_missing": None, "city": None}
    records[4] |= {"amount": 1e300, "calls": 2**63 - 1, "when": "2026-02-01T00:00:00"}
    validator(training).check(records)
    with pytest.raises(ValidationError, match="missing field"):
        validator(training).check(
            records[:5] + [{k: v for k, v in records[5].items() if k != "plan"}]
        )
    with pytest.raises(ValidationError, match="must be a JSON object"):
        validator(training).check(records[:5] + [["not", "a", "record"]])


def test_categories_other_than_strings_are_checked_value_by_value():
    training = pd.DataFrame({"tier": pd.Categorical([1, 2, 3, 1]), "x": [0.1, 0.2, 0.3, 0.4]})
    checker = validator(training)
    checker.check([{"tier": 2, "x": 1.0}])
    for value, words in (
        ([1], "expected a category"),
        ({"a": 1}, "expected a category"),
        (4, "never seen"),
    ):
        with pytest.raises(ValidationError, match=words):
            checker.check([{"tier": value, "x": 1.0}])


@pytest.fixture
def exotic() -> pd.DataFrame:
    """Dtypes whose rebuilding goes wrong quietly: order, zones, widths, nullable booleans."""
    n = 12
    return pd.DataFrame(
        {
            "size": pd.Categorical(
                ["small", "large", "medium"] * 4,
                categories=["small", "medium", "large"],
                ordered=True,
            ),
            "level": pd.Categorical([3, 1, 2] * 4, categories=[3, 1, 2]),
            "at": pd.date_range("2026-03-29 00:00", periods=n, freq="h", tz="Europe/Paris"),
            "naive_ns": pd.date_range("2026-01-01", periods=n, freq="D").as_unit("ns"),
            "small_int": np.arange(n, dtype=np.int16),
            "ratio": np.linspace(0, 1, n, dtype=np.float32),
            "maybe": pd.array([True, False, None] * 4, dtype="boolean"),
        }
    )


def test_exotic_dtypes_build_back_exactly_codes_included(exotic):
    check = validator(exotic)
    built = check.frame(to_records(exotic))
    for name in exotic.columns:
        assert built[name].dtype == exotic[name].dtype, name
        assert built[name].tolist() == exotic[name].tolist(), name
    assert built["size"].cat.codes.tolist() == exotic["size"].cat.codes.tolist()
    assert built["level"].cat.codes.tolist() == exotic["level"].cat.codes.tolist()
    # batches assembled from requests built one by one are the same frame
    parts = [check.builder.columns([r]) for r in to_records(exotic)]
    pd.testing.assert_frame_equal(check.builder.frame(parts), built)


def test_a_zoned_column_converts_offsets_and_refuses_naive_times(exotic):
    check = validator(exotic)
    record = to_records(exotic.iloc[:1])[0]
    built = check.frame([{**record, "at": "2026-03-28T23:00:00Z"}])
    assert built["at"].iloc[0] == exotic["at"].iloc[0]  # midnight in Paris
    with pytest.raises(ValidationError, match="no time zone, but the column was trained in"):
        check.check([{**record, "at": "2026-03-29T00:00:00"}])
    with pytest.raises(
        ValidationError, match="has a time zone, but the column was trained without"
    ):
        check.check([{**record, "naive_ns": "2026-01-01T00:00:00+01:00"}])


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("small_int", 40_000, "out of range: the column holds int16"),
        ("ratio", 1e39, "out of range: the column holds float32"),
        ("naive_ns", "2300-01-01T00:00:00", "outside the range a datetime64[ns]"),
        ("maybe", "yes", "expected true or false"),
        ("level", [3], "expected a category"),
    ],
)
def test_values_beyond_what_the_dtype_holds_are_named(exotic, field, value, words):
    record = to_records(exotic.iloc[:1])[0]
    with pytest.raises(ValidationError) as caught:
        validator(exotic).check([{**record, field: value}])
    (problem,) = caught.value.problems
    assert problem.field == field and words in problem.message


def test_missing_datetimes_may_be_spelled_as_pandas_writes_them(exotic):
    frame = exotic.assign(naive_ns=exotic["naive_ns"].where(exotic.index % 2 == 0))
    record = to_records(frame.iloc[1:2])[0] | {"naive_ns": "NaT"}
    assert validator(frame).frame([record])["naive_ns"].isna().all()


def test_a_frame_is_conformed_to_the_training_dtypes(exotic):
    check = validator(exotic)
    loose = exotic.astype({"size": "str", "at": "str"}).astype({"size": "category"})
    assert list(loose["size"].cat.categories) == ["large", "medium", "small"]  # sorted
    check.check_frame(loose)
    conformed = check.builder.conform(loose)
    assert conformed["size"].cat.codes.tolist() == exotic["size"].cat.codes.tolist()
    assert conformed["at"].tolist() == exotic["at"].tolist()
    with pytest.raises(ValidationError, match="trained in Europe/Paris"):
        check.check_frame(exotic.assign(at=exotic["at"].dt.tz_localize(None)))


def test_a_boolean_is_not_taken_for_a_number_category(exotic):
    record = to_records(exotic.iloc[:1])[0]
    with pytest.raises(ValidationError, match="expected a category, got a boolean"):
        validator(exotic).check([{**record, "level": True}])  # True == 1 in Python
