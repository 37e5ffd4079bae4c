"""The vLLM backend (`--backend vllm`, `pip install 'pbt_cli[vllm]'`): vLLM's offline `LLM.chat`.

One engine per distinct base model (with its loading options), shared by every role that uses it:
when both agents and the extractor are one base model, one engine serves them all, and roles that
add a LoRA adapter reach the same engine through a `LoRARequest` (the engine gets `enable_lora`
and a `max_lora_rank` read from the adapters' adapter_config.json). When a command needs several
engines on one GPU, `gpu_memory_utilization` (0.9 in all unless set) is split evenly between them.
Each conversation gets its own `SamplingParams` with its own seed (seed + position in the batch),
so sampled replies are reproducible and independent of batching.

vLLM cannot be installed in pbt's CPU development environment (its wheels pin torch and
transformers versions of their own); tests/models/test_vllm_backend.py checks this module against
a fake `vllm` package that records calls, and a test marked `vllm` runs it for real where vLLM is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pbt_cli.errors import PbtError
from pbt_cli.models.backends import VLLM_MISSING
from pbt_cli.models.backends.base import GenerationUsage, Sampling, per_conversation
from pbt_cli.models.chat import (
    Conversation,
    ends_with_prefill,
    read_template_file,
    template_hash,
    template_text_hash,
)
from pbt_cli.models.resolve import ADAPTER_CONFIG, ResolvedModel, resolve
from pbt_cli.models.spec import ModelSpec

TOTAL_GPU_MEMORY_SHARE = 0.9


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise PbtError(VLLM_MISSING) from None
    return vllm


def engine_key(resolved: ResolvedModel) -> tuple:
    """Specs that share this key share one engine (same weights, same loading options)."""
    load = resolved.spec.load
    return (resolved.base, resolved.base_revision, resolved.gguf_file, load.dtype, load.quantization.label,
            load.trust_remote_code)


def adapter_folder(resolved: ResolvedModel) -> str | None:
    """A local folder for the adapter (hub adapters are fetched, or taken from the cache offline)."""
    if not resolved.adapter:
        return None
    if Path(resolved.adapter).is_dir():
        return str(resolved.adapter)
    from huggingface_hub import snapshot_download

    return snapshot_download(resolved.adapter, revision=resolved.adapter_revision)


def adapter_rank(folder: str) -> int:
    try:
        config = json.loads((Path(folder) / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError):
        raise PbtError(f"{folder}/{ADAPTER_CONFIG} cannot be read; the adapter folder is damaged") from None
    return int(config.get("r") or 16)


def sampling_params(vllm: Any, sampling: Sampling, index: int) -> Any:
    kwargs: dict[str, Any] = {
        "temperature": max(sampling.temperature, 0.0), "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens, "min_tokens": sampling.min_new_tokens,
    }
    if sampling.top_k > 0:
        kwargs["top_k"] = sampling.top_k
    if sampling.seed is not None and not sampling.greedy:
        kwargs["seed"] = sampling.seed + index
    return vllm.SamplingParams(**kwargs)


class VLLMEngines:
    """The engines of one pool, created lazily once every model the command needs is known."""

    def __init__(self, options: Any) -> None:
        self.options = options
        self.engines: dict[tuple, Any] = {}
        self.planned: dict[tuple, list[ResolvedModel]] = {}
        self.next_lora_id = 1
        self.lora_ids: dict[str, int] = {}

    def plan(self, resolved: ResolvedModel) -> None:
        group = self.planned.setdefault(engine_key(resolved), [])
        if all(r.spec.cache_key() != resolved.spec.cache_key() for r in group):
            group.append(resolved)

    def engine(self, resolved: ResolvedModel) -> Any:
        key = engine_key(resolved)
        if key in self.engines:
            return self.engines[key]
        self.plan(resolved)
        vllm = import_vllm()
        load = resolved.spec.load
        if load.quantization.load_in_8bit:
            raise PbtError("the vllm backend has no 8-bit bitsandbytes loading; use --load-in-4bit or none")
        share = self.options.gpu_memory_utilization or TOTAL_GPU_MEMORY_SHARE / max(1, len(self.planned))
        ranks = [adapter_rank(folder) for r in self.planned[key] if (folder := adapter_folder(r))]
        kwargs: dict[str, Any] = {
            "model": str(Path(resolved.base) / resolved.gguf_file) if resolved.gguf_file else resolved.base,
            "dtype": load.dtype, "tensor_parallel_size": self.options.tensor_parallel_size,
            "gpu_memory_utilization": round(share, 3), "trust_remote_code": load.trust_remote_code,
        }
        if resolved.base_revision:
            kwargs["revision"] = resolved.base_revision
        if resolved.gguf_file:
            kwargs["tokenizer"] = resolved.base
        if self.options.max_model_len:
            kwargs["max_model_len"] = self.options.max_model_len
        if load.quantization.load_in_4bit:
            kwargs["quantization"] = "bitsandbytes"
        if ranks:
            kwargs.update(enable_lora=True, max_lora_rank=max(ranks), max_loras=len(ranks))
        self.engines[key] = vllm.LLM(**kwargs)
        return self.engines[key]

    def lora_request(self, resolved: ResolvedModel) -> Any:
        folder = adapter_folder(resolved)
        if folder is None:
            return None
        from vllm.lora.request import LoRARequest

        if folder not in self.lora_ids:
            self.lora_ids[folder] = self.next_lora_id
            self.next_lora_id += 1
        return LoRARequest(Path(folder).name or "adapter", self.lora_ids[folder], folder)


class VLLMGenerator:
    def __init__(self, spec: ModelSpec, engines: VLLMEngines) -> None:
        self.spec = spec
        self.resolved = resolve(spec)
        self.engines = engines
        self.usage = GenerationUsage()
        self.chat_template = read_template_file(spec.chat_template) if spec.chat_template else None

    @classmethod
    def for_pool(cls, spec: ModelSpec, options: Any, pool: Any) -> VLLMGenerator:
        engines = getattr(pool, "_vllm_engines", None)
        if engines is None:
            engines = pool._vllm_engines = VLLMEngines(options)
            for planned in getattr(pool, "_planned", []):
                engines.plan(resolve(planned))
        return cls(spec, engines)

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling | Sequence[Sampling]) -> list[str]:
        started = time.perf_counter()
        vllm = import_vllm()
        engine = self.engines.engine(self.resolved)
        lora = self.engines.lora_request(self.resolved)
        samplings = per_conversation(sampling, len(conversations))
        replies: list[str] = [""] * len(conversations)
        # LLM.chat takes one add_generation_prompt / continue_final_message for a whole call
        for prefill in (False, True):
            indices = [i for i, c in enumerate(conversations) if ends_with_prefill(c) == prefill]
            if not indices:
                continue
            kwargs: dict[str, Any] = {
                "sampling_params": [sampling_params(vllm, samplings[i], i) for i in indices],
                "use_tqdm": False, "add_generation_prompt": not prefill, "continue_final_message": prefill,
            }
            if lora is not None:
                kwargs["lora_request"] = lora
            if self.chat_template:
                kwargs["chat_template"] = self.chat_template
            outputs = engine.chat([list(conversations[i]) for i in indices], **kwargs)
            for i, output in zip(indices, outputs, strict=True):
                completion = output.outputs[0]
                replies[i] = completion.text.strip()
                self.usage.prompt_tokens += len(output.prompt_token_ids or [])
                self.usage.generated_tokens += len(completion.token_ids or [])
            self.usage.calls += 1
        self.usage.sequences += len(conversations)
        self.usage.seconds += time.perf_counter() - started
        return replies

    def describe(self) -> dict[str, Any]:
        info = self.resolved.describe()
        info["backend"] = "vllm"
        if self.chat_template:
            info["chat_template_hash"] = template_text_hash(self.chat_template)
            return info
        try:
            info["chat_template_hash"] = template_hash(self.engines.engine(self.resolved).get_tokenizer())
        except Exception:  # describing must never fail a run
            info["chat_template_hash"] = None
        return info
