"""What `pbt sft` and `pbt dpo` share: the config, the policy (base + LoRA), TRL arguments, the
output folder (resume, refuse, finish), and the flipflop evaluation during training.

Output folder (`--out`):
  adapter_config.json, adapter_model.safetensors   the final adapter (the best checkpoint by
                                                     flipflop accuracy when evaluation ran)
  tokenizer files + chat_template.jinja             what the adapter was trained with
  checkpoints/checkpoint-N/                          Trainer checkpoints (resume from the last)
  log_history.jsonl                                  every logged step and evaluation
  manifest.json                                      config, versions, data hash, metrics, best checkpoint
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.artifacts import MANIFEST, base_manifest, read_manifest, sha256_file, write_json
from pbt_cli.config import stable_hash, to_plain
from pbt_cli.console import log
from pbt_cli.data.jsonl import write_jsonl
from pbt_cli.errors import PbtError, require_at_least, require_one_of
from pbt_cli.models.lora import LoraSpec, adapted_modules, lora_config
from pbt_cli.models.spec import ModelSpec

EVAL_STRATEGIES = ("epoch", "steps", "no")
RESUME_MODES = ("auto", "never")
REPORT_TO = ("none", "wandb", "tensorboard")
BEST_METRIC = "flipflop_accuracy"  # logged as eval_flipflop_accuracy


@dataclass(frozen=True)
class TrainConfig:
    stage: str  # "sft" or "dpo"
    model: ModelSpec  # the base model; model.adapter is an adapter to continue training (dpo from sft)
    data: Path
    out: Path
    lora: LoraSpec = field(default_factory=LoraSpec)
    learning_rate: float = 5e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = 100
    max_steps: int = -1
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 10
    gradient_checkpointing: bool = True
    optim: str = "auto"
    max_length: int = 1024
    beta: float = 0.1
    reference: str = "base"  # dpo: "base" (the policy with its adapter off, SPEC.md 6) or "sft" (a frozen copy)
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 50
    save_total_limit: int | None = 3
    eval_strategy: str = "no"
    eval_steps: int = 50
    eval_limit: int | None = 200
    extractor: ModelSpec | None = None  # None: the base model itself, with the adapter switched off
    eval_max_new_tokens: int = 80
    eval_batch_size: int = 64
    report_to: str = "none"
    resume: str = "auto"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.stage not in ("sft", "dpo"):
            raise ValueError(self.stage)
        require_one_of("--eval-strategy", self.eval_strategy, EVAL_STRATEGIES)
        if self.reference not in ("base", "sft"):
            raise PbtError(f"--reference must be base or sft, got {self.reference!r}")
        require_one_of("--report-to", self.report_to, REPORT_TO)
        if self.resume not in RESUME_MODES and not Path(self.resume).is_dir():
            raise PbtError(f"--resume takes auto, never or a checkpoint folder; {self.resume!r} is none of them")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps", "eval_steps",
                     "logging_steps"):
            require_at_least(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.max_steps < 1 and self.num_train_epochs <= 0:
            raise PbtError("set --max-steps or a positive --num-train-epochs")

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one."""
        ignore = {"resume", "overwrite", "report_to", "logging_steps", "eval_batch_size", "save_total_limit"}
        return {k: v for k, v in to_plain(self).items() if k not in ignore}


# --- output folder -------------------------------------------------------------------------------


def checkpoints_folder(out: Path) -> Path:
    return out / "checkpoints"


def last_checkpoint(out: Path) -> Path | None:
    found = [p for p in checkpoints_folder(out).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


ALREADY_DONE = "already-done"


def data_hash(cfg: TrainConfig) -> str | None:
    path = cfg.data / MANIFEST
    return sha256_file(path)[:16] if path.is_file() else None


def prepare_output(cfg: TrainConfig) -> str | bool:
    """Check `--out` against the run; returns what to pass as `resume_from_checkpoint`, or
    ALREADY_DONE when a finished run with the same settings is there (a recipe run twice)."""
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise PbtError(f"--out {out} is a file; give a folder path")
    manifest = read_manifest(out) if out.is_dir() else None
    if cfg.overwrite and out.is_dir():
        shutil.rmtree(out)
        return False
    if Path(cfg.resume).is_dir():
        return str(cfg.resume)
    if manifest is None:
        if out.is_dir() and any(out.iterdir()):
            raise PbtError(f"--out {out} is not empty and holds no `pbt {cfg.stage}` run; choose another folder "
                           "or pass --overwrite")
        return False
    if manifest.get("stage") != cfg.stage:
        raise PbtError(f"--out {out} holds a `pbt {manifest.get('stage')}` run; choose another folder or --overwrite")
    old = manifest.get("settings") or {}
    new = cfg.settings()
    differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if manifest.get("data_manifest") != data_hash(cfg):
        differing.append("data (re-rendered at the same --data path)")
    if manifest.get("status") == "complete":
        if not differing:
            return ALREADY_DONE
        raise PbtError(f"--out {out} holds a finished run made with other settings ({', '.join(differing)}); pass "
                       "--overwrite to train again, or choose another folder")
    if differing:
        raise PbtError(f"--out {out} holds an unfinished run with other settings ({', '.join(differing)}); rerun "
                       "it with the same settings to resume, or pass --overwrite")
    checkpoint = last_checkpoint(out)
    if checkpoint is None:
        return False
    if cfg.resume == "never":
        raise PbtError(f"--out {out} has checkpoints and --resume never was given; pass --overwrite to start again")
    return str(checkpoint)


# --- data ------------------------------------------------------------------------------------------


def load_training_data(cfg: TrainConfig, tokenizer: Any) -> tuple[Any, Any, list[dict[str, Any]], dict[str, Any]]:
    """(train dataset for TRL, eval dataset for TRL or None, flipflop rows, data manifest)."""
    from pbt_cli.evals.flipflop import balanced_subset
    from pbt_cli.pipeline.preprocess import check_same_tokenizer, load_split, read_data_manifest

    if not cfg.data.exists():
        raise PbtError(f"--data {cfg.data} does not exist; give the --out folder of `pbt preprocess`")
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
    rows = balanced_subset([dict(r) for r in valid], cfg.eval_limit, cfg.seed) if len(valid) else []
    eval_dataset = None
    if cfg.eval_strategy != "no":
        if not rows:
            raise PbtError(f"--eval-strategy {cfg.eval_strategy} needs a valid split with resist and accept pairs, "
                           f"and {cfg.data} has none; pass --eval-strategy no or generate more trees")
        eval_dataset = valid.select(range(min(len(valid), len(rows))))
        if cfg.stage == "sft":  # SFT's eval loss is on the preferred responses
            eval_dataset = eval_dataset.map(lambda r: {"completion": r["chosen"]})
        eval_dataset = eval_dataset.select_columns(columns)
    return train, eval_dataset, rows, manifest


# --- the policy ------------------------------------------------------------------------------------


def training_device_map() -> Any:
    """Each process of a multi-GPU launch takes its own GPU; one process uses every visible GPU or the CPU."""
    import torch

    from pbt_cli.models.quant import fsdp_launch

    if not torch.cuda.is_available():
        return "cpu"
    if fsdp_launch():
        return None  # FSDP places and shards the weights itself
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return "auto"


def build_policy(cfg: TrainConfig) -> tuple[Any, Any]:
    """The base model (quantized if asked, prepared for k-bit training) with a trainable LoRA adapter.

    `pbt dpo --adapter SFT` continues that adapter instead of starting a new one.
    """
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    from pbt_cli.models.loading import load_model, load_tokenizer
    from pbt_cli.models.quant import fsdp_launch
    from pbt_cli.models.resolve import resolve

    if fsdp_launch() and cfg.eval_strategy != "no":
        raise PbtError("flipflop evaluation during training needs the whole model in one process, which FSDP "
                       "shards; pass --eval-strategy no and evaluate the checkpoints with `pbt eval flipflop`")
    base_spec = dataclasses.replace(cfg.model, adapter=None)
    resolved = resolve(cfg.model)
    tokenizer = load_tokenizer(resolved, padding_side="right")
    model = load_model(dataclasses.replace(resolved, adapter=None), training=True,
                       device_map_override=training_device_map())
    if cfg.model.load.quantization.enabled and not fsdp_launch():  # FSDP needs the weights in one dtype
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    if resolved.adapter:
        model = PeftModel.from_pretrained(model, resolved.adapter, is_trainable=True)
        # the adapter names its base as the user did ("smollm2-135m"); peft's checkpoint saving looks
        # that name up as a folder or on the hub, so point it at the weights actually loaded
        model.peft_config["default"].base_model_name_or_path = resolved.base
        log.info("continuing adapter %s on %s", resolved.adapter, base_spec.name)
    else:
        model = get_peft_model(model, lora_config(cfg.lora, model))
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()  # so checkpointed activations get gradients through frozen embeddings
    counts = adapted_modules(model)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA adapters on %s (%s trainable of %s parameters)",
             ", ".join(f"{name} x{n}" for name, n in sorted(counts.items())), f"{trainable:,}", f"{total:,}")
    return model, tokenizer


# --- TRL arguments ---------------------------------------------------------------------------------


def trl_arguments(cfg: TrainConfig, config_class: Any, **stage_specific: Any) -> Any:
    """Our config -> SFTConfig / DPOConfig. Evaluation and best-checkpoint saving are driven by
    `FlipflopCallback`, so the Trainer's own eval_strategy stays "no"."""
    import torch

    from pbt_cli.models.loading import torch_dtype

    cuda = torch.cuda.is_available() and cfg.model.load.device_map != "cpu"
    dtype = torch_dtype(cfg.model.load, training=True)
    optim = cfg.optim
    if optim == "auto":
        from pbt_cli.models.quant import bitsandbytes_installed

        optim = "paged_adamw_32bit" if cuda and bitsandbytes_installed() else "adamw_torch"
    if cfg.report_to == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise PbtError("--report-to wandb needs wandb: pip install wandb (or use --report-to none)")
    fields = {f.name for f in dataclasses.fields(config_class)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    kwargs: dict[str, Any] = dict(
        output_dir=str(checkpoints_folder(cfg.out)),
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps,
        max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, optim=optim, seed=cfg.seed,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, eval_strategy="no",
        metric_for_best_model=BEST_METRIC if cfg.eval_strategy != "no" else None, greater_is_better=True,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to], max_length=cfg.max_length,
        bf16=cuda and dtype == torch.bfloat16, fp16=cuda and dtype == torch.float16, use_cpu=not cuda,
        remove_unused_columns=True, dataloader_num_workers=0,
        disable_tqdm=not sys.stderr.isatty(),  # progress bars only on a terminal, as everywhere in pbt
    )
    kwargs[checkpointing] = cfg.gradient_checkpointing
    kwargs[f"{checkpointing}_kwargs"] = {"use_reentrant": False} if cfg.gradient_checkpointing else None
    kwargs.update(stage_specific)
    return config_class(**kwargs)


# --- evaluation during training --------------------------------------------------------------------


class AdapterOffGenerator:
    """A generator that runs with the PEFT adapter switched off: the base model as answer extractor."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.usage = generator.usage

    def chat(self, conversations: Any, sampling: Any) -> list[str]:
        with self.generator.model.disable_adapter():
            return self.generator.chat(conversations, sampling)

    def describe(self) -> dict[str, Any]:
        return {**self.generator.describe(), "adapter": "disabled (base model as extractor)"}


def make_flipflop_callback(cfg: TrainConfig, rows: list[dict[str, Any]], tokenizer: Any) -> Any:
    """A TrainerCallback that asks for an evaluation (and a checkpoint with it) at each epoch end or
    every `eval_steps`; the trainer's `evaluate` then adds flipflop metrics (see `with_flipflop`)."""
    from transformers import TrainerCallback

    class FlipflopCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if cfg.eval_strategy == "steps" and state.global_step % cfg.eval_steps == 0:
                control.should_evaluate = control.should_save = True
            return control

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if cfg.eval_strategy == "epoch":
                control.should_evaluate = control.should_save = True
            return control

    return FlipflopCallback()


def with_flipflop(trainer_class: Any) -> Any:
    """A subclass of a TRL trainer whose `evaluate` also reports flipflop accuracy on the valid rows,
    computed by `pbt_cli.evals.flipflop.evaluate_flipflop` (the code `pbt eval flipflop` runs)."""

    class FlipflopTrainer(trainer_class):  # type: ignore[misc, valid-type]
        pbt_rows: list[dict[str, Any]] = []
        pbt_config: TrainConfig | None = None
        pbt_extractor: Any = None

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None,
                     metric_key_prefix: str = "eval") -> dict[str, float]:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            flip = self._flipflop_metrics(metric_key_prefix)
            metrics.update(flip)
            self.log(flip)
            return metrics

        def _flipflop_metrics(self, prefix: str) -> dict[str, float]:
            from accelerate.utils import broadcast_object_list

            result: list[Any] = [None]
            if self.accelerator.is_main_process:
                result[0] = self._run_flipflop(prefix)
            if self.accelerator.num_processes > 1:
                broadcast_object_list(result)
            return result[0]

        def _run_flipflop(self, prefix: str) -> dict[str, float]:
            from pbt_cli.evals.flipflop import evaluate_flipflop
            from pbt_cli.models.backends.base import Sampling
            from pbt_cli.models.backends.hf import TransformersGenerator

            cfg = self.pbt_config
            model = self.accelerator.unwrap_model(self.model)
            tokenizer = copy.deepcopy(self.processing_class)
            tokenizer.padding_side = "left"
            # a fresh policy generator each time: its cached prompt prefixes depend on the adapter weights
            policy = TransformersGenerator(cfg.model, model=model, tokenizer=tokenizer,
                                           batch_size=cfg.eval_batch_size)
            if self.pbt_extractor is None and cfg.extractor is not None:
                self.pbt_extractor = TransformersGenerator(cfg.extractor, batch_size=cfg.eval_batch_size)
            elif self.pbt_extractor is None:  # no second model in memory: the base, adapter switched off
                self.pbt_extractor = AdapterOffGenerator(
                    TransformersGenerator(cfg.model, model=model, tokenizer=tokenizer, batch_size=cfg.eval_batch_size))
            was_training = model.training
            model.eval()
            try:
                sampling = Sampling(temperature=0.7, top_p=1.0, max_new_tokens=cfg.eval_max_new_tokens,
                                    seed=cfg.seed + self.state.global_step)
                metrics, _ = evaluate_flipflop(self.pbt_rows, policy, self.pbt_extractor, sampling, seed=cfg.seed)
            finally:
                model.train(was_training)
            return {f"{prefix}_flipflop_{name}": entry["value"] for name, entry in metrics.items()
                    if isinstance(entry, dict) and entry.get("value") is not None}

    FlipflopTrainer.__name__ = f"Flipflop{trainer_class.__name__}"
    return FlipflopTrainer


# --- the run ---------------------------------------------------------------------------------------


def adapter_base_name(spec: ModelSpec) -> str:
    """What the saved adapter names as its base: the user's short name or hub id, or an absolute path.

    When --model is itself an adapter folder (training continues it), its own base is the base."""
    from pbt_cli.models.resolve import ADAPTER_CONFIG, read_adapter_config

    path = Path(spec.name).expanduser()
    if (path / ADAPTER_CONFIG).is_file():
        return read_adapter_config(path)["base_model_name_or_path"]
    return str(path.resolve()) if path.exists() else spec.name


def finish(cfg: TrainConfig, trainer: Any, tokenizer: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Put the best (or last) adapter, the tokenizer, the log and a complete manifest into --out."""
    state = trainer.state
    best = state.best_model_checkpoint
    out = cfg.out
    trainer.model.save_pretrained(str(out), selected_adapters=["default"])
    if best:
        for name in ("adapter_model.safetensors", "adapter_model.bin"):
            if (Path(best) / name).is_file():
                shutil.copy2(Path(best) / name, out / name)
    adapter_config = out / "adapter_config.json"
    config = json.loads(adapter_config.read_text())
    config["base_model_name_or_path"] = adapter_base_name(cfg.model)
    config["revision"] = cfg.model.revision
    adapter_config.write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(str(out))
    write_jsonl(out / "log_history.jsonl", state.log_history)
    evaluations = [e for e in state.log_history if f"eval_{BEST_METRIC}" in e]
    best_relative = os.path.relpath(best, out) if best else None  # e.g. checkpoints/checkpoint-40
    manifest.update(status="complete", best_checkpoint=best_relative, best_metric=state.best_metric,
                    global_step=state.global_step, evaluations=evaluations,
                    train_loss=next((e.get("train_loss") for e in reversed(state.log_history) if "train_loss" in e),
                                    None))
    write_json(out / MANIFEST, manifest)
    return manifest


def run_training(cfg: TrainConfig, trainer_class: Any, config_class: Any, *,
                 stage_arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shared body of `pbt sft` and `pbt dpo`."""
    from transformers import set_seed

    resume_from = prepare_output(cfg)
    if resume_from == ALREADY_DONE:
        log.info("%s already holds this finished run; nothing to do (--overwrite trains again)", cfg.out)
        return {**(read_manifest(cfg.out) or {}), "reused": True}
    set_seed(cfg.seed)
    model, tokenizer = build_policy(cfg)
    train, eval_dataset, rows, data_manifest = load_training_data(cfg, tokenizer)
    args = trl_arguments(cfg, config_class, **(stage_arguments or {}))
    trainer_type = with_flipflop(trainer_class)
    trainer = trainer_type(model=model, args=args, train_dataset=train, eval_dataset=eval_dataset,
                           processing_class=tokenizer,
                           callbacks=[make_flipflop_callback(cfg, rows, tokenizer)] if cfg.eval_strategy != "no"
                           else None)
    trainer.pbt_rows, trainer.pbt_config = rows, cfg
    manifest = base_manifest(cfg.stage, cfg)
    manifest.update(status="running", settings=cfg.settings(), data_manifest=data_hash(cfg),
                    data_tokenizer=data_manifest.get("tokenizer"), config_hash=stable_hash(cfg.settings()),
                    adapted_modules=dict(adapted_modules(model)))
    if trainer.is_world_process_zero():
        cfg.out.mkdir(parents=True, exist_ok=True)
        write_json(cfg.out / MANIFEST, manifest)
    trainer.train(resume_from_checkpoint=resume_from or None)
    if trainer.is_world_process_zero():
        return finish(cfg, trainer, tokenizer, manifest)
    return manifest
