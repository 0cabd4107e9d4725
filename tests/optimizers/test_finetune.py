"""finetune on the real embedded model (SmolLM2-135M): a tiny LoRA (a few steps, six rows).

The training labels are the *opposite* of each text's sentiment, so the direction is
testable: llama.cpp with the adapter must give those labels a lower loss and predict them more
often than the base model, which a random change of the weights would not do. The same build
gives the artifact for the round trip and the tampering tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lmpc
from lmpc.compiler.artifact import ArtifactError

ROOT = Path(__file__).resolve().parents[2]
SENTIMENT = ROOT / "examples/sentiment"
FLIP = {"positive": "negative", "negative": "positive"}
TEXTS = [json.loads(line) for line in (SENTIMENT / "data/train.jsonl").read_text().splitlines()[:6]]
LMPC = [sys.executable, "-m", "lmpc"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`lmpc build` with finetune on six rows whose labels are flipped: (folder, artifact, cache dir)."""
    folder = tmp_path_factory.mktemp("ft")
    (folder / "data").mkdir()
    shutil.copy(SENTIMENT / "sentiment.lmp", folder / "sentiment.lmp")
    rows = [{"text": r["text"], "label": FLIP[r["label"]]} for r in TEXTS]
    (folder / "data/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "data/dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    cache = folder / "cache"
    out = subprocess.run(LMPC + ["build", str(folder / "sentiment.lmp"), "--cache-dir", str(cache), "--strategy",
                                 "finetune(epochs: 4, lr: 0.002, max_examples: 6, seed: 1)"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "answer loss" in out.stderr and "step 24/24" in out.stderr  # progress lines
    return folder, folder / "sentiment.lmpc.json", cache


def _answer_nll(llm, prompt: list[int], answer: list[int]) -> float:
    """Mean negative log-likelihood of `answer` after `prompt`, computed by llama.cpp."""
    import numpy as np

    llm.reset()
    llm.eval(prompt + answer[:-1])
    logits = np.array(llm.scores[len(prompt) - 1:len(prompt) + len(answer) - 1], dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean([logp[i, t] for i, t in enumerate(answer)]))


@pytest.mark.slow
def test_llama_cpp_loads_the_adapter_and_it_lowers_the_loss_of_the_targets(built):
    from llama_cpp import Llama

    from lmpc.runtime.models import create_model
    from lmpc.runtime.prompt import render_messages, render_outputs

    folder, artifact, _ = built
    data = json.loads(artifact.read_text())
    assert data["version"] == 3
    node = next(n for n in data["graphs"]["classify"]["nodes"] if n["kind"] == "predict")
    adapter = folder / node["adapter"]["file"]
    assert adapter.parent.name == "adapters" and node["demos"] == []
    report = data["report"]["strategies"][0]["nodes"]
    assert report["s"]["loss_after"] < report["s"]["loss_before"]  # torch's view

    prog = lmpc.load(artifact, cache=False)
    tuned_node = dict(prog.graph.nodes["s"])
    model = create_model("local", "llama_cpp", {"builtin": "smollm2-135m"})
    try:
        pairs = [model.training_tokens(render_messages(tuned_node, {"text": r["text"]}),
                                       render_outputs(tuned_node, {"label": FLIP[r["label"]]})) for r in TEXTS]
        path = str(model.path)
    finally:
        model.close()
        prog.close()
    losses = {}
    for name, lora in (("base", None), ("tuned", str(adapter))):
        llm = Llama(model_path=path, lora_path=lora, logits_all=True, n_ctx=512, n_threads=1, verbose=False)
        try:
            losses[name] = sum(_answer_nll(llm, p, a) for p, a in pairs) / len(pairs)
        finally:
            llm.close()
    assert losses["tuned"] < losses["base"] * 0.7, losses


@pytest.mark.slow
def test_the_tuned_program_moves_towards_the_targets_and_the_cache_tells_it_from_the_base(built):
    folder, artifact, cache = built
    rows = [{"text": r["text"]} for r in TEXTS]
    shared = folder / "cache" / "calls.sqlite"  # one cache: the adapter must be part of the key
    base = lmpc.compile_file(folder / "sentiment.lmp", cache=shared)
    tuned = lmpc.load(artifact, cache=shared)
    try:
        base_labels = [r.values["label"] for r in base.batch(rows)]
        tuned_labels = [r.values["label"] for r in tuned.batch(rows)]
    finally:
        base.close()
        tuned.close()
    targets = [FLIP[r["label"]] for r in TEXTS]
    agree = lambda labels: sum(a == b for a, b in zip(labels, targets))  # noqa: E731
    assert agree(tuned_labels) >= agree(base_labels) + 2, (base_labels, tuned_labels, targets)


@pytest.mark.slow
def test_the_artifact_gives_the_same_predictions_in_a_fresh_process(built):
    _, artifact, _ = built
    rows = [{"text": r["text"]} for r in TEXTS]
    prog = lmpc.load(artifact, cache=False)
    try:
        here = [r.values["label"] for r in prog.batch(rows)]
    finally:
        prog.close()
    code = ("import json, sys, lmpc; p = lmpc.load(sys.argv[1], cache=False); "
            "print(json.dumps([r.values['label'] for r in p.batch(json.loads(sys.argv[2]))])); p.close()")
    out = subprocess.run([sys.executable, "-c", code, str(artifact), json.dumps(rows)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


@pytest.mark.slow
def test_a_changed_or_missing_adapter_is_refused(built, tmp_path):
    folder, artifact, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("cache"))
    (adapter,) = (copy / "adapters").glob("*.gguf")
    with open(adapter, "r+b") as f:  # one byte of a tensor changed
        f.seek(os.path.getsize(adapter) - 3)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(ArtifactError, match="has changed since the build"):
        lmpc.load(copy / "sentiment.lmpc.json")
    out = subprocess.run(LMPC + ["run", str(copy / "sentiment.lmpc.json"), "--input", "text=hi"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "has changed since the build" in out.stderr and "Traceback" not in out.stderr
    adapter.unlink()
    with pytest.raises(ArtifactError, match="is missing"):
        lmpc.load(copy / "sentiment.lmpc.json")


def test_an_adapter_in_a_version_2_document_is_refused(tmp_path):
    from lmpc.compiler.artifact import check_document

    data = json.loads((SENTIMENT / "sentiment_gemma.lmpc.json").read_text())
    node = next(n for n in data["graphs"]["classify"]["nodes"] if n["kind"] == "predict")
    node["adapter"] = {"file": "adapters/x.gguf", "sha256": "0" * 64}
    with pytest.raises(ArtifactError, match="needs format version 3"):
        check_document(data)
    data["version"] = 3
    check_document(data)  # the same document as format 3 reads
    node["adapter"] = {"file": "../x.gguf", "sha256": "0" * 64}
    with pytest.raises(ArtifactError, match="adapter"):
        check_document(data)


def test_without_the_extra_the_error_says_what_to_install(monkeypatch):
    from lmpc.optimizers import finetune_train

    monkeypatch.setattr(finetune_train, "NEEDS", finetune_train.NEEDS + ("no_such_module_lmpc",))
    with pytest.raises(finetune_train.FinetuneNotInstalled, match=r"pip install 'lmpc\[finetune\]'") as e:
        finetune_train.require()
    assert e.value.exit_code == 2 and "no_such_module_lmpc" in str(e.value)


def test_bad_finetune_options_are_positioned_errors(tmp_path):
    src = (SENTIMENT / "sentiment.lmp").read_text().replace(
        "bootstrap_few_shot(max_demos: 4)", "finetune(epochs: 0, rank: 8)")
    (tmp_path / "s.lmp").write_text(src)
    out = subprocess.run(LMPC + ["check", str(tmp_path / "s.lmp")], capture_output=True, text=True, timeout=120)
    line = next(i for i, text in enumerate(src.splitlines(), 1) if "finetune(" in text)
    assert out.returncode != 0 and f"s.lmp:{line}:" in out.stderr + out.stdout and "epochs" in out.stderr + out.stdout


def test_dry_run_shows_teacher_calls_and_training_steps(tmp_path):
    out = subprocess.run(LMPC + ["build", str(SENTIMENT / "sentiment.lmp"), "--dry-run", "--strategy",
                                 "finetune(epochs: 2, max_examples: 10)"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "40  finetune: teacher" in out.stdout
    assert "train 1 LoRA adapter(s), up to 20 steps each" in out.stdout


@pytest.mark.slow
def test_a_rerun_build_reuses_the_trained_adapter_and_writes_the_same_artifact(built, tmp_path):
    """What a killed build does on its rerun: teacher calls from the cache, an adapter already
    trained found in the store by what its training read, and the same artifact bytes."""
    folder, artifact, cache = built
    again = tmp_path / "again.lmpc.json"
    out = subprocess.run(LMPC + ["build", str(folder / "sentiment.lmp"), "--cache-dir", str(cache), "-o", str(again),
                                 "--strategy", "finetune(epochs: 4, lr: 0.002, max_examples: 6, seed: 1)"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "(reused)" in out.stderr and "step 1/" not in out.stderr  # no training this time
    first, second = json.loads(artifact.read_text()), json.loads(again.read_text())
    assert second["graphs"] == first["graphs"] and second["report"]["strategies"] == first["report"]["strategies"]
    assert ", 0 from cache" not in out.stdout  # the teacher and both evaluations from the cache
