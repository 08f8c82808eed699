"""Automatic canary analysis: every interval, the canary's error rate, p99 latency and
prediction drift against the primary over that interval are checked against their limits; a
breach sets its weight to 0 at once.

The deployment counts each route's requests, failures and latencies in memory
(:class:`IntervalCounts`: no log reads on the hot path); :class:`CanaryAnalysis` takes the
counts of an interval, judges them and, on a breach, rolls the canary back and records a
``rollback`` event in the prediction log, where the monitor of both versions reads it.
An interval with fewer than ``min_requests`` canary requests is inconclusive: nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from nbmlops.errors import UsageError
from nbmlops.serving.config import CANARY, PRIMARY

logger = logging.getLogger("uvicorn.error")  # the server's log, as nbmlops.serving.responses

PASSED, BREACHED, INCONCLUSIVE = "passed", "breached", "inconclusive"
#: Predictions each route needs in an interval before the canary's are tested for drift against
#: the primary's (the drift test's ``large_sample``: its noise is then far below the effect
#: threshold; at 30 per side, 6% of intervals of a healthy canary would drift).
MIN_DRIFT_PREDICTIONS = 1000


@dataclass
class RouteCounts:
    """One route's requests over one interval."""

    requests: int = 0
    failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    predictions: list = field(default_factory=list)

    def p99(self) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]

    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None


class IntervalCounts:
    """Requests, failures and latencies per route since the last :meth:`take`."""

    def __init__(self) -> None:
        self._counts: dict[str, RouteCounts] = {}

    def add(self, route: str, seconds: float, failed: bool, predictions=()) -> None:
        counts = self._counts.get(route)
        if counts is None:
            counts = self._counts[route] = RouteCounts()
        counts.requests += 1
        counts.failures += failed
        counts.latencies_ms.append(seconds * 1000.0)
        counts.predictions.extend(predictions)

    def take(self) -> dict[str, RouteCounts]:
        """The counts so far, and start a new interval (one event loop: no lock needed)."""
        taken, self._counts = self._counts, {}
        return taken


@dataclass(frozen=True)
class AnalysisOptions:
    """``--analysis-interval``, ``--max-error-rate``, ``--max-p99-ms``, ``--min-requests``,
    ``--max-prediction-drift`` (the drift test's effect size; None: the monitor's thresholds)."""

    interval: float = 30.0
    max_error_rate: float = 0.01
    max_p99_ms: float = 500.0
    min_requests: int = 20
    max_prediction_drift: float | None = None


def analysis_options(
    analysis_interval=None,
    max_error_rate=None,
    max_p99_ms=None,
    min_requests=None,
    max_prediction_drift=None,
) -> AnalysisOptions:
    """The analysis options as given (None: the default), checked; else a :class:`UsageError`."""
    default = AnalysisOptions()
    return AnalysisOptions(
        interval=_number(
            "--analysis-interval", analysis_interval, default.interval, 0, math.inf, "seconds"
        ),
        max_error_rate=_number("--max-error-rate", max_error_rate, default.max_error_rate, 0, 1),
        max_p99_ms=_number("--max-p99-ms", max_p99_ms, default.max_p99_ms, 0, math.inf, "ms"),
        min_requests=int(
            _number("--min-requests", min_requests, default.min_requests, 1, math.inf)
        ),
        max_prediction_drift=None
        if max_prediction_drift is None
        else _number("--max-prediction-drift", max_prediction_drift, 0.1, 0, math.inf),
    )


def _number(option: str, value, default, low, high, unit: str = "") -> float:
    """``value`` (None: ``default``) as a number above ``low`` (or 1 and up, whole, for
    ``--min-requests``) and at most ``high``."""
    if value is None:
        return default
    whole = isinstance(default, int)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if option == "--max-error-rate":
        fits = low <= number <= high
    elif whole:
        fits = low <= number <= high and number == int(number)
    else:
        fits = low < number <= high
    if not fits:
        wanted = (
            "a share of requests in [0, 1]"
            if option == "--max-error-rate"
            else f"a whole number of at least {low}"
            if whole
            else f"a number above {low} {unit}".rstrip()
        )
        raise UsageError(f"{option} {value!r} is not {wanted}: give e.g. {default:g}")
    return number


@dataclass(frozen=True)
class Verdict:
    """What one interval showed: ``outcome`` (passed, breached, inconclusive) and why."""

    outcome: str
    reason: str
    ts: float
    canary: dict
    primary: dict

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "ts": self.ts,
            "canary": self.canary,
            "primary": self.primary,
        }


def judge(
    counts: dict[str, RouteCounts], options: AnalysisOptions, ts: float, classifier: bool = True
) -> Verdict:
    """The verdict on one interval's counts (``classifier``: predictions are classes)."""
    canary = counts.get(CANARY, RouteCounts())
    primary = counts.get(PRIMARY, RouteCounts())
    shown = {name: _figures(c) for name, c in (("canary", canary), ("primary", primary))}
    if canary.requests < options.min_requests:
        reason = (
            f"inconclusive: {canary.requests} canary requests in {options.interval:g} s, "
            f"fewer than --min-requests {options.min_requests}"
        )
        return Verdict(INCONCLUSIVE, reason, ts, shown["canary"], shown["primary"])
    breaches = []
    rate = canary.error_rate()
    if rate > options.max_error_rate:
        primary_rate = primary.error_rate()
        versus = "-" if primary_rate is None else f"{primary_rate:.1%}"
        breaches.append(
            f"error rate {rate:.1%} ({canary.failures} of {canary.requests}) above "
            f"--max-error-rate {options.max_error_rate:g} (primary {versus})"
        )
    p99 = canary.p99()
    if p99 > options.max_p99_ms:
        primary_p99 = primary.p99()
        versus = "-" if primary_p99 is None else f"{primary_p99:.0f} ms"
        breaches.append(
            f"p99 latency {p99:.0f} ms above --max-p99-ms {options.max_p99_ms:g} (primary {versus})"
        )
    drift = prediction_drift(canary.predictions, primary.predictions, options, classifier)
    if drift is not None:
        shown["canary"]["prediction_drift"] = {
            k: drift.to_dict()[k] for k in ("test", "statistic", "pvalue", "effect", "drifted")
        }
    if drift is not None and drift.drifted:
        breaches.append(
            f"prediction drift against the primary ({drift.test} {drift.statistic:.3g}, "
            f"p {drift.pvalue:.2g}, effect {drift.effect:.3g} at or above "
            f"{'--max-prediction-drift ' if options.max_prediction_drift else ''}"
            f"{_effect_limit(options, classifier):g}; {len(canary.predictions)} canary and "
            f"{len(primary.predictions)} primary predictions)"
        )
    if breaches:
        return Verdict(BREACHED, "; ".join(breaches), ts, shown["canary"], shown["primary"])
    return Verdict(PASSED, "within limits", ts, shown["canary"], shown["primary"])


def prediction_drift(canary: list, primary: list, options: AnalysisOptions, classifier: bool):
    """The monitor's drift test of the canary's predictions against the primary's over the
    same interval (a :class:`~nbmlops.monitoring.drift.FeatureDrift`), or None (not judged)
    below :data:`MIN_DRIFT_PREDICTIONS` on either side.

    The reference is itself a sample, which the test takes as exact: with 30 predictions a
    side, about one interval in twenty of a healthy classifier canary would drift.
    """
    if min(len(canary), len(primary)) < MIN_DRIFT_PREDICTIONS:
        return None
    import numpy as np
    import pandas as pd

    from nbmlops.artifact.profile import profile_column
    from nbmlops.monitoring.drift import detect_drift

    def series(values: list) -> pd.Series:
        if classifier:
            return pd.Series([str(v) for v in values], dtype=object)
        return pd.Series(values, dtype=float)

    kind = "categorical" if classifier else "numeric"
    reference = profile_column("prediction", series(primary), np.random.default_rng(0), kind)
    frame = series(canary).to_frame("prediction")
    return detect_drift([reference], frame, _drift_thresholds(options))[0]


def _drift_thresholds(options: AnalysisOptions):
    from nbmlops.monitoring.drift import Thresholds

    limit = options.max_prediction_drift
    if limit is None:
        return Thresholds()
    return Thresholds(numeric_effect=limit, categorical_effect=limit)


def _effect_limit(options: AnalysisOptions, classifier: bool) -> float:
    thresholds = _drift_thresholds(options)
    return thresholds.categorical_effect if classifier else thresholds.numeric_effect


def _figures(counts: RouteCounts) -> dict:
    p99 = counts.p99()
    return {
        "requests": counts.requests,
        "failures": counts.failures,
        "p99_ms": None if p99 is None else round(p99, 1),
    }


class CanaryAnalysis:
    """Judges the deployment's canary every ``options.interval`` seconds, in an asyncio task
    started in the app's lifespan (:meth:`start`) and stopped on shutdown (:meth:`stop`)."""

    def __init__(
        self,
        deployment,
        options: AnalysisOptions,
        model: str,
        classifier: bool = True,
        progressive=None,
        promote=None,
    ) -> None:
        """``progressive`` (a :class:`~nbmlops.serving.options.Progressive`) grows the weight
        of a passing canary; ``promote(detail)`` moves the alias to it (a coroutine that
        returns whether it moved)."""
        self.deployment = deployment
        self.classifier = classifier
        self.options = options
        self.model = model
        self.progressive = progressive
        self.promote = promote
        self.last: Verdict | None = None
        self.outcomes = {PASSED: 0, BREACHED: 0, INCONCLUSIVE: 0}
        self.rollback: str | None = None  # the reason, once the canary was rolled back
        self.promoted: str | None = None  # the reason, once the canary was promoted
        self.at_top = 0  # passing intervals at the top weight
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.deployment.canary is not None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @property
    def done(self) -> bool:
        """Nothing left to judge: the canary was rolled back, promoted, or replaced."""
        return self.deployment.canary is None or self.rollback is not None or bool(self.promoted)

    async def _run(self) -> None:
        self.deployment.counts.take()  # start the first interval now
        while not self.done:
            await asyncio.sleep(self.options.interval)
            if self.done:
                return
            try:
                await self.analyse()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the analysis must not die with one interval
                logger.exception("canary analysis failed for one interval")

    async def analyse(self) -> Verdict:
        """Judge the interval that just ended; roll the canary back on a breach."""
        deployment = self.deployment
        counts = deployment.counts.take()
        verdict = await asyncio.to_thread(judge, counts, self.options, time.time(), self.classifier)
        self.last = verdict
        self.outcomes[verdict.outcome] += 1
        canary = deployment.canary
        if verdict.outcome == INCONCLUSIVE:
            logger.info("canary v%s: %s", canary.version, verdict.reason)
        elif verdict.outcome == BREACHED and deployment.weight > 0:
            deployment.set_weight(0.0)
            reason = f"canary v{canary.version} rolled back: {verdict.reason}"
            self.rollback = reason
            logger.warning("%s", reason)
            log = deployment.primary.log
            await asyncio.to_thread(
                log.add_event,
                verdict.ts,
                self.model,
                "rollback",
                canary.version,
                deployment.primary.version,
                reason,
            )
        elif verdict.outcome == PASSED and self.progressive is not None:
            await self._progress()
        return verdict

    async def _progress(self) -> None:
        """After a passing interval: a step up, or one more interval at the top (and, after
        ``promote_after`` of them, the promotion)."""
        deployment, progressive = self.deployment, self.progressive
        canary = deployment.canary
        if deployment.weight < progressive.max_weight - 1e-9:
            weight = round(
                min(progressive.max_weight, deployment.weight + progressive.step_weight), 6
            )
            reason = f"canary v{canary.version} passed; weight {deployment.weight:g} -> {weight:g}"
            deployment.set_weight(weight)
            logger.info("%s", reason)
            await self._event("step", reason, canary.version, deployment.primary.version)
            return
        self.at_top += 1
        after = progressive.promote_after
        if after is None or self.at_top < after or self.promote is None:
            return
        primary = deployment.primary.version
        detail = (
            f"canary v{canary.version} passed {self.at_top} intervals of "
            f"{self.options.interval:g} s at weight {deployment.weight:g} (primary v{primary})"
        )
        self.promoted = detail
        if await self.promote(detail):
            reason = f"canary v{canary.version} promoted: {detail}"
            await self._event("promote", reason, canary.version, primary)
        else:
            self.promoted = f"not promoted: the alias no longer points at v{primary}"
            logger.warning("canary v%s %s", canary.version, self.promoted)

    async def _event(self, kind: str, reason: str, version: str, primary: str) -> None:
        log = self.deployment.primary.log
        await asyncio.to_thread(
            log.add_event, time.time(), self.model, kind, version, primary, reason
        )

    def to_dict(self) -> dict:
        """What ``/metadata`` shows: the options and the last interval's verdict."""
        return {
            "interval_s": self.options.interval,
            "max_error_rate": self.options.max_error_rate,
            "max_p99_ms": self.options.max_p99_ms,
            "min_requests": self.options.min_requests,
            "max_prediction_drift": self.options.max_prediction_drift,
            "intervals": dict(self.outcomes),
            "last": None if self.last is None else self.last.to_dict(),
            "rollback": self.rollback,
            "progressive": None
            if self.progressive is None
            else {
                "step_weight": self.progressive.step_weight,
                "max_weight": self.progressive.max_weight,
                "promote_after": self.progressive.promote_after,
                "intervals_at_max": self.at_top,
                "promoted": self.promoted,
            },
        }
