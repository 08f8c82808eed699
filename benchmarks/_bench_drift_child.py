"""Child processes of bench_drift.py: one measurement per process, so peak memory does not mix.

Run by ``bench_drift.py``, not by hand::

    <python> benchmarks/_bench_drift_child.py nbmlops|evidently JOB.json RESULT.json

The nbmlops side runs with the project's virtualenv, the Evidently side with the Evidently
virtualenv under ``benchmarks/.work/`` (Evidently 0.7 needs pandas 2.x), so this module imports
only the standard library at module level. A job is either ``speed`` (one current frame: a
warm-up call on its first rows, not counted, then the measured calls, with memory) or ``clean``
(one call per row group of a parquet file of clean samples, flags only).

Memory: after imports and loading the data the child notes its resident set (VmRSS), then
resets the kernel's peak counter (``/proc/self/clear_refs`` with ``5``) so that VmHWM afterwards
is the peak during the measured call alone. Where the reset is refused, the peak falls back to
the whole process's ``ru_maxrss`` (and says so).
"""

from __future__ import annotations

import json
import re
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

WARMUP_ROWS = 1000


# -- memory -------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class PeakMeter:
    """Resident memory before the measured call and its peak during the call, in MiB."""

    def start(self) -> None:
        self.rss_before = _status_kib("VmRSS")
        self.peak_loading = (
            _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        )
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = _status_kib("VmHWM") is not None
        except OSError:
            self.reset = False

    def stop(self) -> dict:
        peak = _status_kib("VmHWM") if self.reset else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "rss_before_mib": (self.rss_before or 0) / 1024,
            "peak_loading_mib": self.peak_loading / 1024,
            "peak_call_mib": peak / 1024,
            "peak_is_call_only": self.reset,
        }


def timed(function, *args):
    """``function(*args)``, its wall time and the CPU time of this process during it."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def timings(first: float, first_cpu: float, repeats: list[tuple[float, float]]) -> dict:
    walls = [first, *(wall for wall, _ in repeats)]
    cpus = [first_cpu, *(cpu for _, cpu in repeats)]
    return {
        "first_seconds": first,
        "repeat_seconds": walls[1:],
        "calls": len(walls),
        "median_seconds": statistics.median(walls),
        "min_seconds": min(walls),
        "median_cpu_seconds": statistics.median(cpus),
    }


def read_frame(path: str, row_group: int | None = None):
    """A parquet file (or one row group of it) as a pandas frame."""
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    table = handle.read() if row_group is None else handle.read_row_group(row_group)
    return table.to_pandas()


# -- nbmlops ------------------------------------------------------------------------------------


def nbmlops_job(job: dict) -> dict:
    from nbmlops.artifact.profile import Profile
    from nbmlops.monitoring.drift import detect_drift

    start = time.perf_counter()
    profile = Profile.from_dict(json.loads(Path(job["profile"]).read_text()))
    references = list(profile.columns)
    load_seconds = time.perf_counter() - start
    if job["mode"] == "clean":
        runs = []
        for index in range(job["runs"]):
            frame = read_frame(job["current"], index)
            start = time.perf_counter()
            results = detect_drift(references, frame)
            seconds = time.perf_counter() - start
            runs.append(
                {
                    "seconds": seconds,
                    "flagged": [r.name for r in results if r.drifted],
                    "significant": [r.name for r in results if r.significant],
                }
            )
        return {"profile_load_seconds": load_seconds, "runs": runs}

    frame = read_frame(job["current"])
    detect_drift(references, frame.iloc[:WARMUP_ROWS])  # warm-up, not counted
    meter = PeakMeter()
    meter.start()
    results, first, first_cpu = timed(detect_drift, references, frame)
    memory = meter.stop()
    repeats = [timed(detect_drift, references, frame)[1:] for _ in range(job["repeats"])]
    return {
        "rows": len(frame),
        "profile_load_seconds": load_seconds,
        **timings(first, first_cpu, repeats),
        "memory": memory,
        "columns": [
            {
                "name": r.name,
                "kind": r.kind,
                "test": r.test,
                "drifted": r.drifted,
                "significant": r.significant,
                "pvalue": r.pvalue,
                "effect": r.effect,
                "psi": r.psi,
                "note": r.note,
            }
            for r in results
        ],
    }


# -- Evidently ----------------------------------------------------------------------------------


def evidently_job(job: dict) -> dict:
    warnings.filterwarnings("ignore")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=job["numerical"], categorical_columns=job["categorical"]
    )
    reference = read_frame(job["reference"])

    def run(current) -> dict:
        # include_tests=True only attaches Evidently's own pass/fail verdicts (per column and
        # for the dataset) to the snapshot; the drift computation is the same.
        snapshot = Report([DataDriftPreset()], include_tests=True).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        return snapshot.dict()

    if job["mode"] == "clean":
        runs = []
        for index in range(job["runs"]):
            frame = read_frame(job["current"], index)
            start = time.perf_counter()
            result = run(frame)
            seconds = time.perf_counter() - start
            runs.append({"seconds": seconds, **_evidently_flags(result)})
        return {"runs": runs}

    frame = read_frame(job["current"])
    run(frame.iloc[:WARMUP_ROWS])  # warm-up, not counted: Evidently's lazy imports
    meter = PeakMeter()
    meter.start()
    result, first, first_cpu = timed(run, frame)
    memory = meter.stop()
    repeats = [timed(run, frame)[1:] for _ in range(job["repeats"])]
    return {
        "rows": len(frame),
        **timings(first, first_cpu, repeats),
        "memory": memory,
        **_evidently_flags(result),
    }


def _evidently_flags(snapshot: dict) -> dict:
    """Per-column verdicts (the ValueDrift tests) and the dataset verdict (the share test)."""
    columns: dict[str, dict] = {}
    count = share = None
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            columns[config["column"]] = {
                "method": config.get("method"),
                "threshold": config.get("threshold"),
                "score": metric["value"],
            }
        elif config["type"].endswith("DriftedColumnsCount"):
            count, share = metric["value"]["count"], metric["value"]["share"]
    dataset_drift = None
    for test in snapshot["tests"]:
        params = test["metric_config"]["params"]
        failed = "FAIL" in str(test["status"])  # a TestStatus enum (or its name)
        if params["type"].endswith("ValueDrift"):
            columns[params["column"]]["drifted"] = failed
        elif params["type"].endswith("DriftedColumnsCount"):
            dataset_drift = failed
    flagged = [name for name, c in columns.items() if c.get("drifted")]
    return {
        "columns": columns,
        "flagged": flagged,
        "drifted_count": count,
        "drifted_share": share,
        "dataset_drift": dataset_drift,
    }


def main(argv: list[str]) -> int:
    side, job_path, result_path = argv
    job = json.loads(Path(job_path).read_text())
    result = nbmlops_job(job) if side == "nbmlops" else evidently_job(job)
    result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
