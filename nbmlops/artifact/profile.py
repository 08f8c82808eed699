"""The reference profile of the training data and predictions, which drift is measured against."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbmlops.artifact.schema import Column, check_format_version, column_kind, to_json_value

FORMAT_VERSION = 1
N_BINS = 20
SAMPLE_SIZE = 2000
#: Quantiles of each numeric column kept for drift: its distribution to within 1/2000.
N_QUANTILES = 1000
MAX_FREQUENCIES = 200
_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass(frozen=True)
class ColumnProfile:
    """Distribution of one column: bins or category counts, null rate, stats, a sample and
    (numeric) quantiles."""

    name: str
    kind: str
    count: int
    null_rate: float
    stats: dict = field(default_factory=dict)
    bin_edges: tuple[float, ...] | None = None
    bin_counts: tuple[int, ...] | None = None
    frequencies: dict | None = None
    sample: tuple = ()
    quantiles: tuple[float, ...] = ()

    @property
    def n_values(self) -> int:
        """How many finite values were profiled (numeric): what the bins count."""
        return sum(self.bin_counts or ())

    def to_dict(self) -> dict:
        data = {
            "name": self.name,
            "kind": self.kind,
            "count": self.count,
            "null_rate": self.null_rate,
            "stats": self.stats,
            "sample": list(self.sample),
        }
        if self.quantiles:
            data["quantiles"] = list(self.quantiles)
        if self.bin_edges is not None:
            data["bins"] = {"edges": list(self.bin_edges), "counts": list(self.bin_counts)}
        if self.frequencies is not None:
            data["frequencies"] = [[k, v] for k, v in self.frequencies.items()]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ColumnProfile:
        bins = data.get("bins")
        freqs = data.get("frequencies")
        return cls(
            name=data["name"],
            kind=data["kind"],
            count=int(data["count"]),
            null_rate=float(data["null_rate"]),
            stats=dict(data.get("stats", {})),
            bin_edges=None if bins is None else tuple(bins["edges"]),
            bin_counts=None if bins is None else tuple(bins["counts"]),
            frequencies=None if freqs is None else {k: v for k, v in freqs},
            sample=tuple(data.get("sample", ())),
            quantiles=tuple(data.get("quantiles", ())),
        )


@dataclass(frozen=True)
class Profile:
    """Reference profile: one :class:`ColumnProfile` per input column and per model output."""

    n_rows: int
    columns: tuple[ColumnProfile, ...]
    predictions: tuple[ColumnProfile, ...]
    format_version: int = FORMAT_VERSION

    def column(self, name: str) -> ColumnProfile:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def client_sample(self, column: Column) -> list:
        """The training values sampled for ``column`` as a client sends them: a datetime (kept
        as seconds since the epoch) as ISO-8601 text in the column's zone, an integer as an
        integer."""
        values = list(self.column(column.name).sample)
        if column.kind == "datetime":
            stamps = pd.to_datetime(values, unit="s", utc=column.tz is not None)
            stamps = stamps.tz_convert(column.tz) if column.tz is not None else stamps
            return [stamp.isoformat() for stamp in stamps]
        if column.is_integer:
            return [None if v is None else int(v) for v in values]
        return values

    def to_dict(self) -> dict:
        return {
            "format_version": self.format_version,
            "n_rows": self.n_rows,
            "columns": [c.to_dict() for c in self.columns],
            "predictions": [c.to_dict() for c in self.predictions],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        version = check_format_version(data, "profile.json", FORMAT_VERSION)
        return cls(
            n_rows=int(data["n_rows"]),
            columns=tuple(ColumnProfile.from_dict(c) for c in data["columns"]),
            predictions=tuple(ColumnProfile.from_dict(c) for c in data["predictions"]),
            format_version=version,
        )


def build_profile(
    data: pd.DataFrame, outputs: pd.DataFrame, seed: int = 0, kinds: dict | None = None
) -> Profile:
    """Profile the raw training frame and the model's outputs on it; ``kinds`` are the
    schema's column kinds (default: inferred)."""
    rng = np.random.default_rng(seed)
    kinds = kinds or {}
    return Profile(
        n_rows=len(data),
        columns=tuple(
            profile_column(str(n), data[n], rng, kinds.get(str(n))) for n in data.columns
        ),
        predictions=tuple(profile_column(str(n), outputs[n], rng) for n in outputs.columns),
    )


def profile_column(
    name: str, series: pd.Series, rng: np.random.Generator, kind: str | None = None
) -> ColumnProfile:
    """Profile one column according to its kind (default: inferred)."""
    kind = kind or column_kind(series)
    count = len(series)
    nulls = int(series.isna().sum())
    values = series.dropna()
    base = {"name": name, "kind": kind, "count": count, "null_rate": nulls / count if count else 0}
    if kind == "numeric":
        return _numeric_profile(base, values.to_numpy(dtype=float), rng)
    if kind == "datetime":
        seconds = values.dt.as_unit("ns").astype("int64").to_numpy(dtype=float) / 1e9
        return _numeric_profile(base, seconds, rng)
    return _categorical_profile(base, values, rng)


def _numeric_profile(base: dict, values: np.ndarray, rng: np.random.Generator) -> ColumnProfile:
    values = values[np.isfinite(values)]
    if not len(values):
        return ColumnProfile(**base)
    points = np.quantile(values, _QUANTILES)
    stats = {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        **{f"p{round(q * 100):02d}": float(v) for q, v in zip(_QUANTILES, points, strict=True)},
    }
    edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)))
    if len(edges) == 1:
        counts = np.array([len(values)])
    else:
        counts, _ = np.histogram(values, bins=edges)
    return ColumnProfile(
        **base,
        stats=stats,
        bin_edges=tuple(float(e) for e in edges),
        bin_counts=tuple(int(c) for c in counts),
        sample=tuple(float(v) for v in _sample(values, rng)),
        quantiles=tuple(float(v) for v in reference_quantiles(values)),
    )


def reference_quantiles(values: np.ndarray) -> np.ndarray:
    """The ``N_QUANTILES`` quantiles at probabilities (k + 0.5) / N_QUANTILES, each an actual
    value (``inverted_cdf``): the share of them at or below any x is the share of ``values``
    at or below x, to within 1 / (2 N_QUANTILES), for continuous and discrete columns alike."""
    probabilities = (np.arange(N_QUANTILES) + 0.5) / N_QUANTILES
    return np.quantile(values, probabilities, method="inverted_cdf")


def _categorical_profile(base: dict, values: pd.Series, rng: np.random.Generator) -> ColumnProfile:
    counts = values.astype(str).value_counts()
    top = counts.iloc[:MAX_FREQUENCIES]
    frequencies = {str(k): int(v) for k, v in top.items()}
    other = int(counts.iloc[MAX_FREQUENCIES:].sum())
    stats = {"n_unique": int(len(counts)), "other_count": other}
    sample = _sample(values.to_numpy(dtype=object), rng)
    return ColumnProfile(
        **base,
        stats=stats,
        frequencies=frequencies,
        sample=tuple(to_json_value(v) for v in sample),
    )


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= SAMPLE_SIZE:
        return values
    return values[np.sort(rng.choice(len(values), SAMPLE_SIZE, replace=False))]
