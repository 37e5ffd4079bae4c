"""Fixtures for the training tests: hand-written preference pairs rendered once per session for the tiny
tokenizer, and one SFT run and one DPO run (from that SFT adapter) shared by the tests that only
read them.

    train: 4 resist + 4 accept   (the balanced mix keeps all 8: 4 steps per epoch at batch 2)
    valid: 3 resist + 3 accept   (the flipflop evaluation set during training)
    test:  2 resist + 2 accept
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from trainkit import TINY_RUN, cli, make_pairs_folder, one_thread, preprocess


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pairs_folder(tmp_path_factory.mktemp("train-pairs") / "pairs", {"train": 4, "valid": 3, "test": 2})


@pytest.fixture(scope="session")
def sft_data(pairs_dir: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return preprocess(pairs_dir, tiny_model_dir, tmp_path_factory.mktemp("sft-data") / "data", "sft")


@pytest.fixture(scope="session")
def dpo_data(pairs_dir: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return preprocess(pairs_dir, tiny_model_dir, tmp_path_factory.mktemp("dpo-data") / "data", "dpo")


@pytest.fixture(scope="session")
def sft_run(tiny_model_dir: Path, sft_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """`pbt sft` for 4 steps: (--out, exit code, stderr)."""
    out = tmp_path_factory.mktemp("sft-run") / "sft"
    with one_thread():
        code, err = cli("sft", "--model", tiny_model_dir, "--data", sft_data, "--out", out, "--max-steps", "4",
                        *TINY_RUN)
    return out, code, err


@pytest.fixture(scope="session")
def dpo_run(tiny_model_dir: Path, dpo_data: Path, sft_run: tuple[Path, int, str],
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """`pbt dpo --adapter SFT`: 2 epochs of 4 steps with a flipflop evaluation after each."""
    sft_out, sft_code, sft_err = sft_run
    assert sft_code == 0, sft_err
    out = tmp_path_factory.mktemp("dpo-run") / "dpo"
    with one_thread():
        code, err = cli("dpo", "--model", tiny_model_dir, "--adapter", sft_out, "--data", dpo_data, "--out", out,
                        "--max-steps", "-1", "--num-train-epochs", "2", "--eval-strategy", "epoch", *TINY_RUN)
    return out, code, err
