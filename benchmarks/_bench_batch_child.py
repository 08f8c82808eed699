"""Child processes of bench_batch.py: one measurement per fresh Python process, so that peak
memory belongs to that measurement alone.

Run by ``bench_batch.py``, not by hand::

    .venv/bin/python benchmarks/_bench_batch_child.py JOB.json RESULT.json

A job is one of:

* ``mlflow``: ``mlflow.pyfunc.load_model(artifact)``, ``pd.read_parquet(input)``,
  ``model.predict(frame)``, ``predictions.to_parquet(output)``; all four timed.
* ``local``: ``nbmlops.predict(model, input, output, engine="local")``.
* ``dask``: ``nbmlops.predict(..., engine="dask", workers=N)``: nbmlops starts (and closes) a
  LocalCluster of N worker processes itself, inside the timing.
* ``dask-running``: a LocalCluster of N worker processes (one thread each, as nbmlops makes
  it) is started first and its workers import what scoring needs (timed apart, as the
  cluster's start-up); then ``nbmlops.predict(..., engine="dask", scheduler=<its address>)``.

Only the standard library is imported at module level: each kind imports what it needs
(pandas, pyarrow, scikit-learn, skops and MLflow for all; nbmlops, which resolves a registered
reference through MLflow's registry, and Dask for its kinds) before its clock starts, so import
time is outside every timing and the process holds nothing the measurement does not need.

Memory: the peak resident set of this process over its whole life (imports included), read
as ``VmHWM`` from ``/proc/self/status`` at the end, and its resident set once the imports are
done. ``VmHWM`` is the peak of this program's own address space; ``ru_maxrss`` is not used for
it because Linux carries it over a fork and exec, so a child of a large parent reports at least
the parent's size at the fork (``ru_maxrss`` is the fallback where ``/proc`` is missing). The
Dask workers are other processes: with ``dask-running``, each reports its own ``VmHWM`` through
``client.run`` after the run; with ``dask``, nbmlops' own LocalCluster starts its workers as
children of this process, and a thread reads their ``VmHWM`` every 50 ms while ``predict``
runs (the last reading before a worker exits stands for its peak; ``VmHWM`` never decreases).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import resource
import sys
import threading
import time
import warnings
from pathlib import Path

#: Imported before any clock starts, by every kind (the model's own modules included).
COMMON = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.impute",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "skops.io",
)
#: nbmlops resolves a registered reference (``churn@v1``) through MLflow's registry: its modules
#: are imported beforehand too, as they are for the MLflow baseline.
REGISTRY = (
    "mlflow",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
)
NBMLOPS = (*REGISTRY, "nbmlops", "nbmlops.batch.run", "nbmlops.registry.load", "tqdm.auto")
DASK = ("distributed", "dask.dataframe", "nbmlops.batch.cluster")
MLFLOW = ("mlflow", "mlflow.pyfunc")
#: What a worker of an already-running cluster has imported after its first job.
WORKER_MODULES = (*COMMON, "nbmlops.batch.cluster", "nbmlops.batch.scoring")


def status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` field (VmRSS, VmHWM) in MiB."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def peak_mib() -> float:
    """This process's peak resident set (``VmHWM``); ``ru_maxrss`` without ``/proc``."""
    return status_mib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ChildPeaks(threading.Thread):
    """Reads ``VmHWM`` of this process's children started by multiprocessing's ``spawn``
    (LocalCluster's workers) every ``interval`` seconds until stopped."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peaks: dict[int, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        me = str(os.getpid())
        workers: set[int] = set()
        scans = 0
        while not self._stop_event.is_set():
            if scans % 4 == 0:  # look for new workers every 4th reading
                workers |= self._spawned_children(me)
            scans += 1
            for pid in list(workers):
                value = self._hwm(pid)
                if value is None:
                    workers.discard(pid)  # gone
                else:
                    self.peaks[pid] = value
            self._stop_event.wait(self.interval)

    def stop(self) -> dict[int, float]:
        self._stop_event.set()
        self.join()
        return self.peaks

    @staticmethod
    def _spawned_children(parent: str) -> set[int]:
        found = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[1] != parent:
                    continue
                if b"spawn_main" in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.add(int(entry))
            except (OSError, IndexError):
                continue
        return found

    @staticmethod
    def _hwm(pid: int) -> float | None:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
        return int(match.group(1)) / 1024 if match else None


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def openmp_threads() -> int | None:
    """The threads scikit-learn's OpenMP code (HistGradientBoosting's predict) uses here."""
    from threadpoolctl import threadpool_info

    found = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]
    return max(found) if found else None


def import_all(names) -> None:
    for name in names:
        importlib.import_module(name)


# -- on the workers (dask-running) --------------------------------------------------------------


def worker_warm() -> None:
    import_all(WORKER_MODULES)


def worker_usage() -> dict:
    return {"peak_mib": status_mib("VmHWM"), "cpu_s": cpu_seconds(resource.RUSAGE_SELF)}


# -- the measurements ---------------------------------------------------------------------------


def run_mlflow(job: dict) -> dict:
    import mlflow.pyfunc
    import pandas as pd

    steps = {}
    start = clock = time.perf_counter()
    model = mlflow.pyfunc.load_model(job["artifact"])
    now = time.perf_counter()
    steps["load_model"], clock = now - clock, now
    frame = pd.read_parquet(job["input"])
    now = time.perf_counter()
    steps["read_parquet"], clock = now - clock, now
    predictions = model.predict(frame)
    now = time.perf_counter()
    steps["predict"], clock = now - clock, now
    predictions.to_parquet(job["output"], index=False)
    now = time.perf_counter()
    steps["to_parquet"] = now - clock
    rows = len(frame)
    return {
        "seconds": now - start,
        "rows_in": rows,
        "rows_scored": len(predictions),
        "rows_rejected": 0,
        "steps": steps,
    }


def run_nbmlops(job: dict, **options) -> dict:
    import nbmlops
    from nbmlops.config import Settings

    settings = Settings.from_env({"NBMLOPS_HOME": job["home"]})
    start = time.perf_counter()
    result = nbmlops.predict(
        job["model"],
        job["input"],
        job["output"],
        chunk_rows=job["chunk_rows"],
        progress=False,
        settings=settings,
        **options,
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "batch_seconds": result.seconds,  # BatchResult.seconds: without loading the model
        "rows_in": result.rows_in,
        "rows_scored": result.rows_scored,
        "rows_rejected": result.rows_rejected,
    }


def run_dask_own(job: dict) -> dict:
    sampler = ChildPeaks()
    sampler.start()
    try:
        out = run_nbmlops(job, engine="dask", workers=job["workers"])
    finally:
        peaks = sampler.stop()
    out["workers_peak_mib"] = max(peaks.values()) if peaks else None
    out["workers_peaks_mib"] = list(peaks.values())
    # nbmlops closed its LocalCluster: its worker processes, our children, have been reaped.
    out["workers_cpu_s"] = cpu_seconds(resource.RUSAGE_CHILDREN) or None
    return out


def run_dask_running(job: dict) -> dict:
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    cluster = LocalCluster(
        n_workers=job["workers"], threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = Client(cluster)
    try:
        client.run(worker_warm)
        cluster_start = time.perf_counter() - start
        before = client.run(worker_usage)
        out = run_nbmlops(job, engine="dask", scheduler=cluster.scheduler_address)
        after = client.run(worker_usage)
    finally:
        client.close()
        cluster.close()
    out["cluster_start_s"] = cluster_start
    out["workers_peak_mib"] = max(u["peak_mib"] or 0 for u in after.values()) or None
    out["workers_peaks_mib"] = [u["peak_mib"] for u in after.values()]
    out["workers_cpu_s"] = sum(after[w]["cpu_s"] - before[w]["cpu_s"] for w in after if w in before)
    return out


KINDS = {
    "mlflow": (MLFLOW, run_mlflow),
    "local": (NBMLOPS, lambda job: run_nbmlops(job, engine="local")),
    "dask": ((*NBMLOPS, *DASK), run_dask_own),
    "dask-running": ((*NBMLOPS, *DASK), run_dask_running),
}


def main(argv: list[str]) -> int:
    job_file, result_file = argv
    job = json.loads(Path(job_file).read_text())
    warnings.filterwarnings("ignore")
    modules, measure = KINDS[job["kind"]]
    import_all((*COMMON, *modules))
    if job["kind"] == "mlflow":
        import logging

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.ERROR)
    rss_before = status_mib("VmRSS")
    cpu_before = cpu_seconds(resource.RUSAGE_SELF)
    out = measure(job)
    out["cpu_s"] = cpu_seconds(resource.RUSAGE_SELF) - cpu_before
    out["rss_before_mib"] = rss_before
    out["peak_mib"] = peak_mib()
    out["openmp_threads"] = openmp_threads()
    Path(result_file).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
