"""`pbt preprocess`: preference pairs rendered for one tokenizer (docs/method.md §4).

Output (`--out`): one Parquet file per split, named as the Hugging Face Hub expects
(`data/train-00000-of-00001.parquet`, `data/validation-...`, `data/test-...`; an empty split has
no file), a dataset card (`README.md`) and `manifest.json` recording the tokenizer (name, revision,
chat-template hash) and the pairs' manifest hash, so `pbt sft`, `pbt dpo` and `pbt eval flipflop`
can refuse data rendered for another tokenizer. `datasets.load_dataset(OUT)` reads it, and TRL's
trainers take its splits as they are. Folders written by earlier versions (`save_to_disk`) are
still read.

Rows keep both forms: the conversation (`prompt` as chat messages, `chosen` / `rejected` or
`completion` as one assistant message each, the form TRL takes) and the rendered text
(`prompt_text`, `chosen_text`, ...) that shows exactly what the model sees.

`train` holds the chosen mix; `valid` and `test` hold the balanced flipflop evaluation sets:
resist pairs labelled `flip_correct_to_incorrect` and accept pairs `flip_incorrect_to_correct`,
cut to equal counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.artifacts import MANIFEST, base_manifest
from pbt_cli.config import to_plain
from pbt_cli.data.pairs import EVAL_LABELS, KINDS, PreferencePair, read_pairs
from pbt_cli.errors import PbtError, require_at_least, require_one_of
from pbt_cli.models.chat import encode, leading_bos_count, render, require_chat_template, template_hash
from pbt_cli.models.spec import ModelSpec
from pbt_cli.outputs import OutputFolder, claim_output, require_complete, require_stage
from pbt_cli.pipeline.filter import pairs_manifest_hash, read_pairs_manifest
from pbt_cli.progress import NULL_PROGRESS, ProgressSink

FORMATS = ("dpo", "sft")
MIXES = ("balanced", "accept", "resist", "all")


@dataclass(frozen=True)
class PreprocessConfig:
    pairs: Path
    tokenizer: ModelSpec
    out: Path
    format: str = "dpo"
    mix: str = "balanced"
    limit: int | None = None
    max_length: int = 1024
    max_prompt_length: int = 512
    seed: int = 42
    balance: bool = True  # cut each kind to the smaller kind's count before mixing (the original's --balance)
    overwrite: bool = False
    # valid/test cut to equal resist and accept counts (the paper's flipflop sets); off: every held-out pair
    # of either kind (a few trees' only evaluation set; the report shows resist and accept apart)
    balance_eval: bool = True

    def __post_init__(self) -> None:
        require_one_of("--format", self.format, FORMATS)
        require_one_of("--mix", self.mix, MIXES)
        require_at_least("--limit", self.limit)
        if self.max_prompt_length > self.max_length:
            raise PbtError("--max-prompt-length is longer than --max-length")


@dataclass
class RenderedPair:
    pair: PreferencePair
    prompt_text: str
    chosen_text: str
    rejected_text: str
    prompt_tokens: int
    chosen_tokens: int
    rejected_tokens: int


@dataclass
class PreprocessResult:
    out: Path
    counts: dict[str, int]
    dropped: dict[str, int]
    examples: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = False


def tokenizer_identity(spec: ModelSpec, tokenizer: Any) -> dict[str, Any]:
    return {"name": spec.name, "revision": spec.revision, "chat_template_hash": template_hash(tokenizer),
            "chat_template_override": str(spec.chat_template) if spec.chat_template else None,
            "name_or_path": getattr(tokenizer, "name_or_path", None)}


def render_pair(tokenizer: Any, pair: PreferencePair) -> RenderedPair:
    """Render prompt and both continuations; check the BOS token is not doubled."""
    prompt_text = render(tokenizer, pair.prompt)
    texts = []
    for response in (pair.chosen, pair.rejected):
        full = render(tokenizer, [*pair.prompt, *response], complete=True)
        if not full.startswith(prompt_text):
            raise PbtError(f"pair {pair.pair_id}: the chat template renders the prompt differently once a reply "
                           "follows; pass a template that keeps the prompt a prefix with --chat-template")
        texts.append(full[len(prompt_text):])
    prompt_ids = encode(tokenizer, prompt_text)
    if leading_bos_count(prompt_ids, tokenizer.bos_token_id) > 1:
        raise PbtError(f"pair {pair.pair_id}: the rendered prompt starts with two BOS tokens; the chat template "
                       "adds one and so does something else (check --chat-template)")
    full_lengths = [len(encode(tokenizer, prompt_text + text)) for text in texts]
    return RenderedPair(pair=pair, prompt_text=prompt_text, chosen_text=texts[0], rejected_text=texts[1],
                        prompt_tokens=len(prompt_ids), chosen_tokens=full_lengths[0] - len(prompt_ids),
                        rejected_tokens=full_lengths[1] - len(prompt_ids))


def too_long(rendered: RenderedPair, cfg: PreprocessConfig) -> str | None:
    longest = rendered.chosen_tokens if cfg.format == "sft" else max(rendered.chosen_tokens, rendered.rejected_tokens)
    if rendered.prompt_tokens > cfg.max_prompt_length:
        return "prompt_longer_than_max_prompt_length"
    if rendered.prompt_tokens + longest > cfg.max_length:
        return "longer_than_max_length"
    return None


def mix_training_pairs(pairs: list[RenderedPair], mix: str, limit: int | None, seed: int,
                       balance: bool = True) -> list[RenderedPair]:
    """The training mix, shuffled with the seed (docs/method.md §4.2).

    Both kinds are cut to the smaller kind's count m (unless `balance` is off for a single-kind
    mix): balanced = m accept + m resist pairs, accept-only = m accept pairs, resist-only = m resist
    pairs, as in the original runs. `limit` then caps the total (an equal-size ablation).
    """
    rng = random.Random(seed)
    by_kind = {kind: [p for p in pairs if p.pair.kind == kind] for kind in KINDS}
    smaller = min(len(by_kind["accept"]), len(by_kind["resist"]))
    counts = f"{len(by_kind['accept'])} accept and {len(by_kind['resist'])} resist pairs"
    if mix == "balanced":
        if smaller == 0:
            raise PbtError(f"--mix balanced needs both kinds, but the train split has {counts}; generate more trees "
                           "or use --mix all")
        size = smaller if limit is None else (min(smaller, limit // 2) or 1)
        chosen = rng.sample(by_kind["accept"], size) + rng.sample(by_kind["resist"], size)
    elif mix in KINDS:
        if not by_kind[mix]:
            raise PbtError(f"--mix {mix} found no {mix} pairs in the train split")
        if balance and smaller == 0:
            raise PbtError(f"--mix {mix} is cut to the smaller kind's count (as the original runs were), but the train "
                           f"split has {counts}; pass --no-balance to keep every {mix} pair")
        chosen = rng.sample(by_kind[mix], smaller) if balance else list(by_kind[mix])
    else:
        chosen = list(pairs)
        if not chosen:
            raise PbtError("the train split has no pairs")
    rng.shuffle(chosen)
    return chosen[:limit] if limit is not None else chosen


def balanced_eval_set(pairs: list[RenderedPair], seed: int) -> list[RenderedPair]:
    """Resist and accept pairs of one split, cut to equal counts (the flipflop evaluation set)."""
    rng = random.Random(seed)
    by_kind = {kind: [p for p in pairs if p.pair.kind == kind] for kind in KINDS}
    size = min(len(by_kind["accept"]), len(by_kind["resist"]))
    chosen = rng.sample(by_kind["resist"], size) + rng.sample(by_kind["accept"], size)
    rng.shuffle(chosen)
    return chosen


def every_eval_pair(pairs: list[RenderedPair], seed: int) -> list[RenderedPair]:
    """Every resist and accept pair of one split, shuffled (an evaluation set that need not be balanced)."""
    chosen = [p for p in pairs if p.pair.kind in KINDS]
    random.Random(seed).shuffle(chosen)
    return chosen


def _common_columns(rendered: RenderedPair) -> dict[str, Any]:
    pair = rendered.pair
    return {
        "pair_id": pair.pair_id, "tree_id": pair.tree_id, "kind": pair.kind or "none",
        "label": EVAL_LABELS.get(pair.kind or "", "none"), "question": pair.question,
        "gold_aliases": list(pair.gold_aliases), "persuader_answer": pair.answers.get("persuader") or "",
        "responder_previous_answer": pair.answers.get("responder_previous") or "",
        "prompt": pair.prompt, "prompt_text": rendered.prompt_text, "prompt_tokens": rendered.prompt_tokens,
    }


def dpo_row(rendered: RenderedPair) -> dict[str, Any]:
    row = _common_columns(rendered)
    row.update(chosen=rendered.pair.chosen, rejected=rendered.pair.rejected,
               chosen_text=rendered.chosen_text, rejected_text=rendered.rejected_text,
               chosen_tokens=rendered.chosen_tokens, rejected_tokens=rendered.rejected_tokens)
    return row


def sft_row(rendered: RenderedPair) -> dict[str, Any]:
    row = _common_columns(rendered)
    row.update(completion=rendered.pair.chosen,
               completion_text=rendered.chosen_text, completion_tokens=rendered.chosen_tokens)
    return row


PREPROCESS_OUTPUTS = ("data", "README.md", MANIFEST)
# The Hub's split names, and the names pbt's commands and pair files use for them.
HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


def split_file(split: str) -> str:
    """Where a split lives inside a `pbt preprocess` folder (the Hub's default layout)."""
    return f"data/{HUB_SPLITS.get(split, split)}-00000-of-00001.parquet"


def features(format: str) -> Any:
    """The columns of each layout, typed once so every file (empty or not) has the same schema."""
    import datasets

    text, count = datasets.Value("string"), datasets.Value("int64")
    messages = [{"role": text, "content": text}]
    columns: dict[str, Any] = {
        "pair_id": text, "tree_id": text, "kind": text, "label": text, "question": text,
        "gold_aliases": datasets.List(text), "persuader_answer": text, "responder_previous_answer": text,
        "prompt": messages, "prompt_text": text, "prompt_tokens": count,
    }
    if format == "sft":
        columns.update(completion=messages, completion_text=text, completion_tokens=count)
    else:
        columns.update(chosen=messages, rejected=messages, chosen_text=text, rejected_text=text, chosen_tokens=count,
                       rejected_tokens=count)
    return datasets.Features(columns)


def write_split(path: Path, rows: list[dict[str, Any]], format: str) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features(format)).to_parquet(str(path))


def preprocess_settings(cfg: PreprocessConfig, identity: dict[str, Any]) -> dict[str, Any]:
    # where the tokenizer's files sit (a demo model under PBT_HOME, a hub cache) is not a setting: the
    # same name, revision and template under another cache folder render the same datasets
    tokenizer = {key: value for key, value in identity.items() if key != "name_or_path"}
    return to_plain({"pairs_manifest": pairs_manifest_hash(cfg.pairs), "tokenizer": tokenizer,
                     "format": cfg.format, "mix": cfg.mix, "limit": cfg.limit, "max_length": cfg.max_length,
                     "max_prompt_length": cfg.max_prompt_length, "seed": cfg.seed, "balance": cfg.balance,
                     **({} if cfg.balance_eval else {"balance_eval": False})})


def run_preprocess(cfg: PreprocessConfig, *, tokenizer: Any = None, show: int = 0,
                   progress: ProgressSink = NULL_PROGRESS) -> PreprocessResult:
    from pbt_cli.models.loading import load_tokenizer

    read_pairs_manifest(cfg.pairs)
    inputs = [cfg.pairs, *cfg.tokenizer.local_paths()]
    with claim_output(cfg.out, "preprocess", outputs=PREPROCESS_OUTPUTS, inputs=inputs,
                      overwrite=cfg.overwrite) as folder:
        if tokenizer is None:
            tokenizer = load_tokenizer(cfg.tokenizer, padding_side="right")
        require_chat_template(tokenizer, cfg.tokenizer.name)
        identity = tokenizer_identity(cfg.tokenizer, tokenizer)
        settings = preprocess_settings(cfg, identity)
        earlier_tokenizer = ((folder.previous or {}).get("settings") or {}).get("tokenizer")
        if isinstance(earlier_tokenizer, dict):
            earlier_tokenizer.pop("name_or_path", None)  # recorded as a setting by earlier versions
        previous = None if cfg.overwrite else folder.finished_run(settings, "datasets")
        if previous is not None and not show:
            return PreprocessResult(out=cfg.out, counts=previous["counts"], dropped=previous["dropped"], reused=True)
        return _preprocess(cfg, folder, tokenizer, identity, settings, previous, show, progress)


def _preprocess(cfg: PreprocessConfig, folder: OutputFolder, tokenizer: Any, identity: dict[str, Any],
                settings: dict[str, Any], previous: dict[str, Any] | None, show: int,
                progress: ProgressSink) -> PreprocessResult:
    dropped: dict[str, int] = {"prompt_longer_than_max_prompt_length": 0, "longer_than_max_length": 0}
    rendered: dict[str, list[RenderedPair]] = {}
    for split in ("train", "valid", "test"):
        pairs = read_pairs(cfg.pairs, split)
        progress.start(f"render-{split}", f"rendering {split}", total=len(pairs))
        kept = []
        for pair in pairs:
            item = render_pair(tokenizer, pair)
            reason = too_long(item, cfg)
            progress.advance(f"render-{split}")
            if reason:
                dropped[reason] += 1
                continue
            kept.append(item)
        rendered[split] = kept

    train = mix_training_pairs(rendered["train"], cfg.mix, cfg.limit, cfg.seed, cfg.balance)
    held_out = balanced_eval_set if cfg.balance_eval else every_eval_pair
    splits = {"train": train, "valid": held_out(rendered["valid"], cfg.seed),
              "test": held_out(rendered["test"], cfg.seed)}
    to_row = dpo_row if cfg.format == "dpo" else sft_row
    rows = {split: [to_row(item) for item in items] for split, items in splits.items()}
    # valid/test are evaluation sets: always the dpo layout (prompt, chosen, rejected, label)
    rows["valid"] = [dpo_row(item) for item in splits["valid"]]
    rows["test"] = [dpo_row(item) for item in splits["test"]]
    counts = {split: len(items) for split, items in rows.items()}
    kinds = {split: {kind: sum(1 for r in items if r["kind"] == kind) for kind in (*KINDS, "none")}
             for split, items in rows.items()}
    examples = [dict(row) for row in rows["train"][:show]]
    if previous is not None:  # only --show was new: nothing to write
        return PreprocessResult(out=cfg.out, counts=previous["counts"], dropped=previous["dropped"],
                                examples=examples, reused=True)

    from pbt_cli.cards import write_dataset_card

    pairs_manifest = read_pairs_manifest(cfg.pairs)
    manifest = base_manifest("preprocess", cfg, timestamp=False)
    manifest.update(status="complete", settings=settings, tokenizer=identity, counts=counts, kinds=kinds,
                    dropped=dropped, format=cfg.format, mix=cfg.mix,
                    files={split: split_file(split) for split, items in rows.items() if items})
    with folder.staging() as staging:
        for split, items in rows.items():
            if items:  # `datasets` cannot load a split whose only file is empty; the manifest counts it as 0
                write_split(staging / split_file(split), items, cfg.format if split == "train" else "dpo")
        write_dataset_card(staging, manifest, pairs_manifest)
    folder.install(staging, manifest)
    return PreprocessResult(out=cfg.out, counts=counts, dropped=dropped, examples=examples)




# --- what later stages use ---------------------------------------------------------------------------


def read_data_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a `pbt preprocess` output (refusing anything else, and unfinished data)."""
    manifest = require_stage(folder, "preprocess", "--data")
    require_complete(manifest, folder, "--data")
    return manifest


def check_data_files(folder: Path) -> None:
    """Every split file the manifest names is there and readable as Parquet (its footer only: cheap), so a
    damaged dataset is one line before any model loads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = read_data_manifest(folder)
    for split, name in (manifest.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            raise PbtError(f"--data {folder}: {name} is missing though the manifest counts "
                           f"{(manifest.get('counts') or {}).get(split)} rows; make the data again with `pbt preprocess`")
        try:
            pq.read_metadata(path)
        except (pa.ArrowException, OSError) as exc:
            raise PbtError(f"--data {folder}: {name} is not a readable Parquet file ({str(exc).splitlines()[0]}); "
                           "make the data again with `pbt preprocess`") from None


def check_same_tokenizer(data_folder: Path, manifest: dict[str, Any], spec: ModelSpec, tokenizer: Any) -> None:
    """Refuse data rendered with another chat template than the model's (docs/method.md §4.6)."""
    rendered_for = manifest.get("tokenizer") or {}
    ours = template_hash(tokenizer)
    if rendered_for.get("chat_template_hash") != ours:
        raise PbtError(
            f"--data {data_folder} was rendered for the tokenizer of {rendered_for.get('name')} (chat template "
            f"{rendered_for.get('chat_template_hash')}), not for {spec.name} (chat template {ours}); re-render it "
            f"with `pbt preprocess --pairs PAIRS --tokenizer {spec.name} --format {manifest.get('format', 'dpo')} "
            f"--out NEW_FOLDER`")


def load_split(folder: Path, split: str) -> Any:
    """One split of a `pbt preprocess` folder as a `datasets.Dataset`, read into memory (no cache files).

    `split` is train, valid (or validation) or test. A split with no file is empty (0 rows, the
    same columns). Folders from earlier versions (`save_to_disk`) are read too.
    """
    import datasets

    split = "valid" if split == "validation" else split
    if (folder / "dataset_dict.json").is_file():  # the layout before Parquet files
        try:
            data = datasets.load_from_disk(str(folder))
        except (FileNotFoundError, ValueError, IndexError, OSError) as exc:
            raise PbtError(f"--data {folder} cannot be read as a saved dataset ({str(exc).splitlines()[0]}); "
                           "make it again with `pbt preprocess`") from None
        if split not in data:
            raise PbtError(f"--data {folder} has no {split!r} split (it has {', '.join(data)})")
        return data[split]
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    manifest = read_data_manifest(folder)
    layout = manifest.get("format", "dpo") if split == "train" else "dpo"
    path = folder / split_file(split)
    if not path.is_file():
        if (manifest.get("counts") or {}).get(split):
            raise PbtError(f"--data {folder}: {split_file(split)} is missing though the manifest counts "
                           f"{manifest['counts'][split]} rows; make the data again with `pbt preprocess`")
        return datasets.Dataset.from_dict({name: [] for name in features(layout)}, features=features(layout))
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise PbtError(f"--data {folder}: {split_file(split)} is not a readable Parquet file "
                       f"({str(exc).splitlines()[0]}); make the data again with `pbt preprocess`") from None
    return datasets.Dataset(InMemoryTable(table))
