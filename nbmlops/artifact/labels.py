"""Which ground-truth labels a model can be judged on: its classes, or finite numbers.

One rule for ``/feedback`` (which refuses the labels it breaks, naming each id) and for the
monitor (which skips and counts what an older server let into the log). JSON has one number
type, so a classifier with the classes 0 and 1 accepts the label ``1.0`` as 1 (clients whose
labels passed through a float column send exactly that) but refuses ``1.5``, ``true``, ``"1"``,
arrays and objects: a label must equal a class and be of the same JSON type (a string, a
number or a boolean). A regressor's label is a finite number, not a boolean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from nbmlops import jsoncodec
from nbmlops.artifact.schema import Schema
from nbmlops.artifact.validation import Problem
from nbmlops.jsoncodec import a_kind, json_kind

_SHOWN_CLASSES = 10
_SHOWN_CHARS = 40
_FLOAT_MAX = 1.7976931348623157e308
_NUMBERS = frozenset({"integer", "floating", "mixed-integer-float"})
_KIND_OF_DTYPE = {
    "number": _NUMBERS,
    "string": frozenset({"string"}),
    "boolean": frozenset({"boolean"}),
}


def label_problems(schema: Schema, items: Sequence[tuple[str, object]]) -> list[Problem]:
    """A problem for each ``(id, label)`` of ``items`` whose label ``schema``'s model cannot be
    judged on (see the module docstring); empty when all are fine.

    ``record`` is the item's index, ``field`` is ``"label"``, and the message names the id, the
    label and what is accepted. Anything but a JSON string, number, boolean or null (a parser's
    stand-in for a non-finite number, say) is refused.
    """
    refuse = _refusal(schema)
    problems = []
    for index, (id_, label) in enumerate(items):
        why = refuse(label)
        if why is not None:
            problems.append(Problem(index, "label", f"id {id_!r}: label {_show(label)} {why}"))
    return problems


def accepted(schema: Schema) -> str:
    """What ``schema``'s labels must be, as a phrase: "one of the model's classes (0, 1)"."""
    if schema.task == "regression" or schema.classes is None:
        return "a finite number"
    return f"one of the model's classes ({_show_classes(schema.classes)})"


def usable(schema: Schema, values: Sequence | pd.Series) -> np.ndarray:
    """Which ``values`` (labels, or logged predictions) ``schema``'s model can be judged on,
    as a boolean mask; one vectorised pass when they are all of the expected type."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    mask = _usable_at_once(schema, series)
    if mask is not None:
        return mask
    refuse = _refusal(schema)
    return np.fromiter((refuse(v) is None for v in series), dtype=bool, count=len(series))


def _usable_at_once(schema: Schema, series: pd.Series) -> np.ndarray | None:
    """The mask without a Python loop, or None when the values need looking at one by one."""
    classification = schema.task != "regression" and schema.classes is not None
    kinds = {json_kind(c) for c in schema.classes} if classification else {"number"}
    if len(kinds) != 1:
        return None
    (kind,) = kinds
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        found = "boolean"
    elif pd.api.types.is_numeric_dtype(dtype):
        found = "number"
    elif pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        found = next((k for k, names in _KIND_OF_DTYPE.items() if inferred in names), None)
    else:
        found = None
    if found != kind:
        return None
    if classification:
        # isin compares 1.0 and 1 as equal, as the rule wants; booleans never reach here
        # against numeric classes (their kinds differ)
        return series.isin(list(schema.classes)).to_numpy(dtype=bool)
    try:
        numbers = series.to_numpy(dtype=float, na_value=np.nan)
    except (OverflowError, TypeError, ValueError):
        return None
    return np.isfinite(numbers)


def _refusal(schema: Schema):
    """A function ``label -> None`` (fine) or the end of a sentence saying why not."""
    if schema.task == "regression" or schema.classes is None:

        def regression(label) -> str | None:
            # an integer beyond the floating-point range cannot be scored either
            if json_kind(label) != "number" or abs(label) > _FLOAT_MAX or not math.isfinite(label):
                return "is not a finite number (the model is a regressor)"
            return None

        return regression

    classes = tuple(schema.classes)
    kinds = {json_kind(c) for c in classes}
    wanted = accepted(schema)

    def classification(label) -> str | None:
        kind = json_kind(label)
        if kind != "other" and any(json_kind(c) == kind and c == label for c in classes):
            return None
        expected = next(iter(kinds)) if len(kinds) == 1 else None
        if kind in kinds or kind in ("null", "other") or expected not in _KINDS:
            return f"is not {wanted}"
        return f"is not {wanted}: it is {a_kind(label)}, the classes are {_KINDS[expected]}"

    return classification


_KINDS = {"string": "strings", "number": "numbers", "boolean": "booleans"}


def _show(value) -> str:
    """``value`` as a user wrote it: strings quoted, the rest in JSON, long ones shortened."""
    kind = json_kind(value)
    if kind == "string":
        text = repr(value)
    elif isinstance(value, float | np.floating) and not math.isfinite(value):
        text = "NaN" if math.isnan(value) else "-Infinity" if value < 0 else "Infinity"
    elif kind == "other":
        text = str(value)
    else:
        text = jsoncodec.dumps(value).decode()
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _show_classes(classes: Sequence) -> str:
    shown = ", ".join(_show(c) for c in classes[:_SHOWN_CLASSES])
    if len(classes) > _SHOWN_CLASSES:
        shown += f", ... ({len(classes)} classes)"
    return shown
