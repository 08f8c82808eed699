"""``nbmlops plan``: the seven sections, every figure the artifact's or nbmlops' own."""

from __future__ import annotations

import json
import re

import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import nbmlops
from nbmlops.artifact.validation import Validator
from nbmlops.cli import main
from nbmlops.datasets import make_churn
from nbmlops.monitoring.report import MonitorThresholds
from nbmlops.plans.plan import SECTIONS
from nbmlops.serving.analysis import AnalysisOptions
from tests.churn_store import (
    NAME,
    churn_registry_fixture,  # noqa: F401 - a fixture
    churn_store_fixture,  # noqa: F401 - a fixture
)

RUNBOOK = (
    "drift alert", "error-rate alert", "canary rolled back", "failed job", "tampered artifact",
    "stale model",
)  # fmt: skip


def section(markdown: str, title: str) -> str:
    start = markdown.index(f". {title}\n")
    end = markdown.find("\n## ", start)
    return markdown[start : end if end != -1 else None]


def json_blocks(text: str) -> list:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, re.S)]


def test_the_plan_holds_seven_sections_consistent_with_the_artifact(churn_registry):
    written = nbmlops.plan(f"{NAME}@v2").markdown
    assert re.findall(r"^## \d\. (.*)$", written, re.M) == list(SECTIONS)
    loaded = nbmlops.load(f"{NAME}@v2")

    contract = section(written, "API contract")
    for column in loaded.schema.columns:
        assert f"| `{column.name}` | {column.kind} | {column.dtype} |" in contract
    request, answer, refused = json_blocks(contract)
    Validator(loaded.schema).check(request["records"])  # the example is a valid request
    expected = loaded.predict(pd.DataFrame(request["records"])).iloc[0]
    assert (
        answer["version"] == "2"
        and answer["predictions"][0]["prediction"] == expected["prediction"]
    )
    assert set(answer["predictions"][0]["proba"]) == {str(c) for c in loaded.schema.classes}
    assert refused["error"] == "invalid input: nothing was predicted"
    assert [p["field"] for p in refused["problems"]][0] == loaded.schema.columns[0].name

    thresholds, analysis = MonitorThresholds(), AnalysisOptions()
    assert f"p99 above {thresholds.max_p99_ms:g} ms" in section(written, "Monitoring dashboard")
    assert f"Analysis every {analysis.interval:g} s" in section(written, "Rollout strategy")
    assert "f1_macro>=production" in section(written, "Retraining pipeline")
    runbook = section(written, "Runbook")
    for failure in RUNBOOK:
        row = next(line for line in runbook.splitlines() if line.startswith(f"| {failure} |"))
        assert "`nbmlops " in row or "fix the cell" in row
    assert "Measured (" not in written, "no benchmark table without a benchmarks file"
    assert "ONNX twin | none (`nbmlops export churn@v2 --format onnx`)" in written


def test_the_cli_writes_the_plan_with_the_benchmarks_and_the_onnx_twin(
    churn_registry, tmp_path, capsys
):
    nbmlops.export(f"{NAME}@v1")
    bench = tmp_path / "benchmarks" / "README.md"
    bench.parent.mkdir()
    bench.write_text(
        "intro\n<!-- bench_serving:start -->\n| server | req/s |\n| --- | ---: |\n"
        "| nbmlops | 1,234.5 |\n\n| ignored | rows |\n<!-- bench_serving:end -->\n"
    )
    out = tmp_path / "plan.md"
    assert main(["plan", f"{NAME}@v1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    assert "| nbmlops | 1,234.5 |" in printed and "ignored" not in printed
    assert "ONNX twin | yes, parity proven within 0.0001" in printed


def test_the_magic_renders_markdown_with_a_text_fallback(churn_registry, run_cells):
    nb = run_cells("%load_ext nbmlops", f"%mlops_plan {NAME}@v3")
    data = nb.cells[1].outputs[0]["data"]
    assert "## 7. Runbook" in data["text/markdown"]
    assert "## 3. API contract" in data["text/plain"]


def test_the_example_request_is_valid_with_a_zoned_datetime_and_an_ordered_category(settings):
    df = make_churn(300, seed=8)
    x, y = df[["tenure_months", "support_calls"]].copy(), df["churned"]
    x["signed_up"] = pd.date_range("2026-03-01", periods=len(x), freq="h", tz="Europe/Paris")
    x["tier"] = pd.Categorical(
        ["gold", "bronze", "silver"] * 100, categories=["bronze", "silver", "gold"], ordered=True
    )
    model = make_pipeline(
        make_column_transformer((SimpleImputer(), ["tenure_months", "support_calls"])),
        LogisticRegression(),
    ).fit(x, y)
    nbmlops.package("dated", model, x, target=y)
    request, answer, _ = json_blocks(section(nbmlops.plan("dated").markdown, "API contract"))
    record = request["records"][0]
    assert record["signed_up"].endswith("+01:00") or record["signed_up"].endswith("+02:00")
    assert isinstance(record["support_calls"], int) and record["tier"] in {
        "bronze",
        "silver",
        "gold",
    }
    Validator(nbmlops.load("dated").schema).check(request["records"])
    assert answer["predictions"][0]["prediction"] in (0, 1)
