"""End-to-end runs of compiled programs on the real embedded model (SmolLM2-135M, llama.cpp)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import lmpc
from lmpc.runtime.cache import CallCache

CLASSIFY = '''
type Label = "positive" | "negative"
signature Sentiment {
    "Classify the sentiment."
    text: str
    ->
    label: Label
}
pipeline classify(text: str) -> (label: Label) {
    s = predict Sentiment(text: text)
    return label: s.label
}
'''

TEXTS = ["I love it", "This is awful", "Best day ever!", "I hate rain", "So boring", "Great food"]


@pytest.fixture
def cache(tmp_path):
    c = CallCache(tmp_path / "calls.sqlite")
    yield c
    c.close()


def test_classifier_output_is_always_a_label_and_repeats_from_cache(tmp_path, cache):
    prog = lmpc.compile_source(CLASSIFY, cache=cache, trace_log=tmp_path / "t.jsonl")
    results = prog.batch([{"text": t} for t in TEXTS])
    labels = [r.label for r in results]
    assert all(r.ok for r in results)
    assert set(labels) <= {"positive", "negative"}
    assert all(len(r.trace) == 1 and r.trace[0].prompt_tokens > 0 for r in results)
    assert cache.stats.misses == len(TEXTS) and cache.stats.hits == 0

    again = prog.batch([{"text": t} for t in TEXTS])
    assert [r.label for r in again] == labels
    assert cache.stats.hits == len(TEXTS)
    assert all(r.trace[0].cache_hit for r in again)
    prog.close()


TYPED = '''
type Person = {name: str, age: int}
signature Extract {
    text: str
    ->
    count: int          "how many people are mentioned"
    names: list[str]    "their names"
    oldest: Person
    note: str?
}
pipeline extract(text: str) -> (count: int, names: list[str], oldest: Person) {
    e = predict Extract(text: text)
    return count: e.count, names: e.names, oldest: e.oldest
}
'''


def test_int_list_and_object_outputs_always_validate(cache):
    prog = lmpc.compile_source(TYPED, cache=cache, trace_log=False)
    rows = [{"text": "Ann is 30 and Bob is 41."}, {"text": "Tom, 7, met Kim, 9."}]
    for r in prog.batch(rows):
        assert r.ok, r.error
        assert type(r.count) is int
        assert isinstance(r.names, list) and all(isinstance(n, str) for n in r.names)
        assert isinstance(r.oldest["name"], str) and type(r.oldest["age"]) is int
    prog.close()


TWO_STEP = '''
signature Count = question -> answer: int
signature Say = number: int, word: str -> sentence: str
pipeline main(question: str) -> (answer: int, doubled: int, sentence: str) {
    c = chain_of_thought Count(question: question)
    d = call "tools.py:double" Double(n: c.answer)
    s = predict Say(number: d.doubled, word: "apples")
    return answer: c.answer, doubled: d.doubled, sentence: s.sentence
}
signature Double = n: int -> doubled: int
'''


def test_two_step_pipeline_with_reasoning_and_python_call(tmp_path, cache):
    (tmp_path / "tools.py").write_text("def double(n):\n    return n * 2\n")
    src = tmp_path / "two.lmp"
    src.write_text(TWO_STEP)
    prog = lmpc.compile_file(src, cache=cache, trace_log=False)
    r = prog(question="I have two apples and one pear. How many fruits do I have?")
    assert type(r.answer) is int and r.doubled == 2 * r.answer
    assert isinstance(r.sentence, str)
    steps = [e.step for e in r.trace]
    assert steps == ["c", "d", "s"]
    cot = r.trace[0]
    assert list(cot.parsed)[0] == "reasoning" and isinstance(cot.parsed["reasoning"], str)
    assert r.trace[1].model is None and r.trace[1].inputs == {"n": r.answer}
    prog.close()


def test_failing_rows_are_recorded_and_the_batch_goes_on(tmp_path, cache):
    (tmp_path / "tools.py").write_text("def double(n):\n    if n > 100:\n        raise ValueError('too big')\n"
                                       "    return n * 2\n")
    src = tmp_path / "p.lmp"
    src.write_text('signature D = n: int -> doubled: int\n'
                   'pipeline p(n: int) -> (d: int) {\n  x = call "tools.py:double" D(n: n)\n  return d: x.doubled\n}\n')
    prog = lmpc.compile_file(src, cache=cache, trace_log=False)
    results = prog.batch([{"n": 1}, {"n": 500}, {"n": "three"}, {"m": 1}, {"n": 4}])
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert results[4].d == 8
    assert "step `x`" in str(results[1].error) and "p.lmp:3:3" in str(results[1].error)
    assert "ValueError: too big" in str(results[1].error)
    assert "input `n` should be int" in str(results[2].error)
    assert "unknown input(s) m" in str(results[3].error)
    with pytest.raises(lmpc.LmpcRuntimeError, match="too big"):
        prog(n=1000)
    prog.close()


def test_concurrent_use_of_one_local_model_never_crashes(cache):
    prog = lmpc.compile_source(CLASSIFY, cache=CallCache(enabled=False), trace_log=False)
    out: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            out[i] = prog(text=TEXTS[i]).label
        except BaseException as e:  # noqa: BLE001 - the test reports any failure
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(TEXTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert set(out) == set(range(len(TEXTS))) and set(out.values()) <= {"positive", "negative"}
    prog.close()


def _lmpc(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmpc", *args, "--cache-dir", str(cache_dir)],
                          capture_output=True, text=True, timeout=300)


def test_cli_run_and_inspect(tmp_path):
    src = tmp_path / "c.lmp"
    src.write_text(CLASSIFY)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "I love it"}\n{"text": "This is awful"}\n')
    r = _lmpc("run", str(src), "--input-file", str(rows), "--json", cache_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["row"] for row in lines] == [0, 1]
    assert all(row["outputs"]["label"] in ("positive", "negative") for row in lines)
    assert "2 model call(s), 0 from cache" in r.stderr

    r = _lmpc("run", str(src), "-i", "text=I love it", cache_dir=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("label: ")
    assert "1 from cache" in r.stderr

    r = _lmpc("inspect", "-n", "2", cache_dir=tmp_path)
    assert r.returncode == 0
    assert r.stdout.count("── s (predict") == 2 and "cache=hit" in r.stdout and "raw: {" in r.stdout

    rows.write_text('{"text": "fine"}\n{"text": oops}\n')
    r = _lmpc("run", str(src), "--input-file", str(rows), cache_dir=tmp_path)
    assert r.returncode == 2 and f"{rows}:2:" in r.stderr and "Traceback" not in r.stderr

    r = _lmpc("run", str(src), "-i", "txt=hello", cache_dir=tmp_path)
    assert r.returncode == 2 and "no input `txt`" in r.stderr


def test_reproducible_false_uses_free_prefix_reuse_and_still_types_outputs(cache):
    src = CLASSIFY.replace('type Label', 'model fast = llama_cpp(builtin: "smollm2-135m", reproducible: false)\ntype Label')
    prog = lmpc.compile_source(src, cache=cache, trace_log=False)
    results = prog.batch([{"text": t} for t in TEXTS[:3]])
    assert all(r.ok and r.label in ("positive", "negative") for r in results)
    model = prog.pool.get("fast")
    assert model.identity.endswith(":free-prefix") and model.reproducible is False
    prog.close()
