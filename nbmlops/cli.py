"""The ``nbmlops`` command: a thin face over the library. Errors are one line on stderr."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from nbmlops.arguments import (
    monitor_arguments,
    predict_arguments,
    predict_options,
    serve_arguments,
    serve_options,
    stream_arguments,
    stream_options,
)
from nbmlops.errors import NbmlopsError, RegistryError, UsageError
from nbmlops.serving.options import ServeOptions

EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbmlops",
        description="From a Jupyter notebook to a production prediction service.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    models = verbs.add_parser("models", help="list, show, promote, roll back, archive, history")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="registered models with versions and aliases")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = actions.add_parser("show", help="the model card of a version")
    show.add_argument("model", help="NAME, NAME@ALIAS, NAME@v3 or models:/NAME/3")
    show.add_argument("--json", action="store_true", help="print JSON")
    promote = actions.add_parser("promote", help="point an alias at a version")
    promote.add_argument("model", help="the version to promote, e.g. churn@v3")
    promote.add_argument("--to", required=True, metavar="ALIAS", help="e.g. production")
    rollback = actions.add_parser("rollback", help="swap an alias with its previous version")
    rollback.add_argument("name", help="registered model name")
    rollback.add_argument("--alias", default="production", help="default: production")
    archive = actions.add_parser("archive", help="remove a version's aliases and tag it archived")
    archive.add_argument("model", help="the version to archive, e.g. churn@v1")
    moves = actions.add_parser(
        "history", help="every recorded alias move: when, from and to version, who, why"
    )
    moves.description = (
        "The alias moves recorded in the registry, oldest first: promote, rollback, job, "
        "progressive, archive and package (%%mlops_package --alias)."
    )
    moves.add_argument("name", help="registered model name")
    moves.add_argument("--alias", help="only this alias's moves, e.g. production")
    moves.add_argument("--json", action="store_true", help="print a JSON list of events")

    serve_arguments(verbs.add_parser("serve", help="serve a model over HTTP (foreground)"))

    watch = monitor_arguments(verbs.add_parser("monitor", help="drift, latency, errors, staleness"))
    watch.add_argument("--json", action="store_true", help="print the report as one JSON object")
    watch.add_argument("--html", type=Path, metavar="FILE", help="write the report as HTML")

    predict_arguments(verbs.add_parser("predict", help="score a CSV or Parquet file in chunks"))

    stream_arguments(verbs.add_parser("stream", help="score a Redis stream (foreground)"))

    exporting = verbs.add_parser("export", help="ONNX (parity proven) or a Docker context")
    exporting.description = (
        "--format onnx: convert MODEL with skl2onnx, check that onnxruntime reproduces its "
        "probabilities (within 1e-4, identical labels) on rows of its training profile, and "
        "attach the graph to the version (artifacts onnx/model.onnx and onnx/export.json of its "
        "run). --format docker: write a build context (Dockerfile, pinned requirements, the "
        "artifact) whose image serves MODEL without a registry."
    )
    exporting.add_argument("model", metavar="MODEL", help="NAME, NAME@ALIAS, NAME@vN or models:/")
    exporting.add_argument(
        "--format", default="onnx", choices=["onnx", "docker"], help="onnx (default) or docker"
    )
    exporting.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="onnx: also write the files here; docker: the context (default ./NAME-vN-docker)",
    )
    exporting.add_argument("--json", action="store_true", help="print the record as JSON")

    planning = verbs.add_parser("plan", help="write the deployment plan of a version")
    planning.description = (
        "The deployment plan of MODEL in seven sections (model artifact, serving architecture, "
        "API contract, rollout strategy, monitoring dashboard, retraining pipeline, runbook), "
        "as Markdown, every figure read from the registry, the artifact and nbmlops' defaults."
    )
    planning.add_argument("model", metavar="MODEL", help="NAME, NAME@ALIAS, NAME@vN or models:/")
    planning.add_argument("--output", type=Path, metavar="FILE", help="write it here too")

    job = verbs.add_parser("retrain", help="run the training notebook, gate, promote")
    job.description = (
        "Run NOTEBOOK with papermill; its %%mlops_package registers a candidate, the gate "
        "scores candidate and production on the candidate's held-out data, and only a passing "
        "candidate is promoted. Exit codes: 0 promoted, passed or skipped; 1 job failed; "
        "2 usage error; 3 gate rejected."
    )
    job.add_argument("notebook", type=Path)
    job.add_argument("--model", required=True, help="the registered model name")
    job.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="notebook parameter (papermill typing)",
    )
    job.add_argument(
        "-f",
        "--parameters-file",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="YAML file of parameters",
    )
    job.add_argument("--when", metavar="TRIGGERS", help="drift,stale=7d,new-data")
    job.add_argument(
        "--drift-window",
        default="7d",
        metavar="DURATION",
        help="the drift trigger judges production's traffic over this window ending now, or "
        "since the last retraining job when that is later (default 7d)",
    )
    job.add_argument(
        "--gate",
        metavar="RULES",
        help="e.g. f1_macro>=production-0.005,roc_auc>=0.8; rules on production apply only "
        "once there is a production version, the others always",
    )
    job.add_argument("--promote", metavar="ALIAS", help="alias to move when the gate passes")

    demo = verbs.add_parser(
        "demo", help="run notebooks/quickstart.ipynb end to end, saying what it made"
    )
    demo.description = (
        "Train, package, serve and monitor the quickstart's churn model in ./.nbmlops/ (or "
        "NBMLOPS_HOME), one line per step; then write the executed notebook and an HTML copy."
    )
    demo.add_argument("--notebook", type=Path, help="the quickstart notebook to run")
    demo.add_argument(
        "--output",
        type=Path,
        help="where to write the executed notebook (its HTML copy goes next to it)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb == "models":
            return _models(args)
        if args.verb == "serve":
            return _serve(args)
        if args.verb == "monitor":
            return _monitor(args)
        if args.verb == "retrain":
            return _retrain(args)
        if args.verb == "predict":
            return _predict(args)
        if args.verb == "stream":
            return _stream(args)
        if args.verb == "export":
            return _export(args)
        if args.verb == "plan":
            return _plan(args)
        return _demo(args)
    except UsageError as exc:
        print(f"nbmlops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NbmlopsError as exc:
        print(f"nbmlops: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        failure = _store_failure(exc)
        if failure is None:
            raise
        print(f"nbmlops: {failure}", file=sys.stderr)
        return EXIT_FAILED


def _store_failure(exc: Exception) -> RegistryError | None:
    """An exception of MLflow or its database layer (which nbmlops did not translate, e.g. a
    store that cannot be opened) as one line; None for any other exception (a bug: shown)."""
    if not any(c.__module__.startswith(("mlflow.", "sqlalchemy.")) for c in type(exc).__mro__):
        return None
    from nbmlops.config import Settings

    detail = " ".join(str(exc).split())
    detail = detail[:300] + ("..." if len(detail) > 300 else "")
    return RegistryError(
        f"the MLflow store at {Settings.from_env().tracking_uri} failed "
        f"({type(exc).__name__}: {detail}); check MLFLOW_TRACKING_URI (unset, nbmlops uses "
        "its own store under NBMLOPS_HOME) and that the store is reachable and readable"
    )


def _models(args: argparse.Namespace) -> int:
    from nbmlops.registry.refs import previous_alias
    from nbmlops.registry.registry import Registry, promote, rollback

    if args.action == "rollback":
        current, previous = rollback(args.name, args.alias)
        print(
            f"{args.name}@{args.alias} -> v{current.version}; "
            f"v{previous.version} is now {previous_alias(args.alias)}"
        )
        return 0
    registry = Registry()
    if args.action == "history":
        return _history(args, registry)
    if args.action == "list":
        summaries = registry.list_models()
        if args.json:
            print(json.dumps([s.__dict__ for s in summaries], indent=1))
        elif not summaries:
            print(f"no models registered in {registry.settings.tracking_uri}")
        else:
            _print_table(
                ("name", "versions", "latest", "aliases"),
                [
                    (
                        s.name,
                        str(s.n_versions),
                        f"v{s.latest_version}" if s.latest_version else "-",
                        ", ".join(f"{a}=v{v}" for a, v in s.aliases.items()) or "-",
                    )
                    for s in summaries
                ],
            )
        return 0
    if args.action == "show":
        from nbmlops.registry.load import load

        model = load(args.model, registry.settings)
        if args.json:
            print(json.dumps({**model.metadata, "lineage": model.lineage.to_dict()}, indent=1))
        else:
            print(model.card.to_text())
        return 0
    if args.action == "promote":
        version = promote(args.model, args.to, registry.settings)
        previous = registry.alias_version(version.name, previous_alias(args.to))
        note = f" ({previous_alias(args.to)}: v{previous})" if previous else ""
        print(f"{version.name}@{args.to} -> v{version.version}{note}")
        return 0
    version = registry.archive(args.model)
    print(f"{version.ref} archived; its aliases were removed")
    return 0


def _history(args: argparse.Namespace, registry) -> int:
    from nbmlops.registry.history import history

    events = history(args.name, args.alias, registry)
    if args.json:
        print(json.dumps([e.to_dict() for e in events], indent=1))
    elif not events:
        which = f"{args.name}@{args.alias}" if args.alias else args.name
        print(f"no alias moves recorded for {which}")
    else:
        header = ("time", "alias", "from -> to", "user", "reason")
        rows = [(e.time[:19] + "Z", e.alias, e.move, e.user, e.reason) for e in events]
        if any(e.detail for e in events):
            header += ("detail",)
            rows = [(*row, e.detail) for row, e in zip(rows, events, strict=True)]
        _print_table(header, rows)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from nbmlops.config import Settings
    from nbmlops.serving import process
    from nbmlops.serving.client import ServerList

    if args.list:
        print(repr(ServerList(process.list_servers())))
        return 0
    if args.stop is not None:
        print(repr(ServerList(process.stop_servers(args.stop), stopped=True)))
        return 0
    if not args.model:
        raise UsageError("serve needs a MODEL (e.g. churn@production), --list or --stop")
    return process.serve_foreground(
        args.model, Settings.from_env(), ServeOptions(**serve_options(args))
    )


def _monitor(args: argparse.Namespace) -> int:
    from nbmlops.monitoring.monitor import monitor
    from nbmlops.monitoring.report import ALERT

    report = monitor(args.model, window=args.window, since=args.since)
    if args.html:
        args.html.write_text(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{report.model} v{report.version}: {report.status}</title></head>"
            f"<body>{report.to_html()}</body></html>"
        )
    print(json.dumps(report.to_dict(), indent=1) if args.json else repr(report))
    return EXIT_FAILED if report.status == ALERT else 0


def _predict(args: argparse.Namespace) -> int:
    from nbmlops.batch.run import predict

    result = predict(args.model, args.input, args.output, **predict_options(args))
    print(result.summary())
    return result.exit_code


def _stream(args: argparse.Namespace) -> int:
    from nbmlops.config import Settings
    from nbmlops.streaming.consumer import StreamOptions
    from nbmlops.streaming.run import consume, list_streams, stop_streams, streams_text

    if args.list or args.stop is not None:
        print(streams_text(list_streams() if args.list else stop_streams(args.stop)))
        return 0
    return consume(args.model, StreamOptions(**stream_options(args)), Settings.from_env())


def _export(args: argparse.Namespace) -> int:
    from nbmlops.exports.run import export

    done = export(args.model, args.format, args.output)
    print(json.dumps(done.to_dict(), indent=2) if args.json else done)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from nbmlops.plans.plan import plan

    written = plan(args.model)
    if args.output:
        written.write(args.output)
    print(written.markdown, end="")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from nbmlops.jobs.retrain import load_parameters, retrain

    result = retrain(
        args.notebook,
        args.model,
        parameters=load_parameters(args.parameter, args.parameters_file),
        when=args.when,
        gate=args.gate,
        promote=args.promote,
        drift_window=args.drift_window,
    )
    stream = sys.stderr if result.outcome == "failed" else sys.stdout
    print(result.summary(), file=stream)
    return result.exit_code


def _demo(args: argparse.Namespace) -> int:
    from nbmlops.demo import run_demo

    result = run_demo(args.notebook, args.output, say=functools.partial(print, flush=True))
    print(result.summary())
    return 0


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
