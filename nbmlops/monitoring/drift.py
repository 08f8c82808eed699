"""Drift of live values against the reference profile, one column at a time, then corrected.

Per column (results read like scipy's: ``statistic``, ``pvalue``):

- numeric: the two-sample Kolmogorov-Smirnov test gives the p-value; the reference side is the
  profile's 1,000 quantiles of all the profiled training values (so the reference CDF is known
  to within 1/2000 and counts with its full size, not as a small sample); the reported
  ``test`` is ``ks`` (statistic: KS distance) below ``large_sample`` current values and
  ``wasserstein`` (statistic: Wasserstein distance, from the same quantiles, divided by the
  reference standard deviation) above;
- categorical and boolean: the chi-square test of the current counts against the reference
  counts gives the p-value; ``test`` is ``chi2`` below ``large_sample`` and ``jensen_shannon``
  (statistic: Jensen-Shannon distance, base 2) above;
- every column: the population stability index (PSI) over the reference bins or categories.

P-values are corrected across the tested columns of one report with Benjamini-Hochberg
(``scipy.stats.false_discovery_control``); a column without a p-value is not counted. A column
has drifted when its corrected p-value is below ``alpha`` and its effect (normalised
Wasserstein or Jensen-Shannon distance) reaches the effect threshold: a significant change too
small to matter is reported as ``significant`` only, and at huge sample sizes a trivial shift
is never an alarm.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon
from threadpoolctl import threadpool_limits

from nbmlops.artifact.profile import ColumnProfile
from nbmlops.artifact.schema import MAX_DISTINCT_SHARE

_EPS = 1e-4
NEW_CATEGORY = "(new)"
OTHER_CATEGORY = "(other)"


@dataclass(frozen=True)
class Thresholds:
    """When a column counts as drifted; the defaults are documented in the README."""

    alpha: float = 0.05
    numeric_effect: float = 0.1
    categorical_effect: float = 0.1
    min_samples: int = 30
    large_sample: int = 1000

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one column: scipy-like ``statistic`` and ``pvalue`` (BH-corrected), PSI."""

    name: str
    kind: str
    test: str
    statistic: float | None
    pvalue: float | None
    psi: float | None
    effect: float | None
    drifted: bool | None  # None: not judged (the monitor saw too few predictions)
    significant: bool | None
    n: int
    null_rate: float | None
    reference_null_rate: float
    bins: tuple[str, ...] = ()
    reference: tuple[float, ...] = ()
    current: tuple[float, ...] = ()
    note: str = ""
    skipped: int = 0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "test": self.test,
            "statistic": _rounded(self.statistic),
            "pvalue": _rounded(self.pvalue),
            "psi": _rounded(self.psi),
            "drifted": self.drifted,
            "significant": self.significant,
            "effect": _rounded(self.effect),
            "n": self.n,
            "null_rate": _rounded(self.null_rate),
            "reference_null_rate": _rounded(self.reference_null_rate),
            "note": self.note,
            "skipped": self.skipped,
        }


@dataclass
class _Raw:
    reference: ColumnProfile
    test: str
    statistic: float | None
    pvalue: float | None
    psi: float | None
    effect: float | None
    effect_threshold: float
    n: int
    null_rate: float | None
    bins: tuple = ()
    ref_hist: tuple = ()
    cur_hist: tuple = ()
    note: str = ""
    extra: dict = field(default_factory=dict)
    skipped: int = 0


def detect_drift(
    references: list[ColumnProfile], frame: pd.DataFrame, thresholds: Thresholds | None = None
) -> list[FeatureDrift]:
    """Compare each profiled column with the same column of ``frame``; BH across columns."""
    thresholds = thresholds or Thresholds()

    def measure(ref: ColumnProfile) -> _Raw:
        series = frame[ref.name] if ref.name in frame else pd.Series(dtype=float)
        return _measure(ref, series, thresholds)

    # Columns are measured side by side: sorting and counting release the GIL. BLAS worker
    # threads would only spin in scipy's small tests and take the cores for nothing.
    with threadpool_limits(1), ThreadPoolExecutor(_workers(len(frame))) as pool:
        raws = list(pool.map(measure, references))
    adjusted = benjamini_hochberg([r.pvalue for r in raws])
    results = []
    for raw, pvalue in zip(raws, adjusted, strict=True):
        significant = pvalue is not None and pvalue < thresholds.alpha
        large = raw.effect is not None and raw.effect >= raw.effect_threshold
        results.append(
            FeatureDrift(
                name=raw.reference.name,
                kind=raw.reference.kind,
                test=raw.test,
                statistic=raw.statistic,
                pvalue=pvalue,
                psi=raw.psi,
                effect=raw.effect,
                drifted=bool(significant and large),
                significant=bool(significant),
                n=raw.n,
                null_rate=raw.null_rate,
                reference_null_rate=raw.reference.null_rate,
                bins=tuple(raw.bins),
                reference=tuple(float(x) for x in raw.ref_hist),
                current=tuple(float(x) for x in raw.cur_hist),
                note=raw.note,
                skipped=raw.skipped,
            )
        )
    return results


def _workers(rows: int) -> int:
    """Threads for the columns: one for small frames (threads cost more than they save)."""
    return 1 if rows < 50_000 else max(1, min(4, os.cpu_count() or 1))


def benjamini_hochberg(pvalues: list[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``) over the
    tested columns; ``None`` or NaN (untested) becomes ``None`` and does not count as a test."""
    tested = [i for i, p in enumerate(pvalues) if p is not None and not np.isnan(p)]
    adjusted: list[float | None] = [None] * len(pvalues)
    if tested:
        corrected = stats.false_discovery_control([pvalues[i] for i in tested], method="bh")
        for index, value in zip(tested, corrected, strict=True):
            adjusted[index] = float(value)
    return adjusted


def _measure(ref: ColumnProfile, series: pd.Series, thresholds: Thresholds) -> _Raw:
    n_total = len(series)
    null_rate = float(series.isna().mean()) if n_total else None
    values = series.dropna()
    if ref.kind in ("numeric", "datetime"):
        current = _datetimes(values) if ref.kind == "datetime" else _numbers(values)
        raw = _numeric(ref, current, n_total, null_rate, thresholds)
    elif _mostly_unique(ref):
        raw = _Raw(ref, "none", None, None, None, None, 0.0, 0, null_rate)
        raw.note = "values mostly unique in training (ids, names, free text): not compared"
        return raw
    else:
        raw = _categorical(ref, _scalars(values), n_total, null_rate, thresholds)
    # what is neither missing nor measured could not be read as the column's kind
    raw.skipped = len(values) - raw.n
    return raw


def _mostly_unique(ref: ColumnProfile) -> bool:
    """A free-text column whose training values were mostly distinct: new traffic brings new
    values by nature, so comparing value frequencies would call every window drifted."""
    seen = ref.count * (1 - ref.null_rate)
    return (
        ref.kind == "text" and seen > 0 and ref.stats.get("n_unique", 0) > MAX_DISTINCT_SHARE * seen
    )


def _numbers(values: pd.Series) -> np.ndarray:
    """The finite numbers among the non-null ``values``: booleans, date-times, arrays, objects
    and text that does not spell a number are left out."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return np.empty(0)
    if pd.api.types.is_numeric_dtype(dtype):
        numbers = values.to_numpy(dtype=float)
    elif pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        if pd.api.types.is_object_dtype(dtype) and (
            pd.api.types.infer_dtype(values, skipna=False) not in _NUMBER_KINDS
        ):
            values = values[~values.map(_is_boolean).to_numpy(dtype=bool)]
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    else:
        return np.empty(0)
    return numbers[np.isfinite(numbers)]


def _datetimes(values: pd.Series) -> np.ndarray:
    """The non-null ``values`` that are date-times (or ISO-8601 text, each parsed on its own)
    as seconds since the epoch, UTC; a time without a zone is taken as UTC, as in the profile."""
    if not pd.api.types.is_datetime64_any_dtype(values.dtype):
        if pd.api.types.infer_dtype(values, skipna=False) != "string":
            values = values[values.map(_is_time).to_numpy(dtype=bool)]
        if not len(values):
            return np.empty(0)
        values = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce").dropna()
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert(None)
    # microseconds reach past the year 2262, where nanoseconds stop
    return values.to_numpy().astype("datetime64[us]").astype(np.int64) / 1e6


def _scalars(values: pd.Series) -> pd.Series:
    """The non-null ``values`` that can be a category: arrays and objects are left out."""
    if pd.api.types.is_object_dtype(values.dtype) and (
        pd.api.types.infer_dtype(values, skipna=False) not in _SCALAR_KINDS
    ):
        return values[~values.map(_is_container).to_numpy(dtype=bool)]
    return values


_NUMBER_KINDS = frozenset({"integer", "floating", "mixed-integer-float", "decimal"})
_SCALAR_KINDS = _NUMBER_KINDS | {"string", "boolean", "empty"}


def _is_boolean(value) -> bool:
    return isinstance(value, bool | np.bool_)


def _is_time(value) -> bool:
    return isinstance(value, str | datetime)


def _is_container(value) -> bool:
    return isinstance(value, list | tuple | dict | set | np.ndarray)


def _numeric(ref, current: np.ndarray, n_total, null_rate, thresholds) -> _Raw:
    current = np.sort(current)
    n = len(current)
    test = "ks" if n < thresholds.large_sample else "wasserstein"
    base = _Raw(ref, test, None, None, None, None, thresholds.numeric_effect, n, null_rate)
    if ref.bin_edges is None or not ref.quantiles:
        base.note = "no reference values"
        return base
    interior = np.asarray(ref.bin_edges[1:-1])
    ref_counts = np.asarray(ref.bin_counts, dtype=float)
    labels = _bin_labels(ref.bin_edges)
    if n == 0:
        base.note = "no current values"
        base.bins, base.ref_hist = labels, ref_counts / ref_counts.sum()
        return base
    # values below each interior edge; a value equal to an edge falls in the bin above it, as
    # in the profile.
    below = np.searchsorted(current, interior, side="left")
    cur_counts = np.diff(np.concatenate(([0], below, [n])))
    ref_frac, cur_frac = _fractions(ref_counts), _fractions(cur_counts)
    base.psi = _psi(ref_frac, cur_frac)
    base.bins, base.ref_hist, base.cur_hist = labels, ref_frac, cur_frac
    if n < thresholds.min_samples:
        base.note = f"only {n} values: too few to test"
        return base
    quantiles = np.asarray(ref.quantiles, dtype=float)
    distance = ks_distance(current, quantiles)
    pvalue = ks_pvalue(distance, n, ref.n_values)
    scale = ref.stats.get("std") or 0.0
    wasserstein = wasserstein_distance(current, quantiles)
    effect = wasserstein / scale if scale > 0 else wasserstein
    base.pvalue = float(np.clip(pvalue, 0.0, 1.0))
    base.effect = float(effect)
    base.statistic = float(distance) if test == "ks" else float(effect)
    return base


def ks_distance(current: np.ndarray, quantiles: np.ndarray) -> float:
    """The Kolmogorov-Smirnov distance between the sorted ``current`` values and the reference
    its quantiles stand for: the share of quantiles at or below x is the reference CDF at x.

    That CDF is a step function that only moves at the quantiles, so between two of them the
    gap to the (monotone) current CDF is largest at the ends: evaluating both CDFs just before
    and at each quantile gives the exact supremum in O(K log n).
    """
    points = np.unique(quantiles)
    reference = np.searchsorted(quantiles, points, side="right") / len(quantiles)
    before = np.concatenate(([0.0], reference[:-1]))
    n = len(current)
    at = np.searchsorted(current, points, side="right") / n
    just_below = np.searchsorted(current, points, side="left") / n
    return float(max(np.abs(at - reference).max(), np.abs(just_below - before).max()))


def ks_pvalue(distance: float, n: int, m: int) -> float:
    """The two-sample KS p-value for ``n`` and ``m`` values, as scipy's ``ks_2samp`` computes
    it asymptotically; past 10,000 effective values Kolmogorov's limit is as good and faster."""
    effective = n * m / (n + m)
    if effective <= 10_000:
        return float(stats.kstwo.sf(distance, round(effective)))
    return float(stats.kstwobign.sf(distance * np.sqrt(effective)))


def wasserstein_distance(current: np.ndarray, quantiles: np.ndarray, grid: int = 10_000) -> float:
    """The Wasserstein-1 distance between the sorted ``current`` values and the reference its
    quantiles stand for: the mean gap between the two quantile functions, on a fine grid."""
    p = (np.arange(grid) + 0.5) / grid
    n, k = len(current), len(quantiles)
    current_q = current[np.minimum(np.ceil(p * n).astype(np.int64) - 1, n - 1)]
    reference_q = quantiles[np.minimum((p * k).astype(np.int64), k - 1)]
    return float(np.abs(current_q - reference_q).mean())


def _categorical(ref, values: pd.Series, n_total, null_rate, thresholds) -> _Raw:
    n = len(values)
    test = "chi2" if n < thresholds.large_sample else "jensen_shannon"
    base = _Raw(ref, test, None, None, None, None, thresholds.categorical_effect, n, null_rate)
    known = list((ref.frequencies or {}).keys())
    ref_counts = np.array([ref.frequencies[k] for k in known], dtype=float)
    other = float(ref.stats.get("other_count", 0))
    current = values.astype(str).value_counts()
    cur_known = np.array([current.get(k, 0) for k in known], dtype=float)
    unseen = current[~current.index.isin(known)]
    labels = [*known]
    ref_all, cur_all = list(ref_counts), list(cur_known)
    if other:
        labels.append(OTHER_CATEGORY)
        ref_all.append(other)
        cur_all.append(float(unseen.sum()))
    elif len(unseen):
        labels.append(NEW_CATEGORY)
        ref_all.append(0.0)
        cur_all.append(float(unseen.sum()))
    ref_arr, cur_arr = np.asarray(ref_all), np.asarray(cur_all)
    if len(unseen) and not other:
        base.note = "new categories: " + ", ".join(map(str, unseen.index[:5]))
    base.bins = tuple(labels)
    base.ref_hist = _fractions(ref_arr)
    if n == 0:
        base.note = base.note or "no current values"
        return base
    base.cur_hist = _fractions(cur_arr)
    base.psi = _psi(base.ref_hist, base.cur_hist)
    if n < thresholds.min_samples:
        base.note = f"only {n} values: too few to test"
        return base
    table = np.vstack([ref_arr, cur_arr])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        base.pvalue, base.statistic, base.effect = 1.0, 0.0, 0.0
        return base
    chi2, pvalue, _, _ = stats.chi2_contingency(table, correction=False)
    distance = float(jensenshannon(ref_arr / ref_arr.sum(), cur_arr / cur_arr.sum(), base=2))
    base.pvalue = float(pvalue)
    base.effect = distance
    base.statistic = float(chi2) if test == "chi2" else distance
    return base


def _fractions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros_like(counts, dtype=float)


def _psi(ref_frac: np.ndarray, cur_frac: np.ndarray) -> float:
    r = np.clip(ref_frac, _EPS, None)
    c = np.clip(cur_frac, _EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _bin_labels(edges) -> tuple[str, ...]:
    edges = list(edges)
    if len(edges) < 2:
        return (f"{edges[0]:.3g}",) if edges else ()
    return tuple(f"{lo:.3g}..{hi:.3g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True))


def _rounded(value: float | None, digits: int = 6):
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)
