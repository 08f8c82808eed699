"""Schema and reference profile inferred from raw frames, and their on-disk formats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nbmlops.artifact.lineage import data_hash
from nbmlops.artifact.profile import SAMPLE_SIZE, Profile, build_profile
from nbmlops.artifact.schema import Schema, infer_schema
from nbmlops.errors import ArtifactError


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
