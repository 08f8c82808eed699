"""Input validation against ``schema.json``: records in, a typed frame out, or every problem named.

Runs before the model sees anything. A request with one bad record is rejected whole, and the
error lists each offending record index and field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from nbmlops.errors import ValidationError
from nbmlops.schema import Column, Schema

REJECT = "reject"
ALLOW = "allow"
MAX_PROBLEMS = 50
NULL_NOT_ALLOWED = "null is not allowed: training data had no missing values here"


@dataclass(frozen=True)
class Problem:
    """One offending value: which record, which field, what is wrong."""

    record: int | None
    field: str | None
    message: str

    def to_dict(self) -> dict:
        return {"record": self.record, "field": self.field, "message": self.message}


class Validator:
    """Checks records against a schema and builds the frame the model was trained on."""

    def __init__(self, schema: Schema, unknown_categories: str = REJECT) -> None:
        if unknown_categories not in (REJECT, ALLOW):
            raise ValueError(
                f"unknown_categories must be 'reject' or 'allow', not {unknown_categories!r}"
            )
        self.schema = schema
        self.unknown_categories = unknown_categories
        self._names = schema.names
        self._known = frozenset(self._names)
        self._checks = {c.name: _checker(c) for c in schema.columns}
        self._categories = {
            c.name: frozenset(c.categories) for c in schema.columns if c.categories is not None
        }
        self._builders = [(c.name, _builder(c)) for c in schema.columns]
        insisted = self._categories if unknown_categories == REJECT else {}
        self._column_checks = [
            (c.name, _column_check(c, insisted.get(c.name))) for c in schema.columns
        ]

    def frame(self, records: list) -> pd.DataFrame:
        """Validate ``records`` (a list of JSON objects) and return them as a typed frame."""
        self.check(records)
        return self.build(records)

    def check(self, records: list) -> None:
        """Raise :class:`ValidationError` naming every offending record and field."""
        if not isinstance(records, list) or not records:
            raise ValidationError([Problem(None, None, "no records: send at least one record")])
        if self._plainly_valid(records):
            return
        problems: list[Problem] = []
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                kind = _json_type(record)
                problems.append(Problem(index, None, f"a record must be a JSON object, got {kind}"))
                continue
            for name in record.keys() - self._known:
                trained = ", ".join(self._names)
                problems.append(
                    Problem(index, str(name), f"unknown field; the model was trained on {trained}")
                )
            for name in self._names:
                if name not in record:
                    problems.append(Problem(index, name, "missing field"))
                    continue
                message = self._check(name, record[name])
                if message is not None:
                    problems.append(Problem(index, name, message))
            if len(problems) >= MAX_PROBLEMS:
                break
        if problems:
            raise ValidationError(problems[:MAX_PROBLEMS])

    def _plainly_valid(self, records: list) -> bool:
        """Whether every record is an object with exactly the trained fields and every value
        is of a type and range the per-value checks surely accept: one pass per column, ~5x
        faster than a look at each value. False sends the records through those checks."""
        known = self._known
        if not all(type(r) is dict and r.keys() == known for r in records):
            return False
        return all(ok([r[name] for r in records]) for name, ok in self._column_checks)

    def check_frame(self, frame: pd.DataFrame) -> None:
        """Raise :class:`ValidationError` naming each offending row (by position) and column
        of ``frame``: the checks of :meth:`check`, vectorised for frames of any size."""
        problems = [
            Problem(None, name, "missing column") for name in self._names if name not in frame
        ]
        for column in self.schema.columns:
            if column.name in frame:
                problems += self._frame_column_problems(column, frame[column.name])
            if len(problems) >= MAX_PROBLEMS:
                break
        if problems:
            raise ValidationError(problems[:MAX_PROBLEMS])

    def _frame_column_problems(self, column: Column, series: pd.Series) -> list[Problem]:
        """Problems of one column; a column already of a fitting dtype costs next to nothing."""
        name, dtype = column.name, series.dtype
        missing = series.isna().to_numpy()
        if not column.nullable and missing.any():
            return _rows(missing, name, NULL_NOT_ALLOWED)
        is_bool = pd.api.types.is_bool_dtype(dtype)
        if column.kind == "numeric":
            if not pd.api.types.is_numeric_dtype(dtype) or is_bool:
                numbers = pd.to_numeric(series, errors="coerce").isna().to_numpy()
                return _rows(~missing & (numbers | _booleans(series)), name, "expected a number")
            if column.dtype.lower().startswith(("int", "uint")) and dtype.kind == "f":
                fractional = np.mod(series.to_numpy(dtype=float), 1) != 0
                return _rows(~missing & fractional, name, "expected an integer")
            return []
        if column.kind == "boolean" and not is_bool:
            return _rows(~missing & ~_booleans(series), name, "expected true or false")
        allowed = self._categories.get(name)
        if allowed is None or self.unknown_categories != REJECT:
            return []
        if isinstance(dtype, pd.CategoricalDtype) and set(dtype.categories) <= allowed:
            return []
        unseen = ~missing & ~series.isin(allowed).to_numpy()
        if not unseen.any():
            return []
        first = series.iloc[int(np.flatnonzero(unseen)[0])]
        return _rows(
            unseen,
            name,
            f"{first!r} is a category never seen in training; pass unknown_categories='allow' "
            "to accept new categories",
        )

    def build(self, records: list[dict]) -> pd.DataFrame:
        """The frame of records that passed :meth:`check`, with the training dtypes."""
        return pd.DataFrame(
            {name: build([r[name] for r in records]) for name, build in self._builders},
            copy=False,
        )

    def _check(self, name: str, value) -> str | None:
        column = self.schema.column(name)
        if value is None:
            if column.nullable:
                return None
            return NULL_NOT_ALLOWED
        message = self._checks[name](value)
        if message is not None:
            return message
        allowed = self._categories.get(name)
        if allowed is not None and value not in allowed and self.unknown_categories == REJECT:
            seen = ", ".join(map(str, sorted(allowed, key=str)[:20]))
            return (
                f"{value!r} is a category never seen in training (seen: {seen}); start the "
                "server with --unknown-categories allow to accept new categories"
            )
        return None


def _checker(column: Column):
    """A function ``value -> error message or None`` for the column's kind and dtype."""
    kind = column.kind
    if kind == "numeric":
        integer = column.dtype.lower().startswith(("int", "uint"))
        return lambda v: _check_number(v, integer)
    if kind == "boolean":
        return lambda v: None if isinstance(v, bool) else f"expected true or false, got {_show(v)}"
    if kind == "datetime":
        return _check_datetime
    if _other_categories(column):
        return lambda v: (
            f"expected a category, got {_show(v)}" if isinstance(v, (list, dict)) else None
        )
    return lambda v: None if isinstance(v, str) else f"expected a string, got {_show(v)}"


def _other_categories(column: Column) -> bool:
    """Whether the column's categories include values other than strings (any JSON value is
    then taken as a possible category)."""
    categories = column.categories
    return bool(categories) and not all(isinstance(c, str) for c in categories)


def _column_check(column: Column, allowed: frozenset | None):
    """A function ``values -> bool``: True when every value of the column surely passes
    :meth:`Validator._check` (``allowed``: the categories it insists on, if any); False means
    "look at each value", never "invalid"."""
    nullable = column.nullable

    def present(values: list) -> list:
        return [v for v in values if v is not None] if nullable else values

    def only(values: list, types: set) -> bool:
        kinds = set(map(type, values))  # exact types: a bool is not taken for an int
        if nullable:
            kinds.discard(type(None))
        return kinds <= types

    if column.kind == "numeric" and column.dtype.lower().startswith(("int", "uint")):

        def integers(values):
            values = present(values)
            return only(values, {int}) and (
                not values or (_INT64_MIN <= min(values) and max(values) <= _INT64_MAX)
            )

        return integers
    if column.kind == "numeric":

        def numbers(values):
            if not only(values, {int, float}):
                return False
            try:
                return math.isfinite(sum(present(values)))  # NaN or an infinity would show
            except OverflowError:  # an integer beyond the floating-point range
                return False

        return numbers
    if column.kind == "boolean":
        return lambda values: only(values, {bool})
    if column.kind == "datetime" or _other_categories(column):
        return lambda values: False  # value by value

    def strings(values):
        if not only(values, {str}):
            return False
        return allowed is None or set(present(values)) <= allowed

    return strings


def _check_number(value, integer: bool) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {_show(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, got {value}"
    if integer and isinstance(value, float) and not value.is_integer():
        return f"expected an integer (the column is integer in training), got {value}"
    if integer and not _INT64_MIN <= value <= _INT64_MAX:
        return f"{value} is out of the 64-bit integer range"
    if isinstance(value, int) and abs(value) > _FLOAT_MAX:
        return f"{value} is out of the floating-point range"
    return None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_MAX = 1.7976931348623157e308


def _check_datetime(value) -> str | None:
    if not isinstance(value, str):
        return f"expected an ISO-8601 date-time string, got {_show(value)}"
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return f"expected an ISO-8601 date-time string, got {value!r}"
    return None


def _booleans(series: pd.Series) -> np.ndarray:
    """Which values are booleans (Python or numpy), whatever the column's dtype."""
    return series.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(bool)


def _rows(mask: np.ndarray, name: str, message: str) -> list[Problem]:
    """A problem for each of the first offending rows (positions) in ``mask``."""
    return [Problem(int(row), name, message) for row in np.flatnonzero(mask)[:MAX_PROBLEMS]]


def _builder(column: Column):
    """A function ``values -> column array`` with the training dtype of ``column``.

    Building pandas objects from a few values costs more than scoring them, so the common
    dtypes get a direct constructor with everything that does not depend on the values
    prepared once; the rest (and categories never seen in training) take pandas' general path.
    """
    dtype = column.dtype
    if column.kind == "numeric" and column.nullable and dtype.startswith("int"):
        dtype = "float64"
    if dtype == "category":
        return _category_builder(list(column.categories or ()))
    if column.kind == "datetime":
        return lambda values: pd.Series(pd.to_datetime(values)).astype(dtype)
    if dtype in ("str", "string"):
        string_dtype = pd.api.types.pandas_dtype(dtype)
        return lambda values: pd.array(values, dtype=string_dtype)
    numpy_dtype = _numpy_dtype(dtype)
    if numpy_dtype is not None and not (numpy_dtype.kind == "b" and column.nullable):
        return lambda values: np.array(values, dtype=numpy_dtype)
    return lambda values: pd.Series(values, dtype=dtype)


def _category_builder(known: list):
    category_dtype = pd.CategoricalDtype(known)
    codes = {value: code for code, value in enumerate(known)}
    codes[None] = -1

    def build(values: list):
        try:
            return pd.Categorical.from_codes([codes[v] for v in values], dtype=category_dtype)
        except (KeyError, TypeError):  # a category never seen in training (allowed) or unhashable
            extra = sorted({v for v in values if v is not None and v not in codes}, key=str)
            return pd.Categorical(values, categories=known + extra)

    return build


def _numpy_dtype(dtype: str) -> np.dtype | None:
    """The numpy dtype of a bool, integer or float column, or None for anything else."""
    try:
        numpy_dtype = np.dtype(dtype)
    except TypeError:
        return None
    return numpy_dtype if numpy_dtype.kind in "biuf" else None


def _json_type(value) -> str:
    names = {list: "an array", dict: "an object", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _show(value) -> str:
    return (
        f"{_json_type(value)} {value!r}"
        if not isinstance(value, (dict, list))
        else _json_type(value)
    )
