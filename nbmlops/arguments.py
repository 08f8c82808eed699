"""One argument definition per verb, shared by the magics and the CLI.

Each function fills a parser it is given, so the CLI adds it as a subcommand and the magics
use a parser whose ``error()`` raises IPython's ``UsageError``.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from nbmlops.errors import UsageError
from nbmlops.serving.options import RUNTIMES, ServeOptions


def package_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``%%mlops_package NAME --model VAR --data VAR ...``"""
    parser.description = (
        "Run the cell, then package --model with its --preprocess functions, profile --data, "
        "evaluate on --eval, check parity in a fresh process and register a new version."
    )
    parser.add_argument("name", help="registered model name, e.g. churn")
    parser.add_argument("--model", required=True, metavar="VAR", help="fitted estimator")
    parser.add_argument(
        "--data", required=True, metavar="VAR", help="raw training inputs (a DataFrame)"
    )
    parser.add_argument("--target", metavar="VAR", help="training labels, for lineage")
    parser.add_argument(
        "--preprocess",
        nargs="+",
        default=[],
        metavar="FUNC",
        help="functions applied in order to the raw frame before the model",
    )
    parser.add_argument(
        "--eval", nargs=2, metavar=("XVAR", "YVAR"), help="held-out inputs and labels"
    )
    parser.add_argument("--metric", help="primary metric (default f1_macro or rmse)")
    parser.add_argument("--alias", help="alias to point at the new version, e.g. staging")
    parser.add_argument(
        "--tag", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="version tags"
    )
    parser.add_argument("--description", help="a sentence about this version")
    parser.add_argument(
        "--categorical",
        nargs="+",
        action="extend",
        default=[],
        metavar="COL",
        help="text columns to take as categories: values training never saw are refused "
        "(default: text columns with at most 100 distinct values, each seen twice on average)",
    )
    parser.add_argument(
        "--free-text",
        nargs="+",
        action="extend",
        default=[],
        metavar="COL",
        help="text columns to take as free text, any string accepted (ids, names)",
    )
    parser.add_argument("--notebook", help="notebook path, when the front end does not expose it")
    return parser


def serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``%mlops_serve MODEL [--port N] ...``, ``--list``, ``--stop [MODEL|PORT|all]``"""
    parser.description = (
        "Serve a registered model over HTTP in its own process: /predict, /invocations "
        "(MLflow), /v2 (Open Inference Protocol), /feedback, /metrics, /docs."
    )
    parser.add_argument(
        "model",
        nargs="?",
        help="NAME, NAME@ALIAS, NAME@v3 or models:/NAME/3; a server on an alias (a bare NAME: "
        "production) follows it, so a promotion or rollback answers within seconds. Or the "
        "folder of a Docker context (nbmlops export --format docker), served without a registry",
    )
    parser.add_argument("--port", type=int, help="default: a free port")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (loopback)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' on requests (default: $NBMLOPS_TOKEN, "
        "preferred: ps shows this option, not the environment)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without --token"
    )
    parser.add_argument(
        "--unknown-categories",
        choices=("reject", "allow"),
        default="reject",
        help="what to do with categories never seen in training (default: reject)",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="sklearn",
        help="onnx: score the primary with its parity-proven ONNX twin (nbmlops export) "
        "through onnxruntime; default: sklearn",
    )
    parser.add_argument("--max-records", type=int, help="records per request (default 10000)")
    parser.add_argument("--max-body-bytes", type=int, help="request body size (default 5 MiB)")
    rollout = parser.add_argument_group("rollout (one of --canary or --shadow)")
    rollout.add_argument(
        "--canary",
        metavar="MODEL",
        help="another version of the same model (e.g. churn@candidate) that answers --weight "
        "of the requests; a request it fails is answered by the primary",
    )
    rollout.add_argument(
        "--weight",
        type=float,
        metavar="F",
        help="share of requests the canary answers, in [0, 1] (default 0.1)",
    )
    rollout.add_argument(
        "--sticky",
        metavar="HEADER",
        help="A/B test: a hash of this request header's value picks the version, so one key "
        "always sees one version (requests without it are assigned per request)",
    )
    rollout.add_argument(
        "--shadow",
        metavar="MODEL",
        help="another version of the same model that also scores requests, off the response "
        "path: only the primary answers; its failures and latency never reach the caller",
    )
    rollout.add_argument(
        "--shadow-fraction",
        type=float,
        metavar="F",
        help="share of requests the shadow scores, in [0, 1] (default 1)",
    )
    analysis = parser.add_argument_group(
        "canary analysis (with --canary: a breach sets its weight to 0, an automatic rollback)"
    )
    analysis.add_argument(
        "--analysis-interval",
        type=float,
        metavar="SECONDS",
        help="compare the canary against the primary every SECONDS (default 30)",
    )
    analysis.add_argument(
        "--max-error-rate",
        type=float,
        metavar="F",
        help="the canary's failures per request above this roll it back (default 0.01); a "
        "refusal of input the primary accepts is a failure",
    )
    analysis.add_argument(
        "--max-p99-ms",
        type=float,
        metavar="MS",
        help="the canary's p99 latency above this rolls it back (default 500)",
    )
    analysis.add_argument(
        "--min-requests",
        type=int,
        metavar="N",
        help="an interval with fewer canary requests is inconclusive: no rollback (default 20)",
    )
    analysis.add_argument(
        "--max-prediction-drift",
        type=float,
        metavar="EFFECT",
        help="the canary's predictions drifting from the primary's over the interval roll it "
        "back: the monitor's prediction-drift test, with this effect size (normalised "
        "Wasserstein or Jensen-Shannon distance) as its limit (default: the monitor's thresholds)",
    )
    progressive = parser.add_argument_group(
        "progressive delivery (with --canary: the weight grows while the analysis passes)"
    )
    progressive.add_argument(
        "--step-weight",
        type=float,
        metavar="F",
        help="each passing interval adds F to the canary's weight, up to --max-weight (the "
        "weight starts at --weight, default F)",
    )
    progressive.add_argument(
        "--max-weight",
        type=float,
        metavar="F",
        help="the weight --step-weight grows to (default 0.5)",
    )
    progressive.add_argument(
        "--promote-after",
        type=int,
        metavar="N",
        help="after N passing intervals at the top weight, the canary's version takes the "
        "primary's alias (e.g. production; 'previous' is set, the reason recorded) and answers "
        "every request, with no restart",
    )
    parser.add_argument(
        "--list", action="store_true", help="list running servers with their routes and weights"
    )
    parser.add_argument(
        "--stop", nargs="?", const="all", metavar="MODEL|PORT|all", help="stop servers"
    )
    return parser


def serve_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``serve`` (the fields of its ``ServeOptions``) that
    ``serve_arguments`` parsed."""
    return {f.name: getattr(args, f.name) for f in fields(ServeOptions)}


def predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``predict MODEL INPUT OUTPUT [options]``: the CLI's and ``%mlops_predict``'s."""
    parser.description = (
        "Score a CSV or Parquet file (or a folder of Parquet files) in chunks. Rows that fail "
        "the model's schema are not scored: they go to OUTPUT's sibling *.rejected.* with a "
        "reason each. Exit codes: 0 every row scored, 4 some rows rejected (the others "
        "written), 1 failure, 2 usage error."
    )
    parser.add_argument("model", help="NAME, NAME@ALIAS, NAME@v3 or an artifact folder")
    parser.add_argument("input", help="a .csv or .parquet file, or a folder of Parquet files")
    parser.add_argument("output", help="a .csv or .parquet file, or a folder for Parquet parts")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=100_000,
        metavar="N",
        help="rows read and scored at once; memory grows with it, not with the file "
        "(default 100000)",
    )
    parser.add_argument(
        "--id-column", metavar="COLUMN", help="an input column copied to the output (a key)"
    )
    parser.add_argument("--engine", choices=("local", "dask"), default="local")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a LocalCluster)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the LocalCluster (default 2)",
    )
    parser.add_argument(
        "--log",
        action="store_true",
        help="add every row to the prediction log (route batch), for the monitor",
    )
    parser.add_argument(
        "--unknown-categories",
        choices=("reject", "allow"),
        default="reject",
        help="reject (default) or score rows with categories training never saw",
    )
    return parser


def predict_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``nbmlops.predict`` that ``predict_arguments`` parsed."""
    names = (
        "chunk_rows",
        "id_column",
        "engine",
        "scheduler",
        "workers",
        "log",
        "unknown_categories",
    )
    return {name: getattr(args, name) for name in names}


def stream_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``stream MODEL --source URI --group G [options]``, ``--list``, ``--stop``: the CLI's
    (in the foreground) and ``%mlops_stream``'s (in the background)."""
    parser.description = (
        "Score events of a Redis stream as one consumer of a consumer group: each event's "
        "payload (one record as JSON) is checked and scored in batches, its answer written to "
        "the sink (fields source_id, id, prediction, proba) or, when invalid, to the "
        "dead-letter stream with the reason, logged (route stream), then acknowledged. A "
        "restarted consumer reclaims what a stopped one left; no event is written twice."
    )
    parser.add_argument("model", nargs="?", help="NAME, NAME@ALIAS (followed) or NAME@v3")
    parser.add_argument("--source", metavar="URI", help="redis://HOST:PORT/DB?stream=IN")
    parser.add_argument("--group", metavar="G", help="the consumer group (created at 0)")
    parser.add_argument(
        "--sink", metavar="URI", help="redis://...?stream=OUT (default: IN-scored, same server)"
    )
    parser.add_argument(
        "--dead-letter", metavar="NAME", help="stream for invalid events (default: IN-dead)"
    )
    parser.add_argument("--consumer", metavar="NAME", help="this consumer's name (HOST-PID)")
    parser.add_argument(
        "--batch-size", type=int, default=500, metavar="N", help="events per batch (500)"
    )
    parser.add_argument(
        "--block-ms",
        type=int,
        default=1000,
        metavar="MS",
        help="longest wait for the first event of a batch (1000)",
    )
    parser.add_argument(
        "--claim-idle",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="reclaim events another consumer left pending this long (30)",
    )
    parser.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on 127.0.0.1"
    )
    parser.add_argument(
        "--unknown-categories",
        choices=("reject", "allow"),
        default="reject",
        help="reject (default: a dead letter) or score categories training never saw",
    )
    parser.add_argument("--list", action="store_true", help="list background consumers")
    parser.add_argument(
        "--stop", nargs="?", const="all", metavar="MODEL|PID|all", help="stop background ones"
    )
    return parser


def stream_options(args: argparse.Namespace) -> dict:
    """The fields of ``StreamOptions`` that ``stream_arguments`` parsed, checked present."""
    if not (args.model and args.source and args.group):
        raise UsageError("stream needs MODEL, --source URI and --group G (or --list, --stop)")
    names = (
        "source",
        "group",
        "sink",
        "dead_letter",
        "consumer",
        "batch_size",
        "block_ms",
        "claim_idle",
        "metrics_port",
        "unknown_categories",
    )
    return {name: getattr(args, name) for name in names}


def monitor_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``%mlops_monitor MODEL [--window DURATION] [--since TIME]`` (the magic adds
    ``--refresh``, the CLI ``--json`` and ``--html``)."""
    parser.description = (
        "Is the model healthy? Drift of inputs and predictions against the reference profile, "
        "latency, errors, volume, staleness and quality on feedback, from the prediction log."
    )
    parser.add_argument("model", help="NAME (production, else latest), NAME@ALIAS, NAME@v3")
    parser.add_argument("--window", metavar="DURATION", help="e.g. 30m, 24h, 7d, ending now")
    parser.add_argument(
        "--since", metavar="TIME", help="ISO-8601 start; with --window the later wins"
    )
    return parser


def parse_tags(pairs: list[str]) -> dict[str, str]:
    """``["team=growth", "ticket=42"]`` as a dict; a pair without ``=`` is a usage error."""
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {pair!r} is not KEY=VALUE, e.g. --tag team=growth")
        tags[key] = value
    return tags
