"""``nbmlops predict --engine dask`` on a real ``LocalCluster`` of two worker processes: the
same predictions and rejections as the local engine, parts written by the workers, and a
worker killed mid-run that costs no row and duplicates none."""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

import nbmlops
from nbmlops.cli import main
from nbmlops.predlog.log import PredictionLog
from tests.batch.test_local import zoned_features, zoned_frame
from tests.churn_store import churn_registry_fixture, churn_store_fixture  # noqa: F401

MODEL = "churn@v2"


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes with one thread each, as on a 2-core machine."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as local:
        yield local


@pytest.fixture
def frame(churn_registry):
    rows = pd.concat([churn_registry.X_score] * 40, ignore_index=True)  # 2,400 rows
    rows = rows.assign(customer=[f"c{i:05d}" for i in range(len(rows))])
    rows = rows.astype({"contract": object})
    rows.loc[[7, 1500], "contract"] = "lifetime"
    return rows


def read_parts(folder):
    return pq.read_table(folder).to_pandas()


def test_dask_scores_what_the_local_engine_scores(cluster, churn_registry, frame, tmp_path):
    source = tmp_path / "in.parquet"
    frame.to_parquet(source, row_group_size=300)
    local = nbmlops.predict(MODEL, source, tmp_path / "local.parquet", id_column="customer")
    remote = nbmlops.predict(
        MODEL,
        source,
        tmp_path / "dask.parquet",
        id_column="customer",
        engine="dask",
        scheduler=cluster.scheduler_address,
        chunk_rows=300,
        log=True,
    )
    assert (remote.rows_in, remote.rows_scored, remote.rows_rejected) == (2400, 2398, 2)
    log = PredictionLog(churn_registry.settings.home / "predictions.db")
    try:
        logged = log.frame("churn", "2")  # written by the workers
    finally:
        log.close()
    assert set(logged["route"]) == {"batch"}
    assert logged["status"].value_counts().to_dict() == {"ok": 2398, "rejected": 2}
    assert remote.reasons == local.reasons
    parts = sorted(p.name for p in (tmp_path / "dask.parquet").iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(8)]
    pd.testing.assert_frame_equal(
        read_parts(tmp_path / "dask.parquet"), pd.read_parquet(tmp_path / "local.parquet")
    )
    pd.testing.assert_frame_equal(
        read_parts(tmp_path / "dask.rejected.parquet"),
        pd.read_parquet(tmp_path / "local.rejected.parquet"),
    )
    good = frame.drop(index=[7, 1500])
    expected = nbmlops.load(MODEL).predict(good.drop(columns="customer"))
    out = read_parts(tmp_path / "dask.parquet")
    assert out["customer"].tolist() == good["customer"].tolist()
    pd.testing.assert_frame_equal(out.drop(columns="customer"), expected.reset_index(drop=True))
    notebook = pd.concat([churn_registry.expected["2"]] * 40, ignore_index=True)
    pd.testing.assert_frame_equal(
        out.drop(columns="customer"), notebook.drop(index=[7, 1500]).reset_index(drop=True)
    )


def test_a_local_cluster_when_no_scheduler_is_given_csv_in(frame, tmp_path, capsys):
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    code = main([
        "predict", MODEL, str(source), str(tmp_path / "out.csv"), "--engine", "dask",
        "--workers", "2", "--chunk-rows", "1000", "--id-column", "customer",
    ])  # fmt: skip
    assert code == 4
    assert "2,398 of 2,400 rows" in capsys.readouterr().out
    out = pd.concat(pd.read_csv(p) for p in sorted((tmp_path / "out.csv").glob("part-*.csv")))
    assert len(out) == 2398 and out["customer"].is_unique
    rejected = pd.concat(
        pd.read_csv(p) for p in sorted((tmp_path / "out.rejected.csv").glob("part-*.csv"))
    )
    assert rejected["row"].tolist() == [7, 1500]


def test_a_worker_killed_mid_run_is_retried_without_duplicates(cluster, frame, tmp_path):
    big = pd.concat([frame] * 10, ignore_index=True)  # 24,000 rows, 48 pieces
    big["customer"] = [f"k{i:06d}" for i in range(len(big))]
    source = tmp_path / "in.parquet"
    big.to_parquet(source, row_group_size=500)
    output = tmp_path / "out.parquet"
    with Client(cluster.scheduler_address) as client:
        pids = client.run(os.getpid)
    victim = next(iter(pids.values()))

    def kill_when_the_first_part_lands():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if output.is_dir() and any(output.glob("part-*.parquet")):
                os.kill(victim, signal.SIGKILL)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_when_the_first_part_lands)
    killer.start()
    result = nbmlops.predict(
        MODEL,
        source,
        output,
        id_column="customer",
        engine="dask",
        scheduler=cluster.scheduler_address,
        chunk_rows=500,
    )
    killer.join()
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)  # the worker really died
    out = read_parts(output)
    assert result.rows_in == 24000 and result.rows_scored + result.rows_rejected == 24000
    assert len(out) == result.rows_scored and out["customer"].is_unique
    assert len(list(output.glob("part-*.parquet"))) == 48
    assert not list(output.glob(".*.tmp"))
    expected_rejected = big.index[big["contract"] == "lifetime"].tolist()
    rejected = read_parts(tmp_path / "out.rejected.parquet")
    assert rejected["row"].tolist() == expected_rejected


def test_a_scheduler_that_does_not_answer_is_one_line(frame, tmp_path, capsys):
    frame.to_parquet(tmp_path / "in.parquet")
    code = main([
        "predict", MODEL, str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"),
        "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9",
    ])  # fmt: skip
    assert code == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err


def test_dask_keeps_zoned_datetimes_ordered_categories_and_nullable_integers(
    cluster, settings, tmp_path
):
    from sklearn.linear_model import LogisticRegression

    train = zoned_frame(400, 0)
    label = (zoned_features(train)["hour"] > 11).astype(int)
    model = LogisticRegression(max_iter=500).fit(zoned_features(train), label)
    nbmlops.package("visits", model, train, target=label, preprocess=[zoned_features])
    rows = zoned_frame(300, 1)
    rows.to_parquet(tmp_path / "in.parquet", row_group_size=100)
    rows.to_csv(tmp_path / "in.csv", index=False)
    expected = nbmlops.load("visits").predict(rows)
    for source in ("in.parquet", "in.csv"):
        result = nbmlops.predict(
            "visits",
            tmp_path / source,
            tmp_path / source.replace(".", "-"),
            engine="dask",
            scheduler=cluster.scheduler_address,
            chunk_rows=100,
        )
        assert result.rows_rejected == 0, result.reasons
        pd.testing.assert_frame_equal(read_parts(tmp_path / source.replace(".", "-")), expected)
