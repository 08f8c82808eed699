"""The OpenAPI document: FastAPI's own routes plus the scoring routes, typed from the schema."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi


def _record_schema(schema) -> dict:
    """JSON Schema of one input record, from schema.json (for /docs and API clients)."""
    properties = {}
    for column in schema.columns:
        if column.kind == "numeric":
            prop = {"type": "integer" if column.is_integer else "number"}
        elif column.kind == "boolean":
            prop = {"type": "boolean"}
        elif column.kind == "datetime":
            prop = {"type": "string", "format": "date-time"}
        else:
            prop = {"type": "string"}
            if column.categories is not None:
                prop["enum"] = list(column.categories)
        if column.nullable:
            prop = {"anyOf": [prop, {"type": "null"}]}
        properties[column.name] = prop
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def openapi_document(app: FastAPI, schema) -> dict:
    """FastAPI's OpenAPI document with the scoring routes, which FastAPI does not serve, added."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            description=app.description,
            routes=app.routes,
        )
        document["paths"].update(_scoring_paths(schema))
        app.openapi_schema = document
    return app.openapi_schema


def _scoring_paths(schema) -> dict:
    record = _record_schema(schema)
    records = {
        "type": "object",
        "properties": {"records": {"type": "array", "items": record, "minItems": 1}},
        "required": ["records"],
        "additionalProperties": False,
    }
    mlflow = _json_content(
        {
            "type": "object",
            "properties": {"dataframe_records": {"type": "array", "items": record, "minItems": 1}},
            "required": ["dataframe_records"],
        }
    )
    mlflow["text/csv"] = {"schema": {"type": "string"}}
    v2 = _post(
        "Open Inference Protocol: infer",
        "v2_infer",
        _json_content(
            {
                "type": "object",
                "properties": {"inputs": {"type": "array", "items": {"type": "object"}}},
                "required": ["inputs"],
            }
        ),
    )
    v2["post"]["parameters"] = [
        {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    feedback = {"type": "object", "properties": {"id": {"type": "string"}, "label": {}}}
    return {
        "/predict": _post("Score records", "predict", _json_content({"oneOf": [records, record]})),
        "/invocations": _post("MLflow scoring protocol", "invocations", mlflow),
        "/feedback": _post(
            "Ground truth for earlier predictions", "feedback", _json_content(feedback)
        ),
        "/v2/models/{model_name}/infer": v2,
    }


def _json_content(json_schema: dict) -> dict:
    return {"application/json": {"schema": json_schema}}


def _post(summary: str, operation_id: str, content: dict) -> dict:
    answer = {"application/json": {"schema": {"type": "object"}}}
    return {
        "post": {
            "summary": summary,
            "operationId": operation_id,
            "requestBody": {"required": True, "content": content},
            "responses": {
                "200": {"description": "Answered", "content": answer},
                "4XX": {
                    "description": "Not answered: the error, with each offending record and field",
                    "content": answer,
                },
            },
        }
    }
