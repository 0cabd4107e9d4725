"""Field order is decoding order: the grammar cache must not merge schemas that differ only
in the order of their properties (it keyed on json.dumps(..., sort_keys=True) before)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmpc.runtime.models import GenerationRequest, create_model, default_model_options

AB = {"type": "object", "properties": {"first": {"type": "string", "enum": ["x"]},
                                       "second": {"type": "string", "enum": ["y"]}},
      "required": ["first", "second"]}
BA = {"type": "object", "properties": {"second": {"type": "string", "enum": ["y"]},
                                       "first": {"type": "string", "enum": ["x"]}},
      "required": ["first", "second"]}  # the same list: only the properties' order differs


@pytest.fixture(scope="module")
def model(smollm2_path: Path):
    m = create_model("m", "llama_cpp", default_model_options())
    yield m
    m.close()


def _grammar(model, schema: dict):
    return model._submit(lambda: (model._load(), model._grammar(schema))[1])


def test_schemas_in_different_order_get_different_grammars(model):
    ab, ba = _grammar(model, AB), _grammar(model, BA)
    assert ab is not ba
    assert _grammar(model, json.loads(json.dumps(AB))) is ab  # equal schemas still share one
    for grammar, order in ((ab, ("first", "second")), (ba, ("second", "first"))):
        # the object rule names the key-value rules in decoding order (rules are listed sorted)
        obj = next(line for line in grammar._grammar.splitlines() if "first-kv" in line and "second-kv" in line)
        assert obj.index(f"{order[0]}-kv") < obj.index(f"{order[1]}-kv"), grammar._grammar


def test_each_answer_follows_its_schemas_order(model):
    def ask(schema: dict) -> str:
        return model.generate(GenerationRequest(
            messages=[{"role": "user", "content": "Fill in the JSON object."}],
            json_schema=schema, max_tokens=24)).text

    assert list(json.loads(ask(AB))) == ["first", "second"]
    assert list(json.loads(ask(BA))) == ["second", "first"]
