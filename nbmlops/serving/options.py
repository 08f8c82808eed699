"""What a user asks of a server (``serve``, the magic and the CLI alike), checked before
anything is resolved or started."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from nbmlops.errors import UsageError
from nbmlops.serving.analysis import AnalysisOptions, analysis_options

#: ``--max-weight`` when ``--step-weight`` is given without it.
DEFAULT_MAX_WEIGHT = 0.5
#: How the primary scores: scikit-learn, or its parity-proven ONNX twin through onnxruntime.
RUNTIMES = ("sklearn", "onnx")
#: ``--weight`` when no canary weight is given.
DEFAULT_WEIGHT = 0.1


def check_share(value: float, option: str) -> float:
    """``value`` as a share of requests in [0, 1]; else a :class:`UsageError`."""
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = float("nan")
    if not 0.0 <= share <= 1.0:
        raise UsageError(f"{option} {value!r} is not a share of requests: give a number in [0, 1]")
    return share


@dataclass(frozen=True)
class Progressive:
    """Progressive delivery: each passing interval adds ``step_weight`` to the canary's weight
    up to ``max_weight``; after ``promote_after`` passing intervals at ``max_weight`` (None:
    never) the canary's version takes the primary's alias."""

    step_weight: float = 0.0
    max_weight: float = DEFAULT_WEIGHT
    promote_after: int | None = None


@dataclass(frozen=True)
class ServeOptions:
    """The options of one server as the user gave them (None: the default)."""

    host: str = "127.0.0.1"
    port: int | None = None
    workers: int = 1
    token: str | None = field(default=None, repr=False)
    insecure: bool = False
    unknown_categories: str = "reject"
    runtime: str = "sklearn"
    max_records: int | None = None
    max_body_bytes: int | None = None
    canary: str | None = None
    weight: float | None = None
    sticky: str | None = None
    shadow: str | None = None
    shadow_fraction: float | None = None
    step_weight: float | None = None
    max_weight: float | None = None
    promote_after: int | None = None
    analysis_interval: float | None = None
    max_error_rate: float | None = None
    max_p99_ms: float | None = None
    min_requests: int | None = None
    max_prediction_drift: float | None = None

    def check(self) -> None:
        """The options fit together; else a :class:`UsageError` naming the option."""
        if self.unknown_categories not in ("reject", "allow"):
            raise UsageError(
                f"--unknown-categories {self.unknown_categories!r}: choose 'reject' (default) "
                "or 'allow'"
            )
        if self.runtime not in RUNTIMES:
            raise UsageError(f"--runtime {self.runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise UsageError(f"--workers {self.workers!r} is not a whole number of at least 1")
        self._check_routes()
        self.analysis()
        self.progressive()

    def _check_routes(self) -> None:
        if self.canary and self.shadow:
            raise UsageError(
                "--canary and --shadow together: run one at a time (a shadow first, then a canary)"
            )
        needs_canary = {
            "--weight": self.weight is not None,
            "--sticky": bool(self.sticky),
            "--step-weight": self.step_weight is not None,
            "--max-weight": self.max_weight is not None,
            "--promote-after": self.promote_after is not None,
            "--analysis-interval": self.analysis_interval is not None,
            "--max-error-rate": self.max_error_rate is not None,
            "--max-p99-ms": self.max_p99_ms is not None,
            "--min-requests": self.min_requests is not None,
            "--max-prediction-drift": self.max_prediction_drift is not None,
        }
        given = next((option for option, set_ in needs_canary.items() if set_), None)
        if self.canary is None and given is not None:
            raise UsageError(f"{given} needs --canary MODEL, the version it applies to")
        if self.shadow is None and self.shadow_fraction is not None:
            raise UsageError("--shadow-fraction needs --shadow MODEL, the version that scores them")
        if self.weight is not None:
            check_share(self.weight, "--weight")
        if self.shadow_fraction is not None:
            check_share(self.shadow_fraction, "--shadow-fraction")
        sticky = self.sticky
        if sticky is not None and (not sticky.strip() or not sticky.isascii() or ":" in sticky):
            raise UsageError(f"--sticky {sticky!r} is not a header name: give e.g. X-User-Id")

    def analysis(self) -> AnalysisOptions:
        """The canary analysis's options, checked, defaults filled in."""
        return analysis_options(
            self.analysis_interval,
            self.max_error_rate,
            self.max_p99_ms,
            self.min_requests,
            self.max_prediction_drift,
        )

    def start_weight(self) -> float:
        """The canary's weight at start: ``--weight``, else ``--step-weight``, else 0.1."""
        if self.canary is None:
            return 0.0
        if self.weight is not None:
            return check_share(self.weight, "--weight")
        if self.step_weight is not None:
            return check_share(self.step_weight, "--step-weight")
        return DEFAULT_WEIGHT

    def progressive(self) -> Progressive | None:
        """The progressive rollout asked for, checked; None when the weight stays put."""
        if self.max_weight is not None and self.step_weight is None:
            raise UsageError("--max-weight needs --step-weight F, the weight added per interval")
        if self.step_weight is None and self.promote_after is None:
            return None
        start, step, top = self.start_weight(), 0.0, self.start_weight()
        if self.step_weight is not None:
            step = check_share(self.step_weight, "--step-weight")
            if step <= 0:
                raise UsageError("--step-weight 0 adds nothing: give e.g. 0.1")
            top = DEFAULT_MAX_WEIGHT if self.max_weight is None else self.max_weight
            top = check_share(top, "--max-weight")
        if top < start or top <= 0:
            raise UsageError(
                f"--max-weight {top:g} is below the starting weight {start:g}: give a "
                f"--max-weight of at least {max(start, 0.01):g}"
            )
        return Progressive(step, top, _promote_after(self.promote_after))


def _promote_after(value) -> int | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (number >= 1 and number == int(number)):
        raise UsageError(
            f"--promote-after {value!r} is not a whole number of intervals of at least 1: "
            "give e.g. 3"
        )
    return int(number)
