"""Downloading the paper's released models (docs/method.md §7.7) through huggingface_hub.

Whether a checkpoint is full weights or a LoRA adapter is read from the downloaded files
(`adapter_config.json` present or not); an adapter records the base model it names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbt_cli.errors import PbtError
from pbt_cli.models import registry
from pbt_cli.models.resolve import ADAPTER_CONFIG, hub_offline, offline_error, require_hub_reachable


@dataclass
class DownloadedModel:
    name: str
    hub_id: str
    path: Path
    kind: str  # "full" or "adapter"
    base: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "hub_id": self.hub_id, "path": str(self.path), "kind": self.kind,
                "base": self.base}


def released_names(requested: list[str]) -> list[registry.RegistryEntry]:
    """The registry entries for the names asked for ("all" = every released model)."""
    if not requested:
        raise PbtError("name at least one model (or `all`); `pbt download-models --list` shows them")
    entries: list[registry.RegistryEntry] = []
    for name in requested:
        if name == "all":
            entries.extend(registry.released_models())
            continue
        entry = registry.lookup(name)
        if entry is None:
            entries.append(registry.require(name))  # raises with the known names
        else:
            entries.append(entry)
    unique = {entry.name: entry for entry in entries}
    return list(unique.values())


def inspect_folder(path: Path) -> tuple[str, str | None]:
    """("adapter", base) when the folder holds an adapter_config.json, else ("full", None)."""
    config = path / ADAPTER_CONFIG
    if config.is_file():
        try:
            base = json.loads(config.read_text()).get("base_model_name_or_path")
        except json.JSONDecodeError:
            raise PbtError(f"{config} is not valid JSON; delete the download and fetch it again") from None
        return "adapter", base
    return "full", None


def cached_kind(hub_id: str, revision: str | None = None) -> str | None:
    """What the local cache knows about a repo without any network: "adapter", "full" or None."""
    from huggingface_hub import try_to_load_from_cache

    adapter = try_to_load_from_cache(hub_id, ADAPTER_CONFIG, revision=revision)
    if isinstance(adapter, str):
        return "adapter"
    if adapter is not None or isinstance(try_to_load_from_cache(hub_id, "config.json", revision=revision), str):
        return "full"
    return None


def download(entry: registry.RegistryEntry, *, revision: str | None = None, local_dir: Path | None = None,
             token: str | None = None) -> DownloadedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if not hub_offline():
        require_hub_reachable(entry.hub_id)
    target = local_dir / entry.name if local_dir else None
    try:
        path = snapshot_download(entry.hub_id, revision=revision, local_dir=target, token=token)
    except GatedRepoError:
        raise PbtError(f"{entry.hub_id} is gated; accept its licence on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise PbtError(f"{entry.hub_id} was not found on the hub (private? set HF_TOKEN)") from None
    except LocalEntryNotFoundError:
        if hub_offline():
            raise offline_error(entry.hub_id) from None
        raise PbtError(f"cannot reach the Hugging Face hub to download {entry.hub_id}; check the network") from None
    kind, base = inspect_folder(Path(path))
    return DownloadedModel(name=entry.name, hub_id=entry.hub_id, path=Path(path), kind=kind, base=base)
