"""Training as several processes: `torchrun --nproc_per_node 2` on CPU over gloo (docs/method.md §5.6).

Two real launches: SFT stopped by SIGTERM to the launcher and resumed by the same command, and DPO from
an SFT adapter with a flipflop evaluation every epoch. The FSDP paths that need GPUs (accelerate sends
FSDP only to accelerators) are checked here where CPU can show them: the process group exists before the
model loads, the device map, the final save through the gathered state dict, and checkpoints held as
FSDP shards turned into adapters; the rest runs in benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import launchkit as launch
import pytest
from trainkit import TINY_RUN, read_json, tensors

from pbt_cli.models.spec import LoadOptions, ModelSpec, QuantizationSpec
from pbt_cli.train.config import TrainConfig


def layout(out: Path) -> set[str]:
    """The run folder's entries (pbt's own bookkeeping `.pbt-*` aside)."""
    return {p.name for p in out.iterdir() if not p.name.startswith(".pbt-")}


@pytest.mark.parametrize("target", ["launcher", "one rank"])
def test_sft_under_torchrun_stops_every_rank_at_one_step_and_resumes(tmp_path, tiny_model_dir, sft_data, sft_run,
                                                                     target):
    """SIGTERM to the launcher (which passes it on to every rank, a step apart or not) or to one rank only:
    the ranks agree at the step end and save one checkpoint together; the same command resumes it (run
    for one of the two, to keep the launches few)."""
    out, log = tmp_path / "sft-ddp", tmp_path / "launch.log"
    steps = 60  # enough that the run is still going when the first progress record (after 1 s) shows a step
    args = ("sft", "--model", tiny_model_dir, "--data", sft_data, "--out", out, "--max-steps", steps,
            "--save-steps", "1000", *TINY_RUN)
    process = launch.start(*args, log=log)
    try:
        launch.wait_for(lambda: launch.training_started(out, log), 300, "the first training step")
        if target == "launcher":
            process.send_signal(signal.SIGTERM)
        else:  # rank 1 alone (rank 0 holds the lock): rank 0 sees no signal and must stop with it
            holder = json.loads((out / ".pbt-lock").read_text())["pid"]
            (rank1,) = [pid for pid in launch.children(process.pid) if pid != holder]
            os.kill(rank1, signal.SIGTERM)
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
    assert 1 <= stopped_at < steps
    assert printed.count("stopped (SIGTERM)") == 2, printed  # every rank left through the clean stop
    assert not (out / ".pbt-lock").exists()
    if target == "launcher":
        return

    code, printed = launch.run(*args)
    assert code == 0, printed
    assert f"resuming at step {stopped_at} of {steps}" in printed, printed  # resumed: only the missing steps ran
    assert printed.count("done: adapter in") == 1, printed  # rank 0 reports, once
    manifest = read_json(out / "manifest.json")
    assert manifest["status"] == "complete" and manifest["global_step"] == steps and manifest["world_size"] == 2
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


# --- what CPU can show of FSDP and of the rank's own device ---------------------------------------------


def fsdp_environment(monkeypatch, port: int) -> None:
    """The environment `accelerate launch --config_file recipes/accelerate/fsdp_qlora.yaml` gives rank 0 of 1."""
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_under_fsdp_the_process_group_exists_before_the_model_loads(capsys, monkeypatch, tmp_path, tiny_model_dir,
                                                                    sft_data):
    """transformers honours cpu_ram_efficient_loading (rank 0 reads the weights, the others wait for FSDP
    to send them) only inside an existing process group; before the fix the model loaded first."""
    import torch.distributed as dist
    from helpers import run_cli
    from transformers.distributed.fsdp import is_fsdp_enabled

    from pbt_cli.errors import PbtError
    from pbt_cli.train import run as run_module

    seen = {}

    def build_policy(cfg):
        seen.update(group=dist.is_initialized(), efficient_loading=is_fsdp_enabled())
        raise PbtError("stopped where the model would load")

    fsdp_environment(monkeypatch, free_port())
    monkeypatch.setattr(run_module, "check_launch", lambda cfg: None)  # FSDP needs GPUs; the order is the point
    monkeypatch.setattr(run_module, "build_policy", build_policy)
    result = run_cli(capsys, "sft", "--model", tiny_model_dir, "--data", sft_data, "--out", tmp_path / "out",
                     "--max-steps", "2")
    assert result.exit_code == 2 and "stopped where the model would load" in result.stderr
    assert seen == {"group": True, "efficient_loading": True}
    assert not dist.is_initialized()  # the run's group ends with the run


def test_each_rank_loads_onto_its_own_device(monkeypatch, tmp_path, tiny_model_dir, sft_data):
    import torch

    from pbt_cli.train.policy import training_device_map, trains_on_cuda, trl_arguments

    def config(**load):
        return TrainConfig(stage="sft", model=ModelSpec.parse(str(tiny_model_dir), load=LoadOptions(**load)),
                           data=sft_data, out=tmp_path / "out")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU host, as far as the choice goes
    cpu = config(device_map="cpu")  # --device-map cpu on a GPU host: the CPU, and the Trainer told so
    assert training_device_map(cpu) == "cpu" and not trains_on_cuda(cpu)
    from trl import SFTConfig

    args = trl_arguments(cpu, SFTConfig)
    assert args.use_cpu and args.ddp_find_unused_parameters is False and args.ddp_timeout == cpu.ddp_timeout

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert training_device_map(config()) == {"": 3}  # DDP: rank 3's copy on GPU 3
    four_bit = {"quantization": QuantizationSpec(load_in_4bit=True)}
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert training_device_map(config(**four_bit)) == {"": 3}  # FSDP + 4-bit: on GPU 3, not all on GPU 0
    assert training_device_map(config()) is None  # FSDP unquantized: FSDP places the shards
    assert training_device_map(cpu) == "cpu"


def test_the_extractor_goes_onto_the_evaluating_ranks_device():
    import torch

    from pbt_cli.train.evaluation import extractor_on_device

    spec = ModelSpec.parse("mistral-7b-instruct-v0.2")
    assert extractor_on_device(spec, torch.device("cuda", 0), 8).load.device_map == "cuda"  # rank 0's GPU only
    assert extractor_on_device(spec, torch.device("cpu"), 2).load.device_map == "cpu"
    assert extractor_on_device(spec, torch.device("cuda", 0), 1).load.device_map == "auto"  # one process: all GPUs


def test_reference_sft_under_fsdp_is_refused_before_anything_loads(capsys, monkeypatch, tmp_path, tiny_model_dir,
                                                                   dpo_data, sft_run):
    from helpers import run_cli

    from pbt_cli.train import policy

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr(policy, "trains_on_cuda", lambda cfg: True)
    out = tmp_path / "out"
    result = run_cli(capsys, "dpo", "--model", tiny_model_dir, "--adapter", sft_run[0], "--data", dpo_data,
                     "--out", out, "--reference", "sft", "--eval-strategy", "no")
    assert result.exit_code == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "--reference sft" in line and "--reference base" in line
    assert not out.exists()


def test_fsdp_without_a_gpu_is_refused_in_one_line(capsys, monkeypatch, tmp_path, tiny_model_dir, sft_data):
    """accelerate's own refusal comes after the model loaded, as a traceback; pbt says it first."""
    from helpers import run_cli

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    result = run_cli(capsys, "sft", "--model", tiny_model_dir, "--data", sft_data, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "torchrun --nproc_per_node" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_final_fsdp_save_writes_the_state_dict_every_rank_gathered(tmp_path, sft_run):
    """Under FSDP the weights in rank 0's memory are a shard: the adapter written must be the gathered one."""
    from types import SimpleNamespace

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pbt_cli.outputs import claim_output
    from pbt_cli.train.output import TRAIN_OUTPUTS, final_state_dict, finish

    sft_out = sft_run[0]
    base = AutoModelForCausalLM.from_pretrained(read_json(sft_out / "adapter_config.json")["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, str(sft_out))
    gathered = {name: value + 1.0 if "lora_" in name else value for name, value in model.state_dict().items()}
    calls = []
    accelerator = SimpleNamespace(get_state_dict=lambda m: calls.append(m) or gathered, unwrap_model=lambda m: m)
    trainer = SimpleNamespace(is_fsdp_enabled=True, accelerator=accelerator, model=model,
                              state=SimpleNamespace(best_model_checkpoint=None, log_history=[], global_step=4,
                                                    best_metric=None))
    assert final_state_dict(trainer) is gathered and calls == [model]  # any rank: the collective gather
    assert final_state_dict(SimpleNamespace(is_fsdp_enabled=False)) is None

    out = tmp_path / "out"
    cfg = TrainConfig(stage="sft", model=ModelSpec.parse(str(sft_out.parent)), data=sft_out, out=out)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(sft_out))
    with claim_output(out, "sft", outputs=TRAIN_OUTPUTS) as folder:
        finish(cfg, folder, trainer, tokenizer, {"stage": "sft"}, state_dict=gathered)
    written, before = tensors(out / "adapter_model.safetensors"), tensors(sft_out / "adapter_model.safetensors")
    assert written.keys() == before.keys()
    assert all(written[name].equal(before[name] + 1.0) for name in written)


def save_as_fsdp_shards(model, checkpoint: Path, *, adapter_only: bool) -> None:
    """What accelerate's save_fsdp_model writes for SHARDED_STATE_DICT: a torch.distributed.checkpoint folder
    of {"model": state dict}, the whole model's or (as the Trainer asks) the adapter's alone."""
    import torch.distributed.checkpoint as dcp
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model) if adapter_only else model.state_dict()
    dcp.save({"model": {name: value.clone() for name, value in state.items()}},
             checkpoint_id=str(checkpoint / "pytorch_model_fsdp_0"))


@pytest.mark.parametrize("adapter_only", [True, False])
def test_checkpoints_held_as_fsdp_shards_become_adapters_for_select_checkpoint(capsys, tmp_path, dpo_run,
                                                                               adapter_only):
    import shutil

    from helpers import run_cli
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    shutil.copytree(dpo_run[0], run)
    base = AutoModelForCausalLM.from_pretrained(read_json(run / "adapter_config.json")["base_model_name_or_path"])
    originals = {}
    for checkpoint in sorted((run / "checkpoints").glob("checkpoint-*")):
        originals[checkpoint.name] = tensors(checkpoint / "adapter_model.safetensors")
        model = PeftModel.from_pretrained(base, str(checkpoint))
        save_as_fsdp_shards(model, checkpoint, adapter_only=adapter_only)
        base = model.unload()
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            (checkpoint / name).unlink()
        shutil.rmtree(checkpoint / "ref", ignore_errors=True)

    result = run_cli(capsys, "select-checkpoint", "--run", run)
    assert result.exit_code == 0, result.stderr
    for checkpoint in sorted((run / "checkpoints").glob("checkpoint-*")):
        rebuilt = tensors(checkpoint / "adapter_model.safetensors")
        assert rebuilt.keys() == originals[checkpoint.name].keys()
        assert all(rebuilt[name].equal(originals[checkpoint.name][name]) for name in rebuilt)
        assert (checkpoint / "adapter_config.json").is_file()
    best = read_json(run / "manifest.json")["best_checkpoint"]
    assert tensors(run / "adapter_model.safetensors").keys() == originals[Path(best).name].keys()


def test_under_fsdp_every_saved_checkpoint_gets_its_adapter_files(monkeypatch, tmp_path, sft_run):
    """The callback the Trainer calls after each save: rank 0 reads the adapter back from the shards."""
    from types import SimpleNamespace

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pbt_cli.train.evaluation import make_callbacks

    sft_out = sft_run[0]
    base = AutoModelForCausalLM.from_pretrained(read_json(sft_out / "adapter_config.json")["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, str(sft_out))
    out = tmp_path / "run"
    checkpoint = out / "checkpoints" / "checkpoint-2"
    save_as_fsdp_shards(model, checkpoint, adapter_only=True)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    cfg = TrainConfig(stage="sft", model=ModelSpec.parse(str(sft_out.parent)), data=sft_out, out=out)
    control = SimpleNamespace()
    for callback in make_callbacks(cfg):
        if hasattr(callback, "on_save"):
            callback.on_save(None, SimpleNamespace(global_step=2), control, model=model)
    assert read_json(checkpoint / "adapter_config.json")["r"] == read_json(sft_out / "adapter_config.json")["r"]
    rebuilt, trained = tensors(checkpoint / "adapter_model.safetensors"), tensors(sft_out / "adapter_model.safetensors")
    assert rebuilt.keys() == trained.keys() and all(rebuilt[name].equal(trained[name]) for name in rebuilt)
