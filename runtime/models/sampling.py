"""The sampler chain of a local call: grammar, repetition guard (DRY), then the choice.

One definition for both local engines: the one-sequence path (local.py, which replaces
llama-cpp-python's own chain so it can add DRY, an option its high-level API lacks) and the
batched engine (batch_engine.py, one chain per sequence).

DRY ("don't repeat yourself", llama.cpp's llama_sampler_init_dry): a token that would extend a
sequence already generated is penalized by multiplier * base ** (length - allowed_length).
SmolLM2 otherwise loops inside a free-text string ("I love to eat delicious food, I love to
eat delicious food, ...") until its character bound, about 50 times the tokens of a normal
answer. `"` and `:` are sequence breakers, so a repeat never spans a JSON string's quotes or a
key: keys, labels and field values repeated across fields are not penalized, only a repeat
inside one string (or inside free text). The chain only sees generated tokens (the prompt is
never accepted into it), so copying words from the prompt is not penalized either.

Field scope: the breakers alone do not protect a multi-token value that one field repeats
from another field of the same call (SmolLM2 writes numbers a digit a token). A react
action's args restate its thought, a chain_of_thought's answer restates the end of its
reasoning, and with a call-wide history the agent example miscopied them (thought "Compute
829 + 306.", expression "829 + 309"; 2 of 4 dev rows right against 4 of 4 without DRY). So
DRY's history is restarted after every generated token that holds a `"` (ScopedChain): it
only ever holds the tokens of the current JSON string (or of the structure between two
strings), and a repeat is penalized only inside one field. Free text without JSON keeps the
whole generation as its history.
"""

from __future__ import annotations

import weakref
from typing import Any

DRY_MULTIPLIER = 0.8  # on by default, its history scoped to one field (module docstring)
DRY_SUGGESTED = 0.8  # llama.cpp's suggested strength, for `dry_multiplier: 0.8`
DRY_BASE = 1.75
DRY_ALLOWED_LENGTH = 2  # repeats of up to 2 tokens ("of the") are free
DRY_LAST_N = 4096  # look back over everything generated in one call (at most 2048 tokens)
DRY_BREAKERS = ("\n", ":", '"', "*")  # llama.cpp's defaults; `"` and `:` cover JSON structure
# The non-greedy tail, as llama-cpp-python's create_completion defaults set it.
TOP_K, TOP_P, MIN_P, TYPICAL_P = 40, 0.95, 0.05, 1.0


def add_chain(sampler: Any, model: Any, grammar: Any | None, temperature: float, seed: int,
              dry_multiplier: float) -> Any:
    """Fill an llama_cpp._internals.LlamaSampler: grammar (a LlamaGrammar), DRY, then greedy
    at temperature 0 or the top-k/typical/top-p/min-p/temperature/dist tail above it.

    The grammar comes first: DRY then only lowers tokens the grammar allows, and when every
    way to continue a string is penalized, its closing quote wins."""
    if grammar is not None:
        sampler.add_grammar(model, grammar)
    if dry_multiplier > 0:
        sampler.add_dry(model, dry_multiplier, DRY_BASE, DRY_ALLOWED_LENGTH, DRY_LAST_N, list(DRY_BREAKERS))
    if temperature == 0:
        sampler.add_greedy()
    elif temperature < 0:
        sampler.add_dist(seed)
    else:
        sampler.add_top_k(TOP_K)
        sampler.add_typical(TYPICAL_P, 1)
        sampler.add_top_p(TOP_P, 1)
        sampler.add_min_p(MIN_P, 1)
        sampler.add_temp(temperature)
        sampler.add_dist(seed)
    return sampler


class ScopedChain:
    """Mixed into llama_cpp._internals.LlamaSampler: after each sampled token that holds a
    `"` (a JSON string opened or closed), DRY's history is restarted (module docstring)."""

    dry_index: int | None = None
    quotes: Any = None  # token -> whether its text holds an unescaped `"` (cached per model)
    model: Any = None

    def sample(self, ctx: Any, idx: int = -1) -> int:  # the one-sequence path (llama.py)
        import llama_cpp

        token = llama_cpp.llama_sampler_sample(self.sampler, ctx.ctx, idx)
        self.after(token)
        return token

    def sample_raw(self, ctx: Any, idx: int) -> int:  # the batched engine (a raw context pointer)
        import llama_cpp

        token = llama_cpp.llama_sampler_sample(self.sampler, ctx, idx)
        self.after(token)
        return token

    def after(self, token: int) -> None:
        if self.dry_index is None:
            return
        has = self.quotes.get(token)
        if has is None:
            piece = self.model.token_to_piece(token, special=False) if token >= 0 else b""
            has = self.quotes[token] = b'"' in piece.replace(b'\\"', b"")
        if has:
            import llama_cpp

            llama_cpp.llama_sampler_reset(llama_cpp.llama_sampler_chain_get(self.sampler, self.dry_index))


_quotes: "weakref.WeakKeyDictionary[Any, dict[int, bool]]" = weakref.WeakKeyDictionary()  # model -> its quote table


def new_chain(model: Any, grammar: Any | None, temperature: float, seed: int, dry_multiplier: float) -> Any:
    from llama_cpp._internals import LlamaSampler

    class Chain(ScopedChain, LlamaSampler):
        pass

    chain = add_chain(Chain(), model, grammar, temperature, seed, dry_multiplier)
    if dry_multiplier > 0:
        chain.dry_index = 1 if grammar is not None else 0  # add_chain's order
        chain.model, chain.quotes = model, _quotes.setdefault(model, {})
    return chain


def install(llm: Any, dry_multiplier: float) -> None:
    """Make llm (a llama_cpp.Llama) build lmpc's chain for each generation.

    Its generate() calls self._init_sampler(...) with the call's settings (create_completion
    has set self._seed from the call's seed); lmpc passes no logits processors and neutral
    penalties (repeat 1, frequency and presence 0), so those arguments are not needed."""

    def init_sampler(*, temp: float = 0.8, grammar: Any = None, **_: Any) -> Any:
        return new_chain(llm._model, grammar, temp, llm._seed, dry_multiplier)

    llm._init_sampler = init_sampler
