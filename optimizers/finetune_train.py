"""Train one LoRA adapter for a local GGUF model and write it as a GGUF adapter llama.cpp loads.

Route (docs/optimizers.md, "finetune"): transformers reads the GGUF (dequantized to float32:
the very weights llama.cpp computes with), peft adds LoRA to the attention's v/o projections
and the MLP, torch trains it on CPU, and the `gguf` package writes the adapter
(general.type "adapter", tensors `blk.N.<name>.weight.lora_a|lora_b`). q and k are left out:
llama.cpp stores them permuted against the Hugging Face layout, and v/o + MLP carry the task.

The loss is on the answer tokens only (the prompt's positions never reach the vocabulary
projection, which is also most of the time saved on a 49k-token vocabulary). Deterministic:
torch and the example order are seeded, one example per step.
"""

from __future__ import annotations

import importlib.util
import math
import os
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lmpc.optimizers.base import OptimizerConfigError

EXTRA = "pip install 'lmpc[finetune]'"
NEEDS = ("torch", "transformers", "peft", "gguf")
# Hugging Face module -> llama.cpp tensor name (the same for llama-style architectures)
TARGETS = {"v_proj": "attn_v", "o_proj": "attn_output", "gate_proj": "ffn_gate", "up_proj": "ffn_up",
           "down_proj": "ffn_down"}
PROGRESS_EVERY_S = 10.0


class FinetuneNotInstalled(OptimizerConfigError):
    """finetune's training libraries are not installed (exit 2, before any model call)."""


def require() -> None:
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise FinetuneNotInstalled(f"finetune trains a LoRA adapter with {', '.join(NEEDS)}; not installed: "
                                   f"{', '.join(missing)}. Install them with: {EXTRA}")


@dataclass
class Sample:
    prompt: list[int]  # token ids as the runtime evaluates the prompt
    answer: list[int]  # the target's tokens, end of turn included


@dataclass
class Trained:
    steps: int
    seconds: float
    loss_before: float  # mean answer-token loss over the training samples, before and after
    loss_after: float
    examples_per_s: float
    peak_rss_mb: float
    losses: list[float] = field(default_factory=list)  # per epoch: the mean training loss


_loaded: dict[str, Any] = {}  # GGUF path -> its dequantized model (loading takes ~10 s)


def _base_model(gguf: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    key = str(gguf.resolve())
    if key not in _loaded:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF conversion's bar: our own lines say enough
        try:
            _loaded[key] = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                                dtype=torch.float32)
        except Exception as e:  # an architecture transformers cannot read from GGUF
            raise OptimizerConfigError(f"finetune: transformers cannot read {gguf} ({type(e).__name__}: {e}); "
                                       "finetune supports the GGUF architectures transformers loads "
                                       "(llama, e.g. the builtin smollm2-135m)") from None
    return _loaded[key]


def _answer_loss(model: Any, s: Sample) -> Any:
    """Mean cross-entropy of the answer tokens given the prompt (and the answer so far)."""
    import torch
    import torch.nn.functional as F

    ids = torch.tensor([s.prompt + s.answer[:-1]])
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = inner.model(input_ids=ids).last_hidden_state[0, len(s.prompt) - 1:]
    logits = inner.lm_head(hidden)
    return F.cross_entropy(logits.float(), torch.tensor(s.answer))


def _mean_loss(model: Any, samples: list[Sample]) -> float:
    import torch

    with torch.no_grad():
        return sum(float(_answer_loss(model, s)) for s in samples) / max(len(samples), 1)


def train_lora(gguf: Path, samples: list[Sample], out: Path, *, epochs: int, lr: float, rank: int, alpha: float,
               seed: int, threads: int, log: Callable[[str], None], label: str) -> Trained:
    """Train on `samples` and write the adapter to `out` (atomically)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    base = _base_model(gguf)
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                                            target_modules=list(TARGETS)))
    try:
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        total = epochs * len(samples)
        warm = max(1, total // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(  # short warm-up, then linear decay
            opt, lambda i: min((i + 1) / warm, max(0.0, (total - i) / max(total - warm, 1))))
        loss_before = _mean_loss(model, samples)
        log(f"{label}: {len(samples)} examples, {total} steps; answer loss before {loss_before:.3f}")
        t0 = last = time.perf_counter()
        step, losses = 0, []
        rng = random.Random(f"lmpc:finetune:{seed}")
        for epoch in range(epochs):
            order = list(range(len(samples)))
            rng.shuffle(order)
            running = 0.0
            for i in order:
                loss = _answer_loss(model, samples[i])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
                step += 1
                running += float(loss.detach())
                now = time.perf_counter()
                if now - last >= PROGRESS_EVERY_S or step == total:
                    last = now
                    left = (now - t0) / step * (total - step)
                    log(f"{label}: step {step}/{total} (epoch {epoch + 1}/{epochs}), loss {float(loss):.3f}, "
                        f"{now - t0:.0f} s, about {math.ceil(left)} s left")
            losses.append(round(running / max(len(order), 1), 4))
        seconds = time.perf_counter() - t0
        model.eval()
        loss_after = _mean_loss(model, samples)
        write_adapter(model, gguf, out, alpha)
    finally:
        model.unload()  # the shared base model without LoRA layers, for the next node
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log(f"{label}: answer loss {loss_before:.3f} -> {loss_after:.3f} in {seconds:.0f} s "
        f"({step / max(seconds, 1e-9):.2f} examples/s), peak memory {peak:.0f} MB")
    return Trained(step, round(seconds, 2), round(loss_before, 4), round(loss_after, 4),
                   round(step / max(seconds, 1e-9), 3), round(peak, 1), losses)


def write_adapter(model: Any, gguf: Path, out: Path, alpha: float) -> None:
    """The LoRA weights as a GGUF adapter: A is (rank, in), B is (out, rank) in numpy order,
    which is llama.cpp's lora_a / lora_b; llama.cpp scales B·A by alpha / rank as peft does."""
    import gguf as gg
    import numpy as np

    arch = gg.GGUFReader(str(gguf)).fields["general.architecture"]
    arch_name = bytes(arch.parts[arch.data[0]]).decode("utf-8")
    tensors: list[tuple[str, Any]] = []
    for name, param in sorted(model.named_parameters()):
        if "lora_A" not in name and "lora_B" not in name:
            continue
        parts = name.split(".")
        layer = int(parts[parts.index("layers") + 1])
        module = next(p for p in parts if p in TARGETS)
        suffix = "lora_a" if "lora_A" in name else "lora_b"
        tensors.append((f"blk.{layer}.{TARGETS[module]}.weight.{suffix}",
                        np.ascontiguousarray(param.detach().float().numpy())))
    tmp = out.with_name(out.name + ".tmp")
    w = gg.GGUFWriter(str(tmp), arch_name)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(alpha))
    for name, array in tensors:
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)
