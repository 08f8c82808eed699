"""Parsing what the log read in bulk: JSON texts into one frame, numbers into an array."""

from __future__ import annotations

import contextlib
import gc
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd

from nbmlops import jsoncodec


@contextlib.contextmanager
def collector_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def json_lines_frame(texts: Sequence) -> tuple[pd.DataFrame, int]:
    """One JSON object per text, as a frame, parsed in one go; and how many texts are not a
    JSON object (no row: the frame's index is the position of each text it read)."""
    if not texts:
        return pd.DataFrame(), 0
    table = _arrow_table(texts)
    if table is not None and table.num_rows == len(texts):
        frame = table.to_pandas()
        # pyarrow reads a ``null`` line as a row of nulls: there is none when some column has
        # no null at all, else only the rows of nulls need a second look
        if table.num_columns and min(c.null_count for c in table.columns) == 0:
            return frame, 0
        nulls = frame.isna().all(axis=1).to_numpy() if table.num_columns else None
        candidates = range(len(texts)) if nulls is None else np.flatnonzero(nulls)
        bad = [i for i in candidates if not isinstance(_object(texts[i]), dict)]
        return frame.drop(index=bad), len(bad)
    # Something pyarrow refuses: a text that is not an object, or a field whose values are of
    # mixed types. Objects are told apart one text at a time, then parsed together again.
    keep = [i for i, text in enumerate(texts) if _looks_like_object(text)]
    table = _arrow_table([texts[i] for i in keep]) if len(keep) < len(texts) else None
    if table is not None and table.num_rows == len(keep):
        frame = table.to_pandas()
    else:
        with collector_paused():
            parsed = [(i, _object(texts[i])) for i in keep]
            keep = [i for i, value in parsed if isinstance(value, dict)]
            frame = pd.DataFrame([value for _, value in parsed if isinstance(value, dict)])
    frame.index = pd.Index(keep) if len(frame) else pd.RangeIndex(0)
    return frame, len(texts) - len(keep)


def _arrow_table(texts: Sequence):
    """The table pyarrow reads from ``texts``, one JSON text a line, or None if it refuses
    them (or one of them spans lines)."""
    import pyarrow.json  # the server, which imports this module, never parses

    if not texts or not _looks_like_object(texts[0]):
        return None  # pyarrow 25 crashes the process (SIGSEGV) when the first line is null
    try:
        data = "\n".join(texts).encode()
        # a text with a line break of its own would shift every record after it
        if data.count(b"\n") != len(texts) - 1:
            return None
        return pyarrow.json.read_json(io.BytesIO(data))
    except (ValueError, TypeError, UnicodeError, pyarrow.ArrowException):
        return None


def _looks_like_object(text) -> bool:
    return isinstance(text, str) and (text[:1] == "{" or text.lstrip()[:1] == "{")


def _object(text):
    """The JSON value ``text`` holds, or None if it is not JSON text."""
    try:
        return jsoncodec.loads(text)
    except (ValueError, TypeError):  # DecodeError is a ValueError
        return None


def numbers(values: Sequence) -> tuple[np.ndarray, int]:
    """``values`` as floats, and how many were neither a finite number nor null (they become
    NaN)."""
    try:
        numbers = np.array(values, dtype=float)
        present = None
    except (TypeError, ValueError):
        series = pd.Series(values, dtype=object)
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
        present = series.notna().to_numpy()
    bad = ~np.isfinite(numbers)
    if present is None:
        present = ~np.isnan(numbers)  # None became NaN: it stands for no value
    count = int((bad & present).sum())
    if count:
        numbers = np.where(bad, np.nan, numbers)
    return numbers, count
