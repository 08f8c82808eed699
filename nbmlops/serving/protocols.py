"""The wire formats: nbmlops' records, MLflow's scoring protocol, CSV, Open Inference (V2)."""

from __future__ import annotations

import csv
import io
from collections import Counter

from nbmlops import jsoncodec
from nbmlops.artifact.validation import Problem
from nbmlops.serving.config import ServerConfig
from nbmlops.serving.responses import HTTPProblem
from nbmlops.serving.service import Service


def parse_json(body: bytes):
    if not body.strip():
        raise HTTPProblem(400, "empty body: send a JSON object")
    try:
        return jsoncodec.loads(body)
    except jsoncodec.DecodeError as exc:
        raise HTTPProblem(400, f"malformed JSON: {exc}") from None


def native_records(payload) -> list:
    """``{"records": [...]}``, a bare list of records, or one record as an object."""
    if isinstance(payload, dict):
        if "records" not in payload:
            return [payload]
        _check_envelope(payload, "the request")
        return payload["records"]
    if isinstance(payload, list):
        return payload
    raise HTTPProblem(
        400, 'expected {"records": [{column: value, ...}]} or one record as a JSON object'
    )


def mlflow_records(payload) -> list:
    """Records from MLflow's scoring formats: dataframe_split, dataframe_records, instances,
    inputs."""
    if not isinstance(payload, dict):
        raise HTTPProblem(
            400,
            "expected a JSON object with one of dataframe_split, dataframe_records, "
            "instances or inputs",
        )
    _check_envelope(payload, "the request")
    keys = [
        k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in payload
    ]
    if len(keys) != 1:
        raise HTTPProblem(
            400,
            "send exactly one of dataframe_split, dataframe_records, instances or inputs"
            + (f" (got {', '.join(keys)})" if keys else ""),
        )
    data = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("columns"), list)
            or not isinstance(data.get("data"), list)
        ):
            raise HTTPProblem(
                400, "dataframe_split needs 'columns' (a list) and 'data' (a list of rows)"
            )
        _check_envelope(data, "dataframe_split")
        columns = data["columns"]
        _check_unique_columns(columns, "dataframe_split's columns")
        records = []
        for index, row in enumerate(data["data"]):
            if not isinstance(row, list) or len(row) != len(columns):
                raise HTTPProblem(
                    422,
                    "invalid input: nothing was predicted",
                    [
                        Problem(
                            index,
                            None,
                            f"row has {len(row) if isinstance(row, list) else 'no'} "
                            f"values; columns has {len(columns)}",
                        )
                    ],
                )
            records.append(dict(zip(map(str, columns), row, strict=True)))
        return records
    if isinstance(data, dict):
        _check_envelope(data, keys[0])
        lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise HTTPProblem(400, f"{keys[0]} as an object needs equal-length lists per column")
        return [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    return data


def mlflow_row(answer: dict) -> dict:
    row = {"prediction": answer["prediction"]}
    for label, p in answer.get("proba", {}).items():
        row[f"proba_{label}"] = p
    return row


def csv_records(body: bytes, schema) -> list:
    """Records from a CSV body with a header row; a row of another width is refused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPProblem(400, "CSV body is not UTF-8 text") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as exc:
        raise HTTPProblem(400, f"malformed CSV: {exc}") from None
    if len(rows) < 2:
        raise HTTPProblem(400, "CSV body needs a header row and at least one row of values")
    header, rows = rows[0], rows[1:]
    _check_unique_columns(header, "the CSV header")
    by_name = {c.name: c for c in schema.columns}
    kinds = [by_name.get(name) for name in header]
    records, problems = [], []
    for index, row in enumerate(rows):
        if len(row) != len(header):
            message = f"row has {len(row)} values; the header has {len(header)}"
            problems.append(Problem(index, None, message))
            continue
        records.append(
            {
                name: _csv_value(raw, column)
                for name, raw, column in zip(header, row, kinds, strict=True)
            }
        )
    if problems:
        raise HTTPProblem(422, "invalid input: nothing was predicted", problems[:50])
    return records


def _check_envelope(payload: dict, where: str) -> None:
    """Refuse a request object that gave a key twice (JSON would keep the last silently)."""
    repeated = jsoncodec.duplicates(payload)
    if repeated:
        problems = [Problem(None, k, f"{where} gives this key more than once") for k in repeated]
        raise HTTPProblem(422, "invalid request: nothing was predicted", problems)


def _check_unique_columns(columns: list, where: str) -> None:
    repeated = sorted(str(c) for c, n in Counter(columns).items() if n > 1)
    if repeated:
        problems = [Problem(None, c, f"{where} names this column more than once") for c in repeated]
        raise HTTPProblem(422, "invalid input: nothing was predicted", problems)


def _csv_value(raw, column):
    if raw is None or raw == "":
        return None
    if column is None:
        return raw
    if column.kind == "numeric":
        try:
            number = float(raw)
        except ValueError:
            return raw
        return int(number) if column.is_integer and number.is_integer() else number
    if column.kind == "boolean":
        lowered = raw.strip().lower()
        return {"true": True, "false": False, "1": True, "0": False}.get(lowered, raw)
    return raw


def feedback_items(payload) -> list[tuple[str, object]]:
    entries = (
        payload.get("feedback")
        if isinstance(payload, dict) and "feedback" in payload
        else [payload]
    )
    if not isinstance(entries, list) or not entries:
        raise HTTPProblem(400, 'send {"id": ID, "label": Y} or {"feedback": [...]}')
    items, problems = [], []
    for index, entry in enumerate(entries):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("id"), str)
            or "label" not in entry
        ):
            problems.append(Problem(index, None, "each feedback needs a string 'id' and a 'label'"))
            continue
        items.append((entry["id"], entry["label"]))
    if problems:
        raise HTTPProblem(422, "invalid feedback: nothing was recorded", problems)
    return items


_V2_TYPES = {
    "numeric": "FP64",
    "boolean": "BOOL",
    "categorical": "BYTES",
    "text": "BYTES",
    "datetime": "BYTES",
}


def _v2_datatype(column) -> str:
    if column.is_integer:
        return "INT64"
    return _V2_TYPES.get(column.kind, "BYTES")


def _v2_prediction_datatype(classes) -> str:
    """INT64, BOOL or BYTES after the classes' type; FP64 for a regressor."""
    if not classes:
        return "FP64"
    if all(isinstance(c, bool) for c in classes):
        return "BOOL"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    return "BYTES"


def check_v2_name(
    model_name: str, model_version: str | None, config: ServerConfig, version: str
) -> None:
    """A 404 unless the path names this server's model (and ``version``, the one answering)."""
    if model_name != config.name:
        raise HTTPProblem(
            404, f"model {model_name!r} is not served here; this server serves {config.name!r}"
        )
    if model_version is not None and model_version != version:
        raise HTTPProblem(
            404,
            f"version {model_version!r} of {config.name!r} is not served here; this server "
            f"serves version {version}",
        )


def v2_metadata(config: ServerConfig, service: Service) -> dict:
    outputs = [
        {
            "name": "prediction",
            "datatype": _v2_prediction_datatype(service.classes),
            "shape": [-1],
        }
    ]
    if service.classes:
        outputs.append({"name": "proba", "datatype": "FP64", "shape": [-1, len(service.classes)]})
    return {
        "name": config.name,
        "versions": [service.version],
        "platform": "nbmlops",
        "inputs": [
            {"name": c.name, "datatype": _v2_datatype(c), "shape": [-1]}
            for c in service.schema.columns
        ],
        "outputs": outputs,
    }


#: What the data of a V2 tensor may hold, per datatype (a bool is no number here).
_V2_DATA = {
    "BOOL": ("true or false", lambda v: isinstance(v, bool)),
    "BYTES": ("strings", lambda v: isinstance(v, str)),
    "FP": (
        "numbers",
        lambda v: isinstance(v, (int, float, jsoncodec.NonFinite)) and not isinstance(v, bool),
    ),
    "INT": ("integers", lambda v: isinstance(v, int) and not isinstance(v, bool)),
}


def v2_records(payload, schema) -> list:
    """Records from a V2 inference request: one named tensor per column, of shape [n] or
    [n, 1], whose data match its declared datatype (null stands for a missing value)."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise HTTPProblem(400, "an inference request needs 'inputs': a list of named tensors")
    _check_envelope(payload, "the request")
    columns: dict[str, list] = {}
    problems: list[Problem] = []
    for index, tensor in enumerate(inputs):
        problem = _v2_tensor_problem(index, tensor)
        if problem is None and tensor["name"] in columns:
            problem = Problem(None, tensor["name"], "two input tensors have this name")
        if problem is not None:
            problems.append(problem)
            continue
        columns[tensor["name"]] = tensor["data"]
    if problems:
        raise HTTPProblem(422, "invalid input: nothing was predicted", problems)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        shown = ", ".join(f"{k}: {len(v)}" for k, v in columns.items())
        raise HTTPProblem(
            422,
            "invalid input: nothing was predicted",
            [Problem(None, None, f"every input tensor needs the same length; got {shown}")],
        )
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _v2_tensor_problem(index: int, tensor) -> Problem | None:
    """What is wrong with one input tensor, or None."""
    if (
        not isinstance(tensor, dict)
        or not isinstance(tensor.get("name"), str)
        or not isinstance(tensor.get("data"), list)
    ):
        return Problem(None, None, f"inputs[{index}] needs a 'name' and a 'data' list")
    name, data, shape = tensor["name"], tensor["data"], tensor.get("shape")
    repeated = jsoncodec.duplicates(tensor)
    if repeated:
        return Problem(None, name, f"the tensor gives {', '.join(repeated)} more than once")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(type(d) is int and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        return Problem(None, name, f"shape must be [n] or [n, 1], got {shape!r}")
    if shape[0] != len(data):
        return Problem(None, name, f"shape {shape} says {shape[0]} values; data has {len(data)}")
    datatype = tensor.get("datatype")
    family = datatype[:-2] if isinstance(datatype, str) and datatype[-2:].isdigit() else datatype
    if family not in _V2_DATA:
        return Problem(None, name, f"unknown datatype {datatype!r}: use BOOL, BYTES, INT64 or FP64")
    wanted, fits = _V2_DATA[family]
    for row, value in enumerate(data):
        if value is not None and not fits(value):
            return Problem(row, name, f"datatype {datatype} holds {wanted}; got {value!r}")
    return None


def v2_response(config: ServerConfig, service: Service, answers: list[dict], payload) -> dict:
    predictions = [a["prediction"] for a in answers]
    outputs = [
        {
            "name": "prediction",
            "shape": [len(predictions)],
            "datatype": _v2_prediction_datatype(service.classes),
            "data": predictions,
        }
    ]
    if service.classes:
        labels = [str(c) for c in service.classes]
        flat = [a["proba"][label] for a in answers for label in labels]
        outputs.append(
            {
                "name": "proba",
                "shape": [len(answers), len(labels)],
                "datatype": "FP64",
                "data": flat,
            }
        )
    response = {
        "model_name": config.name,
        "model_version": service.version,
        "outputs": outputs,
        "parameters": {"ids": [a["id"] for a in answers]},
    }
    if isinstance(payload, dict) and isinstance(payload.get("id"), str):
        response["id"] = payload["id"]
    return response
