"""`lmpc serve`'s request and response models come from the pipeline's types: nested objects,
lists, enums and optional fields validate as lmpc's own JSON Schemas do (strictly), and the
OpenAPI document describes them. No model is loaded (nothing is run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

import lmpc
from lmpc.runtime.values import validation_error
from lmpc.serve_app import build_app, pipeline_models
from lmpc.serve_gather import Gatherer, Metrics, percentiles

ROOT = Path(__file__).resolve().parents[2]

TICKET = {"subject": "Login fails", "body": "Since today I cannot log in.",
          "customer": {"name": "Ada", "tier": "pro"}, "attachments": ["shot.png"]}


@pytest.fixture(scope="module")
def triage():
    prog = lmpc.compile_file(ROOT / "examples" / "triage" / "triage.lmp", cache=False, trace_log=False)
    yield prog
    prog.close()


def test_nested_inputs_validate_like_lmpcs_schemas(triage):
    inputs, outputs = pipeline_models(triage)
    ok = inputs.model_validate({"ticket": TICKET})
    row = ok.model_dump(by_alias=True)
    assert row["known_issue"] is None  # an optional input left out is null, as the runtime gives it
    for name, field in triage.input_fields.items():
        assert validation_error(row[name], field["schema"]) is None, name
    bad = [
        ({"ticket": {**TICKET, "customer": {"name": "Ada", "tier": "gold"}}}, ("ticket", "customer", "tier")),
        ({"ticket": {**TICKET, "attachments": "shot.png"}}, ("ticket", "attachments")),
        ({"ticket": {**TICKET, "attachments": [3]}}, ("ticket", "attachments", 0)),
        ({"ticket": {**TICKET, "extra": 1}}, ("ticket", "extra")),
        ({"ticket": {k: v for k, v in TICKET.items() if k != "body"}}, ("ticket", "body")),
        ({"ticket": TICKET, "known_issue": 7}, ("known_issue",)),
    ]
    for value, loc in bad:
        with pytest.raises(ValidationError) as e:
            inputs.model_validate(value)
        assert any(err["loc"] == loc for err in e.value.errors()), (loc, e.value.errors())
        # and lmpc's own validation refuses it too
        assert any(validation_error(value.get(n), f["schema"]) for n, f in triage.input_fields.items() if n in value)
    assert set(outputs.model_json_schema(by_alias=True)["properties"]) == set(triage.output_fields)


def test_field_names_that_python_models_reserve_are_kept():
    prog = lmpc.compile_source('''
        signature S = json: str, copy: int -> schema: str
        pipeline p(json: str, copy: int) -> (schema: str) {
            s = predict S(json: json, copy: copy)
            return schema: s.schema
        }''', cache=False, trace_log=False)
    inputs, outputs = pipeline_models(prog)
    row = inputs.model_validate({"json": "x", "copy": 2}).model_dump(by_alias=True)
    assert row == {"json": "x", "copy": 2}
    assert list(outputs.model_json_schema(by_alias=True)["properties"]) == ["schema"]
    prog.close()


def test_the_openapi_document_describes_the_pipeline(triage):
    metrics = Metrics(triage)
    api = build_app(triage, Gatherer(triage, metrics), metrics, state={}).openapi()
    schemas = api["components"]["schemas"]
    ticket = schemas["TriageInputs"]["properties"]["ticket"]
    nested = schemas[ticket["$ref"].rsplit("/", 1)[1]]
    assert set(nested["properties"]) == {"subject", "body", "customer", "attachments"}
    assert nested["properties"]["attachments"] == {"items": {"type": "string"}, "type": "array", "title": "attachments"}
    assert schemas["TriageOutputs"]["properties"]["priority"]["enum"] == ["low", "normal", "high", "urgent"]
    assert set(api["paths"]) == {"/run", "/batch", "/health", "/metrics"}
    assert "triage(ticket: Ticket, known_issue: str?)" in api["info"]["description"]


def test_percentiles_are_nearest_rank():
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}
    assert percentiles([float(i) for i in range(1, 101)]) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([3.0]) == {"p50": 3.0, "p95": 3.0, "p99": 3.0}
