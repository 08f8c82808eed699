"""``nbmlops demo`` as a newcomer runs it: the venv never activated, a fresh store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat

import nbmlops
from nbmlops.predlog.log import PredictionLog
from nbmlops.registry.registry import Registry
from tests.jobs.test_widget_state import renders_on_github

SCRIPTS = Path(sys.executable).parent


def nbmlops_command(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed ``nbmlops`` script with the venv's folder off ``PATH``."""
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p != str(SCRIPTS)]
    return subprocess.run(
        [str(SCRIPTS / "nbmlops"), *args],
        env={**os.environ, "PATH": os.pathsep.join(path)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def step(lines: list[str], pattern: str) -> re.Match:
    """The one progress line (``[ 12s] ...``) that matches ``pattern``."""
    found = [m for m in (re.fullmatch(r"\[ *\d+s\] " + pattern, line) for line in lines) if m]
    assert len(found) == 1, (pattern, lines)
    return found[0]


def test_demo_says_what_it_made_step_by_step_then_where_and_what_next(
    settings, tmp_path, repo_root
):
    proc = nbmlops_command("demo")
    assert proc.returncode == 0, proc.stderr
    # no kernel warning ("running over TCP without encryption"), nor anything else
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    store = tmp_path / ".nbmlops"
    assert lines[0] == (
        f"running {repo_root / 'notebooks' / 'quickstart.ipynb'} in a new kernel; "
        f"the store is {store}"
    )

    # each fact is the store's, not a script's
    version = Registry(settings).resolve("churn@v1")
    trained = step(lines, r"trained churn \(classification\): (.*) on the held-out rows")
    assert trained[1].startswith(f"f1_macro {version.metrics['f1_macro']:.3f}, accuracy ")
    step(lines, r"packaged churn v1 \(parity passed in a fresh process\) and registered it")
    url = step(lines, r"serving churn v1 at (http://127\.0\.0\.1:\d+) \(API docs at \S+/docs\)")[1]
    log = PredictionLog(store / "predictions.db")
    logged = log.count("churn", "ok")
    log.close()
    assert logged == 805
    step(lines, r"805 predictions logged, 1 bad request refused, 800 with ground truth")
    assert nbmlops.monitor("churn@v1", settings=settings).status == "ok"
    step(lines, r"monitor: OK \(805 predictions; drifted features: none; live f1_macro .*\)")
    step(lines, f"stopped the server at {re.escape(url)}")
    order = ["trained", "packaged", "serving", "805 predictions", "monitor:", "stopped"]
    positions = [next(i for i, line in enumerate(lines) if f"] {word}" in line) for word in order]
    assert positions == sorted(positions)

    executed = store / "runs" / "quickstart.ipynb"
    html = store / "runs" / "quickstart.html"
    summary = lines[lines.index(next(x for x in lines if x.startswith("demo finished in"))) :]
    assert summary[1:5] == [
        f"  model     churn v1, registered in {settings.registry_uri}",
        f"  notebook  {executed} (executed)",
        f"  HTML      {html} (the same notebook, for a browser)",
        f"  store     {store} (registry, artifacts, prediction log)",
    ]
    assert summary[5] == "Try next:"
    commands = [line.split("#")[0].split() for line in summary[6:]]
    assert commands == [
        ["nbmlops", "models", "show", "churn@v1"],
        ["nbmlops", "monitor", "churn"],
        ["nbmlops", "serve", "churn"],
    ]

    nb = nbformat.read(executed, as_version=4)
    assert nb.metadata["papermill"]["exception"] is None
    text = json.dumps(nb)
    assert "Model card: churn v1" in text
    assert f"Serving churn v1 at {url}" in text  # the URL the notebook's server had
    # the shell command in a cell finds nbmlops though the venv was never activated
    (listing,) = [c for c in nb.cells if c.source.startswith("!nbmlops models")]
    assert "churn" in listing.outputs[0]["text"], listing.outputs
    assert nbmlops.load("churn@v1").lineage.notebook_path == str(
        repo_root / "notebooks" / "quickstart.ipynb"
    )
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "Model card: churn v1" in page
    assert 'class="nbmlops-monitor"' in page  # the monitor's report, whatever widgets ran
    assert renders_on_github(json.loads(executed.read_text()))

    # the first two commands it suggests work as printed
    for command in commands[:2]:
        shown = nbmlops_command(*command[1:], timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert "churn v1" in shown.stdout

    # a second run makes the next version and says so
    again = nbmlops_command("demo", "--output", "elsewhere/run2.ipynb")
    assert again.returncode == 0, again.stderr
    step(again.stdout.splitlines(), r"packaged churn v2 \(parity passed .*")
    assert f"  HTML      {tmp_path / 'elsewhere' / 'run2.html'} (" in again.stdout
    assert "nbmlops models show churn@v2" in again.stdout
    assert (tmp_path / "elsewhere" / "run2.html").is_file()


def test_a_failing_notebook_is_one_line_naming_the_cell_and_the_executed_copy(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("x / 0")]
    nbformat.write(nb, tmp_path / "broken.ipynb")
    proc = nbmlops_command("demo", "--notebook", "broken.ipynb", timeout=120)
    assert proc.returncode == 1
    executed = tmp_path / ".nbmlops" / "runs" / "broken.ipynb"
    assert proc.stderr == (
        "nbmlops: broken.ipynb failed in cell 2: ZeroDivisionError: division by zero; the "
        f"executed notebook, with the error and the cells before it, is {executed}\n"
    )
    assert executed.is_file()
