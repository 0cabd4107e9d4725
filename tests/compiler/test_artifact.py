"""Artifacts: deterministic JSON, schema-validated, version-checked, round-trip exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmpc.compiler import compile_file
from lmpc.compiler.artifact import ArtifactError, dumps, load_artifact, make_artifact, write_artifact
from lmpc.compiler.ir import to_json

ROOT = Path(__file__).resolve().parents[2]
TRIAGE = ROOT / "examples" / "triage" / "triage.lmp"


def _artifact(tmp_path: Path, example: Path = TRIAGE, pipeline: str = "triage") -> tuple[dict, Path]:
    checked = compile_file(example)
    out = tmp_path / "out" / "x.lmpc.json"
    g = checked.graphs[pipeline].copy()
    node = next(n for n, d in g.nodes(data=True) if d["kind"] == "predict")
    g.nodes[node]["demos"] = [{"inputs": {"k": "v"}, "outputs": {"o": 1}, "source": "train.jsonl:3",
                               "kind": "bootstrapped"}]
    data = make_artifact(checked, pipeline, {pipeline: g}, out, {"seed": 0}, {"score_before": 0.5})
    return data, out


def test_round_trip_is_exact_and_dumps_are_deterministic(tmp_path):
    data, out = _artifact(tmp_path)
    write_artifact(out, data)
    loaded = load_artifact(out)
    assert to_json(loaded.graph) == data["graphs"]["triage"]
    assert dumps(loaded.data) == out.read_text()
    data2, _ = _artifact(tmp_path)
    assert dumps(data2) == dumps(data)  # no timestamps, sorted keys
    # `call` steps resolve against the source folder, wherever the artifact is written
    assert loaded.base_dir == TRIAGE.parent.resolve()
    assert data["source"]["file"].endswith("triage.lmp")


def test_models_carry_no_secrets(tmp_path):
    data, _ = _artifact(tmp_path, ROOT / "examples" / "multihop" / "multihop.lmp", "multihop")
    models = data["graphs"]["multihop"]["graph"]["models"]
    text = json.dumps(models)
    assert "api_key_env" in text and "sk-" not in text
    for spec in models.values():
        assert not {"api_key", "key", "token", "secret"} & set(spec["options"])


def test_a_newer_version_is_refused_with_a_clear_message(tmp_path):
    data, out = _artifact(tmp_path)
    data["version"] = 99
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="format version 99; this lmpc reads version 1"):
        load_artifact(out)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "something-else"}', "not an lmpc artifact"),
    ("[]", "not an lmpc artifact"),
])
def test_broken_files_are_refused(tmp_path, text, message):
    p = tmp_path / "bad.lmpc.json"
    p.write_text(text)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(p)


def test_schema_violations_name_the_place(tmp_path):
    data, out = _artifact(tmp_path)
    node = next(n for n in data["graphs"]["triage"]["nodes"] if n["kind"] == "call")
    node["fn"] = "os.system('rm -rf /')"  # not a file.py:function reference
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="graphs/triage/nodes/.*/fn"):
        load_artifact(out)
    data, out = _artifact(tmp_path)
    data["graphs"]["triage"]["graph"]["models"] = {"m": {"provider": "openai", "options": {"api_key": "x"}}}
    out.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="models"):
        load_artifact(out)
