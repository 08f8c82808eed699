"""JSON in and out of the prediction service and its log, with one policy, by orjson.

Writing: NaN and infinities become null (JSON has no spelling for them), numpy scalars and arrays
numbers, any other unknown object its ``str()``; integers beyond 64 bits, which orjson refuses,
take the standard library's path. orjson encodes a 100-record answer ~10x faster than it.

Reading: strict JSON goes through orjson. What orjson refuses but clients send is read by the
standard library instead: the bare ``NaN`` that MLflow's own client writes for a missing value
becomes null, and ``Infinity``, ``-Infinity`` or a number beyond the floating-point range (1e400)
becomes a :class:`NonFinite`, so that validation names its field. An object with a key given
twice becomes a :class:`DuplicateKeys` naming it (orjson would keep the last value silently).
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import orjson

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_FALLBACK = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=False)

#: What :func:`loads` raises on malformed input (a ``ValueError``).
DecodeError = json.JSONDecodeError


class NonFinite:
    """A number no float holds (``Infinity``, ``-Infinity``, ``1e400``), as it was written."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_A_KIND = {
    "string": "a string",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
    "array": "an array",
    "object": "an object",
    "other": "a value",
}


def json_kind(value) -> str:
    """string, number, boolean, null, array, object, or other (not something JSON spells:
    a :class:`NonFinite` too)."""
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, int | float | np.integer | np.floating):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "other"


def a_kind(value) -> str:
    """The JSON kind of ``value`` with its article, for messages: "a string", "an array"."""
    return _A_KIND[json_kind(value)]


def describe(value) -> str:
    """``value`` for a message: its kind, and the value itself unless it is null, an array or
    an object ("a string 'x'", "an array")."""
    kind = json_kind(value)
    return _A_KIND[kind] if kind in ("null", "array", "object") else f"{_A_KIND[kind]} {value!r}"


class DuplicateKeys(dict):
    """An object that had keys more than once (the last value kept); ``duplicates`` names them."""

    duplicates: tuple[str, ...] = ()


def plain(value):
    """A prediction as JSON holds it: a numpy scalar as Python's, NaN or infinity as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value) -> bytes:
    """Compact UTF-8 JSON of ``value``."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS)
    except TypeError:  # an integer beyond 64 bits, or a key that is not a string
        return _FALLBACK.encode(_finite(value)).encode()


def loads(data: bytes | str):
    """The value of a JSON document; :data:`DecodeError` if it is not one."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _lenient(data)
    if _colons(data) != _members_and_string_colons(value):
        return _lenient(data)  # a repeated key, or colons inside strings: look closely
    return value


def duplicates(value) -> tuple[str, ...]:
    """The keys an object read by :func:`loads` had more than once."""
    return value.duplicates if isinstance(value, DuplicateKeys) else ()


def _lenient(data: bytes | str):
    """The standard library's reading, with the constants and duplicates described above."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        return json.loads(
            text, parse_constant=_constant, parse_float=_float, object_pairs_hook=_object
        )
    except DecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise DecodeError("the body is not valid UTF-8", "", exc.start) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4,300 digits
        raise DecodeError(str(exc), "", 0) from None


def _constant(name: str):
    return None if name == "NaN" else NonFinite(name)


def _float(text: str):
    value = float(text)
    return value if math.isfinite(value) else NonFinite(text)


def _object(pairs: list[tuple[str, object]]) -> dict:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    marked = DuplicateKeys(value)
    marked.duplicates = tuple(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
    return marked


def _colons(data: bytes | str) -> int:
    """Colons in the text, counting the escape ``\\u003a`` as one too."""
    if isinstance(data, str):
        data = data.encode()
    return data.count(b":") + data.count(b"\\u003a") + data.count(b"\\u003A")


def _members_and_string_colons(value) -> int:
    """Object members plus colons inside strings, in ``value`` and everything in it.

    A JSON text has one colon per member it spells plus those inside its strings; when the
    parsed value accounts for all of them, no member was dropped, so no key was repeated.
    orjson writes every member with one colon and never escapes one inside a string, so its
    own writing counts them at C speed (~8 µs for 100 records).
    """
    try:
        return orjson.dumps(value).count(b":")
    except TypeError:  # an integer orjson reads but does not write
        return -1


def _finite(value):
    """``value`` with NaN and infinities as None, as orjson writes them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
