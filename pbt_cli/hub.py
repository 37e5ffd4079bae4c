"""Publishing: `pbt card` (write or refresh an artifact's card) and `pbt push` (upload it to the Hub).

What a folder is comes from its manifest: adapters (`pbt sft`, `pbt dpo`) and merged models
(`pbt export`) go to model repositories; trees, pairs, rendered datasets and evaluation results
to dataset repositories. Only finished artifacts are published; checkpoints, tracker logs, pbt's
bookkeeping and caches stay home unless asked for. The upload is huggingface_hub's own
(`create_repo`, `create_branch`, `upload_folder`), with its token (HF_TOKEN or `hf auth login`)
and offline switches.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.artifacts import temporary_name
from pbt_cli.errors import PbtError
from pbt_cli.outputs import INTERNAL_PREFIX, MANIFEST, claim_output, read_json_manifest

MODEL_STAGES = ("sft", "dpo", "export")
DATASET_STAGES = ("generate", "filter", "preprocess")
# Left out of an upload unless --include-checkpoints: bulk and bookkeeping, not the artifact
# An evaluation's shard files stay home: the merged samples.jsonl and results.json hold all of them.
EVAL_SHARD_FILES = ("samples-*-of-*.jsonl", "results-*-of-*.json")
LEFT_OUT = ("checkpoints", "checkpoints/*", "runs", "runs/*", "wandb", "wandb/*", "trackio", "trackio/*",
            f"{INTERNAL_PREFIX}*", "*/" + f"{INTERNAL_PREFIX}*", "judge_cache.jsonl", "__pycache__", "*.pyc",
            *EVAL_SHARD_FILES, *(f"*/{name}" for name in EVAL_SHARD_FILES))
BULK = ("checkpoints", "checkpoints/*")


@dataclass
class Artifact:
    path: Path
    stage: str
    manifest_name: str
    manifest: dict[str, Any]
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # generate shards: one per shard

    @property
    def repo_type(self) -> str:
        return "model" if self.stage in MODEL_STAGES else "dataset"


def read_artifact(path: Path) -> Artifact:
    """What a folder is, from its manifest(s); refuses anything unfinished or not made by pbt."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise PbtError(f"{path} is not a folder; give the --out folder of a pbt stage")
    if (path / MANIFEST).is_file():
        manifest = read_json_manifest(path / MANIFEST)
        manifests = {MANIFEST: manifest}
        name = MANIFEST
    elif (path / "results.json").is_file():
        manifest = read_json_manifest(path / "results.json")
        manifests = {"results.json": manifest}
        name = "results.json"
    else:
        manifests = {p.name: read_json_manifest(p) for p in sorted(path.glob("manifest-*-of-*.json"))}
        if not manifests and (results := results_root_manifest(path)) is not None:
            return Artifact(path=path, stage=RESULTS_ROOT, manifest_name="", manifest=results)
        if not manifests:
            raise PbtError(f"{path} holds no pbt manifest (manifest.json or results.json); pbt publishes only what "
                           "its stages made")
        name, manifest = next(iter(manifests.items()))
    stage = str(manifest.get("stage"))
    if stage not in (*MODEL_STAGES, *DATASET_STAGES) and not stage.startswith("eval "):
        raise PbtError(f"{path} holds the output of `pbt {stage}`, which is not published")
    for manifest_name, each in manifests.items():
        status = each.get("status", "complete")
        if status != "complete":
            raise PbtError(f"{path} is not finished ({manifest_name} says {status}); finish it by rerunning its "
                           "command before publishing it")
    return Artifact(path=path, stage=stage, manifest_name=name, manifest=manifest, manifests=manifests)


RESULTS_ROOT = "eval results"  # a results root (`--out` of `pbt eval`): every evaluation under it, and report/


def results_root_manifest(path: Path) -> dict[str, Any] | None:
    """What a results root holds, or None when it is not one: finished <eval>/<model>/results.json files."""
    from pbt_cli.evals.report import EVALS

    found = [p for name in EVALS for p in sorted((path / name).glob("*/results.json"))]
    if not found:
        return None
    unfinished = [p for p in found if read_json_manifest(p).get("status", "complete") != "complete"]
    if unfinished:
        raise PbtError(f"{path} is not finished ({unfinished[0].parent} is still running or was interrupted); rerun "
                       "its command before publishing the results")
    return {"stage": RESULTS_ROOT, "status": "complete", "outputs": ["README.md"],
            "results": [p.relative_to(path).as_posix() for p in found]}


def results_for(artifact: Artifact, results_root: Path | None) -> list[dict[str, Any]]:
    """The report rows (pbt eval report) of the evaluations of this model, found under `results_root`."""
    if results_root is None or artifact.repo_type != "model":
        return []
    from pbt_cli.evals.report import collect, dataset_of

    report = collect(Path(results_root), mixed_extractors=True)
    mine = {r.path.parent for r in report.results if _evaluated_path(r.data) == artifact.path.resolve()}
    return [{**row, "dataset": dataset_of(result.data)} for row, result in _rows_with_results(report)
            if result.path.parent in mine]


def _rows_with_results(report: Any) -> list[tuple[dict[str, Any], Any]]:
    by_key = {(r.model, r.eval): r for r in report.results}
    return [(row, by_key[(row["model"], row["eval"])]) for row in report.rows if (row["model"], row["eval"]) in by_key]


def _evaluated_path(results: dict[str, Any]) -> Path | None:
    config = results.get("config") or {}
    name = (config.get("model_x" if results.get("eval") == "team" else "model") or {}).get("name")
    if not name:
        return None
    path = Path(str(name)).expanduser()
    return path.resolve() if path.exists() else None


def card_text(artifact: Artifact, results: list[dict[str, Any]], repo_id: str | None) -> str:
    from pbt_cli import cards

    if artifact.repo_type == "model":
        return cards.model_card_text(artifact.manifest, results, repo_id)
    if artifact.stage == RESULTS_ROOT:
        return cards.results_root_card_text(artifact.path, repo_id)
    if artifact.stage == "eval report":
        return cards.report_card_text(artifact.path, repo_id)
    if artifact.stage == "preprocess":
        pairs = None
        source = (artifact.manifest.get("config") or {}).get("pairs")
        if source and (Path(source) / MANIFEST).is_file():
            pairs = read_json_manifest(Path(source) / MANIFEST)
        return cards.dataset_card_text(artifact.manifest, pairs)
    return cards.artifact_card_text(artifact.stage, artifact.manifests, repo_id)


def write_card(artifact: Artifact, results: list[dict[str, Any]], repo_id: str | None) -> Path:
    """(Re)write the folder's README.md, holding the folder's lock like the stage that made it."""
    outputs = artifact.manifest.get("outputs") or []
    if outputs and "README.md" not in outputs:
        raise PbtError(f"{artifact.path}'s manifest does not list a card (README.md) among what its stage writes; "
                       "make it again with the current pbt to publish it with a card")
    text = card_text(artifact, results, repo_id)
    if artifact.stage == RESULTS_ROOT:  # no stage owns a results root: its card has a lock of its own
        from pbt_cli.outputs import FolderLock

        lock = FolderLock(artifact.path / f"{INTERNAL_PREFIX}lock-card", artifact.path)
        lock.acquire()
        try:
            (artifact.path / "README.md").write_text(text, encoding="utf-8")
        finally:
            lock.release()
        return artifact.path / "README.md"
    from pbt_cli.evals.results import EVAL_MANIFESTS

    # an evaluation's folder (results.json) may hold its shards' manifests too
    manifests = EVAL_MANIFESTS if artifact.manifest_name == EVAL_MANIFESTS[0] \
        else (artifact.manifest_name, "manifest-*-of-*.json")
    with claim_output(artifact.path, artifact.stage, outputs=outputs or ["README.md"],
                      manifest_name=artifact.manifest_name, manifest_patterns=manifests):
        path = artifact.path / "README.md"
        check_card_not_edited(artifact)
        path.write_text(text, encoding="utf-8")
        record_card(artifact)
    return path


CARD_RECORD = f"{INTERNAL_PREFIX}card.json"  # what `pbt card` / `pbt push` last wrote, to notice hand edits


def _card_state(artifact: Artifact) -> dict[str, str | None]:
    from pbt_cli.artifacts import sha256_file

    files = {"card": artifact.path / "README.md", "manifest": artifact.path / artifact.manifest_name}
    return {key: sha256_file(path) if path.is_file() else None for key, path in files.items()}


def check_card_not_edited(artifact: Artifact) -> None:
    """Refuse to replace a card edited by hand since pbt wrote it (a stage that ran again since, which
    rewrote its manifest, made a new card: that one is pbt's)."""
    import json

    record = artifact.path / CARD_RECORD
    try:
        written = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    now = _card_state(artifact)
    if isinstance(written, dict) and written.get("manifest") == now["manifest"] and now["card"] is not None \
            and written.get("card") != now["card"]:
        raise PbtError(f"{artifact.path / 'README.md'} was edited since pbt wrote it, and pbt does not replace a "
                       "card edited by hand; move it away (keep your text) and run the command again")


def record_card(artifact: Artifact) -> None:
    import json

    (artifact.path / CARD_RECORD).write_text(json.dumps(_card_state(artifact)), encoding="utf-8")


def restore_card(artifact: Artifact, text: bytes | None) -> None:
    """Put back the card a failed push found (or remove the one it wrote where there was none)."""
    path = artifact.path / "README.md"
    if text is None:
        path.unlink(missing_ok=True)
    else:
        tmp = path.with_name(temporary_name("README.md"))
        tmp.write_bytes(text)
        os.replace(tmp, path)
    record_card(artifact)  # the card there now is the one pbt found (a hand-edited one is refused before)


def upload_list(artifact: Artifact, include_checkpoints: bool) -> list[str]:
    """The files that go up, relative to the folder (what `--dry-run` lists)."""
    left_out = [p for p in LEFT_OUT if include_checkpoints is False or p not in BULK]
    files = []
    for path in sorted(artifact.path.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(artifact.path).as_posix()
        parts = relative.split("/")
        if any(fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(parts[0], p) for p in left_out):
            continue
        files.append(relative)
    if "README.md" not in files:
        files.append("README.md")  # written before the upload
    return files


def ignore_patterns(include_checkpoints: bool) -> list[str]:
    """huggingface_hub's own patterns for what `upload_list` leaves out."""
    patterns = [f"{INTERNAL_PREFIX}*", f"**/{INTERNAL_PREFIX}*", "runs/**", "wandb/**", "trackio/**",
                "judge_cache.jsonl", "**/__pycache__/**", "*.pyc", *EVAL_SHARD_FILES,
                *(f"**/{name}" for name in EVAL_SHARD_FILES)]
    if not include_checkpoints:
        patterns.append("checkpoints/**")
    return patterns


def require_token() -> str:
    from huggingface_hub import get_token

    from pbt_cli.models.resolve import hub_offline

    if hub_offline():
        raise PbtError("offline mode is on (HF_HUB_OFFLINE / --offline); pushing needs the Hugging Face hub: run "
                       "without it on a machine with network, or use --dry-run to see what would go")
    token = get_token()
    if not token:
        raise PbtError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access), "
                       "or use --dry-run to see what would go")
    return token


def push(artifact: Artifact, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, include_checkpoints: bool = False) -> str:
    """Create the repository (if needed) and upload the folder; returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    token = require_token()
    api = HfApi(token=token)
    message = commit_message or f"pbt push: {artifact.stage} from {artifact.path.name}"
    try:
        api.create_repo(repo_id, repo_type=artifact.repo_type, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type=artifact.repo_type, exist_ok=True)
        with portable_copy(artifact, upload_list(artifact, include_checkpoints)) as folder:
            commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=artifact.repo_type,
                                       revision=revision, commit_message=message,
                                       ignore_patterns=ignore_patterns(include_checkpoints))
    except HfHubHTTPError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PbtError(f"the Hub refused the push to {repo_id} ({first}); check the token's write access and the "
                       "repository name") from None
    except Exception as exc:  # no network: OSError, or the hub client's own transport errors (httpx)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PbtError(f"cannot reach the Hugging Face hub to push {repo_id} ({first}); check the network and "
                       "run the command again") from None
    return str(getattr(commit, "commit_url", commit))


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PbtError(f"{repo_id!r} is not a Hub repository id ({str(exc).splitlines()[0]}); write OWNER/NAME") from None
    if "/" not in repo_id:
        raise PbtError(f"{repo_id!r} names no owner; write OWNER/NAME (your user or organisation)")


def token_source() -> str:
    return "HF_TOKEN" if os.environ.get("HF_TOKEN") else "the token saved by `hf auth login`"


# --- what goes up carries no local paths ------------------------------------------------------------------

TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".csv", ".txt", ".yaml", ".yml")


def _absolute_strings(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _absolute_strings(item, found)
    elif isinstance(value, list):
        for item in value:
            _absolute_strings(item, found)
    elif isinstance(value, str) and len(value) > 1 and value.startswith("/") and "\n" not in value \
            and " " not in value:
        found.add(value.rstrip("/"))


def portable_name(path: str, root: Path) -> str:
    """A local path as uploaded: relative to the folder pushed (or to its parent: a sibling run), otherwise
    `local:NAME`; a reader learns what it was without learning the machine's layout."""
    resolved = Path(path)
    for anchor in (root, root.parent):
        if resolved == anchor or anchor in resolved.parents:
            return os.path.relpath(resolved, root)
    return f"local:{resolved.name}"


def path_replacements(root: Path, files: list[str]) -> list[tuple[str, str]]:
    """(absolute path, portable name) for every absolute path named in the folder's JSON files, longest first;
    the home folder goes last, as `~`."""
    import json

    found: set[str] = {str(root)}
    for name in files:
        if name.endswith(".json") and (root / name).is_file():
            try:
                _absolute_strings(json.loads((root / name).read_text(encoding="utf-8")), found)
            except (ValueError, UnicodeDecodeError):
                continue
    pairs = sorted(((p, portable_name(p, root)) for p in found), key=lambda pair: -len(pair[0]))
    return [*pairs, (str(Path.home()), "~")]


# An absolute path inside free text (a command line, a note): not after a word character, ':' or '/'
# (so not a URL's path or a ratio), made of path-name characters
_LOCAL_PATH = re.compile(r"(?<![\w.~:/-])/(?:[\w.+@-]+/)*[\w.+@-]+")


def _portable_if_local(path: str, root: Path) -> str:
    """A path found in free text, made portable when it names something on this machine."""
    home = str(Path.home())
    if path == home or path.startswith(home + "/") or Path(path).exists():
        return portable_name(path, root)
    return path


@contextmanager
def portable_copy(artifact: Artifact, files: list[str]) -> Iterator[Path]:
    """The folder as it goes up: text files with local absolute paths made portable, the rest hard-linked
    (copied across file systems); a `.pbt-push-*` folder inside the artifact, removed afterwards."""
    root = artifact.path.resolve()
    staging = root / f"{INTERNAL_PREFIX}push-{os.getpid()}"
    # a path ends where a path cannot go on: `/x/dpo` is not replaced inside `/x/dpo_data`
    replacements = [(re.compile(re.escape(absolute) + r"(?=$|[/\s\"',:;)\]}`|])", re.MULTILINE), portable)
                    for absolute, portable in path_replacements(root, files)]
    try:
        for name in files:
            source, target = root / name, staging / name
            if not source.is_file():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.suffix in TEXT_SUFFIXES:
                text = source.read_text(encoding="utf-8", errors="surrogateescape")
                for pattern, portable in replacements:
                    text = pattern.sub(lambda _, portable=portable: portable, text)
                text = _LOCAL_PATH.sub(lambda found: _portable_if_local(found.group(0), root), text)
                target.write_text(text, encoding="utf-8", errors="surrogateescape")
                continue
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
