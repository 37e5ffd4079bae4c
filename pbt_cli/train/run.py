"""The body `pbt sft` and `pbt dpo` share: claim the folder, load the policy and the data, train
through TRL, keep the best checkpoint, finish the folder. And `pbt select-checkpoint`, which picks
the best checkpoint of a run that could not evaluate while training."""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbt_cli import stops
from pbt_cli.artifacts import base_manifest, read_manifest
from pbt_cli.config import stable_hash
from pbt_cli.console import log
from pbt_cli.errors import PbtError
from pbt_cli.fingerprints import base_weights
from pbt_cli.models.lora import adapted_modules
from pbt_cli.outputs import claim_output
from pbt_cli.progress import NULL_PROGRESS, ProgressSink
from pbt_cli.train import distributed
from pbt_cli.train.config import BEST_METRIC, TrainConfig, check_trainer_choices
from pbt_cli.train.evaluation import evaluate_checkpoints, make_callbacks, selection_rows, with_flipflop
from pbt_cli.train.output import (
    ALREADY_DONE,
    TRAIN_OUTPUTS,
    adapter_from_fsdp_checkpoint,
    checkpoints,
    claim,
    data_hash,
    final_state_dict,
    finish,
    install_adapter,
)
from pbt_cli.train.policy import build_policy, check_launch, require_tracker, trains_on_cuda, trl_arguments
from pbt_cli.train.progress_log import use_step_progress


def load_training_data(cfg: TrainConfig, tokenizer: Any) -> tuple[Any, Any, list[dict[str, Any]], dict[str, Any]]:
    """(train dataset for TRL, eval dataset for TRL or None, flipflop selection rows, data manifest)."""
    from pbt_cli.pipeline.preprocess import check_same_tokenizer, load_split, read_data_manifest

    manifest = read_data_manifest(cfg.data)
    if manifest.get("format") != cfg.stage:
        raise PbtError(f"--data {cfg.data} was rendered with --format {manifest.get('format')}, but `pbt {cfg.stage}` "
                       f"needs --format {cfg.stage}; run `pbt preprocess ... --format {cfg.stage}`")
    check_same_tokenizer(cfg.data, manifest, cfg.model, tokenizer)
    train = load_split(cfg.data, "train")
    if len(train) == 0:
        raise PbtError(f"--data {cfg.data} has an empty train split")
    completion = "completion_tokens" if cfg.stage == "sft" else "chosen_tokens"
    prompt_lengths = train["prompt_tokens"]
    if min(prompt_lengths) >= cfg.max_length:
        raise PbtError(f"--max-length {cfg.max_length} is shorter than every prompt (shortest {min(prompt_lengths)} "
                       "tokens); raise --max-length or re-render with a smaller --max-prompt-length")
    too_long = sum(1 for p, c in zip(prompt_lengths, train[completion], strict=True) if p + c > cfg.max_length)
    if too_long:
        log.warning("%d of %d training examples are longer than --max-length %d and will be truncated", too_long,
                    len(train), cfg.max_length)
    columns = ["prompt", "completion"] if cfg.stage == "sft" else ["prompt", "chosen", "rejected"]
    train = train.select_columns(columns)
    valid = load_split(cfg.data, "valid")
    rows = selection_rows([dict(r) for r in valid], manifest.get("mix", "balanced"), cfg.eval_limit, cfg.seed) \
        if len(valid) else []
    eval_dataset = None
    if cfg.eval_strategy != "no":
        if not rows:
            raise PbtError(f"--eval-strategy {cfg.eval_strategy} needs a valid split with pairs of the mix's kinds "
                           f"({manifest.get('mix')}), and {cfg.data} has none; pass --eval-strategy no or generate "
                           "more trees")
        eval_dataset = valid.select(range(min(len(valid), len(rows))))
        if cfg.stage == "sft":  # SFT's eval loss is on the preferred responses
            eval_dataset = eval_dataset.map(lambda r: {"completion": r["chosen"]})
        eval_dataset = eval_dataset.select_columns(columns)
    return train, eval_dataset, rows, manifest


def check_data_matches(cfg: TrainConfig) -> None:
    """The data's format and chat template, checked before the model and its LoRA layers are built
    (seconds on a tiny model, minutes at 8B): only the tokenizer loads here."""
    from pbt_cli.models.loading import load_tokenizer
    from pbt_cli.models.resolve import resolve
    from pbt_cli.pipeline.preprocess import check_same_tokenizer, read_data_manifest

    manifest = read_data_manifest(cfg.data)
    if manifest.get("format") != cfg.stage:
        raise PbtError(f"--data {cfg.data} was rendered with --format {manifest.get('format')}, but `pbt {cfg.stage}` "
                       f"needs --format {cfg.stage}; run `pbt preprocess ... --format {cfg.stage}`")
    check_same_tokenizer(cfg.data, manifest, cfg.model, load_tokenizer(resolve(cfg.model), padding_side="right"))


def check_adapter_input(cfg: TrainConfig) -> None:
    """An adapter to continue that pbt made must be a finished `pbt sft` or `pbt dpo` run."""
    adapter = cfg.model.adapter
    if adapter and (Path(adapter).expanduser() / "manifest.json").is_file():
        from pbt_cli.outputs import require_stage

        manifest = require_stage(Path(adapter).expanduser(), ("sft", "dpo"), "--adapter")
        if manifest.get("status") != "complete":
            raise PbtError(f"--adapter {adapter} has not finished training (status {manifest.get('status')}); "
                           "finish it by rerunning its command first")


def run_training(cfg: TrainConfig, trainer_class: Any, config_class: Any, *,
                 stage_arguments: dict[str, Any] | None = None,
                 progress: ProgressSink = NULL_PROGRESS) -> dict[str, Any]:
    """Train one run; under a launcher every rank calls this (train/distributed.py says who does what)
    and every rank returns the manifest rank 0 wrote."""
    from pbt_cli.pipeline.preprocess import check_data_files

    check_data_files(cfg.data)  # before the folder is claimed: a wrong --data is the likelier mistake
    check_adapter_input(cfg)
    require_tracker(cfg.report_to)
    check_trainer_choices(cfg)
    check_launch(cfg)
    with distributed.process_group(cuda=trains_on_cuda(cfg), timeout_s=cfg.ddp_timeout):
        try:
            return _train_in_group(cfg, trainer_class, config_class, stage_arguments or {},
                                   progress if distributed.is_main_process() else NULL_PROGRESS)
        except RuntimeError as exc:
            failure = distributed.peer_failure(exc)
            if failure is None:
                raise
            distributed.ignore_launcher_stop()
            raise failure from None


def claim_on_main(cfg: TrainConfig) -> tuple[Any, str | bool, dict[str, Any] | None]:
    """Rank 0 claims and locks --out (and with --overwrite clears it) while the other ranks wait; every
    rank gets rank 0's resume point, the finished run's manifest when there is nothing to do, or leaves
    with rank 0's refusal. Returns (the folder, or a no-op context on ranks > 0; resume point; manifest)."""
    if not distributed.is_main_process():
        answer = distributed.from_main(None)
        if answer.get("refused"):
            raise distributed.FollowerExit(0)
        return contextlib.nullcontext(), answer["resume_from"], answer.get("done")
    try:
        folder, resume_from = claim(cfg)
    except BaseException:
        distributed.from_main({"refused": True})  # rank 0 prints why and exits with its code
        raise
    done = {**(read_manifest(cfg.out) or {}), "reused": True} if resume_from == ALREADY_DONE else None
    distributed.from_main({"resume_from": resume_from, "done": done})
    return folder, resume_from, done


def _train_in_group(cfg: TrainConfig, trainer_class: Any, config_class: Any,
                    stage_arguments: dict[str, Any], progress: ProgressSink) -> dict[str, Any]:
    from transformers import set_seed

    main = distributed.is_main_process()
    folder, resume_from, done = claim_on_main(cfg)
    with folder:
        if done is not None:
            log.info("%s already holds this finished run; nothing to do (--overwrite trains again)", cfg.out)
            return done
        check_data_matches(cfg)
        set_seed(cfg.seed)
        model, tokenizer = build_policy(cfg)
        train, eval_dataset, rows, data_manifest = load_training_data(cfg, tokenizer)
        args = trl_arguments(cfg, config_class, **stage_arguments)
        trainer = with_flipflop(trainer_class)(model=model, args=args, train_dataset=train,
                                               eval_dataset=eval_dataset, processing_class=tokenizer,
                                               callbacks=make_callbacks(cfg))
        trainer.pbt_rows, trainer.pbt_config = rows, cfg
        use_step_progress(trainer, progress)
        manifest = base_manifest(cfg.stage, cfg)
        manifest.update(status="running", settings=cfg.settings(), data_manifest=data_hash(cfg),
                        data_tokenizer=data_manifest.get("tokenizer"), data_mix=data_manifest.get("mix"),
                        selection={"rows": len(rows), "labels": sorted({r.get("label") for r in rows})},
                        config_hash=stable_hash(cfg.settings()), adapted_modules=dict(adapted_modules(model)),
                        base_weights=base_weights(cfg.model))
        if distributed.world_size() > 1:
            manifest["world_size"] = distributed.world_size()
        if main:
            folder.write_manifest(manifest)
        with stops.deferred():  # a stop ends the current step, saves a checkpoint, and returns (make_callbacks)
            trainer.train(resume_from_checkpoint=resume_from or None)
        # the ranks stopped together (StopCallback); each leaves the same way, even one that saw no signal
        if distributed.any_rank(stops.requested() is not None):
            distributed.ignore_launcher_stop()
            raise stops.StopRequested(stops.requested() or signal.SIGTERM)
        state_dict = final_state_dict(trainer)  # every rank: FSDP gathers the shards onto rank 0
        written = finish(cfg, folder, trainer, tokenizer, manifest, state_dict=state_dict) if main else None
        return distributed.from_main(written)


# --- pbt select-checkpoint -------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectConfig:
    run: Path  # a `pbt sft` / `pbt dpo` --out with checkpoints
    data: Path | None = None  # default: the run's own --data
    extractor: Any = None  # ModelSpec; default: the run's, else the base with the adapter off
    eval_limit: int | None = None  # default: the run's
    batch_size: int = 64


def select_checkpoint(cfg: SelectConfig, progress: ProgressSink = NULL_PROGRESS) -> dict[str, Any]:
    """Evaluate every saved checkpoint of a run with the flipflop code of training and install the best
    as the run's adapter (docs/method.md §5.5); the manifest records every score and the choice."""

    from pbt_cli.cards import write_model_card
    from pbt_cli.models.spec import ModelSpec
    from pbt_cli.outputs import require_stage
    from pbt_cli.pipeline.preprocess import load_split, read_data_manifest

    manifest = require_stage(cfg.run, ("dpo", "sft"), "--run")
    if manifest.get("status") != "complete":
        raise PbtError(f"--run {cfg.run} has not finished training (status {manifest.get('status')}); finish it first "
                       "by rerunning its command")
    settings = dict(manifest.get("settings") or {})
    data = cfg.data or Path(settings["data"])
    data_manifest = read_data_manifest(data)
    found = checkpoints(cfg.run)
    if not found:
        raise PbtError(f"--run {cfg.run} has no checkpoints/checkpoint-* to choose from; train with "
                       "--save-strategy epoch (and --save-total-limit large enough to keep every epoch)")
    model_settings = settings["model"]
    load = _load_options(model_settings.get("load") or {})
    model = ModelSpec(name=model_settings["name"], revision=model_settings.get("revision"), load=load)
    extractor = cfg.extractor or (ModelSpec(**{**settings["extractor"], "load": load}) if settings.get("extractor")
                                  else None)
    train_cfg = TrainConfig(stage=manifest["stage"], model=model, data=data, out=cfg.run, extractor=extractor,
                            eval_limit=cfg.eval_limit or settings.get("eval_limit"),
                            eval_max_new_tokens=settings.get("eval_max_new_tokens", 80), seed=settings.get("seed", 42),
                            eval_batch_size=cfg.batch_size, protocol=settings.get("protocol", "paper"))
    rows = selection_rows([dict(r) for r in load_split(data, "valid")], data_manifest.get("mix", "balanced"),
                          train_cfg.eval_limit, train_cfg.seed)
    if not rows:
        raise PbtError(f"--data {data} has no valid pairs of the run's kinds to select on")
    with claim_output(cfg.run, manifest["stage"], outputs=manifest.get("outputs") or TRAIN_OUTPUTS) as folder:
        for checkpoint in found:  # an FSDP run's checkpoints hold shards; its adapter config is the run's own
            adapter_from_fsdp_checkpoint(checkpoint, adapter_config=cfg.run / "adapter_config.json")
        progress.start("checkpoints", "evaluating checkpoints", total=len(found))
        results = evaluate_checkpoints(train_cfg, found, rows, progress)
        key = f"eval_{BEST_METRIC}"
        best = max(results, key=lambda r: (r.get(key, -1.0), -found.index(Path(r["checkpoint"]))))
        install_adapter(Path(best["checkpoint"]), cfg.run)
        import os

        selected = dict(folder.previous or manifest)
        selected.update(best_checkpoint=os.path.relpath(best["checkpoint"], cfg.run), best_metric=best.get(key),
                        evaluations=results, selected_by="pbt select-checkpoint",
                        selection={"rows": len(rows), "labels": sorted({r.get("label") for r in rows}),
                                   "data": str(data)})
        write_model_card(cfg.run, selected)
        return folder.write_manifest(selected)


def _load_options(plain: dict[str, Any]) -> Any:
    import dataclasses

    from pbt_cli.models.spec import LoadOptions, QuantizationSpec

    quantization = QuantizationSpec(**(plain.get("quantization") or {}))
    fields = {f.name for f in dataclasses.fields(LoadOptions)}
    return LoadOptions(**{k: v for k, v in plain.items() if k in fields and k != "quantization"},
                       quantization=quantization)
