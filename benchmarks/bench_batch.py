"""Benchmark: batch scoring with ``nbmlops.predict`` (local and Dask) against MLflow's pyfunc.

Run from the repository root::

    .venv/bin/python benchmarks/bench_batch.py [--rows N] [--repeat R] [--no-readme]

In one run, in a temporary store (``NBMLOPS_HOME`` under a temporary directory, nothing inside
the repository):

1. Two pipelines are fitted on the quickstart's 80/20 split of ``make_churn(20,000)`` and
   packaged with ``featurize`` (from _bench_pipeline) as their preprocessing:
   ``quickstart``, the quickstart's ColumnTransformer(OneHotEncoder + SimpleImputer) +
   HistGradientBoostingClassifier (a cheap model: reading, checking and writing weigh as much
   as the model), and ``forest``, the same ColumnTransformer + a RandomForestClassifier of
   ``--trees`` trees (the model dominates; scikit-learn predicts with one thread, its default
   ``n_jobs``).
2. The data to score: ``make_churn(--rows, seed=1)`` without its target, written once as a
   Parquet file with row groups of ``--chunk-rows`` rows (and its first quarter as a second
   file), so that the Dask engine gets several partitions.
3. For each model, on the same file and the same registered artifact, each measurement in a
   fresh Python process of its own (``_bench_batch_child.py``; imports are done before its
   clock starts):

   * MLflow's pyfunc, what a user would otherwise write: ``mlflow.pyfunc.load_model(<artifact
     folder>).predict(pd.read_parquet(input))`` then ``.to_parquet(output)``; load + read +
     predict + write timed;
   * ``nbmlops.predict(ref, input, output, engine="local")``: load, every row checked, chunks of
     ``--chunk-rows`` scored and written, the run recorded;
   * ``nbmlops.predict(..., engine="dask", workers=2)``: nbmlops starts a LocalCluster of 2
     worker processes, scores on it and closes it, all timed;
   * ``nbmlops.predict(..., engine="dask", scheduler=<address>)`` on a LocalCluster of 2 worker
     processes started beforehand, whose start-up (and its workers' imports) is timed apart;
   * the local engine again on the first quarter of the file: its peak memory should be
     about the same as on the whole file;
   * for HistGradientBoosting (which predicts with OpenMP threads on every core; Dask's
     workers get one), the local engine again with ``OMP_NUM_THREADS=1``.

   The outputs of every run on the whole file must agree: the same prediction for every row
   and the same probabilities (within 1e-9), no row rejected; else the benchmark fails.

The results (a Markdown table with the issue's targets, met or not) go to stdout and to the
section between the bench_batch markers in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = HERE / "README.md"
CHILD = HERE / "_bench_batch_child.py"
START = "<!-- bench_batch:start -->"
END = "<!-- bench_batch:end -->"
TRAIN_ROWS = 20_000
DEFAULT_ROWS = 1_000_000
DEFAULT_CHUNK = 100_000
WORKERS = 2
PROBA_TOLERANCE = 1e-9
CHILD_TIMEOUT = 1800
# The targets.
TARGET_LOCAL_VS_MLFLOW = 1.0  # the local engine at least as fast as MLflow's pyfunc (rows/s)
TARGET_DASK_VS_LOCAL = 1.6  # Dask on 2 workers at least 1.6x local when the model dominates

MLFLOW, LOCAL, DASK, RUNNING = "mlflow", "local", "dask", "dask-running"
QUARTER = "local-quarter"  # the local engine on the first quarter of the file
ONE_THREAD = "local-1-thread"  # the local engine with OMP_NUM_THREADS=1 (OpenMP models only)
KINDS = (MLFLOW, LOCAL, ONE_THREAD, RUNNING, DASK, QUARTER)  # the order they run in
SHOWN = (MLFLOW, LOCAL, ONE_THREAD, DASK, RUNNING, QUARTER)  # the order of the table
COMPARED = (MLFLOW, LOCAL, ONE_THREAD, RUNNING, DASK)  # whose outputs must agree

sys.path.insert(0, str(HERE))
import _bench_pipeline as pipeline  # noqa: E402 - needs the path above when imported elsewhere
import bench_package  # noqa: E402 - shared helpers (machine info, README sections)

VERSIONS_OF = (
    "nbmlops",
    "mlflow",
    "scikit-learn",
    "pandas",
    "numpy",
    "pyarrow",
    "dask",
    "distributed",
    "skops",
)

SECTION_INTRO = """## bench_batch.py: batch scoring with `nbmlops.predict` against MLflow's pyfunc

By default, scores one Parquet file of 1,000,000 rows (`make_churn(1_000_000, seed=1)` without
its target, row groups of 100,000 rows) into Parquet with one registered artifact, several ways
in the same run, and checks that they all give the same answers:

- `nbmlops.predict(ref, input, output, engine="local")`: chunks of 100,000 rows (`chunk_rows`),
  every row checked against the schema as the server checks a record, one Parquet file out, the
  run recorded in the prediction log's database;
- `nbmlops.predict(..., engine="dask", workers=2)`: nbmlops starts a LocalCluster of 2 worker
  processes of one thread each, scores the 10 row groups as 10 partitions on it and closes it,
  all inside the timing;
- `nbmlops.predict(..., engine="dask", scheduler=<address>)` on a LocalCluster of 2 workers
  started beforehand (the same kind nbmlops starts), its start-up and its workers' imports timed
  apart;
- the baseline a user would otherwise write, MLflow's pyfunc on the same artifact folder
  (`nbmlops.load(ref).path`): `mlflow.pyfunc.load_model(path).predict(pd.read_parquet(input))`
  then `.to_parquet(output)`, load + read + predict + write timed;
- the local engine on the file's first quarter, to show that its peak memory does not grow with
  the file; and for the HistGradientBoosting model, the local engine with `OMP_NUM_THREADS=1`.

Every measurement runs in a fresh Python process of its own (`_bench_batch_child.py`) whose
imports (pandas, pyarrow, scikit-learn, skops, MLflow, and nbmlops or Dask) are done before its
clock starts. nbmlops' times include loading the model, as MLflow's do (nbmlops resolves
`churn@v1` through MLflow's registry). Peak memory is the process's peak resident set (`VmHWM`
from `/proc/self/status`, imports included; not `ru_maxrss`, which Linux carries over from the
parent across fork and exec), with the resident set after the imports beside it. The Dask
workers are separate processes: the table gives the largest worker's `VmHWM`, read through
`client.run` on the running cluster, and by reading the worker processes' `/proc` every 50 ms
while nbmlops' own cluster runs. The predictions of every run on the whole file must be the same
row for row (probabilities within 1e-9) and no row may be rejected, else the benchmark fails;
nothing asserts on time.

Two models, both packaged with the quickstart's `featurize` after fitting on the 80/20 split of
`make_churn(20_000)`: the quickstart's ColumnTransformer(OneHotEncoder + SimpleImputer) +
HistGradientBoostingClassifier, a cheap model, and the same ColumnTransformer + a
RandomForestClassifier of 200 trees (`min_samples_leaf=5`), whose prediction dominates the cost.
scikit-learn's HistGradientBoosting predicts with OpenMP threads on every core (a parallel region
per tree, for `predict` and again for `predict_proba`), the random forest on one thread (its
default `n_jobs`); Dask sets `OMP_NUM_THREADS=1` in the workers it starts. The issue's targets:
the local engine at least as fast as MLflow's pyfunc; Dask on 2 workers at least 1.6x the local
engine when the model dominates.

The machine has 2 cores and is shared: timings move with other work on it (the load average
before each measurement is in the machine notes), and OpenMP's threads suffer most when a core is
busy. Each measurement runs once per repeat (`--repeat`; the table shows the median time and the
largest peak).

```
.venv/bin/python benchmarks/bench_batch.py                # 1,000,000 rows, about 4 min
.venv/bin/python benchmarks/bench_batch.py --rows 200000 --models forest
.venv/bin/python benchmarks/bench_batch.py --omp-threads 1  # OMP_NUM_THREADS=1 everywhere
.venv/bin/python benchmarks/bench_batch.py --no-readme    # print only
```

### Results

"""


# -- the models ---------------------------------------------------------------------------------


def column_transformer():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    return ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), pipeline.CATEGORICAL),
            ("num", SimpleImputer(strategy="median"), pipeline.NUMERIC),
        ]
    )


def forest_pipeline(trees: int):
    """The quickstart's ColumnTransformer, then a RandomForestClassifier (one-thread predict)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        column_transformer(),
        RandomForestClassifier(n_estimators=trees, min_samples_leaf=5, random_state=0),
    )


@dataclass
class Model:
    key: str
    name: str  # registered name
    label: str  # for the table
    estimator: object = None
    ref: str = ""
    artifact: str = ""
    artifact_mib: float = math.nan
    fit_seconds: float = math.nan
    model_seconds: float = math.nan  # the predictor alone on one chunk, in the parent
    model_rows: int = 0
    #: its estimator predicts with OpenMP threads (HistGradientBoosting), so it is also run
    #: with OMP_NUM_THREADS=1
    openmp: bool = False

    def kinds(self, args: argparse.Namespace) -> tuple[str, ...]:
        one_thread = self.openmp and not args.omp_threads
        return tuple(k for k in KINDS if k != ONE_THREAD or one_thread)


def make_models(args: argparse.Namespace) -> list[Model]:
    models = {
        "quickstart": Model(
            "quickstart",
            "churn",
            "quickstart: HistGradientBoosting (cheap model)",
            pipeline.build_pipeline(),
            openmp=True,
        ),
        "forest": Model(
            "forest",
            "churn-forest",
            f"forest: RandomForest, {args.trees} trees (the model dominates)",
            forest_pipeline(args.trees),
        ),
    }
    return [models[key] for key in args.models]


def package_models(models: list[Model], settings) -> None:
    import nbmlops

    data = pipeline.churn_split(TRAIN_ROWS)
    features = pipeline.featurize(data.X_train)
    for model in models:
        start = time.perf_counter()
        model.estimator.fit(features, data.y_train)
        model.fit_seconds = time.perf_counter() - start
        version = nbmlops.package(
            model.name,
            model.estimator,
            data.X_train,
            target=data.y_train,
            preprocess=[pipeline.featurize],
            eval=(data.X_test, data.y_test),
            settings=settings,
        )
        loaded = nbmlops.load(version.ref, settings=settings)
        model.ref = version.ref
        model.artifact = str(loaded.path)
        model.artifact_mib = sum(
            p.stat().st_size for p in loaded.path.rglob("*") if p.is_file()
        ) / (1 << 20)
        print(
            f"packaged {model.label} as {model.ref} ({model.artifact_mib:.1f} MiB artifact, "
            f"fit {model.fit_seconds:.1f} s, parity {version.parity.describe()})",
            flush=True,
        )
    stop_spare_parity_process()


def stop_spare_parity_process() -> None:
    """``nbmlops.package`` leaves a warm parity process for the next packaging; it would use
    memory and CPU during the measurements."""
    from nbmlops.packaging import parity

    parity.stop_spare()


def time_model_alone(models: list[Model], source: Path, args: argparse.Namespace, settings) -> None:
    """The artifact's preprocessing + estimator alone (``LoadedModel.predictor.predict``, no
    checks, no I/O) on the file's first row group, in this process, median of 3 calls scaled to
    the whole file: how much of a run is the model."""
    import contextlib

    import pyarrow.parquet as pq
    from threadpoolctl import threadpool_limits

    import nbmlops

    frame = pq.ParquetFile(source).read_row_group(0).to_pandas()
    limit = (
        threadpool_limits(args.omp_threads, user_api="openmp")
        if args.omp_threads
        else contextlib.nullcontext()
    )
    with limit:
        for model in models:
            predictor = nbmlops.load(model.ref, settings=settings).predictor
            predictor.predict(frame.iloc[:1000])  # warm-up
            times = []
            for _ in range(3):
                start = time.perf_counter()
                predictor.predict(frame)
                times.append(time.perf_counter() - start)
            model.model_seconds = statistics.median(times) * args.rows / len(frame)
            model.model_rows = len(frame)
            print(
                f"{model.key}: the model alone on {len(frame):,} rows, scaled to {args.rows:,}: "
                f"{model.model_seconds:.1f} s",
                flush=True,
            )


# -- the data -----------------------------------------------------------------------------------


def write_inputs(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path]:
    """The file to score and its first quarter, row groups of ``--chunk-rows`` rows."""
    from nbmlops.datasets import make_churn

    frame = make_churn(args.rows, seed=1).drop(columns="churned")
    whole, quarter = tmp / "input.parquet", tmp / "input-quarter.parquet"
    frame.to_parquet(whole, index=False, row_group_size=args.chunk_rows)
    frame.iloc[: args.rows // 4].to_parquet(quarter, index=False, row_group_size=args.chunk_rows)
    print(
        f"input: {args.rows:,} rows, {whole.stat().st_size / (1 << 20):.1f} MiB of Parquet, "
        f"row groups of {args.chunk_rows:,} rows; quarter: {args.rows // 4:,} rows",
        flush=True,
    )
    return whole, quarter


# -- the measurements ---------------------------------------------------------------------------


@dataclass
class Measured:
    model: str
    kind: str
    runs: list[dict] = field(default_factory=list)

    def median(self, key: str) -> float:
        values = [r[key] for r in self.runs if r.get(key) is not None]
        return statistics.median(values) if values else math.nan

    def largest(self, key: str) -> float:
        values = [r[key] for r in self.runs if r.get(key) is not None]
        return max(values) if values else math.nan

    @property
    def rows(self) -> int:
        return self.runs[0]["rows_in"]

    @property
    def seconds(self) -> float:
        return self.median("seconds")

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def child_env(home: Path, omp_threads: int | None) -> dict[str, str]:
    """The environment of a measured process: the temporary store, OpenMP's threads if set."""
    env = {k: v for k, v in os.environ.items() if k not in bench_package.STORE_VARIABLES}
    if omp_threads:
        env["OMP_NUM_THREADS"] = str(omp_threads)
    env["NBMLOPS_HOME"] = str(home)
    env["PYTHONWARNINGS"] = "ignore"
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return env


def output_of(tmp: Path, model: Model, kind: str) -> Path:
    return tmp / "out" / f"{model.key}-{kind}.parquet"


def run_child(kind: str, model: Model, args, tmp: Path, home: Path, inputs) -> dict:
    whole, quarter = inputs
    job = {
        "kind": LOCAL if kind in (QUARTER, ONE_THREAD) else kind,
        "model": model.ref,
        "artifact": model.artifact,
        "input": str(quarter if kind == QUARTER else whole),
        "output": str(output_of(tmp, model, kind)),
        "chunk_rows": args.chunk_rows,
        "workers": WORKERS,
        "home": str(home),
    }
    job_file = tmp / "job.json"
    result_file = tmp / "result.json"
    job_file.write_text(json.dumps(job))
    result_file.unlink(missing_ok=True)
    load_before = os.getloadavg()[0]
    done = subprocess.run(
        [sys.executable, str(CHILD), str(job_file), str(result_file)],
        env=child_env(home, 1 if kind == ONE_THREAD else args.omp_threads),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    if done.returncode != 0 or not result_file.exists():
        raise RuntimeError(
            f"{model.key} {kind} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    result = json.loads(result_file.read_text())
    result["load_before"] = load_before
    expected_rows = args.rows // 4 if kind == QUARTER else args.rows
    if result["rows_in"] != expected_rows or result["rows_scored"] != expected_rows:
        raise RuntimeError(
            f"{model.key} {kind}: {result['rows_scored']:,} of {result['rows_in']:,} rows scored "
            f"({result['rows_rejected']:,} rejected), expected all {expected_rows:,}: the data "
            "comes from the training distribution, no row should be rejected"
        )
    return result


def describe(result: dict) -> str:
    extra = []
    if "batch_seconds" in result:
        extra.append(f"BatchResult.seconds {result['batch_seconds']:.2f}")
    if "steps" in result:
        extra.append(" ".join(f"{k} {v:.2f}" for k, v in result["steps"].items()))
    if result.get("cluster_start_s") is not None:
        extra.append(f"cluster start {result['cluster_start_s']:.2f} s")
    if result.get("workers_peak_mib"):
        extra.append(f"workers' peak {result['workers_peak_mib']:.0f} MiB")
    if result.get("workers_cpu_s"):
        extra.append(f"workers' CPU {result['workers_cpu_s']:.1f} s")
    return (
        f"{result['seconds']:7.2f} s  {result['rows_in'] / result['seconds']:>10,.0f} rows/s  "
        f"peak {result['peak_mib']:.0f} MiB (after imports {result['rss_before_mib']:.0f})  "
        f"CPU {result['cpu_s']:.1f} s  " + ", ".join(extra)
    )


# -- agreement ----------------------------------------------------------------------------------


def check_agreement(model: Model, kinds: tuple[str, ...], tmp: Path, rows: int) -> float:
    """The outputs of MLflow's pyfunc, the local engine and both Dask runs: the same
    prediction for every row and probabilities within PROBA_TOLERANCE. Returns the largest
    probability difference; raises on any disagreement."""
    import numpy as np
    import pyarrow.parquet as pq

    reference = pq.read_table(output_of(tmp, model, MLFLOW)).to_pandas()
    if len(reference) != rows:
        raise RuntimeError(f"{model.key}: MLflow wrote {len(reference):,} rows, not {rows:,}")
    probas = [c for c in reference.columns if c.startswith("proba_")]
    largest = 0.0
    for kind in (k for k in COMPARED[1:] if k in kinds):
        # the Dask engine writes a folder of parts, read in the order of their names
        other = pq.read_table(output_of(tmp, model, kind)).to_pandas()
        if list(other.columns) != list(reference.columns):
            raise RuntimeError(
                f"{model.key} {kind}: columns {list(other.columns)}, MLflow's "
                f"{list(reference.columns)}"
            )
        if len(other) != rows:
            raise RuntimeError(f"{model.key} {kind}: {len(other):,} rows out, not {rows:,}")
        same = np.asarray(other["prediction"]) == np.asarray(reference["prediction"])
        if not same.all():
            row = int(np.flatnonzero(~same)[0])
            raise RuntimeError(
                f"{model.key}: {kind} predicts {other['prediction'].iloc[row]!r} for row {row}, "
                f"MLflow's pyfunc {reference['prediction'].iloc[row]!r} "
                f"({int((~same).sum()):,} rows differ)"
            )
        for column in probas:
            diff = np.abs(other[column].to_numpy(float) - reference[column].to_numpy(float))
            if not np.all(diff <= PROBA_TOLERANCE):
                row = int(np.argmax(~(diff <= PROBA_TOLERANCE)))
                raise RuntimeError(
                    f"{model.key}: {kind} gives {column} = {other[column].iloc[row]!r} for row "
                    f"{row}, MLflow's pyfunc {reference[column].iloc[row]!r}"
                )
            largest = max(largest, float(diff.max(initial=0.0)))
    print(
        f"{model.key}: {', '.join(k for k in COMPARED if k in kinds)} agree on all {rows:,} "
        f"rows (largest probability difference {largest:.1e})",
        flush=True,
    )
    return largest


def remove_outputs(tmp: Path, model: Model) -> None:
    import shutil

    for kind in KINDS:
        path = output_of(tmp, model, kind)
        for target in (path, path.with_name(f"{path.stem}.rejected{path.suffix}")):
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)


# -- reporting ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def mib(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.0f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def total_memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return math.nan


def machine_info(
    args: argparse.Namespace,
    models: list[Model],
    measured: dict[tuple[str, str], Measured],
    minutes: float,
) -> list[str]:
    runs = [r for m in measured.values() for r in m.runs]
    loads = [r["load_before"] for r in runs]
    threads = sorted(
        {
            r["openmp_threads"]
            for m in measured.values()
            if m.kind != ONE_THREAD
            for r in m.runs
            if r.get("openmp_threads")
        }
    )
    openmp = ", ".join(map(str, threads)) or "n/a"
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores "
        f"({bench_package.cpu_model()}), {total_memory_gib():.0f} GiB",
        f"- python: {platform.python_version()} ({sys.executable})",
        f"- packages: {bench_package.installed_versions(VERSIONS_OF)}",
        f"- nbmlops commit: {bench_package.git_commit()}",
        f"- load average (1 min) at start / end: {args.load_start:.2f} / "
        f"{os.getloadavg()[0]:.2f} (other work on the machine makes the numbers noisier)",
        f"- data: `make_churn({args.rows:,}, seed=1)` without `churned`, Parquet with row groups "
        f"of {args.chunk_rows:,} rows, `chunk_rows={args.chunk_rows:,}`; the models were "
        f"fitted on the 80/20 split of `make_churn({TRAIN_ROWS:,})`: "
        + "; ".join(
            f"{m.key} fit {m.fit_seconds:.1f} s, artifact {m.artifact_mib:.1f} MiB" for m in models
        ),
        f"- OpenMP threads in the process calling `predict` (scikit-learn's "
        f"HistGradientBoosting predicts with them): {openmp} "
        + (
            f"(`OMP_NUM_THREADS={args.omp_threads}`)"
            if args.omp_threads
            else "(`OMP_NUM_THREADS` not set)"
        )
        + "; in the Dask workers: 1 (Dask sets `OMP_NUM_THREADS=1` for the workers it spawns)",
        f"- {args.repeat} run(s) of each measurement; load average (1 min) before each: "
        f"{min(loads):.2f} to {max(loads):.2f}; whole benchmark: {minutes:.1f} min",
    ]


def render(
    args: argparse.Namespace,
    models: list[Model],
    measured: dict[tuple[str, str], Measured],
    minutes: float,
) -> tuple[str, dict[str, bool]]:
    what = {
        MLFLOW: "MLflow `pyfunc.load_model(path).predict(pd.read_parquet(input))` + "
        "`to_parquet` (baseline)",
        LOCAL: '`nbmlops.predict(..., engine="local")`',
        RUNNING: f'`nbmlops.predict(..., engine="dask", scheduler=...)`, a LocalCluster of '
        f"{WORKERS} workers already running",
        DASK: f'`nbmlops.predict(..., engine="dask", workers={WORKERS})`: nbmlops starts and '
        "closes its LocalCluster (timed)",
        ONE_THREAD: '`nbmlops.predict(..., engine="local")` with `OMP_NUM_THREADS=1`',
        QUARTER: '`nbmlops.predict(..., engine="local")` on the first quarter (memory flatness)',
    }
    lines = [
        f"`{args.rows:,}` rows of Parquet scored into Parquet, each measurement in a fresh "
        "process whose imports are done before its clock starts. s: wall time of loading the "
        "model, reading, scoring (nbmlops checks every row first) and writing; on the running "
        "cluster, without its start-up. peak: the peak resident set (`VmHWM`) of the process "
        "that called `predict` (or MLflow), imports included; with Dask, the scheduler and the "
        "nannies live in it too. The Dask workers are separate processes: the largest worker's "
        "peak. CPU s: the calling process's, `+` the workers' (with the cluster nbmlops starts, "
        "their whole life, start-up included; on the running cluster, during the run)."
        + (f" Median of {args.repeat} runs; the largest peak." if args.repeat > 1 else ""),
        "",
        "| model | run | rows | s | rows/s | vs MLflow (rows/s) | peak MiB | after imports "
        "MiB | workers' peak MiB | CPU s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model in models:
        base = measured[(model.key, MLFLOW)].rows_per_second
        for kind in (k for k in SHOWN if (model.key, k) in measured):
            m = measured[(model.key, kind)]
            cpu = fmt(m.median("cpu_s"), 1)
            if kind in (DASK, RUNNING):
                cpu += f" + {fmt(m.median('workers_cpu_s'), 1)}"
            lines.append(
                f"| {model.key} | {what[kind]} | {m.rows:,} | {fmt(m.seconds)} | "
                f"{m.rows_per_second:,.0f} | {m.rows_per_second / base:.2f}x | "
                f"{mib(m.largest('peak_mib'))} | {mib(m.median('rss_before_mib'))} | "
                f"{mib(m.largest('workers_peak_mib')) if kind in (DASK, RUNNING) else '-'} | "
                f"{cpu} |"
            )

    lines += ["", "Where the time goes:", ""]
    for model in models:
        ml = measured[(model.key, MLFLOW)]
        local = measured[(model.key, LOCAL)]
        running = measured[(model.key, RUNNING)]
        steps = ", ".join(
            f"`{name}` {fmt(statistics.median(r['steps'][name] for r in ml.runs))} s"
            for name in ml.runs[0]["steps"]
        )
        lines.append(
            f"- {model.label}: the model alone (the artifact's preprocessing + estimator, "
            f"`LoadedModel.predictor.predict`, median of 3 calls on one {model.model_rows:,}-row "
            f"chunk in the benchmark's own process, scaled) would take "
            f"{fmt(model.model_seconds)} s for {args.rows:,} rows, "
            f"{model.model_seconds / local.seconds:.0%} of the local engine's time; "
            f"MLflow: {steps}; the local engine's `BatchResult.seconds` (without loading "
            f"the model) {fmt(local.median('batch_seconds'))} s; the running cluster took "
            f"{fmt(running.median('cluster_start_s'))} s to start (workers' imports "
            "included, not in its row)."
        )

    targets: dict[str, bool] = {}
    target_lines = []
    for model in models:
        ml = measured[(model.key, MLFLOW)]
        local = measured[(model.key, LOCAL)]
        ratio = local.rows_per_second / ml.rows_per_second
        targets[f"local_vs_mlflow_{model.key}"] = ratio >= TARGET_LOCAL_VS_MLFLOW
        one_thread = measured.get((model.key, ONE_THREAD))
        aside = (
            f"; with `OMP_NUM_THREADS=1`, {one_thread.rows_per_second / ml.rows_per_second:.2f}x"
            if one_thread
            else ""
        )
        target_lines.append(
            f"- the local engine at least as fast as MLflow's pyfunc, {model.key}: "
            f"{verdict(ratio >= TARGET_LOCAL_VS_MLFLOW)} ({local.rows_per_second:,.0f} vs "
            f"{ml.rows_per_second:,.0f} rows/s, {ratio:.2f}x{aside})"
        )
    for model in models:
        local = measured[(model.key, LOCAL)]
        running = measured[(model.key, RUNNING)]
        own = measured[(model.key, DASK)]
        speedup = running.rows_per_second / local.rows_per_second
        own_speedup = own.rows_per_second / local.rows_per_second
        dominated = model.key == "forest"
        if dominated:
            targets["dask_vs_local"] = speedup >= TARGET_DASK_VS_LOCAL
        label = (
            f"Dask on {WORKERS} workers at least {TARGET_DASK_VS_LOCAL:g}x the local engine when "
            f"the model dominates ({model.key}): {verdict(speedup >= TARGET_DASK_VS_LOCAL)}"
            if dominated
            else f"for reference, Dask on {WORKERS} workers against the local engine with a "
            f"cheap model ({model.key}, not the target's case)"
        )
        figures = (
            f"{speedup:.2f}x on a running cluster; {own_speedup:.2f}x with the cluster nbmlops "
            "starts itself, start-up included"
        )
        target_lines.append(f"- {label} ({figures})" if dominated else f"- {label}: {figures}")
    for model in models:
        whole = measured[(model.key, LOCAL)].largest("peak_mib")
        quarter = measured[(model.key, QUARTER)].largest("peak_mib")
        target_lines.append(
            f"- memory of the local engine, {model.key} (not a target of the issue, for "
            f"reference): peak {mib(quarter)} MiB at {args.rows // 4:,} rows, {mib(whole)} MiB "
            f"at {args.rows:,} rows ({whole - quarter:+,.0f} MiB for 4x the rows); MLflow's "
            f"pyfunc, which reads the whole file: "
            f"{mib(measured[(model.key, MLFLOW)].largest('peak_mib'))} MiB"
        )
    lines += ["", "Targets from the issue:", "", *target_lines]
    lines += [
        "",
        f"Agreement: for each model, the outputs of every run on the whole file (MLflow's "
        f"pyfunc, the local engine, both Dask runs) hold the same prediction for each of the "
        f"{args.rows:,} rows and the same probabilities within {PROBA_TOLERANCE:g}, and no row "
        "was rejected (checked after every repeat; the benchmark fails otherwise).",
        "",
        "Machine:",
        "",
        *machine_info(args, models, measured, minutes),
    ]
    return "\n".join(lines) + "\n", targets


def write_readme(section: str) -> None:
    bench_package.write_section(section, START, END, SECTION_INTRO)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help=f"rows to score ({DEFAULT_ROWS:,})"
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help=f"chunk_rows and the input's row-group size (default {DEFAULT_CHUNK:,}, or a "
        "tenth of --rows when smaller, so Dask always gets 10 partitions)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=("quickstart", "forest"),
        default=["quickstart", "forest"],
        help="which models (both)",
    )
    parser.add_argument("--trees", type=int, default=200, help="the forest's trees (200)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement (1)")
    parser.add_argument(
        "--omp-threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for the measured processes (default: not set, as for a user; "
        "scikit-learn's HistGradientBoosting then predicts on every core; Dask's workers "
        "always get 1)",
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="print only; leave benchmarks/README.md alone"
    )
    args = parser.parse_args(argv)
    if args.rows < 1000 or args.repeat < 1 or args.trees < 1 or (args.omp_threads or 1) < 1:
        parser.error("--rows at least 1,000; --repeat, --trees and --omp-threads at least 1")
    if args.chunk_rows is None:
        args.chunk_rows = min(DEFAULT_CHUNK, math.ceil(args.rows / 10))
    if args.chunk_rows < 1:
        parser.error("--chunk-rows must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_start = os.getloadavg()[0]
    started = time.perf_counter()
    bench_package.quiet_libraries()
    from nbmlops.config import Settings

    with tempfile.TemporaryDirectory(prefix="nbmlops-bench-batch-") as tmp_dir:
        tmp = Path(tmp_dir)
        home = tmp / ".nbmlops"
        settings = Settings.from_env({"NBMLOPS_HOME": str(home)})
        (tmp / "out").mkdir()
        models = make_models(args)
        package_models(models, settings)
        inputs = write_inputs(args, tmp)
        time_model_alone(models, inputs[0], args, settings)

        measured: dict[tuple[str, str], Measured] = {}
        for model in models:
            for _repeat in range(args.repeat):
                for kind in model.kinds(args):
                    result = run_child(kind, model, args, tmp, home, inputs)
                    measured.setdefault((model.key, kind), Measured(model.key, kind))
                    measured[(model.key, kind)].runs.append(result)
                    print(f"{model.key:10s} {kind:13s} {describe(result)}", flush=True)
                check_agreement(model, model.kinds(args), tmp, args.rows)
                remove_outputs(tmp, model)

    minutes = (time.perf_counter() - started) / 60
    section, targets = render(args, models, measured, minutes)
    print()
    print(section)
    if not args.no_readme:
        write_readme(section)
        print(f"wrote {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
