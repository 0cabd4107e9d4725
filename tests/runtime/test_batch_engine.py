"""The batched local engine (`engine: "batched"`, runtime/models/batch_engine.py) on the real
SmolLM2: well-formed outputs under each call's own grammar, byte-identical outputs whatever
the batch and the order, slots freed early for queued calls, many threads on one program."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest

import lmpc
from lmpc.runtime.errors import ModelConfigError, ModelNotFoundError
from lmpc.runtime.models import GenerationRequest, create_model

LABEL = {"type": "object", "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}},
         "required": ["label"]}
FREE = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 200}}, "required": ["answer"]}
COUNT = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}
CALLS = [  # (question, schema): three grammars, short and long answers
    ("Say hello.", FREE), ("I love this phone!", LABEL), ("How many legs does a cat have?", COUNT),
    ("Describe the sea.", FREE), ("This is awful.", LABEL), ("Name a fruit.", FREE),
    ("How many days are in a week?", COUNT),
]


def ask(text: str, schema: dict, max_tokens: int = 60) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "system", "content": "Answer briefly in JSON."},
                                       {"role": "user", "content": text}], json_schema=schema, max_tokens=max_tokens)


@pytest.fixture(scope="module", params=[True, "grid"], ids=["probed", "grid"])
def batched(request, smollm2_path):
    """The engine as declared (reproducible: true: the layout-free path when the probe measures
    the model layout-exact here) and on the fixed grid: the guarantees hold on both."""
    model = create_model("b", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 3,
                                            "reproducible": request.param})
    yield model
    model.close()


def concurrently(model, calls, workers: int = 8) -> list[str]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: model.generate(ask(*c)).text, calls))


def test_options_are_checked():
    with pytest.raises(ModelConfigError, match="engine is one of single, batched"):
        create_model("m", "llama_cpp", {"builtin": "smollm2-135m", "engine": "fast"})
    with pytest.raises(ModelConfigError, match="slots"):
        create_model("m", "llama_cpp", {"builtin": "smollm2-135m", "engine": "batched", "slots": 0})
    m = create_model("m", "llama_cpp", {"builtin": "smollm2-135m", "engine": "batched"})
    assert m.supports_concurrency and m.identity.endswith(":batched")


def test_a_model_that_does_not_load_is_an_error_for_each_call_not_a_hang(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    model = create_model("bad", "llama_cpp", {"path": str(bad), "engine": "batched"})
    errors: list[BaseException] = []

    def call() -> None:
        try:
            model.generate(ask("hi", LABEL))
        except Exception as e:  # noqa: BLE001 - what the caller gets
            errors.append(e)

    for _ in range(2):  # the owner thread survives the first failure
        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(60)
    assert len(errors) == 2 and all(isinstance(e, ModelNotFoundError) for e in errors), errors
    model.close()


def test_outputs_are_well_formed_and_do_not_depend_on_batch_or_order(batched, smollm2_path):
    alone = [batched.generate(ask(*c)).text for c in CALLS]  # one at a time
    for (_, schema), text in zip(CALLS, alone):
        jsonschema.validate(json.loads(text), schema)
    assert concurrently(batched, CALLS) == alone  # decoded together, 3 at a time
    assert concurrently(batched, CALLS[::-1])[::-1] == alone  # other neighbours, other order
    engine = batched._submit(lambda: batched._w.engines[None])
    assert engine.widest == 3  # they really shared steps
    # another engine with another number of slots (other matrix shapes): the same bytes
    other = create_model("b2", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 2})
    try:
        assert concurrently(other, CALLS) == alone
    finally:
        other.close()


def test_decoding_rows_share_a_llama_decode_only_on_the_layout_free_path(batched, smollm2_path):
    concurrently(batched, CALLS)
    engine = batched._submit(lambda: batched._w.engines[None])
    # the grid decodes one row per llama_decode; a layout-exact model (measured) or
    # reproducible: false decodes every generating row in one
    assert engine.exact == (batched.layout == "auto" and engine.probe.exact)
    assert engine.widest == 3 and engine.widest_decode == (3 if engine.exact else 1)
    free = create_model("f", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 3,
                                           "reproducible": False})
    try:
        for (_, schema), text in zip(CALLS, concurrently(free, CALLS)):
            jsonschema.validate(json.loads(text), schema)
        engine = free._submit(lambda: free._w.engines[None])
        assert engine.exact and engine.widest_decode == 3
    finally:
        free.close()


def test_a_call_that_finishes_early_frees_its_slot_for_a_queued_call(smollm2_path):
    model = create_model("one", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 2})
    done: dict[str, float] = {}

    def call(name: str, text: str, schema: dict, max_tokens: int) -> None:
        model.generate(ask(text, schema, max_tokens))
        done[name] = time.perf_counter()

    try:
        model.generate(ask("Hi.", LABEL))  # load first: the three calls below queue together
        threads = [threading.Thread(target=call, args=a) for a in (
            ("long", "Describe the sea in great detail.", {**FREE, "properties": {"answer": {
                "type": "string", "minLength": 150, "maxLength": 400}}}, 120),
            ("short", "I love it!", LABEL, 20), ("queued", "This is awful.", LABEL, 20))]
        for t in threads:
            t.start()
            time.sleep(0.3)
        for t in threads:
            t.join()
        engine = model._submit(lambda: model._w.engines[None])
        assert engine.widest == 2  # never more sequences than slots
        # the queued call got the short one's slot and finished while the long one decoded
        assert done["short"] < done["queued"] < done["long"], done
    finally:
        model.close()


PROGRAM = '''
model m = llama_cpp(builtin: "smollm2-135m", temperature: 0, engine: "batched", slots: 3)
signature Sentiment = text -> label: "positive" | "negative"
pipeline classify(text: str) -> (label: "positive" | "negative") {
    s = predict Sentiment(text: text)
    return label: s.label
}
'''


def test_many_threads_calling_one_program_never_crash_and_agree():
    prog = lmpc.compile_source(PROGRAM, cache=False, trace_log=False)
    rows = [{"text": t} for t in ("great", "awful", "fine", "bad", "lovely", "poor", "nice", "sad")]
    try:
        first = [r.label for r in prog.batch(rows)]
        results: list[list[str]] = []

        def run() -> None:
            results.append([r.label for r in prog.batch(rows)])

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 3 and all(r == first for r in results)
    finally:
        prog.close()


def test_a_shared_prompt_prefix_is_copied_between_slots_and_changes_nothing(smollm2_path):
    system = "Classify the sentiment. " + " ".join(f"Rule {i}: weigh praise against complaints." for i in range(12))
    texts = ["I love it!", "This is awful.", "Not bad at all."]

    def req(text: str) -> GenerationRequest:
        return GenerationRequest(messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
                                 json_schema=LABEL, max_tokens=20)

    shared = create_model("s3", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 3})
    single = create_model("s1", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 1})
    try:
        with ThreadPoolExecutor(3) as pool:
            together = list(pool.map(lambda t: shared.generate(req(t)), texts))
        engine = shared._submit(lambda: shared._w.engines[None])
        prompt = together[0].prompt_tokens
        assert prompt > 120 and engine.widest >= 2
        # the first call evaluates the prefix; the others copy it (at most a chunk and their own text again)
        assert engine.prompt_tokens_copied >= 2 * 112, (engine.prompt_tokens_copied, prompt)
        assert engine.prompt_tokens_evaluated < prompt + 2 * 40, (engine.prompt_tokens_evaluated, prompt)
        alone = [single.generate(req(t)).text for t in texts]  # one slot: nothing to copy from
        assert [c.text for c in together] == alone
    finally:
        shared.close()
        single.close()


def write_lora(base: Path, out: Path, seed: int = 0, rank: int = 4) -> tuple[Path, str]:
    """A random LoRA adapter on every layer's ffn_up (enough to change answers), written as
    optimizers/finetune_train.write_adapter writes a trained one: (its file, its SHA-256)."""
    import hashlib

    import gguf as gg
    import numpy as np

    rng = np.random.default_rng(seed)
    w = gg.GGUFWriter(str(out), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    for layer in range(30):
        w.add_tensor(f"blk.{layer}.ffn_up.weight.lora_a", rng.normal(0, 0.5, (rank, 576)).astype(np.float32))
        w.add_tensor(f"blk.{layer}.ffn_up.weight.lora_b", rng.normal(0, 0.5, (1536, rank)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out, hashlib.sha256(out.read_bytes()).hexdigest()


def test_calls_with_and_without_a_lora_adapter_batch_apart_and_do_not_mix(smollm2_path, tmp_path):
    """An adapter applies to a whole llama.cpp context: the engine keeps one context per adapter,
    each batched on its own, so base and tuned calls sent together give their answers alone."""
    adapter = write_lora(smollm2_path, tmp_path / "lora.gguf")
    calls = [(text, FREE) for text in ("Say hello.", "Describe the sea.", "Name a fruit.")]

    def req(text: str, schema: dict, tuned: bool) -> GenerationRequest:
        r = ask(text, schema, 30)
        r.adapter = adapter if tuned else None
        return r

    model = create_model("a", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 2})
    try:
        alone = {(t, tuned): model.generate(req(t, s, tuned)).text for t, s in calls for tuned in (False, True)}
        assert any(alone[(t, True)] != alone[(t, False)] for t, _ in calls)  # the adapter is applied
        with ThreadPoolExecutor(6) as pool:
            mixed = dict(zip(alone, pool.map(lambda k: model.generate(req(k[0], FREE, k[1])).text, alone)))
        assert mixed == alone
        engines = model._submit(lambda: dict(model._w.engines))
        assert set(engines) == {None, adapter[1]} and all(e.widest == 2 for e in engines.values())
        assert engines[adapter[1]].decode_group == 1  # measured: an adapter changes numbers with 2+ rows
    finally:
        model.close()


def test_slots_and_context_are_sized_from_the_model_and_memory(smollm2_path):
    from lmpc.runtime.models.batch_engine import DEFAULT_SLOTS, kv_bytes_per_token, plan_slots

    model = create_model("p", "llama_cpp", {"path": str(smollm2_path), "engine": "batched"})
    try:
        llm = model._submit(model._load)
        m = llm._model.model
        per_token = kv_bytes_per_token(m)
        assert per_token == 2 * 2 * 30 * 3 * 64  # SmolLM2-135M: 30 layers, 3 KV heads of 64
        assert plan_slots(m, 2048, None, avail=1 << 40) == (DEFAULT_SLOTS, 2048)
        assert plan_slots(m, 2048, None, avail=4 * 2 * 2048 * per_token) == (2, 2048)  # a quarter of it: 2 slots
        assert plan_slots(m, 2048, None, avail=1) == (1, 2048)  # always one
        assert plan_slots(m, 2048, 7, avail=1) == (7, 2048)  # the option wins
        assert plan_slots(m, 100_000, 2)[1] == 8192  # at most the training context
        model.generate(ask("Hi.", LABEL))
        engine = model._submit(lambda: model._w.engines[None])
        assert 1 <= engine.slots <= DEFAULT_SLOTS and engine.n_ctx_per_slot == 2048
    finally:
        model.close()
