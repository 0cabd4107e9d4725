"""Runaway free text: a free-text field that degenerates into repetition stops well before its
bound (DRY sampling, runtime/models/sampling.py), and text_max_chars bounds each field."""

from __future__ import annotations

import lmpc
from lmpc.runtime.perform import cap_strings
from lmpc.runtime.prompt import TEXT_MAX_CHARS

QA = '''
model m = llama_cpp(builtin: "smollm2-135m", temperature: 0{extra})
signature QA {{
    """Answer the question."""
    question: str
    ->
    answer: str
}}
pipeline qa(question: str) -> (answer: str) {{
    c = chain_of_thought QA(question: question)
    return answer: c.answer
}}
'''
# SmolLM2-135M answers this with "I love to eat delicious food," repeated to the 1000-character bound.
LOOPING = "Describe your favourite day."


def answer_event(extra: str):
    prog = lmpc.compile_source(QA.format(extra=extra), cache=False, trace_log=False)
    try:
        r = prog.batch([{"question": LOOPING}])[0]
        assert r.ok, r.error
        return r.trace[0]
    finally:
        prog.close()


def test_a_looping_free_text_answer_stops_well_before_its_bound_with_dry():
    guarded = answer_event(", dry_multiplier: 0.8")
    assert len(guarded.parsed["answer"]) < 0.7 * TEXT_MAX_CHARS, guarded.raw
    off = answer_event("")  # the default: no DRY (it miscopies numbers, runtime/models/sampling.py): the bound
    assert len(off.parsed["answer"]) == TEXT_MAX_CHARS, off.raw
    assert guarded.completion_tokens < 0.8 * off.completion_tokens


def test_text_max_chars_bounds_every_free_text_field_not_enums():
    schema = {"type": "object", "properties": {
        "reasoning": {"type": "string", "maxLength": 400},
        "label": {"type": "string", "enum": ["a", "b"]},
        "notes": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 10},
        "reply": {"anyOf": [{"type": "string", "maxLength": 1000}, {"type": "null"}]}}}
    capped = cap_strings(schema, 150)["properties"]
    assert capped["reasoning"]["maxLength"] == 150 and capped["notes"]["items"]["maxLength"] == 150
    assert capped["reply"]["anyOf"][0]["maxLength"] == 150 and "maxLength" not in capped["label"]
    assert cap_strings(schema, None) is schema
    assert cap_strings(schema, 5000)["properties"]["reasoning"]["maxLength"] == 400


def test_text_max_chars_reaches_the_decoding_grammar():
    e = answer_event(", text_max_chars: 120")
    assert len(e.parsed["reasoning"]) <= 120 and len(e.parsed["answer"]) <= 120
