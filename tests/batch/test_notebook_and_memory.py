"""``%mlops_predict`` in a real kernel on the data users have (a naive datetime, an ordered
Categorical, a nullable Int64, NaNs, a bool), and flat memory on a file of many chunks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import nbformat
import numpy as np
import pandas as pd
from nbclient import NotebookClient

from nbmlops.jobs.notebooks import ensure_kernel
from tests.churn_store import churn_registry_fixture, churn_store_fixture  # noqa: F401
from tests.conftest import outputs_text
from tests.real_data import CELLS


def test_mlops_predict_in_a_kernel_gives_the_notebooks_predictions(settings, tmp_path):
    *definitions, training = CELLS
    cells = [
        "%load_ext nbmlops",
        *definitions,
        training.split("\nclf, X_train")[0],
        "%%mlops_package shop --model clf --data X_train --target y_train "
        "--preprocess featurize --eval X_test y_test\n"
        "clf, X_train, y_train, X_test, y_test = train()",
        "features = featurize(X_test)\n"
        "notebook = pd.DataFrame({'prediction': clf.predict(features)})\n"
        "for i, label in enumerate(clf.classes_):\n"
        "    notebook[f'proba_{label}'] = clf.predict_proba(features)[:, i]\n"
        "notebook.to_parquet('notebook.parquet')\n"
        "bad = X_test.assign(key=range(len(X_test))).astype({'age': str})\n"
        "bad.loc[4, 'age'] = 'old'\n"
        "bad.to_parquet('bad.parquet', row_group_size=50)\n"
        "X_test.to_csv('test.csv', index=False)\n"
        "X_test.to_parquet('test.parquet', row_group_size=50)",
        "%mlops_predict shop test.parquet scored.parquet --chunk-rows 60",
        "%mlops_predict shop test.csv scored.csv",
        "result = %mlops_predict shop bad.parquet bad-scored.parquet --id-column key\nresult",
        "print(result.exit_code, result.rows_rejected)",
        "%mlops_predict shop nowhere.parquet x.parquet",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(
        nb,
        kernel_name=ensure_kernel(settings),
        timeout=300,
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    notebook = pd.read_parquet(tmp_path / "notebook.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "scored.parquet"), notebook)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "scored.csv"), notebook)
    scored = pd.read_parquet(tmp_path / "bad-scored.parquet")
    assert 4 not in scored["key"].tolist() and len(scored) == len(notebook) - 1
    pd.testing.assert_frame_equal(
        scored.drop(columns="key"), notebook.drop(index=4).reset_index(drop=True)
    )
    rejected = pd.read_parquet(tmp_path / "bad-scored.rejected.parquet")
    assert rejected["reason"].tolist() == ["age: expected a number, got a string 'old'"]
    text = outputs_text(nb)
    assert "4 1" in text  # exit code 4, one row rejected
    summary = nb.cells[-3].outputs[-1]["data"]
    assert "bad-scored.rejected.parquet" in summary["text/html"]
    assert "1 rows rejected" in summary["text/plain"]
    widgets = [o for o in nb.cells[-5].outputs if "application/vnd.jupyter.widget-view+json" in
               o.get("data", {})]  # fmt: skip
    assert widgets, "the progress bar is a widget in a notebook"
    last = "".join(o.get("text", "") for o in nb.cells[-1].outputs)  # one line, no traceback
    assert last.strip() == "UsageError: BatchError: no input file or folder at nowhere.parquet"


CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import nbmlops

    peaks = []
    for source in sys.argv[1:]:
        nbmlops.predict("churn@v2", source, source + ".out.parquet", chunk_rows=5000)
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps(peaks))
    """
)


def test_memory_stays_flat_in_the_number_of_rows(churn_registry, tmp_path):
    """Peak RSS after scoring 40,000 rows, then after 400,000 (80 chunks): the second run
    adds far less than the file would take in memory as a frame."""
    rows = pd.concat([churn_registry.X_score] * 6700, ignore_index=True).iloc[:400_000]
    rows["note"] = [f"customer note {i}" for i in range(len(rows))]  # unread text, too
    small, big = tmp_path / "small.parquet", tmp_path / "big.parquet"
    rows.iloc[:40_000].to_parquet(small, row_group_size=5000)
    rows.to_parquet(big, row_group_size=5000)
    whole = rows.drop(columns="note").memory_usage(deep=True).sum()
    env = {**os.environ, "NBMLOPS_HOME": str(churn_registry.settings.home)}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(small), str(big)],
        capture_output=True, text=True, env=env, check=True, timeout=300,
    )  # fmt: skip
    first, second = json.loads(run.stdout)
    assert len(pd.read_parquet(str(big) + ".out.parquet")) == 400_000
    growth = second - first
    assert growth < whole / 4, (
        f"peak RSS grew by {growth / 2**20:.0f} MiB from 40k to 400k rows; the frame alone "
        f"is {whole / 2**20:.0f} MiB"
    )
    assert np.isfinite(growth)
