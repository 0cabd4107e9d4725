"""lmpc.runtime.models: local (llama.cpp) and remote (OpenAI-compatible) language models."""

from lmpc.runtime.models.base import CancelToken, Completion, GenerationRequest, Model, create_model
from lmpc.runtime.models.resolve import BUILTIN_MODELS, default_model_options, resolve_hf

__all__ = [
    "BUILTIN_MODELS",
    "CancelToken",
    "Completion",
    "GenerationRequest",
    "Model",
    "create_model",
    "default_model_options",
    "resolve_hf",
]
