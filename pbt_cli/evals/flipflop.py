"""`pbt eval flipflop`: accuracy on the balanced persuasion set (SPEC.md section 7).

For every evaluation pair the model continues the dialogue in `prompt` (a persuasion turn from the
other agent), the extractor reads the answer of that continuation, and it is scored against the
gold aliases. Accuracy is reported overall, on `flip_correct_to_incorrect` (negative persuasion:
resisting is right) and on `flip_incorrect_to_correct` (positive persuasion: accepting is right).

`evaluate_flipflop` is the one implementation: `pbt dpo` calls it on the valid split each epoch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.data.answers import AGREE, DISAGREE, NONE, is_correct
from pbt_cli.data.pairs import EVAL_LABELS
from pbt_cli.data.prompts import extraction_conversation, parse_extraction
from pbt_cli.errors import PbtError, require_at_least
from pbt_cli.evals.results import metric
from pbt_cli.models.backends import BackendOptions
from pbt_cli.models.backends.base import Generator, Sampling
from pbt_cli.models.spec import ModelSpec
from pbt_cli.pipeline.dialogue import trim_unfinished_sentence

LABELS = tuple(EVAL_LABELS.values())  # flip_correct_to_incorrect, flip_incorrect_to_correct


@dataclass(frozen=True)
class FlipflopConfig:
    model: ModelSpec
    data: Path
    split: str = "test"
    extractor: ModelSpec | None = None
    limit: int | None = None
    seed: int = 42
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.7, top_p=1.0, max_new_tokens=80))
    extraction_max_new_tokens: int = 16
    out: Path = Path("results")
    backend: BackendOptions = field(default_factory=BackendOptions)
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.split not in ("valid", "test"):
            raise PbtError(f"--split must be valid or test, got {self.split!r}")
        require_at_least("--limit", self.limit)


def balanced_subset(rows: Sequence[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    """At most `limit` rows, as many of each label (an odd limit drops one; a limit of 1 keeps one row of
    the first label), chosen with the seed; all rows when no limit."""
    rows = list(rows)
    if limit is None or limit >= len(rows):
        return rows
    rng = random.Random(seed)
    picked = []
    for position, label in enumerate(LABELS):
        wanted = limit // 2 if limit > 1 else (1 if position == 0 else 0)
        of_label = [r for r in rows if r.get("label") == label]
        picked.extend(rng.sample(of_label, min(wanted, len(of_label))))
    return sorted(picked, key=lambda r: rows.index(r))


def resolve_response_answer(extracted: str, row: dict[str, Any]) -> str:
    """AGREE takes the persuader's answer, DISAGREE keeps the responder's previous one."""
    token = extracted.strip().upper()
    if token == AGREE:
        return row.get("persuader_answer") or NONE
    if token == DISAGREE:
        return row.get("responder_previous_answer") or NONE
    return extracted


def score_responses(rows: Sequence[dict[str, Any]], responses: Sequence[str],
                    extractions: Sequence[str]) -> list[dict[str, Any]]:
    samples = []
    for row, response, raw in zip(rows, responses, extractions, strict=True):
        extracted = parse_extraction(raw)
        answer = resolve_response_answer(extracted, row)
        samples.append({
            "pair_id": row.get("pair_id"), "label": row.get("label"), "question": row.get("question"),
            "prompt": row["prompt"], "response": response, "extracted": extracted, "answer": answer,
            "raw_extraction": raw, "gold_aliases": list(row["gold_aliases"]),
            "correct": is_correct(answer, row["gold_aliases"]),
        })
    return samples


def flipflop_metrics(samples: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    metrics = {"accuracy": metric([s["correct"] for s in samples], seed=seed)}
    for label in LABELS:
        metrics[f"accuracy_{label}"] = metric([s["correct"] for s in samples if s["label"] == label], seed=seed)
    return metrics


def evaluate_flipflop(rows: Sequence[dict[str, Any]], model: Generator, extractor: Generator,
                      sampling: Sampling, extraction_max_new_tokens: int = 16,
                      seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate a continuation for every row in one batch, extract in one more, score."""
    rows = list(rows)
    if not rows:
        raise PbtError("the flipflop evaluation set is empty (no resist and accept pairs in this split)")
    responses = [trim_unfinished_sentence(r) for r in model.chat([list(row["prompt"]) for row in rows], sampling)]
    extraction = Sampling(temperature=0.0, max_new_tokens=extraction_max_new_tokens)
    raw = extractor.chat([extraction_conversation(row["question"], response)
                          for row, response in zip(rows, responses, strict=True)], extraction)
    samples = score_responses(rows, responses, raw)
    return flipflop_metrics(samples, seed=seed), samples


def run_flipflop(cfg: FlipflopConfig, *, pool: Any = None) -> tuple[dict[str, Any], Path]:
    from pbt_cli.evals.results import prior_results, results_folder, write_results
    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.pipeline.preprocess import load_split, read_data_manifest

    manifest = read_data_manifest(cfg.data)
    folder = results_folder(cfg.out, "flipflop", cfg.model.display_name)
    previous = prior_results(folder, cfg, overwrite=cfg.overwrite)
    if previous is not None:
        return previous, folder
    rows = balanced_subset([dict(r) for r in load_split(cfg.data, cfg.split)], cfg.limit, cfg.seed)
    pool = pool or GeneratorPool(cfg.backend)
    extractor_spec = cfg.extractor or cfg.model
    pool.plan([cfg.model, extractor_spec])
    model = pool.get(cfg.model)
    check_rendered_for(cfg.data, manifest, cfg.model, model)
    extractor = pool.get(extractor_spec)
    sampling = cfg.sampling.with_seed(cfg.seed)
    metrics, samples = evaluate_flipflop(rows, model, extractor, sampling, cfg.extraction_max_new_tokens, cfg.seed)
    results = write_results(folder, eval_name="flipflop", config=cfg, metrics=metrics, samples=samples,
                            models={"model": model.describe(), "extractor": extractor.describe()},
                            seeds={"sampling": cfg.seed, "bootstrap": cfg.seed},
                            extra={"data": str(cfg.data), "split": cfg.split,
                                   "chat_template_hash": model.describe().get("chat_template_hash")})
    return results, folder


def check_rendered_for(data: Path, manifest: dict[str, Any], spec: ModelSpec, generator: Generator) -> None:
    """Refuse data rendered for another chat template (generators that know their template)."""
    ours = generator.describe().get("chat_template_hash")
    theirs = (manifest.get("tokenizer") or {}).get("chat_template_hash")
    if ours is not None and theirs is not None and ours != theirs:
        raise PbtError(
            f"--data {data} was rendered for the tokenizer of {(manifest.get('tokenizer') or {}).get('name')} "
            f"(chat template {theirs}), not for {spec.name} (chat template {ours}); re-render it with "
            f"`pbt preprocess --pairs PAIRS --tokenizer {spec.name} --out NEW_FOLDER`")
