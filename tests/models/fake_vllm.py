"""A strict fake of vLLM 0.33.0's offline API (`vllm.LLM`, `SamplingParams`, `LoRARequest`), for the
tests of pbt's vLLM backend, which cannot install vLLM on a CPU machine.

It accepts what vLLM 0.33.0 accepts and refuses what it refuses, raising the same exception types,
and it renders chat prompts as vLLM's offline path does: the chat template's text from the Hugging
Face tokenizer (`apply_chat_template(tokenize=False)`), then `tokenizer(text, add_special_tokens=False)`
(the template decides BOS; vLLM does not add special tokens again). It does not run a model: a reply
is " reply to <the first 20 characters of the last message> ".

Every rule names the vLLM source it comes from: `file:line (function)`, relative to the `vllm/`
folder of the `vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl` wheel. A vLLM upgrade is then a diff
of those places against this file.

`make_fake_vllm()` returns a `FakeVLLM`: `.modules` (module name -> module, to put in sys.modules)
and `.engines` (every `LLM` created, in order, each with `.kwargs` and `.calls`).
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import math
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = "0.33.0"  # vllm/_version.py:21

# --- exceptions: vllm/exceptions.py:10-65 ---------------------------------------------------------


class VLLMError(Exception):
    """vllm/exceptions.py:10."""


class VLLMClientError(VLLMError):
    """vllm/exceptions.py:20. Not a ValueError: `except ValueError` does not catch these."""


class VLLMValidationError(VLLMClientError):
    """vllm/exceptions.py:28-56: the message plus ` (parameter=..., value=...)` when given."""

    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value

    def __str__(self) -> str:
        base = super().__str__()
        extras = []
        if self.parameter is not None:
            extras.append(f"parameter={self.parameter}")
        if self.value is not None:
            extras.append(f"value={self.value}")
        return f"{base} ({', '.join(extras)})" if extras else base


class ChatTemplateResolutionError(VLLMClientError):
    """vllm/exceptions.py:65."""


# --- what the API accepts --------------------------------------------------------------------------

# vllm/entrypoints/llm.py:177-223 (LLM.__init__): `model` is the only positional parameter
LLM_PARAMETERS = frozenset({
    "model", "runner", "convert", "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code",
    "allowed_local_media_path", "allowed_media_domains", "tensor_parallel_size", "dtype", "quantization",
    "revision", "tokenizer_revision", "chat_template", "seed", "gpu_memory_utilization", "cpu_offload_gb",
    "offload_group_size", "offload_num_in_group", "offload_prefetch_step", "offload_params", "enforce_eager",
    "enable_return_routed_experts", "return_sampling_mask", "disable_custom_all_reduce", "hf_token",
    "hf_overrides", "mm_processor_kwargs", "pooler_config", "structured_outputs_config", "profiler_config",
    "attention_config", "kv_cache_memory_bytes", "compilation_config", "quantization_config",
    "logits_processors", "spec_method", "spec_model", "spec_tokens",
})

# vllm/engine/arg_utils.py:488-3240 (the EngineArgs dataclass): LLM passes its other keyword arguments
# to EngineArgs(**kwargs) (entrypoints/llm.py:295-340), and a dataclass refuses any other name with
# TypeError. Note what is *not* here any more: swap_space, max_seq_len_to_capture, tokenizer_pool_size,
# disable_log_requests, use_v2_block_manager, guided_decoding_backend, lora_extra_vocab_size.
ENGINE_ARGS_FIELDS = frozenset("""
model enable_return_routed_experts return_sampling_mask model_weights served_model_name tokenizer
hf_config_path runner convert skip_tokenizer_init enable_prompt_embeds tokenizer_mode trust_remote_code
allowed_local_media_path allowed_media_domains download_dir safetensors_load_strategy
safetensors_prefetch_num_threads safetensors_prefetch_block_size load_format config_format dtype
kv_cache_dtype seed max_model_len cudagraph_capture_sizes max_cudagraph_capture_size ir_op_priority
distributed_executor_backend pipeline_parallel_size master_addr master_port nnodes node_rank
distributed_timeout_seconds cpu_distributed_timeout_seconds numa_bind numa_bind_nodes numa_bind_cpus
device_ids tensor_parallel_size prefill_context_parallel_size decode_context_parallel_size dcp_comm_backend
dcp_q_replicate dcp_kv_cache_interleave_size cp_kv_cache_interleave_size data_parallel_size
data_parallel_rank data_parallel_start_rank data_parallel_size_local data_parallel_address
data_parallel_rpc_port data_parallel_hybrid_lb data_parallel_external_lb
data_parallel_multi_port_external_lb data_parallel_backend enable_hc_sp enable_expert_parallel
enable_batch_sharded_sampling enable_ep_weight_filter moe_backend linear_backend
sparse_indexer_topk_backend all2all_backend enable_elastic_ep elastic_ep_max_dp_size enable_dbo
ubatch_size dbo_decode_token_threshold dp_sync_interval dbo_prefill_token_threshold
disable_nccl_for_dp_synchronization eplb_config enable_eplb expert_placement_strategy _api_process_count
_api_process_rank max_parallel_loading_workers block_size enable_prefix_caching prefix_caching_hash_algo
prefix_cache_retention_interval disable_sliding_window disable_cascade_attn offload_backend
cpu_offload_gb cpu_offload_params offload_group_size offload_num_in_group offload_prefetch_step
offload_params gpu_memory_utilization kv_cache_memory_bytes max_num_batched_tokens
max_num_scheduled_tokens long_prefill_token_threshold long_prefill_token_threshold_adaptive
max_num_seqs max_num_active_seqs max_num_queued_reqs max_num_queued_tokens max_logprobs logprobs_mode
use_fp64_gumbel enable_trace_replay disable_log_stats aggregate_engine_logging revision code_revision
hf_token hf_overrides model_class_overrides tokenizer_revision quantization quantization_config
allow_deprecated_quantization enforce_eager disable_custom_all_reduce enable_shm_tensor_arena
language_model_only limit_mm_per_prompt enable_mm_embeds interleave_mm_strings media_io_kwargs
mm_processor_kwargs mm_processor_cache_gb mm_processor_cache_type mm_hasher_algorithm
mm_shm_cache_max_object_size_mb mm_encoder_only mm_encoder_tp_mode mm_encoder_attn_backend
mm_encoder_attn_dtype mm_encoder_fp8_scale_path mm_encoder_fp8_scale_save_path
mm_encoder_fp8_scale_save_margin io_processor_plugin renderer_num_workers skip_mm_profiling
video_pruning_rate video_pruning_method mm_tensor_ipc mm_processor_device mm_ipc_gpu_memory_gb
mm_device_do_normalize enable_lora max_loras max_lora_rank default_mm_loras fully_sharded_loras
max_cpu_loras lora_dtype lora_target_modules enable_tower_connector_lora specialize_active_lora
enable_mixed_moe_lora_format enable_moe_shared_loras max_lora_cls_labels ray_workers_use_nsight
num_gpu_blocks_override model_loader_extra_config ignore_patterns enable_chunked_prefill
disable_chunked_mm_input scheduler_reserve_full_isl prefill_schedule_interval watermark
disable_hybrid_kv_cache_manager structured_outputs_config aux_output_config reasoning_parser
reasoning_parser_plugin speculative_config spec_method spec_model spec_tokens watermark_config
diffusion_config show_hidden_metrics_for_version otlp_traces_endpoint collect_detailed_traces
per_request_spec_decode_metrics kv_cache_metrics kv_cache_metrics_sample custom_histogram_buckets
cudagraph_metrics enable_layerwise_nvtx_tracing enable_mfu_metrics enable_logging_iteration_details
jit_monitor_mode jit_monitor_verbose enable_mm_processor_stats scheduling_policy scheduler_cls
pooler_config compilation_config attention_config engram_config mamba_config kernel_config
enable_flashinfer_autotune monokernel worker_cls worker_extension_cls profiler_config logging_config
log_level log_config_file kv_transfer_config kv_events_config ec_transfer_config ec_manager_config
reasoning_config generation_config enable_sleep_mode sleep_mode_backend sleep_mode_offload_cudagraph
sleep_preserve_parameter_names enable_cumem_allocator enable_nccl_comm_suspend override_generation_config
model_impl attention_backend kv_cache_dtype_skip_layers mamba_cache_dtype mamba_ssm_cache_dtype
mamba_block_size prefix_match_unit mamba_cache_mode enable_mamba_shared_prefix_checkpoint
replayssm_buffer_len use_replayssm mamba_backend mamba_ssu_algorithm
enable_mamba_cache_stochastic_rounding mamba_cache_philox_rounds additional_config use_tqdm_on_load
pt_load_map_location logits_processors async_scheduling stream_interval kv_sharing_fast_prefill
swa_bounded_replay optimization_level performance_mode fault_tolerance_config enable_fault_tolerance
kv_offloading_size kv_offloading_backend tokens_only shutdown_timeout watchdog_config
weight_transfer_config fail_on_environ_validation gdn_prefill_backend kda_prefill_backend
kda_decode_backend
""".split())

# vllm/config/model.py:99 (ModelDType); anything else fails pydantic's Literal check
MODEL_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")

# vllm/model_executor/layers/quantization/__init__.py:15-50 (QuantizationMethods): no "bitsandbytes",
# no "gguf"
QUANTIZATION_METHODS = (
    "awq", "auto_awq", "fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4", "modelopt_mxfp8",
    "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin", "humming", "compressed-tensors",
    "experts_int8", "quark", "moe_wna16", "torchao", "inc", "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8",
    "online", "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only",
    "nvfp4_per_token", "mxfp8",
)
DEPRECATED_QUANTIZATION_METHODS = ("fbgemm_fp8", "fp_quant")  # same file, lines 52-55

# vllm/tokenizers/registry.py:46-62 (_VLLM_TOKENIZERS): the modes a tokenizer can be loaded with
# ("slow" is gone)
TOKENIZER_MODES = ("alpamayo2_super", "cohere", "deepseek_v32", "deepseek_v4", "deepseek_v41", "hf",
                   "kimi_audio", "kimi_k3", "mistral", "inkling")

# vllm/config/lora.py:27 (MaxLoRARanks)
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# vllm/transformers_utils/model_arch_config_convertor.py:376-392 (derive_max_model_len_and_key)
MAX_LEN_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len")

# vllm/sampling_params.py:285-446 (the SamplingParams struct's fields, in order) and their defaults
SAMPLING_DEFAULTS: dict[str, Any] = {
    "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "temperature": 1.0,
    "watermarking": None, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": None, "stop": None,
    "stop_token_ids": None, "ignore_eos": False, "max_tokens": 16, "min_tokens": 0, "logprobs": None,
    "prompt_logprobs": None, "prompt_logprob_token_ids": None, "prompt_logprob_start": None,
    "logprob_token_ids": None, "flat_logprobs": False, "detokenize": True, "skip_special_tokens": True,
    "spaces_between_special_tokens": True, "include_stop_str_in_output": False, "output_kind": None,
    "stream_interval": None, "skip_clone": False, "output_text_buffer_length": 0, "_eos_token_id": None,
    "_all_stop_token_ids": None, "_watermarking_skipped": False, "structured_outputs": None,
    "logit_bias": None, "allowed_token_ids": None, "extra_args": None, "bad_words": None,
    "_bad_words_token_ids": None, "skip_reading_prefix_cache": None, "thinking_token_budget": None,
    "repetition_detection": None, "routed_experts_prompt_start": 0, "trace_decode_token_ids": None,
}
_SAMPLING_EPS = 1e-5  # vllm/sampling_params.py:33-34
_MAX_TEMP = 1e-2


# --- SamplingParams: vllm/sampling_params.py ---------------------------------------------------------


class SamplingParams:
    """vllm/sampling_params.py:271 (a msgspec.Struct, not keyword-only). `given` holds the arguments
    passed, as msgspec's omit_defaults would show them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = list(SAMPLING_DEFAULTS)
        if len(args) > len(names):
            raise TypeError(f"Expected at most {len(names)} positional arguments")
        for name, value in zip(names, args, strict=False):
            if name in kwargs:
                raise TypeError(f"Argument '{name}' given by name and position")
            kwargs[name] = value
        for name in kwargs:
            if name not in SAMPLING_DEFAULTS:
                raise TypeError(f"Unexpected keyword argument '{name}'")  # msgspec.Struct's own refusal
        self.given = dict(kwargs)
        for name, default in SAMPLING_DEFAULTS.items():
            setattr(self, name, kwargs.get(name, default))
        self.__post_init__()

    def __post_init__(self) -> None:
        """vllm/sampling_params.py:559-632 (__post_init__)."""
        if 0 < self.temperature < _MAX_TEMP:
            self.temperature = max(self.temperature, _MAX_TEMP)  # clamped with a warning, no error
        if self.seed == -1:
            self.seed = None
        self.stop = [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else self.stop
        self._verify_args()
        if self.temperature < _SAMPLING_EPS:  # greedy
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0
            if self.n > 1:
                raise VLLMValidationError(f"n must be 1 when using greedy sampling, got {self.n}.")

    def _verify_args(self) -> None:
        """vllm/sampling_params.py:634-747 (_verify_args): every failure is a VLLMValidationError."""
        if not isinstance(self.n, int):
            raise VLLMValidationError(f"n must be an int, but is of type {type(self.n)}")  # lines 49-62
        if self.n < 1:
            raise VLLMValidationError(f"n must be at least 1, got {self.n}.")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise VLLMValidationError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}.")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise VLLMValidationError(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}.")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0.0:
            raise VLLMValidationError("repetition_penalty must be greater than zero, got "
                                      f"{self.repetition_penalty}.")
        if not math.isfinite(self.temperature):
            raise VLLMValidationError(f"temperature must be a finite number, got {self.temperature}.",
                                      parameter="temperature", value=self.temperature)
        if self.temperature < 0.0:
            raise VLLMValidationError(f"temperature must be non-negative, got {self.temperature}.",
                                      parameter="temperature", value=self.temperature)
        if self.temperature > 2.0:  # line 668
            raise VLLMValidationError(f"temperature must be in [0, 2], got {self.temperature}.",
                                      parameter="temperature", value=self.temperature)
        if not 0.0 < self.top_p <= 1.0:  # lines 674-679
            raise VLLMValidationError(f"top_p must be in (0, 1], got {self.top_p}.", parameter="top_p",
                                      value=self.top_p)
        if self.top_k < -1:  # lines 681-688
            raise VLLMValidationError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if not isinstance(self.top_k, int):
            raise VLLMValidationError(f"top_k must be an integer, got {type(self.top_k).__name__}")
        if not 0.0 <= self.min_p <= 1.0:
            raise VLLMValidationError(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:  # lines 691-696
            raise VLLMValidationError(f"max_tokens must be at least 1, got {self.max_tokens}.",
                                      parameter="max_tokens", value=self.max_tokens)
        if self.min_tokens < 0:  # lines 697-705
            raise VLLMValidationError(f"min_tokens must be greater than or equal to 0, got "
                                      f"{self.min_tokens}.")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise VLLMValidationError(f"min_tokens must be less than or equal to "
                                      f"max_tokens={self.max_tokens}, got {self.min_tokens}.")
        if self.stop and any(s == "" for s in self.stop):
            raise VLLMValidationError("stop cannot contain an empty string.")

    def __repr__(self) -> str:
        return f"SamplingParams({', '.join(f'{k}={v!r}' for k, v in self.given.items())})"


# --- LoRARequest: vllm/lora/request.py ---------------------------------------------------------------


class LoRARequest:
    """vllm/lora/request.py:14-69: a msgspec.Struct `(lora_name, lora_int_id, lora_path="", ...)`;
    `lora_local_path` is gone; equality and hashing go by `lora_name` alone (lines 56-69)."""

    _FIELDS = ("lora_name", "lora_int_id", "lora_path", "base_model_name", "load_inplace",
               "is_3d_lora_weight")

    def __init__(self, lora_name: str, lora_int_id: int, lora_path: str = "",
                 base_model_name: str | None = None, load_inplace: bool = False,
                 is_3d_lora_weight: bool = False) -> None:
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path
        self.base_model_name, self.load_inplace = base_model_name, load_inplace
        self.is_3d_lora_weight = is_3d_lora_weight
        if self.lora_int_id < 1:  # __post_init__
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        assert self.lora_path, "lora_path cannot be empty"

    @property
    def adapter_id(self) -> int:
        return self.lora_int_id

    @property
    def name(self) -> str:
        return self.lora_name

    @property
    def path(self) -> str:
        return self.lora_path

    def __eq__(self, value: object) -> bool:
        return isinstance(value, LoRARequest) and self.lora_name == value.lora_name

    def __hash__(self) -> int:
        return hash(self.lora_name)

    def __repr__(self) -> str:
        return f"LoRARequest({', '.join(f'{k}={getattr(self, k)!r}' for k in self._FIELDS)})"


# --- outputs: vllm/outputs.py --------------------------------------------------------------------------


@dataclass
class CompletionOutput:
    """vllm/outputs.py (CompletionOutput)."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: Any = None
    lora_request: LoRARequest | None = None


@dataclass
class RequestOutput:
    """vllm/outputs.py (RequestOutput)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool
    lora_request: LoRARequest | None = None


# --- tokenizers ---------------------------------------------------------------------------------------


def repo_files(folder: str) -> list[str]:
    """vllm/transformers_utils/repo_utils.py:137-206 (list_repo_files): a local folder, recursively."""
    path = Path(folder)
    return [str(f.relative_to(path)) for f in path.rglob("*") if f.is_file()] if path.is_dir() else []


def any_pattern(folder: str, patterns: Sequence[str]) -> bool:
    """vllm/transformers_utils/repo_utils.py:166-222: fnmatch on each file's basename."""
    return any(fnmatch.fnmatch(Path(f).name, p) for f in repo_files(folder) for p in patterns)


def resolve_tokenizer_mode(tokenizer: str, mode: str) -> str:
    """vllm/tokenizers/registry.py:145-164 (resolve_tokenizer_args): "auto" becomes "mistral" when the
    repository has `consolidated*.safetensors` (repo_utils.py:230-242, is_mistral_model_repo) and
    `tekken.json` or `tokenizer.model.v*`, else "hf"."""
    if mode == "auto" and any_pattern(tokenizer, ["consolidated*.safetensors"]) and any_pattern(
            tokenizer, ["tekken.json", "tokenizer.model.v*"]):
        mode = "mistral"
    if mode == "auto":
        mode = "hf"
    if mode not in TOKENIZER_MODES:  # registry.py:82-84 (load_tokenizer_cls)
        raise ValueError(f"No tokenizer registered for tokenizer_mode={mode!r}.")
    return mode


class FakeMistralTokenizer:
    """vLLM's Mistral tokenizer (vllm/tokenizers/mistral.py:386-420, apply_chat_template): it reads only
    add_generation_prompt, continue_final_message, tokenize, padding, truncation and max_length, so a
    given `chat_template` is dropped without a word (vllm/renderers/mistral.py:62-88 passes it in).
    mistral_common's own format is stood in for by `[INST] ... [/INST]`."""

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf = hf_tokenizer
        self.chat_template = None
        self.bos_token_id = hf_tokenizer.bos_token_id

    def apply_chat_template(self, messages: list[dict], tools: Any = None, **kwargs: Any) -> list[int]:
        add_generation_prompt = kwargs.pop("add_generation_prompt", False)
        continue_final_message = kwargs.get("continue_final_message", False)
        # vllm/tokenizers/mistral.py:117-143 (_validate_apply_chat_template_args)
        if add_generation_prompt and continue_final_message:
            raise ValueError("Cannot set both `add_generation_prompt` and `continue_final_message` to True.")
        if add_generation_prompt and messages[-1]["role"] == "assistant":
            raise ValueError("Cannot set `add_generation_prompt` to True when the last message is from the "
                             "assistant.")
        if continue_final_message and messages[-1]["role"] != "assistant":
            raise ValueError("Cannot set `continue_final_message` to True when the last message is not from "
                             "the assistant.")
        text = "<s>" + "".join(f"[INST]{m['content']}[/INST]" if m["role"] == "user" else m["content"]
                               for m in messages)
        return list(self.hf(text, add_special_tokens=False)["input_ids"])  # tokenize=True on this path

    def __call__(self, text: str, **kwargs: Any) -> Any:
        return self.hf(text, **kwargs)

    def decode(self, ids: Sequence[int], **kwargs: Any) -> str:
        return self.hf.decode(ids, **kwargs)


# --- the engine -----------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """The parts of vllm/config/model.py's ModelConfig that the backend reads."""

    model: str
    tokenizer: str
    tokenizer_mode: str
    dtype: str
    max_model_len: int
    quantization: str | None
    runner_type: str = "generate"


@dataclass
class LoRAConfig:
    """vllm/config/lora.py:30-36."""

    max_lora_rank: int = 16
    max_loras: int = 1
    max_cpu_loras: int | None = None


@dataclass
class LLMEngine:
    """vllm/v1/engine/llm_engine.py: `LLM.llm_engine` (entrypoints/llm.py:341-344)."""

    model_config: ModelConfig
    lora_config: LoRAConfig | None
    tokenizer: Any
    aborted: list[str] = field(default_factory=list)

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def abort_request(self, request_ids: list[str], internal: bool = False) -> None:
        self.aborted.extend(request_ids)


def pydantic_error(config: str, message: str) -> ValueError:
    """vLLM's config classes are pydantic dataclasses (vllm/config/utils.py:70-76): a ValueError in their
    checks comes out as pydantic_core.ValidationError, a ValueError subclass, worded like this."""
    return ValueError(f"1 validation error for {config}\n  Value error, {message} [type=value_error]")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


class LLM:
    """vllm/entrypoints/llm.py (LLM), offline `chat` only."""

    def __init__(self, model: str, **kwargs: Any) -> None:
        self.kwargs = {"model": model, **kwargs}
        self.calls: list[dict[str, Any]] = []
        self.request_counter = itertools.count()  # llm.py:347 (a per-LLM Counter of request ids)
        for name in kwargs:
            if name not in LLM_PARAMETERS and name not in ENGINE_ARGS_FIELDS:
                # entrypoints/llm.py:295-340 passes **kwargs to the EngineArgs dataclass
                raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{name}'")
        if int(kwargs.get("data_parallel_size", 1)) > 1:  # llm.py:280-293
            raise ValueError(f"LLM(data_parallel_size={kwargs['data_parallel_size']}) is not supported for "
                             "single-process usage and may hang.")
        dtype = kwargs.get("dtype", "auto")
        if dtype not in MODEL_DTYPES:  # config/model.py:99, a Literal field
            raise pydantic_error("ModelConfig", f"Input should be {', '.join(map(repr, MODEL_DTYPES))}")
        seed = kwargs.get("seed", 0)
        if not isinstance(seed, int):  # config/model.py:210, `seed: int = 0`: None is refused
            raise pydantic_error("ModelConfig", "seed: Input should be a valid integer")
        share = kwargs.get("gpu_memory_utilization", 0.92)  # config/cache.py:215, Field(gt=0, le=1)
        if not 0 < share <= 1:
            raise pydantic_error("CacheConfig", "gpu_memory_utilization: Input should be greater than 0 and "
                                                f"less than or equal to 1, got {share}")
        if kwargs.get("tensor_parallel_size", 1) < 1:  # config/parallel.py:142, Field(ge=1)
            raise pydantic_error("ParallelConfig",
                                 "tensor_parallel_size: Input should be greater than or equal to 1")

        hf_config = self._hf_config(model)
        quantization = self._quantization(kwargs.get("quantization"), hf_config, kwargs)
        tokenizer_name = kwargs.get("tokenizer") or model
        max_model_len = self._max_model_len(kwargs.get("max_model_len"), hf_config, tokenizer_name)
        lora_config = self._lora_config(kwargs)
        mode = resolve_tokenizer_mode(tokenizer_name, str(kwargs.get("tokenizer_mode", "auto")).lower())
        tokenizer = self._load_tokenizer(tokenizer_name, mode, kwargs)
        self.model_config = ModelConfig(model=model, tokenizer=tokenizer_name, tokenizer_mode=mode,
                                        dtype=dtype, max_model_len=max_model_len, quantization=quantization)
        self.llm_engine = LLMEngine(self.model_config, lora_config, tokenizer)  # llm.py:341-344
        self.chat_template = self._load_chat_template(kwargs.get("chat_template"))  # llm.py:355

    # -- construction -------------------------------------------------------------------------------

    @staticmethod
    def _hf_config(model: str) -> dict:
        """vllm/transformers_utils/config.py:879-923 (get_config, config_format "auto"): config.json (or
        Mistral's params.json with consolidated weights) in a folder or hub repository. There is no GGUF
        loader in 0.33 (model_executor/model_loader/__init__.py:33-49 has no "gguf" load format), so a
        .gguf file fails here. The fake knows no hub: a name that is not a local folder fails too."""
        path = Path(model)
        config = path / "config.json"
        if not (path.is_dir() and (config.is_file() or (path / "params.json").is_file())):
            raise ValueError(f"Invalid repository ID or local directory specified: '{model}'.\nPlease verify "
                             "the following requirements:\n1. Provide a valid Hugging Face repository ID.\n"
                             "2. Specify a local directory that contains a recognized configuration file.")
        return read_json(config)

    @staticmethod
    def _quantization(quantization: str | None, hf_config: dict, kwargs: dict) -> str | None:
        """vllm/config/model.py:1383-1486 (_verify_quantization)."""
        if quantization is not None:
            quantization = quantization.lower()  # config/model.py:1055-1059
        method = (hf_config.get("quantization_config") or {}).get("quant_method") or None
        if method is not None:
            if quantization is None:
                quantization = method
            elif quantization != method:
                raise pydantic_error("ModelConfig", "Quantization method specified in the model config "
                                                    f"({method}) does not match the quantization method "
                                                    "specified in the `quantization` argument "
                                                    f"({quantization}).")
        if quantization is not None and quantization not in QUANTIZATION_METHODS:
            raise pydantic_error("ModelConfig", f"Unknown quantization method: {quantization}. Must be one "
                                                f"of {list(QUANTIZATION_METHODS)}.")
        allow_deprecated = kwargs.get("allow_deprecated_quantization")
        if quantization in DEPRECATED_QUANTIZATION_METHODS and not allow_deprecated:
            raise pydantic_error("ModelConfig", f"The quantization method {quantization} is deprecated")
        return quantization

    @staticmethod
    def _max_model_len(requested: int | None, hf_config: dict, tokenizer: str) -> int:
        """vllm/config/model.py:2545-2683 (_get_and_verify_max_len): the smallest length key of the config
        (model_arch_config_convertor.py:374-407), capped by tokenizer_config.json's model_max_length;
        a larger user value is refused (without VLLM_ALLOW_LONG_MAX_MODEL_LEN)."""
        derived = float("inf")
        for key in MAX_LEN_KEYS:
            if isinstance(hf_config.get(key), int | float):
                derived = min(derived, hf_config[key])
        tokenizer_max = read_json(Path(tokenizer) / "tokenizer_config.json").get("model_max_length")
        if isinstance(tokenizer_max, int | float):
            derived = min(derived, tokenizer_max)
        if derived == float("inf"):
            derived = 2048  # config/model.py:2579-2596, the default when no key is found
        if requested is None or requested == -1:
            return int(derived)
        if requested < 1:  # config/model.py:249 Field(ge=-1) and 1070-1075
            raise pydantic_error("ModelConfig", f"max_model_len must be a positive integer, got {requested}")
        if requested > derived:
            raise pydantic_error("ModelConfig", f"User-specified max_model_len ({requested}) is greater than "
                                                f"the derived max_model_len ({int(derived)}). To allow "
                                                "overriding this maximum, set the env var "
                                                "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.")
        return int(requested)

    @staticmethod
    def _lora_config(kwargs: dict) -> LoRAConfig | None:
        """vllm/engine/arg_utils.py:2691-2710: a LoRAConfig only with enable_lora (so without it the LoRA
        settings go unchecked); vllm/config/lora.py:27-36 and 121-127 check it."""
        if not kwargs.get("enable_lora"):
            return None
        config = LoRAConfig(max_lora_rank=kwargs.get("max_lora_rank", 16),
                            max_loras=kwargs.get("max_loras", 1), max_cpu_loras=kwargs.get("max_cpu_loras"))
        if config.max_lora_rank not in MAX_LORA_RANKS or isinstance(config.max_lora_rank, bool):
            raise pydantic_error("LoRAConfig", "max_lora_rank: Input should be 1, 8, 16, 32, 64, 128, 256, "
                                               "320 or 512 [type=literal_error]")
        if config.max_loras < 1:
            raise pydantic_error("LoRAConfig", "max_loras: Input should be greater than or equal to 1")
        if config.max_cpu_loras is not None and config.max_cpu_loras < config.max_loras:
            raise pydantic_error("LoRAConfig", f"max_cpu_loras ({config.max_cpu_loras}) must be >= max_loras "
                                               f"({config.max_loras})")
        return config

    @staticmethod
    def _load_tokenizer(name: str, mode: str, kwargs: dict) -> Any:
        """vllm/tokenizers/hf.py:171-190 (CachedHfTokenizer.from_pretrained): AutoTokenizer, as pbt does."""
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(name, trust_remote_code=bool(kwargs.get("trust_remote_code")))
        return FakeMistralTokenizer(hf) if mode == "mistral" else hf

    @staticmethod
    def _load_chat_template(chat_template: Any) -> str | None:
        """vllm/renderers/chat_utils/chat_template.py:57-104 (_load_chat_template): a file, else a literal
        when it has `{`, `}` or a newline, else a refused "path"."""
        if chat_template is None:
            return None
        try:
            return Path(chat_template).read_text()
        except OSError as exc:
            if isinstance(chat_template, Path):
                raise
            if not any(c in chat_template for c in "{}\n"):
                raise VLLMValidationError(f"The supplied chat template ({chat_template}) looks like a file "
                                          "path, but it failed to be opened.",
                                          parameter="chat_template") from exc
            return chat_template

    def get_tokenizer(self) -> Any:
        return self.llm_engine.get_tokenizer()  # llm.py:385-386

    # -- LLM.chat -----------------------------------------------------------------------------------

    def chat(self, messages: Any, sampling_params: Any = None, use_tqdm: Any = True, lora_request: Any = None,
             priority: Any = None, chat_template: str | None = None,
             chat_template_content_format: str = "auto", add_generation_prompt: bool = True,
             continue_final_message: bool = False, tools: Any = None,
             chat_template_kwargs: dict | None = None, tokenization_kwargs: dict | None = None,
             mm_processor_kwargs: dict | None = None) -> list[RequestOutput]:
        """vllm/entrypoints/llm.py:616-720 (LLM.chat; not keyword-only) and
        vllm/entrypoints/common/offline.py (OfflineInferenceMixin)."""
        # renderers/chat_utils/types.py:354 (ChatTemplateContentFormatOption)
        if chat_template_content_format not in ("auto", "string", "openai"):
            raise ValueError(f"chat_template_content_format must be auto, string or openai, got "
                             f"{chat_template_content_format!r}")
        # renderers/inputs/preprocess.py:57-66 (conversation_to_seq): one conversation or a list of them
        one = bool(messages) and all(isinstance(m, dict) for m in messages)
        conversations = [messages] if one else list(messages)
        if sampling_params is None:
            sampling_params = SamplingParams()  # llm.py:410-415 (the model's generation_config in vLLM)
        params = self._to_seq(sampling_params, len(conversations), "params")  # offline.py:253-267
        loras = self._to_seq(lora_request, len(conversations), "lora_request")  # offline.py:269-283
        for param in params:
            if not isinstance(param, SamplingParams):
                raise TypeError(f"sampling_params must be SamplingParams, got {type(param).__name__}")
        # offline.py:183-211: the given template (else LLM(chat_template=...)); the template emits BOS/EOS,
        # so the rendered text is tokenized with add_special_tokens=False unless the caller asks otherwise
        template = self.chat_template if chat_template is None else chat_template
        template_kwargs = {**(chat_template_kwargs or {}), "add_generation_prompt": add_generation_prompt,
                           "continue_final_message": continue_final_message}  # renderers/params.py:38-50
        add_special_tokens = {"add_special_tokens": False, **(tokenization_kwargs or {})}
        add_special_tokens = add_special_tokens["add_special_tokens"]
        call: dict[str, Any] = {
            "messages": conversations, "sampling_params": params, "lora_request": lora_request,
            "chat_template": chat_template, "use_tqdm": use_tqdm,
            "add_generation_prompt": add_generation_prompt,
            "continue_final_message": continue_final_message, "prompts": [], "prompt_token_ids": [],
        }
        self.calls.append(call)
        added: list[tuple[str, list[int], str | None, SamplingParams, LoRARequest | None]] = []
        try:  # offline.py:539-566 (_render_and_add_requests): one failure aborts the requests added so far
            for i, conversation in enumerate(conversations):
                text, ids = self._render(conversation, template, template_kwargs, tools, add_special_tokens)
                call["prompts"].append(text)
                call["prompt_token_ids"].append(ids)
                request_id = self._add_request(ids, params[i], loras[i])
                added.append((request_id, ids, text, params[i], loras[i]))
        except Exception:
            if added:
                self.llm_engine.abort_request([a[0] for a in added], internal=True)
            raise
        tokenizer = self.get_tokenizer()
        outputs = []
        for i, (request_id, ids, text, param, lora) in enumerate(added):
            last = str(conversations[i][-1]["content"])
            reply = f" reply to {last[:20]} "
            reply_ids = list(tokenizer(reply, add_special_tokens=False)["input_ids"])
            reply_ids = reply_ids[: param.max_tokens or None]
            outputs.append(RequestOutput(request_id, text, ids, None, [CompletionOutput(0, reply, reply_ids,
                                         finish_reason="stop", lora_request=lora)], True, lora))
        return sorted(outputs, key=lambda o: int(o.request_id))  # offline.py:642, in input order

    @staticmethod
    def _to_seq(value: Any, count: int, what: str) -> list[Any]:
        """vllm/entrypoints/common/offline.py:253-283 (_params_to_seq, _lora_request_to_seq)."""
        if isinstance(value, Sequence) and not isinstance(value, str):
            if len(value) != count:
                raise VLLMValidationError(f"The lengths of prompts ({count}) and {what} ({len(value)}) must "
                                          "be the same.")
            return list(value)
        return [value] * count

    def _render(self, conversation: list[dict], template: str | None, template_kwargs: dict, tools: Any,
                add_special_tokens: bool) -> tuple[str | None, list[int]]:
        tokenizer = self.get_tokenizer()
        if isinstance(tokenizer, FakeMistralTokenizer):
            # renderers/mistral.py:62-88: tokenize=True, chat_template dropped; AssertionError and
            # mistral_common's errors become ValueError (lines 23-47)
            try:
                return None, tokenizer.apply_chat_template(conversation, tools=tools, chat_template=template,
                                                           **template_kwargs)
            except Exception as exc:
                raise ValueError(str(exc)) from exc
        # renderers/hf.py:306-361 (resolve_chat_template): the given template, else the tokenizer's own
        # (a literal string is used as is by transformers' get_chat_template)
        resolved = template if template is not None else getattr(tokenizer, "chat_template", None)
        if not resolved:  # renderers/hf.py:884-890
            raise ChatTemplateResolutionError("As of transformers v4.44, default chat template is no longer "
                                              "allowed, so you must provide a chat template if the tokenizer "
                                              "does not define one.")
        try:  # renderers/hf.py:915-928: every template error becomes a VLLMValidationError
            text = tokenizer.apply_chat_template(conversation, tools=tools, chat_template=resolved,
                                                 tokenize=False, **template_kwargs)
        except Exception as exc:
            raise VLLMValidationError(str(exc)) from exc
        # renderers/base.py:667-682 (_tokenize_prompt) with the chat defaults of renderers/base.py:528-540
        max_len = self.model_config.max_model_len
        ids = list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
        if len(ids) > max_len:  # renderers/params.py:531-551 (_token_len_check)
            raise VLLMValidationError(f"This model's maximum context length is {max_len} tokens. However, "
                                      f"your prompt contains {len(ids)} input tokens, which exceeds this "
                                      "limit even without any output tokens. Please reduce the length of the "
                                      "input prompt.", parameter="input_tokens", value=len(ids))
        return text, ids

    def _add_request(self, ids: list[int], params: SamplingParams, lora: LoRARequest | None) -> str:
        """vllm/v1/engine/input_processor.py:373-433 (process_inputs)."""
        engine = self.llm_engine
        if lora is not None:
            if not isinstance(lora, LoRARequest):
                raise TypeError(f"lora_request must be a LoRARequest, got {type(lora).__name__}")
            if engine.lora_config is None:  # input_processor.py:278-295 (_validate_lora)
                raise VLLMValidationError(f"Got lora_request {lora} but LoRA is not enabled!")
            self._check_adapter(lora, engine.lora_config)
        max_len = self.model_config.max_model_len
        # input_processor.py:557-602 (_validate_prompt_len): a prompt needs room for one output token
        if not ids:
            raise VLLMValidationError("The decoder prompt cannot be empty")
        if len(ids) > max_len:
            raise VLLMValidationError(f"The decoder prompt (length {len(ids)}) is longer than the maximum "
                                      f"model length of {max_len}. Make sure that `max_model_len` is no "
                                      "smaller than the number of text tokens.")
        if len(ids) == max_len:
            raise VLLMValidationError(f"The decoder prompt (length {len(ids)}) plus the number of requested "
                                      "output tokens (at least 1) is longer than the maximum model length of "
                                      f"{max_len}. Make sure that `max_model_len` is no smaller than the "
                                      "number of text tokens (prompt + requested output tokens).")
        return str(next(self.request_counter))

    @staticmethod
    def _check_adapter(lora: LoRARequest, config: LoRAConfig) -> None:
        """vllm/lora/worker_manager.py:106-167 and lora/peft_helper.py:188-202 (validate_legal): the adapter
        must exist and its largest rank (`r` and `rank_pattern`) fit max_lora_rank. (In vLLM this fails
        in the engine process; how it surfaces offline is not traced, a ValueError stands for it.)"""
        config_path = Path(lora.lora_path) / "adapter_config.json"
        if not config_path.is_file():
            raise ValueError(f"Loading lora {lora.lora_name} failed: No adapter found for {lora.lora_path}")
        adapter = read_json(config_path)
        rank = max([adapter.get("r", 8), *(adapter.get("rank_pattern") or {}).values()])
        if rank > config.max_lora_rank:
            raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank {config.max_lora_rank}.")


# --- the module --------------------------------------------------------------------------------------------


@dataclass
class FakeVLLM:
    modules: dict[str, types.ModuleType]
    engines: list[LLM]


def make_fake_vllm() -> FakeVLLM:
    """The `vllm` package as pbt imports it: `vllm.LLM`, `vllm.SamplingParams` (vllm/__init__.py:16-27),
    `vllm.lora.request.LoRARequest`, `vllm.exceptions`, `vllm.outputs`."""
    engines: list[LLM] = []

    class RecordedLLM(LLM):
        def __init__(self, model: str, **kwargs: Any) -> None:
            super().__init__(model, **kwargs)
            engines.append(self)

    def module(name: str, **attributes: Any) -> types.ModuleType:
        made = types.ModuleType(name)
        made.__dict__.update(attributes)
        return made

    exceptions = module("vllm.exceptions", VLLMError=VLLMError, VLLMClientError=VLLMClientError,
                        VLLMValidationError=VLLMValidationError,
                        ChatTemplateResolutionError=ChatTemplateResolutionError)
    request = module("vllm.lora.request", LoRARequest=LoRARequest)
    lora = module("vllm.lora", request=request)
    sampling = module("vllm.sampling_params", SamplingParams=SamplingParams)
    outputs = module("vllm.outputs", RequestOutput=RequestOutput, CompletionOutput=CompletionOutput)
    root = module("vllm", LLM=RecordedLLM, SamplingParams=SamplingParams, RequestOutput=RequestOutput,
                  CompletionOutput=CompletionOutput, __version__=VERSION, exceptions=exceptions, lora=lora,
                  sampling_params=sampling, outputs=outputs)
    root.__path__ = []  # a package, so `import vllm.lora.request` works
    lora.__path__ = []
    return FakeVLLM(modules={"vllm": root, "vllm.exceptions": exceptions, "vllm.lora": lora,
                             "vllm.lora.request": request, "vllm.sampling_params": sampling,
                             "vllm.outputs": outputs}, engines=engines)
