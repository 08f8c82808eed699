"""Functions for ``tests/packaging/test_capture.py`` to capture.

They live in a real source file because ``nbmlops.packaging.capture`` reads source with
``inspect.getsource``; each stands for something a user writes in a notebook cell.
"""

from __future__ import annotations

import functools
from math import sqrt
from math import sqrt as square_root

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

# -- a function, its helper, a constant and a module alias -----------------------------------

LOG_OFFSET = 1.5
CHARGE_COLUMNS = ["monthly_charges", "total_charges"]


def log_charge(values):
    """A helper: reads a module-level constant and uses ``np``."""
    return np.log(values + LOG_OFFSET)


def add_log_charges(frame):
    """The entry point: calls a helper and reads a list constant."""
    out = frame.copy()
    for column in CHARGE_COLUMNS:
        out[f"log_{column}"] = log_charge(out[column])
    return out


def distance(frame):
    """Uses a function imported with ``from math import sqrt``."""
    return [sqrt(x * x + y * y) for x, y in zip(frame["x"], frame["y"], strict=True)]


def distance_aliased(frame):
    """Uses a function imported under another name."""
    return [square_root(abs(x)) for x in frame["x"]]


def to_frame(values):
    """Uses ``pd``, an aliased module."""
    return pd.DataFrame({"value": values})


# -- constants that must round-trip exactly ---------------------------------------------------

NESTED_CONSTANT = {
    "bins": [0, 6, 24, 48, 1000],
    "labels": ("new", "young", "settled", "loyal"),
    "fill": float("nan"),
    "cap": float("inf"),
    "floor": -0.0,
    "weights": {"a": 0.1, "b": [1, 2.5, None, True]},
    "tags": {"x", "y"},
    "raw": b"\x00\x01",
}
NAN_CONSTANT = float("nan")
NUMPY_SCALARS = [np.float64(0.1), np.int64(7)]


# Built from a numpy array, as category lists often are: the items are np.str_, not str.
REGION_LEVELS = sorted(set(np.array(["north", "south", "east"])))


def uses_numpy_strings(frame):
    return list(REGION_LEVELS)


def use_constants(frame):
    return NESTED_CONSTANT, NAN_CONSTANT, NUMPY_SCALARS, len(frame)


# -- decorator and default argument: order of definitions matters ----------------------------


def tag(fn):
    fn.tagged = True
    return fn


def default_scale():
    return 3.0


@tag
def scaled(frame, factor=default_scale()):  # noqa: B008 - a default computed by a helper
    return frame * factor


# -- things that cannot be captured -----------------------------------------------------------

LOOKUP_FILE = None  # tests put an open file handle here


def read_lookup(frame):
    """Reads a global that a test replaces with an open file."""
    return LOOKUP_FILE.read(), frame


TRANSFORMS = {"double": lambda x: x * 2, "identity": None}


def apply_transforms(frame):
    return TRANSFORMS["double"](frame)


def uses_undefined(frame):
    return frame * NOT_DEFINED_ANYWHERE  # noqa: F821 - the point of the test


SCALER = StandardScaler().fit(np.array([[1.0], [2.0], [3.0]]))


def uses_fitted_scaler(frame):
    return SCALER.transform(frame)


@functools.lru_cache
def cached_rate(months):
    """A helper wrapped by a decorator: no longer a plain function, still local code."""
    return months / 12


def uses_cached_helper(frame):
    return cached_rate(len(frame))


def make_scaler(factor):
    def scale(frame):
        return frame * factor

    return scale


# -- used by the packaged models of tests/_store.py -------------------------------------------


def add_charge_per_call(frame):
    """Preprocessing for the registry tests: one new column, one row per input row."""
    out = frame.copy()
    out["charge_per_call"] = out["monthly_charges"] / (out["support_calls"] + 1)
    return out


def center_charges(frame):
    """Batch-dependent on purpose: the mean of whatever rows are scored together."""
    out = frame[["monthly_charges", "support_calls"]].copy()
    out["monthly_charges"] = out["monthly_charges"] - out["monthly_charges"].mean()
    return out


def fails_on_long_tenure(frame):
    """Raises on a value the schema accepts (tenure beyond any seen), like a real featurizer bug."""
    if (frame["tenure_months"] > 1000).any():
        raise ValueError("internal detail: lookup table has no row for this tenure")
    return add_charge_per_call(frame)


def reads_the_index(frame):
    """Skew on purpose: a feature from the row labels, which a server's frame does not keep."""
    out = add_charge_per_call(frame)
    out["row_label"] = frame.index.to_numpy() % 7
    return out
