"""The validation gate of a retraining job: rules like ``f1_macro>=production-0.005``."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from nbmlops.errors import UsageError
from nbmlops.packaging.evaluate import LOWER_IS_BETTER

_RULE = re.compile(
    r"^\s*(?P<metric>[a-z_0-9]+)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<bound>production(?:\s*[+-]\s*\d+(?:\.\d+)?)?|-?\d+(?:\.\d+)?)\s*$"
)
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


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
        """``(passed, explanation)``; ``passed`` is None when the rule cannot apply."""
        value = candidate.get(self.metric)
        if value is None:
            return False, f"{self}: the candidate has no {self.metric}"
        if self.relative:
            if production is None or production.get(self.metric) is None:
                return None, f"{self}: no production score to compare with"
            bound = production[self.metric] + self.offset
        else:
            bound = self.bound
        passed = _OPS[self.op](value, bound)
        return (
            passed,
            f"{self.metric} {value:.4f} {self.op} {bound:.4f}: {'ok' if passed else 'fails'}",
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


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate may be promoted, with one line per rule."""

    passed: bool
    lines: tuple[str, ...]
    candidate: dict
    production: dict | None


def decide(rules: list[Rule], candidate: dict, production: dict | None) -> GateDecision:
    """Apply every rule; with no production version the gate passes."""
    if production is None:
        return GateDecision(
            True, ("no production version: the first model passes",), candidate, None
        )
    results = [rule.check(candidate, production) for rule in rules]
    passed = all(ok is not False for ok, _ in results)
    return GateDecision(passed, tuple(line for _, line in results), candidate, production)
