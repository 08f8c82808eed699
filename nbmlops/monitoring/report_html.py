"""The monitor report as static HTML: no scripts, charts as inline PNG images.

It reads the same in a live kernel, an untrusted JupyterLab, VS Code, GitHub, nbviewer and
offline nbconvert HTML: status first, then the reasons, then drifted features first.
"""

from __future__ import annotations

import base64
import html
import io

_COLORS = {"ok": "#1b7f3b", "warning": "#b36b00", "alert": "#b3261e"}
MAX_CHARTS = 9


def render_report(report) -> str:
    """The whole report as one HTML fragment."""
    return _page(report, chart_png(report))


def render_bundle(report) -> dict:
    """The report as a notebook output keeps it: the HTML page, its charts as an ``image/png``
    of their own (for viewers that prefer an image to HTML) and the text; charts drawn once."""
    png = chart_png(report)
    bundle = {"text/html": _page(report, png), "text/plain": repr(report)}
    if png is not None:
        bundle["image/png"] = base64.b64encode(png).decode()
    return bundle


def _page(report, png: bytes | None) -> str:
    esc = html.escape
    color = _COLORS.get(report.status, "#444")
    reasons = (
        "".join(
            f"<li><b>{esc(a.level)}</b> ({esc(a.kind)}): {esc(a.message)}</li>"
            for a in (*report.alerts, *report.warnings)
        )
        or "<li>no threshold breached</li>"
    )
    return (
        "<div class='nbmlops-monitor' style='font-family:sans-serif'>"
        f"<div style='border-left:8px solid {color};padding:4px 10px;margin-bottom:8px'>"
        f"<span style='font-size:1.4em;font-weight:bold;color:{color}'>"
        f"{esc(report.status.upper())}</span> "
        f"<span style='font-size:1.1em'>{esc(report.model)} v{esc(report.version)}</span>"
        f"<ul style='margin:4px 0'>{reasons}</ul></div>"
        f"{_summary(report)}{_features_table(report)}{_charts(png)}"
        "</div>"
    )


def _summary(report) -> str:
    latency = report.latency_ms
    quality = "-"
    if report.quality:
        primary = report.quality["primary_metric"]
        live = report.quality["metrics"].get(primary)
        packaged = report.quality["packaged"].get(primary)
        quality = (
            f"{primary} {live:.3f} live vs {packaged:.3f} packaged "
            f"({report.quality['n_labels']} labels)"
            if live is not None and packaged is not None
            else f"{report.quality['n_labels']} labels"
        )
    rows = [
        ("window", f"{report.window_start or 'everything logged'} .. {report.window_end}"),
        ("predictions", f"{report.n_predictions:,}"),
        ("latency p50 / p95 / p99", " / ".join(_ms(latency.get(k)) for k in ("p50", "p95", "p99"))),
        ("error rate", _pct(report.error_rate)),
        ("rejected rate", _pct(report.rejected_rate)),
        ("staleness", f"{report.staleness_days:.1f} days since training ({report.trained_at})"),
        ("quality on feedback", quality),
        ("skipped from the log", "; ".join(str(s) for s in report.skipped) or "nothing"),
    ]
    if report.production_versions:
        from nbmlops.monitoring.report import production_text

        rows.append(("production over the window", production_text(report)))
    if any(r["route"] != "primary" for r in report.routes):
        from nbmlops.monitoring.report import route_text

        rows += [(f"route {r['route']}", route_text(r)) for r in report.routes]
    if report.events:
        from nbmlops.monitoring.report import event_text

        rows += [("event", event_text(e)) for e in report.events]
    if report.batch_runs:
        from nbmlops.monitoring.report import batch_text

        rows += [("batch run", batch_text(b)) for b in report.batch_runs]
    return facts_table(rows)


def facts_table(rows: list[tuple[str, str]]) -> str:
    """A two-column table of ``(label, value)`` texts, escaped: no script, no style sheet."""
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:12px'>{html.escape(k)}</th>"
        f"<td>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    return f"<table>{body}</table>"


def _features_table(report) -> str:
    features = list(report.features)
    if report.prediction_drift is not None:
        features.append(report.prediction_drift)
    head = "".join(
        f"<th>{h}</th>"
        for h in ("feature", "kind", "test", "statistic", "p-value (BH)", "PSI", "drifted", "n")
    )
    rows = []
    for f in features:
        name = "(prediction)" if f is report.prediction_drift else f.name
        mark = "DRIFTED" if f.drifted else ("significant" if f.significant else "-")
        if f.drifted is None:
            mark = "not judged"
        style = " style='background:#fbe3e1'" if f.drifted else ""
        cells = (
            name,
            f.kind,
            f.test,
            _num(f.statistic),
            _num(f.pvalue),
            _num(f.psi),
            mark,
            f"{f.n:,}",
        )
        rows.append(f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return (
        f"<h4>Drift per feature (drifted first)</h4><table><tr>{head}</tr>{''.join(rows)}</table>"
    )


def _charts(png: bytes | None) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode()
    return (
        "<h4>Reference (grey) vs current (colour) distributions</h4>"
        f"<img alt='reference vs current histograms' src='data:image/png;base64,{data}'/>"
    )


def chart_png(report) -> bytes | None:
    """Small multiples: reference vs current histogram per feature, drifted first."""
    features = [f for f in report.features if f.current][: MAX_CHARTS - 1]
    if report.prediction_drift is not None and report.prediction_drift.current:
        features.append(report.prediction_drift)
    if not features:
        return None
    # a Figure of its own draws without pyplot: the user's backend (inline) stays as it is
    from matplotlib.figure import Figure

    cols = 3
    rows = (len(features) + cols - 1) // cols
    figure = Figure(figsize=(cols * 3.2, rows * 2.2), dpi=80)
    for index, feature in enumerate(features):
        axis = figure.add_subplot(rows, cols, index + 1)
        positions = range(len(feature.bins))
        axis.bar(positions, feature.reference, color="#bbbbbb", width=0.9, label="reference")
        color = "#b3261e" if feature.drifted else "#1f5fbf"
        axis.bar(positions, feature.current, color=color, width=0.5, alpha=0.8, label="current")
        name = "(prediction)" if feature is report.prediction_drift else feature.name
        axis.set_title(name + (" - drifted" if feature.drifted else ""), fontsize=9)
        axis.set_xticks([])
        axis.tick_params(labelsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"
