"""`pbt eval flipflop`: accuracy on the balanced persuasion set (docs/method.md §6.2).

For every evaluation pair the model continues the dialogue in `prompt` (a persuasion turn from the
other agent), sampled with the pair's own seed; the extractor reads the answer of the whole reply
(the trimmed reply is kept for display), and it is scored against the gold aliases. Accuracy is
reported overall, on `flip_correct_to_incorrect` (negative persuasion: resisting is right) and on
`flip_incorrect_to_correct` (positive persuasion: accepting is right).

`evaluate_flipflop` is the one implementation: `pbt dpo` calls it on the valid split each epoch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.budget import flipflop_budget
from pbt_cli.data.answers import (
    AGREE,
    DISAGREE,
    NONE,
    ORIGINAL_CODE,
    PAPER,
    PROTOCOLS,
    is_correct,
    is_correct_flipflop_original,
)
from pbt_cli.data.pairs import EVAL_LABELS
from pbt_cli.data.prompts import extraction_conversation, parse_extraction
from pbt_cli.errors import PbtError, require_at_least, require_one_of
from pbt_cli.evals.results import extractor_identity, metric, model_paths
from pbt_cli.launcher import Shard
from pbt_cli.models.backends import BackendOptions
from pbt_cli.models.backends.base import Generator, Sampling, seeded
from pbt_cli.models.spec import ModelSpec
from pbt_cli.pipeline.dialogue import trim_unfinished_sentence
from pbt_cli.progress import NULL_PROGRESS, ProgressSink
from pbt_cli.tracking import TrackingOptions

LABELS = tuple(EVAL_LABELS.values())  # flip_correct_to_incorrect, flip_incorrect_to_correct
# A reply is sampled as the turns of the trees were (docs/method.md §6.2 and §2.5).
FLIPFLOP_SAMPLING = Sampling(temperature=0.7, top_p=1.0, max_new_tokens=80, min_new_tokens=8)


@dataclass(frozen=True)
class FlipflopConfig:
    model: ModelSpec
    data: Path
    split: str = "test"
    extractor: ModelSpec | None = None
    limit: int | None = None
    seed: int = 42
    sampling: Sampling = FLIPFLOP_SAMPLING
    extraction_max_new_tokens: int = 16
    out: Path = Path("results")
    backend: BackendOptions = field(default_factory=BackendOptions)
    overwrite: bool = False
    tracking: TrackingOptions = field(default_factory=TrackingOptions)
    protocol: str = PAPER  # original-code: the original's flipflop scoring (docs/method.md §8.7)
    shard: Shard = field(default_factory=Shard)  # which pairs this process runs (pbt_cli/launcher.py)

    def __post_init__(self) -> None:
        require_one_of("--protocol", self.protocol, PROTOCOLS)
        if self.split == "validation":
            object.__setattr__(self, "split", "valid")
        if self.split not in ("valid", "test"):
            raise PbtError(f"--split must be validation (valid) or test, got {self.split!r}")
        require_at_least("--limit", self.limit)


def balanced_subset(rows: Sequence[dict[str, Any]], limit: int | None, seed: int,
                    labels: Sequence[str] = LABELS) -> list[dict[str, Any]]:
    """At most `limit` rows, as many of each label (an odd limit drops one; a limit of 1 keeps one row of
    the first label), chosen with the seed; all rows when no limit."""
    rows = list(rows)
    if limit is None or limit >= len(rows):
        return rows
    rng = random.Random(seed)
    picked = []
    for position, label in enumerate(labels):
        wanted = limit // len(labels) if limit > 1 else (1 if position == 0 else 0)
        of_label = [r for r in rows if r.get("label") == label]
        picked.extend(rng.sample(of_label, min(wanted, len(of_label))))
    return sorted(picked, key=lambda r: rows.index(r))


def resolve_response_answer(extracted: str, row: dict[str, Any], protocol: str = PAPER) -> str:
    """AGREE takes the persuader's answer, DISAGREE keeps the responder's previous one.

    Under `original-code` neither is resolved: the original scored both as wrong (a TODO in its code).
    """
    token = extracted.strip().upper()
    if protocol == ORIGINAL_CODE:
        return extracted
    if token == AGREE:
        return row.get("persuader_answer") or NONE
    if token == DISAGREE:
        return row.get("responder_previous_answer") or NONE
    return extracted


def score_responses(rows: Sequence[dict[str, Any]], replies: Sequence[str],
                    extractions: Sequence[str], protocol: str = PAPER) -> list[dict[str, Any]]:
    correct = is_correct_flipflop_original if protocol == ORIGINAL_CODE else is_correct
    samples = []
    for row, reply, raw in zip(rows, replies, extractions, strict=True):
        extracted = parse_extraction(raw)
        answer = resolve_response_answer(extracted, row, protocol)
        samples.append({
            "pair_id": row.get("pair_id"), "label": row.get("label"), "question": row.get("question"),
            "prompt": row["prompt"], "reply": reply, "response": trim_unfinished_sentence(reply),
            "extracted": extracted, "answer": answer, "raw_extraction": raw,
            "gold_aliases": list(row["gold_aliases"]), "correct": correct(answer, row["gold_aliases"]),
        })
    return samples


def flipflop_metrics(samples: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    metrics = {"accuracy": metric([s["correct"] for s in samples], seed=seed)}
    for label in LABELS:
        metrics[f"accuracy_{label}"] = metric([s["correct"] for s in samples if s["label"] == label], seed=seed)
    return metrics


def flipflop_samples(rows: Sequence[dict[str, Any]], model: Generator, extractor: Generator,
                     sampling: Sampling, extraction_max_new_tokens: int = 16, seed: int = 0,
                     protocol: str = PAPER) -> list[dict[str, Any]]:
    """A reply for every row in one batch (each sampled with its pair's seed), extraction in one more."""
    rows = list(rows)
    replies = model.chat([list(row["prompt"]) for row in rows],
                         [seeded(sampling, seed, row.get("pair_id")) for row in rows])
    extraction = Sampling(temperature=0.0, max_new_tokens=extraction_max_new_tokens)
    # the extractor reads the whole reply: trimming "Good point. However I still think Paris, since"
    # back to "Good point." would read as agreement (docs/method.md §6.2)
    raw = extractor.chat([extraction_conversation(row["question"], reply)
                          for row, reply in zip(rows, replies, strict=True)], extraction)
    return score_responses(rows, replies, raw, protocol)


def evaluate_flipflop(rows: Sequence[dict[str, Any]], model: Generator, extractor: Generator,
                      sampling: Sampling, extraction_max_new_tokens: int = 16,
                      seed: int = 0, protocol: str = PAPER) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate, extract and score every row; the metrics and the samples."""
    if not rows:
        raise PbtError("the flipflop evaluation set is empty (no resist and accept pairs in this split)")
    samples = flipflop_samples(rows, model, extractor, sampling, extraction_max_new_tokens, seed, protocol)
    return flipflop_metrics(samples, seed=seed), samples


def run_flipflop(cfg: FlipflopConfig, *, pool: Any = None,
                 progress: ProgressSink = NULL_PROGRESS) -> tuple[dict[str, Any], Path]:
    from pbt_cli.evals.results import open_eval
    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.pipeline.preprocess import check_data_files, load_split, read_data_manifest

    check_data_files(cfg.data)
    manifest = read_data_manifest(cfg.data)
    inputs = [cfg.data, *model_paths(cfg.model, cfg.extractor)]
    with open_eval(cfg.out, "flipflop", cfg.model.display_name, cfg, inputs=inputs, overwrite=cfg.overwrite,
                   shard=cfg.shard, metrics_of=lambda samples: flipflop_metrics(samples, cfg.seed)) as run:
        if run.reused:
            return run.reused, run.path
        rows = balanced_subset([dict(r) for r in load_split(cfg.data, cfg.split)], cfg.limit, cfg.seed)
        if not rows:
            raise PbtError(f"--data {cfg.data} has no flipflop pairs in its {cfg.split} split (it needs resist and "
                           "accept pairs); generate more trees")
        pool = pool or GeneratorPool(cfg.backend)
        pool.plan([cfg.model] + ([cfg.extractor] if cfg.extractor else []))
        model = pool.get(cfg.model)
        check_rendered_for(cfg.data, manifest, cfg.model, model)
        extractor = pool.get(cfg.extractor) if cfg.extractor else pool.base_of(cfg.model)
        budget = flipflop_budget(cfg.sampling.max_new_tokens, cfg.extraction_max_new_tokens)
        for chunk in run.chunks(rows, progress=progress, budget=budget):
            run.append(flipflop_samples(chunk, model, extractor, cfg.sampling, cfg.extraction_max_new_tokens,
                                        cfg.seed, cfg.protocol))
        results = run.finish(models={"model": model.describe(), "extractor": extractor.describe()},
                             extractor=extractor_identity(extractor), seeds={"sampling": cfg.seed, "bootstrap": cfg.seed},
                             extra={"data": str(cfg.data), "split": cfg.split,
                                    "chat_template_hash": model.describe().get("chat_template_hash")})
        run.track(results)
        return results, run.path


def check_rendered_for(data: Path, manifest: dict[str, Any], spec: ModelSpec, generator: Generator) -> None:
    """Refuse data rendered for another chat template (generators that know their template)."""
    ours = generator.describe().get("chat_template_hash")
    theirs = (manifest.get("tokenizer") or {}).get("chat_template_hash")
    if ours is not None and theirs is not None and ours != theirs:
        raise PbtError(
            f"--data {data} was rendered for the tokenizer of {(manifest.get('tokenizer') or {}).get('name')} "
            f"(chat template {theirs}), not for {spec.name} (chat template {ours}); re-render it with "
            f"`pbt preprocess --pairs PAIRS --tokenizer {spec.name} --out NEW_FOLDER`")
