"""The IPython magics: thin faces over the library that add the notebook's namespace and cell."""

from __future__ import annotations

import argparse
import shlex

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from nbmlops.arguments import (
    monitor_arguments,
    package_arguments,
    parse_tags,
    predict_arguments,
    predict_options,
    serve_arguments,
    serve_options,
    stream_arguments,
    stream_options,
)
from nbmlops.artifact.lineage import NotebookContext, notebook_path
from nbmlops.errors import NbmlopsError
from nbmlops.packaging.package import package


class _MagicParser(argparse.ArgumentParser):
    """An argument parser whose errors show as one line in the notebook."""

    def error(self, message: str):
        raise IPythonUsageError(f"{self.prog}: {message}")


@magics_class
class NbmlopsMagics(Magics):
    """``%%mlops_package``, ``%mlops_serve``, ``%mlops_monitor``, ``%mlops_predict``,
    ``%mlops_stream`` and ``%mlops_plan``."""

    @cell_magic
    def mlops_package(self, line: str, cell: str):
        """Run the cell, then package and register the model it trained.

        %%mlops_package NAME --model VAR --data VAR [--target VAR] [--preprocess FUNC ...]
        [--eval XVAR YVAR] [--metric NAME] [--alias ALIAS] [--tag KEY=VALUE ...]
        [--description TEXT] [--categorical COL ...] [--free-text COL ...]
        """
        parser = package_arguments(_MagicParser(prog="%%mlops_package", add_help=True))
        args = _parse(parser, line)
        if args is None:
            return None
        self._run_cell(cell)
        ns = self.shell.user_ns
        context = NotebookContext(
            path=notebook_path(ns, explicit=args.notebook),
            cell_source=cell,
            execution_count=self._cell_number(),
        )
        try:
            return package(
                args.name,
                self._lookup(args.model, "--model"),
                self._lookup(args.data, "--data"),
                target=self._lookup(args.target, "--target") if args.target else None,
                preprocess=[self._lookup(f, "--preprocess") for f in args.preprocess],
                eval=tuple(self._lookup(v, "--eval") for v in args.eval) if args.eval else None,
                metric=args.metric,
                alias=args.alias,
                tags=parse_tags(args.tag),
                description=args.description,
                categorical=args.categorical,
                free_text=args.free_text,
                context=context,
            )
        except NbmlopsError as exc:
            raise IPythonUsageError(f"{type(exc).__name__}: {exc}") from None

    @line_magic
    def mlops_serve(self, line: str):
        """Serve a model in its own process; the kernel stays free.

        %mlops_serve MODEL [--port N] [--host H] [--workers N] [--token T] [--insecure]
        [--unknown-categories reject|allow]
        [--canary MODEL [--weight F] [--sticky HEADER] | --shadow MODEL [--shadow-fraction F]]
        [--analysis-interval S] [--max-error-rate F] [--max-p99-ms MS] [--min-requests N]
        [--max-prediction-drift EFFECT] [--step-weight F [--max-weight F]] [--promote-after N]
        %mlops_serve --list
        %mlops_serve --stop [MODEL|PORT|all]
        """
        from nbmlops.serving import process
        from nbmlops.serving.client import ServerList

        args = _parse(serve_arguments(_MagicParser(prog="%mlops_serve")), line)
        if args is None:
            return None
        try:
            if args.list:
                return ServerList(process.list_servers())
            if args.stop is not None:
                return ServerList(process.stop_servers(args.stop), stopped=True)
            if not args.model:
                raise IPythonUsageError("%mlops_serve: give a MODEL, --list or --stop")
            return process.serve(args.model, **serve_options(args))
        except NbmlopsError as exc:
            raise IPythonUsageError(f"{type(exc).__name__}: {exc}") from None

    @line_magic
    def mlops_stream(self, line: str):
        """Score a Redis stream in a background process; the kernel stays free.

        %mlops_stream MODEL --source redis://HOST:PORT/DB?stream=IN --group G
        [--sink URI] [--dead-letter NAME] [--consumer NAME] [--batch-size N] [--block-ms MS]
        [--claim-idle SECONDS] [--metrics-port PORT] [--unknown-categories reject|allow]
        %mlops_stream --list
        %mlops_stream --stop [MODEL|PID|all]
        """
        from nbmlops.streaming.run import list_streams, stop_streams, stream, streams_text

        args = _parse(stream_arguments(_MagicParser(prog="%mlops_stream")), line)
        if args is None:
            return None
        try:
            if args.list or args.stop is not None:
                print(streams_text(list_streams() if args.list else stop_streams(args.stop)))
                return None
            options = stream_options(args)
            return stream(args.model, options.pop("source"), options.pop("group"), **options)
        except NbmlopsError as exc:
            raise IPythonUsageError(f"{type(exc).__name__}: {exc}") from None

    @line_magic
    def mlops_plan(self, line: str):
        """The deployment plan of a version, rendered as Markdown (text without a renderer).

        %mlops_plan MODEL
        """
        from nbmlops.plans.plan import plan

        model = line.strip()
        if not model or " " in model:
            raise IPythonUsageError("%mlops_plan: give one MODEL, e.g. %mlops_plan churn")
        try:
            return plan(model)
        except NbmlopsError as exc:
            raise IPythonUsageError(f"{type(exc).__name__}: {exc}") from None

    @line_magic
    def mlops_monitor(self, line: str):
        """Show the model's health as a report that reads without a kernel; ``--refresh``
        updates it in place and adds a live line with a stop button.

        %mlops_monitor MODEL [--window DURATION] [--since TIME] [--refresh SECONDS]
        """
        from nbmlops.monitoring.monitor import monitor
        from nbmlops.registry.load import load
        from nbmlops.widgets import Dashboard

        parser = monitor_arguments(_MagicParser(prog="%mlops_monitor"))
        parser.add_argument(
            "--refresh",
            type=float,
            metavar="SECONDS",
            help="update the report in place every SECONDS (stops when the widget is closed "
            "or another dashboard for the model starts)",
        )
        args = _parse(parser, line)
        if args is None:
            return None
        try:
            loaded = load(args.model)  # verified once: every refresh reuses it
            return Dashboard(
                lambda: monitor(loaded, window=args.window, since=args.since),
                refresh=args.refresh,
            )
        except NbmlopsError as exc:
            raise IPythonUsageError(f"{type(exc).__name__}: {exc}") from None

    @line_magic
    def mlops_predict(self, line: str):
        """Score a CSV or Parquet file in chunks with a progress bar; rows that fail the schema
        go to OUTPUT's sibling *.rejected.* with a reason each. Returns the run's summary.

        %mlops_predict MODEL INPUT OUTPUT [--chunk-rows N] [--id-column COLUMN]
        [--engine local|dask] [--scheduler ADDRESS] [--workers N] [--log]
        [--unknown-categories reject|allow]
        """
        from nbmlops.batch.run import predict

        args = _parse(predict_arguments(_MagicParser(prog="%mlops_predict")), line)
        if args is None:
            return None
        try:
            return predict(
                args.model, args.input, args.output, progress=True, **predict_options(args)
            )
        except NbmlopsError as exc:
            raise IPythonUsageError(f"{type(exc).__name__}: {exc}") from None

    def _run_cell(self, cell: str) -> None:
        """Execute the cell body in the user namespace; its exceptions propagate once."""
        shell = self.shell
        code = shell.transform_cell(cell)
        filename = shell.compile.cache(code, self._cell_number(), raw_code=cell)
        exec(compile(code, filename, "exec"), shell.user_ns)  # noqa: S102 - the user's cell

    def _cell_number(self) -> int:
        """The running cell's In[] number: IPython counts it up before running the cell."""
        return max(self.shell.execution_count - 1, 1)

    def _lookup(self, name: str, option: str):
        ns = self.shell.user_ns
        if name not in ns:
            raise IPythonUsageError(
                f"{option} {name}: no variable named {name!r} exists in the notebook after "
                "running the cell; check the spelling or define it in the cell"
            )
        return ns[name]


def _parse(parser: argparse.ArgumentParser, line: str):
    """Parse a magic line; None when ``--help`` printed the help."""
    try:
        return parser.parse_args(shlex.split(line))
    except SystemExit:
        return None
