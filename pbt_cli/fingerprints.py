"""Content fingerprints of a run's inputs: what decides whether earlier results are still current.

A stage's options say how it ran, not what it ran on: an adapter retrained in place, a chat template
edited, a base folder replaced keep their paths. So every reuse key (evaluations: evals/results.py;
training: train/output.py) also holds a fingerprint of each local input, and a changed input makes
the old results "made with other settings" (refused in one line, or rerun with --overwrite).

- A file: its SHA-256.
- A folder: the SHA-256 of its files' relative names and hashes, at any depth, leaving out what does not
  change what is computed from it (cards, manifests, logs, locks) and by-product folders (checkpoints/,
  runs/, report/, a hub model's original/).
  An adapter folder whose base is a local folder also fingerprints that base.
- A hub model (no local path) is named by its revision, not hashed: a pinned revision is a commit,
  and multi-GB snapshots are never read again. An unpinned one is recorded as such.

Hashing reads every byte once; the hash is then kept in `<pbt home>/fingerprints.json`, keyed by the
file's path, size, modification time and inode, so a later run rehashes only a file that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Files in a model or data folder that never change what is computed from it
NOT_CONTENT = ("README.md", "manifest.json", "results.json", "log_history.jsonl", "training_args.bin",
               "trainer_state.json")
NOT_CONTENT_PREFIXES = (".", "manifest-")
# Subfolders that are by-products, not the model or data: checkpoints and tracker logs of a training run,
# a report or export of a results folder, the original-format copy some hub models also ship
NOT_CONTENT_FOLDERS = ("checkpoints", "runs", "wandb", "trackio", "report", "original", "__pycache__")
CACHE_NAME = "fingerprints.json"
_CHUNK = 1 << 20


def _cache_path() -> Path:
    from pbt_cli.models.resolve import pbt_home

    return pbt_home() / CACHE_NAME


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict[str, Any]) -> None:
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(cache, sort_keys=True), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:  # a read-only home: fingerprints are still right, only not remembered
        pass


def _stat_key(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


def file_hash(path: Path, cache: dict[str, Any] | None = None) -> str:
    """SHA-256 of a file, taken from `cache` when the file's size, mtime and inode are unchanged."""
    resolved = str(Path(path).resolve())
    key = _stat_key(Path(path))
    if cache is not None and (entry := cache.get(resolved)) and entry.get("stat") == key:
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    value = digest.hexdigest()
    if cache is not None:
        cache[resolved] = {"stat": key, "sha256": value}
    return value


def _content_files(folder: Path) -> list[Path]:
    """The files that make a folder what it is, at any depth (a rendered dataset keeps its Parquet files in
    data/), leaving out bookkeeping and the folders of other runs' by-products."""
    found = []
    for path in folder.rglob("*"):
        parts = path.relative_to(folder).parts
        if any(part in NOT_CONTENT_FOLDERS or part.startswith(".") for part in parts[:-1]):
            continue
        if path.is_file() and path.name not in NOT_CONTENT and not path.name.startswith(NOT_CONTENT_PREFIXES):
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _local_base(folder: Path) -> Path | None:
    """The local base folder an adapter folder names, if it names one that exists."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    path = Path(str(base)).expanduser() if base else None
    return path if path is not None and path.is_dir() and path.resolve() != folder.resolve() else None


def path_fingerprint(path: str | Path, cache: dict[str, Any] | None = None) -> str:
    """`sha256:<16 hex>` of a file or of a folder's content files (see the module's docstring)."""
    path = Path(path).expanduser()
    if path.is_file():
        return "sha256:" + file_hash(path, cache)[:16]
    digest = hashlib.sha256()
    for file in _content_files(path):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_hash(file, cache)}\n".encode())
    if (base := _local_base(path)) is not None:
        digest.update(f"base\0{path_fingerprint(base, cache)}\n".encode())
    return "sha256:" + digest.hexdigest()[:16]


_CACHE: dict[str, Any] | None = None
_CACHE_AS_READ: dict[str, Any] = {}


def _shared_cache() -> dict[str, Any]:
    global _CACHE, _CACHE_AS_READ
    if _CACHE is None:
        _CACHE = _read_cache()
        _CACHE_AS_READ = dict(_CACHE)
    return _CACHE


def _flush_cache() -> None:
    global _CACHE_AS_READ
    if _CACHE is not None and _CACHE != _CACHE_AS_READ:
        _write_cache(_CACHE)
        _CACHE_AS_READ = dict(_CACHE)


def fingerprints(paths: Iterable[str | Path | None]) -> dict[str, str]:
    """{path as given: fingerprint} for each existing local path."""
    found = {str(p): path_fingerprint(p, _shared_cache()) for p in paths if p and Path(p).expanduser().exists()}
    _flush_cache()
    return found


def spec_fingerprint(spec: Any) -> dict[str, Any]:
    """What a ModelSpec runs, by role (model, adapter, chat_template), so a moved folder keeps its key:
    the fingerprint of each local file or folder, and the name and revision of a hub model (not hashed)."""
    local = set(spec.local_paths())
    found: dict[str, Any] = {}
    for role in ("name", "adapter", "chat_template"):
        value = getattr(spec, role, None)
        if value is None:
            continue
        if str(value) in local:
            found["model" if role == "name" else role] = path_fingerprint(value, _shared_cache())
        elif role == "name":
            found["model"] = f"{value}@{spec.revision or 'unpinned'}"
    _flush_cache()
    return found


def specs_fingerprints(config: Any) -> dict[str, Any]:
    """{field: spec_fingerprint} for every ModelSpec field of a stage's config (model, extractor, model_x, ...)."""
    import dataclasses

    from pbt_cli.models.spec import ModelSpec

    found: dict[str, Any] = {}
    for item in dataclasses.fields(config) if dataclasses.is_dataclass(config) else ():
        value = getattr(config, item.name)
        if isinstance(value, ModelSpec):
            found[item.name] = spec_fingerprint(value)
    return found


# --- where a base model's weights came from (recorded in manifests and cards) ----------------------------

_GGUF_QUANT = re.compile(r"[.-](I?Q\d[\w]*|F16|BF16|F32)\.gguf$", re.IGNORECASE)


def base_weights(spec: Any) -> dict[str, Any]:
    """How the weights a run starts from were obtained: a GGUF file dequantised (the demo model, a .gguf
    path: their quantisation is lost precision the hub's weights do not have), a local folder, or a hub
    model at a revision; and the quantisation it is loaded with (--load-in-4bit/8bit)."""
    from pbt_cli.models import registry
    from pbt_cli.models.resolve import (
        DEMO_GGUF_FILE,
        DEMO_GGUF_PACKAGE,
        demo_model_cache_folder,
        find_demo_gguf,
    )

    name = str(spec.name)
    loaded = getattr(spec.load, "weights_label", None)
    found: dict[str, Any] = {"loaded_as": loaded}
    if name.endswith(".gguf"):
        quant = _GGUF_QUANT.search(name)
        return {**found, "source": "gguf", "file": Path(name).name, "dequantized": True,
                "gguf_quantization": quant.group(1).upper() if quant else None}
    entry = registry.lookup(name) if registry.is_short_name_shape(name) else None
    converted = entry is not None and entry.name == registry.DEMO_MODEL and (
        (demo_model_cache_folder() / "config.json").is_file() or find_demo_gguf() is not None)
    if converted and entry is not None:
        quant = _GGUF_QUANT.search(DEMO_GGUF_FILE)
        return {**found, "source": "gguf", "file": DEMO_GGUF_FILE, "package": DEMO_GGUF_PACKAGE.replace("_", "-"),
                "dequantized": True, "gguf_quantization": quant.group(1).upper() if quant else None,
                "hub_id": entry.hub_id}
    if Path(name).expanduser().exists():
        return {**found, "source": "local folder", "path_name": Path(name).name}
    return {**found, "source": "hub", "hub_id": entry.hub_id if entry else name, "revision": spec.revision}


def describe_base_weights(info: dict[str, Any] | None) -> str:
    """One line for a card: 'dequantised from the Q4_1 GGUF file X (package y); trained in float32'."""
    if not info:
        return "not recorded"
    loaded = {None: "not recorded", "none": "unquantised"}.get(info.get("loaded_as"), info.get("loaded_as"))
    if info.get("source") == "gguf":
        where = f" (package `{info['package']}`)" if info.get("package") else ""
        return (f"dequantised from the {info.get('gguf_quantization') or 'quantised'} GGUF file "
                f"`{info.get('file')}`{where}, so not the hub's original weights; loaded: {loaded}")
    if info.get("source") == "hub":
        return f"`{info.get('hub_id')}` from the hub (revision {info.get('revision') or 'unpinned'}); loaded: {loaded}"
    return f"a local folder `{info.get('path_name')}`; loaded: {loaded}"
