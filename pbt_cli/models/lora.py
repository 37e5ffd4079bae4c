"""LoRA settings -> peft's LoraConfig, with target modules read from the model itself.

The reference code names target modules Llama does not have; here the default is every attention
and MLP projection the model actually contains (q/k/v/o and gate/up/down for Llama, Mistral,
Qwen, Gemma; the fused names of other families), found by walking its Linear layers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pbt_cli.errors import PbtError, require_at_least

# Attention and MLP projections across the common decoder families (Llama/Mistral/Qwen/Gemma,
# GPT-NeoX/Falcon fused qkv, GPT-2 style c_attn/c_proj/c_fc, Phi's dense layers).
PROJECTION_NAMES = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    "qkv_proj", "gate_up_proj", "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h",
    "c_attn", "c_proj", "c_fc", "fc1", "fc2", "Wqkv", "out_proj",
)


@dataclass(frozen=True)
class LoraSpec:
    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None  # None: every projection the model has

    def __post_init__(self) -> None:
        require_at_least("--lora-r", self.r)
        if not 0 <= self.lora_dropout < 1:
            raise PbtError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")


def linear_layer_names(model: Any) -> Counter:
    """How many Linear (incl. bitsandbytes 4/8-bit) layers carry each leaf name, lm_head excluded."""
    import torch

    counts: Counter = Counter()
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "lm_head" or not name:
            continue
        is_linear = isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")
        if is_linear:
            counts[leaf] += 1
    return counts


def default_target_modules(model: Any) -> list[str]:
    present = linear_layer_names(model)
    targets = [name for name in PROJECTION_NAMES if name in present]
    if not targets:
        raise PbtError(f"no known attention/MLP projection layers in {type(model).__name__} (its Linear layers: "
                       f"{', '.join(sorted(present)) or 'none'}); name them with --lora-target-modules")
    return targets


def lora_config(spec: LoraSpec, model: Any) -> Any:
    from peft import LoraConfig

    present = linear_layer_names(model)
    targets = list(spec.target_modules) if spec.target_modules else default_target_modules(model)
    missing = [t for t in targets if t not in present]
    if missing:
        raise PbtError(f"--lora-target-modules names {', '.join(missing)}, which {type(model).__name__} does not "
                       f"have; its Linear layers are: {', '.join(sorted(present))}")
    return LoraConfig(r=spec.r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")


def adapted_modules(model: Any) -> Counter:
    """Leaf names that received LoRA weights, with counts (what the training log prints)."""
    counts: Counter = Counter()
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and getattr(module, "lora_A", None) is not None and len(module.lora_A):
            counts[name.rsplit(".", 1)[-1]] += 1
    return counts
