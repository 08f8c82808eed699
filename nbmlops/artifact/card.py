"""The model card: what a version is, how well it did and where it came from."""

from __future__ import annotations

import html
from dataclasses import dataclass

from nbmlops.artifact.lineage import Lineage
from nbmlops.artifact.schema import MAX_CATEGORIES, Schema


@dataclass(frozen=True)
class Card:
    """A model card; renders as Markdown (``card.md``), HTML and plain text."""

    name: str
    schema: Schema
    lineage: Lineage
    primary_metric: str
    artifact_digest: str | None = None
    parity: str | None = None
    estimator_fallback: str | None = None  # why the estimator was saved with joblib
    version: str | None = None
    aliases: tuple[str, ...] = ()
    description: str | None = None

    def _title(self) -> str:
        version = f" v{self.version}" if self.version else ""
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.name}{version}{aliases}"

    def _facts(self) -> list[tuple[str, str]]:
        lin = self.lineage
        git = "not in a git repository"
        if lin.git_commit:
            git = lin.git_commit[:12] + (" (uncommitted changes)" if lin.git_dirty else "")
        facts = [
            ("task", self.schema.task),
            ("classes", ", ".join(map(str, self.schema.classes)) if self.schema.classes else "-"),
            ("primary metric", self.primary_metric),
            ("training data", f"{lin.data_shape[0]} rows x {lin.data_shape[1]} columns"),
            ("data hash", lin.data_hash),
            ("notebook", lin.notebook_path or "unknown"),
            ("cell hash", lin.cell_hash or "-"),
            ("execution count", str(lin.execution_count) if lin.execution_count else "-"),
            ("git commit", git),
            ("trained by", f"{lin.user} at {lin.created}"),
            ("python", lin.python),
        ]
        if self.artifact_digest:
            facts.append(("artifact (manifest sha256)", self.artifact_digest))
        if self.parity:
            facts.append(("parity", self.parity))
        if self.estimator_fallback:
            facts.append(
                (
                    "estimator saved with",
                    f"joblib, not skops: {self.estimator_fallback} (joblib runs pickle on "
                    "load: load this artifact only from a source you trust)",
                )
            )
        return facts

    def _schema_rows(self) -> list[tuple[str, ...]]:
        rows = []
        for col in self.schema.columns:
            if col.categories is not None:
                seen = ", ".join(map(str, col.categories[:8]))
                seen += f", ... ({len(col.categories)} in all)" if len(col.categories) > 8 else ""
            elif col.min is not None:
                seen = f"{col.min:g} .. {col.max:g}"
            else:
                seen = "-"
            rows.append((col.name, col.dtype, col.kind, "yes" if col.nullable else "no", seen))
        return rows

    def _kinds_note(self) -> list[str]:
        """Which text columns were taken as categories and which as free text; how to choose."""
        columns = self.schema.columns
        categories = [
            c.name + (" (a pandas Categorical)" if c.dtype == "category" else "")
            for c in columns
            if c.kind == "categorical"
        ]
        free_text = [c.name for c in columns if c.kind == "text"]
        lines = []
        if categories:
            lines.append(
                "Taken as categories (a value training never saw is refused): "
                f"{', '.join(categories)}."
            )
        if free_text:
            lines.append(f"Taken as free text (any string is accepted): {', '.join(free_text)}.")
        if lines:
            lines.append(
                f"A text column is taken as categories when it has at most {MAX_CATEGORIES} "
                "distinct values, each seen twice on average; choose otherwise with "
                "--categorical COL ... or --free-text COL ... on %%mlops_package "
                "(package(categorical=[...], free_text=[...]))."
            )
        return lines

    def to_markdown(self) -> str:
        lines = [f"# Model card: {self._title()}", ""]
        if self.description:
            lines += [self.description, ""]
        lines += ["| | |", "|---|---|"]
        lines += [f"| {k} | {_md(v)} |" for k, v in self._facts()]
        lines += ["", "## Metrics (held-out data)", ""]
        metrics = self.lineage.metrics
        if metrics:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
        else:
            lines.append("No evaluation data was given (--eval).")
        lines += ["", "## Input schema", "", "| column | dtype | kind | nulls | seen |"]
        lines += ["|---|---|---|---|---|"]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in self._schema_rows()]
        note = self._kinds_note()
        if note:
            lines += ["", " ".join(note)]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        width = max(len(k) for k, _ in self._facts())
        lines = [f"Model card: {self._title()}"]
        lines += [f"  {k:<{width}}  {v}" for k, v in self._facts()]
        for k, v in self.lineage.metrics.items():
            lines.append(f"  {k:<{width}}  {v:.4f}")
        lines.append(f"  inputs: {', '.join(self.schema.names)}")
        lines += [f"  {line}" for line in self._kinds_note()]
        return "\n".join(lines)

    def to_html(self) -> str:
        esc = html.escape
        facts = "".join(
            f"<tr><th style='text-align:left'>{esc(k)}</th><td>{esc(v)}</td></tr>"
            for k, v in self._facts()
        )
        metrics = (
            "".join(
                f"<tr><th style='text-align:left'>{esc(k)}</th><td>{v:.4f}</td></tr>"
                for k, v in self.lineage.metrics.items()
            )
            or "<tr><td>No evaluation data was given (--eval).</td></tr>"
        )
        header = "".join(f"<th>{h}</th>" for h in ("column", "dtype", "kind", "nulls", "seen"))
        schema = "".join(
            "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
            for row in self._schema_rows()
        )
        description = f"<p>{esc(self.description)}</p>" if self.description else ""
        note = "".join(f"<p>{esc(line)}</p>" for line in self._kinds_note())
        return (
            "<div class='nbmlops-card'>"
            f"<h3>Model card: {esc(self._title())}</h3>{description}"
            f"<table>{facts}</table>"
            f"<h4>Metrics (held-out data)</h4><table>{metrics}</table>"
            f"<h4>Input schema</h4><table><tr>{header}</tr>{schema}</table>{note}"
            "</div>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        return self.to_text()


def _md(value: str) -> str:
    return str(value).replace("|", "\\|")
