"""Python `call` steps: run only the functions that the .lmp file names explicitly."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Callable

from lmpc.runtime.errors import LmpcRuntimeError

_lock = threading.Lock()
_modules: dict[Path, Any] = {}


def load_function(ref: str, base_dir: Path) -> Callable[..., Any]:
    """`file.py:function`, the file relative to the .lmp file's folder."""
    file, _, name = ref.partition(":")
    path = (base_dir / file).resolve()
    with _lock:
        module = _modules.get(path)
        if module is None:
            if not path.is_file():
                raise LmpcRuntimeError(f'call "{ref}": no file {path}')
            spec = importlib.util.spec_from_file_location(f"lmpc_user_{abs(hash(path))}", path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as e:  # the user's module failed to import: say where
                raise LmpcRuntimeError(f'call "{ref}": importing {path} failed: {type(e).__name__}: {e}') from e
            _modules[path] = module
    fn = getattr(module, name, None)
    if not callable(fn):
        raise LmpcRuntimeError(f'call "{ref}": {path.name} has no function `{name}`')
    return fn


def run_function(fn: Callable[..., Any], inputs: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
    result = fn(**inputs)
    if isinstance(result, dict) and set(result) >= set(outputs):
        return {k: result[k] for k in outputs}
    if len(outputs) == 1:
        return {outputs[0]: result}
    raise LmpcRuntimeError(f"the function must return a dict with the keys {', '.join(outputs)}")
