"""Flipflop accuracy during training, the best checkpoint, and clean stops of the trainer.

Every epoch end (or every `--eval-steps`) the policy continues the valid split's persuasion
dialogues and the base model, its adapter switched off, reads the answers: the same code as
`pbt eval flipflop` (evals/flipflop.py). The run keeps the checkpoint with the best accuracy
(docs/method.md §5.4). Where training cannot evaluate (FSDP), `pbt select-checkpoint` evaluates
the saved checkpoints afterwards with the same code (`evaluate_checkpoints`).
"""

from __future__ import annotations

import copy
from typing import Any

from pbt_cli import stops
from pbt_cli.train import distributed
from pbt_cli.train.config import TrainConfig

# Which flipflop labels a run selects on, by its data's mix (docs/method.md §5.4).
MIX_LABELS = {
    "balanced": ("flip_correct_to_incorrect", "flip_incorrect_to_correct"),
    "all": ("flip_correct_to_incorrect", "flip_incorrect_to_correct"),
    "resist": ("flip_correct_to_incorrect",),
    "accept": ("flip_incorrect_to_correct",),
}


def selection_rows(valid_rows: list[dict[str, Any]], mix: str, limit: int | None, seed: int) -> list[dict[str, Any]]:
    """The valid pairs a run selects its checkpoint on: up to `limit`, of the mix's own kinds (half
    each for two kinds)."""
    from pbt_cli.evals.flipflop import balanced_subset

    labels = MIX_LABELS.get(mix, MIX_LABELS["balanced"])
    rows = [row for row in valid_rows if row.get("label") in labels]
    return balanced_subset(rows, limit, seed, labels=labels)


def eval_sampling(cfg: TrainConfig) -> Any:
    """Flipflop's sampling (docs/method.md §6.2); every pair keeps its seed from epoch to epoch, so the
    accuracies of two checkpoints differ by the model, not by the draws."""
    import dataclasses

    from pbt_cli.evals.flipflop import FLIPFLOP_SAMPLING

    minimum = 0 if cfg.protocol == "original-code" else FLIPFLOP_SAMPLING.min_new_tokens  # the original set none
    return dataclasses.replace(FLIPFLOP_SAMPLING, max_new_tokens=cfg.eval_max_new_tokens,
                               min_new_tokens=min(minimum, cfg.eval_max_new_tokens))


def flipflop_accuracy(rows: list[dict[str, Any]], policy: Any, extractor: Any, cfg: TrainConfig,
                      prefix: str = "eval") -> dict[str, float]:
    from pbt_cli.evals.flipflop import evaluate_flipflop

    metrics, _ = evaluate_flipflop(rows, policy, extractor, eval_sampling(cfg), seed=cfg.seed, protocol=cfg.protocol)
    return {f"{prefix}_flipflop_{name}": entry["value"] for name, entry in metrics.items()
            if isinstance(entry, dict) and entry.get("value") is not None}


def make_callbacks(cfg: TrainConfig) -> list[Any]:
    """A callback that asks for an evaluation (and a checkpoint with it) at each epoch end or every
    `eval_steps`, and one that saves and stops at the next step end when a stop was asked for."""
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

    class StopCallback(TrainerCallback):
        """SIGTERM or Ctrl-C during training: finish the step, save a checkpoint, stop. Under a launcher
        the ranks agree first (a signal may reach them a step apart, or only one of them), so every
        rank stops after the same step and their collectives stay matched."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if distributed.any_rank(stops.requested() is not None):
                control.should_save = True
                control.should_training_stop = True
            return control

    class FsdpCheckpointCallback(TrainerCallback):
        """FSDP saves a checkpoint as one shard per rank (pytorch_model_fsdp_0/): rank 0 adds the adapter
        files read back from them, so `pbt select-checkpoint` (or plain PEFT) can load every checkpoint."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            from pathlib import Path

            from pbt_cli.train.output import adapter_from_fsdp_checkpoint, checkpoints_folder

            if distributed.is_main_process():
                checkpoint = checkpoints_folder(cfg.out) / f"checkpoint-{state.global_step}"
                adapter_from_fsdp_checkpoint(Path(checkpoint), peft_config=_peft_config(kwargs.get("model")))
            return control

    from pbt_cli.models.quant import fsdp_launch

    callbacks: list[Any] = [StopCallback()]
    if fsdp_launch():
        callbacks.append(FsdpCheckpointCallback())
    if cfg.eval_strategy != "no":
        callbacks.append(FlipflopCallback())
    return callbacks


def _peft_config(model: Any) -> Any:
    """The trained adapter's LoraConfig, through whatever wraps the model (DDP, FSDP)."""
    while model is not None and not hasattr(model, "peft_config"):
        model = getattr(model, "module", None)
    return model.peft_config["default"] if model is not None else None


def extractor_on_device(spec: Any, device: Any, num_processes: int) -> Any:
    """Under a launcher the extractor goes onto the evaluating rank's own device: `--device-map auto`
    would spread it over every GPU, the ones the other ranks train on included. ("cuda" is the rank's
    current GPU, which the process group set.)"""
    import dataclasses

    if num_processes <= 1 or spec.load.device_map != "auto":
        return spec
    target = "cuda" if getattr(device, "type", str(device)).startswith("cuda") else "cpu"
    return dataclasses.replace(spec, load=dataclasses.replace(spec.load, device_map=target))


def with_flipflop(trainer_class: Any) -> Any:
    """A subclass of a TRL trainer whose `evaluate` also reports flipflop accuracy on the selection rows."""

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
            from pbt_cli.models.backends.hf import AdapterOffGenerator, TransformersGenerator

            cfg = self.pbt_config
            model = self.accelerator.unwrap_model(self.model)
            tokenizer = copy.deepcopy(self.processing_class)
            tokenizer.padding_side = "left"
            # a fresh policy generator each time: its cached prompt prefixes depend on the adapter weights
            policy = TransformersGenerator(cfg.model, model=model, tokenizer=tokenizer,
                                           batch_size=cfg.eval_batch_size)
            if self.pbt_extractor is None and cfg.extractor is not None:
                spec = extractor_on_device(cfg.extractor, self.args.device, self.accelerator.num_processes)
                self.pbt_extractor = TransformersGenerator(spec, batch_size=cfg.eval_batch_size)
            elif self.pbt_extractor is None:  # no second model in memory: the base, adapter switched off
                self.pbt_extractor = AdapterOffGenerator(
                    TransformersGenerator(cfg.model, model=model, tokenizer=tokenizer, batch_size=cfg.eval_batch_size))
            was_training = model.training
            model.eval()
            try:
                return flipflop_accuracy(self.pbt_rows, policy, self.pbt_extractor, cfg, prefix)
            finally:
                model.train(was_training)

    FlipflopTrainer.__name__ = f"Flipflop{trainer_class.__name__}"
    return FlipflopTrainer


def evaluate_checkpoints(cfg: TrainConfig, checkpoints: list[Any], rows: list[dict[str, Any]],
                         progress: Any = None) -> list[dict[str, Any]]:
    """Flipflop accuracy of each saved checkpoint (one base model in memory, adapters swapped in turn)."""
    import dataclasses

    from peft import PeftModel

    from pbt_cli.models.backends.hf import AdapterOffGenerator, TransformersGenerator
    from pbt_cli.models.loading import load_model, load_tokenizer
    from pbt_cli.models.resolve import resolve

    resolved = resolve(dataclasses.replace(cfg.model, adapter=None))
    tokenizer = load_tokenizer(resolved, padding_side="left")
    base = load_model(resolved)
    model = None
    results = []
    extractor = TransformersGenerator(cfg.extractor, batch_size=cfg.eval_batch_size) if cfg.extractor else None
    for number, checkpoint in enumerate(checkpoints):
        name = f"checkpoint{number}"
        if model is None:
            model = PeftModel.from_pretrained(base, str(checkpoint), adapter_name=name)
        else:
            model.load_adapter(str(checkpoint), adapter_name=name)
            model.set_adapter(name)
        model.eval()
        policy = TransformersGenerator(cfg.model, model=model, tokenizer=tokenizer, batch_size=cfg.eval_batch_size)
        reader = extractor or AdapterOffGenerator.sharing(policy)
        metrics = flipflop_accuracy(rows, policy, reader, cfg)
        results.append({"checkpoint": str(checkpoint), **metrics})
        if progress is not None:
            progress.advance("checkpoints")
        if number:
            model.delete_adapter(f"checkpoint{number - 1}")
        stops.check()
    return results
