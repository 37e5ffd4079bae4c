"""`pbt sft`: supervised fine-tuning on the preferred responses, with a LoRA adapter.

The data is TRL's conversational prompt/completion form, so TRL computes a completion mask and the
loss covers the assistant response only (the prompt, with its persona and the other agent's turns,
is context, not target). tests/train checks this by counting the trained tokens.
"""

from __future__ import annotations

from typing import Any

from pbt_cli.progress import NULL_PROGRESS, ProgressSink
from pbt_cli.train.config import TrainConfig
from pbt_cli.train.run import run_training


def run_sft(cfg: TrainConfig, progress: ProgressSink = NULL_PROGRESS) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    return run_training(cfg, SFTTrainer, SFTConfig, stage_arguments={"completion_only_loss": True},
                        progress=progress)
