"""Schema and reference profile inferred from raw frames, and their on-disk formats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import nbmlops
from nbmlops.artifact.lineage import data_hash
from nbmlops.artifact.profile import SAMPLE_SIZE, Profile, build_profile
from nbmlops.artifact.schema import Schema, column_kinds, infer_schema
from nbmlops.errors import ArtifactError, UsageError, ValidationError
from nbmlops.registry.registry import Registry


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 5000
    return pd.DataFrame(
        {
            "amount": np.where(rng.random(n) < 0.1, np.nan, rng.normal(100, 10, n)),
            "constant": np.full(n, 7.0),
            "all_null": np.full(n, np.nan),
            "city": pd.array(rng.choice(["oslo", "lima", None], n), dtype="string"),
            "free_text": [f"note {i}" for i in range(n)],
            "flag": rng.random(n) < 0.3,
            "when": pd.date_range("2026-01-01", periods=n, freq="h"),
        }
    )


def outputs_for(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"prediction": (frame["amount"].fillna(0) > 100).astype(int)})


def test_schema_kinds_nullability_ranges_and_categories(frame):
    schema = infer_schema(frame, "classification", outputs_for(frame)["prediction"], [0, 1])
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {
        "amount": "numeric",
        "constant": "numeric",
        "all_null": "numeric",
        "city": "categorical",
        "free_text": "text",
        "flag": "boolean",
        "when": "datetime",
    }
    amount = schema.column("amount")
    assert amount.nullable and amount.min == pytest.approx(frame["amount"].min())
    assert not schema.column("constant").nullable
    assert schema.column("city").categories == ("lima", "oslo")
    assert schema.column("free_text").categories is None
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def test_profile_bins_frequencies_nulls_and_bounded_sample(frame):
    profile = build_profile(frame, outputs_for(frame))
    amount = profile.column("amount")
    assert amount.null_rate == pytest.approx(frame["amount"].isna().mean())
    assert sum(amount.bin_counts) == frame["amount"].notna().sum()
    assert list(amount.bin_edges) == sorted(amount.bin_edges)
    assert len(amount.sample) == SAMPLE_SIZE
    assert abs(amount.stats["mean"] - frame["amount"].mean()) < 1e-9

    constant = profile.column("constant")
    assert constant.bin_edges == (7.0,) and constant.bin_counts == (len(frame),)
    assert profile.column("all_null").null_rate == 1.0
    assert profile.column("all_null").bin_edges is None

    city = profile.column("city")
    assert set(city.frequencies) == {"oslo", "lima"}
    assert sum(city.frequencies.values()) + city.null_rate * len(frame) == len(frame)
    assert profile.column("flag").frequencies["True"] == frame["flag"].sum()
    assert profile.predictions[0].name == "prediction"
    when = profile.column("when")
    assert when.stats["min"] == pd.Timestamp("2026-01-01").timestamp()

    restored = Profile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert restored == profile


@pytest.mark.parametrize("cls, file", [(Schema, "schema.json"), (Profile, "profile.json")])
def test_newer_format_versions_are_refused_with_upgrade_advice(frame, cls, file):
    if cls is Schema:
        data = infer_schema(frame, "regression", outputs_for(frame)["prediction"], None).to_dict()
    else:
        data = build_profile(frame, outputs_for(frame)).to_dict()
    data["format_version"] = 99
    with pytest.raises(ArtifactError, match=f"{file} has format version 99.*Upgrade nbmlops"):
        cls.from_dict(data)


def test_data_hash_tracks_content_not_index(frame):
    shuffled_index = frame.set_axis(np.arange(len(frame))[::-1])
    assert data_hash(frame) == data_hash(shuffled_index)
    changed = frame.copy()
    changed.loc[3, "amount"] = 1.0
    assert data_hash(changed) != data_hash(frame)
    assert data_hash(frame.rename(columns={"amount": "amt"})) != data_hash(frame)


def test_format_1_schemas_are_still_read():
    old = {
        "format_version": 1,
        "task": "classification",
        "columns": [
            {
                "name": "plan",
                "dtype": "category",
                "kind": "categorical",
                "nullable": False,
                "min": None,
                "max": None,
                "categories": ["basic", "pro"],
            },
            {
                "name": "when",
                "dtype": "datetime64[ns, UTC]",
                "kind": "datetime",
                "nullable": True,
                "min": None,
                "max": None,
                "categories": None,
            },
        ],
        "output": {"dtype": "int64", "classes": [0, 1]},
    }
    schema = Schema.from_dict(old)
    plan, when = schema.columns
    assert plan.categories == ("basic", "pro") and not plan.ordered and plan.max_abs is None
    assert (when.unit, when.tz) == ("ns", "UTC")
    assert schema.format_version == 1


def test_a_categorical_keeps_its_own_order_and_flag():
    frame = pd.DataFrame(
        {"size": pd.Categorical(["b", "a"], categories=["b", "c", "a"], ordered=True)}
    )
    schema = infer_schema(frame, "regression", pd.Series([0.0, 1.0]), None)
    (size,) = schema.columns
    assert size.categories == ("b", "c", "a") and size.ordered
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


# -- which text columns are categories ---------------------------------------------------------


def customers(n: int, seed: int) -> pd.DataFrame:
    """A small table: a unique id, a name (some repeat), a city (three), an amount."""
    rng = np.random.default_rng(seed)
    names = [f"name {i}" for i in rng.integers(0, 3 * n // 4, n)]
    return pd.DataFrame(
        {
            "customer_id": [f"c{seed}-{i:04d}" for i in range(n)],
            "name": names,
            "city": rng.choice(["oslo", "lima", "kyiv"], n),
            "plan": pd.Categorical([f"p{i}" for i in range(n)]),
            "amount": rng.normal(0, 1, n),
        }
    )


def test_ids_and_names_in_a_small_training_set_are_free_text():
    frame = customers(40, seed=0)
    schema = infer_schema(frame, "regression", frame["amount"], None)
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {
        "customer_id": "text",  # 40 distinct of 40
        "name": "text",  # each name seen less than twice on average
        "city": "categorical",
        "plan": "categorical",  # a pandas Categorical, whatever its values
        "amount": "numeric",
    }
    assert schema.column("customer_id").categories is None
    assert schema.column("city").categories == ("kyiv", "lima", "oslo")
    profile = build_profile(frame, outputs_for(frame.assign(amount=frame["amount"] * 100)))
    assert profile.column("customer_id").kind == "text"


def test_the_user_chooses_categories_and_free_text():
    frame = customers(40, seed=0)
    kinds = column_kinds(frame, categorical=["name"], free_text=["city"])
    assert (kinds["name"], kinds["city"], kinds["customer_id"]) == ("categorical", "text", "text")
    schema = infer_schema(frame, "regression", frame["amount"], None, kinds)
    assert schema.column("city").categories is None
    assert len(schema.column("name").categories) == frame["name"].nunique()
    assert build_profile(frame, outputs_for(frame), kinds=kinds).column("city").kind == "text"


@pytest.mark.parametrize(
    "categorical, free_text, words",
    [
        (["nope"], [], "'nope', which --data does not have; its columns are customer_id, name"),
        ([], ["city", "Name"], "'Name', which --data does not have"),
        (["city"], ["city"], "both name city"),
        (["amount"], [], "--categorical amount: the column is numeric (float64)"),
        ([], ["plan"], "--free-text plan: the column is a pandas Categorical"),
    ],
)
def test_a_wrong_choice_is_a_usage_error_naming_it(categorical, free_text, words):
    with pytest.raises(UsageError) as info:
        column_kinds(customers(40, seed=0), categorical, free_text)
    assert words in str(info.value)


def _fit(frame: pd.DataFrame):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    return make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["city"]), ("passthrough", ["amount"])
        ),
        LogisticRegression(),
    ).fit(frame, frame["amount"] > 0)


def test_a_packaged_id_column_takes_new_ids_and_the_card_says_how_to_choose(settings):
    train, new = customers(40, seed=0), customers(5, seed=1).drop(columns="plan")
    train = train.drop(columns="plan")
    clf = _fit(train)
    nbmlops.package("ids", clf, train, settings=settings)
    model = nbmlops.load("ids@v1", settings)
    assert len(model.predict(new)) == 5, "new customer ids and names are accepted"
    with pytest.raises(ValidationError, match="'paris' is a category never seen in training"):
        model.predict(new.assign(city="paris"))
    text, page = model.card.to_text(), model.card.to_html()
    for shown in (text, page, (model.path / "card.md").read_text()):
        assert "Taken as categories (a value training never saw is refused): city." in shown
        assert "Taken as free text (any string is accepted): customer_id, name." in shown
        assert "--categorical COL ... or --free-text COL ..." in shown

    nbmlops.package("ids", clf, train, categorical=["customer_id"], settings=settings)
    chosen = nbmlops.load("ids@v2", settings)
    assert chosen.schema.column("customer_id").kind == "categorical"
    with pytest.raises(ValidationError, match="customer_id"):
        chosen.predict(new)
    assert "Taken as categories (a value training never saw is refused): customer_id, city." in (
        chosen.card.to_text()
    )
    with pytest.raises(UsageError, match="'customer'"):
        nbmlops.package("ids", clf, train, free_text=["customer"], settings=settings)
    assert [v.version for v in Registry(settings).versions("ids")] == ["1", "2"]


KERNEL_SETUP = """
%load_ext nbmlops
import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

X = pd.DataFrame({
    "customer_id": [f"c{i}" for i in range(40)],
    "name": [f"name {i % 30}" for i in range(40)],
    "city": ["oslo", "lima", "kyiv", "oslo"] * 10,
    "amount": np.linspace(-1, 1, 40),
})
"""
KERNEL_FIT = """
clf = make_pipeline(
    make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["city"]), ("passthrough", ["amount"])
    ),
    LogisticRegression(),
).fit(X, X["amount"] > 0)
"""


def test_the_magic_passes_categorical_and_free_text(run_cells, settings):
    magic = "%%mlops_package ids --model clf --data X "
    run_cells(KERNEL_SETUP, magic + "--free-text city --categorical name" + KERNEL_FIT)
    kinds = {c.name: c.kind for c in nbmlops.load("ids", settings).schema.columns}
    assert (kinds["city"], kinds["name"], kinds["customer_id"]) == ("text", "categorical", "text")

    _, error = run_cells(KERNEL_SETUP, magic + "--free-text town" + KERNEL_FIT, expect_error=True)
    assert error.ename == "UsageError"
    assert "'town', which --data does not have; its columns are customer_id" in error.evalue
    assert [v.version for v in Registry(settings).versions("ids")] == ["1"]
