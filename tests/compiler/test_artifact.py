"""Artifacts (format 2): deterministic JSON, checked in full on load, and the program that was
built: fields keep their order, so a loaded node renders the same prompt and decoding schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmpc.compiler import compile_file, compile_source
from lmpc.compiler.artifact import ArtifactError, dumps, load_artifact, make_artifact, write_artifact
from lmpc.runtime.cache import call_key
from lmpc.runtime.prompt import decoding_schema, render_messages

ROOT = Path(__file__).resolve().parents[2]
TRIAGE = ROOT / "examples" / "triage" / "triage.lmp"

# Fields declared out of alphabetical order, an object type whose fields are too, and CoT.
ORDERED = '''
type Verdict = {verdict: "yes" | "no", confidence: int, because: str}
signature Judge {
    "Judge the review."
    review: str
    label: str
    ->
    explanation: str
    confident: bool
    detail: Verdict
}
pipeline judge(review: str, label: str) -> (explanation: str, detail: Verdict) {
    j = chain_of_thought Judge(review: review, label: label)
    return explanation: j.explanation, detail: j.detail
}
'''


def _write(tmp_path: Path, source: str, name: str) -> Path:
    src = tmp_path / f"{name}.lmp"
    src.write_text(source)
    return src


def _artifact(tmp_path: Path, demos: bool = True) -> tuple[dict, Path]:
    """The triage example (a `call` step, CoT, objects) copied to tmp_path, as an artifact document."""
    import shutil

    for name in ("triage.lmp", "routing.py"):
        shutil.copy(TRIAGE.parent / name, tmp_path / name)
    checked = compile_file(tmp_path / "triage.lmp")
    out = tmp_path / "x.lmpc.json"
    g = checked.graphs["triage"].copy()
    node = next(n for n, d in g.nodes(data=True) if d["kind"] in ("predict", "chain_of_thought"))
    if demos:
        g.nodes[node]["demos"] = [{"inputs": {"b": "v", "a": 1}, "outputs": {"o": {"z": 1, "a": 2}},
                                   "source": "train.jsonl:3", "kind": "bootstrapped"}]
    data = make_artifact(checked, "triage", {"triage": g}, out, {"seed": 0}, {"score_before": 0.5})
    return data, out


def _save(tmp_path: Path, data: dict, name: str = "a.lmpc.json") -> Path:
    out = tmp_path / name
    out.write_text(json.dumps(data))
    return out


def test_loaded_nodes_render_the_same_prompts_and_schemas_as_the_compiled_program(tmp_path):
    src = _write(tmp_path, ORDERED, "judge")
    checked = compile_file(src)
    g = checked.graphs["judge"]
    out = tmp_path / "judge.lmpc.json"
    write_artifact(out, make_artifact(checked, "judge", {"judge": g}, out, {}, {}))
    loaded = load_artifact(out).graph
    row = {"review": "great phone", "label": "positive"}
    before, after = g.nodes["j"], loaded.nodes["j"]
    assert list(after["inputs"]) == ["review", "label"]
    assert list(after["outputs"]) == ["reasoning", "explanation", "confident", "detail"]
    assert render_messages(after, row) == render_messages(before, row)
    assert decoding_schema(after) == decoding_schema(before)
    assert json.dumps(decoding_schema(after)) == json.dumps(decoding_schema(before))  # key order too
    assert list(decoding_schema(after)["properties"]["detail"]["properties"]) == ["verdict", "confidence", "because"]
    assert list(loaded.graph["inputs"]) == ["review", "label"]
    assert loaded.graph["order"] == g.graph["order"]
    assert {n: d["level"] for n, d in loaded.nodes(data=True)} == {n: d["level"] for n, d in g.nodes(data=True)}
    assert sorted(loaded.edges) == sorted(g.edges)


def test_the_call_cache_key_depends_on_field_order():
    a = {"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "integer"}}}
    b = {"type": "object", "properties": {"y": {"type": "integer"}, "x": {"type": "string"}}}
    assert call_key({"schema": a}) != call_key({"schema": b})
    assert call_key({"schema": a}) == call_key({"schema": json.loads(json.dumps(a))})


def test_round_trip_is_exact_and_dumps_are_deterministic(tmp_path):
    data, out = _artifact(tmp_path)
    write_artifact(out, data)
    loaded = load_artifact(out)
    assert dumps(loaded.data) == out.read_text()
    data2, _ = _artifact(tmp_path)
    assert dumps(data2) == dumps(data)  # no timestamps, fixed order
    node = next(n for n in loaded.data["graphs"]["triage"]["nodes"] if n.get("demos"))
    assert list(node["demos"][0]["inputs"]) == ["b", "a"]  # values keep their key order
    assert list(node["demos"][0]["outputs"]["o"]) == ["z", "a"]
    # Python files and relative paths resolve against the artifact's own folder
    assert loaded.folder == tmp_path.resolve()
    assert data["source"]["file"] == "triage.lmp"
    assert data["code"][0]["file"] == "routing.py" and len(data["code"][0]["sha256"]) == 64


def test_artifacts_hold_no_schemas_and_no_derived_data(tmp_path):
    data, _ = _artifact(tmp_path)
    text = json.dumps(data)
    assert '"schema"' not in text and '"$ref"' not in text
    g = data["graphs"]["triage"]
    assert set(g) == {"name", "inputs", "outputs", "span", "models", "default_model", "nodes"}
    assert all("level" not in n for n in g["nodes"])


def test_models_carry_no_secrets(tmp_path):
    checked = compile_file(ROOT / "examples" / "multihop" / "multihop.lmp")
    out = ROOT / "examples" / "multihop" / "x.lmpc.json"
    data = make_artifact(checked, "multihop", {"multihop": checked.graphs["multihop"]}, out, {}, {})
    models = data["graphs"]["multihop"]["models"]
    text = json.dumps(models)
    assert "api_key_env" in text and "sk-" not in text
    for spec in models.values():
        assert not {"api_key", "key", "token", "secret"} & set(spec["options"])


@pytest.mark.parametrize("version, message", [
    (99, "format version 99; this lmpc reads versions 2 and 3: upgrade lmpc"),
    (1, "format version 1; this lmpc reads versions 2 and 3: rebuild it with `lmpc build`"),
])
def test_other_versions_are_refused_with_a_clear_message(tmp_path, version, message):
    data, _ = _artifact(tmp_path)
    data["version"] = version
    with pytest.raises(ArtifactError, match=message.replace("(", r"\(")):
        load_artifact(_save(tmp_path, data))


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "something-else"}', "not an lmpc artifact"),
    ("[]", "not an lmpc artifact"),
    ("\ufeff[]", "not an lmpc artifact"),  # a BOM is read past
])
def test_broken_files_are_refused(tmp_path, text, message):
    p = tmp_path / "bad.lmpc.json"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ArtifactError, match=message):
        load_artifact(p)


def test_compile_source_artifact_of_a_program_without_files(tmp_path):
    checked = compile_source(ORDERED, str(tmp_path / "j.lmp"))
    out = tmp_path / "j.lmpc.json"
    data = make_artifact(checked, "judge", checked.graphs, out, {}, {})
    assert data["code"] == [] and data["source"]["file"] == "j.lmp"
