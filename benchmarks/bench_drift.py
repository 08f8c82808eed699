"""Benchmark: nbmlops drift detection against its stored profile, and Evidently's drift report.

Run from the repository root::

    .venv/bin/python benchmarks/bench_drift.py [--sizes N ...] [--clean-sizes N ...] [--no-readme]

Data: 20 columns made with numpy (14 numeric of different shapes, 6 categorical from 2 to 30
levels, two columns with missing values). A reference set (20,000 rows) is profiled once with
``nbmlops.artifact.profile.build_profile`` (the model output is a dummy score column) and the
profile is stored as JSON, as in an artifact. Current sets of 10k, 100k and 1M rows are drawn
from the same generator, then 5 columns are drifted (see ``INJECTED``). Clean sets (no change
at all) of 200, 1k, 10k and 100k rows are drawn many times with new seeds.

Both tools see the same parquet files, written once to a temporary directory outside the
repository:

* nbmlops: ``detect_drift(profile.columns, current)`` with the stored profile (no raw reference
  data) and default ``Thresholds``;
* Evidently 0.7 (in its own virtualenv under ``benchmarks/.work/``, since it needs pandas 2.x):
  ``Report([DataDriftPreset()], include_tests=True).run(current, reference)`` on ``Dataset``
  objects with the same numeric/categorical split, with the raw 20,000-row reference. Its
  defaults; ``include_tests`` only attaches its own per-column and dataset verdicts.

Every measurement runs in a child process (``_bench_drift_child.py``) so peak memory does not
mix: after a warm-up call on the first 1,000 rows (not counted: lazy imports), the child resets
its peak-RSS counter and times one call on the whole frame, then repeats it (nbmlops 9 times,
Evidently twice below 1M rows and not at all at 1M). The clean runs loop over row groups of one
parquet file per size, one child per tool and size. Results go to stdout and to the section
between the bench_drift markers in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = HERE / "README.md"
START = "<!-- bench_drift:start -->"
END = "<!-- bench_drift:end -->"
CHILD = HERE / "_bench_drift_child.py"
EVIDENTLY_VENV = HERE / ".work" / "evidently-venv"
EVIDENTLY_REQUIREMENTS = ("evidently==0.7.*", "pandas<3", "pyarrow")
EVIDENTLY_VERSIONS_OF = ("evidently", "pandas", "numpy", "scipy", "pyarrow")
VERSIONS_OF = ("nbmlops", "pandas", "numpy", "scipy", "pyarrow")

sys.path.insert(0, str(HERE))
import bench_package  # noqa: E402 - shared helpers (CPU model, git commit, README intro)

SEED = 20_261_126
REFERENCE_ROWS = 20_000
SIZES = (10_000, 100_000, 1_000_000)
CLEAN_SIZES = (200, 1_000, 10_000, 100_000)
NBMLOPS_TIMED_REPEATS = 9  # after the first measured call
EVIDENTLY_TIMED_REPEATS = 2  # after the first measured call, below EVIDENTLY_ONCE_FROM rows
EVIDENTLY_ONCE_FROM = 1_000_000  # Evidently takes minutes here: one measured call only
# clean runs per size: nbmlops is cheap, so more runs make its rate tighter
NBMLOPS_CLEAN_RUNS = {200: 200, 1_000: 200, 10_000: 100, 100_000: 40}
EVIDENTLY_CLEAN_RUNS = {200: 40, 1_000: 40, 10_000: 40, 100_000: 10}
CHILD_TIMEOUT = 3600

# targets from the issue
TARGET_SPEEDUP = 100.0  # nbmlops at least 100x faster than Evidently at 1M rows
TARGET_SECONDS = 1.0  # and under 1 s against the stored profile
TARGET_ROWS = 1_000_000
FOUND_FROM = 100_000  # every injected drift found at this size and above
MAX_ALARM_RATE = 0.05  # at most 5% of clean runs raise any alarm, at every size

NUMERIC = [f"num_{i:02d}" for i in range(14)]
CATEGORICAL = [f"cat_{i:02d}" for i in range(6)]
COLUMNS = (*NUMERIC, *CATEGORICAL)

# population parameters the drift is scaled by
NUM00_MEAN, NUM00_STD = 50.0, 10.0
NUM01_SHAPE, NUM01_SCALE = 2.0, 1.5
NUM01_STD = math.sqrt(NUM01_SHAPE) * NUM01_SCALE
CAT00_LEVELS, CAT00_P = ["a", "b", "c", "d", "e"], [0.35, 0.25, 0.20, 0.12, 0.08]
CAT00_MOVED = 0.10  # share of all rows moved from "a" to "e"
CAT01_LEVELS, CAT01_P = ["x", "y", "z"], [0.5, 0.3, 0.2]
CAT01_NEW = 0.05  # share of rows that become the new category "w"
CAT03_LEVELS = [f"k{i:02d}" for i in range(12)]
CAT04_LEVELS = [f"city_{i:02d}" for i in range(30)]
CAT05_LEVELS, CAT05_P = ["red", "green", "blue", "black"], [0.4, 0.3, 0.2, 0.1]

DISTRIBUTIONS = {
    "num_00": "normal(50, 10)",
    "num_01": "gamma(shape 2, scale 1.5)",
    "num_02": "normal(0, 1)",
    "num_03": "lognormal(3, 0.5)",
    "num_04": "uniform(0, 100)",
    "num_05": "exponential(2)",
    "num_06": "poisson(3), integers",
    "num_07": "student-t(4)",
    "num_08": "30% normal(-2, 0.5) + 70% normal(3, 1)",
    "num_09": "beta(2, 5)",
    "num_10": "normal(-5, 0.1)",
    "num_11": "integers 18..90",
    "num_12": "normal(100, 15), 5% missing",
    "num_13": "weibull(1.5)",
    "cat_00": "5 levels, 35/25/20/12/8%",
    "cat_01": "3 levels, 50/30/20%",
    "cat_02": "yes/no, 70/30%",
    "cat_03": "12 levels, Zipf-like",
    "cat_04": "30 levels (fixed Dirichlet weights)",
    "cat_05": "4 levels, 40/30/20/10%, 2% missing",
}

# the 5 drifted columns; the 6 changes: the scale change rides on the largest mean shift
INJECTED = {
    "num_00": "mean +0.5 std and std x1.5",
    "num_01": "mean +0.25 std",
    "num_02": "mean +0.1 std",
    "cat_00": "share shift: 10 points of `a` (35% -> 25%) go to `e` (8% -> 18%)",
    "cat_01": "new category `w` on 5% of rows (x/y/z shrink in proportion)",
}


# -- data ---------------------------------------------------------------------------------------


def make_frame(rows: int, seed: list[int], drifted: bool = False) -> pd.DataFrame:
    """``rows`` rows of the 20 columns; with ``drifted`` the 5 ``INJECTED`` changes applied."""
    rng = np.random.default_rng([SEED, *seed])
    n = rows
    data: dict[str, np.ndarray] = {
        "num_00": rng.normal(NUM00_MEAN, NUM00_STD, n),
        "num_01": rng.gamma(NUM01_SHAPE, NUM01_SCALE, n),
        "num_02": rng.normal(0.0, 1.0, n),
        "num_03": rng.lognormal(3.0, 0.5, n),
        "num_04": rng.uniform(0.0, 100.0, n),
        "num_05": rng.exponential(2.0, n),
        "num_06": rng.poisson(3.0, n),
        "num_07": rng.standard_t(4, n),
        "num_08": np.where(rng.random(n) < 0.3, rng.normal(-2.0, 0.5, n), rng.normal(3.0, 1.0, n)),
        "num_09": rng.beta(2.0, 5.0, n),
        "num_10": rng.normal(-5.0, 0.1, n),
        "num_11": rng.integers(18, 91, n),
    }
    num12 = rng.normal(100.0, 15.0, n)
    num12[rng.random(n) < 0.05] = np.nan
    data["num_12"] = num12
    data["num_13"] = rng.weibull(1.5, n)
    data["cat_00"] = rng.choice(np.array(CAT00_LEVELS, dtype=object), n, p=CAT00_P)
    data["cat_01"] = rng.choice(np.array(CAT01_LEVELS, dtype=object), n, p=CAT01_P)
    data["cat_02"] = rng.choice(np.array(["yes", "no"], dtype=object), n, p=[0.7, 0.3])
    zipf = 1.0 / np.arange(1, len(CAT03_LEVELS) + 1)
    data["cat_03"] = rng.choice(np.array(CAT03_LEVELS, dtype=object), n, p=zipf / zipf.sum())
    weights = np.random.default_rng(123).dirichlet(np.full(len(CAT04_LEVELS), 2.0))
    data["cat_04"] = rng.choice(np.array(CAT04_LEVELS, dtype=object), n, p=weights)
    colours = rng.choice(np.array(CAT05_LEVELS, dtype=object), n, p=CAT05_P)
    colours[rng.random(n) < 0.02] = None
    data["cat_05"] = colours
    if drifted:
        x = data["num_00"]
        data["num_00"] = NUM00_MEAN + 1.5 * (x - NUM00_MEAN) + 0.5 * NUM00_STD
        data["num_01"] = data["num_01"] + 0.25 * NUM01_STD
        data["num_02"] = data["num_02"] + 0.1 * 1.0
        cat00 = data["cat_00"]
        move = (cat00 == "a") & (rng.random(n) < CAT00_MOVED / CAT00_P[0])
        cat00[move] = "e"
        cat01 = data["cat_01"]
        cat01[rng.random(n) < CAT01_NEW] = "w"
    return pd.DataFrame(data)


def dummy_outputs(frame: pd.DataFrame) -> pd.DataFrame:
    """A stand-in for the model's output on the reference: a score in (0, 1)."""
    logit = 0.8 * frame["num_02"] + (frame["cat_02"] == "yes") - 0.5
    return pd.DataFrame({"prediction": 1.0 / (1.0 + np.exp(-logit.to_numpy(dtype=float)))})


def population_effects() -> dict[str, tuple[float, float]]:
    """Each injected change's size in the population: (nbmlops scale, Evidently scale).

    Numeric: Wasserstein-1 distance divided by the reference std (both tools' effect). Every
    change is a monotone map of the clean value, so W1 = E|T(X) - X|: a mean shift of k std is
    k; for num_00, 0.5 std * E|1 + Z|. Categorical: Jensen-Shannon distance, base 2 for nbmlops,
    natural log for Evidently (scipy's default, which Evidently uses).
    """
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import norm

    num00 = 0.5 * (2 * norm.pdf(1.0) + 2 * norm.cdf(1.0) - 1)
    cat00_ref = np.array(CAT00_P)
    cat00_cur = cat00_ref.copy()
    cat00_cur[0] -= CAT00_MOVED
    cat00_cur[-1] += CAT00_MOVED
    cat01_ref = np.array([*CAT01_P, 0.0])
    cat01_cur = np.array([*(np.array(CAT01_P) * (1 - CAT01_NEW)), CAT01_NEW])
    effects = {"num_00": (num00, num00), "num_01": (0.25, 0.25), "num_02": (0.1, 0.1)}
    for name, ref, cur in (("cat_00", cat00_ref, cat00_cur), ("cat_01", cat01_ref, cat01_cur)):
        effects[name] = (float(jensenshannon(ref, cur, base=2)), float(jensenshannon(ref, cur)))
    return effects


def write_clean(path: Path, rows: int, runs: int) -> None:
    """``runs`` clean samples of ``rows`` rows, one parquet row group each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for run in range(runs):
            table = pa.Table.from_pandas(make_frame(rows, [2, rows, run]), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=rows)
    finally:
        if writer is not None:
            writer.close()


# -- the Evidently virtualenv -------------------------------------------------------------------


def evidently_python() -> Path:
    """The Evidently venv's interpreter, creating the venv (``python3 -m venv`` + pip) if needed."""
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        print(f"creating {EVIDENTLY_VENV.relative_to(ROOT)} with {base} ...", flush=True)
        subprocess.run([base, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *EVIDENTLY_REQUIREMENTS], check=True
        )
    return python


def evidently_versions(python: Path) -> list[str]:
    code = (
        "import importlib.metadata as m\n"
        f"for n in {EVIDENTLY_VERSIONS_OF!r}:\n"
        "    print(n, m.version(n))\n"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split("\n")[:-1]


# -- child processes ----------------------------------------------------------------------------


class Children:
    """Runs one job per child process (nbmlops: this venv; Evidently: its own venv)."""

    def __init__(self, workdir: Path, evidently: Path):
        self.workdir = workdir
        self.python = {"nbmlops": Path(sys.executable), "evidently": evidently}
        self.count = 0

    def run(self, side: str, job: dict) -> dict:
        self.count += 1
        job_path = self.workdir / f"job-{self.count}.json"
        result_path = self.workdir / f"result-{self.count}.json"
        job_path.write_text(json.dumps(job))
        argv = [str(self.python[side]), str(CHILD), side, str(job_path), str(result_path)]
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            _, err = proc.communicate(timeout=CHILD_TIMEOUT)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"{side} child failed ({proc.returncode}):\n{err[-3000:]}")
        return json.loads(result_path.read_text())


# -- measurements -------------------------------------------------------------------------------


def measure_sizes(args, children: Children, files: dict) -> dict[int, dict]:
    out = {}
    for rows in args.sizes:
        nb = children.run(
            "nbmlops",
            {
                "mode": "speed",
                "profile": str(files["profile"]),
                "current": str(files[("drifted", rows)]),
                "repeats": NBMLOPS_TIMED_REPEATS,
            },
        )
        print(
            f"{rows:>9,} rows  nbmlops   first {nb['first_seconds']:8.3f} s  median "
            f"{nb['median_seconds']:8.3f} s  peak {nb['memory']['peak_call_mib']:7.0f} MiB  "
            f"flagged {[c['name'] for c in nb['columns'] if c['drifted']]}",
            flush=True,
        )
        repeats = 0 if rows >= EVIDENTLY_ONCE_FROM else EVIDENTLY_TIMED_REPEATS
        ev = children.run(
            "evidently",
            {
                "mode": "speed",
                "reference": str(files["reference"]),
                "current": str(files[("drifted", rows)]),
                "numerical": NUMERIC,
                "categorical": CATEGORICAL,
                "repeats": repeats,
            },
        )
        print(
            f"{rows:>9,} rows  Evidently first {ev['first_seconds']:8.3f} s  median "
            f"{ev['median_seconds']:8.3f} s  peak {ev['memory']['peak_call_mib']:7.0f} MiB  "
            f"flagged {ev['flagged']}  dataset drift {ev['dataset_drift']}",
            flush=True,
        )
        out[rows] = {"nbmlops": nb, "evidently": ev}
    return out


def measure_clean(args, children: Children, files: dict) -> dict[int, dict]:
    out = {}
    for rows in args.clean_sizes:
        path = str(files[("clean", rows)])
        nb = children.run(
            "nbmlops",
            {
                "mode": "clean",
                "profile": str(files["profile"]),
                "current": path,
                "runs": args.nbmlops_clean_runs[rows],
            },
        )
        ev = children.run(
            "evidently",
            {
                "mode": "clean",
                "reference": str(files["reference"]),
                "current": path,
                "numerical": NUMERIC,
                "categorical": CATEGORICAL,
                "runs": args.evidently_clean_runs[rows],
            },
        )
        out[rows] = {"nbmlops": nb["runs"], "evidently": ev["runs"]}
        nb_rate = alarm_rate(nb["runs"])
        ev_rate = alarm_rate(ev["runs"])
        print(
            f"{rows:>9,} rows clean  nbmlops {nb_rate[0]}/{nb_rate[1]} runs with an alarm   "
            f"Evidently {ev_rate[0]}/{ev_rate[1]} (dataset drift "
            f"{sum(bool(r['dataset_drift']) for r in ev['runs'])})",
            flush=True,
        )
    return out


# -- reporting ----------------------------------------------------------------------------------


def alarm_rate(runs: list[dict]) -> tuple[int, int]:
    return sum(bool(r["flagged"]) for r in runs), len(runs)


def wilson_upper(hits: int, n: int, z: float = 1.96) -> float:
    """Upper end of the 95% Wilson interval for a rate of ``hits`` in ``n``."""
    if n == 0:
        return float("nan")
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**NOT met**")


def seconds(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def column_counts(runs: list[dict], key: str = "flagged") -> str:
    counts = Counter(name for r in runs for name in r.get(key, ()))
    if not counts:
        return "-"
    return ", ".join(f"{name} x{k}" for name, k in sorted(counts.items(), key=lambda i: -i[1]))


def nbmlops_flags(result: dict) -> list[str]:
    return [c["name"] for c in result["columns"] if c["drifted"]]


def render(
    args,
    sizes: dict,
    clean: dict,
    evidently_info: list[str],
    profile_seconds: float,
):
    effects = population_effects()
    lines = [
        f"Reference: {REFERENCE_ROWS:,} rows, profiled once with `build_profile` "
        f"({profile_seconds:.2f} s; each numeric column kept as 1,000 quantiles of all its "
        "values, which nbmlops' KS test and Wasserstein effect use) and stored as JSON; nbmlops "
        "reads only that profile, Evidently gets the raw reference. 20 columns, "
        f"{len(NUMERIC)} numeric and {len(CATEGORICAL)} categorical; the drifted current sets "
        "change these 5 (the other 15 are drawn exactly as in the reference):",
        "",
        "| column | reference distribution | injected change | population effect, nbmlops "
        "scale | Evidently scale |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for name, change in INJECTED.items():
        nb_effect, ev_effect = effects[name]
        lines.append(
            f"| {name} | {DISTRIBUTIONS[name]} | {change} | {nb_effect:.3f} | {ev_effect:.3f} |"
        )
    lines += [
        "",
        "The effect is what both tools compare with their default threshold of 0.1: the "
        "Wasserstein distance over the reference std for numeric columns (nbmlops from the "
        "profile's quantiles, Evidently from the raw reference), the Jensen-Shannon distance for "
        "categorical ones (nbmlops in base 2, Evidently in natural log). num_02's 0.1 std shift "
        "sits exactly on the threshold.",
        "",
        "Speed and memory on the drifted sets: the drift call alone, data already in memory "
        "(nbmlops: `detect_drift`; Evidently: `Dataset.from_pandas` for both sets + "
        "`Report.run` + `snapshot.dict()`), after a warm-up call on 1,000 rows; the first "
        f"call, then {NBMLOPS_TIMED_REPEATS} more for nbmlops and {EVIDENTLY_TIMED_REPEATS} "
        f"more for Evidently below {EVIDENTLY_ONCE_FROM:,} rows (none at and above). CPU s is "
        "the process's CPU time during the call, all threads together, less disturbed by other "
        "work on the machine than wall time; from 50,000 rows `detect_drift` measures the "
        "columns on up to 4 threads (at most one per core), so its CPU time can exceed its wall "
        "time. The ratio is of the median wall times. Memory: resident set of the child before "
        "the call (imports + data) and its peak during the first call:",
        "",
        "| rows | tool | first call s | median s (calls) | min s | median CPU s | Evidently / "
        "nbmlops | RSS before MiB | peak during call MiB | increase MiB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for rows, pair in sizes.items():
        nb, ev = pair["nbmlops"], pair["evidently"]
        ratio = ev["median_seconds"] / nb["median_seconds"]
        for label, res in (("nbmlops `detect_drift`", nb), ("Evidently `DataDriftPreset`", ev)):
            mem = res["memory"]
            lines.append(
                f"| {rows:,} | {label} | {seconds(res['first_seconds'])} | "
                f"{seconds(res['median_seconds'])} ({res['calls']}) | "
                f"{seconds(res['min_seconds'])} | {seconds(res['median_cpu_seconds'])} | "
                f"{f'{ratio:,.0f}x' if res is ev else '1x'} | {mem['rss_before_mib']:,.0f} | "
                f"{mem['peak_call_mib']:,.0f} | "
                f"{mem['peak_call_mib'] - mem['rss_before_mib']:,.0f} |"
            )
    if sizes:
        load = statistics.median(p["nbmlops"]["profile_load_seconds"] for p in sizes.values())
        lines += ["", f"Loading the stored profile (JSON, `Profile.from_dict`): {load:.3f} s."]

    lines += [
        "",
        "Detection on the drifted sets (nbmlops: default `Thresholds`; Evidently: its "
        "per-column verdicts, and its dataset verdict, drift when at least half the columns "
        "drift):",
        "",
        "| rows | tool | injected found | missed | clean columns flagged | dataset drift |",
        "| ---: | --- | ---: | --- | --- | --- |",
    ]
    detail = [
        "",
        "Per injected column (nbmlops: corrected p-value / effect; Evidently: its score, the "
        "Wasserstein or Jensen-Shannon distance, against 0.1); **bold** = flagged:",
        "",
        "| rows | tool | " + " | ".join(INJECTED) + " |",
        "| ---: | --- |" + " ---: |" * len(INJECTED),
    ]
    for rows, pair in sizes.items():
        nb, ev = pair["nbmlops"], pair["evidently"]
        for label, flagged, dataset in (
            ("nbmlops", nbmlops_flags(nb), "-"),
            ("Evidently", ev["flagged"], "yes" if ev["dataset_drift"] else "no"),
        ):
            found = [c for c in INJECTED if c in flagged]
            missed = [c for c in INJECTED if c not in flagged]
            extra = [c for c in flagged if c not in INJECTED]
            lines.append(
                f"| {rows:,} | {label} | {len(found)}/{len(INJECTED)} | "
                f"{', '.join(missed) or '-'} | {', '.join(extra) or '-'} | {dataset} |"
            )
        by_name = {c["name"]: c for c in nb["columns"]}
        cells = []
        for name in INJECTED:
            c = by_name[name]
            text = f"{c['pvalue']:.2g} / {c['effect']:.3f}"
            cells.append(f"**{text}**" if c["drifted"] else text)
        detail.append(f"| {rows:,} | nbmlops | " + " | ".join(cells) + " |")
        cells = []
        for name in INJECTED:
            c = ev["columns"][name]
            text = f"{c['score']:.3f}"
            cells.append(f"**{text}**" if c.get("drifted") else text)
        detail.append(f"| {rows:,} | Evidently | " + " | ".join(cells) + " |")
    if sizes:
        lines += detail

    lines += [
        "",
        "False alarms on clean sets (new draws from the reference's generator, nothing "
        "changed): the share of runs in which any column is flagged; the 95% upper bound is "
        "Wilson's. nbmlops with default `Thresholds`, Evidently with its defaults (per-column "
        "verdicts; its dataset verdict in its own column):",
        "",
        "| rows | tool | runs | runs with any alarm | rate | 95% upper bound | columns flagged "
        "(runs) | nbmlops: columns significant (runs) | Evidently: dataset drift runs | median "
        "s per run |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |",
    ]
    for rows, pair in clean.items():
        for label, runs in (("nbmlops", pair["nbmlops"]), ("Evidently", pair["evidently"])):
            hits, n = alarm_rate(runs)
            drifts = sum(bool(r.get("dataset_drift")) for r in runs)
            dataset = f"{drifts} ({drifts / n:.0%})" if label == "Evidently" else "-"
            significant = column_counts(runs, "significant") if label == "nbmlops" else "-"
            median = statistics.median(r["seconds"] for r in runs)
            lines.append(
                f"| {rows:,} | {label} | {n} | {hits} | {hits / n:.1%} | "
                f"{wilson_upper(hits, n):.1%} | {column_counts(runs)} | {significant} | "
                f"{dataset} | {seconds(median)} |"
            )

    targets = check_targets(sizes, clean)
    lines += ["", "Targets from the issue:", "", *targets["lines"]]
    lines += ["", "Machine:", "", *machine_info(args, evidently_info)]
    return "\n".join(lines) + "\n", targets


def check_targets(sizes: dict, clean: dict) -> dict:
    lines = []
    big = sizes.get(TARGET_ROWS)
    if big is None:
        speed_ok = fast_ok = None
        speed_text = fast_text = f"({TARGET_ROWS:,} rows not in --sizes)"
    else:
        nb, ev = big["nbmlops"], big["evidently"]
        ratio = ev["median_seconds"] / nb["median_seconds"]
        best = ev["min_seconds"] / nb["min_seconds"]
        speed_ok = ratio >= TARGET_SPEEDUP
        speed_text = (
            f"({ratio:,.0f}x on median wall times: nbmlops {nb['median_seconds']:.3f} s, "
            f"Evidently {ev['median_seconds']:.1f} s; {best:,.0f}x on the fastest calls, "
            f"{ev['median_cpu_seconds'] / nb['median_cpu_seconds']:,.0f}x on CPU time)"
        )
        fast_ok = nb["median_seconds"] < TARGET_SECONDS
        fast_text = (
            f"(median of {nb['calls']} calls {nb['median_seconds']:.3f} s; first call "
            f"{nb['first_seconds']:.3f} s, fastest {nb['min_seconds']:.3f} s, slowest "
            f"{max(nb['first_seconds'], *nb['repeat_seconds']):.3f} s, median CPU "
            f"{nb['median_cpu_seconds']:.3f} s)"
        )
    lines.append(
        f"- at least {TARGET_SPEEDUP:.0f}x faster than Evidently at {TARGET_ROWS:,} rows: "
        f"{verdict(speed_ok)} {speed_text}"
    )
    lines.append(
        f"- under {TARGET_SECONDS:.0f} s at {TARGET_ROWS:,} rows against the stored profile: "
        f"{verdict(fast_ok)} {fast_text}"
    )
    large = {rows: pair for rows, pair in sizes.items() if rows >= FOUND_FROM}
    if not large:
        found_ok, found_text = None, f"(no size of {FOUND_FROM:,} rows or more in --sizes)"
    else:
        misses = {
            rows: [c for c in INJECTED if c not in nbmlops_flags(pair["nbmlops"])]
            for rows, pair in large.items()
        }
        found_ok = not any(misses.values())
        parts = [
            f"{rows:,} rows: " + (f"missed {', '.join(m)}" if m else f"all {len(INJECTED)}")
            for rows, m in misses.items()
        ]
        found_text = "(" + "; ".join(parts) + ")"
    lines.append(
        f"- every injected drift found at {FOUND_FROM:,} rows and above: "
        f"{verdict(found_ok)} {found_text}"
    )
    if not clean:
        alarm_ok, alarm_text = None, ""
    else:
        rates = {rows: alarm_rate(pair["nbmlops"]) for rows, pair in clean.items()}
        alarm_ok = all(hits / n <= MAX_ALARM_RATE for hits, n in rates.values())
        parts = [f"{rows:,} rows: {hits}/{n} = {hits / n:.1%}" for rows, (hits, n) in rates.items()]
        alarm_text = "(" + ", ".join(parts) + ")"
    lines.append(
        f"- at most {MAX_ALARM_RATE:.0%} of clean runs raise any alarm, at every size: "
        f"{verdict(alarm_ok)} {alarm_text}"
    )
    return {
        "lines": lines,
        "speedup": speed_ok,
        "seconds": fast_ok,
        "found": found_ok,
        "alarms": alarm_ok,
    }


def machine_info(args, evidently_info: list[str]) -> list[str]:
    nb_runs = ", ".join(f"{r:,}: {args.nbmlops_clean_runs[r]}" for r in args.clean_sizes)
    ev_runs = ", ".join(f"{r:,}: {args.evidently_clean_runs[r]}" for r in args.clean_sizes)
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores "
        f"({bench_package.cpu_model()}), {total_memory_gib():.0f} GiB",
        f"- python: {platform.python_version()} ({sys.executable})",
        f"- packages: {bench_package.installed_versions(VERSIONS_OF)}",
        f"- Evidently venv ({EVIDENTLY_VENV.relative_to(ROOT)}): {', '.join(evidently_info)}",
        f"- nbmlops commit: {bench_package.git_commit()}",
        f"- load average (1 min) at start / end: {args.load_start:.2f} / "
        f"{os.getloadavg()[0]:.2f} (other work on the machine makes the numbers noisier)",
        f"- clean runs per size, nbmlops: {nb_runs}; Evidently: {ev_runs}",
        f"- whole benchmark: {(time.perf_counter() - args.started) / 60:.1f} min",
    ]


def total_memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


SECTION_INTRO = """## bench_drift.py: drift detection against the stored profile, and Evidently

Times `nbmlops.monitoring.drift.detect_drift(profile.columns, current)`, which compares a batch
of live rows with the profile stored in the artifact (no raw training data), against Evidently 0.7's
data drift report (`Report([DataDriftPreset()]).run(current, reference)`, with the raw
reference), on the same data in the same run, and checks what each finds. The data has 20
columns made with numpy (14 numeric of different shapes, 6 categorical with 2 to 30 levels, two
columns with missing values). The reference set has 20,000 rows and is profiled once with
`build_profile`. The drifted current sets (10k, 100k and 1M rows) change 5 columns: mean shifts
of 0.5, 0.25 and 0.1 std on three numeric columns (the issue's std x1.5 scale change rides on
the 0.5 std one, so the issue's 6 changes touch 5 columns), a share shift on one categorical
column and a new category on another. The clean sets (200, 1k, 10k and 100k rows, many draws
each) change nothing, so any flag there is a false alarm.

Both tools run with their defaults. With more than 1,000 reference rows Evidently picks the
normalised Wasserstein distance (numeric) and the Jensen-Shannon distance (categorical), drift
when the distance reaches 0.1, with no significance test; nbmlops needs a Benjamini-Hochberg
corrected p-value below 0.05 and an effect of at least 0.1 on the same two distances. Numeric
columns: the reference distribution is kept in the profile as 1,000 quantiles of all the
profiled training values; the KS distance is computed exactly between the current values and
that distribution, and its p-value counts the reference with all its values (20,000 here, fewer
where some are missing), not as a small sample; the Wasserstein distance comes from the same
quantiles, over the reference std. Categorical columns: chi-square against the stored counts.

Evidently 0.7 needs pandas 2.x, so it runs in its own virtualenv under `benchmarks/.work/`
(created on first use with `python3 -m venv` and pip). Every measurement runs in a child
process of its own (`_bench_drift_child.py`) so peak memory does not mix; the data goes to both
as parquet files written once to a temporary directory. The issue's targets: at least 100x
faster than Evidently at 1M rows and under 1 s against the stored profile; every injected drift
found at 100k rows and above; at most 5% of clean runs raise any alarm, at every size.

The machine is small and shared: timings move with other work on it (the load average is in
the machine notes); the false-alarm rates are estimates from a limited number of runs (see the
upper bounds).

```
.venv/bin/python benchmarks/bench_drift.py              # about 6 min, most of it Evidently
.venv/bin/python benchmarks/bench_drift.py --sizes 10000 100000 --clean-sizes 200 1000
.venv/bin/python benchmarks/bench_drift.py --no-readme  # print only
```

### Results

"""


def write_readme(section: str) -> None:
    bench_package.write_section(section, START, END, SECTION_INTRO)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(SIZES), help="rows of the drifted sets"
    )
    parser.add_argument(
        "--clean-sizes",
        type=int,
        nargs="+",
        default=list(CLEAN_SIZES),
        help="rows of the clean sets (false alarms)",
    )
    parser.add_argument(
        "--clean-runs", type=int, default=None, help="clean runs per size for nbmlops"
    )
    parser.add_argument(
        "--evidently-clean-runs", type=int, default=None, help="clean runs per size for Evidently"
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="print only; leave benchmarks/README.md alone"
    )
    args = parser.parse_args(argv)
    if min(args.sizes) < 1_000 or min(args.clean_sizes) < 50:
        parser.error("--sizes must be at least 1000 rows and --clean-sizes at least 50")

    def runs(override: int | None, table: dict[int, int], fallback: int) -> dict[int, int]:
        return {r: override or table.get(r, fallback) for r in args.clean_sizes}

    args.sizes = sorted(set(args.sizes))
    args.clean_sizes = sorted(set(args.clean_sizes))
    args.nbmlops_clean_runs = runs(args.clean_runs, NBMLOPS_CLEAN_RUNS, 40)
    args.evidently_clean_runs = runs(args.evidently_clean_runs, EVIDENTLY_CLEAN_RUNS, 10)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.started = time.perf_counter()
    args.load_start = os.getloadavg()[0]
    python = evidently_python()
    evidently_info = evidently_versions(python)
    print("Evidently venv:", ", ".join(evidently_info), flush=True)

    from nbmlops.artifact.profile import build_profile

    with tempfile.TemporaryDirectory(prefix="nbmlops-bench-drift-") as tmp:
        workdir = Path(tmp)
        files: dict = {"profile": workdir / "profile.json", "reference": workdir / "ref.parquet"}
        reference = make_frame(REFERENCE_ROWS, [0])
        start = time.perf_counter()
        profile = build_profile(reference, dummy_outputs(reference))
        profile_seconds = time.perf_counter() - start
        files["profile"].write_text(json.dumps(profile.to_dict()))
        reference.to_parquet(files["reference"], index=False)
        del profile
        start = time.perf_counter()
        for rows in args.sizes:
            files[("drifted", rows)] = workdir / f"drifted-{rows}.parquet"
            make_frame(rows, [1, rows], drifted=True).to_parquet(
                files[("drifted", rows)], index=False
            )
        for rows in args.clean_sizes:
            files[("clean", rows)] = workdir / f"clean-{rows}.parquet"
            count = max(args.nbmlops_clean_runs[rows], args.evidently_clean_runs[rows])
            write_clean(files[("clean", rows)], rows, count)
        print(f"data written in {time.perf_counter() - start:.1f} s to {workdir}", flush=True)

        children = Children(workdir, python)
        sizes = measure_sizes(args, children, files)
        clean = measure_clean(args, children, files)

    section, targets = render(args, sizes, clean, evidently_info, profile_seconds)
    print()
    print(section)
    if not args.no_readme:
        write_readme(section)
        print(f"wrote {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
