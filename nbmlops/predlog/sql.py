"""Multi-row INSERT statements, as both backends run them."""

from __future__ import annotations

import functools

#: Rows one INSERT statement adds, largest first. One statement for many rows costs a third
#: less per row than one per row; a few fixed sizes stay in the drivers' statement caches
#: (preparing a 100-row statement would cost more than it saves).
_SIZES = (64, 16, 4, 1)


def insert(execute, table: str, width: int, rows: list[tuple], suffix: str = "") -> None:
    """Insert ``rows`` into ``table`` with as few statements as the fixed sizes allow."""
    start = 0
    for size in _SIZES:
        while len(rows) - start >= size:
            chunk = rows[start : start + size]
            execute(_statement(table, width, size, suffix), [v for row in chunk for v in row])
            start += size


@functools.cache
def _statement(table: str, width: int, size: int, suffix: str) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"INSERT INTO {table} VALUES " + ", ".join([row] * size) + suffix
