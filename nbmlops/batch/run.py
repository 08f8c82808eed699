"""``nbmlops.predict``: score a file of any size, here or on a Dask cluster, and record the run."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nbmlops.batch.inputs import CSV, Plan, check_columns, plan
from nbmlops.batch.outputs import (
    TableWriter,
    Target,
    count_reasons,
    remove_empty,
    remove_leftovers,
    targets,
    write_part,
)
from nbmlops.batch.scoring import ChunkScorer, output_columns
from nbmlops.config import Settings
from nbmlops.errors import UsageError
from nbmlops.monitoring.report_html import facts_table
from nbmlops.predlog.log import PredictionLog
from nbmlops.registry.load import LoadedModel, load

LOCAL = "local"
DASK = "dask"
EXIT_ALL_SCORED = 0
EXIT_SOME_REJECTED = 4
#: How many distinct rejection reasons a result keeps, most frequent first.
TOP_REASONS = 5


@dataclass(frozen=True)
class BatchResult:
    """What a batch run did: rows in, scored and rejected, where they went, how long it took."""

    model: str
    version: str
    engine: str
    input: str
    input_sha256: str
    output: str
    rejected_output: str | None
    rows_in: int
    rows_scored: int
    rows_rejected: int
    seconds: float
    reasons: tuple[tuple[str, int], ...] = field(default=())

    @property
    def exit_code(self) -> int:
        """0 when every row was scored, 4 when some were rejected (the others written)."""
        return EXIT_SOME_REJECTED if self.rows_rejected else EXIT_ALL_SCORED

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["reasons"] = [{"reason": r, "rows": n} for r, n in self.reasons]
        return data

    def summary(self) -> str:
        """A few lines for people: what was scored, what was rejected and why, where."""
        lines = [
            f"scored {self.rows_scored:,} of {self.rows_in:,} rows of {self.input} with "
            f"{self.model} v{self.version} ({self.engine}) in {self.seconds:.1f} s "
            f"({self.rows_per_second:,.0f} rows/s) -> {self.output}"
        ]
        if self.rows_rejected:
            lines.append(
                f"{self.rows_rejected:,} rows rejected (not scored) -> {self.rejected_output}, "
                f"each with its reason; the output holds the other rows in input order"
            )
            lines += [f"  {n:,} x {reason}" for reason, n in self.reasons]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [
            ("model", f"{self.model} v{self.version}"),
            ("engine", self.engine),
            ("input", f"{self.input} (SHA-256 {self.input_sha256[:12]})"),
            ("rows", f"{self.rows_in:,}"),
            ("scored", f"{self.rows_scored:,} → {self.output}"),
            (
                "rejected",
                f"{self.rows_rejected:,}"
                + (f" → {self.rejected_output}" * bool(self.rows_rejected)),
            ),  # fmt: skip
            ("time", f"{self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)"),
        ]
        rows += [(f"{n:,} rejected", reason) for reason, n in self.reasons]
        return facts_table(rows)

    def __repr__(self) -> str:
        return self.summary()


@dataclass
class _Tally:
    rows_in: int = 0
    scored: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)

    def add(self, rows_in: int, scored: int, rejected: int, reasons) -> None:
        self.rows_in += rows_in
        self.scored += scored
        self.rejected += rejected
        self.reasons.update(reasons)


def predict(
    model: str | Path | LoadedModel,
    input: str | Path,  # noqa: A002 - the name users read in the docs
    output: str | Path,
    *,
    chunk_rows: int = 100_000,
    id_column: str | None = None,
    engine: str = LOCAL,
    scheduler: str | None = None,
    workers: int | None = None,
    log: bool = False,
    unknown_categories: str = "reject",
    progress: bool | None = None,
    settings: Settings | None = None,
) -> BatchResult:
    """Score ``input`` (CSV, Parquet, a folder of Parquet files) into ``output`` with a
    registered version (``churn@production``) or an artifact folder.

    Every row is checked as the server checks a record; rows that fail are not scored and go
    to ``output``'s sibling ``*.rejected.*`` with a reason each. The output has the columns
    of ``load(model).predict`` (``prediction``, ``proba_<label>``), after ``id_column`` when
    given, in input order. ``engine="dask"`` scores piece by piece on the Dask scheduler at
    ``scheduler`` (a ``LocalCluster`` of ``workers`` processes, default 2, without one) and writes a
    folder of parts. ``log=True`` adds every row to the prediction log (route ``batch``).
    The run is recorded in the prediction log's database either way.
    """
    if engine not in (LOCAL, DASK):
        raise UsageError(f"--engine must be {LOCAL!r} or {DASK!r}, not {engine!r}")
    if scheduler is not None and engine != DASK:
        raise UsageError("--scheduler needs --engine dask")
    if workers is not None and (scheduler is not None or engine != DASK):
        raise UsageError(
            "--workers sizes the LocalCluster of --engine dask without --scheduler; a "
            "scheduler's cluster has the workers it has"
        )
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    settings = settings or Settings.from_env()
    connection = _connect(scheduler, workers or 2) if engine == DASK else None
    try:
        return _predict(
            model, input, output, chunk_rows, id_column, connection, log, unknown_categories,
            progress, settings,
        )  # fmt: skip
    finally:
        if connection is not None:
            connection.close()


def _connect(scheduler: str | None, workers: int):
    from nbmlops.batch.cluster import Connection

    return Connection(scheduler, workers)


def _predict(
    model, source, output, chunk_rows, id_column, connection, log, unknown_categories, progress,
    settings,
) -> BatchResult:  # fmt: skip
    """:func:`predict` with its options checked (``connection``: the Dask engine's)."""
    engine = LOCAL if connection is None else DASK
    loaded = model if isinstance(model, LoadedModel) else load(model, settings)
    version = loaded.metadata["version"] or "unregistered"
    _refuse_clashing_id(id_column, loaded)
    started = time.perf_counter()
    planned = plan(source, chunk_rows)
    check_columns(planned, loaded.schema, id_column)
    scored_target, rejected_target = targets(output, parts=engine == DASK)
    _refuse_overwriting(Path(source), scored_target, rejected_target)
    for target in (scored_target, rejected_target):
        target.clear()
    scorer = ChunkScorer(
        loaded.files, version, unknown_categories, id_column, log, text=planned.format == CSV
    )
    log_uri = settings.log_uri
    bar = _progress_bar(planned.rows, f"{loaded.metadata['name']} v{version}", progress)
    tally = _Tally()
    try:
        if engine == DASK:
            from nbmlops.batch.cluster import score_on_dask

            score_on_dask(
                planned, loaded, scorer, (scored_target, rejected_target), connection,
                log_uri if log else None, tally, bar,
            )  # fmt: skip
        else:
            _score_here(planned, scorer, scored_target, rejected_target, log_uri, tally, bar)
    except BaseException:
        for target in (scored_target, rejected_target):
            target.clear()
            remove_empty(target)
        raise
    finally:
        bar.close()
    for target in (scored_target, rejected_target):
        remove_leftovers(target)
    result = BatchResult(
        model=loaded.metadata["name"],
        version=version,
        engine=engine,
        input=str(source),
        input_sha256=planned.sha256,
        output=str(scored_target.path),
        rejected_output=str(rejected_target.path) if tally.rejected else None,
        rows_in=tally.rows_in,
        rows_scored=tally.scored,
        rows_rejected=tally.rejected,
        seconds=time.perf_counter() - started,
        reasons=tuple(tally.reasons.most_common(TOP_REASONS)),
    )
    _record(result, log_uri)
    return result


def _refuse_overwriting(source: Path, *outputs: Target) -> None:
    """An output that is the input, or inside an input folder, would destroy what it reads."""
    source = source.resolve()
    for target in outputs:
        path = target.path.resolve()
        if path == source or source in path.parents or path in source.parents:
            raise UsageError(
                f"the output {target.path} would overwrite the input {source}: write it elsewhere"
            )


def _refuse_clashing_id(id_column: str | None, loaded: LoadedModel) -> None:
    taken = output_columns(loaded.schema)
    if id_column in taken:
        raise UsageError(
            f"--id-column {id_column!r} clashes with an output column ({', '.join(taken)})"
        )


def _score_here(
    planned: Plan,
    scorer: ChunkScorer,
    scored: Target,
    rejected: Target,
    log_uri: str,
    tally: _Tally,
    bar,
) -> None:
    """The local engine: piece after piece, chunk after chunk, in this process."""
    output_schema = scorer.output_schema(planned.types.get(scorer.id_column))
    rejected_schema = scorer.rejected_schema(planned.types)
    writer = None if scored.folder else TableWriter(scored, output_schema)
    rejected_writer: TableWriter | None = None
    log = PredictionLog(log_uri) if scorer.log else None
    part = 0
    try:
        for piece in planned.pieces:
            first_row = piece.first_row
            for table in planned.read(piece, scorer.read_columns):
                chunk = scorer.score(table, first_row)
                first_row += table.num_rows
                if writer is not None:
                    writer.write(chunk.scored)
                else:
                    write_part(scored, part, chunk.scored, output_schema)
                if chunk.rejected.num_rows:
                    if rejected.folder:
                        write_part(rejected, part, chunk.rejected, rejected_schema)
                    else:
                        rejected_writer = rejected_writer or TableWriter(rejected, rejected_schema)
                        rejected_writer.write(chunk.rejected)
                if log is not None:
                    log.write(chunk.log)
                part += 1
                tally.add(table.num_rows, chunk.scored.num_rows, chunk.rejected.num_rows,
                          count_reasons(chunk.rejected))  # fmt: skip
                bar.update(table.num_rows)
    except BaseException:
        for open_writer in (writer, rejected_writer):
            if open_writer is not None:
                open_writer.close(keep=False)
        raise
    finally:
        if log is not None:
            log.close()
    for open_writer in (writer, rejected_writer):
        if open_writer is not None:
            open_writer.close()


def _progress_bar(total: int, label: str, progress: bool | None):
    """tqdm's bar on stderr (a widget in a notebook); off when stderr is no terminal, unless
    ``progress`` says otherwise."""
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(
        total=total,
        unit=" rows",
        unit_scale=True,
        desc=f"scoring with {label}",
        disable=not show,
        file=sys.stderr,
    )


def _record(result: BatchResult, log_uri: str) -> None:
    """The run in the prediction log's database: which version scored which file, when."""
    log = PredictionLog(log_uri)
    try:
        log.add_batch_run(
            {
                "ts": time.time(),
                "model": result.model,
                "version": result.version,
                "engine": result.engine,
                "input": str(Path(result.input).resolve()),
                "input_sha256": result.input_sha256,
                "output": str(Path(result.output).resolve()),
                "rows_in": result.rows_in,
                "rows_scored": result.rows_scored,
                "rows_rejected": result.rows_rejected,
                "seconds": result.seconds,
            }
        )
    finally:
        log.close()
