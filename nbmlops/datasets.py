"""Synthetic data for the demo, the tests and the benchmarks (no download needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

CONTRACTS = ("month-to-month", "one-year", "two-year")
PAYMENTS = ("card", "bank", "check", "voucher")
REGIONS = ("north", "south", "east", "west")


def make_churn(n_rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A telecom churn table with numeric, string, categorical and boolean columns, NaNs
    included, and a binary ``churned`` target that depends on several of them."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n_rows).astype(float)
    tenure[rng.random(n_rows) < 0.05] = np.nan
    charges = rng.normal(65, 20, n_rows).clip(15, 150).round(2)
    contract = rng.choice(CONTRACTS, n_rows, p=[0.55, 0.25, 0.20])
    payment = rng.choice(PAYMENTS, n_rows).astype(object)
    payment[rng.random(n_rows) < 0.08] = None
    calls = rng.poisson(1.5, n_rows)
    paperless = rng.random(n_rows) < 0.6
    logit = (
        -0.04 * np.nan_to_num(tenure, nan=30)
        + 0.025 * (charges - 65)
        + np.where(contract == "month-to-month", 1.2, -0.8)
        + 0.35 * calls
        + np.where(payment == "check", 0.6, 0.0)
        - 0.2
    )
    churned = rng.random(n_rows) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": charges,
            "contract": pd.Categorical(contract, categories=CONTRACTS),
            "payment_method": pd.array(payment, dtype="string"),
            "region": rng.choice(REGIONS, n_rows),
            "support_calls": calls,
            "paperless": paperless,
            "churned": churned.astype(int),
        }
    )


def make_house_prices(n_rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A regression table: house ``price`` from size, rooms, age and a neighbourhood."""
    rng = np.random.default_rng(seed)
    size = rng.normal(120, 35, n_rows).clip(30, 400)
    rooms = rng.integers(1, 7, n_rows)
    age = rng.integers(0, 100, n_rows).astype(float)
    age[rng.random(n_rows) < 0.05] = np.nan
    hood = rng.choice(["centre", "suburb", "rural"], n_rows, p=[0.3, 0.5, 0.2])
    price = (
        2.2 * size
        + 15 * rooms
        - 0.8 * np.nan_to_num(age, nan=40)
        + np.select([hood == "centre", hood == "suburb"], [120, 40], 0)
        + rng.normal(0, 25, n_rows)
    )
    return pd.DataFrame(
        {"size_m2": size, "rooms": rooms, "age_years": age, "neighbourhood": hood, "price": price}
    )
