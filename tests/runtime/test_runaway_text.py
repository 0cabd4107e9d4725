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
    guarded = answer_event("")  # the default: DRY 0.8, scoped to the field
    assert len(guarded.parsed["answer"]) < 0.7 * TEXT_MAX_CHARS, guarded.raw
    off = answer_event(", dry_multiplier: 0")  # without DRY: the bound
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


def dry_logit_after(llm, chain, history: bytes, candidate: bytes) -> float:
    """The logit DRY leaves to `candidate` (all logits 0 before) after `history` was generated."""
    import ctypes

    import llama_cpp

    for t in llm.tokenize(history, add_bos=False, special=False):
        chain.accept(t)
        chain.after(t)  # what sampling does after each sampled token
    n = llama_cpp.llama_vocab_n_tokens(llm._model.vocab)
    data = (llama_cpp.llama_token_data * n)(*[llama_cpp.llama_token_data(i, 0.0, 0.0) for i in range(n)])
    arr = llama_cpp.llama_token_data_array(data, n, -1, False)
    llama_cpp.llama_sampler_apply(llama_cpp.llama_sampler_chain_get(chain.sampler, chain.dry_index), ctypes.byref(arr))
    (tok,) = llm.tokenize(candidate, add_bos=False, special=False)
    return data[tok].logit


def test_dry_penalizes_a_repeat_inside_one_string_not_a_value_copied_from_another_field(smollm2_path):
    """The agent example's thought "Compute 829 + 306." and its action's expression "829 + 30..."
    (SmolLM2 writes a digit a token): the next `6` repeats the thought, and a call-wide DRY
    history penalized it (the expression came out "829 + 309"). The history restarts at each
    `"`, so a copy from another field is free while a loop inside one string is not."""
    from lmpc.runtime.models import create_model, sampling

    model = create_model("m", "llama_cpp", {"path": str(smollm2_path)})
    try:
        llm = model._submit(model._load)
        copy = b'{"thought": "Compute 829 + 306.", "expression": "829 + 30'
        scoped = sampling.new_chain(llm._model, None, 0, 0, sampling.DRY_SUGGESTED)
        assert dry_logit_after(llm, scoped, copy, b"6") == 0.0
        loop = b'{"answer": "I love to eat food. I love to eat food. I love to eat'
        looping = sampling.new_chain(llm._model, None, 0, 0, sampling.DRY_SUGGESTED)
        assert dry_logit_after(llm, looping, loop, b" food") < -1.0
        # without the restart (the history of the whole call), the copied digit was penalized
        unscoped = sampling.new_chain(llm._model, None, 0, 0, sampling.DRY_SUGGESTED)
        unscoped.after = lambda token: None
        assert dry_logit_after(llm, unscoped, copy, b"6") < -1.0
    finally:
        model.close()
