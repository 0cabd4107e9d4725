"""Decoding bounds: every free-text string and list closes, so output is always complete JSON."""

from __future__ import annotations

from pathlib import Path

import lmpc
from lmpc.runtime.prompt import (
    ITEM_MAX_CHARS, LIST_MAX_ITEMS, REASONING_MAX_CHARS, TEXT_MAX_CHARS, decoding_budget, decoding_schema,
    output_schema,
)

ROOT = Path(__file__).resolve().parents[2]


def _node(kind: str, outputs: dict) -> dict:
    return {"kind": kind, "outputs": {n: {"schema": s, "type": "x"} for n, s in outputs.items()}}


def test_decoding_schema_bounds_text_and_lists_but_validation_does_not():
    # a lowered chain_of_thought node: lowering put `reasoning` first (compiler/kinds/chain_of_thought.py)
    node = _node("chain_of_thought", {
        "reasoning": {"type": "string"},
        "label": {"type": "string", "enum": ["a", "b"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "reply": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "who": {"type": "object", "properties": {"name": {"type": "string"}}},
    })
    dec = decoding_schema(node)["properties"]
    assert list(dec) == ["reasoning", "label", "reasons", "reply", "who"]  # free text first
    assert dec["reasoning"]["maxLength"] == REASONING_MAX_CHARS
    assert "maxLength" not in dec["label"]
    assert dec["reasons"]["maxItems"] == LIST_MAX_ITEMS and dec["reasons"]["items"]["maxLength"] == ITEM_MAX_CHARS
    assert dec["reply"]["anyOf"][0]["maxLength"] == TEXT_MAX_CHARS
    assert dec["who"]["properties"]["name"]["maxLength"] == ITEM_MAX_CHARS
    plain = output_schema(node)["properties"]
    assert "maxLength" not in plain["reasoning"] and "maxItems" not in plain["reasons"]


def test_budget_covers_the_longest_bounded_output():
    schema = {"type": "object", "properties": {
        "n": {"type": "integer"},
        "tags": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 10}}}}
    assert decoding_budget(schema) >= 24 + 3 * 10
    assert decoding_budget({"type": "string", "enum": ["positive", "negative"]}) == len('"positive"') + 2


def test_a_list_output_that_used_to_loop_now_closes_on_the_real_model(tmp_path):
    # SmolLM2 repeats "1.1.1..." inside `reasons` for this ticket; unbounded, the JSON never closed.
    prog = lmpc.compile_file(ROOT / "examples" / "triage" / "triage.lmp", cache=False, trace_log=False)
    ticket = {"subject": "Cannot log in", "body": "Since the update I get an error 500 when I log in.",
              "customer": {"name": "Ada", "tier": "pro", "account_id": None}, "attachments": ["screenshot.png"]}
    r = prog(ticket=ticket)
    pri = next(e for e in r.trace if e.step == "pri")
    assert len(pri.parsed["reasons"]) <= LIST_MAX_ITEMS
    assert all(len(x) <= ITEM_MAX_CHARS for x in pri.parsed["reasons"])
    assert r.category in ("bug", "billing", "account", "feature_request", "other") and r.queue
    prog.close()
