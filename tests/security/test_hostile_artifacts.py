"""Tampered and inconsistent artifacts: refused with one clear message, never a traceback,
never foreign code run, never a secret sent where the user did not approve.

Each artifact starts as a real one (the triage example: a `call` step, CoT, object types,
copied to tmp_path) and is then edited the way an attacker or a broken tool would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lmpc
from lmpc.compiler import compile_file, compile_source
from lmpc.compiler.artifact import ArtifactError, ArtifactTrustError, load_artifact, make_artifact

ROOT = Path(__file__).resolve().parents[2]
TRIAGE = ROOT / "examples" / "triage"

REMOTE = '''
model big = openai(model: "m", base_url: "http://127.0.0.1:9/v1", api_key_env: "LMPC_TEST_KEY")
signature S = text: str -> label: "a" | "b"
pipeline p(text: str) -> (label: "a" | "b") {
    s = predict S(text: text) using big
    return label: s.label
}
'''


def triage(tmp_path: Path) -> tuple[dict, Path]:
    for name in ("triage.lmp", "routing.py"):
        shutil.copy(TRIAGE / name, tmp_path / name)
    checked = compile_file(tmp_path / "triage.lmp")
    out = tmp_path / "t.lmpc.json"
    metric = {"name": "exact_match", "kind": "builtin", "fields": ["queue"], "options": {}}
    return make_artifact(checked, "triage", {"triage": checked.graphs["triage"]}, out,
                         {"seed": 0, "metric": metric}, {}), out


def remote(tmp_path: Path) -> tuple[dict, Path]:
    checked = compile_source(REMOTE, str(tmp_path / "r.lmp"))
    out = tmp_path / "r.lmpc.json"
    return make_artifact(checked, "p", {"p": checked.graphs["p"]}, out, {}, {}), out


def save(out: Path, data: dict) -> Path:
    out.write_text(json.dumps(data))
    return out


def node(data: dict, kind: str, graph: str = "triage") -> dict:
    return next(n for n in data["graphs"][graph]["nodes"] if n["kind"] == kind)


def refused(path: Path, match: str, **options) -> str:
    with pytest.raises(ArtifactError, match=match) as info:
        lmpc.load(path, cache=False, trace_log=False, **options)
    return str(info.value)


# -- code --------------------------------------------------------------------------------------
def test_python_code_runs_only_with_trust_code_and_the_error_names_the_files(tmp_path):
    data, out = triage(tmp_path)
    save(out, data)
    message = refused(out, "runs Python code")
    assert "routing.py (step `route` of `triage`)" in message and "--trust-code" in message
    prog = lmpc.load(out, trust_code=True, cache=False, trace_log=False)
    prog.close()


@pytest.mark.parametrize("fn", ["../../../../tmp/x/evil.py:run", "/tmp/x/evil.py:run", "sub/../../evil.py:run",
                                "C:\\evil.py:run", "routing.py:run:again"])
def test_a_call_step_cannot_name_a_file_outside_the_artifacts_folder(tmp_path, fn):
    evil = tmp_path.parent / "evil.py"
    evil.write_text("import pathlib; pathlib.Path(__file__).with_suffix('.ran').write_text('ran')\n"
                    "def run(**kw): return {'queue': 'pwned'}\n")
    data, out = triage(tmp_path)
    node(data, "call")["fn"] = fn
    save(out, data)
    refused(out, "nodes/.*/fn", trust_code=True)
    assert not evil.with_suffix(".ran").exists()


def test_a_python_metric_outside_the_folder_is_refused_and_never_run(tmp_path):
    data, out = triage(tmp_path)
    data["optimize"]["metric"] = {"kind": "python", "name": "../../x/evil.py:score", "fields": [], "options": {}}
    save(out, data)
    refused(out, "optimize/metric/name")


def test_a_python_metric_beside_the_artifact_runs_with_trust_code(tmp_path):
    import hashlib

    data, out = triage(tmp_path)
    (tmp_path / "score.py").write_text("def score(example, prediction):\n    return 1.0\n")
    data["optimize"]["metric"] = {"kind": "python", "name": "score.py:score", "fields": [], "options": {}}
    data["code"].append({"file": "score.py", "sha256": hashlib.sha256((tmp_path / "score.py").read_bytes()).hexdigest()})
    save(out, data)
    prog = lmpc.load(out, trust_code=True, cache=False, trace_log=False)
    assert callable(lmpc.api.resolve_metric(prog))
    prog.close()
    # The steps' code was trusted but not the metric's: `lmpc eval` asks again, naming it.
    data["graphs"]["triage"]["nodes"] = [n for n in data["graphs"]["triage"]["nodes"] if n["kind"] != "call"]
    save(out, data)
    with pytest.raises(ArtifactError):  # the call step's output is still referenced: inconsistent
        lmpc.load(out, cache=False, trace_log=False)


def test_lmpc_eval_asks_for_trust_before_running_an_artifacts_metric(tmp_path):
    import hashlib

    checked = compile_source(REMOTE.replace("using big", "").replace(
        'model big = openai(model: "m", base_url: "http://127.0.0.1:9/v1", api_key_env: "LMPC_TEST_KEY")', ""),
        str(tmp_path / "s.lmp"))
    (tmp_path / "score.py").write_text("def score(example, prediction):\n    return 1.0\n")
    metric = {"kind": "python", "name": "score.py:score", "fields": [], "options": {}}
    out = tmp_path / "s.lmpc.json"
    data = make_artifact(checked, "p", {"p": checked.graphs["p"]}, out, {"metric": metric}, {})
    assert data["code"] == [{"file": "score.py", "sha256": hashlib.sha256((tmp_path / "score.py").read_bytes()).hexdigest()}]
    save(out, data)
    prog = lmpc.load(out, cache=False, trace_log=False)  # no call steps: loading needs no trust
    with pytest.raises(ArtifactTrustError, match="score.py \\(the metric\\)"):
        lmpc.api.resolve_metric(prog)
    prog.close()
    prog = lmpc.load(out, trust_code=True, cache=False, trace_log=False)
    assert callable(lmpc.api.resolve_metric(prog))
    prog.close()


def test_a_python_file_changed_since_the_build_is_refused(tmp_path):
    data, out = triage(tmp_path)
    save(out, data)
    with (tmp_path / "routing.py").open("a") as f:
        f.write("\nimport os  # changed after the build\n")
    refused(out, "routing.py changed since the build", trust_code=True)


def test_a_file_missing_from_the_code_list_is_refused(tmp_path):
    data, out = triage(tmp_path)
    data["code"] = []
    save(out, data)
    refused(out, "does not record", trust_code=True)


# -- models ------------------------------------------------------------------------------------
def test_remote_endpoints_and_key_variables_need_the_users_approval(tmp_path, monkeypatch):
    data, out = remote(tmp_path)
    spec = data["graphs"]["p"]["models"]["big"]
    spec["options"].update(base_url="http://user:pw@evil.example:8443/v1?key=abc", api_key_env="AWS_SECRET_ACCESS_KEY")
    save(out, data)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    message = refused(out, "uses models you have not approved")
    assert "evil.example:8443/v1" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "pw" not in message and "abc" not in message and "very-secret-value" not in message
    # The user's own configuration replaces what the artifact chose: then no approval is needed.
    monkeypatch.setenv("MY_KEY", "k")
    prog = lmpc.load(out, cache=False, trace_log=False,
                     model_options={"big": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "MY_KEY"}})
    assert prog.graph.graph["models"]["big"]["options"]["base_url"] == "http://127.0.0.1:9/v1"
    prog.close()
    prog = lmpc.load(out, trust_models=True, cache=False, trace_log=False)
    prog.close()
    with pytest.raises(ArtifactError, match="timeout"):  # the user's options are checked like a .lmp file's
        lmpc.load(out, trust_models=True, model_options={"big": {"timeout": 1e308}})


@pytest.mark.parametrize("options, why", [
    ({"builtin": None, "path": "/etc/passwd"}, "loads the model file /etc/passwd"),
    ({"builtin": None, "path": "../models/x.gguf"}, "outside the artifact's folder"),
    ({"builtin": None, "hf": "someone/repo/x.gguf"}, "Hugging Face file someone/repo/x.gguf"),
    ({"n_ctx": {"env": "HOME"}}, "reads the environment variable HOME"),
])
def test_local_model_sources_outside_the_folder_need_approval(tmp_path, options, why):
    data, out = triage(tmp_path)
    spec = data["graphs"]["triage"]["models"]["local"]
    spec["options"].update(options)
    spec["options"] = {k: v for k, v in spec["options"].items() if v is not None}
    save(out, data)
    refused(out, why, trust_code=True)


def test_a_secret_option_is_refused_without_echoing_it(tmp_path):
    data, out = remote(tmp_path)
    data["graphs"]["p"]["models"]["big"]["options"]["api_key"] = "sk-live-1234567890"
    save(out, data)
    message = refused(out, "artifacts never carry secrets", trust_models=True)
    assert "sk-live" not in message


def test_cli_refuses_without_flags_and_says_which(tmp_path):
    data, out = triage(tmp_path)
    save(out, data)
    r = subprocess.run([sys.executable, "-m", "lmpc", "run", str(out), "--no-cache", "-i",
                        'ticket={"subject": "s", "body": "b", "customer": {"name": "n", "tier": "pro"}, '
                        '"attachments": []}'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "runs Python code: routing.py" in r.stderr and "--trust-code" in r.stderr


# -- schemas: rebuilt from types, never read from the artifact --------------------------------
@pytest.mark.parametrize("hostile", [{"$ref": "http://127.0.0.1:9/x.json"}, {"$ref": "file:///etc/passwd"},
                                     {"type": "string", "pattern": "^(a+)+$"}])
def test_schemas_in_an_artifact_are_refused(tmp_path, hostile):
    data, out = triage(tmp_path)
    field = data["graphs"]["triage"]["inputs"][0]
    field["schema"] = hostile
    save(out, data)
    refused(out, "graphs/triage/inputs/0")
    field.pop("schema")
    field["t"] = hostile
    save(out, data)
    refused(out, "graphs/triage/inputs/0/t")


# -- inconsistent graphs -----------------------------------------------------------------------
def _edit_missing_ref(d):
    node(d, "call")["bindings"]["category"] = {"ref": "nowhere", "path": ["x"]}


def _edit_bad_field_ref(d):
    node(d, "call")["bindings"]["category"] = {"ref": "pri", "path": ["no_such_output"]}


def _edit_cycle(d):
    steps = {n["id"]: n for n in d["graphs"]["triage"]["nodes"]}
    steps["pri"]["bindings"]["body"] = {"ref": "draft", "path": ["reply"]}
    steps["draft"]["bindings"]["body"] = {"ref": "pri", "path": ["priority"]}


EDITS = {
    "a node without a kind": (lambda d: node(d, "call").pop("kind"), "a node has an \"id\" and a \"kind\""),
    "an unknown kind": (lambda d: node(d, "call").update(kind="rerank"), "needs a newer lmpc"),
    "order naming a missing node": (lambda d: d["graphs"]["triage"].update(order=["ghost"]), "exactly the keys"),
    "a stored level": (lambda d: node(d, "call").update(level=0), "unknown attribute"),
    "a binding to a missing ref": (_edit_missing_ref, "`nowhere`, which is not a node"),
    "a binding to a missing output": (_edit_bad_field_ref, "which `pri` does not output"),
    "a missing binding": (lambda d: node(d, "call")["bindings"].pop("tier"), "binds exactly its inputs"),
    "an input without its type": (lambda d: node(d, "input").pop("t"), "has a name, a type and its \"t\""),
    "a cycle": (_edit_cycle, "cycle"),
    "a model the graph lacks": (lambda d: node(d, "predict").update(model="nope"), "no model named `nope`"),
    "a malformed metric": (lambda d: d["optimize"].update(metric={"kind": "python"}), "optimize/metric"),
    "an unknown builtin call": (lambda d: node(d, "output").update(bindings={"value": {"call": "eval", "args": []}}),
                                "builtin call"),
    "a knn pool without vectors": (lambda d: node(d, "predict").update(
        knn={"k": 1, "embedder": "e5-small", "pool": [{"inputs": {}, "outputs": {}}], "vectors": []}),
        "one vector per pool demo"),
    "an absurd model option": (lambda d: d["graphs"]["triage"]["models"]["local"]["options"].update(n_ctx=-5),
                               "n_ctx"),
    "an unknown builtin model": (lambda d: d["graphs"]["triage"]["models"]["local"]["options"].update(
        builtin="smollm2-1.7b"), "no builtin model named"),
    "a deep type": (lambda d: node(d, "input").update(t=json.loads('{"list": ' * 100 + '"str"' + '}' * 100)),
                    "nested more than"),
    "duplicate fields": (lambda d: node(d, "call")["inputs"].append(node(d, "call")["inputs"][0]), "duplicate field"),
    "a wrong input id": (lambda d: node(d, "input").update(id="in:other"), "must have the id"),
}


@pytest.mark.parametrize("what", list(EDITS))
def test_inconsistent_graphs_are_refused_with_one_message(tmp_path, what):
    edit, match = EDITS[what]
    data, out = triage(tmp_path)
    edit(data)
    save(out, data)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(out)
    r = subprocess.run([sys.executable, "-m", "lmpc", "graph", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("lmpc: error: ")


@pytest.mark.parametrize("depth", [250, 5000])
def test_a_deeply_nested_document_is_refused_not_a_recursion_error(tmp_path, depth):
    data, out = triage(tmp_path)
    data["report"] = {"deep": "HERE"}
    text = json.dumps(data).replace('"HERE"', '{"a": ' * depth + "1" + "}" * depth)
    out.write_text(text)
    with pytest.raises(ArtifactError, match="nested"):
        load_artifact(out)
    r = subprocess.run([sys.executable, "-m", "lmpc", "graph", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "nested" in r.stderr


def test_a_real_artifact_still_loads_after_all_that(tmp_path):
    data, out = triage(tmp_path)
    save(out, data)
    assert load_artifact(out).graph.graph["order"][0].startswith("in:")
    assert os.path.exists(tmp_path / "routing.py")
