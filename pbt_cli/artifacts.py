"""Artifact bookkeeping shared by every stage: manifests, content hashes, atomic writes.

Every output folder carries a `manifest.json` (stage, command line, resolved config, package
versions, the project's git hash, input hashes, counts, status, and the names of what the stage
writes) so the next stage can check what it was given. Where a stage may write, and what it may
replace, is `pbt_cli/outputs.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from pbt_cli import __version__, stops
from pbt_cli.config import to_plain

MANIFEST = "manifest.json"

_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "vllm",
             "huggingface_hub", "tokenizers")


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing heavy is imported)."""
    versions: dict[str, str | None] = {"python": sys.version.split()[0], "pbt_cli": __version__}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_hash() -> str | None:
    """The commit of the project checkout pbt runs from, with '+dirty' for local changes; None if not a checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def command_line() -> str:
    return shlex.join(["pbt", *sys.argv[1:]])


def base_manifest(stage: str, config: Any, *, timestamp: bool = True) -> dict[str, Any]:
    """The common part of every manifest. Stages whose outputs must be byte-for-byte reproducible
    (filter, preprocess) leave the timestamp out."""
    manifest = {
        "stage": stage,
        "command": command_line(),
        "config": to_plain(config),
        "versions": package_versions(),
        "git": git_hash(),
    }
    if timestamp:
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return manifest


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def host_tag() -> str:
    """A short fixed tag of this host for temporary file names (host names may hold any character)."""
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temporary_name(name: str) -> str:
    """`.pbt-tmp-<pid>-<host tag>-<name>`: whose copy it is, so that a run cleaning up after dead processes
    of its own host never deletes a copy another host (a shard on another node) is writing."""
    return f".pbt-tmp-{os.getpid()}-{host_tag()}-{name}"


def write_json(path: str | Path, value: Any) -> None:
    """Write JSON atomically (a temporary file renamed over the target); a stop waits until it is done."""
    path = Path(path)
    tmp = path.with_name(temporary_name(path.name))
    with stops.critical():
        try:
            tmp.write_text(json.dumps(to_plain(value), indent=2, sort_keys=False) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temporary file behind
            raise


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    from pbt_cli.outputs import read_json_manifest

    return read_json_manifest(path)
