"""`pbt dpo`: DPO on the balanced preference pairs, continuing the SFT adapter.

Reference policy (`--reference`):
- `base` (default, docs/method.md §5.3, and the reference code): the policy with its adapter switched off, i.e.
  the base model, with no second copy of anything in memory;
- `sft`: a frozen copy of the SFT adapter on the same base weights (TRL's own choice when it is
  handed a model with a trained adapter), i.e. the SFT model, as in textbook DPO.
Without `--adapter` a fresh LoRA adapter is trained and both choices mean the base model.
"""

from __future__ import annotations

from typing import Any

from pbt_cli.progress import NULL_PROGRESS, ProgressSink
from pbt_cli.train.config import TrainConfig
from pbt_cli.train.run import run_training


def run_dpo(cfg: TrainConfig, progress: ProgressSink = NULL_PROGRESS) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    class PbtDPOTrainer(DPOTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            model = self.accelerator.unwrap_model(self.model)
            if cfg.reference == "base" and "ref" in getattr(model, "peft_config", {}):
                # TRL computes reference log-probs with the "ref" adapter when there is one, and with
                # every adapter off otherwise: removing its frozen copy makes the base the reference
                model.delete_adapter("ref")
                model.set_adapter("default")

    return run_training(cfg, PbtDPOTrainer, DPOConfig, stage_arguments={"beta": cfg.beta},
                        progress=progress)
