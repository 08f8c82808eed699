"""The drift statistics against the profile's quantiles, checked against scipy on raw values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nbmlops.artifact.profile import N_QUANTILES, build_profile, reference_quantiles
from nbmlops.monitoring.drift import (
    benjamini_hochberg,
    detect_drift,
    ks_distance,
    ks_pvalue,
    wasserstein_distance,
)

RNG = np.random.default_rng(7)
SHAPES = {
    "continuous": lambda n: RNG.normal(3, 2, n),
    "skewed": lambda n: RNG.gamma(2, 1.5, n),
    "discrete": lambda n: RNG.poisson(3, n).astype(float),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_quantiles_of_a_reference_its_own_size_give_scipys_ks_exactly(shape, shift):
    # with exactly N_QUANTILES reference values, the quantiles are the reference values
    reference = SHAPES[shape](N_QUANTILES)
    current = np.sort(SHAPES[shape](700) + shift)
    quantiles = reference_quantiles(reference)
    assert np.array_equal(quantiles, np.sort(reference))
    want = stats.ks_2samp(reference, current)
    assert ks_distance(current, quantiles) == pytest.approx(want.statistic, abs=1e-12)
    assert wasserstein_distance(current, quantiles) == pytest.approx(
        stats.wasserstein_distance(reference, current), rel=0.02, abs=1e-3
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_large_references_are_summarised_to_within_their_resolution(shape):
    reference, current = SHAPES[shape](200_000), np.sort(SHAPES[shape](5_000) * 1.1)
    quantiles = reference_quantiles(reference)
    want = stats.ks_2samp(reference, current)
    assert ks_distance(current, quantiles) == pytest.approx(want.statistic, abs=1 / N_QUANTILES)
    assert wasserstein_distance(current, quantiles) == pytest.approx(
        stats.wasserstein_distance(reference, current), rel=0.02
    )


@pytest.mark.parametrize(("n", "m"), [(50, 1000), (900, 20_000), (1_000_000, 20_000)])
def test_ks_pvalue_matches_scipys_asymptotic_two_sample_value(n, m):
    current, reference = RNG.normal(0.02, 1, n), RNG.normal(0, 1, m)
    want = stats.ks_2samp(current, reference, method="asymp")
    assert ks_pvalue(want.statistic, n, m) == pytest.approx(want.pvalue, rel=0.02, abs=1e-12)


def test_drift_does_not_depend_on_which_rows_the_profile_sampled():
    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 30_000), "y": rng.exponential(1, 30_000)})
    outputs = pd.DataFrame({"prediction": reference["x"] > 0})
    current = pd.DataFrame({"x": rng.normal(0.15, 1, 5_000), "y": rng.exponential(1, 5_000)})
    one, other = (
        detect_drift(build_profile(reference, outputs, seed=s).columns, current) for s in (0, 1)
    )
    assert [r.to_dict() for r in one] == [r.to_dict() for r in other]
    assert one[0].drifted and not one[1].drifted


@pytest.mark.parametrize(
    "pvalues",
    [
        [0.01, 0.04, 0.03, None, 0.5],
        [0.02, 0.02, 0.02, 0.5, 0.02],  # ties
        [0.001, np.nan, 0.04, None, 0.04, 1.0, np.nan],  # ties and untested columns
        [np.nan, None],
    ],
)
def test_benjamini_hochberg_is_scipys_over_the_tested_columns(pvalues):
    adjusted = benjamini_hochberg(pvalues)
    untested = [p is None or np.isnan(p) for p in pvalues]
    # an untested column has no p-value and does not count among the tests (a NaN used to be
    # given a finite corrected p-value and to raise everyone else's)
    assert [a is None for a in adjusted] == untested
    tested = [p for p, skip in zip(pvalues, untested, strict=True) if not skip]
    want = stats.false_discovery_control(tested, method="bh") if tested else []
    got = [a for a in adjusted if a is not None]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_ids_are_not_called_drifted_because_traffic_brings_new_ones():
    rng = np.random.default_rng(3)
    cities = ["oslo", "lima", "kyiv", "pune"]
    train = pd.DataFrame(
        {"customer_id": [f"c{i}" for i in range(5_000)], "city": rng.choice(cities, 5_000)}
    )
    outputs = pd.DataFrame({"prediction": rng.integers(0, 2, 5_000)})
    profile = build_profile(train, outputs, kinds={"customer_id": "text", "city": "text"})
    current = pd.DataFrame(
        {
            "customer_id": [f"new{i}" for i in range(2_000)],
            "city": rng.choice(cities, 2_000, p=[0.7, 0.1, 0.1, 0.1]),
        }
    )
    ids, city = detect_drift(profile.columns, current)
    assert not ids.drifted and ids.pvalue is None and "mostly unique" in ids.note
    assert city.drifted, "a text column with repeated values is still compared"
