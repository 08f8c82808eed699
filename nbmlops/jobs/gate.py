"""The validation gate of a retraining job: rules like ``f1_macro>=production-0.005``.

Absolute rules (``roc_auc>=0.8``) always apply. Rules relative to production apply when there
is a production version; without one they are reported as not applied, so a first model passes
when every absolute rule holds (the default gate, relative only, passes it). A rule that cannot
be judged when it should (no score for its metric) rejects.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from nbmlops.errors import UsageError
from nbmlops.packaging.evaluate import CLASSIFICATION_METRICS, LOWER_IS_BETTER, REGRESSION_METRICS

_RULE = re.compile(
    r"^\s*(?P<metric>[a-z_0-9]+)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<bound>production(?:\s*[+-]\s*\d+(?:\.\d+)?)?|-?\d+(?:\.\d+)?)\s*$"
)
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
#: The metrics the gate scores (those of ``packaging.evaluate``), per task.
TASK_METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}


@dataclass(frozen=True)
class Rule:
    """``METRIC OP BOUND``: BOUND is a number, ``production`` or ``production±D``."""

    metric: str
    op: str
    bound: float | None
    offset: float = 0.0

    @property
    def relative(self) -> bool:
        return self.bound is None

    def __str__(self) -> str:
        if not self.relative:
            return f"{self.metric}{self.op}{self.bound:g}"
        sign = "" if not self.offset else f"{self.offset:+g}"
        return f"{self.metric}{self.op}production{sign}"

    def check(self, candidate: dict, production: dict | None) -> tuple[bool | None, str]:
        """``(passed, explanation)``; ``passed`` is None for a rule relative to production when
        there is no production version."""
        value = candidate.get(self.metric)
        if value is None:
            return False, f"{self}: fails, the candidate has no {self.metric}{_WHY_NO_SCORE}"
        if self.relative:
            if production is None:
                return None, f"{self}: not applied, there is no production version"
            if production.get(self.metric) is None:
                return False, (
                    f"{self}: fails, production has no {self.metric} to compare with{_WHY_NO_SCORE}"
                )
            bound = production[self.metric] + self.offset
        else:
            bound = self.bound
        passed = _OPS[self.op](value, bound)
        return (
            passed,
            f"{self.metric} {value:.4f} {self.op} {bound:.4f}: {'ok' if passed else 'fails'}",
        )


_WHY_NO_SCORE = (
    " on the held-out data (roc_auc and log_loss need class probabilities and two classes "
    "in the labels)"
)


def default_rules(primary: str) -> list[Rule]:
    """Not worse than production on the primary metric."""
    return [Rule(primary, "<=" if primary in LOWER_IS_BETTER else ">=", None)]


def parse_rules(text: str | None, primary: str) -> list[Rule]:
    """Comma-separated rules; none given means :func:`default_rules`."""
    if not text:
        return default_rules(primary)
    rules = []
    for part in text.split(","):
        match = _RULE.match(part)
        if not match:
            raise UsageError(
                f"--gate rule {part.strip()!r} is not METRIC OP BOUND; e.g. "
                "f1_macro>=production-0.005 or roc_auc>=0.8"
            )
        bound = match.group("bound").replace(" ", "")
        if bound.startswith("production"):
            offset = float(bound[len("production") :] or 0)
            rules.append(Rule(match.group("metric"), match.group("op"), None, offset))
        else:
            rules.append(Rule(match.group("metric"), match.group("op"), float(bound)))
    return rules


def check_metrics(rules: list[Rule], task: str | None) -> None:
    """Refuse a rule on a metric the gate cannot score for ``task`` (None: not known yet, so
    only names that no task scores are refused)."""
    allowed = TASK_METRICS.get(task, CLASSIFICATION_METRICS + REGRESSION_METRICS)
    for rule in rules:
        if rule.metric not in allowed:
            if task in TASK_METRICS:
                known = f"the gate scores a {task} model on {', '.join(allowed)}"
            else:
                known = "the gate scores " + "; ".join(
                    f"{t} models on {', '.join(m)}" for t, m in TASK_METRICS.items()
                )
            raise UsageError(f"--gate rule {str(rule)!r}: no metric {rule.metric!r}; {known}")


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate may be promoted, with one line per rule."""

    passed: bool
    lines: tuple[str, ...]
    candidate: dict
    production: dict | None


def decide(rules: list[Rule], candidate: dict, production: dict | None) -> GateDecision:
    """Apply every rule; see the module docstring for what applies without production."""
    results = [rule.check(candidate, production) for rule in rules]
    passed = all(ok is not False for ok, _ in results)
    lines = [line for _, line in results]
    if production is None:
        absolute = any(not rule.relative for rule in rules)
        if passed:
            held = " (every absolute rule holds)" if absolute else ""
            lines.insert(0, f"no production version: the first model passes{held}")
        else:
            lines.insert(0, "no production version, and the first model fails a rule")
    return GateDecision(passed, tuple(lines), candidate, production)
