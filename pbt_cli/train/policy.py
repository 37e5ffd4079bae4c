"""The model being trained (base + LoRA adapter) and the TRL arguments that train it."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from pbt_cli.console import log
from pbt_cli.errors import PbtError
from pbt_cli.models.lora import adapted_modules, lora_config
from pbt_cli.train.config import BEST_METRIC, TrainConfig


def trains_on_cuda(cfg: TrainConfig) -> bool:
    """Whether this run trains on GPUs: there are some and `--device-map cpu` did not ask for the CPU."""
    import torch

    return torch.cuda.is_available() and cfg.model.load.device_map != "cpu"


def training_device_map(cfg: TrainConfig) -> Any:
    """Each process of a multi-GPU launch takes its own GPU; one process uses every visible GPU or the CPU."""
    from pbt_cli.models.quant import fsdp_launch
    from pbt_cli.train.distributed import local_rank, world_size

    if not trains_on_cuda(cfg):
        return "cpu"
    if fsdp_launch():
        # FSDP places and shards the weights itself; quantized weights load whole on every rank
        # (transformers cannot defer them to rank 0), each onto its own GPU, not GPU 0
        return {"": local_rank()} if cfg.model.load.quantization.enabled else None
    if world_size() > 1:
        return {"": local_rank()}
    return "auto"


def check_launch(cfg: TrainConfig) -> None:
    """What a multi-process launch cannot do, refused in one line before anything loads."""
    from pbt_cli.models.quant import fsdp_launch

    if fsdp_launch() and not trains_on_cuda(cfg):
        raise PbtError("FSDP shards the model over GPUs and this run has none (no CUDA, or --device-map cpu); "
                       "on CPU launch data-parallel processes with `torchrun --nproc_per_node N -m pbt_cli ...`")
    if fsdp_launch() and cfg.eval_strategy != "no":
        raise PbtError("flipflop evaluation during training needs the whole model in one process, which FSDP "
                       "shards; pass --eval-strategy no --save-strategy epoch, then choose the best epoch with "
                       "`pbt select-checkpoint`")
    if fsdp_launch() and cfg.stage == "dpo" and cfg.reference == "sft" and cfg.model.adapter:
        # the frozen float32 "ref" copy would share FSDP wrap units with bfloat16 weights, which FSDP
        # flattens only in one dtype
        raise PbtError("--reference sft keeps a frozen copy of the SFT adapter that FSDP cannot shard with the "
                       "policy; under FSDP use --reference base (the paper's reference), or train with DDP")


def build_policy(cfg: TrainConfig) -> tuple[Any, Any]:
    """The base model (quantized if asked, prepared for k-bit training) with a trainable LoRA adapter.

    `pbt dpo --adapter SFT` continues that adapter instead of starting a new one.
    """
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    from pbt_cli.models.loading import load_model, load_tokenizer
    from pbt_cli.models.quant import fsdp_launch
    from pbt_cli.models.resolve import resolve

    check_launch(cfg)
    base_spec = dataclasses.replace(cfg.model, adapter=None)
    resolved = resolve(cfg.model)
    tokenizer = load_tokenizer(resolved, padding_side="right")
    model = load_model(dataclasses.replace(resolved, adapter=None), training=True,
                       device_map_override=training_device_map(cfg))
    if cfg.model.load.quantization.enabled and not fsdp_launch():  # FSDP needs the weights in one dtype
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    if resolved.adapter:
        model = PeftModel.from_pretrained(model, resolved.adapter, is_trainable=True)
        # the adapter names its base as a hub id or a path; peft's checkpoint saving looks that name
        # up, so point it at the weights actually loaded (the saved adapter names its base again in finish)
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


def require_tracker(report_to: str) -> None:
    """A tracker that is not installed is one line, before any model loads."""
    import importlib.util

    if report_to in ("none", ""):
        return
    package = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}[report_to]
    if importlib.util.find_spec(package) is None:
        raise PbtError(f"--report-to {report_to} needs {package}: pip install {package} (or use --report-to none)")


def trl_arguments(cfg: TrainConfig, config_class: Any, **stage_specific: Any) -> Any:
    """Our config -> SFTConfig / DPOConfig. Evaluation and best-checkpoint saving are driven by
    `FlipflopCallback` (train/evaluation.py), so the Trainer's own eval_strategy stays "no"."""
    import torch

    from pbt_cli.models.loading import torch_dtype
    from pbt_cli.train.output import checkpoints_folder, tracking_folder

    cuda = trains_on_cuda(cfg)
    dtype = torch_dtype(cfg.model.load, training=True)
    optim = cfg.optim
    if optim == "auto":
        from pbt_cli.models.quant import bitsandbytes_installed

        optim = "paged_adamw_32bit" if cuda and bitsandbytes_installed() else "adamw_torch"
    require_tracker(cfg.report_to)
    fields = {f.name for f in dataclasses.fields(config_class)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    kwargs: dict[str, Any] = dict(
        output_dir=str(checkpoints_folder(cfg.out)),
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps,
        max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, optim=optim, seed=cfg.seed,
        logging_steps=cfg.logging_steps, save_strategy=cfg.save_strategy, save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, eval_strategy="no",
        metric_for_best_model=BEST_METRIC if cfg.eval_strategy != "no" else None, greater_is_better=True,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to], max_length=cfg.max_length,
        bf16=cuda and dtype == torch.bfloat16, fp16=cuda and dtype == torch.float16, use_cpu=not cuda,
        remove_unused_columns=True, dataloader_num_workers=0,
        # LoRA leaves the base frozen: DDP need not search the graph for unused parameters every step
        ddp_find_unused_parameters=False, ddp_timeout=cfg.ddp_timeout,
        disable_tqdm=not sys.stderr.isatty(),  # progress bars only on a terminal, as everywhere in pbt
    )
    if cfg.run_name:
        kwargs["run_name"] = cfg.run_name
    if cfg.project and "project" in fields:
        kwargs["project"] = cfg.project  # transformers' name for the wandb / trackio project
    if cfg.report_to == "tensorboard":  # transformers 5 reads the folder from the environment only
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(tracking_folder(cfg.out))
    if cfg.report_to == "wandb":
        os.environ["WANDB_DIR"] = str(cfg.out)
        if cfg.tags:
            os.environ["WANDB_TAGS"] = ",".join(cfg.tags)
    kwargs[checkpointing] = cfg.gradient_checkpointing
    kwargs[f"{checkpointing}_kwargs"] = {"use_reentrant": False} if cfg.gradient_checkpointing else None
    kwargs.update(stage_specific)
    return config_class(**kwargs)
