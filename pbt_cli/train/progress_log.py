"""Training progress as the rest of pbt reports it: optimizer steps done / total, with the latest loss
and learning rate as numbers, through a `ProgressSink` (one log line per `--log-every` when stderr is
not a terminal). It replaces transformers' PrinterCallback, which prints each log dict with its
numbers as strings and no step count; on a terminal the trainer's own tqdm bar stays."""

from __future__ import annotations

from typing import Any

from pbt_cli.console import log
from pbt_cli.progress import ProgressSink

# the trainer's log keys worth a number in the line, in this order; the rest stay in trainer_state.json
SHOWN = ("loss", "learning_rate", "grad_norm", "epoch", "eval_flipflop_accuracy")


def numeric_logs(logs: dict[str, Any]) -> dict[str, float]:
    """The shown entries of a trainer log dict as numbers (a tensor's or a numeric string's value too)."""
    numbers: dict[str, float] = {}
    for name in SHOWN:
        value = logs.get(name)
        try:
            number = float(value.item() if hasattr(value, "item") else value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            continue
        numbers[name] = number
    return numbers


def step_progress_callback(progress: ProgressSink) -> Any:
    from transformers import TrainerCallback

    class StepProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.reported = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.is_world_process_zero:
                self.reported = state.global_step  # a resumed run starts at its checkpoint's step
                if state.global_step:
                    log.info("resuming at step %d of %d (the last checkpoint)", state.global_step, state.max_steps)
                progress.start("steps", "steps", total=state.max_steps or None, completed=state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.is_world_process_zero and state.global_step > self.reported:
                progress.advance("steps", state.global_step - self.reported)
                self.reported = state.global_step

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> Any:
            if state.is_world_process_zero and logs:
                progress.advance("steps", 0, **numeric_logs(logs))

    return StepProgressCallback()


def use_step_progress(trainer: Any, progress: ProgressSink) -> None:
    """When the trainer's bars are off (stderr not a terminal), log steps through `progress` instead of
    transformers' printing of raw dicts."""
    if not trainer.args.disable_tqdm:
        return
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(step_progress_callback(progress))
