"""``nbmlops demo``: run the quickstart notebook end to end on the embedded store and say what it
made, step by step, as it happens.

The quickstart's cells that make something carry ``{"nbmlops": {"demo_step": STEP}}`` in their
metadata. After each of them the demo reads what the cell made from the store (the registry,
the server records, the prediction log, the monitor) and says it in one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nbmlops.config import Settings
from nbmlops.errors import NotebookError, UsageError
from nbmlops.jobs.notebooks import html_copy, run_notebook

QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


@dataclass(frozen=True)
class DemoResult:
    """What the demo made and where; ``model`` and ``version`` are None if it registered none."""

    model: str | None
    version: str | None
    notebook: Path
    html: Path
    settings: Settings
    seconds: float

    def summary(self) -> str:
        """The closing lines: what was made, where, and three commands to try next."""
        made = [
            ("notebook", f"{self.notebook} (executed)"),
            ("HTML", f"{self.html} (the same notebook, for a browser)"),
            ("store", f"{self.settings.home} (registry, artifacts, prediction log)"),
        ]
        if self.model is None:
            made.insert(0, ("model", "none was registered"))
            commands = [("nbmlops models list", "what the store holds")]
        else:
            registry = self.settings.registry_uri
            made.insert(0, ("model", f"{self.model} v{self.version}, registered in {registry}"))
            commands = [
                (f"nbmlops models show {self.model}@v{self.version}", "its model card"),
                (f"nbmlops monitor {self.model}", "drift, latency and quality of its traffic"),
                (f"nbmlops serve {self.model}", "serve it again (Ctrl-C stops it)"),
            ]
        width = max(len(label) for label, _ in made)
        pad = max(len(command) for command, _ in commands)
        return "\n".join(
            [
                f"demo finished in {self.seconds:.0f} s. It made:",
                *(f"  {label.ljust(width)}  {text}" for label, text in made),
                "Try next:",
                *(f"  {command.ljust(pad)}  # {what}" for command, what in commands),
            ]
        )


def run_demo(
    notebook: Path | None = None,
    output: Path | None = None,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Execute the quickstart with papermill, calling ``say`` with one line per step."""
    notebook = notebook or QUICKSTART
    if not notebook.is_file():
        raise UsageError(
            f"the quickstart notebook is not at {notebook}; run the demo from a source "
            "checkout (pip install -e .) or pass --notebook PATH"
        )
    from papermill.exceptions import PapermillExecutionError

    settings = Settings.from_env()
    settings.ensure()
    output = (output or settings.runs_dir / notebook.name).resolve()
    say(f"running {notebook} in a new kernel; the store is {settings.home}")
    steps = _Steps(settings, say)
    try:
        run_notebook(notebook, output, settings, on_cell_executed=steps, progress_bar=False)
    except PapermillExecutionError as exc:
        raise NotebookError(
            str(notebook), exc.exec_count, exc.ename, exc.evalue, str(output)
        ) from exc
    return DemoResult(
        model=steps.model,
        version=steps.version,
        notebook=output,
        html=html_copy(output),
        settings=settings,
        seconds=steps.elapsed(),
    )


class _Steps:
    """nbclient's ``on_cell_executed`` hook: after a step's cell ran, what it made, in words."""

    def __init__(self, settings: Settings, say: Callable[[str], None]) -> None:
        from nbmlops.registry.registry import Registry

        self.settings, self.say = settings, say
        self.started = time.monotonic()
        self.registry = Registry(settings)
        self.before = {s.name: s.latest_version for s in self.registry.list_models()}
        self.model: str | None = None
        self.version: str | None = None
        self.server = None
        self.steps = {
            "package": self.package,
            "serve": self.serve,
            "traffic": self.traffic,
            "monitor": self.monitor,
            "stop": self.stop,
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, cell, cell_index: int, execute_reply: dict | None) -> None:
        step = self.steps.get(cell.metadata.get("nbmlops", {}).get("demo_step"))
        if step is None or (execute_reply or {}).get("content", {}).get("status") != "ok":
            return  # a failed cell stops papermill, which says so
        for line in step():
            self.say(f"[{self.elapsed():3.0f}s] {line}")

    def package(self) -> Iterator[str]:
        made = [
            s
            for s in self.registry.list_models()
            if s.latest_version and s.latest_version != self.before.get(s.name)
        ]
        for summary in made:
            version = self.registry.get(summary.name, summary.latest_version)
            self.model, self.version = version.name, version.version
            task = version.tags.get("nbmlops.task", "model")
            primary = version.tags.get("nbmlops.primary_metric")
            metrics = sorted(version.metrics.items(), key=lambda item: item[0] != primary)
            scores = ", ".join(f"{k} {v:.3f}" for k, v in metrics)
            yield f"trained {version.name} ({task})" + (
                f": {scores} on the held-out rows" if scores else ""
            )
            parity = version.tags.get("nbmlops.parity", "not run")
            yield (
                f"packaged {version.name} v{version.version} (parity {parity} in a fresh "
                "process) and registered it"
            )

    def serve(self) -> Iterator[str]:
        from nbmlops.serving.process import list_servers

        running = [h for h in list_servers(self.settings) if h.model == self.model]
        if running:
            self.server = max(running, key=lambda h: h.started)
            yield (
                f"serving {self.server.model} v{self.server.version} at {self.server.url} "
                f"(API docs at {self.server.docs_url})"
            )

    def traffic(self) -> Iterator[str]:
        from nbmlops.predlog.log import PredictionLog
        from nbmlops.predlog.records import ERROR, OK, REJECTED

        log = PredictionLog(self.settings.log_uri)
        try:
            logged = log.frame(self.model, self.version)
        finally:
            log.close()
        counts = logged["status"].value_counts()
        parts = [f"{counts.get(OK, 0)} predictions logged"]
        if counts.get(REJECTED, 0):
            parts.append(_plural(counts[REJECTED], "bad request") + " refused")
        if counts.get(ERROR, 0):
            parts.append(_plural(counts[ERROR], "request") + " failed")
        parts.append(f"{logged['feedback'].notna().sum()} with ground truth")
        yield ", ".join(parts)

    def monitor(self) -> Iterator[str]:
        from nbmlops.monitoring.monitor import monitor

        report = monitor(f"{self.model}@v{self.version}", settings=self.settings)
        drifted = ", ".join(f.name for f in report.features if f.drifted) or "none"
        quality = ""
        if report.quality:
            metric = report.quality["primary_metric"]
            live = report.quality["metrics"].get(metric)
            if live is not None:
                quality = f"; live {metric} {live:.3f} on {report.quality['n_labels']} labels"
        yield (
            f"monitor: {report.status.upper()} ({report.n_predictions} predictions; drifted "
            f"features: {drifted}{quality})"
        )
        for reason in (*report.alerts, *report.warnings):
            yield f"  {reason.level}: {reason.message}"

    def stop(self) -> Iterator[str]:
        if self.server is not None:
            if self.server.alive:
                yield f"the server at {self.server.url} is still running"
            else:
                yield f"stopped the server at {self.server.url}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
