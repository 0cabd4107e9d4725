"""What a loaded artifact may do when it runs: the trust model (docs/security.md).

An artifact is data until it names something that acts on the user's behalf:
- Python files (`call` steps, a Python metric) are code, like a downloaded script. They run
  only with trust_code (`--trust-code`), only from the artifact's own folder, and only while
  their SHA-256 matches the one recorded at build time.
- Models that reach out: a remote endpoint (base_url), the environment variable whose value
  is sent as the API key (api_key_env), any option read from the environment (env("X")), a
  model file outside the artifact's folder, a Hugging Face download. Each needs trust_models
  (`--trust-models`), or the user supplies those options themselves (model_options /
  `--model-option NAME.OPTION=VALUE`), which replaces the artifact's values.
Builtin models and model files inside the artifact's folder need nothing.

A .lmp file is the user's own source, so none of this applies to it.
"""

from __future__ import annotations

from typing import Any

from lmpc.compiler.artifact import Artifact, ArtifactError, ArtifactTrustError, code_refs, sha256_file
from lmpc.compiler.artifact_graph import safe_relative_file
from lmpc.compiler.ir import walk
from lmpc.compiler.options import model_option_problems
from lmpc.runtime.redact import safe_url

TRUST_CODE_HINT = "pass --trust-code (lmpc.load(..., trust_code=True)) if you trust it: the code runs with your permissions"


def check_code(artifact: Artifact, trust_code: bool, include_metric: bool = False) -> None:
    """Refuse code the user has not trusted; with trust, check each file is the one the build used."""
    users = code_refs(artifact.graphs, artifact.optimize if include_metric else {})
    if not users:
        return
    name = artifact.path.name if artifact.path else "this artifact"
    if not trust_code:
        listed = "; ".join(f"{file} ({', '.join(u)})" for file, u in sorted(users.items()))
        raise ArtifactTrustError(f"{name} runs Python code: {listed}. {TRUST_CODE_HINT}")
    hashes = {c["file"]: c["sha256"] for c in artifact.code}
    for file in sorted(users):
        path = artifact.folder / file
        if not path.is_file():
            raise ArtifactError(f"{name} needs the Python file {file} beside it ({path}), which is missing; "
                                "copy it from the build's output folder")
        if sha256_file(path) != hashes[file]:
            raise ArtifactError(f"{path} changed since the build (its SHA-256 differs from the one {name} "
                                "records), so the artifact would not be the program that was scored; restore "
                                "the file or rebuild the artifact")


def _model_risks(name: str, spec: dict, supplied: set[str]) -> list[str]:
    """Why a model spec needs the user's approval (empty: it needs none)."""
    options = spec["options"]
    risks = []
    for key, value in options.items():
        # a list (base_url's pool of endpoints) may hold env("VAR") entries too
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "env" in item and key not in supplied:
                risks.append(f"reads the environment variable {item['env']} into its `{key}` option")
    if spec["provider"] == "openai":
        if "base_url" not in supplied:
            url = options.get("base_url")
            urls = [u for u in (url if isinstance(url, list) else [url]) if isinstance(u, str)]
            where = ", ".join(safe_url(u) for u in urls) if urls else "the default OpenAI endpoint"
            if isinstance(url, list) and not urls:
                where = "the servers its environment variables name"
            risks.append(f"sends your inputs to {where}")
        key_env = options.get("api_key_env")
        if key_env is not None and "api_key_env" not in supplied and not isinstance(key_env, dict):
            risks.append(f"sends the value of the environment variable {key_env} as its API key")
    else:
        path = options.get("path")
        if isinstance(path, str) and "path" not in supplied and not safe_relative_file(path):
            risks.append(f"loads the model file {path}, outside the artifact's folder")
        if options.get("hf") is not None and "hf" not in supplied:
            risks.append(f"downloads or reads the Hugging Face file {options['hf']}")
    return [f"model `{name}` ({spec['provider']}) {r}" for r in risks]


def _retriever_risks(spec: dict) -> list[str]:
    """Why a retrieve step's retriever needs approval: files outside the artifact's folder,
    like a model file; a Qdrant server, like a remote model (the queries are sent to it)."""
    risks = []
    corpus, path, url = spec.get("corpus"), spec.get("path"), spec.get("url")
    if isinstance(corpus, str) and not safe_relative_file(corpus):
        risks.append(f"reads the corpus file {corpus}, outside the artifact's folder")
    if isinstance(path, str) and not safe_relative_file(path):
        risks.append(f"opens the Qdrant folder {path}, outside the artifact's folder")
    if isinstance(url, dict):
        risks.append(f"reads the environment variable {url.get('env')} into its `url` option")
    elif isinstance(url, str):
        risks.append(f"sends your queries' vectors to the Qdrant server {safe_url(url)}")
    if spec.get("api_key_env"):
        risks.append(f"sends the value of the environment variable {spec['api_key_env']} as its API key")
    return [f"retriever `{spec.get('name')}` {r}" for r in risks]


def apply_model_options(artifact: Artifact, model_options: dict[str, dict[str, Any]] | None,
                        trust_models: bool, ready: set[str] = frozenset()) -> None:
    """Merge the user's own model options into every graph, then refuse unapproved models.

    `ready`: models the caller supplies as instances (nothing of the artifact's spec is used)."""
    model_options = model_options or {}
    declared = artifact.graph.graph["models"]
    for name in model_options:
        if name not in declared:
            raise ArtifactError(f"--model-option names the model `{name}`, which the artifact does not declare "
                                f"(it declares: {', '.join(declared)})")
    for g in artifact.graphs.values():
        g.graph["models"] = {
            n: {"provider": s["provider"], "options": {**s["options"], **model_options.get(n, {})}}
            for n, s in g.graph["models"].items()
        }
    for name, options in model_options.items():
        problems = model_option_problems(name, artifact.graph.graph["models"][name]["options"])
        if problems:
            raise ArtifactError("; ".join(problems))
    if trust_models:
        return
    risks = []
    for name, spec in artifact.graph.graph["models"].items():
        if name not in ready:
            risks += _model_risks(name, spec, set(model_options.get(name, {})))
    for g in artifact.graphs.values():  # a corpus is read like a model file: outside the folder needs approval
        for _, d in walk(g):
            for risk in (_retriever_risks(d["retriever"]) if d.get("kind") == "retrieve" else []):
                if risk not in risks:
                    risks.append(risk)
    if risks:
        label = artifact.path.name if artifact.path else "this artifact"
        lines = "\n".join(f"  - {r}" for r in risks)
        raise ArtifactTrustError(
            f"{label} uses models you have not approved:\n{lines}\n"
            "Pass --trust-models (lmpc.load(..., trust_models=True)) if you trust it, or supply those options "
            "yourself, e.g. --model-option NAME.base_url=URL --model-option NAME.api_key_env=VAR "
            "(model_options={NAME: {...}})")

