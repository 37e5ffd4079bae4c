"""bf16 LoRA steps of `pbt sft` and `pbt dpo` on a CUDA GPU, without bitsandbytes (marker `gpu`).

The 4-bit QLoRA test in test_sft_dpo.py needs bitsandbytes' CUDA build; these two need only torch,
transformers, peft, TRL and datasets, so the prepared GPU check (benchmarks/gpu_check.sh) can run
them on a machine that has no bitsandbytes. On CPU they are skipped; `PBT_GPU_TESTS_ON_CPU=1` runs
them there with `--device-map cpu` (bf16 weights, CPU training computes in float32), which is how
their command lines are kept working between GPU runs.
"""

from __future__ import annotations

import math
import os

import pytest
from helpers import run_cli
from trainkit import TINY_RUN, read_json, tensors

ON_CPU = os.environ.get("PBT_GPU_TESTS_ON_CPU") == "1"
needs_gpu = (lambda test: test) if ON_CPU else pytest.mark.gpu
DEVICE = ("--device-map", "cpu") if ON_CPU else ("--device-map", "cuda")


def finite_adapter(folder) -> bool:
    return all(bool(weight.float().isfinite().all()) for weight in tensors(folder / "adapter_model.safetensors").values())


@needs_gpu
def test_bf16_lora_sft_steps(capsys, tmp_path, tiny_model_dir, sft_data):
    out = tmp_path / "sft"
    result = run_cli(capsys, "sft", "--model", tiny_model_dir, "--data", sft_data, "--out", out, "--max-steps", "2",
                     "--dtype", "bfloat16", *DEVICE, *TINY_RUN)
    assert result.exit_code == 0, result.stderr
    manifest = read_json(out / "manifest.json")
    assert (manifest["status"], manifest["global_step"]) == ("complete", 2)
    assert manifest["settings"]["model"]["load"]["dtype"] == "bfloat16"
    assert math.isfinite(manifest["train_loss"]) and finite_adapter(out)


@needs_gpu
def test_bf16_lora_dpo_steps_from_an_sft_adapter(capsys, tmp_path, tiny_model_dir, sft_data, dpo_data):
    sft = tmp_path / "sft"
    common = ("--dtype", "bfloat16", *DEVICE, *TINY_RUN)
    result = run_cli(capsys, "sft", "--model", tiny_model_dir, "--data", sft_data, "--out", sft, "--max-steps", "1",
                     *common)
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "dpo"
    result = run_cli(capsys, "dpo", "--model", tiny_model_dir, "--adapter", sft, "--data", dpo_data, "--out", out,
                     "--max-steps", "2", "--eval-strategy", "no", *common)
    assert result.exit_code == 0, result.stderr
    manifest = read_json(out / "manifest.json")
    assert (manifest["status"], manifest["global_step"]) == ("complete", 2)
    assert math.isfinite(manifest["train_loss"]) and finite_adapter(out)
