"""The settings of one training run (`pbt sft`, `pbt dpo`), as one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.config import to_plain
from pbt_cli.errors import PbtError, require_at_least, require_one_of
from pbt_cli.models.lora import LoraSpec
from pbt_cli.models.spec import ModelSpec

EVAL_STRATEGIES = ("epoch", "steps", "no")
SAVE_STRATEGIES = ("steps", "epoch")
RESUME_MODES = ("auto", "never")
REPORT_TO = ("none", "wandb", "tensorboard", "trackio")
BEST_METRIC = "flipflop_accuracy"  # logged as eval_flipflop_accuracy
PAPER_EVAL_LIMIT = 1000  # the original runs' --valid_limit (docs/method.md §5.3)


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
    reference: str = "base"  # dpo: "base" (the policy with its adapter off, docs/method.md §5.2) or "sft"
    seed: int = 42
    logging_steps: int = 10
    save_strategy: str = "steps"
    save_steps: int = 50
    save_total_limit: int | None = 3
    eval_strategy: str = "no"
    eval_steps: int = 50
    eval_limit: int | None = PAPER_EVAL_LIMIT
    extractor: ModelSpec | None = None  # None: the base model itself, with the adapter switched off
    eval_max_new_tokens: int = 80
    eval_batch_size: int = 64
    report_to: str = "none"
    run_name: str | None = None
    project: str | None = None
    tags: tuple[str, ...] = ()
    base_model_name: str | None = None  # what the adapter records as its base (default: see train/output.py)
    resume: str = "auto"
    overwrite: bool = False
    protocol: str = "paper"  # original-code: select epochs with the original's flipflop scoring (§8.7)
    ddp_timeout: int = 3 * 3600  # seconds a rank waits in a collective (rank 0's flipflop evaluation included)

    def __post_init__(self) -> None:
        if self.stage not in ("sft", "dpo"):
            raise ValueError(self.stage)
        require_one_of("--eval-strategy", self.eval_strategy, EVAL_STRATEGIES)
        require_one_of("--save-strategy", self.save_strategy, SAVE_STRATEGIES)
        if self.reference not in ("base", "sft"):
            raise PbtError(f"--reference must be base or sft, got {self.reference!r}")
        require_one_of("--report-to", self.report_to, REPORT_TO)
        require_one_of("--protocol", self.protocol, ("paper", "original-code"))
        if self.resume not in RESUME_MODES and not Path(self.resume).is_dir():
            raise PbtError(f"--resume takes auto, never or a checkpoint folder; {self.resume!r} is none of them")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_steps", "eval_steps",
                     "logging_steps", "eval_max_new_tokens"):
            require_at_least(f"--{name.replace('_', '-')}", getattr(self, name))
        require_at_least("--eval-limit", self.eval_limit)
        require_at_least("--save-total-limit", self.save_total_limit)
        require_at_least("--ddp-timeout", self.ddp_timeout)
        if self.max_steps < 1 and self.max_steps != -1:
            raise PbtError(f"--max-steps must be at least 1, or -1 to train by --num-train-epochs; got {self.max_steps}")
        if self.reference == "sft" and not self.model.adapter:
            raise PbtError("--reference sft uses the --adapter (the SFT run) as the frozen reference; pass --adapter "
                           "SFT_FOLDER, or use --reference base")
        if self.max_steps < 1 and self.num_train_epochs <= 0:
            raise PbtError("set --max-steps or a positive --num-train-epochs")
        if self.model.load.dynamic_int8:
            raise PbtError("--dynamic-int8 is for inference; train in float32 (or with --load-in-8bit/--load-in-4bit)")
        if self.learning_rate <= 0:
            raise PbtError(f"--learning-rate must be above 0, got {self.learning_rate}")
        if not self.beta > 0 or self.beta == float("inf"):  # NaN fails every comparison
            raise PbtError(f"--beta must be a finite number above 0 (the paper: 0.1), got {self.beta}")

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one."""
        ignore = {"resume", "overwrite", "report_to", "logging_steps", "eval_batch_size", "save_total_limit",
                  "run_name", "project", "tags", "base_model_name", "ddp_timeout"}
        from pbt_cli.fingerprints import specs_fingerprints  # a changed adapter or base is another run

        return {**{k: v for k, v in to_plain(self).items() if k not in ignore},
                "model_fingerprints": specs_fingerprints(self)}


def check_trainer_choices(cfg: TrainConfig) -> None:
    """--lr-scheduler-type and --optim name what transformers knows (one line, not its ValueError from
    deep inside the trainer); checked when a run starts, as the lists come from transformers itself."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    require_one_of("--lr-scheduler-type", cfg.lr_scheduler_type, [kind.value for kind in SchedulerType])
    require_one_of("--optim", cfg.optim, ["auto", *(name.value for name in OptimizerNames)])
