"""`pbt sft`, `pbt dpo` and `pbt export` on the tiny Llama (docs/method.md §5).

The data and the two shared runs (`sft_run`, `dpo_run`) come from tests/train/conftest.py. Tests that
change an output folder (resume, overwrite, refusals) train their own one to six steps in tmp_path.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
from helpers import run_cli
from trainkit import (
    LLAMA_PROJECTIONS,
    OTHER_TEMPLATE,
    TINY_RUN,
    log_history,
    preprocess,
    read_json,
    root_conftest,
    tensors,
)

from pbt_cli.models.spec import LoadOptions, ModelSpec, QuantizationSpec
from pbt_cli.pipeline.preprocess import load_split, split_file, write_split
from pbt_cli.train.config import TrainConfig


def error_lines(stderr: str) -> list[str]:
    """The CLI's error lines (printed unwrapped): a refusal is exactly one."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def says(stderr: str, text: str) -> bool:
    """Whether stderr holds `text`, ignoring where Rich wrapped the line (it may break long paths too)."""
    return "".join(text.split()) in "".join(stderr.split())


def sft_args(model: Path, data: Path, out: Path, *extra: object) -> list[object]:
    return ["sft", "--model", model, "--data", data, "--out", out, *TINY_RUN, *extra]


class StepCounter:
    """Wraps `transformers.Trainer.training_step` (which TRL's trainers call through super()): counts the
    calls and raises KeyboardInterrupt (what Ctrl-C or a SLURM preemption delivers) on call `stop_at`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_at: int | None = None) -> None:
        import transformers

        self.calls = 0
        self.stop_at = stop_at
        original = transformers.Trainer.training_step

        def training_step(trainer, *args, **kwargs):
            self.calls += 1
            if self.stop_at is not None and self.calls == self.stop_at:
                raise KeyboardInterrupt
            return original(trainer, *args, **kwargs)

        monkeypatch.setattr(transformers.Trainer, "training_step", training_step)


# --- 1. SFT through the CLI ----------------------------------------------------------------------------


def test_sft_writes_a_complete_adapter_folder(sft_run, tiny_model_dir):
    from transformers import AutoTokenizer

    out, code, err = sft_run
    assert code == 0, err
    assert says(err, f"adapter in {out} after 4 steps")
    for name in ("adapter_config.json", "adapter_model.safetensors", "log_history.jsonl", "manifest.json",
                 "tokenizer_config.json", "tokenizer.json"):
        assert (out / name).is_file(), name
    manifest = read_json(out / "manifest.json")
    assert (manifest["stage"], manifest["status"], manifest["global_step"]) == ("sft", "complete", 4)
    assert math.isfinite(manifest["train_loss"])
    assert manifest["adapted_modules"] == {name: 2 for name in LLAMA_PROJECTIONS}  # every projection, 2 layers
    assert manifest["best_checkpoint"] is None and manifest["evaluations"] == []  # sft: --eval-strategy no
    assert manifest["settings"]["max_steps"] == 4
    losses = [entry for entry in log_history(out) if "loss" in entry]
    assert [entry["step"] for entry in losses] == [1, 2, 3, 4]  # --logging-steps 1
    assert all(math.isfinite(entry["loss"]) for entry in losses)

    adapter_config = read_json(out / "adapter_config.json")
    assert Path(adapter_config["base_model_name_or_path"]) == tiny_model_dir.resolve()
    assert set(adapter_config["target_modules"]) == LLAMA_PROJECTIONS
    assert (adapter_config["r"], adapter_config["lora_alpha"], adapter_config["peft_type"]) == (16, 32, "LORA")

    # The tokenizer saved with the adapter carries the chat template it was trained with.
    saved = AutoTokenizer.from_pretrained(str(out))
    assert saved.chat_template and saved.chat_template == AutoTokenizer.from_pretrained(str(tiny_model_dir)).chat_template


def test_sft_moved_every_lora_weight_from_its_init(sft_run):
    out, code, err = sft_run
    assert code == 0, err
    weights = tensors(out / "adapter_model.safetensors")
    lora_b = {name: t for name, t in weights.items() if "lora_B" in name}
    lora_a = {name: t for name, t in weights.items() if "lora_A" in name}
    assert len(lora_b) == len(lora_a) == 2 * len(LLAMA_PROJECTIONS)
    # peft initialises lora_B to zeros: after 4 steps every adapted layer's B must have moved.
    untouched = [name for name, t in lora_b.items() if not t.abs().gt(0).any()]
    assert not untouched
    assert all(bool(t.isfinite().all()) for t in weights.values())


def test_sft_evaluates_every_eval_steps_and_keeps_the_best(capsys, tmp_path, tiny_model_dir, sft_data):
    out = tmp_path / "run"
    result = run_cli(capsys, *sft_args(tiny_model_dir, sft_data, out, "--max-steps", "4", "--eval-strategy", "steps",
                                       "--eval-steps", "2"))
    assert result.exit_code == 0, result.stderr
    manifest = read_json(out / "manifest.json")
    assert [e["step"] for e in manifest["evaluations"]] == [2, 4]
    history = log_history(out)
    assert [e["step"] for e in history if "eval_loss" in e] == [2, 4]  # SFT's eval loss on the chosen replies
    best = manifest["best_checkpoint"]
    assert best in ("checkpoints/checkpoint-2", "checkpoints/checkpoint-4") and (out / best).is_dir()
    assert says(result.stderr, f"best checkpoint {out / best}")


# --- 2. SFT trains on the assistant response only --------------------------------------------------------


class _Captured(Exception):
    pass


def capture_sft_trainer(monkeypatch: pytest.MonkeyPatch, cfg: TrainConfig):
    """The trainer `pbt sft` builds (run_sft, through run_training), caught when `train()` is called."""
    import trl

    from pbt_cli.train.sft import run_sft

    captured = {}

    def train(self, *args, **kwargs):
        captured["trainer"] = self
        raise _Captured

    monkeypatch.setattr(trl.SFTTrainer, "train", train)
    with pytest.raises(_Captured):
        run_sft(cfg)
    return captured["trainer"]


@pytest.fixture
def model_without_unk(tiny_model_dir, tmp_path) -> Path:
    """The tiny model with no unk token declared: the pad-token policy falls through to eos (rule 4)."""
    folder = tmp_path / "no-unk"
    shutil.copytree(tiny_model_dir, folder)
    config = read_json(folder / "tokenizer_config.json")
    config.pop("unk_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("pad_rule", ["unk", "eos"])
def test_sft_labels_cover_the_completion_only_and_keep_the_eos(monkeypatch, tmp_path, tiny_model_dir, sft_data,
                                                                 request, pad_rule):

    from pbt_cli.models.loading import apply_pad_policy

    model_dir = tiny_model_dir if pad_rule == "unk" else request.getfixturevalue("model_without_unk")
    cfg = TrainConfig(stage="sft", model=ModelSpec.parse(str(model_dir)), data=sft_data, out=tmp_path / "out",
                      max_steps=1, per_device_train_batch_size=4, gradient_accumulation_steps=1, warmup_steps=1)
    trainer = capture_sft_trainer(monkeypatch, cfg)
    tokenizer = trainer.processing_class
    assert tokenizer.pad_token == ("<unk>" if pad_rule == "unk" else tokenizer.eos_token)
    assert apply_pad_policy(tokenizer) == "own"  # already applied by load_tokenizer
    eos = tokenizer.eos_token_id

    rows = load_split(sft_data, "train")
    by_text = {row["prompt_text"] + row["completion_text"]: row for row in rows}
    seen, padded = set(), 0
    for batch in trainer.get_train_dataloader():
        ids, labels, mask = batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()
        for row_ids, row_labels, row_mask in zip(ids, labels, mask, strict=True):
            real = [i for i, m in zip(row_ids, row_mask, strict=True) if m]
            row = by_text[tokenizer.decode(real)]  # the dataset row this batch row came from
            seen.add(row["pair_id"])
            trained = [i for i in row_labels if i != -100]
            # Exactly the completion's tokens are trained: the reply, its end-of-turn eos and the template's
            # trailing newline (`completion_tokens` = len(encode(prompt + completion)) - len(encode(prompt))).
            assert len(trained) == row["completion_tokens"]
            assert tokenizer.decode(trained) == row["completion_text"] == row["completion"][0]["content"] + "</s>\n"
            assert len(trained) * 5 < len(real)  # the prompt (persona, earlier turns) is context, not target
            first = next(i for i, label in enumerate(row_labels) if label != -100)
            assert row_labels[first:first + len(trained)] == real[-len(trained):]  # one contiguous completion
            # The response's eos is trained on, even when eos is also the pad token (rule 4 of the pad policy)...
            assert eos in trained and trained[-2] == eos
            # ...while padding positions (pad token = eos under rule 4) are not.
            pads = [(token, label) for token, label, m in zip(row_ids, row_labels, row_mask, strict=True) if not m]
            assert all(token == tokenizer.pad_token_id and label == -100 for token, label in pads)
            padded += bool(pads)
    assert seen == set(rows["pair_id"])  # every training row checked
    assert padded  # rows of different lengths were padded, so the padding rule was exercised


# --- 3. DPO from the SFT adapter ---------------------------------------------------------------------------


def test_dpo_continues_the_sft_adapter_and_keeps_the_best_checkpoint(dpo_run, sft_run, tiny_model_dir):
    out, code, err = dpo_run
    sft_out = sft_run[0]
    assert code == 0, err
    manifest = read_json(out / "manifest.json")
    assert (manifest["stage"], manifest["status"], manifest["global_step"]) == ("dpo", "complete", 8)
    assert math.isfinite(manifest["train_loss"])

    # The saved adapter is a trained continuation of the SFT one: same tensors, other values.
    dpo_weights, sft_weights = tensors(out / "adapter_model.safetensors"), tensors(sft_out / "adapter_model.safetensors")
    assert set(dpo_weights) == set(sft_weights)  # only the "default" adapter, under the same names
    assert not any(".ref." in name or "ref" in name.split(".") for name in dpo_weights)
    changed = [name for name in dpo_weights if not dpo_weights[name].equal(sft_weights[name])]
    assert changed and all("lora_" in name for name in changed)
    # No "ref" adapter leaked into the final folder's root (TRL saves it in checkpoints only).
    assert not (out / "ref").exists()
    root_files = {p.name for p in out.iterdir() if p.is_file()}
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json", "log_history.jsonl"} <= root_files
    # The adapter names the base model, not the SFT adapter it started from.
    assert Path(read_json(out / "adapter_config.json")["base_model_name_or_path"]) == tiny_model_dir.resolve()

    # One flipflop evaluation per epoch, logged and in the manifest.
    evaluations = manifest["evaluations"]
    assert [(e["epoch"], e["step"]) for e in evaluations] == [(1.0, 4), (2.0, 8)]
    for entry in evaluations:
        assert 0.0 <= entry["eval_flipflop_accuracy"] <= 1.0
        assert "eval_flipflop_accuracy_flip_correct_to_incorrect" in entry
        assert "eval_flipflop_accuracy_flip_incorrect_to_correct" in entry
    assert [e for e in log_history(out) if "eval_flipflop_accuracy" in e] == evaluations

    # The best checkpoint: relative to --out, present, and the adapter at the root is its adapter.
    best = manifest["best_checkpoint"]
    assert best is not None and not Path(best).is_absolute()
    assert (out / best).is_dir() and (out / best / "adapter_model.safetensors").is_file()
    assert best in (f"checkpoints/checkpoint-{e['step']}" for e in evaluations)
    accuracies = [e["eval_flipflop_accuracy"] for e in evaluations]
    assert manifest["best_metric"] == max(accuracies)
    best_step = int(best.rsplit("-", 1)[1])
    assert best_step == next(e["step"] for e in evaluations if e["eval_flipflop_accuracy"] == max(accuracies))
    best_weights = tensors(out / best / "adapter_model.safetensors")
    assert all(best_weights[name].equal(dpo_weights[name]) for name in dpo_weights)


def test_dpo_reference_is_the_base_by_default(dpo_run):
    """docs/method.md §5.3: the reference is the policy with its adapter off, so TRL's frozen "ref" copy of the SFT
    adapter is removed and no checkpoint carries one."""
    out, code, err = dpo_run
    assert code == 0, err
    assert not list((out / "checkpoints").glob("*/ref"))
    assert read_json(out / "manifest.json")["config"]["reference"] == "base"


@pytest.mark.parametrize(("reference", "starts_at_log2"), [("base", False), ("sft", True)])
def test_dpo_reference_choice_changes_the_first_loss(capsys, tmp_path, tiny_model_dir, dpo_data, sft_run,
                                                     reference, starts_at_log2):
    """At step 1 the policy is the SFT model: against an SFT reference the log-ratios cancel and the DPO
    loss is exactly log 2; against the base reference they do not."""
    sft_out, code, err = sft_run
    assert code == 0, err
    out = tmp_path / reference
    result = run_cli(capsys, "dpo", "--model", tiny_model_dir, "--adapter", sft_out, "--data", dpo_data, "--out",
                     out, *TINY_RUN, "--max-steps", "1", "--eval-strategy", "no", "--reference", reference)
    assert result.exit_code == 0, result.stderr
    first = next(entry for entry in log_history(out) if "loss" in entry)
    assert (first["loss"] == pytest.approx(math.log(2), abs=1e-4)) is starts_at_log2
    if reference == "sft":  # TRL's frozen copy is the SFT adapter, never trained
        sft_weights = tensors(sft_out / "adapter_model.safetensors")
        [ref_file] = list((out / "checkpoints").glob("*/ref/adapter_model.safetensors"))
        ref = tensors(ref_file)
        assert set(ref) == set(sft_weights) and all(ref[name].equal(sft_weights[name]) for name in ref)


def test_dpo_without_adapter_starts_a_fresh_one_against_the_base(capsys, tmp_path, tiny_model_dir, dpo_data):
    """No --adapter: a new LoRA adapter (lora_B = 0) is trained and the reference is the base model with the
    adapter off, so at step 1 policy and reference agree exactly and the DPO loss is log 2."""
    out = tmp_path / "run"
    result = run_cli(capsys, "dpo", "--model", tiny_model_dir, "--data", dpo_data, "--out", out, *TINY_RUN,
                     "--max-steps", "2", "--eval-strategy", "no")
    assert result.exit_code == 0, result.stderr
    first = next(entry for entry in log_history(out) if "loss" in entry)
    assert first["step"] == 1 and first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    # TRL keeps a frozen copy of the fresh adapter as "ref": lora_B = 0, i.e. exactly the base model.
    for ref in (out / "checkpoints").glob("*/ref/adapter_model.safetensors"):
        assert all(not t.any() for name, t in tensors(ref).items() if "lora_B" in name)
    manifest = read_json(out / "manifest.json")
    assert (manifest["status"], manifest["global_step"], manifest["best_checkpoint"]) == ("complete", 2, None)


@pytest.fixture(scope="module")
def second_tiny_model_dir(tmp_path_factory) -> Path:
    """Another tiny Llama: the same tokenizer and template, other random weights."""
    return root_conftest().build_tiny_model(tmp_path_factory.mktemp("tiny-llama-2"), seed=1)


def test_training_evaluation_uses_the_extractor_model(capsys, monkeypatch, tmp_path, tiny_model_dir, dpo_data,
                                                      second_tiny_model_dir):
    import pbt_cli.evals.flipflop as flipflop

    extractors = []
    original = flipflop.evaluate_flipflop

    def spy(rows, model, extractor, *args, **kwargs):
        extractors.append(extractor.describe())
        return original(rows, model, extractor, *args, **kwargs)

    monkeypatch.setattr(flipflop, "evaluate_flipflop", spy)
    out = tmp_path / "run"
    result = run_cli(capsys, "dpo", "--model", tiny_model_dir, "--data", dpo_data, "--out", out, *TINY_RUN,
                     "--max-steps", "1", "--eval-strategy", "steps", "--eval-steps", "1",
                     "--extractor-model", second_tiny_model_dir)
    assert result.exit_code == 0, result.stderr
    assert read_json(out / "manifest.json")["settings"]["extractor"]["name"] == str(second_tiny_model_dir)
    assert len(extractors) == 1
    assert extractors[0]["name"] == str(second_tiny_model_dir), extractors[0]


# --- 4. resume after an interruption ------------------------------------------------------------------------


def test_sft_resumes_from_the_last_checkpoint(capsys, monkeypatch, tmp_path, tiny_model_dir, sft_data):
    out = tmp_path / "run"
    args = sft_args(tiny_model_dir, sft_data, out, "--max-steps", "6", "--save-steps", "2")
    with monkeypatch.context() as patch:
        counter = StepCounter(patch, stop_at=3)  # interrupted during step 3, after checkpoint-2
        interrupted = run_cli(capsys, *args)
    assert interrupted.exit_code == 130, interrupted.stderr
    assert says(interrupted.stderr, "Resume with the same command")
    assert counter.calls == 3
    manifest = read_json(out / "manifest.json")
    assert manifest["status"] == "interrupted" and "global_step" not in manifest
    assert (out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert not (out / "checkpoints" / "checkpoint-4").exists()
    assert not (out / "adapter_model.safetensors").exists()  # no final adapter from an unfinished run

    with monkeypatch.context() as patch:
        counter = StepCounter(patch)
        resumed = run_cli(capsys, *args)
    assert resumed.exit_code == 0, resumed.stderr
    assert counter.calls == 4  # steps 3 to 6: continued from checkpoint-2, not from scratch
    manifest = read_json(out / "manifest.json")
    assert (manifest["status"], manifest["global_step"]) == ("complete", 6)
    steps = [entry["step"] for entry in log_history(out) if "loss" in entry]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 1-2 from the checkpoint's state, each step logged once
    state = read_json(out / "checkpoints" / "checkpoint-6" / "trainer_state.json")
    assert state["global_step"] == 6


def test_dpo_resumes_from_a_checkpoint_with_the_reference_adapter(capsys, monkeypatch, tmp_path, tiny_model_dir,
                                                                  dpo_data, sft_run):
    """A DPO checkpoint holds two adapters (the trained "default" and the frozen "ref"); resuming must
    restore the trained one and keep training."""
    out = tmp_path / "run"
    args = ["dpo", "--model", tiny_model_dir, "--adapter", sft_run[0], "--data", dpo_data, "--out", out,
            *TINY_RUN, "--max-steps", "4", "--save-steps", "2", "--eval-strategy", "no"]
    with monkeypatch.context() as patch:
        StepCounter(patch, stop_at=3)
        assert run_cli(capsys, *args).exit_code == 130
    checkpoint_2 = tensors(out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    with monkeypatch.context() as patch:
        counter = StepCounter(patch)
        resumed = run_cli(capsys, *args)
    assert resumed.exit_code == 0, resumed.stderr
    assert counter.calls == 2
    assert read_json(out / "manifest.json")["global_step"] == 4
    final = tensors(out / "adapter_model.safetensors")
    assert set(final) == set(checkpoint_2)
    assert any(not final[name].equal(checkpoint_2[name]) for name in final)  # steps 3-4 trained on top


# --- 5. finished runs are kept; unfinished ones resume only with the same settings --------------------------


def test_finished_run_is_kept(capsys, monkeypatch, tmp_path, tiny_model_dir, sft_data):
    """A finished run is never trained over: the same command reuses it (a recipe run twice), other settings
    are refused naming them, and --overwrite trains again."""
    out = tmp_path / "run"
    args = sft_args(tiny_model_dir, sft_data, out, "--max-steps", "1")
    assert run_cli(capsys, *args).exit_code == 0
    before = {name: (out / name).read_bytes() for name in ("adapter_model.safetensors", "manifest.json")}

    with monkeypatch.context() as patch:
        counter = StepCounter(patch)
        again = run_cli(capsys, *args)
    assert again.exit_code == 0, again.stderr
    assert counter.calls == 0  # nothing trained
    assert says(again.stderr, "up to date") and says(again.stderr, "after 1 steps")
    assert {name: (out / name).read_bytes() for name in before} == before

    other = run_cli(capsys, *args, "--learning-rate", "0.001")
    assert other.exit_code == 2
    [line] = error_lines(other.stderr)
    assert "finished run" in line and "learning_rate" in line and "--overwrite" in line
    assert {name: (out / name).read_bytes() for name in before} == before

    with monkeypatch.context() as patch:
        counter = StepCounter(patch)
        overwritten = run_cli(capsys, *args, "--learning-rate", "0.001", "--overwrite")
    assert overwritten.exit_code == 0, overwritten.stderr
    assert counter.calls == 1  # trained again, from scratch
    manifest = read_json(out / "manifest.json")
    assert (manifest["status"], manifest["settings"]["learning_rate"]) == ("complete", 0.001)


def test_unfinished_run_with_other_settings_is_refused(capsys, monkeypatch, tmp_path, tiny_model_dir, sft_data):
    out = tmp_path / "run"
    args = sft_args(tiny_model_dir, sft_data, out, "--max-steps", "4", "--save-steps", "1")
    with monkeypatch.context() as patch:
        StepCounter(patch, stop_at=2)
        assert run_cli(capsys, *args).exit_code == 130
    assert (out / "checkpoints" / "checkpoint-1").is_dir()

    other = run_cli(capsys, *args, "--learning-rate", "0.001")
    assert other.exit_code == 2
    [line] = error_lines(other.stderr)
    assert "unfinished run with other settings" in line and "learning_rate" in line and "--overwrite" in line
    assert read_json(out / "manifest.json")["settings"]["learning_rate"] == 5e-4  # untouched

    never = run_cli(capsys, *args, "--resume", "never")
    assert never.exit_code == 2
    [line] = error_lines(never.stderr)
    assert "--resume never" in line and "--overwrite" in line

    # Settings that do not change the run (--logging-steps) may differ: it resumes.
    with monkeypatch.context() as patch:
        counter = StepCounter(patch)
        resumed = run_cli(capsys, *args, "--logging-steps", "2")
    assert resumed.exit_code == 0, resumed.stderr
    assert counter.calls == 3
    assert read_json(out / "manifest.json")["global_step"] == 4


def test_unfinished_run_on_re_rendered_data_is_refused(capsys, monkeypatch, tmp_path, tiny_model_dir, pairs_dir):
    from pbt_cli.pipeline.preprocess import PreprocessConfig, run_preprocess

    data, out = tmp_path / "data", tmp_path / "run"
    spec = ModelSpec.parse(str(tiny_model_dir))
    run_preprocess(PreprocessConfig(pairs=pairs_dir, tokenizer=spec, out=data, format="sft"))
    args = sft_args(tiny_model_dir, data, out, "--max-steps", "4", "--save-steps", "1")
    with monkeypatch.context() as patch:
        StepCounter(patch, stop_at=2)
        assert run_cli(capsys, *args).exit_code == 130
    recorded = read_json(out / "manifest.json")["data_manifest"]

    # The same --data folder, re-rendered with other training rows (resist pairs only).
    run_preprocess(PreprocessConfig(pairs=pairs_dir, tokenizer=spec, out=data, format="sft", mix="resist",
                                    overwrite=True))
    from pbt_cli.artifacts import sha256_file

    assert sha256_file(data / "manifest.json")[:16] != recorded
    with monkeypatch.context() as patch:
        counter = StepCounter(patch)
        result = run_cli(capsys, *args)
    assert counter.calls == 0  # not resumed on other data
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert "--data" in line and "--overwrite" in line


# --- 6. data rendered for another tokenizer ---------------------------------------------------------------


@pytest.fixture(scope="module")
def other_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "other.jinja"
    path.write_text(OTHER_TEMPLATE)
    return path


@pytest.fixture(scope="module")
def other_sft_data(pairs_dir, tiny_model_no_template_dir, other_template, tmp_path_factory) -> Path:
    """The same pairs rendered for another model's tokenizer with another chat template."""
    return preprocess(pairs_dir, tiny_model_no_template_dir, tmp_path_factory.mktemp("other") / "data", "sft",
                      chat_template=other_template)


def test_data_rendered_for_another_tokenizer_is_refused(capsys, tmp_path, tiny_model_dir,
                                                        tiny_model_no_template_dir, other_sft_data):
    out = tmp_path / "run"
    result = run_cli(capsys, *sft_args(tiny_model_dir, other_sft_data, out, "--max-steps", "1"))
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert str(tiny_model_no_template_dir) in line and str(tiny_model_dir) in line  # both tokenizers named
    assert "pbt preprocess" in line and "--format sft" in line
    assert not out.exists()


def test_the_same_chat_template_override_is_accepted(capsys, tmp_path, tiny_model_dir, other_template,
                                                     other_sft_data):
    out = tmp_path / "run"
    result = run_cli(capsys, *sft_args(tiny_model_dir, other_sft_data, out, "--max-steps", "1",
                                       "--chat-template", other_template))
    assert result.exit_code == 0, result.stderr
    # the adapter's tokenizer carries the template it was trained with, not the model's own
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(out)).chat_template == OTHER_TEMPLATE


# --- 7. data of the wrong format, missing, or without training rows ---------------------------------------


def test_dpo_refuses_sft_data(capsys, tmp_path, tiny_model_dir, sft_data):
    result = run_cli(capsys, "dpo", "--model", tiny_model_dir, "--data", sft_data, "--out", tmp_path / "run",
                     *TINY_RUN, "--max-steps", "1", "--eval-strategy", "no")
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert "--format sft" in line and "--format dpo" in line
    assert not (tmp_path / "run").exists()


def test_sft_refuses_dpo_data(capsys, tmp_path, tiny_model_dir, dpo_data):
    result = run_cli(capsys, *sft_args(tiny_model_dir, dpo_data, tmp_path / "run", "--max-steps", "1"))
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert "--format dpo" in line and "--format sft" in line


def test_missing_data_folder(capsys, tmp_path, tiny_model_dir):
    result = run_cli(capsys, *sft_args(tiny_model_dir, tmp_path / "nope", tmp_path / "run", "--max-steps", "1"))
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert str(tmp_path / "nope") in line and "pbt preprocess" in line
    assert "Traceback" not in result.stderr


def rewrite_splits(source: Path, target: Path, keep: dict) -> Path:
    """A copy of a preprocessed folder whose splits are `keep[name](dataset)` (the manifest counts them; a
    split left out of `keep` keeps its count but loses its file)."""
    manifest = json.loads((source / "manifest.json").read_text())
    for split in ("train", "valid", "test"):
        if split not in keep:
            continue
        rows = list(keep[split](load_split(source, split)))
        manifest["counts"][split] = len(rows)
        if not rows:  # as `pbt preprocess` writes an empty split: no file
            manifest["files"].pop(split, None)
        if rows:
            layout = manifest["format"] if split == "train" else "dpo"
            write_split(target / split_file(split), rows, layout)
    target.mkdir(exist_ok=True)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize(("case", "message"), [
    ("no-train-split", "train-00000-of-00001.parquet is missing"),
    ("empty-train", "empty train split"),
])
def test_data_without_training_rows(capsys, tmp_path, tiny_model_dir, sft_data, case, message):
    if case == "no-train-split":
        keep = {"valid": lambda d: d, "test": lambda d: d}
    else:
        keep = {"train": lambda d: d.select([]), "valid": lambda d: d, "test": lambda d: d}
    data = rewrite_splits(sft_data, tmp_path / "data", keep)
    result = run_cli(capsys, *sft_args(tiny_model_dir, data, tmp_path / "run", "--max-steps", "1"))
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert message in line and str(data) in line


def test_evaluation_needs_a_valid_split(capsys, tmp_path, tiny_model_dir, dpo_data):
    data = rewrite_splits(dpo_data, tmp_path / "data", {"train": lambda d: d, "valid": lambda d: d.select([]),
                                                        "test": lambda d: d})
    result = run_cli(capsys, "dpo", "--model", tiny_model_dir, "--data", data, "--out", tmp_path / "run", *TINY_RUN,
                     "--max-steps", "1")  # dpo evaluates each epoch by default
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert "valid split" in line and "--eval-strategy no" in line


# --- 8. --max-length shorter than every prompt ------------------------------------------------------------------


def test_max_length_shorter_than_every_prompt(capsys, tmp_path, tiny_model_dir, sft_data):

    shortest = min(load_split(sft_data, "train")["prompt_tokens"])
    result = run_cli(capsys, *sft_args(tiny_model_dir, sft_data, tmp_path / "run", "--max-steps", "1",
                                       "--max-length", str(shortest)))
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    [line] = error_lines(result.stderr)
    assert f"--max-length {shortest}" in line and f"shortest {shortest}" in line
    assert not (tmp_path / "run").exists()


# --- 9. 4-bit NF4 QLoRA on the CPU --------------------------------------------------------------------------------


def test_qlora_4bit_sft_on_cpu(capsys, tmp_path, tiny_model_dir, sft_data):
    out = tmp_path / "run"
    result = run_cli(capsys, *sft_args(tiny_model_dir, sft_data, out, "--max-steps", "2", "--load-in-4bit"))
    assert result.exit_code == 0, result.stderr
    manifest = read_json(out / "manifest.json")
    assert (manifest["status"], manifest["global_step"]) == ("complete", 2)
    assert manifest["settings"]["model"]["load"]["quantization"]["load_in_4bit"] is True
    assert manifest["adapted_modules"] == {name: 2 for name in LLAMA_PROJECTIONS}
    weights = tensors(out / "adapter_model.safetensors")
    assert all(w.dtype.is_floating_point and bool(w.isfinite().all()) for w in weights.values())
    assert any(w.abs().gt(0).any() for name, w in weights.items() if "lora_B" in name)


def test_build_policy_quantizes_the_base_to_nf4_and_prepares_it(tmp_path, tiny_model_dir, sft_data):
    import torch
    from bitsandbytes.nn import Linear4bit

    from pbt_cli.train.policy import build_policy

    load = LoadOptions(quantization=QuantizationSpec(load_in_4bit=True))
    cfg = TrainConfig(stage="sft", model=ModelSpec.parse(str(tiny_model_dir), load=load), data=sft_data,
                      out=tmp_path / "out")
    model, tokenizer = build_policy(cfg)
    base = model.get_base_model()
    assert getattr(base, "is_loaded_in_4bit", False)
    bases = {name: module.base_layer for name, module in model.named_modules() if hasattr(module, "base_layer")
             and name.rsplit(".", 1)[-1] in LLAMA_PROJECTIONS}
    assert len(bases) == 2 * len(LLAMA_PROJECTIONS)
    assert all(isinstance(layer, Linear4bit) for layer in bases.values())
    assert {layer.weight.quant_type for layer in bases.values()} == {"nf4"}
    assert all(not p.requires_grad for name, p in model.named_parameters() if "lora_" not in name)
    assert all(p.requires_grad for name, p in model.named_parameters() if "lora_" in name)
    # prepare_model_for_kbit_training: checkpointing on, and the embeddings' output requires grad so
    # checkpointed activations get gradients through the frozen (quantized) model.
    assert base.is_gradient_checkpointing
    ids = torch.tensor([tokenizer("Paris", add_special_tokens=False)["input_ids"]])
    assert model.get_input_embeddings()(ids).requires_grad
    # layer norms are kept in float32 for stable training
    assert all(p.dtype == torch.float32 for name, p in base.named_parameters() if "norm" in name)


# --- 10. --lora-target-modules ---------------------------------------------------------------------------------


def test_unknown_lora_target_module_lists_the_models_linear_layers(capsys, tmp_path, tiny_model_dir, sft_data):
    result = run_cli(capsys, *sft_args(tiny_model_dir, sft_data, tmp_path / "run", "--max-steps", "1",
                                       "--lora-target-modules", "q_proj", "--lora-target-modules", "c_attn"))
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert "c_attn" in line and "LlamaForCausalLM" in line
    listed = line.split("its Linear layers are:", 1)[1]
    assert {name.strip(" .") for name in listed.split(",")} == LLAMA_PROJECTIONS  # lm_head left out
    assert not (tmp_path / "run").exists()


def test_lora_target_modules_adapt_only_those(capsys, tmp_path, tiny_model_dir, sft_data):
    out = tmp_path / "run"
    result = run_cli(capsys, *sft_args(tiny_model_dir, sft_data, out, "--max-steps", "1",
                                       "--lora-target-modules", "q_proj", "--lora-target-modules", "v_proj"))
    assert result.exit_code == 0, result.stderr
    assert read_json(out / "manifest.json")["adapted_modules"] == {"q_proj": 2, "v_proj": 2}
    assert set(read_json(out / "adapter_config.json")["target_modules"]) == {"q_proj", "v_proj"}
    names = tensors(out / "adapter_model.safetensors")
    assert {name.split(".lora_")[0].rsplit(".", 1)[1] for name in names} == {"q_proj", "v_proj"}


# --- 11. export ---------------------------------------------------------------------------------------------------


def test_export_merges_the_adapter_into_its_base(capsys, tmp_path, dpo_run, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = dpo_run[0]
    assert dpo_run[1] == 0, dpo_run[2]
    merged = tmp_path / "merged"
    result = run_cli(capsys, "export", "--adapter", adapter, "--out", merged, "--dtype", "float32")
    assert result.exit_code == 0, result.stderr
    config = read_json(merged / "config.json")
    assert "quantization_config" not in config
    assert read_json(merged / "manifest.json")["status"] == "complete"
    assert AutoTokenizer.from_pretrained(str(merged)).chat_template  # the adapter's tokenizer goes along

    merged_model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    assert not any("lora_" in name for name, _ in merged_model.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
    ids = torch.tensor([AutoTokenizer.from_pretrained(str(merged))(
        "<s><|user|>\nThe capital of France is Paris.</s>\n<|assistant|>\n", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        expected = peft_model(ids).logits
        got = merged_model(ids).logits
        with peft_model.disable_adapter():
            plain = peft_model(ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(plain, expected, atol=1e-4)  # the adapter does change the logits


def test_export_defaults_to_bfloat16(capsys, tmp_path, sft_run):
    merged = tmp_path / "merged"
    result = run_cli(capsys, "export", "--adapter", sft_run[0], "--out", merged)
    assert result.exit_code == 0, result.stderr
    weights = tensors(next(merged.glob("*.safetensors")))
    import torch

    assert {w.dtype for w in weights.values()} == {torch.bfloat16}


def test_export_refusals(capsys, tmp_path, tiny_model_dir, sft_run):
    not_adapter = run_cli(capsys, "export", "--adapter", tiny_model_dir, "--out", tmp_path / "merged")
    assert not_adapter.exit_code == 2
    [line] = error_lines(not_adapter.stderr)
    assert "not a PEFT adapter" in line and not (tmp_path / "merged").exists()

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    taken = run_cli(capsys, "export", "--adapter", sft_run[0], "--out", tmp_path / "taken")
    assert taken.exit_code == 2
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


# --- 12. GPU: bf16 + 4-bit QLoRA ----------------------------------------------------------------------------------


@pytest.mark.gpu
def test_qlora_bf16_sft_on_gpu(capsys, tmp_path, tiny_model_dir, sft_data):
    out = tmp_path / "run"
    result = run_cli(capsys, *sft_args(tiny_model_dir, sft_data, out, "--max-steps", "2", "--load-in-4bit",
                                       "--dtype", "bfloat16", "--device-map", "auto"))
    assert result.exit_code == 0, result.stderr
    manifest = read_json(out / "manifest.json")
    assert (manifest["status"], manifest["global_step"]) == ("complete", 2)
    assert manifest["settings"]["model"]["load"]["dtype"] == "bfloat16"
    assert math.isfinite(manifest["train_loss"])
    weights = tensors(out / "adapter_model.safetensors")
    assert all(bool(w.float().isfinite().all()) for w in weights.values())


# --- 13. --report-to wandb without wandb -------------------------------------------------------------------------


def test_report_to_wandb_without_wandb_names_the_install(capsys, tmp_path, tiny_model_dir, sft_data, monkeypatch):
    # the dev extra installs wandb: hide it (find_spec answers None for a module set to None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert importlib.util.find_spec("wandb") is None
    result = run_cli(capsys, *sft_args(tiny_model_dir, sft_data, tmp_path / "run", "--max-steps", "1",
                                       "--report-to", "wandb"))
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert "pip install wandb" in line


def test_select_checkpoint_scores_with_the_runs_protocol(dpo_run, tmp_path, monkeypatch):
    # A run trained with `--protocol original-code` is re-scored by select-checkpoint with the original's
    # flipflop rules too (docs/method.md §8.7 item 7): the protocol comes from the run's manifest.
    import pbt_cli.train.run as train_run

    out, code, err = dpo_run
    assert code == 0, err
    run = tmp_path / "dpo"
    shutil.copytree(out, run)
    manifest = read_json(run / "manifest.json")
    assert manifest["settings"]["protocol"] == "paper"
    manifest["settings"]["protocol"] = "original-code"
    (run / "manifest.json").write_text(json.dumps(manifest))
    seen = []

    def fake_evaluate(cfg, found, rows, progress):
        seen.append(cfg.protocol)
        return [{"checkpoint": str(path), "eval_flipflop_accuracy": 0.5} for path in found]

    monkeypatch.setattr(train_run, "evaluate_checkpoints", fake_evaluate)
    train_run.select_checkpoint(train_run.SelectConfig(run=run))
    assert seen == ["original-code"]
def test_a_finished_run_is_not_reused_when_its_model_changed(capsys, tmp_path, tiny_model_dir, sft_data):
    """Options alone do not make a run current: the base folder's (or adapter's) content is in the reuse key."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    out = tmp_path / "run"
    args = sft_args(base, sft_data, out, "--max-steps", "1")
    assert run_cli(capsys, *args).exit_code == 0
    assert read_json(out / "manifest.json")["settings"]["model_fingerprints"]["model"]["model"].startswith("sha256:")
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "rope_theta": 1234.0}))  # another model, same path
    changed = run_cli(capsys, *args)
    assert changed.exit_code == 2
    [line] = error_lines(changed.stderr)
    assert "model_fingerprints" in line and "--overwrite" in line
