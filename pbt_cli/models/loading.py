"""The only place that calls `from_pretrained`: tokenizers, models, adapters, dtypes, devices, pad tokens.

Pad-token policy (one for every model and stage):
1. a tokenizer's own pad token is kept;
2. otherwise an unused padding token the vocabulary already has (`<|finetune_right_pad_id|>` in
   Llama 3.1, `<pad>`, `[PAD]`, `<|pad|>`), so no embedding row has to be added;
3. otherwise the unk token;
4. otherwise the eos token. This is safe here because every consumer masks padding by the attention
   mask, never by token id: generation pads on the left under an attention mask, and TRL's
   collators set labels to -100 where `attention_mask == 0`, so a real eos at the end of a
   response is still trained on (tests/train check this by counting trained eos labels).
Generation pads on the left (the new tokens of every row then start at the same column);
training pads on the right (TRL's default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pbt_cli.console import log
from pbt_cli.errors import PbtError
from pbt_cli.models.chat import read_template_file
from pbt_cli.models.quant import bnb_config
from pbt_cli.models.resolve import ResolvedModel, hub_offline, offline_error, resolve
from pbt_cli.models.spec import LoadOptions, ModelSpec

UNUSED_PAD_TOKENS = ("<|finetune_right_pad_id|>", "<pad>", "[PAD]", "<|pad|>", "<|padding|>")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def quiet_transformers() -> None:
    """No per-file progress bars from transformers unless -v: they flood SLURM logs."""
    from pbt_cli.console import verbosity

    if verbosity() <= 0:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): then bf16 matmuls are ~2x faster.

    PBT_CPU_BF16=0 (or 1) overrides what /proc/cpuinfo says: to measure the float32 path on a bf16 CPU
    (benchmarks/demo_time.py --avx2-only), or to skip bf16 on a CPU where it is slow."""
    import os

    override = os.environ.get("PBT_CPU_BF16", "").strip()
    if override in ("0", "1"):
        return override == "1"
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolved_dtype(load: LoadOptions, *, training: bool = False) -> str:
    """The dtype `--dtype auto` means here, decided once for every backend (vLLM's own "auto" would
    take the checkpoint's dtype instead): bfloat16 on GPUs that have it (float16 on older ones); on
    CPU, bfloat16 for inference where the CPU computes it natively (prefill measured 2x faster on an
    AVX512-BF16 EPYC), else float32; CPU training stays float32."""
    if load.dtype != "auto":
        return load.dtype
    if load.dynamic_int8:
        return "float32"  # what runs between the int8 layers
    import torch

    if load.device_map != "cpu" and torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if not training and cpu_has_bf16():
        return "bfloat16"
    return "float32"


def torch_dtype(load: LoadOptions, *, training: bool = False) -> Any:
    """`resolved_dtype` as a torch dtype."""
    import torch

    return getattr(torch, resolved_dtype(load, training=training))


def device_map(load: LoadOptions) -> Any:
    if load.device_map == "cuda" and not cuda_available():
        raise PbtError("--device-map cuda was asked for but torch sees no CUDA GPU; use --device-map cpu or auto")
    if load.device_map == "auto":
        return "auto" if cuda_available() else "cpu"
    return load.device_map


def _hub_kwargs(resolved: ResolvedModel, revision: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": resolved.spec.load.trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    return kwargs


def _wrap_load_error(exc: Exception, what: str, source: str) -> PbtError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if hub_offline() and not Path(source).exists():
        return offline_error(source)
    return PbtError(f"cannot load the {what} of {source}: {text}")


def load_tokenizer(spec: ModelSpec | ResolvedModel, *, padding_side: str = "left") -> Any:
    """The tokenizer for a model, with the chat-template override and the pad-token policy applied.

    For an adapter whose folder carries its own tokenizer (as `pbt sft` saves one), that tokenizer is
    used: it holds the chat template the adapter was trained with.
    """
    from transformers import AutoTokenizer

    quiet_transformers()
    resolved = spec if isinstance(spec, ResolvedModel) else resolve(spec)
    source, revision = resolved.base, resolved.base_revision
    if resolved.adapter and any((Path(resolved.adapter) / name).is_file() for name in _TOKENIZER_FILES):
        source, revision = resolved.adapter, None
    kwargs = _hub_kwargs(resolved, revision)
    if resolved.gguf_file and source == resolved.base:
        kwargs["gguf_file"] = resolved.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise _wrap_load_error(exc, "tokenizer", source) from None
    if resolved.spec.chat_template:
        tokenizer.chat_template = read_template_file(resolved.spec.chat_template)
        tokenizer.pbt_template_file = str(resolved.spec.chat_template)  # named in rendering errors
    apply_pad_policy(tokenizer)
    tokenizer.padding_side = padding_side
    return tokenizer


def apply_pad_policy(tokenizer: Any) -> str:
    """Give the tokenizer a pad token by the module's policy; returns which rule applied."""
    if tokenizer.pad_token is not None:
        return "own"
    vocab = tokenizer.get_vocab()
    for candidate in UNUSED_PAD_TOKENS:
        if candidate in vocab:
            tokenizer.pad_token = candidate
            return "unused-token"
    if tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token
        return "unk"
    if tokenizer.eos_token is None:
        raise PbtError(f"the tokenizer of {tokenizer.name_or_path} has no pad, unk or eos token to pad with")
    tokenizer.pad_token = tokenizer.eos_token
    log.debug("padding %s with its eos token (padding is masked by attention mask)", tokenizer.name_or_path)
    return "eos"


_FROM_SPEC = object()  # device_map_override default: use the spec's --device-map


def load_model(spec: ModelSpec | ResolvedModel, *, trainable_adapter: bool = False, training: bool = False,
               device_map_override: Any = _FROM_SPEC) -> Any:
    """A causal LM in the spec's dtype, device map and quantization, with its adapter (if any) attached.

    `trainable_adapter=True` loads the adapter with trainable weights (DPO continuing an SFT adapter).
    `device_map_override` lets training under `accelerate launch` place each process's copy itself
    (None: no device map at all, as FSDP wants).
    """
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    resolved = spec if isinstance(spec, ResolvedModel) else resolve(spec)
    load = resolved.spec.load
    dtype = torch_dtype(load, training=training)
    kwargs = _hub_kwargs(resolved, resolved.base_revision)
    kwargs["dtype"] = dtype
    target = device_map(load) if device_map_override is _FROM_SPEC else device_map_override
    if target is not None:
        kwargs["device_map"] = target
    if load.attn_implementation:
        kwargs["attn_implementation"] = load.attn_implementation
    quantization = bnb_config(load.quantization, dtype)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if resolved.gguf_file:
        kwargs["gguf_file"] = resolved.gguf_file
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.base, **kwargs)
    except (OSError, ValueError) as exc:
        raise _wrap_load_error(exc, "weights", resolved.base) from None
    except RuntimeError as exc:
        if quantization is not None and not cuda_available():
            raise PbtError(f"{load.quantization.label} loading failed on this machine without a GPU "
                           f"({str(exc).splitlines()[0]}); drop --load-in-4bit/--load-in-8bit or run on a GPU") from None
        raise
    if resolved.adapter:
        model = attach_adapter(model, resolved, trainable=trainable_adapter)
    if load.dynamic_int8:
        model = dynamic_int8(model, training=training)
    return model


def dynamic_int8(model: Any, *, training: bool = False) -> Any:
    """Every Linear layer with int8 weights and activations quantized per call (torch's fbgemm/oneDNN
    kernels): on CPUs without bfloat16 arithmetic the fastest path measured for generation
    (benchmarks/cpu_paths.py). An adapter is merged first, so its weights are quantized with the base's."""
    import warnings

    import torch

    if training:
        raise PbtError("--dynamic-int8 is for inference; train in float32 (or with --load-in-8bit/--load-in-4bit)")
    if next(model.parameters()).device.type != "cpu":
        raise PbtError("--dynamic-int8 runs on the CPU only; pass --device-map cpu or drop --dynamic-int8")
    if hasattr(model, "merge_and_unload"):  # a PEFT model: one set of weights to quantize
        model = model.merge_and_unload()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks eager quantization deprecated in favour of torchao
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model.float(), {torch.nn.Linear}, dtype=torch.qint8)


def attach_adapter(model: Any, resolved: ResolvedModel, *, trainable: bool) -> Any:
    from peft import PeftModel

    kwargs: dict[str, Any] = {"is_trainable": trainable}
    if resolved.adapter_revision:
        kwargs["revision"] = resolved.adapter_revision
    try:
        return PeftModel.from_pretrained(model, resolved.adapter, **kwargs)
    except RuntimeError as exc:
        if "size mismatch" in str(exc):
            raise PbtError(f"adapter {resolved.adapter} was trained on {resolved.adapter_base_name}, whose shapes differ "
                           f"from {resolved.spec.name}; pass the adapter's own base with --model") from None
        raise
    except (OSError, ValueError) as exc:
        raise _wrap_load_error(exc, "adapter", str(resolved.adapter)) from None
