"""``nbmlops plan``: the deployment plan of a registered version, in the seed's seven sections
(model artifact, serving architecture, API contract, rollout strategy, monitoring dashboard,
retraining pipeline, runbook). Every figure comes from the registry, the artifact, the
server's, canary analysis', monitor's and gate's own defaults, or the benchmark tables when a
``benchmarks/README.md`` is found; nothing is invented. The API contract's example request is
built from training values, and its error examples are what the server's checks say."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from nbmlops import jsoncodec
from nbmlops.artifact.validation import Validator
from nbmlops.config import Settings, postgres_uri, redacted
from nbmlops.errors import ValidationError
from nbmlops.exports.onnx import ONNX_TAG, PARITY_TOLERANCE
from nbmlops.jobs.gate import default_rules
from nbmlops.monitoring.report import MonitorThresholds
from nbmlops.registry.load import LoadedModel, load
from nbmlops.serving.analysis import AnalysisOptions
from nbmlops.serving.config import ServerConfig
from nbmlops.serving.options import DEFAULT_MAX_WEIGHT, DEFAULT_WEIGHT
from nbmlops.serving.responses import INVALID_INPUT

SECTIONS = (
    "Model artifact",
    "Serving architecture",
    "API contract",
    "Rollout strategy",
    "Monitoring dashboard",
    "Retraining pipeline",
    "Runbook",
)
_BENCH = re.compile(r"<!-- bench_serving:start -->(.*?)<!-- bench_serving:end -->", re.S)


@dataclass(frozen=True)
class DeploymentPlan:
    """The plan as Markdown, one section per title of :data:`SECTIONS`."""

    model: str
    version: str
    sections: tuple[tuple[str, str], ...]

    @property
    def markdown(self) -> str:
        parts = [f"# Deployment plan: {self.model} v{self.version}"]
        parts += [
            f"## {i}. {title}\n\n{body.strip()}" for i, (title, body) in enumerate(self.sections, 1)
        ]
        return "\n\n".join(parts) + "\n"

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.write_text(self.markdown)
        return path

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __str__(self) -> str:
        return self.markdown

    def __repr__(self) -> str:
        return self.markdown


def plan(
    ref: str, settings: Settings | None = None, benchmarks: Path | None = None
) -> DeploymentPlan:
    """The deployment plan of ``ref``. ``benchmarks`` is a benchmarks/README.md whose serving
    table is quoted (default: ``benchmarks/README.md`` in the working directory, if any)."""
    settings = settings or Settings.from_env()
    loaded = load(ref, settings)
    bench = Path(benchmarks) if benchmarks else Path("benchmarks") / "README.md"
    meta = loaded.metadata
    name = meta["name"]
    sections = (
        _artifact(loaded),
        _serving(loaded, settings, bench),
        _contract(loaded),
        _rollout(name),
        _monitoring(name),
        _retraining(loaded),
        _runbook(loaded),
    )
    return DeploymentPlan(name, str(meta["version"]), tuple(zip(SECTIONS, sections, strict=True)))


def _artifact(loaded: LoadedModel) -> str:
    meta, lineage = loaded.metadata, loaded.lineage
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(lineage.metrics.items()))
    tags = meta.get("tags", {})
    onnx = (
        f"yes, parity proven within {PARITY_TOLERANCE:g} (`{ONNX_TAG}` {tags[ONNX_TAG][:12]})"
        if ONNX_TAG in tags
        else f"none (`nbmlops export {meta['name']}@v{meta['version']} --format onnx`)"
    )
    rows = [
        ("version", f"{meta['name']} v{meta['version']}"),
        ("aliases", ", ".join(meta["aliases"]) or "none"),
        ("task", meta["task"]),
        ("classes", ", ".join(map(str, meta["classes"])) if meta["classes"] else "-"),
        ("estimator", f"{meta['estimator_format']} file in the MLflow pyfunc artifact"),
        ("preprocessing", ", ".join(meta["preprocess"]) or "none"),
        ("metrics (held-out)", metrics or "none recorded"),
        ("training rows", str(loaded.profile.n_rows)),
        ("artifact SHA-256", f"`{meta['artifact_sha256']}`"),
        ("source", f"`{meta.get('source', loaded.path)}`"),
        ("notebook", f"`{lineage.notebook_path}`" if lineage.notebook_path else "not recorded"),
        ("ONNX twin", onnx),
    ]
    return _table(("", ""), rows)


def _serving(loaded: LoadedModel, settings: Settings, bench: Path) -> str:
    server = {f.name: f.default for f in fields(ServerConfig) if not callable(f.default)}
    log = "SQLite" if postgres_uri(settings.log_uri) is None else "PostgreSQL"
    name = loaded.metadata["name"]
    text = (
        f"`nbmlops serve {name}@production --host 0.0.0.0` (with `NBMLOPS_TOKEN` set) runs "
        "FastAPI on uvicorn in its own process, one replica per machine behind a load balancer; "
        "each replica follows the `production` alias and switches within seconds of a "
        "promotion or rollback.\n\n"
        + _table(
            ("setting", "value"),
            [
                (
                    "micro-batch",
                    f"up to {server['max_batch_rows']:,} rows or "
                    f"{server['max_batch_wait_ms']:g} ms",
                ),
                (
                    "limits",
                    f"{server['max_records']:,} records, "
                    f"{server['max_body_bytes'] // (1024 * 1024)} MiB per request",
                ),
                ("unknown categories", server["unknown_categories"]),
                ("runtime", "sklearn; onnx when the version has a proven twin"),
                (
                    "container",
                    f"`nbmlops export {name}@production --format docker`: an image of one "
                    "version, no registry at run time",
                ),
                ("registry", f"`{redacted(settings.tracking_uri)}`"),
                ("prediction log", f"{log}, `{redacted(settings.log_uri)}`"),
                ("security", "binds 127.0.0.1; any other host needs a Bearer token"),
            ],
        )
    )
    if bench.is_file() and (found := _BENCH.search(bench.read_text())):
        table = re.search(r"(?m)^\|.*(?:\n\|.*)*", found.group(1))
        if table:
            text += f"\n\nMeasured ({bench}, its first table):\n\n{table.group(0)}"
    return text


def _contract(loaded: LoadedModel) -> str:
    schema = loaded.schema
    columns = [
        (f"`{c.name}`", c.kind, c.dtype, "yes" if c.nullable else "no", _domain(c))
        for c in schema.columns
    ]
    example = {c.name: _first(loaded, c) for c in schema.columns}
    validator = Validator(schema)
    numeric = next((c.name for c in schema.columns if c.kind == "numeric"), None)
    bad = [{k: v for k, v in example.items() if k != schema.columns[0].name}]
    if numeric is not None:
        bad.append({**example, numeric: "not a number"})
    problems = _problems(validator, bad)
    answer = {"model": loaded.metadata["name"], "version": str(loaded.metadata["version"])}
    scored = loaded.predict(pd.DataFrame([example])).iloc[0]
    prediction = {"id": "PREDICTION-ID", "prediction": scored["prediction"]}
    if schema.classes:
        prediction["proba"] = {
            str(c): round(float(scored[f"proba_{c}"]), 4) for c in schema.classes
        }
    answer["predictions"] = [prediction]
    return "\n\n".join(
        [
            "Input columns (`schema.json`):",
            _table(("column", "kind", "dtype", "nullable", "training values"), columns),
            "`POST /predict` (also MLflow's `POST /invocations` and the Open Inference "
            "Protocol's `POST /v2/models/{name}/infer`):",
            _code({"records": [example]}),
            "`200`:",
            _code(answer),
            'Errors share one body, `{"error", "problems", "request_id"}`:',
            _table(
                ("status", "when"),
                [
                    ("400", "malformed JSON, an empty body or an empty `records` list"),
                    ("401", "a missing or wrong Bearer token (when the server has one)"),
                    ("413", "more records or bytes than the limits above"),
                    ("415", "a body that is neither JSON nor CSV"),
                    ("422", "records that do not match the schema, each named, e.g. below"),
                    ("503", "the model still loading, or the prediction log unavailable"),
                ],
            ),
            "`422` for the records above without their first column and with a string for "
            "a number:",
            _code({"error": INVALID_INPUT, "problems": problems, "request_id": "REQUEST-ID"}),
        ]
    )


def _rollout(name: str) -> str:
    analysis = AnalysisOptions()
    return (
        f"1. Candidate on `staging`: `nbmlops models promote {name}@vN --to staging`.\n"
        f"2. Canary: `nbmlops serve {name}@production --canary {name}@staging` answers "
        f"{DEFAULT_WEIGHT:.0%} of requests (`--weight`, `--sticky HEADER`).\n"
        f"3. Analysis every {analysis.interval:g} s: error rate above "
        f"{analysis.max_error_rate:g}, p99 above {analysis.max_p99_ms:g} ms or prediction "
        f"drift against the primary sets its weight to 0 at once (automatic rollback); fewer "
        f"than {analysis.min_requests} canary requests is inconclusive.\n"
        f"4. Progressive: `--step-weight 0.1 --promote-after 3` grows it up to "
        f"{DEFAULT_MAX_WEIGHT:.0%} and then moves `production` to it (`previous` kept).\n"
        f"5. Rollback in one step: `nbmlops models rollback {name}`; every replica follows."
    )


def _monitoring(name: str) -> str:
    t = MonitorThresholds()
    rows = [
        (
            "input drift",
            f"per feature, p < {t.drift.alpha:g} and effect >= "
            f"{t.drift.numeric_effect:g} (numeric) / {t.drift.categorical_effect:g} (categorical)",
        ),
        ("prediction drift", "the same test on the predictions"),
        ("error rate", f"above {t.max_error_rate:g}"),
        ("latency", f"p99 above {t.max_p99_ms:g} ms"),
        (
            "quality",
            f"a drop of more than {t.max_quality_drop:g} below the packaged metric, "
            f"once {t.min_feedback} labels arrived",
        ),
        ("staleness", f"trained more than {t.max_staleness_days:g} days ago"),
        ("volume", f"fewer than {t.min_predictions} predictions: a warning"),
    ]
    return (
        f"`%mlops_monitor {name} --refresh 60` in a notebook, `nbmlops monitor {name} --json` "
        "for schedulers (exit 1 on an alert). Alerts:\n\n" + _table(("signal", "alert"), rows)
    )


def _retraining(loaded: LoadedModel) -> str:
    meta = loaded.metadata
    notebook = loaded.lineage.notebook_path or "NOTEBOOK.ipynb"
    rules = ", ".join(str(r) for r in default_rules(meta["primary_metric"]))
    return (
        f"`nbmlops retrain {notebook} --model {meta['name']} --when drift,stale=30d,new-data "
        "--promote production` on a schedule: papermill runs the notebook, its "
        "`%%mlops_package` registers a candidate, and the gate "
        f"(default `{rules}`, on the candidate's held-out data) decides; only a passing "
        "candidate is promoted, with `previous` set for a one-step rollback. A failed run "
        "promotes nothing and keeps its executed notebook."
    )


def _runbook(loaded: LoadedModel) -> str:
    name = loaded.metadata["name"]
    notebook = loaded.lineage.notebook_path or "NOTEBOOK.ipynb"
    rows = [
        (
            "drift alert",
            f"`nbmlops monitor {name}` names the features",
            f"`nbmlops retrain {notebook} --model {name} --when drift --promote production`",
        ),
        (
            "error-rate alert",
            "errors in the log, under their request ids",
            f"`nbmlops models rollback {name}`",
        ),
        (
            "canary rolled back",
            "a `rollback` event in the monitor report",
            f"`nbmlops monitor {name}@staging`, fix, serve the canary again",
        ),
        (
            "failed job",
            "exit 1 and the executed notebook's path",
            "fix the cell it names; production is untouched",
        ),
        (
            "tampered artifact",
            "load and serve refuse: manifest or file modified",
            f"`nbmlops models archive {name}@vN`, then `nbmlops models rollback {name}`",
        ),
        (
            "stale model",
            "a staleness alert",
            f"`nbmlops retrain {notebook} --model {name} --when stale=30d --promote production`",
        ),
    ]
    return _table(("failure", "sign", "command"), rows)


def _domain(column) -> str:
    if column.categories is not None:
        shown = ", ".join(map(str, column.categories[:8]))
        return shown + (", ..." if len(column.categories) > 8 else "")
    if column.min is not None and column.max is not None:
        return f"{column.min:g} .. {column.max:g}"
    return "-"


def _first(loaded: LoadedModel, column):
    """A training value of ``column``, as a client sends it."""
    return next((v for v in loaded.profile.client_sample(column) if v is not None), None)


def _problems(validator: Validator, records: list[dict]) -> list[dict]:
    try:
        validator.check(records)
    except ValidationError as exc:
        return [p.to_dict() for p in exc.problems]
    return []


def _table(header: tuple, rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _code(value) -> str:
    return "```json\n" + json.dumps(json.loads(jsoncodec.dumps(value)), indent=2) + "\n```"
