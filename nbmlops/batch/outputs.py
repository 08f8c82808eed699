"""What a batch writes: the scored rows, and the rejected rows beside them, never half a file.

``scored.parquet`` or ``scored.csv`` is one file, written under a temporary name and renamed
when complete; a folder (``scored/``, or any output of the Dask engine) holds one part per
piece, ``part-00000.parquet``, each written whole under its final name, so a piece scored twice
(a retried Dask task) replaces its part instead of adding rows. Rejected rows go to the
output's sibling: ``scored.rejected.parquet``, ``scored.rejected.csv``, ``scored.rejected/``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from nbmlops.batch.inputs import CSV, PARQUET, PARQUET_SUFFIXES
from nbmlops.errors import UsageError

ROW = "row"
REASON = "reason"
_PART = "part-{:05d}.{}"


@dataclass(frozen=True)
class Target:
    """Where one kind of rows goes: a file or a folder of parts, in CSV or Parquet."""

    path: Path
    format: str
    folder: bool

    def part(self, index: int) -> Path:
        return self.path / _PART.format(index, "csv" if self.format == CSV else "parquet")

    def clear(self) -> None:
        """Remove what an earlier run left here (a stale rejected file would be read as
        this run's)."""
        if self.folder and self.path.is_dir():
            for old in self.path.glob("part-*"):
                old.unlink()
        elif self.path.is_file():
            self.path.unlink()


def targets(output: str | Path, parts: bool) -> tuple[Target, Target]:
    """The scored and rejected targets of ``output``; ``parts`` (the Dask engine) writes a
    folder of parts even for an output named like a file."""
    path = Path(output)
    suffix = path.suffix.lower()
    text = str(output)
    if suffix == ".csv":
        fmt = CSV
    elif suffix in PARQUET_SUFFIXES or not suffix or path.is_dir() or text.endswith("/"):
        fmt = PARQUET
    else:
        raise UsageError(
            f"cannot tell what to write from {output!r}: name it .csv or .parquet, or give a "
            "folder for Parquet parts"
        )
    folder = parts or path.is_dir() or text.endswith("/") or not suffix
    rejected = path.with_name(
        f"{path.stem}.rejected{path.suffix}" if suffix else f"{path.name}.rejected"
    )
    if path.is_file() and folder:
        raise UsageError(f"{path} is a file; the Dask engine writes a folder of parts there")
    return Target(path, fmt, folder), Target(rejected, fmt, folder)


class TableWriter:
    """Appends tables of one schema to one file, under a temporary name until :meth:`close`."""

    def __init__(self, target: Target, schema: pa.Schema) -> None:
        self.target = target
        self.schema = schema
        target.path.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = target.path.with_name(f".{target.path.name}.{uuid.uuid4().hex}.tmp")
        if target.format == CSV:
            self._writer = pacsv.CSVWriter(str(self._temporary), schema)
        else:
            self._writer = pq.ParquetWriter(str(self._temporary), schema)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.cast(self.schema))

    def close(self, keep: bool = True) -> None:
        """Finish the file and give it its name; ``keep=False`` (a failed run) removes it."""
        self._writer.close()
        if keep:
            os.replace(self._temporary, self.target.path)
        else:
            self._temporary.unlink(missing_ok=True)


def write_part(target: Target, index: int, table: pa.Table, schema: pa.Schema) -> Path:
    """Write piece ``index``'s part whole, then rename it into place (atomic)."""
    target.path.mkdir(parents=True, exist_ok=True)
    final = target.part(index)
    temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    table = table.cast(schema)
    if target.format == CSV:
        pacsv.write_csv(table, str(temporary))
    else:
        pq.write_table(table, str(temporary))
    os.replace(temporary, final)
    return final


def remove_leftovers(target: Target) -> None:
    """Temporary files of parts whose writer died before renaming them."""
    if target.folder and target.path.is_dir():
        for leftover in target.path.glob(".part-*.tmp"):
            leftover.unlink(missing_ok=True)


def count_reasons(rejected: pa.Table) -> Counter:
    """How many rejected rows gave each reason."""
    if not rejected.num_rows:
        return Counter()
    return Counter(rejected.column(REASON).to_pylist())


def remove_empty(target: Target) -> None:
    if target.folder and target.path.is_dir() and not any(target.path.iterdir()):
        shutil.rmtree(target.path)
