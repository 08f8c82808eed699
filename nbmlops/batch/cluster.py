"""The Dask engine: the input's pieces as a Dask DataFrame, scored with ``map_partitions``.

The artifact travels to the workers as bytes, in a worker plugin, and each worker checks it
against the manifest the registry recorded before it loads it, once: a worker started later
(or restarted after a crash) gets the plugin too. Each partition writes its own part of the
output, whole, under a name fixed by its position, so a task that Dask runs again after a
worker died replaces its part instead of duplicating rows. Workers need nbmlops installed and
the input and output paths reachable (a shared filesystem on a real cluster).
"""

from __future__ import annotations

import json
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import pandas as pd
import pyarrow as pa
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker

from nbmlops.artifact.files import ArtifactFiles
from nbmlops.batch.inputs import Piece, Plan
from nbmlops.batch.outputs import Target, count_reasons, write_part
from nbmlops.batch.scoring import ChunkScorer
from nbmlops.errors import BatchError
from nbmlops.predlog.log import PredictionLog
from nbmlops.registry.load import LoadedModel

#: The scorers of this worker process, by plugin name.
_SCORERS: dict[str, ChunkScorer] = {}
#: What each partition answers: its counts, and its rejections' reasons counted (JSON).
_COUNTS = {"piece": "int64", "rows": "int64", "scored": "int64", "rejected": "int64",
           "reasons": "object"}  # fmt: skip


class ArtifactPlugin(WorkerPlugin):
    """Puts the artifact on a worker, verifies it and builds its scorer, once per worker."""

    def __init__(self, name: str, files: dict[str, bytes], digest: str, label: str, options):
        self.name = name
        self.files = files
        self.digest = digest
        self.label = label
        self.options = options

    def setup(self, worker) -> None:
        root = Path(tempfile.mkdtemp(prefix="nbmlops-", dir=worker.local_directory))
        for relative, data in self.files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        files = ArtifactFiles.read(root, self.digest, self.label)  # refuses another manifest
        scorer = ChunkScorer(files, **self.options)
        scorer.predictor  # noqa: B018 - loaded now, once, not by the first partition
        _SCORERS[self.name] = scorer

    def teardown(self, worker) -> None:
        _SCORERS.pop(self.name, None)


def score_on_dask(
    planned: Plan,
    loaded: LoadedModel,
    scorer: ChunkScorer,
    targets: tuple[Target, Target],
    connection: Connection,
    log_uri: str | None,
    tally,
    bar,
) -> None:
    """Score every piece of ``planned`` on Dask, adding each partition's counts to
    ``tally`` as it finishes."""
    import dask.dataframe as dd

    name = f"nbmlops-batch-{uuid.uuid4().hex[:12]}"
    schemas = (
        scorer.output_schema(planned.types.get(scorer.id_column)),
        scorer.rejected_schema(planned.types),
    )
    client = connection.client
    client.register_plugin(_plugin(name, loaded, scorer))
    try:
        columns = scorer.read_columns
        meta = pa.schema([pa.field(c, planned.types[c]) for c in columns]).empty_table()
        with dask.config.set({"dataframe.convert-string": False}):  # read, not converted
            frames = dd.from_map(
                _read_piece,
                list(planned.pieces),
                planned=planned,
                columns=columns,
                meta=meta.to_pandas(),
                enforce_metadata=False,
            )
        counts = frames.map_partitions(
            _score_partition,
            list(planned.pieces),
            name,
            targets,
            schemas,
            log_uri,
            meta=_COUNTS,
            enforce_metadata=False,
        )
        futures = client.compute(counts.to_delayed())
        for _, part in as_completed(futures, with_results=True):
            row = part.iloc[0]
            reasons = json.loads(row["reasons"])
            tally.add(int(row["rows"]), int(row["scored"]), int(row["rejected"]), reasons)
            bar.update(int(row["rows"]))
    except Exception as exc:
        if type(exc).__module__.startswith(("distributed", "dask")):
            raise BatchError(f"the Dask run failed: {type(exc).__name__}: {exc}") from None
        raise
    finally:
        client.unregister_worker_plugin(name)


class Connection:
    """A Dask client, connected (or its LocalCluster started) in a background thread, so that
    the cluster starts while the model is resolved and the input planned."""

    def __init__(self, scheduler: str | None, workers: int) -> None:
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None
        self._ready = ThreadPoolExecutor(1, thread_name_prefix="nbmlops-dask").submit(
            self._connect, scheduler, workers
        )

    def _connect(self, scheduler: str | None, workers: int) -> None:
        import dask.dataframe  # noqa: F401 - half a second of imports, off the main thread

        if scheduler is not None:
            try:
                self._client = Client(scheduler, timeout="10s")
            except OSError as exc:
                raise BatchError(
                    f"cannot reach the Dask scheduler at {scheduler}: {exc}. Check the "
                    "address, or leave out --scheduler for a LocalCluster"
                ) from None
            return
        # Dask sets MALLOC_TRIM_THRESHOLD_ for the workers it spawns; a fixed threshold turns
        # off glibc's adaptive mmap threshold, so every large array a model's predict
        # allocates is mapped and faulted in anew (a random forest predicts 15% slower).
        trim = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
        with dask.config.set({trim: None}):
            self._cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
        self._client = Client(self._cluster)

    @property
    def client(self) -> Client:
        """The client, once connected (raises what connecting raised)."""
        self._ready.result()
        return self._client

    def close(self) -> None:
        """Close the client, and the LocalCluster this connection started."""
        try:
            self._ready.result()
        except BatchError:
            return
        finally:
            for part in (self._client, self._cluster):
                if part is not None:
                    part.close()


def _plugin(name: str, loaded: LoadedModel, scorer: ChunkScorer) -> ArtifactPlugin:
    root = loaded.path
    files = {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
    label = f"{scorer.name} v{scorer.version}"
    options = {
        "version": scorer.version,
        "unknown_categories": scorer.validator.unknown_categories,
        "id_column": scorer.id_column,
        "log": scorer.log,
        "text": scorer.text,
    }
    return ArtifactPlugin(name, files, loaded.digest, label, options)


def _read_piece(piece: Piece, planned: Plan, columns: list[str]) -> pd.DataFrame:
    return planned.read_whole(piece, columns).to_pandas()


def _score_partition(
    frame: pd.DataFrame,
    pieces: list[Piece],
    name: str,
    targets: tuple[Target, Target],
    schemas: tuple[pa.Schema, pa.Schema],
    log_uri: str | None,
    partition_info=None,
) -> pd.DataFrame:
    """Score one partition on a worker; write its parts; return its counts."""
    scorer = _SCORERS.get(name)
    if scorer is None:
        raise BatchError(f"worker {get_worker().address} has no artifact for this run")
    piece = pieces[partition_info["number"]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    chunk = scorer.score(table, piece.first_row)
    write_part(targets[0], piece.index, chunk.scored, schemas[0])
    if chunk.rejected.num_rows:
        write_part(targets[1], piece.index, chunk.rejected, schemas[1])
    if log_uri is not None:
        log = PredictionLog(log_uri)
        try:
            log.write(chunk.log)
        finally:
            log.close()
    reasons = json.dumps(count_reasons(chunk.rejected))
    counts = (piece.index, table.num_rows, chunk.scored.num_rows, chunk.rejected.num_rows, reasons)
    return pd.DataFrame([counts], columns=list(_COUNTS)).astype(_COUNTS)
