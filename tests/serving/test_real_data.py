"""Exactly what the notebook predicted, for every caller, on the data users have.

A model whose raw frame has a naive datetime, an ordered Categorical read by its codes, a string
category, an int, a bool, a float with NaNs and a nullable Int64 is packaged from a real kernel
and served by a real uvicorn process; real clients (ours, MLflow's scoring client, tritonclient)
must get the notebook's own predictions, and hostile callers must hurt no one.
"""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import mlflow.models
import nbformat
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from nbclient import NotebookClient

from nbmlops.artifact.frames import to_records
from nbmlops.config import Settings
from nbmlops.jobs.notebooks import ensure_kernel
from nbmlops.predlog.log import PredictionLog
from nbmlops.serving.process import serve
from tests.real_data import CELLS
from tests.serving.test_openapi import assert_schemathesis_finds_no_server_error

NAME = "shop"
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """The store, and ``(X_test, notebook predictions)`` from the kernel that packaged it."""
    work = tmp_path_factory.mktemp("real-data")
    settings = Settings.from_env({"NBMLOPS_HOME": str(work / ".nbmlops")})
    expected_path = work / "expected.pkl"
    *definitions, training = CELLS
    cells = [
        "%load_ext nbmlops",
        *definitions,
        training.split("\nclf, X_train")[0],
        f"%%mlops_package {NAME} --model clf --data X_train --target y_train "
        "--preprocess featurize --eval X_test y_test\n"
        "clf, X_train, y_train, X_test, y_test = train()",
        "features = featurize(X_test)\n"
        "notebook = pd.DataFrame({'prediction': clf.predict(features)}, index=X_test.index)\n"
        "for i, label in enumerate(clf.classes_):\n"
        "    notebook[f'proba_{label}'] = clf.predict_proba(features)[:, i]\n"
        f"pd.to_pickle((X_test, notebook), {str(expected_path)!r})",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NBMLOPS_HOME", str(settings.home))
        patch.chdir(work)
        kernel = ensure_kernel(settings)
        NotebookClient(nb, kernel_name=kernel, timeout=300).execute()
    x_test, notebook = pd.read_pickle(expected_path)
    return settings, x_test, notebook


@pytest.fixture(scope="module")
def server(packaged):
    handle = serve(NAME, settings=packaged[0])
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def assert_same_predictions(notebook: pd.DataFrame, served: pd.DataFrame) -> None:
    """Labels identical, probabilities within the parity tolerance, on every row."""
    assert served["prediction"].tolist() == notebook["prediction"].tolist()
    for column in ("proba_0", "proba_1"):
        gap = np.abs(served[column].to_numpy(float) - notebook[column].to_numpy(float))
        assert gap.max() <= TOLERANCE, column


def test_the_schema_describes_the_frame_exactly(packaged):
    import nbmlops

    columns = {c.name: c for c in nbmlops.load(NAME, settings=packaged[0]).schema.columns}
    size = columns["size"]
    assert size.categories == ("small", "medium", "large") and size.ordered
    assert (columns["signup"].unit, columns["signup"].tz) == ("us", None)
    assert columns["visits"].dtype == "Int64" and columns["visits"].nullable
    assert columns["spend"].max_abs == pytest.approx(3.4028234663852886e38)  # trees: float32
    assert columns["city"].dtype == "str" and columns["city"].categories_dtype is None


def test_load_predicts_what_the_notebook_predicted(packaged):
    import nbmlops

    settings, x_test, notebook = packaged
    model = nbmlops.load(NAME, settings=settings)
    assert_same_predictions(notebook, model.predict(x_test))
    # a frame rebuilt from text (categories sorted, datetimes as strings) scores the same
    rebuilt = x_test.astype({"size": "str", "signup": "str"}).astype({"size": "category"})
    assert list(rebuilt["size"].cat.categories) != list(x_test["size"].cat.categories)
    assert_same_predictions(notebook, model.predict(rebuilt))


def test_http_predictions_equal_the_notebooks_on_every_test_row(packaged, server):
    _, x_test, notebook = packaged
    assert_same_predictions(notebook, server.predict(x_test))


def test_mlflow_scoring_client_gets_the_notebooks_predictions(packaged, server):
    _, x_test, notebook = packaged
    # MLflow's client cannot write pandas' NA (TypeError in its encoder): send the nullable
    # integers as floats, NaN for missing, as a user of that client has to
    sent = x_test.astype({"visits": "float64"})
    assert sent.isna().any().any()  # the client writes the missing values as bare NaN
    client = ScoringServerClient("127.0.0.1", server.port)
    client.wait_server_ready(timeout=30)
    answer = client.invoke(sent).get_predictions()
    assert_same_predictions(notebook, answer.reset_index(drop=True))
    body = mlflow.models.convert_input_example_to_serving_input(sent)
    assert "NaN" in body
    response = httpx.post(
        f"{server.url}/invocations", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert_same_predictions(notebook, pd.DataFrame(response.json()["predictions"]))


def test_tritonclient_gets_the_notebooks_predictions(packaged, server):
    import tritonclient.http as triton

    _, x_test, notebook = packaged
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(NAME)
    metadata = client.get_model_metadata(NAME)
    datatypes = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    arrays = {
        "signup": np.array([t.isoformat() for t in x_test["signup"]], dtype=object),
        "size": x_test["size"].astype(str).to_numpy(dtype=object),
        "city": x_test["city"].to_numpy(dtype=object),
        "age": x_test["age"].to_numpy(np.int64),
        "member": x_test["member"].to_numpy(bool),
        "spend": x_test["spend"].to_numpy(np.float64),
        "visits": x_test["visits"].to_numpy(np.float64, na_value=np.nan),  # NaN: missing
    }
    inputs = []
    for name, array in arrays.items():
        datatype = "FP64" if array.dtype == np.float64 else datatypes[name]
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=False)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("prediction", "proba")]
    result = client.infer(NAME, inputs, outputs=outputs)
    proba = result.as_numpy("proba")
    served = pd.DataFrame(
        {
            "prediction": result.as_numpy("prediction"),
            "proba_0": proba[:, 0],
            "proba_1": proba[:, 1],
        }
    )
    assert_same_predictions(notebook, served)


def test_schemathesis_finds_no_server_error(server):
    assert_schemathesis_finds_no_server_error(server.url)


#: Datetime spellings of one instant that a valid caller may use, each scored alone the same.
SPELLINGS = (
    lambda t: t.isoformat(),
    lambda t: t.isoformat(sep=" "),
    lambda t: t.isoformat(timespec="milliseconds"),
    lambda t: t.strftime("%Y-%m-%d %H:%M:%S.000000"),
)

#: What the hostile caller sends, in turn: every one must be a 4xx, and hurt no one.
HOSTILE = (
    lambda r: {**r, "signup": "2026-01-01T10:00:00+02:00"},
    lambda r: {**r, "signup": "2026-01-01 10:00:00Z"},
    lambda r: {**r, "signup": "31/12/2026"},
    lambda r: {**r, "spend": 1e300},
    lambda r: {**r, "size": "huge"},
    lambda r: {**r, "age": 30.5},
)


def test_one_hostile_caller_among_fifteen_hurts_no_one(packaged, server):
    settings, x_test, _ = packaged
    base = to_records(x_test.iloc[:15])
    valid = [
        {**record, "signup": SPELLINGS[i % len(SPELLINGS)](x_test["signup"].iloc[i])}
        for i, record in enumerate(base)
    ]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        alone = [http.post("/predict", json=r).json()["predictions"][0] for r in valid]
    before = _log_counts(settings)
    stop = time.monotonic() + 4.0
    results: dict[int, list] = {i: [] for i in range(16)}

    def caller(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            turn = 0
            while time.monotonic() < stop:
                if index == 15:
                    body = HOSTILE[turn % len(HOSTILE)](base[turn % 15])
                else:
                    body = valid[index]
                response = http.post("/predict", json={"records": [body]})
                results[index].append((response.status_code, response.json()))
                turn += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(15):
        assert results[index], index
        for status, answer in results[index]:
            assert status == 200, answer
            (got,) = answer["predictions"]
            assert got["prediction"] == alone[index]["prediction"]
            assert got["proba"] == pytest.approx(alone[index]["proba"], abs=TOLERANCE)
    hostile = results[15]
    assert hostile and all(400 <= status < 500 for status, _ in hostile), hostile[:3]
    assert all(answer["problems"] and answer["request_id"] for _, answer in hostile)
    after = _log_counts(settings)
    answered = sum(len(results[i]) for i in range(15))
    assert after["ok"] - before["ok"] == answered
    assert after["rejected"] - before["rejected"] == len(hostile)
    assert after["error"] == before["error"]


def _log_counts(settings: Settings) -> dict[str, int]:
    log = PredictionLog(settings.home / "predictions.db")
    try:
        return {s: log.count(NAME, s) for s in ("ok", "rejected", "error")}
    finally:
        log.close()


def test_every_error_answers_in_one_envelope(client):
    for response in (
        client.get("/nowhere"),
        client.get("/predict"),
        client.post("/predict", content=b"{"),
        client.get("/v2/models/other"),
        client.post("/v2/models/other/versions/9/infer", json={"inputs": []}),
    ):
        body = response.json()
        assert set(body) >= {"error", "problems", "request_id"}, body
        assert body["request_id"] == response.headers["x-request-id"]


def test_protocol_routes_that_real_clients_call(client):
    assert client.get("/v2").json()["name"] == "nbmlops"
    assert client.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    assert client.get(f"/v2/models/{NAME}/versions/1/ready").status_code == 200
    assert client.get(f"/v2/models/{NAME}/versions/2").status_code == 404
    assert client.get(f"/v2/models/{NAME}/versions/1").json()["name"] == NAME
    assert client.get("/ping").status_code == 200 and client.get("/health").status_code == 200
    assert client.get("/version").json()["model_version"] == "1"


def test_the_openapi_document_types_a_nullable_integer_as_an_integer(client):
    paths = client.get("/openapi.json").json()["paths"]
    record = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    visits = record["oneOf"][1]["properties"]["visits"]
    assert visits == {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def _raw(record: dict, field: str, literal: str, twice: bool = False) -> bytes:
    """``record`` as JSON text with ``field`` spelled ``literal`` (NaN, Infinity, ...)."""
    text = json.dumps({**record, field: "__raw__"}).replace('"__raw__"', literal)
    if twice:
        text = text[:-1] + f', "{field}": {literal}' + "}"
    return text.encode()


def _csv(record: dict, drop_last: bool = False, header_twice: bool = False) -> bytes:
    names = list(record)
    values = [
        ""
        if record[n] is None
        else str(record[n]).lower()
        if isinstance(record[n], bool)
        else str(record[n])
        for n in names
    ]
    if drop_last:
        values = values[:-1]
    if header_twice:
        names = [*names[:-1], names[0]]
    return (",".join(names) + "\n" + ",".join(values) + "\n").encode()


def _v2(record: dict, datatypes: dict, change: dict) -> dict:
    tensors = []
    for name, value in record.items():
        tensor = {"name": name, "shape": [1], "datatype": datatypes[name], "data": [value]}
        if name == "spend":
            tensor = {**tensor, "datatype": "FP64", "data": [0.0 if value is None else value]}
        tensors.append({**tensor, **change.get(name, {})})
    return {"inputs": tensors}


def hostile_cases(record: dict, datatypes: dict) -> list[tuple[str, str, str, dict]]:
    """``(what, method, route, request options)`` of each hostile or odd input tried."""
    predict = "/predict"

    def one(what, **changes):
        return (what, "POST", predict, {"json": {"records": [{**record, **changes}]}})

    def raw(what, field, literal, twice=False):
        return (what, "POST", predict, {"content": _raw(record, field, literal, twice)})

    feedback_cases = [
        ('feedback: `"yes"` for integer classes', "yes"),
        ("feedback: `[1, 2]` as a label", [1, 2]),
        ('feedback: `{"a": 1}` as a label', {"a": 1}),
        ("feedback: `1.5` for integer classes", 1.5),
    ]
    return [
        one(
            "datetime with an offset, for a column trained without one",
            signup="2026-01-01T10:00:00+02:00",
        ),
        one("datetime in UTC (`Z`), same column", signup="2026-01-01T10:00:00Z"),
        one("datetime spelled with a space", signup="2026-01-01 10:00:00"),
        one("datetime with milliseconds", signup="2026-01-01T10:00:00.000"),
        (
            "two records in one request, spelled with `T` and with a space",
            "POST",
            predict,
            {
                "json": {
                    "records": [
                        {**record, "signup": "2026-01-01T10:00:00"},
                        {**record, "signup": "2026-01-01 10:00:00.000"},
                    ]
                }
            },
        ),
        one("datetime far in the future", signup="9999-12-31T00:00:00"),
        one("a day that does not exist", signup="2026-02-30T10:00:00"),
        one("a date in another format", signup="31/12/2026"),
        one("an object for a datetime", signup={}),
        one("`1e300` for a float the trees read as float32", spend=1e300),
        raw("`Infinity`", "spend", "Infinity"),
        raw("`-Infinity`", "spend", "-Infinity"),
        raw("`1e400`", "spend", "1e400"),
        raw("`NaN` where training had missing values", "spend", "NaN"),
        raw("`NaN` where training had none", "age", "NaN"),
        one("a float for an integer column", age=30.5),
        one("a string for a number", age="30"),
        one("an integer beyond 64 bits", age=2**70),
        one("a fraction for a nullable integer", visits=2.5),
        one("a string for a boolean", member="yes"),
        one("a category never seen in training", size="huge"),
        one("a number for a string category", size=1),
        raw("a key given twice in a record", "age", "31", twice=True),
        ("an unknown field", "POST", predict, {"json": {**record, "planet": "mars"}}),
        (
            "a missing field",
            "POST",
            predict,
            {"json": {k: v for k, v in record.items() if k != "city"}},
        ),
        ("an empty body", "POST", predict, {"content": b""}),
        ("malformed JSON", "POST", predict, {"content": b'{"records": [{'}),
        ("no records", "POST", predict, {"json": {"records": []}}),
        (
            "MLflow `dataframe_split` with a bare `NaN`",
            "POST",
            "/invocations",
            {
                "content": json.dumps(
                    {
                        "dataframe_split": {
                            "columns": list(record),
                            "data": [[v if v is not None else "__nan__" for v in record.values()]],
                        }
                    }
                )
                .replace('"__nan__"', "NaN")
                .encode(),
                "headers": {"Content-Type": "application/json"},
            },
        ),
        (
            "CSV row one value short",
            "POST",
            "/invocations",
            {"content": _csv(record, drop_last=True), "headers": {"Content-Type": "text/csv"}},
        ),
        (
            "CSV header naming a column twice",
            "POST",
            "/invocations",
            {"content": _csv(record, header_twice=True), "headers": {"Content-Type": "text/csv"}},
        ),
        (
            "V2 tensor of shape [3] with 1 value",
            "POST",
            f"/v2/models/{NAME}/infer",
            {"json": _v2(record, datatypes, {"age": {"shape": [3]}})},
        ),
        (
            "V2 tensor declared BYTES carrying a number",
            "POST",
            f"/v2/models/{NAME}/infer",
            {"json": _v2(record, datatypes, {"age": {"datatype": "BYTES"}})},
        ),
        (
            "V2 tensor of an unknown datatype",
            "POST",
            f"/v2/models/{NAME}/infer",
            {"json": _v2(record, datatypes, {"age": {"datatype": "COMPLEX"}})},
        ),
        *[(what, "POST", "/feedback", {"feedback_label": label}) for what, label in feedback_cases],
        (
            "feedback for an unknown id",
            "POST",
            "/feedback",
            {"json": {"id": "no-such-id", "label": 1}},
        ),
        ("`GET` on a scoring route", "GET", predict, {}),
        ("an unknown route", "GET", "/nowhere", {}),
        (
            "an unsupported Content-Type",
            "POST",
            "/invocations",
            {"content": b"x", "headers": {"Content-Type": "application/xml"}},
        ),
    ]


def hostile_table(client: httpx.Client, record: dict) -> str:
    """The README's table: each input, its route, the status and the answer, as served."""
    datatypes = {
        i["name"]: i["datatype"] for i in client.get(f"/v2/models/{NAME}").json()["inputs"]
    }
    prediction_id = client.post("/predict", json=record).json()["predictions"][0]["id"]
    lines = ["| input | route | status | answer |", "|---|---|---|---|"]
    for what, method, route, options in hostile_cases(record, datatypes):
        if "feedback_label" in options:
            options = {"json": {"id": prediction_id, "label": options["feedback_label"]}}
        response = client.request(method, route, **options)
        body = response.json()
        if response.status_code == 200:
            shown = "scored" if "predictions" in body or "outputs" in body else "accepted"
        else:
            first = body["problems"][0] if body["problems"] else None
            shown = (
                body["error"]
                if first is None
                else (
                    f"`{first['field']}`: {first['message']}"
                    if first["field"]
                    else first["message"]
                )
            )
        shown = shown.replace(prediction_id, "<id>").replace("|", "\\|")
        lines.append(f"| {what} | `{method} {route}` | {response.status_code} | {shown} |")
    return "\n".join(lines) + "\n"


TABLE_START, TABLE_END = "<!-- hostile-inputs:start -->\n", "<!-- hostile-inputs:end -->"


def test_the_readme_table_of_hostile_inputs_is_what_the_server_answers(packaged, client, repo_root):
    _, x_test, _ = packaged
    table = hostile_table(client, to_records(x_test.iloc[:1])[0])
    statuses = [line.split(" | ")[2] for line in table.splitlines()[2:]]
    assert "500" not in statuses and all(
        s in ("200", "400", "404", "405", "415", "422") for s in statuses
    ), statuses
    readme = repo_root / "README.md"
    text = readme.read_text()
    head, rest = text.split(TABLE_START)
    _, tail = rest.split(TABLE_END)
    if os.environ.get("NBMLOPS_WRITE_DOCS"):
        readme.write_text(head + TABLE_START + table + TABLE_END + tail)
        rest = table + TABLE_END
    assert rest.split(TABLE_END)[0] == table, (
        "README.md's table of hostile inputs differs from what the server answers; "
        "refresh it: NBMLOPS_WRITE_DOCS=1 pytest tests/serving/test_real_data.py -k readme"
    )
