"""Training as several processes: `torchrun --nproc_per_node 2` on CPU over gloo (docs/method.md §5.6).

Two real launches: SFT stopped by SIGTERM to the launcher and resumed by the same command, and DPO from
an SFT adapter with a flipflop evaluation every epoch. The FSDP paths that need GPUs (accelerate sends
FSDP only to accelerators) are checked here where CPU can show them: the process group exists before the
model loads, the device map, the final save through the gathered state dict, and checkpoints held as
FSDP shards turned into adapters; the rest runs in benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import launch
import pytest
from trainkit import TINY_RUN, read_json, tensors


def layout(out: Path) -> set[str]:
    """The run folder's entries (pbt's own bookkeeping `.pbt-*` aside)."""
    return {p.name for p in out.iterdir() if not p.name.startswith(".pbt-")}


def test_sft_under_torchrun_stops_every_rank_at_one_step_and_resumes(tmp_path, tiny_model_dir, sft_data, sft_run):
    out, log = tmp_path / "sft-ddp", tmp_path / "launch.log"
    args = ("sft", "--model", tiny_model_dir, "--data", sft_data, "--out", out, "--max-steps", "8",
            "--save-steps", "100", *TINY_RUN)
    process = launch.start(*args, log=log)
    try:
        launch.wait_for(lambda: launch.training_started(out, log), 300, "the first training step")
        process.send_signal(signal.SIGTERM)  # to the launcher, which passes it on to both ranks
        code = process.wait(timeout=120)
    except BaseException:
        process.kill()
        raise
    printed = log.read_text()
    assert code != 0, printed
    manifest = read_json(out / "manifest.json")
    assert manifest["status"] == "interrupted", printed
    (checkpoint,) = (out / "checkpoints").glob("checkpoint-*")  # one: both ranks stopped after the same step
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in checkpoint.iterdir()}, printed
    stopped_at = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
    assert 1 <= stopped_at < 8
    assert printed.count("stopped (SIGTERM)") == 2, printed  # every rank left through the clean stop
    assert not (out / ".pbt-lock").exists()

    code, printed = launch.run(*args)
    assert code == 0, printed
    assert printed.count("{'loss'") == 8 - stopped_at, printed  # resumed: only the missing steps ran
    assert printed.count("done: adapter in") == 1, printed  # rank 0 reports, once
    manifest = read_json(out / "manifest.json")
    assert manifest["status"] == "complete" and manifest["global_step"] == 8 and manifest["world_size"] == 2
    sft_out, sft_code, _ = sft_run
    assert sft_code == 0
    assert layout(out) == layout(sft_out)
    assert tensors(out / "adapter_model.safetensors").keys() == tensors(sft_out / "adapter_model.safetensors").keys()
    assert not (out / ".pbt-lock").exists()


def test_dpo_under_torchrun_evaluates_every_epoch_and_keeps_the_best(tmp_path, tiny_model_dir, dpo_data, sft_run,
                                                                     dpo_run):
    """Rank 0 evaluates (with an extractor model on its own device) while the other waits; every rank gets
    the accuracy, the best checkpoint becomes the adapter, laid out as a one-process run's."""
    sft_out, _, _ = sft_run
    out = tmp_path / "dpo-ddp"
    code, printed = launch.run("dpo", "--model", tiny_model_dir, "--adapter", sft_out, "--data", dpo_data, "--out", out,
                               "--max-steps", "-1", "--num-train-epochs", "2", "--eval-strategy", "epoch",
                               "--extractor-model", tiny_model_dir, *TINY_RUN)
    assert code == 0, printed
    assert printed.count("done: adapter in") == 1, printed
    manifest = read_json(out / "manifest.json")
    assert (manifest["status"], manifest["global_step"], manifest["world_size"]) == ("complete", 4, 2)
    evaluations = manifest["evaluations"]
    assert [(e["epoch"], e["step"]) for e in evaluations] == [(1.0, 2), (2.0, 4)]  # 8 pairs / (2 ranks x 2)
    accuracies = [e["eval_flipflop_accuracy"] for e in evaluations]
    assert manifest["best_metric"] == max(accuracies)
    best = manifest["best_checkpoint"]
    assert best == f"checkpoints/checkpoint-{evaluations[accuracies.index(max(accuracies))]['step']}"
    final, chosen = tensors(out / "adapter_model.safetensors"), tensors(out / best / "adapter_model.safetensors")
    assert final.keys() == chosen.keys() and all(final[name].equal(chosen[name]) for name in final)

    one_process, one_code, _ = dpo_run
    assert one_code == 0
    assert layout(out) == layout(one_process)
    assert len(list((out / "checkpoints").glob("checkpoint-*"))) == \
        len(list((one_process / "checkpoints").glob("checkpoint-*")))
    assert not (out / ".pbt-lock").exists()
