"""The input and output schema of a model, inferred from its raw training frame."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from nbmlops.errors import ArtifactError, UsageError

#: 2 adds category order and ``ordered``, the categories' own dtype, datetime unit and time zone,
#: and the largest magnitude the model can hold; version 1 files are still read.
FORMAT_VERSION = 2

#: A text column is categorical (values outside its set are refused) when it has at most this
#: many distinct values...
MAX_CATEGORIES = 100
#: ...and its values repeat: at most this share of its non-null values is distinct (each value
#: seen twice on average), so ids and names in a small training set stay free text.
MAX_DISTINCT_SHARE = 0.5


@dataclass(frozen=True)
class Column:
    """One input column: what training saw, exactly enough to rebuild the training dtype.

    ``categories`` keeps a pandas Categorical's own order (its codes follow it) and ``ordered``
    its flag; for other categorical columns it is the sorted set of values seen. ``unit`` and
    ``tz`` describe a datetime column (``tz`` None: naive). ``max_abs`` is the largest magnitude
    the model can hold in a numeric column (float32 in tree models), None when unbounded.
    """

    name: str
    dtype: str
    kind: str  # numeric | boolean | categorical | text | datetime
    nullable: bool
    min: float | None = None
    max: float | None = None
    categories: tuple | None = None
    ordered: bool = False
    categories_dtype: str | None = None
    unit: str | None = None
    tz: str | None = None
    max_abs: float | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "kind": self.kind,
            "nullable": self.nullable,
            "min": self.min,
            "max": self.max,
            "categories": None if self.categories is None else list(self.categories),
            "ordered": self.ordered,
            "categories_dtype": self.categories_dtype,
            "unit": self.unit,
            "tz": self.tz,
            "max_abs": self.max_abs,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Column:
        cats = data.get("categories")
        unit, tz = data.get("unit"), data.get("tz")
        if data["kind"] == "datetime" and unit is None:  # format 1: read them off the dtype
            unit, tz = _datetime_unit_tz(pd.api.types.pandas_dtype(data["dtype"]))
        return cls(
            name=data["name"],
            dtype=data["dtype"],
            kind=data["kind"],
            nullable=bool(data["nullable"]),
            min=data.get("min"),
            max=data.get("max"),
            categories=None if cats is None else tuple(cats),
            ordered=bool(data.get("ordered", False)),
            categories_dtype=data.get("categories_dtype"),
            unit=unit,
            tz=tz,
            max_abs=data.get("max_abs"),
        )

    @property
    def is_integer(self) -> bool:
        """Whether the column holds integers (numpy or pandas' nullable ``Int64``...)."""
        return self.kind == "numeric" and self.dtype.lower().startswith(("int", "uint"))


@dataclass(frozen=True)
class Schema:
    """Input columns in order, plus the task and the output (class labels for classifiers)."""

    columns: tuple[Column, ...]
    task: str  # classification | regression
    output_dtype: str
    classes: tuple | None = None
    format_version: int = field(default=FORMAT_VERSION)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "format_version": self.format_version,
            "task": self.task,
            "columns": [c.to_dict() for c in self.columns],
            "output": {
                "dtype": self.output_dtype,
                "classes": None if self.classes is None else list(self.classes),
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> Schema:
        version = check_format_version(data, "schema.json", FORMAT_VERSION)
        classes = data["output"].get("classes")
        return cls(
            columns=tuple(Column.from_dict(c) for c in data["columns"]),
            task=data["task"],
            output_dtype=data["output"]["dtype"],
            classes=None if classes is None else tuple(classes),
            format_version=version,
        )


def check_format_version(data: dict, file: str, supported: int) -> int:
    """The format version of an artifact file; refuses versions newer than ``supported``."""
    version = int(data.get("format_version", 1))
    if version > supported:
        raise ArtifactError(
            f"{file} has format version {version}; this nbmlops reads up to {supported}. "
            "Upgrade nbmlops to load this artifact."
        )
    return version


def column_kind(series: pd.Series) -> str:
    """The kind of a column: numeric, boolean, categorical, text or datetime (see
    :data:`MAX_CATEGORIES` and :data:`MAX_DISTINCT_SHARE` for text columns; a pandas
    Categorical is always categorical)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    values = series.dropna()
    if len(values) and values.map(type).isin([bool, np.bool_]).all():
        return "boolean"
    distinct = values.nunique()
    if distinct <= MAX_CATEGORIES and distinct <= MAX_DISTINCT_SHARE * len(values):
        return "categorical"
    return "text"


def column_kinds(data: pd.DataFrame, categorical=(), free_text=()) -> dict[str, str]:
    """The kind of each column of ``data``, with the text columns the user named taken as
    categories (``categorical``) or as free text (``free_text``)."""
    kinds = {str(name): column_kind(data[name]) for name in data.columns}
    categorical, free_text = list(categorical or ()), list(free_text or ())
    both = sorted(set(categorical) & set(free_text))
    if both:
        raise UsageError(
            f"--categorical and --free-text both name {', '.join(both)}; name each column in one"
        )
    unknown = [c for c in categorical + free_text if c not in kinds]
    if unknown:
        raise UsageError(
            f"--categorical/--free-text name {', '.join(map(repr, unknown))}, which --data does "
            f"not have; its columns are {', '.join(kinds)}"
        )
    for option, names, kind in (
        ("--categorical", categorical, "categorical"),
        ("--free-text", free_text, "text"),
    ):
        for name in names:
            dtype = data[name].dtype
            if isinstance(dtype, pd.CategoricalDtype) and kind == "text":
                raise UsageError(
                    f"--free-text {name}: the column is a pandas Categorical, whose categories "
                    "are fixed; convert it in the cell (.astype(str)) to take it as free text"
                )
            if kinds[name] not in ("categorical", "text"):
                raise UsageError(
                    f"{option} {name}: the column is {kinds[name]} ({dtype}); only text "
                    "columns can be taken as categories or free text"
                )
            kinds[name] = kind
    return kinds


def infer_schema(
    data: pd.DataFrame, task: str, predictions: pd.Series, classes, kinds: dict | None = None
) -> Schema:
    """Infer the schema of the raw frame ``data`` and the model's output; ``kinds`` (from
    :func:`column_kinds`) overrides the kind inferred for a column."""
    kinds = kinds or {}
    columns = []
    for name in data.columns:
        series = data[name]
        kind = kinds.get(str(name)) or column_kind(series)
        col = Column(
            name=str(name),
            dtype=str(series.dtype),
            kind=kind,
            nullable=bool(series.isna().any()),
        )
        if kind == "numeric":
            values = series.dropna().astype(float)
            if len(values):
                col = replace(col, min=float(values.min()), max=float(values.max()))
        elif kind in ("categorical", "boolean"):
            col = replace(col, categories=tuple(_categories(series)))
        if isinstance(series.dtype, pd.CategoricalDtype):
            col = replace(
                col,
                ordered=bool(series.dtype.ordered),
                categories_dtype=str(series.dtype.categories.dtype),
            )
        elif kind == "datetime":
            unit, tz = _datetime_unit_tz(series.dtype)
            col = replace(col, unit=unit, tz=tz)
        columns.append(col)
    return Schema(
        columns=tuple(columns),
        task=task,
        output_dtype=str(predictions.dtype),
        classes=None if classes is None else tuple(to_json_value(c) for c in classes),
    )


def _categories(series: pd.Series) -> list:
    """A Categorical's categories in its own order (its codes follow it); else the values seen,
    sorted."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return [to_json_value(v) for v in series.cat.categories]
    values = list(pd.unique(series.dropna()))
    return sorted((to_json_value(v) for v in values), key=lambda v: (str(type(v)), v))


def _datetime_unit_tz(dtype) -> tuple[str, str | None]:
    """The unit (``ns``, ``us``...) and time zone (None: naive) of a datetime dtype."""
    unit = getattr(dtype, "unit", None) or np.datetime_data(dtype)[0]
    tz = getattr(dtype, "tz", None)
    return unit, None if tz is None else str(tz)


def to_json_value(value):
    """A numpy or pandas scalar as a plain JSON value."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value
