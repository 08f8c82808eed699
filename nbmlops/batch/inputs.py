"""What a batch reads: a CSV file, a Parquet file or a folder of Parquet files, cut into pieces.

The input is planned once, in one streaming pass that also hashes it: each piece is a range of
rows (a CSV's lines, a Parquet file's row groups) that can be read on its own, by this process
or by a Dask worker, with its position in the whole input known in advance. Reading never
holds more than a piece; a CSV is read as text and typed by the model's schema, so a bad value
rejects its row instead of failing the file.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from nbmlops.artifact.schema import Column, Schema
from nbmlops.errors import BatchError, UsageError

CSV = "csv"
PARQUET = "parquet"
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_BLOCK = 16 << 20
#: What a CSV field may say for a missing value: pyarrow's spellings plus the two more that
#: pandas reads as missing, so a CSV is typed as ``pd.read_csv`` types it.
NULL_SPELLINGS = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)
_TRUE = frozenset({"True", "true", "TRUE"})
_FALSE = frozenset({"False", "false", "FALSE"})


@dataclass(frozen=True)
class Piece:
    """Rows read and scored together (a partition on Dask): ``rows`` rows of ``path`` from
    input position ``first_row``; a CSV's byte range or a Parquet file's row groups
    ``[start, stop)``."""

    index: int
    path: str
    first_row: int
    rows: int
    start: int
    stop: int


@dataclass(frozen=True)
class Plan:
    """The input, planned: its format, files, pieces, row count, SHA-256 and columns; a piece
    holds at most ``chunk_rows`` rows, or one Parquet row group when that is larger."""

    format: str
    source: str
    pieces: tuple[Piece, ...]
    rows: int
    sha256: str
    columns: tuple[str, ...]
    types: dict[str, pa.DataType]
    chunk_rows: int

    def read(self, piece: Piece, columns: list[str]) -> Iterator[pa.Table]:
        """The rows of ``piece`` (only ``columns``), at most ``chunk_rows`` a table."""
        if self.format == CSV:
            yield _read_csv_piece(piece, self.columns, columns)
            return
        parquet = pq.ParquetFile(piece.path)
        groups = list(range(piece.start, piece.stop))
        for batch in parquet.iter_batches(self.chunk_rows, row_groups=groups, columns=columns):
            yield pa.Table.from_batches([batch])

    def read_whole(self, piece: Piece, columns: list[str]) -> pa.Table:
        """All rows of ``piece`` at once (a Dask partition)."""
        if self.format == CSV:
            return _read_csv_piece(piece, self.columns, columns)
        groups = list(range(piece.start, piece.stop))
        return pq.ParquetFile(piece.path).read_row_groups(groups, columns=columns)


def plan(source: str | Path, rows_per_piece: int) -> Plan:
    """Plan the input at ``source``: a ``.csv`` file, a Parquet file, or a folder of Parquet
    files (read in the order of their sorted names)."""
    path = Path(source)
    if rows_per_piece < 1:
        raise UsageError(f"--chunk-rows must be at least 1, not {rows_per_piece}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in PARQUET_SUFFIXES)
        if not files:
            raise BatchError(f"{path} is a folder with no Parquet files (*.parquet) in it")
        return _plan_parquet(str(path), files, rows_per_piece)
    if not path.is_file():
        raise BatchError(f"no input file or folder at {path}")
    if path.suffix.lower() == ".csv":
        return _plan_csv(path, rows_per_piece)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _plan_parquet(str(path), [path], rows_per_piece)
    raise BatchError(
        f"cannot tell the format of {path}: name it .csv or .parquet, or give a folder of "
        "Parquet files"
    )


def _plan_parquet(source: str, files: list[Path], rows_per_piece: int) -> Plan:
    digest = hashlib.sha256()
    pieces: list[Piece] = []
    first_row, schema = 0, None
    for path in files:
        digest.update(str(path.relative_to(source) if path != Path(source) else path.name).encode())
        _hash_file(path, digest)
        try:
            parquet = pq.ParquetFile(path)
            metadata, schema = parquet.metadata, schema or parquet.schema_arrow
        except (OSError, pa.ArrowException) as exc:
            raise BatchError(f"{path} is not a readable Parquet file: {exc}") from None
        start = 0
        while start < metadata.num_row_groups:
            stop, rows = start, 0
            while stop < metadata.num_row_groups and (stop == start or rows < rows_per_piece):
                rows += metadata.row_group(stop).num_rows
                stop += 1
            pieces.append(Piece(len(pieces), str(path), first_row, rows, start, stop))
            first_row += rows
            start = stop
    types = {name: schema.field(name).type for name in schema.names}
    return Plan(
        PARQUET,
        source,
        tuple(pieces),
        first_row,
        digest.hexdigest(),
        tuple(schema.names),
        types,
        rows_per_piece,
    )


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as file:
        while block := file.read(_BLOCK):
            digest.update(block)


def _plan_csv(path: Path, rows_per_piece: int) -> Plan:
    """One pass over the file: its SHA-256, and a piece boundary after every
    ``rows_per_piece``-th line (the header's line ends at the first boundary)."""
    digest = hashlib.sha256()
    boundaries, newlines, offset, last = [], 0, 0, b""
    with open(path, "rb") as file:
        while block := file.read(_BLOCK):
            digest.update(block)
            ends = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
            numbers = np.arange(newlines, newlines + len(ends))  # the header's newline is 0
            boundaries += (ends[numbers % rows_per_piece == 0] + offset + 1).tolist()
            newlines += len(ends)
            offset += len(block)
            last = block[-1:]
    if newlines == 0:
        raise BatchError(f"{path} has no header line and no rows: a CSV needs a header")
    rows = newlines - 1 + (1 if last != b"\n" else 0)
    columns = _csv_header(path, boundaries[0])
    edges = [*boundaries, offset] if boundaries[-1] != offset else boundaries
    pieces = []
    for index, (start, stop) in enumerate(zip(edges, edges[1:], strict=False)):
        first_row = index * rows_per_piece
        count = min(rows_per_piece, rows - first_row)
        pieces.append(Piece(index, str(path), first_row, count, start, stop))
    types = {name: pa.string() for name in columns}
    return Plan(
        CSV, str(path), tuple(pieces), rows, digest.hexdigest(), columns, types, rows_per_piece
    )


def _csv_header(path: Path, end: int) -> tuple[str, ...]:
    with open(path, "rb") as file:
        header = file.read(end)
    try:
        table = pacsv.read_csv(io.BytesIO(header))
    except pa.ArrowException as exc:
        raise BatchError(f"cannot read the header line of {path}: {exc}") from None
    return tuple(table.column_names)


def _read_csv_piece(piece: Piece, names: tuple[str, ...], columns: list[str]) -> pa.Table:
    """A CSV piece as text columns (typed later by the schema: see :func:`typed_frame`)."""
    with open(piece.path, "rb") as file:
        file.seek(piece.start)
        data = file.read(piece.stop - piece.start)
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=list(names)),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types={name: pa.string() for name in columns},
                null_values=list(NULL_SPELLINGS),
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowException as exc:
        raise BatchError(
            f"{piece.path}: rows {piece.first_row} to {piece.first_row + piece.rows - 1} "
            f"cannot be read as CSV: {exc}"
        ) from None
    if table.num_rows != piece.rows:
        raise BatchError(
            f"{piece.path}: rows {piece.first_row} to {piece.first_row + piece.rows - 1} hold "
            f"{table.num_rows} records in {piece.rows} lines: a value spans lines or a line "
            "is blank. Remove blank lines, or convert the file to Parquet"
        )
    return table


def check_columns(plan_: Plan, schema: Schema, id_column: str | None) -> None:
    """Refuse an input without a column the model needs, or without the ``--id-column``."""
    missing = [name for name in schema.names if name not in plan_.columns]
    if missing:
        raise BatchError(
            f"{plan_.source} has no column {', '.join(map(repr, missing))}; the model was "
            f"trained on {', '.join(schema.names)}. Nothing was scored"
        )
    if id_column is not None and id_column not in plan_.columns:
        raise BatchError(
            f"--id-column {id_column!r} is not a column of {plan_.source} (it has "
            f"{', '.join(plan_.columns)})"
        )


def typed_frame(table: pa.Table, schema: Schema, text: bool) -> pd.DataFrame:
    """The schema's columns of ``table`` as pandas reads them; a CSV's ``text`` columns are
    typed by the schema first, a value that is not of its column's type kept as the text it
    was, for the checks to name."""
    if not text:
        return table.select(schema.names).to_pandas()
    return pd.DataFrame(
        {c.name: _typed(c, table.column(c.name)) for c in schema.columns},
        index=pd.RangeIndex(table.num_rows),
    )


def _typed(column: Column, values: pa.ChunkedArray) -> pd.Series:
    categories = column.categories or ()
    if column.kind == "numeric" or (categories and _all_numbers(categories)):
        return _numbers(values, column.is_integer)
    if column.kind == "boolean" or (categories and all(isinstance(c, bool) for c in categories)):
        return _booleans(values)
    return values.to_pandas()


def _all_numbers(values) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _numbers(values: pa.ChunkedArray, integer: bool) -> pd.Series:
    """Numbers parsed as pyarrow parses a CSV (correctly rounded); a chunk with a value that
    is not a number keeps that value's text among the numbers."""
    for target in (pa.int64(), pa.float64()) if integer else (pa.float64(),):
        try:
            return pc.cast(values, target).to_pandas()
        except pa.ArrowInvalid:
            continue
    return pd.Series([_number(v) for v in values.to_pylist()], dtype=object)


def _number(text: str | None):
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _booleans(values: pa.ChunkedArray) -> pd.Series:
    texts = values.to_pylist()
    parsed = [True if t in _TRUE else False if t in _FALSE else t for t in texts]
    if all(isinstance(v, bool) for v in parsed):
        return pd.Series(parsed, dtype=bool)
    return pd.Series(parsed, dtype=object)
