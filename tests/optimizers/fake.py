"""A deterministic fake model and small programs for the optimizer tests.

The fake answers with JSON decided by a Python function of the last user message (the row's
inputs, as runtime/prompt.render_inputs writes them) and the number of demos in the prompt;
nothing loads: the injected instance replaces the declared llama.cpp model.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable

import networkx as nx

from lmpc.compiler.api import compile_source
from lmpc.runtime.data import Example
from lmpc.runtime.errors import ServerError
from lmpc.runtime.models import Completion, GenerationRequest, Model

Answer = Callable[[dict[str, str], int, GenerationRequest], dict[str, Any]]

HEADER = '''
model m = llama_cpp(builtin: "smollm2-135m")
model other = llama_cpp(builtin: "smollm2-135m")
type Label = "positive" | "negative"
'''

CLASSIFY = HEADER + '''
signature Sentiment = text -> label: Label
pipeline classify(text: str) -> (label: Label) {
    s = predict Sentiment(text: text)
    return label: s.label
}
'''

COT = HEADER + '''
signature Sentiment = text -> label: Label
pipeline classify(text: str) -> (label: Label) {
    s = chain_of_thought Sentiment(text: text)
    return label: s.label
}
'''

TWO_STEP = HEADER + '''
signature Topic = text -> topic: str
signature Judge = text, topic: str -> label: Label
pipeline two(text: str) -> (label: Label) {
    t = predict Topic(text: text)
    j = predict Judge(text: text, topic: t.topic)
    return label: j.label
}
'''


def graph(source: str = CLASSIFY) -> nx.DiGraph:
    program = compile_source(source)
    (g,) = [g for name, g in program.graphs.items()]
    return g


def fields(message: str) -> dict[str, str]:
    """`name: value` lines of a rendered user message."""
    out = {}
    for line in message.splitlines():
        name, _, value = line.partition(": ")
        out[name] = value
    return out


class FakeModel(Model):
    def __init__(self, name: str, answer: Answer):
        self.name = name
        self.answer = answer
        self.requests: list[GenerationRequest] = []
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return f"fake:{self.name}"

    @property
    def supports_concurrency(self) -> bool:
        return False

    def generate(self, req: GenerationRequest) -> Completion:
        with self._lock:
            self.requests.append(req)
        last = [m for m in req.messages if m["role"] == "user"][-1]["content"]
        demos = sum(m["role"] == "assistant" for m in req.messages)
        out = self.answer(fields(last), demos, req)
        return Completion(json.dumps(out), prompt_tokens=10, completion_tokens=3)


def truth(text: str) -> str:
    return "positive" if text.startswith("good") else "negative"


def correct(f: dict[str, str], demos: int, req: GenerationRequest) -> dict[str, Any]:
    """Always right, for any of the test programs' nodes."""
    props = req.json_schema["properties"]
    out: dict[str, Any] = {}
    if "reasoning" in props:
        out["reasoning"] = "short"
    if "topic" in props:
        out["topic"] = "topic of " + f["text"]
    if "label" in props:
        out["label"] = truth(f["text"])
    return out


def wrong(f: dict[str, str], demos: int, req: GenerationRequest) -> dict[str, Any]:
    out = correct(f, demos, req)
    if "label" in out:
        out["label"] = "negative" if out["label"] == "positive" else "positive"
    return out


def broken_on(predicate: Callable[[str], bool], then: Answer = correct) -> Answer:
    def answer(f: dict[str, str], demos: int, req: GenerationRequest) -> dict[str, Any]:
        if predicate(f["text"]):
            raise ServerError("HTTP 503 from the fake server", status=503, attempts=3)
        return then(f, demos, req)
    return answer


def examples(texts: list[str], start: int = 0) -> list[Example]:
    return [Example({"text": t}, {"label": truth(t)}, f"train.jsonl:{start + i + 1}", {"text": t, "label": truth(t)})
            for i, t in enumerate(texts)]


def exact_label(example: Example, prediction: dict[str, Any]) -> float:
    return float(prediction.get("label") == example.gold.get("label"))


CONTEXTS: list = []


def track(ctx):
    """Register an OptimizeContext for closing after the test (conftest.py)."""
    CONTEXTS.append(ctx)
    return ctx
