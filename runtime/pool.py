"""Model instances for a program: created lazily, one per declared model, shared by its steps."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from lmpc.runtime.errors import ModelConfigError
from lmpc.runtime.models import Model, create_model


def resolve_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Replace env("X") references with the environment's values."""
    out = {}
    for key, value in options.items():
        if isinstance(value, dict) and "env" in value:
            var = value["env"]
            if var not in os.environ:
                raise ModelConfigError(f"model `{name}`: option `{key}` comes from the environment variable "
                                       f"{var}, which is not set")
            value = os.environ[var]
        out[key] = value
    return out


class ModelPool:
    def __init__(self, specs: dict[str, dict], base_dir: Path | None, instances: dict[str, Model] | None = None):
        self.specs = specs
        self.base_dir = base_dir
        # Ready-made instances (a test's deterministic model, a model shared by a build's
        # programs); they are not closed by this pool.
        self._shared = dict(instances or {})
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Model:
        if name in self._shared:
            return self._shared[name]
        with self._lock:
            model = self._models.get(name)
            if model is None:
                if name not in self.specs:
                    raise ModelConfigError(f"no model named `{name}` (declared: {', '.join(self.specs)})")
                spec = self.specs[name]
                model = create_model(name, spec["provider"], resolve_options(name, spec["options"]), self.base_dir)
                self._models[name] = model
            return model

    def options(self, name: str) -> dict[str, Any]:
        spec = self.specs.get(name)
        return spec["options"] if spec else {}

    def close(self) -> None:
        with self._lock:
            for m in self._models.values():
                m.close()
            self._models.clear()
