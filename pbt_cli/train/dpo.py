"""`pbt dpo`: DPO on the balanced preference pairs, continuing the SFT adapter.

Reference policy: with `--adapter SFT_ADAPTER`, TRL keeps a frozen copy of that adapter (named
"ref") on the same base weights and computes reference log-probabilities with it, so the reference
is the SFT model, as in standard DPO, without a second copy of the base in memory. Without
`--adapter`, a fresh LoRA adapter is trained and the reference is the base model (adapter off).
"""

from __future__ import annotations

from typing import Any

from pbt_cli.train.common import TrainConfig, run_training


def run_dpo(cfg: TrainConfig) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    return run_training(cfg, DPOTrainer, DPOConfig, stage_arguments={"beta": cfg.beta})
