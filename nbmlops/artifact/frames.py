"""Frames with the training dtypes, rebuilt from ``schema.json``: one builder for every path.

The server, ``nbmlops.load(...).predict`` and the parity check all turn input into the frame the
model was trained on here, so a category keeps its training order (and codes), a datetime its
unit and time zone, a nullable integer its ``Int64``. Records are converted value by value, on
their own (:meth:`FrameBuilder.columns`), before any batch is assembled: pandas infers one
datetime format per array, so parsing a batch at once would let one caller's spelling fail its
neighbours.
"""

from __future__ import annotations

import itertools
import math
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from nbmlops.artifact.schema import Column, Schema
from nbmlops.jsoncodec import describe

#: How a missing datetime may be spelled besides null (pandas and MLflow's client write it).
NAT_SPELLINGS = frozenset({"NaT"})
_NANOS = re.compile(r"^(.*[T ]\d\d:\d\d:\d\d\.\d{6})\d{1,3}(.*)$")


def is_missing_datetime(value) -> bool:
    """Whether a JSON value stands for a missing datetime: null, or pandas' ``"NaT"``."""
    return value is None or (type(value) is str and value in NAT_SPELLINGS)


class DatetimeProblem(ValueError):
    """A value that cannot become a datetime of its column; the message says what to send."""


def parse_datetime(value, column: Column) -> datetime | None:
    """The ISO-8601 string ``value`` as the naive datetime the column stores (in UTC for a
    column with a time zone); None for a missing value.

    Policy: a value with an offset for a column trained without a time zone, or one without an
    offset for a column with one, is refused (converting would guess a zone); a value with an
    offset for a zoned column is converted. Digits beyond microseconds are dropped.
    """
    if is_missing_datetime(value):
        return None
    if not isinstance(value, str):
        raise DatetimeProblem(f"expected an ISO-8601 date-time string, got {describe(value)}")
    try:
        parsed = datetime.fromisoformat(_NANOS.sub(r"\1\2", value.strip()))
    except ValueError:
        raise DatetimeProblem(
            f"expected an ISO-8601 date-time string such as 2026-01-31T09:30:00, got {value!r}"
        ) from None
    if column.tz is None and parsed.tzinfo is not None:
        raise DatetimeProblem(
            f"{value!r} has a time zone, but the column was trained without one: send the "
            "time as the training data wrote it, without an offset"
        )
    if column.tz is not None:
        if parsed.tzinfo is None:
            raise DatetimeProblem(
                f"{value!r} has no time zone, but the column was trained in {column.tz}: send "
                "an offset (e.g. ...+00:00 or Z)"
            )
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    try:
        pd.Timestamp(parsed).as_unit(column.unit or "ns")
    except (OverflowError, ValueError):  # pandas' OutOfBoundsDatetime is a ValueError
        raise DatetimeProblem(
            f"{value!r} is outside the range a datetime64[{column.unit}] column can hold"
        ) from None
    return parsed


class FrameBuilder:
    """Builds frames with the training dtypes of ``schema``: from JSON records, or by
    conforming a caller's frame."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._converters = [(c.name, _converter(c)) for c in schema.columns if c.kind == "datetime"]
        self._plain = [c.name for c in schema.columns if c.kind != "datetime"]
        self._builders = [(c.name, _builder(c)) for c in schema.columns]

    def columns(self, records: list[dict]) -> dict[str, list]:
        """The values of checked ``records`` per column, each converted on its own."""
        columns = {name: [r[name] for r in records] for name in self._plain}
        for name, convert in self._converters:
            columns[name] = [convert(r[name]) for r in records]
        return columns

    def frame(self, parts: list[dict[str, list]]) -> pd.DataFrame:
        """One frame from the :meth:`columns` of one or more requests, in order."""
        if len(parts) == 1:
            merged = parts[0]
        else:
            merged = {
                name: list(itertools.chain.from_iterable(p[name] for p in parts))
                for name, _ in self._builders
            }
        return pd.DataFrame(
            {name: build(merged[name]) for name, build in self._builders}, copy=False
        )

    def build(self, records: list[dict]) -> pd.DataFrame:
        """The frame of checked ``records``."""
        return self.frame([self.columns(records)])

    def conform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``'s schema columns with the training dtypes (a checked frame: see
        :meth:`Validator.check_frame`); values are kept, categories recoded by value."""
        return pd.DataFrame(
            {c.name: _conform(c, frame[c.name]) for c in self.schema.columns},
            index=frame.index,
            copy=False,
        )


def _converter(column: Column):
    return lambda value: parse_datetime(value, column)


def _builder(column: Column):
    """A function ``values -> column array`` with the training dtype of ``column``.

    Building pandas objects from a few values costs more than scoring them, so the common
    dtypes get a direct constructor with everything that does not depend on the values
    prepared once; the rest (and categories never seen in training) take pandas' general path.
    """
    dtype = _rebuilt_dtype(column)
    if dtype == "category":
        return _category_builder(column)
    if column.kind == "datetime":
        return _datetime_builder(column)
    if dtype in ("str", "string"):
        string_dtype = pd.api.types.pandas_dtype(dtype)
        return lambda values: pd.array(values, dtype=string_dtype)
    numpy_dtype = _numpy_dtype(dtype)
    if numpy_dtype is not None and not (numpy_dtype.kind == "b" and column.nullable):
        return lambda values: np.array(values, dtype=numpy_dtype)
    if dtype == "object":
        return lambda values: np.array(values, dtype=object)
    pandas_dtype = pd.api.types.pandas_dtype(dtype)
    return lambda values: pd.array(values, dtype=pandas_dtype)


def _rebuilt_dtype(column: Column) -> str:
    """The dtype a column is rebuilt with: its training dtype, but float64 for a numpy integer
    column that is nullable (numpy integers cannot hold a missing value)."""
    if column.kind == "numeric" and column.nullable and column.dtype.startswith("int"):
        return "float64"
    return column.dtype


def _category_builder(column: Column):
    known = list(column.categories or ())
    category_dtype = _category_dtype(column, known)
    codes = {value: code for code, value in enumerate(known)}
    codes[None] = -1

    def build(values: list):
        try:
            return pd.Categorical.from_codes([codes[v] for v in values], dtype=category_dtype)
        except (KeyError, TypeError):  # a category never seen in training (allowed)
            extra = sorted({v for v in values if v is not None and v not in codes}, key=str)
            return pd.Categorical(values, dtype=_category_dtype(column, known + extra))

    return build


def _category_dtype(column: Column, categories: list) -> pd.CategoricalDtype:
    index = pd.Index(categories, dtype=column.categories_dtype or None)
    return pd.CategoricalDtype(index, ordered=column.ordered)


def _datetime_builder(column: Column):
    unit = column.unit or "ns"
    naive = np.dtype(f"datetime64[{unit}]")
    zone = None if column.tz is None else pd.api.types.pandas_dtype(column.dtype).tz

    def build(values: list):
        array = np.array(values, dtype=naive)  # naive datetimes, in UTC for a zoned column
        if zone is None:
            return array
        return pd.DatetimeIndex(array).tz_localize("UTC").tz_convert(zone).array

    return build


def _conform(column: Column, series: pd.Series):
    if column.kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            return _conform_datetimes(column, series)
        values = [datetime_text(v) for v in series.tolist()]
        return _datetime_builder(column)([parse_datetime(v, column) for v in values])
    if column.dtype == "category":
        known = list(column.categories or ())
        target = _category_dtype(column, known)
        if series.dtype == target:
            return series
        extra = sorted(set(series.dropna().unique()) - set(known), key=str)
        return series.astype(_category_dtype(column, known + extra) if extra else target)
    dtype = _rebuilt_dtype(column)
    if str(series.dtype) == dtype:
        return series
    try:
        return series.astype(dtype)
    except (TypeError, ValueError):  # e.g. an object column of mixed values: keep as given
        return series


def _conform_datetimes(column: Column, series: pd.Series) -> pd.Series:
    """A datetime series in the column's unit and zone (the check refused mismatched zones)."""
    target = pd.api.types.pandas_dtype(column.dtype)
    if column.tz is not None:
        series = series.dt.tz_convert(target.tz)
    return series.astype(target)


def datetime_text(value):
    """A frame's datetime value (a Timestamp, a datetime or a string) as ISO text or None."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _numpy_dtype(dtype: str) -> np.dtype | None:
    """The numpy dtype of a bool, integer or float column, or None for anything else."""
    try:
        numpy_dtype = np.dtype(dtype)
    except TypeError:
        return None
    return numpy_dtype if numpy_dtype.kind in "biuf" else None


def to_records(frame: pd.DataFrame) -> list[dict]:
    """``frame`` as JSON-ready records, the way a client sends them: ISO-8601 datetimes (with
    their offset when zoned), null for every missing value, numpy values as plain numbers."""
    columns = {}
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            values = [None if v is pd.NaT else v.isoformat() for v in series.tolist()]
        else:
            values = [_plain(v) for v in series.astype(object).tolist()]
        columns[str(name)] = values
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _plain(value):
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value
