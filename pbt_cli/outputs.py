"""Output folders: where a stage may write, what `--overwrite` may delete, and one writer at a time.

The rules (README, "Safety"):
1. A stage writes only into a folder that is new, empty, or holds nothing but what earlier runs of
   the *same* stage wrote there. What a run writes is recorded in its manifest as `outputs`, a list
   of name patterns (`trees.jsonl`, `checkpoints`, `*.safetensors`, ...); manifests written before
   this rule existed are read with their stage's patterns (`LEGACY_OUTPUTS`).
2. A folder holding anything else (a file no manifest claims, or another stage's manifest) is
   refused, with or without `--overwrite`; inside the folders a stage owns, every file must be one
   that pbt writes there (`FOLDER_CONTENTS`).
3. `--overwrite` deletes only entries the earlier manifest of the same unit claims.
4. The folder may not be, lie inside, or contain one of the stage's inputs.
5. One writer per unit (a folder, or one shard's files): a lock file `.pbt-lock*` holds the
   writer's pid, host, start time and command. A live lock refuses the run in one line; a lock
   whose process is gone (same host), or whose heartbeat stopped long ago (another host), is taken
   over with a note.
6. The folder is created, and the lock written, before any model loads, so an unwritable `--out`
   fails at once. A run that stops or fails marks its manifest `interrupted` or `failed`.

Entries whose names start with `.pbt-` (locks, staging folders) are pbt's own bookkeeping; a
staging folder is deleted only when it holds the mark of the pbt run that made it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli import stops
from pbt_cli.console import log
from pbt_cli.errors import PbtError

MANIFEST = "manifest.json"
MANIFEST_PATTERNS = (MANIFEST, "manifest-*-of-*.json")
INTERNAL_PREFIX = ".pbt-"
# files an operating system or a notebook drops into folders; neither pbt's nor a user's work
IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", ".ipynb_checkpoints"})

HEARTBEAT_SECONDS = 60.0
STALE_AFTER_SECONDS = 15 * 60.0  # a lock from another host with no heartbeat for this long is abandoned

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt")
TRACKING = ("runs", "wandb", "trackio")

# What each stage wrote before manifests recorded it (used for manifests without `outputs`).
LEGACY_OUTPUTS: dict[str, tuple[str, ...]] = {
    "generate": ("trees.jsonl", "trees-*-of-*.jsonl", *MANIFEST_PATTERNS),
    "filter": ("train.jsonl", "valid.jsonl", "test.jsonl", MANIFEST),
    "preprocess": ("train", "valid", "test", "dataset_dict.json", MANIFEST),
    "sft": ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md", *TOKENIZER_FILES,
            "checkpoints", "log_history.jsonl", MANIFEST, *TRACKING),
    "export": ("*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
               *TOKENIZER_FILES, MANIFEST),
    "eval": ("results.json", "samples.jsonl"),
}
LEGACY_OUTPUTS["dpo"] = LEGACY_OUTPUTS["sft"]


# What pbt writes inside the folders it owns, as paths relative to the output folder (`**`: any depth).
# A folder is pbt's to delete only when every file in it matches: a user's file saved inside
# `data/` or `checkpoints/` makes the whole output folder foreign. The trainer owns its checkpoint
# folders whole (it deletes old ones itself); wandb and trackio own theirs.
FOLDER_CONTENTS: dict[str, tuple[str, ...]] = {
    "data": ("data/train-*-of-*.parquet", "data/validation-*-of-*.parquet", "data/test-*-of-*.parquet"),
    **{split: (f"{split}/data-*-of-*.arrow", f"{split}/dataset_info.json", f"{split}/state.json")
       for split in ("train", "valid", "test")},
    # the trainer's output_dir: its checkpoints, and the model card and arguments it writes beside them
    "checkpoints": ("checkpoints/checkpoint-*/**", "checkpoints/tmp-checkpoint-*/**", "checkpoints/README.md",
                    "checkpoints/training_args.bin",
                    "checkpoints/runs/**/events.out.tfevents.*"),
    "runs": ("runs/**/events.out.tfevents.*", "runs/**/projector_config.pbtxt"),
    "wandb": ("wandb/**",),
    "trackio": ("trackio/**",),
}


def _path_matches(parts: Sequence[str], pattern: Sequence[str]) -> bool:
    """fnmatch on path components, where `**` stands for any number of them (`*` stays in one)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_path_matches(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _path_matches(parts[1:], pattern[1:])


def foreign_inside(folder: Path, root: Path) -> list[str]:
    """Files inside an owned folder that pbt does not write there (relative to `root`)."""
    patterns = [pattern.split("/") for pattern in FOLDER_CONTENTS.get(folder.name, ())]
    foreign = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(d for d in subfolders if d not in IGNORED_NAMES)
        for name in sorted(files) + [d for d in subfolders if (Path(directory) / d).is_symlink()]:
            relative = (Path(directory) / name).relative_to(root)
            if name in IGNORED_NAMES:
                continue
            if not any(_path_matches(relative.parts, pattern) for pattern in patterns):
                foreign.append(relative.as_posix())
    return foreign


def legacy_outputs(stage: str) -> tuple[str, ...]:
    return LEGACY_OUTPUTS.get(stage.split()[0], ())


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


# --- inputs ------------------------------------------------------------------------------------


def check_not_input(out: Path, inputs: Iterable[str | Path | None], flag: str = "--out") -> None:
    """Refuse an output folder that is, lies inside, or contains one of the stage's inputs."""
    target = Path(out).expanduser().resolve()
    for item in inputs:
        if item is None or str(item) == "":
            continue
        path = Path(item).expanduser()
        if not path.exists():
            continue  # a hub id or short name, not a local input
        source = path.resolve()
        if target == source:
            relation = "is"
        elif source in target.parents:
            relation = "lies inside"
        elif target in source.parents:
            relation = "contains"
        else:
            continue
        raise PbtError(f"{flag} {out} {relation} the stage's own input {item}; writing there could destroy it; "
                       f"choose another {flag}")


def _same_or_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_log_file(out: Path, inputs: Iterable[str | Path | None], outputs: Iterable[str]) -> None:
    """Refuse a --log-file that is, or lies inside, one of the stage's inputs, or is a file it writes."""
    from pbt_cli import console

    if console.log_file_path is None:
        return
    log_file = console.log_file_path.resolve()
    for item in inputs:
        if item is None or str(item) == "" or not Path(item).expanduser().exists():
            continue
        if _same_or_inside(log_file, Path(item).expanduser().resolve()):
            raise PbtError(f"--log-file {console.log_file_path} is or lies inside the stage's own input {item}; "
                           "the log would change it; choose another --log-file")
    target = Path(out).expanduser().resolve()
    if log_file.parent != target and _same_or_inside(log_file, target) or (
            log_file.parent == target and (matches(log_file.name, outputs) or log_file.name.startswith(INTERNAL_PREFIX))):
        raise PbtError(f"--log-file {console.log_file_path} is a file that this stage writes in {out}; choose "
                       "another --log-file (a new file directly in the folder is fine)")


def _is_log_file(path: Path) -> bool:
    from pbt_cli import console

    return console.log_file_path is not None and path.resolve() == console.log_file_path.resolve()


# --- the lock ----------------------------------------------------------------------------------


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class LockHeld(PbtError):
    """A live writer holds the lock (a caller that can wait for it catches this one)."""


class FolderLock:
    """A lock file with the writer's identity; a daemon thread refreshes its time stamp (the heartbeat)."""

    def __init__(self, path: Path, out: Path) -> None:
        self.path = path
        self.out = out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    def acquire(self) -> None:
        from pbt_cli.artifacts import command_line

        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": command_line()}
        for _ in range(50):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except PermissionError:
                raise PbtError(f"--out {self.out} is not writable (permission denied); choose another folder") from None
            except OSError as exc:
                raise PbtError(f"--out {self.out} cannot be written ({exc.strerror}); choose another folder") from None
            with os.fdopen(descriptor, "w") as handle:
                json.dump(record, handle)
            self.held = True
            self._thread = threading.Thread(target=self._heartbeat, name="pbt-lock-heartbeat", daemon=True)
            self._thread.start()
            return
        raise PbtError(f"could not take the lock {self.path}; another pbt keeps taking it")

    def _read(self) -> dict[str, Any] | None:
        """The holder's record; None when the file is missing, unreadable or not a lock pbt writes."""
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return holder if isinstance(holder, dict) else None

    def _take_over_if_stale(self) -> None:
        """Delete the lock when its writer is gone; a live one refuses the run. Only one of several
        runs that find the same stale lock takes it over: the deletion happens under a second lock
        file (`<lock>.takeover`, created exclusively), and only if the lock still holds the bytes that
        were judged stale, so a fresh lock another run wrote meanwhile is never deleted."""
        try:
            seen = self.path.read_bytes()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile: try again
        holder = self._read()
        pid = holder.get("pid") if holder is not None else None
        if holder is not None and holder.get("host") not in (None, socket.gethostname()):
            stale = age > STALE_AFTER_SECONDS
            why = f"its heartbeat stopped {age / 60:.0f} minutes ago"
        elif isinstance(pid, int) and not isinstance(pid, bool):
            stale = pid == os.getpid() or not _process_alive(pid)
            why = f"process {pid} is gone"
        else:  # unreadable, or no pid: not a lock a live pbt holds (it writes one at once, in one go)
            if age < 5:  # being written right now
                time.sleep(0.2)
                return
            stale, why = True, "it names no process"
        if not stale:
            raise LockHeld(
                f"--out {self.out} is being written by another pbt (pid {holder.get('pid')} on {holder.get('host')}, "
                f"since {holder.get('started')}: {holder.get('command')}); wait for it to finish or choose another "
                f"--out (if that run is dead, delete {self.path})")
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            descriptor = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > 30:  # a taker that died half-way
                    guard.unlink()
            time.sleep(0.1)
            return
        try:
            try:
                unchanged = self.path.read_bytes() == seen
            except FileNotFoundError:
                return
            if unchanged:
                log.warning("taking over the lock %s of an earlier run (%s)", self.path, why)
                self.path.unlink()  # pbt's own lock file, still the stale one: an earlier run of this stage wrote it
        finally:
            os.close(descriptor)
            guard.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        holder = self._read()
        if holder is not None and holder.get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # our own lock
        self.held = False


# --- the folder --------------------------------------------------------------------------------


def read_json_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PbtError(f"{path} is damaged (not valid JSON: {exc}); if pbt wrote this folder, delete the folder "
                       "or that file and run again") from None
    if not isinstance(data, dict):
        raise PbtError(f"{path} is not a pbt manifest (a JSON object); choose another folder")
    return data


@dataclass
class OutputFolder:
    """One stage's claim on an output folder (or on one unit of it, such as a shard's files)."""

    path: Path
    stage: str
    outputs: tuple[str, ...]
    manifest_name: str
    previous: dict[str, Any] | None  # the earlier manifest of this unit, from the same stage
    lock: FolderLock
    created: Path | None = None  # the topmost folder this claim created (path itself or an ancestor)
    written_manifest: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def manifest_path(self) -> Path:
        return self.path / self.manifest_name

    # -- manifests --------------------------------------------------------------------------------

    def write_manifest(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write this run's manifest (atomically), recording what the stage writes here."""
        from pbt_cli.artifacts import write_json

        manifest = dict(manifest)
        manifest["outputs"] = list(self.outputs)
        write_json(self.manifest_path, manifest)
        self.written_manifest = manifest
        return manifest

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        base = self.written_manifest or self.previous or {}
        return self.write_manifest({**base, **fields})

    def differing_settings(self, settings: dict[str, Any]) -> list[str]:
        old = (self.previous or {}).get("settings") or {}
        return sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))

    def finished_run(self, settings: dict[str, Any], what: str, where: Path | None = None) -> dict[str, Any] | None:
        """The earlier run's manifest when it finished with these settings (reuse it); None when there is
        none or it stopped half-way (make it again). Other settings are refused: the caller deletes the
        earlier run only with --overwrite (`remove_owned`, `install`)."""
        if self.previous is None:
            return None
        differing = self.differing_settings(settings)
        if differing:
            raise PbtError(f"{where or f'--out {self.path}'} holds {what} made with other settings "
                           f"({', '.join(differing)}); choose another folder or pass --overwrite to replace them")
        return self.previous if self.previous.get("status", "complete") == "complete" else None

    # -- deleting and replacing only what is ours ---------------------------------------------------

    def owned_entries(self) -> list[Path]:
        """Entries the earlier manifest of this unit claims (what `--overwrite` may delete)."""
        if self.previous is None or not self.path.is_dir():
            return []
        patterns = self.previous.get("outputs") or legacy_outputs(self.stage)
        return sorted(p for p in self.path.iterdir() if matches(p.name, patterns) and not p.name.startswith(
            INTERNAL_PREFIX))

    def remove_owned(self, keep: Sequence[str] = ()) -> None:
        """Delete what the earlier run of this unit wrote (the manifest last), except names in `keep`."""
        entries = [p for p in self.owned_entries() if p.name not in keep]
        entries.sort(key=lambda p: p.name == self.manifest_name)
        for entry in entries:
            _remove(entry)
        if self.manifest_name not in keep:
            self.previous = None

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A folder inside `path` to write a complete output into before `install` moves it in place."""
        staging = self.path / f"{INTERNAL_PREFIX}staging-{os.getpid()}"
        if _is_pbt_staging(staging):
            _remove(staging)
        staging.mkdir()
        (staging / STAGING_MARK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        try:
            yield staging
        except BaseException:
            _remove(staging)
            raise

    def install(self, staging: Path, manifest: dict[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
        """Replace this unit's earlier output with the staged one (entries named in `keep` stay); the
        manifest goes last, so a run stopped half-way leaves a manifest that says `running`, never a
        mix that claims `complete`."""
        with stops.critical():
            if self.previous is not None and self.manifest_path.is_file():
                self.update_manifest(status="running")
            (staging / STAGING_MARK).unlink(missing_ok=True)
            new_names = {p.name for p in staging.iterdir()}
            owned = self.owned_entries()
            # claim_output refused foreign entries; one that appeared since (another program writing
            # here meanwhile) is neither replaced nor deleted: the run fails and its staging goes
            owned_names = {entry.name for entry in owned}
            foreign = sorted(name for name in new_names if name not in owned_names
                             and ((self.path / name).exists() or (self.path / name).is_symlink()))
            if foreign:
                raise PbtError(f"--out {self.path} gained {', '.join(foreign)} while this run wrote it, which pbt "
                               "did not write; move it away and run the command again")
            for entry in owned:
                if entry.name not in new_names and entry.name != self.manifest_name and entry.name not in keep:
                    _remove(entry)
            for item in sorted(staging.iterdir()):
                target = self.path / item.name
                if item.name in owned_names:
                    _remove(target)  # written by the earlier run of this stage (its manifest says so)
                os.replace(item, target)
            _remove(staging)
            return self.write_manifest(manifest)

    # -- life cycle -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def releasing_on_error(self) -> Iterator[None]:
        """For checks a stage makes right after claiming: a refusal must not leave the lock behind."""
        try:
            yield
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, kind: Any, exc: Any, traceback: Any) -> None:
        try:
            if exc is not None and self.written_manifest is not None \
                    and self.written_manifest.get("status") not in ("complete",):
                stopped = isinstance(exc, (stops.StopRequested, KeyboardInterrupt))
                status = "interrupted" if stopped else "failed"
                extra = {} if stopped else {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
                try:
                    self.update_manifest(status=status, **extra)
                except OSError:  # a full disk has no room for a new copy: rewrite it where it is
                    with contextlib.suppress(OSError), open(self.manifest_path, "r+", encoding="utf-8") as handle:
                        handle.write(json.dumps({**self.written_manifest, "status": status, **extra}, indent=2) + "\n")
                        handle.truncate()
            for leftover in self.path.glob(f"{INTERNAL_PREFIX}staging-{os.getpid()}"):
                if _is_pbt_staging(leftover):
                    _remove(leftover)
        finally:
            self.lock.release()
        if exc is not None and self.created is not None:
            # folders this run created and left empty go again: as if it had never run
            folder = self.path
            while folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                if folder == self.created:
                    break
                folder = folder.parent


STAGING_MARK = ".pbt-staging-of"  # inside each staging folder: the pid and host of the run that made it


def _is_pbt_staging(folder: Path) -> bool:
    """Whether a `.pbt-staging-<pid>` folder is one a pbt run on this host made (never a user's own)."""
    pid = folder.name.rsplit("-", 1)[-1]
    if not pid.isdigit() or folder.is_symlink() or not folder.is_dir():
        return False
    try:
        mark = json.loads((folder / STAGING_MARK).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(mark, dict) and mark.get("pid") == int(pid) and mark.get("host") == socket.gethostname()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _check_folder_path(path: Path, flag: str) -> None:
    if path.exists() and not path.is_dir():
        raise PbtError(f"{flag} {path} is a file; give a folder path")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise PbtError(f"{flag} {path} lies inside {parent}, which is a file; give a folder path")


def _manifests(path: Path, patterns: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {p.name: read_json_manifest(p) for p in sorted(path.iterdir())
            if p.is_file() and matches(p.name, patterns)}


def inspect_folder(path: Path, stage: str, *, manifest_patterns: Sequence[str] = MANIFEST_PATTERNS,
                   flag: str = "--out") -> dict[str, dict[str, Any]]:
    """The manifests of this stage in an existing folder; refuses another stage's folder and foreign files."""
    if not path.is_dir():
        return {}
    manifests = _manifests(path, manifest_patterns)
    for name, manifest in manifests.items():
        other = manifest.get("stage")
        if other != stage:
            what = f"`pbt {other}`" if other else "another program"
            raise PbtError(f"{flag} {path} holds the output of {what} ({name}); a stage never writes into another "
                           f"stage's folder; choose another {flag}")
    patterns: set[str] = set()
    for manifest in manifests.values():
        patterns.update(manifest.get("outputs") or legacy_outputs(stage))
    foreign = [p.name for p in sorted(path.iterdir())
               if not p.name.startswith(INTERNAL_PREFIX) and p.name not in IGNORED_NAMES and not _is_log_file(p)
               and p.name not in manifests and not matches(p.name, patterns)]
    for entry in sorted(path.iterdir()):  # what pbt owns is a whole folder only when all of it is pbt's
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith(INTERNAL_PREFIX) \
                and entry.name not in IGNORED_NAMES and matches(entry.name, patterns):
            foreign.extend(foreign_inside(entry, path))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise PbtError(f"{flag} {path} holds files that pbt did not write ({shown}); pbt writes only into a new or "
                       f"empty folder or one that `pbt {stage}` wrote, and --overwrite replaces only what pbt wrote "
                       f"there; choose another {flag}")
    return manifests


def claim_output(path: Path | str, stage: str, *, outputs: Sequence[str], inputs: Iterable[Any] = (),
                 overwrite: bool = False, manifest_name: str = MANIFEST,
                 manifest_patterns: Sequence[str] = MANIFEST_PATTERNS, flag: str = "--out") -> OutputFolder:
    """Check, create and lock a stage's output folder before any model loads (see the module's rules).

    `--overwrite` does not delete anything here: a stage calls `remove_owned()` when it starts
    writing, or `install()` replaces the earlier output once the new one is complete.
    """
    path = Path(path).expanduser()
    inputs = list(inputs)
    check_not_input(path, inputs, flag)
    check_log_file(path, inputs, outputs)
    _check_folder_path(path, flag)
    manifests = inspect_folder(path, stage, manifest_patterns=manifest_patterns, flag=flag)
    created = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        created = folder
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise PbtError(f"{flag} {path} cannot be created (permission denied); choose another folder") from None
    except OSError as exc:
        raise PbtError(f"{flag} {path} cannot be created ({exc.strerror}); choose another folder") from None
    stem = Path(manifest_name).stem
    lock_name = f"{INTERNAL_PREFIX}lock" if manifest_name in (MANIFEST, "results.json") \
        else f"{INTERNAL_PREFIX}lock-{stem}"
    lock = FolderLock(path / lock_name, path)
    lock.acquire()
    from pbt_cli.artifacts import host_tag

    for leftover in path.glob(f"{INTERNAL_PREFIX}tmp-*-*"):  # write_json's copy, of a run killed mid-write
        _, _, pid, tag, *_ = leftover.name.split("-") + ["", ""]
        # another host's copy (a shard on another node, its tag in the name) may be in flight: not ours to judge
        ours = tag == host_tag() or not (len(tag) == 8 and all(c in "0123456789abcdef" for c in tag))
        if pid.isdigit() and leftover.is_file() and ours and (int(pid) == os.getpid() or not _process_alive(int(pid))):
            leftover.unlink(missing_ok=True)
    for stale in path.glob(f"{INTERNAL_PREFIX}staging-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if _is_pbt_staging(stale) and (int(pid) == os.getpid() or not _process_alive(int(pid))):
            _remove(stale)  # a staging folder an interrupted run of pbt left (a user's own is kept)
    return OutputFolder(path=path, stage=stage, outputs=tuple(outputs), manifest_name=manifest_name,
                        previous=manifests.get(manifest_name), lock=lock, created=created)


# --- inputs made by an earlier stage ----------------------------------------------------------------


def require_stage(folder: Path, expected: str | Sequence[str], flag: str, *, made_by: str = "",
                  manifest_name: str = MANIFEST) -> dict[str, Any]:
    """The manifest of an input folder, which must come from the stage (or one of the stages) expected."""
    stages = (expected,) if isinstance(expected, str) else tuple(expected)
    path = Path(folder) / manifest_name
    if not Path(folder).exists():
        raise PbtError(f"{flag} {folder} does not exist; give the --out folder of `pbt {stages[0]}`{made_by}")
    if not path.is_file():
        raise PbtError(f"{flag} {folder} is not an output of `pbt {stages[0]}` (it has no {manifest_name}){made_by}")
    manifest = read_json_manifest(path)
    if manifest.get("stage") not in stages:
        raise PbtError(f"{flag} {folder} holds the output of `pbt {manifest.get('stage')}`, not of "
                       f"`pbt {' or '.join(stages)}`; give the --out folder of `pbt {stages[0]}`")
    return manifest


def require_complete(manifest: dict[str, Any], folder: Path, flag: str, *, allow_partial: bool = False,
                     option: str | None = None) -> bool:
    """Whether an input is complete; an unfinished one is refused unless `allow_partial` (then True: partial)."""
    status = manifest.get("status", "complete")
    if status == "complete":
        return False
    if allow_partial:
        log.warning("%s %s is %s; using what it holds (%s)", flag, folder, status, option)
        return True
    advice = f", or pass {option} to use what it holds" if option else ""  # only where the command has it
    raise PbtError(f"{flag} {folder} is {status} (its run has not finished); finish it by rerunning its command"
                   f"{advice}")
