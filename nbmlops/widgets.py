"""The monitor in a notebook: a static report that reads anywhere, and a live line when refreshing.

What a displayed :class:`Dashboard` leaves in the notebook:

- The report, as an output of its own: a ``display_data`` with ``text/html`` (charts inline),
  ``image/png`` (the charts) and ``text/plain``, and no script. It carries no widget mimetype:
  once a notebook stores widget state (nbclient and papermill do), nbconvert's default HTML
  prefers a widget's view to any other mimetype of the same output, and offline, or wherever no
  widget manager loads (GitHub, nbviewer, VS Code without the kernel, an untrusted JupyterLab),
  that view stays empty.
- Beside it, a second output: the live ipywidgets line, saying when the report was last updated
  (or why a refresh failed), with a "Refresh now" button and, with ``refresh``
  (``%mlops_monitor --refresh SECONDS``), a "Stop refreshing" one. Each refresh replaces the
  report output in place (``update_display``), so a live kernel shows the report once, and a
  notebook saved later keeps the latest report. Without a kernel the line shows as text.

The model is loaded (and its artifact verified) once, by the caller; refreshes reuse it. A
refreshing dashboard stops when another dashboard for the same model version is made in the
kernel, when its widget is closed, on :meth:`Dashboard.stop`, and at interpreter exit.
"""

from __future__ import annotations

import atexit
import html
import math
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from nbmlops.errors import UsageError
from nbmlops.monitoring.report import MonitorReport

#: Seconds a refresh under way may take to finish when the interpreter exits.
EXIT_GRACE = 5.0

_lock = threading.Lock()
_refreshing: dict[tuple[str, str], Dashboard] = {}


class Dashboard:
    """A :class:`MonitorReport` in a notebook, refreshed every ``refresh`` seconds if given;
    behaves like the report it shows (``report``, ``alerts``, ``to_dict``, ``to_frame``,
    ``to_html``)."""

    def __init__(self, compute: Callable[[], MonitorReport], refresh: float | None = None) -> None:
        if refresh is not None and not (math.isfinite(refresh) and refresh > 0):
            raise UsageError(
                f"--refresh {refresh:g} is not a number of seconds; give one above 0, "
                "e.g. --refresh 30"
            )
        self._compute = compute
        self.report = compute()
        self._key = (self.report.model, self.report.version)
        self._refresh = refresh
        self._display_id = uuid.uuid4().hex
        self._shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._build_widget()
        with _lock:
            replaced = _refreshing.pop(self._key, None)
            if refresh:
                _refreshing[self._key] = self
        if replaced is not None:
            replaced._halt("a newer dashboard for this model replaced this one")
        if refresh:
            name, version = self._key
            self._thread = threading.Thread(
                target=self._loop,
                args=(refresh,),
                name=f"nbmlops-monitor {name} v{version}",
                daemon=True,
            )
            self._thread.start()

    def _build_widget(self) -> None:
        """The live line: stamp, "Stop refreshing" (with ``refresh``), "Refresh now"."""
        import ipywidgets as widgets

        self._stamp = widgets.HTML(self._stamp_text())
        now = widgets.Button(description="Refresh now", icon="refresh")
        now.on_click(lambda _button: self.refresh_now())
        buttons = [now]
        if self._refresh:
            self._button = widgets.Button(description="Stop refreshing", icon="stop")
            self._button.on_click(lambda _button: self._halt("stopped"))
            buttons.insert(0, self._button)
        self.widget = widgets.HBox([self._stamp, *buttons])
        # widget.close() sets its comm to None; a frontend closing the comm calls on_close
        self.widget.observe(self._on_comm_change, names="comm")
        self.widget.comm.on_close(lambda _msg: self._halt(None))

    def refresh_now(self) -> MonitorReport:
        """Compute the report again and show it in place of the one displayed."""
        try:
            self._update(self._compute())
        except Exception as exc:  # noqa: BLE001 - the last good report stays; say why
            self._stamp.value = self._failure_text(exc)
        return self.report

    def _update(self, report: MonitorReport) -> None:
        self.report = report
        if self._shown:
            from IPython.display import update_display

            update_display(report._repr_mimebundle_(), raw=True, display_id=self._display_id)
        self._stamp.value = self._stamp_text()

    def _loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                report = self._compute()
                if self._stop.is_set():
                    return
                self._update(report)
            except Exception as exc:  # noqa: BLE001 - keep refreshing, say why this one failed
                if not self._stop.is_set():
                    self._stamp.value = self._failure_text(exc, f"; trying again in {every:g} s")

    @staticmethod
    def _failure_text(exc: Exception, then: str = "") -> str:
        reason = html.escape(f"{type(exc).__name__}: {exc}")
        return f"<small><i>refresh failed at {_now()}: {reason}{then}</i></small>"

    def _on_comm_change(self, change) -> None:
        if change["new"] is None:
            self._halt(None)

    def _stamp_text(self) -> str:
        name, version = self._key
        every = f"; refreshing every {self._refresh:g} s" if self._refresh else ""
        return (
            f"<small>live: {html.escape(name)} v{html.escape(version)}, updated "
            f"{_now()}{every}</small>"
        )

    def _halt(self, why: str | None) -> None:
        """Stop refreshing without waiting for a refresh under way; ``why`` goes on the line."""
        self._stop.set()
        with _lock:
            if _refreshing.get(self._key) is self:
                del _refreshing[self._key]
        if why and self._refresh:
            self._stamp.value = f"<small>{html.escape(why)} at {_now()}</small>"
            self._button.disabled = True

    def stop(self) -> None:
        """Stop refreshing; returns once a refresh under way has finished."""
        self._halt("stopped")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def alerts(self):
        return self.report.alerts

    def to_dict(self) -> dict:
        return self.report.to_dict()

    def to_frame(self):
        return self.report.to_frame()

    def to_html(self) -> str:
        return self.report.to_html()

    def _ipython_display_(self) -> None:
        """The report as its own output; the live line as a second one."""
        from IPython.display import display

        display(self.report._repr_mimebundle_(), raw=True, display_id=self._display_id)
        self._shown = True
        if self.widget.comm is not None:
            bundle = dict(self.widget._repr_mimebundle_())
            name, version = self._key
            every = f" every {self._refresh:g} s" if self._refresh else ""
            bundle["text/plain"] = (
                f"live refresh of {name} v{version}{every} "
                "(needs the running kernel; the report above is its latest update)"
            )
            display(bundle, raw=True)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return self.report._repr_mimebundle_(include, exclude)

    def __repr__(self) -> str:
        return repr(self.report)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@atexit.register
def _stop_all_at_exit() -> None:
    """Stop every refresh and let one under way finish: a daemon thread still running while
    the interpreter finalizes dies wherever it is, inside SQLite or numpy included."""
    with _lock:
        live = list(_refreshing.values())
    for dashboard in live:
        dashboard._halt(None)
    deadline = time.monotonic() + EXIT_GRACE
    for dashboard in live:
        if dashboard._thread is not None:
            dashboard._thread.join(max(0.0, deadline - time.monotonic()))
