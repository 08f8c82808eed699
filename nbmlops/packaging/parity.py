"""The parity check: a fresh Python process must reproduce the notebook's predictions.

This is the training-serving skew guard. The child process imports the artifact's own loader
from its ``code/`` folder, exactly as MLflow and the server do; it sees no notebook state and
runs in an empty working directory, so a local module or a notebook-only name fails here.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nbmlops import jsoncodec
from nbmlops.artifact.frames import to_records
from nbmlops.errors import ParityError

TOLERANCE = 1e-6
MAX_REPORTED = 5
#: Seconds the fresh process has to load the artifact and predict the sample.
PARITY_TIMEOUT = 600.0

# The child imports the libraries an artifact needs (never the artifact nor the notebook)
# while the parent is busy, then waits for the artifact's path on stdin; EOF means "not needed".
_CHILD = """
import importlib, sys
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
    except ImportError:
        pass
request = sys.stdin.read().splitlines()
if len(request) < 4:
    sys.exit(0)
root, sample, records, result = request[:4]
importlib.invalidate_caches()
import json
import pandas as pd
sys.path.insert(0, root + "/code")
from nbmlops_loader_v1 import ArtifactPredictor
predictor = ArtifactPredictor(root)
rows = pd.read_pickle(sample)
predictor.predict(rows).to_pickle(result)
# A server scores a row alone or with strangers: the answer must not depend on the company.
alone = [predictor.predict(rows.iloc[[i]]) for i in range(min(len(rows), 5))]
pd.concat(alone).to_pickle(result + ".alone")
# The same rows as a client sends them, through the server's own checks and frame builder:
# as one request, and as requests of one record each merged into one batch.
from nbmlops import jsoncodec
from nbmlops.errors import ValidationError
from nbmlops.artifact.schema import Schema
from nbmlops.artifact.validation import Validator
with open(root + "/schema.json") as handle:
    validator = Validator(Schema.from_dict(json.load(handle)))
with open(records, "rb") as handle:
    sent = jsoncodec.loads(handle.read())
try:
    validator.check(sent)
except ValidationError as exc:
    print("NBMLOPS-REFUSED " + json.dumps([p.to_dict() for p in exc.problems[:5]]), file=sys.stderr)
    sys.exit(3)
builder = validator.builder
predictor.predict(builder.frame([builder.columns(sent)])).to_pickle(result + ".served")
batch = builder.frame([builder.columns([r]) for r in sent[:16]])
predictor.predict(batch).to_pickle(result + ".batched")
"""


@dataclass(frozen=True)
class ParityResult:
    """Outcome of a passed parity check."""

    n_rows: int
    max_abs_diff: float
    seconds: float

    def to_dict(self) -> dict:
        return {
            "passed": True,
            "n_rows": self.n_rows,
            "max_abs_diff": self.max_abs_diff,
            "seconds": round(self.seconds, 3),
        }

    def describe(self) -> str:
        return (
            f"passed: {self.n_rows} rows reproduced in a fresh process "
            f"(max abs diff {self.max_abs_diff:.1e}, tolerance {TOLERANCE:.0e})"
        )


#: What the child imports ahead of need, besides the estimator's own modules.
_CHILD_MODULES = ("nbmlops.artifact.validation",)


class FreshProcess:
    """A fresh Python process, started early so its imports overlap with other work.

    It serves one check. Use as a context manager; the process is killed on exit if it is
    still running.
    """

    def __init__(self, modules: tuple[str, ...] = ()) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="nbmlops-parity-")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CHILD,
                "pandas",
                "skops.io",
                "nbmlops.artifact.validation",
                *modules,
            ],
            cwd=self._workdir.name,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def __enter__(self) -> FreshProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        self._workdir.cleanup()

    def check(self, artifact: Path, sample: pd.DataFrame, expected: pd.DataFrame) -> ParityResult:
        """Predict ``sample`` with ``artifact`` in this process and compare with ``expected``."""
        start = time.perf_counter()
        workdir = Path(self._workdir.name)
        sample_path, result_path = workdir / "sample.pkl", workdir / "result.pkl"
        records_path = workdir / "records.json"
        sample.to_pickle(sample_path)
        records_path.write_bytes(jsoncodec.dumps(to_records(sample)))
        request = f"{artifact}\n{sample_path}\n{records_path}\n{result_path}\n"
        try:
            _, stderr = self._proc.communicate(request, timeout=PARITY_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ParityError(
                f"parity check failed: the artifact did not predict {len(sample)} rows in a "
                f"fresh process within {PARITY_TIMEOUT:g} s, so nothing was registered. Loading "
                "or predicting blocks outside the notebook (preprocessing that waits on a file, "
                "the network or a lock?); make the preprocessing self-contained."
            ) from None
        if self._proc.returncode != 0:
            raise ParityError(_explain_failure(stderr))
        actual = pd.read_pickle(result_path)
        max_diff = compare(expected, actual)
        alone = pd.read_pickle(f"{result_path}.alone")
        try:
            compare(expected.iloc[: len(alone)], alone)
        except ParityError as exc:
            raise ParityError(
                "parity check failed: a row scored alone gets a different prediction than the "
                "same row scored with others, so nothing was registered. The preprocessing uses "
                "statistics of the whole frame (a mean, a max, a rank, fillna with a column "
                "median...); a server scores rows one request at a time. Compute those "
                "statistics in training and keep them as constants or fitted pipeline steps.",
                exc.details,
            ) from None
        for suffix in (".served", ".batched"):
            served = pd.read_pickle(f"{result_path}{suffix}")
            try:
                compare(expected.iloc[: len(served)].reset_index(drop=True), served)
            except ParityError as exc:
                raise ParityError(
                    "parity check failed: the training rows, sent as JSON records the way a "
                    "client sends them and rebuilt by the server's checks and frame builder, get "
                    "other predictions than in the notebook, so nothing was registered. The "
                    "frame the server rebuilds from schema.json differs from the training frame "
                    "(a dtype, a category order, a time zone) in a way the model notices.",
                    exc.details,
                ) from None
        return ParityResult(len(sample), max_diff, time.perf_counter() - start)


_spare: FreshProcess | None = None


def prewarm() -> None:
    """Start a spare fresh process now, so the next parity check finds its imports done.

    The spare has imported libraries only; it never sees a notebook or another artifact.
    """
    global _spare
    if _spare is None or not _spare.alive:
        _spare = FreshProcess()


def fresh_process(modules: tuple[str, ...] = ()) -> FreshProcess:
    """The spare process when one is running, else a new one importing ``modules``."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None and spare.alive:
        return spare
    if spare is not None:
        spare.close()
    return FreshProcess(modules)


@atexit.register
def stop_spare() -> None:
    """Stop the spare process, if any (the next packaging then starts a new one)."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None:
        spare.close()


def estimator_modules(estimator) -> tuple[str, ...]:
    """Modules of the estimator and of every estimator nested in its parameters."""
    modules = {type(estimator).__module__}
    params = estimator.get_params(deep=True) if hasattr(estimator, "get_params") else {}
    for value in params.values():
        items = value if isinstance(value, list) else [value]
        for item in items:
            obj = item[1] if isinstance(item, tuple) and len(item) > 1 else item
            if hasattr(obj, "get_params"):
                modules.add(type(obj).__module__)
    return tuple(sorted(m for m in modules if m and not m.startswith("__main__")))


def compare(expected: pd.DataFrame, actual: pd.DataFrame) -> float:
    """Largest numeric difference; raise :class:`ParityError` on any mismatch."""
    if list(expected.columns) != list(actual.columns) or len(expected) != len(actual):
        raise ParityError(
            "the artifact's output has a different shape from the notebook's: "
            f"notebook {list(expected.columns)} x {len(expected)}, "
            f"artifact {list(actual.columns)} x {len(actual)}"
        )
    details: list[str] = []
    max_diff = 0.0
    for column in expected.columns:
        want = expected[column].to_numpy()
        got = actual[column].to_numpy()
        if column == "prediction" and not _is_float(want):
            bad = np.flatnonzero(want != got)
        else:
            diff = np.abs(want.astype(float) - got.astype(float))
            diff = np.where(np.isnan(want.astype(float)) & np.isnan(got.astype(float)), 0, diff)
            max_diff = max(max_diff, float(np.nanmax(diff)) if len(diff) else 0.0)
            bad = np.flatnonzero(~(diff <= TOLERANCE))
        for row in bad[:MAX_REPORTED]:
            details.append(f"row {row}, {column}: notebook {want[row]!r}, artifact {got[row]!r}")
        if len(bad) > MAX_REPORTED:
            details.append(f"... and {len(bad) - MAX_REPORTED} more rows differ in {column}")
    if details:
        raise ParityError(
            "parity check failed: the packaged artifact, loaded in a fresh process, does not "
            "reproduce the notebook's predictions, so nothing was registered. Usual causes: "
            "randomness or time in the preprocessing (np.random, datetime.now), or state the "
            "functions read from the notebook that changed. Make preprocessing deterministic.",
            details,
        )
    return max_diff


def _is_float(values: np.ndarray) -> bool:
    return values.dtype.kind == "f"


def _explain_failure(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "the process died without a message"
    if last.startswith("NBMLOPS-REFUSED "):
        problems = "; ".join(
            f"row {p['record']}, {p['field']}: {p['message']}" for p in json.loads(last[16:])
        )
        return (
            "parity check failed: the training rows, sent as JSON records the way a client "
            f"sends them, are refused by the server's checks against schema.json: {problems}. "
            "Packaging stopped and nothing was registered; the schema cannot describe this "
            "data (please report it)."
        )
    hint = "Packaging stopped and nothing was registered."
    if "__main__" in stderr:
        hint = (
            "The model or preprocessing refers to something defined only in the notebook "
            "(__main__); pass it with --preprocess or move it into an installed module. " + hint
        )
    elif "ModuleNotFoundError" in last or "ImportError" in last:
        hint = (
            "A module the artifact needs cannot be imported outside the notebook; install it "
            "as a package or copy what you need into the notebook. " + hint
        )
    return f"parity check failed: the artifact could not predict in a fresh process: {last}. {hint}"
