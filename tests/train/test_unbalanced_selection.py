"""The demo's case: a valid split with pairs of one kind only. Balanced (the paper's sets) it is empty and
DPO cannot choose an epoch; with `--no-balance-eval` it keeps them and DPO picks its best epoch by flipflop."""

from __future__ import annotations

import json

from helpers import run_cli
from trainkit import TINY_RUN, make_pairs_folder, read_json

from pbt_cli.models.spec import ModelSpec
from pbt_cli.pipeline.preprocess import PreprocessConfig, run_preprocess


def test_dpo_picks_its_epoch_on_a_valid_split_of_one_kind(capsys, tmp_path, tiny_model_dir):
    pairs = make_pairs_folder(tmp_path / "pairs", {"train": 4, "valid": 3, "test": 1})
    valid = pairs / "valid.jsonl"
    valid.write_text("".join(line + "\n" for line in valid.read_text().splitlines()
                             if json.loads(line)["kind"] == "resist"))  # no accept pair held out
    spec = ModelSpec.parse(str(tiny_model_dir))
    balanced = run_preprocess(PreprocessConfig(pairs=pairs, tokenizer=spec, out=tmp_path / "balanced"))
    every = run_preprocess(PreprocessConfig(pairs=pairs, tokenizer=spec, out=tmp_path / "every", balance_eval=False))
    assert balanced.counts["valid"] == 0 and every.counts["valid"] == 3

    out = tmp_path / "dpo"
    done = run_cli(capsys, "dpo", "--model", tiny_model_dir, "--data", tmp_path / "every", "--out", out,
                   "--max-steps", "-1", "--num-train-epochs", "2", "--eval-strategy", "epoch", *TINY_RUN)
    assert done.exit_code == 0, done.stderr
    manifest = read_json(out / "manifest.json")
    assert len(manifest["evaluations"]) == 2  # one flipflop evaluation per epoch, on the 3 resist pairs
    assert manifest["best_checkpoint"] and manifest["best_checkpoint"].startswith("checkpoints/checkpoint-")
