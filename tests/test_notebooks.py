"""End to end in a real kernel: ``%%mlops_package`` cells executed by nbclient (the demo, run by
papermill, is in test_demo.py)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

import nbmlops
from nbmlops.datasets import make_churn, make_house_prices
from nbmlops.registry.registry import Registry
from tests.conftest import outputs_text

SETUP = """
%load_ext nbmlops
import numpy as np
import pandas as pd
from nbmlops.datasets import make_churn

CHARGE_CAP = 120.0
"""

HELPER = """
def tenure_bucket(months):
    return pd.cut(months, bins=[-1, 6, 24, 48, 1000], labels=["new", "young", "settled", "loyal"])
"""

FEATURIZE = """
def featurize(frame):
    out = frame.copy()
    out["tenure_bucket"] = tenure_bucket(out["tenure_months"]).astype("string").fillna("unknown")
    out["charges_capped"] = np.minimum(out["monthly_charges"], CHARGE_CAP)
    out["payment_method"] = out["payment_method"].fillna("unknown")
    out["paperless"] = out["paperless"].astype(int)
    return out.drop(columns=["monthly_charges"])
"""

DATA = """
df = make_churn(1200, seed=1)
X, y = df.drop(columns="churned"), df["churned"]
X_train, X_test, y_train, y_test = X.iloc[:900], X.iloc[900:], y.iloc[:900], y.iloc[900:]
"""

MAGIC = (
    "%%mlops_package churn --model clf --data X_train --target y_train --preprocess featurize "
    "--eval X_test y_test"
)
TRAIN = (
    MAGIC
    + """ {extra}
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

categorical = ["contract", "payment_method", "region", "tenure_bucket"]
numeric = ["tenure_months", "charges_capped", "support_calls", "paperless"]
clf = make_pipeline(
    ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ("num", SimpleImputer(strategy="median"), numeric),
    ]),
    LogisticRegression(max_iter={max_iter}),
)
clf.fit(featurize(X_train), y_train)
"""
)

SAVE_NOTEBOOK_PREDICTIONS = """
features = featurize(X_test)
pd.DataFrame(clf.predict_proba(features), columns=[f"proba_{c}" for c in clf.classes_]).assign(
    prediction=clf.predict(features)
).to_pickle("notebook_predictions.pkl")
"""


def train(extra: str = "", max_iter: int = 500) -> str:
    return TRAIN.format(extra=extra, max_iter=max_iter)


def held_out() -> pd.DataFrame:
    df = make_churn(1200, seed=1)
    return df.drop(columns="churned").iloc[900:]


def test_featurize_with_helper_and_constant_reproduces_notebook(run_cells, settings, monkeypatch):
    nb = run_cells(SETUP, HELPER, FEATURIZE, DATA, train(), SAVE_NOTEBOOK_PREDICTIONS)

    card_html = "".join(
        out["data"].get("text/html", "") for out in nb.cells[4].outputs if "data" in out
    )
    assert "Model card: churn v1" in card_html
    assert "parity" in card_html and "passed" in card_html

    expected = pd.read_pickle("notebook_predictions.pkl")
    model = nbmlops.load("churn@v1")
    got = model.predict(held_out()).reset_index(drop=True)
    assert (got["prediction"].to_numpy() == expected["prediction"].to_numpy()).all()
    np.testing.assert_allclose(got[["proba_0", "proba_1"]], expected[["proba_0", "proba_1"]])

    source = (model.path / "code" / "nbmlops_preprocess.py").read_text()
    assert "def tenure_bucket(months):" in source
    assert "def featurize(frame):" in source
    assert "CHARGE_CAP = 120.0" in source
    assert "import numpy as np" in source and "import pandas as pd" in source

    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    via_mlflow = mlflow.pyfunc.load_model("models:/churn/1").predict(held_out())
    pd.testing.assert_frame_equal(via_mlflow.reset_index(drop=True), got)


def test_string_categorical_and_missing_values_are_profiled(run_cells):
    run_cells(SETUP, HELPER, FEATURIZE, DATA, train())
    model = nbmlops.load("churn")
    schema, profile = model.schema, model.profile

    payment = schema.column("payment_method")
    assert payment.kind == "categorical" and payment.nullable
    assert set(payment.categories) == {"bank", "card", "check", "voucher"}
    contract = schema.column("contract")
    assert contract.dtype == "category"
    assert contract.categories == ("month-to-month", "one-year", "two-year")
    tenure = schema.column("tenure_months")
    assert tenure.kind == "numeric" and tenure.nullable and tenure.min >= 0
    assert schema.column("paperless").kind == "boolean"
    assert schema.classes == (0, 1)

    assert profile.n_rows == 900
    assert 0 < profile.column("payment_method").null_rate < 0.2
    assert sum(profile.column("region").frequencies.values()) == 900
    charges = profile.column("monthly_charges")
    assert sum(charges.bin_counts) == 900 and len(charges.bin_edges) == len(charges.bin_counts) + 1
    assert charges.stats["min"] <= charges.stats["p50"] <= charges.stats["max"]
    assert {p.name for p in profile.predictions} == {"prediction", "proba_0", "proba_1"}
    lineage = json.loads((model.path / "lineage.json").read_text())
    assert lineage["data_shape"] == [900, 7]
    assert lineage["metrics"]["f1_macro"] > 0.5
    assert lineage["packages"]["scikit-learn"]


def test_regression_model_records_regression_metrics(run_cells, settings):
    run_cells(
        "%load_ext nbmlops\nfrom nbmlops.datasets import make_house_prices",
        "df = make_house_prices(800, seed=2)\n"
        "X, y = df.drop(columns='price'), df['price']\n"
        "X_train, X_test, y_train, y_test = X[:600], X[600:], y[:600], y[600:]",
        "%%mlops_package houses --model reg --data X_train --target y_train "
        "--eval X_test y_test\n"
        "from sklearn.compose import make_column_transformer\n"
        "from sklearn.impute import SimpleImputer\n"
        "from sklearn.linear_model import Ridge\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import OneHotEncoder\n"
        "reg = make_pipeline(make_column_transformer(\n"
        "    (OneHotEncoder(), ['neighbourhood']),\n"
        "    (SimpleImputer(), ['size_m2', 'rooms', 'age_years'])), Ridge())\n"
        "reg.fit(X_train, y_train)",
        "reg.predict(X_test).tofile('notebook_predictions.bin')",
    )
    version = Registry(settings).resolve("houses")
    assert set(version.metrics) == {"rmse", "mae", "r2"}
    assert version.metrics["r2"] > 0.8
    assert version.tags["nbmlops.primary_metric"] == "rmse"
    model = nbmlops.load("houses@v1")
    assert model.schema.task == "regression" and model.schema.classes is None
    x_test = make_house_prices(800, seed=2).drop(columns="price")[600:]
    got = model.predict(x_test)
    assert list(got.columns) == ["prediction"]
    np.testing.assert_allclose(got["prediction"], np.fromfile("notebook_predictions.bin"))


def test_plain_estimator_without_preprocess(run_cells):
    run_cells(
        "%load_ext nbmlops\nimport numpy as np, pandas as pd\n"
        "rng = np.random.default_rng(0)\n"
        "X = pd.DataFrame(rng.normal(size=(300, 3)), columns=['a', 'b', 'c'])\n"
        "y = np.where(X['a'] + X['b'] > 0, 'yes', 'no')",
        "%%mlops_package plain --model est --data X\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "est = LogisticRegression().fit(X, y)",
    )
    model = nbmlops.load("plain")
    assert model.metadata["preprocess"] == []
    assert model.metadata["estimator_format"] == "skops"
    assert not (model.path / "code" / "nbmlops_preprocess.py").exists()
    rows = pd.DataFrame({"a": [2.0, -2.0], "b": [1.0, -1.0], "c": [0.0, 0.0]})
    got = model.predict(rows)
    assert got["prediction"].tolist() == ["yes", "no"]
    assert list(got.columns) == ["prediction", "proba_no", "proba_yes"]


def test_parity_failure_registers_nothing(run_cells, settings):
    noisy = FEATURIZE.replace(
        "return out.drop",
        "out['support_calls'] = out['support_calls'] + np.random.normal(0, 3, len(out))\n"
        "    return out.drop",
    )
    nb, error = run_cells(SETUP, HELPER, noisy, DATA, train(), expect_error=True)
    assert error.ename == "UsageError"
    assert "parity check failed" in error.evalue
    assert "nothing was registered" in error.evalue
    assert "notebook" in error.evalue and "artifact" in error.evalue
    assert Registry(settings).list_models() == []


def test_capture_failure_names_each_problem_and_registers_nothing(run_cells, settings):
    broken = """
fh = open("notes.txt", "w")
CLEANERS = {"region": lambda s: s.str.upper()}

def featurize(frame):
    fh.write("called")
    out = frame.copy()
    out["region"] = CLEANERS["region"](out["region"])
    if "legacy_id" in out:  # never true here, so the notebook runs; a server might see it
        out = undefined_helper(out)
    return featurize_rest(out)
"""
    rest = FEATURIZE.replace("def featurize", "def featurize_rest")
    nb, error = run_cells(SETUP, HELPER, rest, broken, DATA, train(), expect_error=True)
    assert error.ename == "UsageError"
    message = error.evalue
    assert "cannot capture preprocessing function 'featurize'" in message
    assert "'fh' is an open file" in message
    assert "'CLEANERS'" in message and "lambda" in message
    assert "'undefined_helper'" in message and "defined nowhere" in message
    assert "Traceback" not in outputs_text(nb)
    assert Registry(settings).list_models() == []


def test_two_packagings_give_versions_1_and_2(run_cells, settings):
    nb = run_cells(SETUP, HELPER, FEATURIZE, DATA, train(), train("--alias staging", max_iter=50))
    registry = Registry(settings)
    assert [v.version for v in registry.versions("churn")] == ["1", "2"]
    assert registry.resolve("churn@staging").version == "2"
    assert "Model card: churn v2 (staging)" in outputs_text(nb)


def test_magic_usage_errors_are_one_line(run_cells):
    nb, error = run_cells(
        "%load_ext nbmlops",
        "%%mlops_package churn --model missing_model --data X\nx = 1",
        expect_error=True,
    )
    assert error.ename == "UsageError"
    assert "--model missing_model" in error.evalue and "no variable" in error.evalue
    nb = run_cells("%load_ext nbmlops", "%%mlops_package --help\nraise RuntimeError('ran')")
    text = outputs_text(nb)
    assert "--preprocess FUNC" in text and "ran" not in text


def test_notebook_path_from_vscode_is_recorded(run_cells):
    run_cells(
        "__vsc_ipynb_file__ = '/home/ds/project/train.ipynb'",
        SETUP,
        HELPER,
        FEATURIZE,
        DATA,
        train(),
    )
    lineage = nbmlops.load("churn").lineage
    assert lineage.notebook_path == "/home/ds/project/train.ipynb"
    body = train().split("\n", 1)[1]
    assert lineage.cell_hash == hashlib.sha256(body.encode()).hexdigest()
    assert lineage.execution_count == 6


def test_serve_from_a_kernel_survives_a_server_crash_and_ends_with_the_kernel(run_cells):
    nb = run_cells(
        SETUP,
        HELPER,
        FEATURIZE,
        DATA,
        train(),
        "server = %mlops_serve churn\nserver",
        "served = server.predict(X_test.head(5))\n"
        "assert served['prediction'].tolist() == clf.predict(featurize(X_test.head(5))).tolist()",
        "import os, signal, time\n"
        "os.kill(server.pid, signal.SIGKILL)\n"
        "deadline = time.time() + 10\n"
        "while server.alive and time.time() < deadline:\n"
        "    time.sleep(0.1)\n"
        "print('crashed server alive:', server.alive)",
        "%mlops_serve --list",
        "second = %mlops_serve churn@v1\n"
        "open('second.pid', 'w').write(str(second.pid))\n"
        "print('second alive:', second.alive)",
    )
    text = outputs_text(nb)
    assert "Serving churn v1 at http://127.0.0.1:" in text and "/docs" in text
    assert "curl -s http://127.0.0.1:" in text
    assert "crashed server alive: False" in text
    assert "no servers running" in text
    assert "second alive: True" in text
    second_pid = int(Path("second.pid").read_text())
    deadline = time.monotonic() + 30
    while _alive(second_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(second_pid), "the server outlived its kernel"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")
