"""Reproducible at full speed (issue 17): the layout probe (runtime/models/layout_probe.py) and
the fast greedy choice under a grammar (sampling.GreedyFirst), on the real models.

What must hold on any machine, whatever the probe finds there: a model declared
`reproducible: true` gives the bytes of the fixed grid (`reproducible: "grid"`) in any order and
batch; the verdict is measured once and stored; the fast greedy choice is the chain's choice."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import lmpc
from lmpc.compiler.diagnostics import CompileError
from lmpc.runtime.errors import ModelConfigError
from lmpc.runtime.models import GenerationRequest, create_model, layout_probe, sampling

LABEL = {"type": "object", "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}},
         "required": ["label"]}
FREE = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 160}}, "required": ["answer"]}
SYSTEM = "Answer briefly in JSON. " + " ".join(f"Rule {i}: be kind and exact." for i in range(6))
CALLS = [("Say hello.", FREE), ("I love this phone!", LABEL), ("Describe the sea.", FREE),
         ("This is awful.", LABEL), ("Name a fruit.", FREE)]


def ask(text: str, schema: dict, max_tokens: int = 40) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
                             json_schema=schema, max_tokens=max_tokens)


def answers(model, calls, together: bool = False) -> list[str]:
    """calls: (text, schema) or (text, schema, max_tokens)."""
    if together:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda c: model.generate(ask(*c)).text, calls))
    return [model.generate(ask(*c)).text for c in calls]


@pytest.fixture
def own_store(tmp_path, monkeypatch):
    """A fresh verdict store and no verdicts remembered by this process."""
    monkeypatch.setenv("LMPC_CACHE_DIR", str(tmp_path / "cache"))
    saved = dict(layout_probe._memo)
    layout_probe._memo.clear()
    yield tmp_path / "cache" / "layout"
    layout_probe._memo.clear()
    layout_probe._memo.update(saved)


def test_the_verdict_is_measured_once_stored_and_a_broken_store_is_measured_again(own_store, smollm2_path):
    def first_probe() -> layout_probe.Verdict:
        model = create_model("m", "llama_cpp", {"path": str(smollm2_path), "n_ctx": 512})
        try:
            model.generate(ask("Hi.", LABEL, 8))
            return model._submit(lambda: model._w.probe)
        finally:
            model.close()

    measured = first_probe()
    assert measured.seconds > 0 and measured.exact == (not measured.differs)
    (stored,) = own_store.glob("*.json")
    data = json.loads(stored.read_text())
    assert data["exact"] == measured.exact and data["engine"] == "single" and data["model"].startswith("SmolLM2")
    layout_probe._memo.clear()  # another process: the stored verdict, not a new measurement
    again = first_probe()
    assert again.seconds == 0 and again.exact == measured.exact
    stored.write_text("{not json")
    layout_probe._memo.clear()
    remeasured = first_probe()
    assert remeasured.seconds > 0 and json.loads(stored.read_text())["exact"] == measured.exact


def test_reproducible_true_gives_the_grids_bytes_in_any_order_and_reuses_more_when_exact(smollm2_path):
    grid = create_model("g", "llama_cpp", {"path": str(smollm2_path), "reproducible": "grid"})
    probed = create_model("p", "llama_cpp", {"path": str(smollm2_path)})
    try:
        expected = [create_fresh_answer(smollm2_path, c) for c in CALLS[:2]]
        forward = answers(probed, CALLS)
        assert forward[:2] == expected  # after other calls: as a fresh model answers
        assert answers(grid, CALLS) == forward
        exact = probed._submit(lambda: probed._w.exact)
        if exact:  # the whole cached prefix was reused: fewer prompt tokens than on the grid
            assert probed.prompt_tokens_evaluated < grid.prompt_tokens_evaluated - len(CALLS), (
                probed.prompt_tokens_evaluated, grid.prompt_tokens_evaluated)
        assert answers(probed, CALLS[::-1])[::-1] == forward
        assert grid.identity == probed.identity  # the same bytes: the same cached answers
        assert grid._submit(lambda: grid._w.probe) is None  # "grid" skips the probe
    finally:
        grid.close()
        probed.close()


def create_fresh_answer(path: Path, call) -> str:
    model = create_model("fresh", "llama_cpp", {"path": str(path), "n_ctx": 512})
    try:
        return model.generate(ask(*call)).text
    finally:
        model.close()


def test_the_batched_engine_gives_the_same_bytes_on_the_layout_free_path_and_on_the_grid(smollm2_path):
    grid = create_model("bg", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 3,
                                            "reproducible": "grid"})
    probed = create_model("bp", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 3})
    try:
        on_grid = answers(grid, CALLS, together=True)
        assert answers(probed, CALLS, together=True) == on_grid
        assert answers(probed, CALLS[::-1], together=True)[::-1] == on_grid
        engine = probed._submit(lambda: probed._w.engines[None])
        assert engine.exact == engine.probe.exact and engine.widest >= 2
    finally:
        grid.close()
        probed.close()


def test_gemma_is_found_layout_dependent_and_its_batched_answers_still_do_not_depend_on_neighbours():
    """Gemma 3's repacked Q4_K kernels take other paths for other row counts (measured on AVX2,
    AVX-512 and with extra buffers off: bench/README.md): the probe must say so, and the engine
    then keeps the grid, whose answers are the same alone and batched."""
    model = create_model("gm", "llama_cpp", {"builtin": "gemma3-270m", "engine": "batched", "slots": 3})
    calls = [("Say hello.", FREE), ("I love this phone!", LABEL), ("Name a fruit.", FREE)]
    try:
        alone = [model.generate(ask(q, s, 16)).text for q, s in calls]
        with ThreadPoolExecutor(3) as pool:
            together = list(pool.map(lambda c: model.generate(ask(c[0], c[1], 16)).text, calls[::-1]))[::-1]
        engine = model._submit(lambda: model._w.engines[None])
        assert not engine.probe.exact and engine.probe.differs, engine.probe
        assert not engine.exact and engine.widest_decode == 1
        assert together == alone
    finally:
        model.close()


def test_the_fast_greedy_choice_is_the_whole_chains_choice(smollm2_path, monkeypatch):
    calls = CALLS + [("Repeat the word tree many times.", FREE)]  # DRY at work inside a string
    model = create_model("s", "llama_cpp", {"path": str(smollm2_path), "reproducible": "grid"})
    try:
        fast = answers(model, calls)
        stats = sampling._greedy[model._submit(lambda: model._w.llm._model)]
        assert stats.hits > 20 and stats.misses >= 0
        monkeypatch.setattr(sampling, "GREEDY_FIRST", False)
        before = stats.hits
        assert answers(model, calls) == fast
        assert stats.hits == before  # the whole chain chose every token
    finally:
        model.close()


def test_the_reproducible_option_is_checked(tmp_path):
    with pytest.raises(ModelConfigError, match='reproducible must be true, false or "grid"'):
        create_model("m", "llama_cpp", {"builtin": "smollm2-135m", "reproducible": "fast"})
    with pytest.raises(ModelConfigError, match="reproducible"):
        create_model("m", "llama_cpp", {"builtin": "smollm2-135m", "reproducible": 1})
    src = ('model m = llama_cpp(builtin: "smollm2-135m", reproducible: "fast")\n'
           'signature S { t: str -> y: str }\npipeline p(t: str) -> (y: str) { s = predict S(t: t) return y: s.y }\n')
    with pytest.raises(CompileError) as e:
        lmpc.compile_source(src, "x.lmp")
    assert "x.lmp:1:" in str(e.value) and "grid" in str(e.value)


def test_every_suffix_length_gives_the_grids_bytes_after_any_history(smollm2_path):
    """Prompts that share a system prompt, then user texts of 1 to 14 words that start with
    different words, one after another and each asked twice: the reused prefix leaves uncached
    suffixes of every length from a few tokens to about 20, 17 included, and a fully cached
    prompt. A suffix of 16k+1 tokens in 16-row chunks, or a cached prompt's last token
    re-evaluated alone, is a one-row chunk, which gives other numbers (the probe records that
    layout as avoided; plain prefix reuse changed answers this way). Single and batched
    engines, both orders."""
    words = ("tell me about the sea and the wind and the boats that come home at night under the "
             "stars while the town sleeps and the lights go out one by one").split()
    texts = [" ".join(words[k:k + k + 1]).capitalize() for k in range(14)]
    grid = create_model("g", "llama_cpp", {"path": str(smollm2_path), "reproducible": "grid"})
    probed = create_model("p", "llama_cpp", {"path": str(smollm2_path)})
    batched = create_model("b", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 3})
    batched_grid = create_model("bg", "llama_cpp", {"path": str(smollm2_path), "engine": "batched", "slots": 3,
                                                    "reproducible": "grid"})
    try:
        def run(model, order, together=False):
            twice = [t for t in order for _ in range(2)]
            got = answers(model, [(t, FREE, 16) for t in twice], together)
            assert got[0::2] == got[1::2]  # asked again, fully cached: the same bytes
            return dict(zip(order, got[0::2]))

        reference = run(grid, texts)
        assert run(probed, texts) == reference and run(probed, texts[::-1]) == reference
        batched_reference = run(batched_grid, texts, together=True)
        assert run(batched, texts[::-1], together=True) == batched_reference
    finally:
        for m in (grid, probed, batched, batched_grid):
            m.close()
