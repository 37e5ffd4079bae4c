"""A training run's folder (`--out` of `pbt sft` / `pbt dpo`): claiming it, resuming, finishing it.

  adapter_config.json, adapter_model.safetensors   the final adapter (the best checkpoint by
                                                     flipflop accuracy when evaluation ran)
  tokenizer files + chat_template.jinja             what the adapter was trained with
  README.md                                          the model card (cards.py)
  checkpoints/checkpoint-N/                          Trainer checkpoints (resume from the last); under FSDP
                                                     the model as shards plus the adapter read back from them
  log_history.jsonl                                  every logged step and evaluation
  runs/                                              tensorboard logs (--report-to tensorboard)
  manifest.json                                      config, versions, data hash, metrics, best checkpoint
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from pbt_cli import stops
from pbt_cli.artifacts import MANIFEST, sha256_file
from pbt_cli.console import log
from pbt_cli.data.jsonl import write_jsonl
from pbt_cli.errors import PbtError
from pbt_cli.models.spec import ModelSpec
from pbt_cli.outputs import TOKENIZER_FILES, TRACKING, OutputFolder, claim_output
from pbt_cli.train.config import BEST_METRIC, TrainConfig

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
TRAIN_OUTPUTS = (*ADAPTER_FILES, *TOKENIZER_FILES, "README.md", "checkpoints", "log_history.jsonl", MANIFEST,
                 *TRACKING)
ALREADY_DONE = "already-done"


def checkpoints_folder(out: Path) -> Path:
    return out / "checkpoints"


def tracking_folder(out: Path) -> Path:
    return out / "runs"


def checkpoints(out: Path) -> list[Path]:
    """The Trainer's checkpoints in step order."""
    found = [p for p in checkpoints_folder(out).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def last_checkpoint(out: Path) -> Path | None:
    found = checkpoints(out)
    return found[-1] if found else None


def data_hash(cfg: TrainConfig) -> str | None:
    path = cfg.data / MANIFEST
    return sha256_file(path)[:16] if path.is_file() else None


def claim(cfg: TrainConfig) -> tuple[OutputFolder, str | bool]:
    """Claim `--out` for the run; returns the folder and what to pass as `resume_from_checkpoint`, or
    ALREADY_DONE when a finished run with the same settings is there (a recipe run twice)."""
    inputs = [cfg.data, *cfg.model.local_paths(), *(cfg.extractor.local_paths() if cfg.extractor else [])]
    folder = claim_output(cfg.out, cfg.stage, outputs=TRAIN_OUTPUTS, inputs=inputs, overwrite=cfg.overwrite)
    with folder.releasing_on_error():
        return folder, _resume_point(cfg, folder)


def _resume_point(cfg: TrainConfig, folder: OutputFolder) -> str | bool:
    out = cfg.out
    manifest = folder.previous
    if cfg.overwrite:
        folder.remove_owned()
        return False
    if Path(cfg.resume).is_dir():
        return str(cfg.resume)
    if manifest is None:
        return False
    # where the folder and the data lie is no setting: a run moved or copied elsewhere (with its data
    # moved too) resumes; the data's identity is its manifest's hash
    differing = [k for k in folder.differing_settings(cfg.settings()) if k not in ("out", "data")]
    if manifest.get("data_manifest") != data_hash(cfg):
        differing.append("data (another --data, or re-rendered at the same path)")
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
    check_checkpoint(checkpoint)
    return str(checkpoint)


def check_checkpoint(checkpoint: Path) -> None:
    """A checkpoint to resume from must have a readable trainer_state.json (the trainer's own error is a
    traceback from deep inside it)."""
    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        why = "missing" if isinstance(exc, FileNotFoundError) else "not valid JSON"
        raise PbtError(f"cannot resume from {checkpoint}: its trainer_state.json is {why}; move that checkpoint "
                       "folder away to resume from the one before, or pass --overwrite to train again") from None


def adapter_base_name(spec: ModelSpec, recorded: str | None = None) -> tuple[str, str | None]:
    """What the saved adapter names as its base, so that PEFT, vLLM and the Hub can find it
    (docs/method.md §5.6): a short name as its hub id, a hub id as itself, a local folder as its
    absolute path (with a warning: that adapter loads only on this machine until the base is named
    with --base-model-name). Returns (name, revision). When --model is itself an adapter folder,
    its own base is the base."""
    from pbt_cli.models import registry
    from pbt_cli.models.resolve import ADAPTER_CONFIG, read_adapter_config

    if recorded:
        return recorded, spec.revision
    path = Path(spec.name).expanduser()
    if (path / ADAPTER_CONFIG).is_file():
        config = read_adapter_config(path)
        return config["base_model_name_or_path"], config.get("revision")
    if path.exists():
        log.warning("the adapter names its base by the local path %s, so it loads only where that folder is; "
                    "pass --base-model-name OWNER/NAME to record the base's hub id instead", path.resolve())
        return str(path.resolve()), None
    entry = registry.lookup(spec.name)
    if entry is not None:
        return entry.hub_id, spec.revision
    return spec.name, spec.revision


def final_state_dict(trainer: Any) -> dict[str, Any] | None:
    """Under FSDP, the full state dict gathered from every rank's shards onto rank 0's CPU (every rank
    must call this: it is a collective); None otherwise (the model in memory is whole)."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model)
    return None


def finish(cfg: TrainConfig, folder: OutputFolder, trainer: Any, tokenizer: Any,
           manifest: dict[str, Any], *, state_dict: dict[str, Any] | None = None) -> dict[str, Any]:
    """Put the best (or last) adapter, the tokenizer, the log, the card and a complete manifest into --out
    (rank 0 only; `state_dict` is the gathered one under FSDP, see `final_state_dict`)."""
    from pbt_cli.cards import write_model_card

    state = trainer.state
    best = state.best_model_checkpoint
    out = cfg.out
    with stops.critical():
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(str(out), selected_adapters=["default"], state_dict=state_dict)
        if best:
            install_adapter(Path(best), out)
        base, revision = adapter_base_name(cfg.model, cfg.base_model_name)
        record_base(out, base, revision)
        tokenizer.save_pretrained(str(out))
        write_jsonl(out / "log_history.jsonl", state.log_history)
    evaluations = [e for e in state.log_history if f"eval_{BEST_METRIC}" in e]
    best_relative = os.path.relpath(best, out) if best else None  # e.g. checkpoints/checkpoint-40
    manifest.update(status="complete", best_checkpoint=best_relative, best_metric=state.best_metric,
                    global_step=state.global_step, evaluations=evaluations, base_model=base, base_revision=revision,
                    train_loss=next((e.get("train_loss") for e in reversed(state.log_history) if "train_loss" in e),
                                    None))
    write_model_card(out, manifest)
    return folder.write_manifest(manifest)


def install_adapter(checkpoint: Path, out: Path) -> None:
    """Copy a checkpoint's adapter weights over the run's adapter (both written by this run)."""
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, out / name)


def record_base(out: Path, base: str, revision: str | None) -> None:
    adapter_config = out / "adapter_config.json"
    config = json.loads(adapter_config.read_text())
    config["base_model_name_or_path"] = base
    config["revision"] = revision
    adapter_config.write_text(json.dumps(config, indent=2) + "\n")


# --- FSDP checkpoints -> adapters --------------------------------------------------------------------

FSDP_MODEL_FOLDER = "pytorch_model_fsdp_0"  # accelerate's sharded model state in a checkpoint (torch DCP format)
_WRAPPER_NAMES = {"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"}


def adapter_key(key: str, adapter_name: str = "default") -> str | None:
    """A key of the sharded model state -> the key PEFT saves for that adapter weight, or None for
    anything else (the frozen base, another adapter). accelerate nests the state under "model" and saves
    either the whole model (`model.base_model.model...q_proj.lora_A.default.weight`) or, as the Trainer
    asks, the adapter alone, already without its name (`model.base_model.model...q_proj.lora_A.weight`);
    both give `base_model.model...q_proj.lora_A.weight`."""
    parts = [part for part in key.split(".") if part not in _WRAPPER_NAMES]
    if parts[:2] == ["model", "base_model"]:
        parts = parts[1:]
    for position in range(len(parts) - 1):
        if parts[position].startswith("lora_"):
            following = parts[position + 1]
            if following == adapter_name:
                return ".".join(parts[:position + 1] + parts[position + 2:])
            return ".".join(parts) if following in ("weight", "bias") else None
    return None


def adapter_from_fsdp_checkpoint(checkpoint: Path, *, peft_config: Any = None,
                                 adapter_config: Path | None = None) -> bool:
    """Give an FSDP checkpoint (only `pytorch_model_fsdp_0/`) the adapter files PEFT loads, read back from
    its shards: only the adapter's tensors are read, never the base's. The adapter's config comes from
    `peft_config` (training) or the file `adapter_config` (a finished run's own). Returns whether it wrote."""
    sharded = checkpoint / FSDP_MODEL_FOLDER
    if (checkpoint / "adapter_model.safetensors").is_file() or not sharded.is_dir():
        return False
    import torch
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(sharded))
    wanted = {key: torch.empty(item.size, dtype=item.properties.dtype)
              for key, item in reader.read_metadata().state_dict_metadata.items()
              if isinstance(item, TensorStorageMetadata) and adapter_key(key) is not None}
    if not wanted:
        raise PbtError(f"{sharded} holds no LoRA weights of the adapter 'default'; it is not a checkpoint of a "
                       "pbt training run")
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(wanted, storage_reader=reader, no_dist=True)  # this process alone, even inside a launch
    tensors = {adapter_key(key): tensor.contiguous() for key, tensor in wanted.items()}
    with stops.critical():
        if peft_config is not None:
            peft_config.save_pretrained(str(checkpoint))
        elif adapter_config is not None and adapter_config.is_file():
            shutil.copy2(adapter_config, checkpoint / "adapter_config.json")
        save_file(tensors, str(checkpoint / "adapter_model.safetensors"), metadata={"format": "pt"})
    log.info("%s: adapter written from the FSDP shards (%d tensors)", checkpoint, len(tensors))
    return True
