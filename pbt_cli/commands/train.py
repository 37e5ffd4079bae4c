"""`pbt sft`, `pbt dpo`, `pbt select-checkpoint` and `pbt export` (docs/method.md §5).

`sft` and `dpo` take the same options, so the parameter list is written once and each command's
signature is built from it with that stage's defaults (Typer reads `__signature__`).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pbt_cli import console
from pbt_cli.commands import options as o
from pbt_cli.models.lora import LoraSpec

LORA = "LoRA"
OPTIMIZATION = "Optimization"
EVALUATION = "Evaluation during training (flipflop accuracy on the valid split)"

SFT_HELP = "Supervised fine-tuning (LoRA/QLoRA) on the preferred responses of the balanced mix."
DPO_HELP = "DPO (LoRA/QLoRA) on balanced preference pairs, from an SFT adapter; keeps the best checkpoint."
SFT_EXAMPLE = ("Example: pbt sft --model smollm2-135m --data runs/try/sft_data --max-steps 20 --warmup-steps 2 "
               "--out runs/try/sft")
DPO_EXAMPLE = ("Example: pbt dpo --model smollm2-135m --adapter runs/try/sft --data runs/try/dpo_data "
               "--num-train-epochs 2 --out runs/try/dpo")

# Paper defaults for 7-8B models (docs/method.md §5); the CPU demo overrides steps and batch sizes.
DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": {"max_steps": 240, "num_train_epochs": 1.0, "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 10, "max_length": 1024, "eval_strategy": "no"},
    "dpo": {"max_steps": -1, "num_train_epochs": 5.0, "per_device_train_batch_size": 7,
            "gradient_accumulation_steps": 5, "max_length": 1000, "eval_strategy": "epoch"},
}

PARAMETERS: list[tuple[str, Any, Any]] = [
    ("model", Annotated[str, typer.Option("--model", help="Base model: short name, hub id or folder.")], ...),
    ("data", Annotated[Path, typer.Option("--data", help="A `pbt preprocess` output for this model's tokenizer.")],
     ...),
    ("out", Annotated[Path, typer.Option("--out", help="Output folder: adapter, checkpoints, log, manifest.")], ...),
    ("adapter", Annotated[str | None, typer.Option(
        "--adapter", help="Adapter to continue training (dpo: the SFT adapter); its base must be --model.")], None),
    ("revision", o.Revision, None),
    ("lora_r", Annotated[int, typer.Option("--lora-r", help="LoRA rank.", rich_help_panel=LORA)], 16),
    ("lora_alpha", Annotated[int, typer.Option("--lora-alpha", rich_help_panel=LORA)], 32),
    ("lora_dropout", Annotated[float, typer.Option("--lora-dropout", rich_help_panel=LORA)], 0.05),
    ("lora_target_modules", Annotated[list[str] | None, typer.Option(
        "--lora-target-modules", help="Layer names to adapt (repeat the flag); default: every attention and MLP "
        "projection the model has.", rich_help_panel=LORA)], None),
    ("learning_rate", Annotated[float, typer.Option("--learning-rate", rich_help_panel=OPTIMIZATION)], 5e-4),
    ("lr_scheduler_type", Annotated[str, typer.Option("--lr-scheduler-type", rich_help_panel=OPTIMIZATION)],
     "cosine"),
    ("warmup_steps", Annotated[int, typer.Option("--warmup-steps", rich_help_panel=OPTIMIZATION)], 100),
    ("max_steps", Annotated[int, typer.Option("--max-steps", help="Stop after N optimizer steps (-1: by epochs).",
                                              rich_help_panel=OPTIMIZATION)], None),
    ("num_train_epochs", Annotated[float, typer.Option("--num-train-epochs", rich_help_panel=OPTIMIZATION)], None),
    ("per_device_train_batch_size", Annotated[int, typer.Option("--per-device-train-batch-size",
                                                                rich_help_panel=OPTIMIZATION)], None),
    ("per_device_eval_batch_size", Annotated[int, typer.Option("--per-device-eval-batch-size",
                                                               rich_help_panel=OPTIMIZATION)], 8),
    ("gradient_accumulation_steps", Annotated[int, typer.Option("--gradient-accumulation-steps",
                                                                rich_help_panel=OPTIMIZATION)], None),
    ("gradient_checkpointing", Annotated[bool, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing",
                                                            rich_help_panel=OPTIMIZATION)], True),
    ("optim", Annotated[str, typer.Option("--optim", help="auto = paged_adamw_32bit on GPU, adamw_torch on CPU.",
                                          rich_help_panel=OPTIMIZATION)], "auto"),
    ("max_length", Annotated[int, typer.Option("--max-length", help="Tokens per example (longer: truncated).",
                                               rich_help_panel=OPTIMIZATION)], None),
    ("beta", Annotated[float, typer.Option("--beta", help="DPO temperature.",
                                           rich_help_panel=OPTIMIZATION)], 0.1),
    ("reference", Annotated[Literal["base", "sft"], typer.Option(
        "--reference", help="The reference policy, base (the policy with its adapter off, as in the "
        "paper) or sft (a frozen copy of the --adapter).", rich_help_panel=OPTIMIZATION)], "base"),
    ("eval_strategy", Annotated[Literal["epoch", "steps", "no"], typer.Option(
        "--eval-strategy", help="When to evaluate (and save a checkpoint with it).", rich_help_panel=EVALUATION)],
     None),
    ("eval_steps", Annotated[int, typer.Option("--eval-steps", rich_help_panel=EVALUATION)], 50),
    ("eval_limit", Annotated[int | None, typer.Option(
        "--eval-limit", help="Valid pairs to evaluate, of the data's mix kinds (half per kind for two kinds; the "
        "paper: 1000).", rich_help_panel=EVALUATION)], 1000),
    ("eval_max_new_tokens", Annotated[int, typer.Option("--eval-max-new-tokens", rich_help_panel=EVALUATION)], 80),
    ("extractor_model", Annotated[str | None, typer.Option(
        "--extractor-model", help="Answer extractor (default: the base model with the adapter switched off).",
        rich_help_panel=EVALUATION)], None),
    ("logging_steps", Annotated[int, typer.Option("--logging-steps", rich_help_panel=o.RUN)], 10),
    ("save_strategy", Annotated[Literal["steps", "epoch"], typer.Option(
        "--save-strategy", help="Checkpoint every --save-steps or at each epoch end (for `pbt select-checkpoint`).",
        rich_help_panel=o.RUN)], "steps"),
    ("save_steps", Annotated[int, typer.Option("--save-steps", help="Checkpoint every N steps (resume point).",
                                               rich_help_panel=o.RUN)], 50),
    ("save_total_limit", Annotated[int | None, typer.Option("--save-total-limit", rich_help_panel=o.RUN)], 3),
    ("report_to", o.ReportTo, "none"),
    ("run_name", o.RunName, None),
    ("project", o.Project, None),
    ("tags", o.Tags, None),
    ("base_model_name", Annotated[str | None, typer.Option(
        "--base-model-name", help="The base the adapter records (adapter_config.json): default its hub id, or the "
        "absolute path of a local base folder.", rich_help_panel=o.RUN)], None),
    ("resume", Annotated[str, typer.Option(
        "--resume", help="auto: continue from the last checkpoint in --out; never; or a checkpoint folder.",
        rich_help_panel=o.RUN)], "auto"),
    ("overwrite", o.Overwrite, False),
    ("ddp_timeout", Annotated[int, typer.Option(
        "--ddp-timeout", help="Under torchrun/accelerate launch: seconds a process waits for the others (e.g. for "
        "rank 0's flipflop evaluation) before the launch fails.", rich_help_panel=o.RUN)], 3 * 3600),
    ("seed", o.seed_option("data order, LoRA initialisation, dropout"), 42),
    ("protocol", o.Protocol, "paper"),
    ("chat_template", o.ChatTemplate, None),
    *o.LOAD_PARAMETERS,
    *o.RUN_PARAMETERS,
]


# options only `pbt dpo` shows; `pbt sft` keeps their defaults in its configuration
DPO_ONLY = {"beta", "reference"}


def train_config(stage: str, params: dict[str, Any]) -> Any:
    from pbt_cli.train.config import TrainConfig

    fallback = {name: default for name, _, default in PARAMETERS}
    values = {name: params[name] if params.get(name) is not None
              else DEFAULTS[stage].get(name, params.get(name, fallback[name])) for name, _, _ in PARAMETERS}
    lora = LoraSpec(r=values["lora_r"], lora_alpha=values["lora_alpha"], lora_dropout=values["lora_dropout"],
                    target_modules=tuple(values["lora_target_modules"]) if values["lora_target_modules"] else None)
    return TrainConfig(
        stage=stage, model=o.model_spec_from(values, "model", with_overrides=True), data=values["data"],
        out=values["out"], lora=lora, learning_rate=values["learning_rate"],
        lr_scheduler_type=values["lr_scheduler_type"], warmup_steps=values["warmup_steps"],
        max_steps=values["max_steps"], num_train_epochs=values["num_train_epochs"],
        per_device_train_batch_size=values["per_device_train_batch_size"],
        per_device_eval_batch_size=values["per_device_eval_batch_size"],
        gradient_accumulation_steps=values["gradient_accumulation_steps"],
        gradient_checkpointing=values["gradient_checkpointing"], optim=values["optim"],
        max_length=values["max_length"], beta=values["beta"], reference=values["reference"], seed=values["seed"],
        logging_steps=values["logging_steps"], save_steps=values["save_steps"],
        save_strategy=values["save_strategy"], save_total_limit=values["save_total_limit"],
        eval_strategy=values["eval_strategy"],
        eval_steps=values["eval_steps"], eval_limit=values["eval_limit"],
        extractor=o.model_spec_from(values, "extractor_model"), eval_max_new_tokens=values["eval_max_new_tokens"],
        report_to=values["report_to"], run_name=values["run_name"], project=values["project"],
        tags=tuple(values["tags"] or ()), base_model_name=values["base_model_name"], resume=values["resume"],
        overwrite=values["overwrite"], protocol=values["protocol"], ddp_timeout=values["ddp_timeout"],
    )


def _make_command(stage: str) -> Any:
    def command(ctx: typer.Context, **params: Any) -> None:
        from pbt_cli.pipeline.preprocess import read_data_manifest

        cfg = train_config(stage, ctx.params)
        dry_run = bool(params.get("dry_run"))
        o.check_models(cfg.model, cfg.extractor, dry_run=dry_run)
        o.check_input(cfg.data, "--data", dry_run=dry_run, check=read_data_manifest)
        if dry_run:
            o.print_dry_run(f"pbt {stage}", cfg)
            return
        if stage == "sft":
            from pbt_cli.train.sft import run_sft as run
        else:
            from pbt_cli.train.dpo import run_dpo as run
        with console.progress(stage) as progress:
            manifest = run(cfg, progress=progress)
        from pbt_cli.train.distributed import is_main_process

        if not is_main_process():  # under a launcher, rank 0 reports for every rank
            return
        best = manifest.get("best_checkpoint")
        status = "up to date, reused" if manifest.get("reused") else "done"
        console.stderr.print(
            f"[green]{status}[/]: adapter in {cfg.out} after {manifest.get('global_step')} steps"
            + (f"; best checkpoint {cfg.out / best} (flipflop accuracy {manifest.get('best_metric'):.3f})"
               if best else ""),
            highlight=False)

    defaults = DEFAULTS[stage]
    parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for name, annotation, default in PARAMETERS:
        if stage == "sft" and name in DPO_ONLY:
            continue
        if default is ...:
            parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation))
        else:
            value = defaults.get(name, default)
            parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                                default=value))
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__name__ = stage
    command.__doc__ = SFT_HELP if stage == "sft" else DPO_HELP
    return o.pbt_command(command)


sft = _make_command("sft")
dpo = _make_command("dpo")


EXPORT_HELP = "Merge a LoRA adapter into a 16-bit copy of its base model (for vLLM or sharing)."
EXPORT_EXAMPLE = "Example: pbt export --adapter models/dpo_balanced --out models/dpo_balanced_merged"


@o.pbt_command
def export(
    ctx: typer.Context,
    adapter: Annotated[str, typer.Option("--adapter", help="The adapter folder (e.g. a `pbt dpo` --out).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the merged model.")],
    model: Annotated[str | None, typer.Option("--model", help="Base model (default: the adapter's own).")] = None,
    dtype: Annotated[Literal["bfloat16", "float16", "float32"], typer.Option(
        "--dtype", help="dtype of the merged weights (never 4/8-bit).")] = "bfloat16",
    device_map: o.DeviceMap = "cpu",
    overwrite: o.Overwrite = False,
    config: o.ConfigFile = None,
    dry_run: o.DryRun = False,
) -> None:
    from pbt_cli.models.spec import ModelSpec
    from pbt_cli.train.export import ExportConfig, run_export

    cfg = ExportConfig(adapter=adapter, out=out, model=model, dtype=dtype, device_map=device_map, overwrite=overwrite)
    o.check_models(ModelSpec.parse(model or adapter, adapter=adapter if model else None), dry_run=dry_run)
    if dry_run:
        o.print_dry_run("pbt export", cfg)
        return
    result = run_export(cfg)
    console.stderr.print(f"[green]done[/]: {adapter} merged into {result['base']} -> {out}", highlight=False)


SELECT_HELP = ("Choose a finished run's best checkpoint by flipflop accuracy on its valid pairs (for runs that could "
               "not evaluate while training, e.g. FSDP) and install it as the run's adapter.")
SELECT_EXAMPLE = "Example: pbt select-checkpoint --run models/dpo_balanced --extractor-model mistral-7b-instruct-v0.2"


@o.pbt_command
def select_checkpoint(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option("--run", help="A `pbt sft` / `pbt dpo` --out whose checkpoints/ to compare.")],
    data: Annotated[Path | None, typer.Option(
        "--data", help="Data with the valid split to select on (default: the run's own --data).")] = None,
    extractor_model: Annotated[str | None, typer.Option(
        "--extractor-model", help="Answer extractor (default: the run's; else its base with the adapter off).")] = None,
    eval_limit: Annotated[int | None, typer.Option(
        "--eval-limit", help="Valid pairs to evaluate (default: the run's --eval-limit).")] = None,
    batch_size: o.BatchSize = 64,
    config: o.ConfigFile = None,
    dry_run: o.DryRun = False,
) -> None:
    from pbt_cli.outputs import require_stage
    from pbt_cli.train.run import SelectConfig
    from pbt_cli.train.run import select_checkpoint as run_select

    cfg = SelectConfig(run=run, data=data, extractor=o.model_spec_from(ctx.params, "extractor_model"),
                       eval_limit=eval_limit, batch_size=batch_size)
    o.check_input(run, "--run", dry_run=dry_run, check=lambda p: require_stage(p, ("dpo", "sft"), "--run"))
    if dry_run:
        o.print_dry_run("pbt select-checkpoint", cfg)
        return
    with console.progress("select-checkpoint") as progress:
        manifest = run_select(cfg, progress=progress)
    console.stderr.print(f"[green]done[/]: {run} now holds {manifest['best_checkpoint']} (flipflop accuracy "
                         f"{manifest['best_metric']:.3f} of {len(manifest['evaluations'])} checkpoints)",
                         highlight=False)
