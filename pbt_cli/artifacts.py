"""Artifact bookkeeping shared by every stage: manifests, content hashes, atomic writes.

Every output folder carries a `manifest.json` (stage, command line, resolved config, package
versions, the project's git hash, input hashes, counts) so the next stage can check what it was
given. Folders that are produced in one go (pairs, rendered datasets) are written to a staging
folder beside the target and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from pbt_cli import __version__
from pbt_cli.config import to_plain
from pbt_cli.errors import PbtError

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


def reusable_output(out: Path, stage: str, settings: dict[str, Any], *, overwrite: bool) -> dict[str, Any] | None:
    """The manifest of a finished earlier run with the same settings (so the stage can skip), or None.

    A folder holding anything else is refused unless `overwrite`; the message names what differs.
    """
    check_output_folder(out)
    if not out.is_dir() or not any(out.iterdir()):
        return None
    previous = read_manifest(out)
    if overwrite:
        return None
    if previous is None or previous.get("stage") != stage:
        raise PbtError(f"--out {out} already holds something that `pbt {stage}` did not write; choose another "
                       "folder or pass --overwrite")
    old = previous.get("settings") or {}
    differing = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if differing:
        raise PbtError(f"--out {out} holds a `pbt {stage}` output made with other settings "
                       f"({', '.join(differing)}); choose another folder or pass --overwrite")
    if previous.get("status") != "complete":
        return None
    return previous


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_json(path: str | Path, value: Any) -> None:
    """Write JSON atomically (a temporary file renamed over the target)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(to_plain(value), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PbtError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); delete it or rerun with --overwrite") from None


def check_output_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PbtError(f"--out {out} is a file; give a folder path")


@contextlib.contextmanager
def staged_folder(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `out` atomically (as far as the filesystem allows).

    An interrupted run leaves `out` untouched and only a `.<name>.staging-<pid>` folder behind,
    which the next run removes.
    """
    check_output_folder(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PbtError(f"--out {out} already holds a different output; choose another folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)
