"""`pbt export`: merge a LoRA adapter into a 16-bit copy of its base, for vLLM or sharing (docs/method.md §5.6).

The base is always loaded unquantized in the requested 16-bit dtype (never in 4 or 8 bit: merging
into quantized weights would round the adapter away), on the CPU unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbt_cli.artifacts import MANIFEST, base_manifest
from pbt_cli.errors import PbtError
from pbt_cli.models.spec import LoadOptions, ModelSpec
from pbt_cli.outputs import TOKENIZER_FILES, claim_output, require_stage

EXPORT_OUTPUTS = ("*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
                  *TOKENIZER_FILES, "README.md", MANIFEST)


@dataclass(frozen=True)
class ExportConfig:
    adapter: str
    out: Path
    model: str | None = None  # the base; default: what adapter_config.json names
    dtype: str = "bfloat16"
    device_map: str = "cpu"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise PbtError(f"--dtype must be bfloat16, float16 or float32 for a merged export, got {self.dtype!r}")


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    from pbt_cli.cards import write_model_card
    from pbt_cli.models.loading import load_model, load_tokenizer
    from pbt_cli.models.resolve import resolve

    load = LoadOptions(dtype=cfg.dtype, device_map=cfg.device_map)
    spec = ModelSpec.parse(cfg.model or cfg.adapter, load=load, adapter=cfg.adapter if cfg.model else None)
    adapter_folder = Path(cfg.adapter).expanduser()
    if (adapter_folder / MANIFEST).is_file():  # made by pbt: it must be a finished training run
        trained = require_stage(adapter_folder, ("sft", "dpo"), "--adapter")
        if trained.get("status") != "complete":
            raise PbtError(f"--adapter {cfg.adapter} has not finished training (status {trained.get('status')}); "
                           "finish it by rerunning its command first")
    inputs = [cfg.adapter, *spec.local_paths()]
    with claim_output(cfg.out, "export", outputs=EXPORT_OUTPUTS, inputs=inputs, overwrite=cfg.overwrite) as folder:
        if folder.previous is not None and not cfg.overwrite:
            raise PbtError(f"--out {cfg.out} already holds an export; pass --overwrite to replace it, or choose "
                           "another folder")
        resolved = resolve(spec)
        if not resolved.adapter:
            raise PbtError(f"{cfg.adapter} is not a PEFT adapter (no adapter_config.json); nothing to merge")
        model = load_model(resolved)
        tokenizer = load_tokenizer(resolved, padding_side="left")
        merged = model.merge_and_unload()
        manifest = base_manifest("export", cfg)
        manifest.update(status="complete", base=resolved.base, base_model=resolved.adapter_base_name,
                        adapter=resolved.adapter, dtype=cfg.dtype)
        with folder.staging() as staging:
            merged.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            config = json.loads((staging / "config.json").read_text())
            config.pop("quantization_config", None)
            (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            write_model_card(staging, manifest)
        folder.install(staging, manifest)
    return dataclasses.asdict(cfg) | {"base": resolved.base}
