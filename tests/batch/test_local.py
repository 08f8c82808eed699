"""``nbmlops predict`` on the local engine: files in, the notebook's predictions out, bad rows
written apart with their reasons, exit codes, the recorded run and the prediction log."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import nbmlops
from nbmlops.batch.inputs import plan
from nbmlops.cli import main
from nbmlops.predlog.log import PredictionLog
from tests.churn_store import churn_registry_fixture, churn_store_fixture  # noqa: F401

MODEL = "churn@v2"


@pytest.fixture
def scoring_frame(churn_registry):
    """The churn rows the notebook scored, with a customer id, repeated to 600 rows."""
    frame = pd.concat([churn_registry.X_score] * 10, ignore_index=True)
    return frame.assign(customer=[f"c{i:04d}" for i in range(len(frame))])


def expected_for(churn_registry, frame):
    """What the notebook predicted for these rows (the score rows, repeated)."""
    notebook = churn_registry.expected["2"]
    repeated = pd.concat([notebook] * (len(frame) // len(notebook)), ignore_index=True)
    return repeated


def test_parquet_scored_in_chunks_equals_load_predict_and_the_notebook(
    churn_registry, scoring_frame, tmp_path
):
    source = tmp_path / "in.parquet"
    scoring_frame.to_parquet(source, row_group_size=64)
    result = nbmlops.predict(
        MODEL, source, tmp_path / "out.parquet", chunk_rows=100, id_column="customer"
    )
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert (result.rows_in, result.rows_scored, result.rows_rejected) == (600, 600, 0)
    assert result.exit_code == 0 and result.rejected_output is None
    assert not (tmp_path / "out.rejected.parquet").exists()
    assert list(out.columns) == ["customer", "prediction", "proba_0", "proba_1"]
    assert out["customer"].tolist() == scoring_frame["customer"].tolist()  # input order
    in_process = nbmlops.load(MODEL).predict(scoring_frame.drop(columns="customer"))
    pd.testing.assert_frame_equal(out.drop(columns="customer"), in_process)
    pd.testing.assert_frame_equal(
        out.drop(columns="customer"), expected_for(churn_registry, scoring_frame)
    )


def test_csv_is_typed_by_the_schema_as_pandas_reads_it(churn_registry, scoring_frame, tmp_path):
    source = tmp_path / "in.csv"
    scoring_frame.to_csv(source, index=False)
    result = nbmlops.predict(MODEL, source, tmp_path / "out.csv", chunk_rows=77)
    assert result.rows_scored == 600
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["prediction", "proba_0", "proba_1"]
    in_process = nbmlops.load(MODEL).predict(pd.read_csv(source).drop(columns="customer"))
    pd.testing.assert_frame_equal(out, in_process)


def test_bad_rows_are_written_apart_with_reasons_and_never_scored(
    churn_registry, scoring_frame, tmp_path
):
    frame = scoring_frame.astype({"contract": object, "monthly_charges": object})
    frame.loc[3, "contract"] = "lifetime"
    frame.loc[10, "monthly_charges"] = "sixty"
    frame.loc[11, "monthly_charges"] = None
    frame.loc[11, "contract"] = None
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    code = main([
        "predict", MODEL, str(source), str(tmp_path / "out.parquet"), "--id-column", "customer",
        "--chunk-rows", "50",
    ])  # fmt: skip
    assert code == 4
    out = pd.read_parquet(tmp_path / "out.parquet")
    rejected = pd.read_parquet(tmp_path / "out.rejected.parquet")
    assert rejected["row"].tolist() == [3, 10, 11]
    assert rejected["customer"].tolist() == ["c0003", "c0010", "c0011"]
    reasons = dict(zip(rejected["row"], rejected["reason"], strict=True))
    assert "contract: 'lifetime' is a category never seen in training" in reasons[3]
    assert reasons[10] == "monthly_charges: expected a number, got a string 'sixty'"
    assert "contract: null is not allowed" in reasons[11]
    assert "monthly_charges: null is not allowed" in reasons[11]
    assert rejected["monthly_charges"].tolist()[1] == "sixty"  # the input as it was
    assert len(out) == 597 and not set(out["customer"]) & set(rejected["customer"])
    good = frame.drop(index=[3, 10, 11])
    in_process = nbmlops.load(MODEL).predict(
        pd.read_csv(source)
        .drop(index=[3, 10, 11], columns="customer")
        .astype({"monthly_charges": float})
    )
    assert out["customer"].tolist() == good["customer"].tolist()
    pd.testing.assert_frame_equal(out.drop(columns="customer"), in_process.reset_index(drop=True))


def test_a_parquet_folder_in_and_a_folder_of_parts_out(churn_registry, scoring_frame, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, start in enumerate(range(0, 600, 200)):
        scoring_frame.iloc[start : start + 200].to_parquet(folder / f"day-{i}.parquet")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "part-00099.parquet").write_bytes(b"stale")  # from an earlier run
    result = nbmlops.predict(MODEL, folder, tmp_path / "out", id_column="customer")
    assert result.rows_scored == 600
    parts = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    out = pq.read_table(tmp_path / "out").to_pandas()
    assert out["customer"].tolist() == scoring_frame["customer"].tolist()


def test_exit_codes_and_one_line_errors(churn_registry, scoring_frame, tmp_path, capsys):
    source = tmp_path / "in.parquet"
    scoring_frame.to_parquet(source)
    assert main(["predict", MODEL, str(source), str(tmp_path / "out.parquet")]) == 0
    assert "scored 600 of 600 rows" in capsys.readouterr().out
    no_column = tmp_path / "thin.parquet"
    scoring_frame.drop(columns="region").to_parquet(no_column)
    assert main(["predict", MODEL, str(no_column), str(tmp_path / "o.parquet")]) == 1
    err = capsys.readouterr().err
    assert "has no column 'region'" in err and "Nothing was scored" in err
    assert not (tmp_path / "o.parquet").exists()
    assert main(["predict", MODEL, str(tmp_path / "nope.csv"), str(tmp_path / "o.csv")]) == 1
    assert "no input file or folder" in capsys.readouterr().err
    assert main(["predict", MODEL, str(source), str(tmp_path / "o.json")]) == 2
    assert "name it .csv or .parquet" in capsys.readouterr().err
    assert main(["predict", MODEL, str(source), str(tmp_path / "o.csv"), "--chunk-rows", "0"]) == 2
    workers = ["predict", MODEL, str(source), str(tmp_path / "o.csv"), "--workers", "2"]
    assert main(workers) == 2
    assert "--workers sizes the LocalCluster of --engine dask" in capsys.readouterr().err
    assert main(["predict", MODEL, str(source), str(source)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert source.stat().st_size and len(pd.read_parquet(source)) == 600
    clash = ["predict", MODEL, str(source), str(tmp_path / "o.csv"), "--id-column", "prediction"]
    assert main(clash) == 2
    assert "clashes with an output column" in capsys.readouterr().err


def test_a_rerun_without_rejections_removes_the_old_rejected_file(
    churn_registry, scoring_frame, tmp_path
):
    bad = scoring_frame.astype({"contract": object})
    bad.loc[0, "contract"] = "lifetime"
    bad.to_parquet(tmp_path / "bad.parquet")
    scoring_frame.to_parquet(tmp_path / "good.parquet")
    first = nbmlops.predict(MODEL, tmp_path / "bad.parquet", tmp_path / "out.parquet")
    assert first.exit_code == 4 and (tmp_path / "out.rejected.parquet").exists()
    second = nbmlops.predict(MODEL, tmp_path / "good.parquet", tmp_path / "out.parquet")
    assert second.exit_code == 0 and not (tmp_path / "out.rejected.parquet").exists()


def test_the_run_is_recorded_and_logged_batch_traffic_reaches_the_monitor(
    churn_registry, scoring_frame, tmp_path
):
    source = tmp_path / "in.parquet"
    frame = scoring_frame.astype({"contract": object})
    frame.loc[5, "contract"] = "lifetime"
    frame.to_parquet(source)
    result = nbmlops.predict(MODEL, source, tmp_path / "out.parquet", log=True)
    log = PredictionLog(churn_registry.settings.home / "predictions.db")
    try:
        runs = log.batch_runs("churn")
        assert len(runs) == 1
        assert runs[0]["version"] == "2" and runs[0]["input_sha256"] == plan(source, 10).sha256
        assert (runs[0]["rows_in"], runs[0]["rows_scored"], runs[0]["rows_rejected"]) == (
            600, 599, 1,
        )  # fmt: skip
        logged = log.frame("churn", "2")
    finally:
        log.close()
    assert result.exit_code == 4
    assert set(logged["route"]) == {"batch"}
    assert logged["status"].value_counts().to_dict() == {"ok": 599, "rejected": 1}
    first = json.loads(logged[logged["status"] == "ok"]["outputs"].iloc[0])
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert first["prediction"] == out["prediction"].iloc[0]
    assert np.isclose(first["proba"]["1"], out["proba_1"].iloc[0])
    report = nbmlops.monitor(MODEL)
    assert report.n_predictions == 599
    assert report.to_dict()["batch_runs"][0]["rows_rejected"] == 1
    assert f"scored 599 of 600 rows of {source.resolve()}" in repr(report)
    assert "batch run" in report.to_html()


def test_progress_bar_on_a_terminal_only_and_help(churn_registry, scoring_frame, tmp_path, capsys):
    with pytest.raises(SystemExit) as shown_help:
        main(["predict", "--help"])
    assert shown_help.value.code == 0
    assert "--chunk-rows N" in capsys.readouterr().out
    source = tmp_path / "in.parquet"
    scoring_frame.to_parquet(source)
    run = subprocess.run(
        [sys.executable, "-m", "nbmlops.cli", "predict", MODEL, str(source),
         str(tmp_path / "out.parquet")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # not a terminal: no bar
    assert "scored 600 of 600 rows" in run.stdout
    shown = subprocess.run(
        [sys.executable, "-c", "from nbmlops.batch.run import _progress_bar as p; "
         "b = p(10, 'x', True); b.update(10); b.close()"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "scoring with x: 100%" in shown.stderr


def test_unknown_categories_allow_scores_new_categories(churn_registry, scoring_frame, tmp_path):
    frame = scoring_frame.astype({"region": object})
    frame.loc[0, "region"] = "moon"
    frame.to_parquet(tmp_path / "in.parquet")
    result = nbmlops.predict(
        MODEL, tmp_path / "in.parquet", tmp_path / "out.parquet", unknown_categories="allow"
    )
    assert result.rows_rejected == 0
    expected = nbmlops.load(MODEL).predict(
        frame.drop(columns="customer"), unknown_categories="allow"
    )
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out.parquet"), expected)


def test_pieces_are_whole_row_groups_and_reads_stay_within_the_chunk(tmp_path):
    pq.write_table(pa.table({"a": [1, 2, 3]}), tmp_path / "small.parquet", row_group_size=1)
    planned = plan(tmp_path / "small.parquet", 2)
    assert [(p.first_row, p.rows, p.start, p.stop) for p in planned.pieces] == [
        (0, 2, 0, 2),
        (2, 1, 2, 3),
    ]
    pq.write_table(pa.table({"a": range(1000)}), tmp_path / "big.parquet")  # one row group
    planned = plan(tmp_path / "big.parquet", 300)
    assert len(planned.pieces) == 1
    sizes = [t.num_rows for t in planned.read(planned.pieces[0], ["a"])]
    assert max(sizes) <= 300 and sum(sizes) == 1000
    (tmp_path / "lines.csv").write_text("a,b\n1,x\n2,y\n3,z")  # no final line break
    planned = plan(tmp_path / "lines.csv", 2)
    assert planned.rows == 3 and [p.rows for p in planned.pieces] == [2, 1]
    assert [t.num_rows for p in planned.pieces for t in planned.read(p, ["b"])] == [2, 1]


def zoned_features(frame):
    """The hour in Oslo, the size's order, visits with missing as -1."""
    out = pd.DataFrame(index=frame.index)
    out["hour"] = frame["at"].dt.tz_convert("Europe/Oslo").dt.hour
    out["size"] = frame["size"].cat.codes
    out["visits"] = frame["visits"].fillna(-1).astype("float64")
    return out


def zoned_frame(n, seed):
    rng = np.random.default_rng(seed)
    visits = pd.array(rng.integers(0, 9, n), dtype="Int64")
    visits[rng.random(n) < 0.2] = pd.NA
    return pd.DataFrame(
        {
            "at": pd.Timestamp("2026-03-01", tz="Europe/Oslo")
            + pd.to_timedelta(rng.integers(0, 90 * 24 * 60, n), unit="min"),
            "size": pd.Categorical(
                rng.choice(["small", "medium", "large"], n),
                categories=["small", "medium", "large"],
                ordered=True,
            ),
            "visits": visits,
        }
    )


def test_zoned_datetimes_ordered_categories_and_nullable_integers(settings, tmp_path):
    from sklearn.linear_model import LogisticRegression

    train = zoned_frame(400, 0)
    label = (zoned_features(train)["hour"] > 11).astype(int)
    model = LogisticRegression(max_iter=500).fit(zoned_features(train), label)
    nbmlops.package("visits", model, train, target=label, preprocess=[zoned_features])
    rows = zoned_frame(300, 1)
    notebook = model.predict_proba(zoned_features(rows))[:, 1]
    rows.to_parquet(tmp_path / "in.parquet", row_group_size=100)
    rows.to_csv(tmp_path / "in.csv", index=False)  # offsets written as +01:00 / +02:00
    for source, output in (("in.parquet", "out.parquet"), ("in.csv", "out.csv")):
        result = nbmlops.predict("visits", tmp_path / source, tmp_path / output, chunk_rows=64)
        assert result.rows_rejected == 0, result.reasons
    for output in (pd.read_parquet(tmp_path / "out.parquet"), pd.read_csv(tmp_path / "out.csv")):
        np.testing.assert_array_equal(output["proba_1"].to_numpy(), notebook)
        pd.testing.assert_frame_equal(output, nbmlops.load("visits").predict(rows))
    naive = rows.assign(at=rows["at"].dt.tz_localize(None))
    naive.to_parquet(tmp_path / "naive.parquet")
    refused = nbmlops.predict("visits", tmp_path / "naive.parquet", tmp_path / "n.parquet")
    assert refused.rows_scored == 0 and refused.rows_rejected == 300
    assert "at: the column was trained in Europe/Oslo" in refused.reasons[0][0]


def unlucky(frame):
    """A preprocessing step that fails on one value training never had."""
    if (frame["x"] == 13).any():
        raise ValueError("13 is unlucky")
    return frame


def test_a_row_the_model_fails_on_is_rejected_alone(settings, tmp_path):
    from sklearn.linear_model import LinearRegression

    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] * 10})
    model = LinearRegression().fit(train, train["x"] * 2)
    nbmlops.package("fragile", model, train, target=train["x"] * 2, preprocess=[unlucky])
    rows = pd.DataFrame({"x": [float(v) for v in range(1, 41)]})
    rows.to_parquet(tmp_path / "in.parquet")
    result = nbmlops.predict("fragile", tmp_path / "in.parquet", tmp_path / "out.parquet")
    assert (result.rows_scored, result.rows_rejected) == (39, 1)
    rejected = pd.read_parquet(tmp_path / "out.rejected.parquet")
    assert rejected["row"].tolist() == [12]
    assert rejected["reason"].tolist() == [
        "the model failed on this row: ValueError: 13 is unlucky"
    ]
    out = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(out["prediction"], rows["x"].drop(index=12) * 2)


def test_a_csv_value_spanning_lines_is_refused_not_misread(tmp_path):
    (tmp_path / "notes.csv").write_text('a,b\n1,"two\nlines"\n2,y\n')
    planned = plan(tmp_path / "notes.csv", 100)
    with pytest.raises(nbmlops.BatchError, match="a value spans lines or a line is blank"):
        list(planned.read(planned.pieces[0], ["a", "b"]))
