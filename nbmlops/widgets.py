"""The monitor as an ipywidgets dashboard that also reads as static HTML without a kernel."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from nbmlops.monitoring.report import MonitorReport


class Dashboard:
    """A live view of a :class:`MonitorReport`; behaves like the report it shows.

    Its output carries the widget (live kernels) and a ``text/html`` snapshot with the charts as
    images (GitHub, nbviewer, VS Code, untrusted JupyterLab, nbconvert), so reviewers see the
    report with no kernel and no JavaScript.
    """

    def __init__(self, compute: Callable[[], MonitorReport], refresh: float | None = None) -> None:
        import ipywidgets as widgets

        self._compute = compute
        self.report = compute()
        self._stamp = widgets.HTML(self._stamp_text(refresh))
        self._body = widgets.HTML(self.report.to_html())
        self.widget = widgets.VBox([self._stamp, self._body])
        self._stop = threading.Event()
        self._thread = None
        if refresh:
            self._thread = threading.Thread(
                target=self._loop, args=(refresh,), name="nbmlops-monitor", daemon=True
            )
            self._thread.start()

    def _loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                report = self._compute()
            except Exception as exc:  # noqa: BLE001 - keep the dashboard alive, say why
                self._stamp.value = f"<i>refresh failed: {type(exc).__name__}: {exc}</i>"
                continue
            self._body.value = report.to_html()
            self._stamp.value = self._stamp_text(every)
            self.report = report

    @staticmethod
    def _stamp_text(refresh: float | None) -> str:
        moment = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        every = f"; refreshing every {refresh:g} s" if refresh else ""
        return f"<small>updated {moment}{every}</small>"

    def stop(self) -> None:
        """Stop refreshing; returns once a refresh under way has finished."""
        self._stop.set()
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

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/html"] = self.report.to_html()
        bundle["text/plain"] = repr(self.report)
        return bundle

    def __repr__(self) -> str:
        return repr(self.report)
