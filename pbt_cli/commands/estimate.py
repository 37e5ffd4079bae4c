"""What `--dry-run` adds for generate and the evaluations: the request and token budget of the whole run
(pbt_cli/budget.py) and, with `--estimate`, a wall-clock estimate from a few real requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pbt_cli import console
from pbt_cli.budget import (
    EXTRACTION,
    REPLY,
    Budget,
    budget_line,
    budget_summary,
    estimate_line,
    estimate_seconds,
)

SAMPLE_REQUESTS = 8  # requests timed per kind (one batch)


def local_source(source: str) -> bool:
    """A question source that is read without the network (embedded, or a file)."""
    source = source.strip()
    return source.startswith("embedded:") or Path(source).expanduser().is_file()


def count_questions(source: str, limit: int | None, seed: int, shard_idx: int = 0, num_shards: int = 1) -> int | None:
    """Questions the run will ask; for a hub source (not read in a dry run) at most --limit."""
    from pbt_cli.data.questions import load_questions, select_questions

    if local_source(source):
        return len(select_questions(load_questions(source), limit=limit, seed=seed, shard_idx=shard_idx,
                                    num_shards=num_shards))
    return None if limit is None else -(-limit // num_shards)


def show_budget(stage: str, budget: Budget, items: int | None) -> dict[str, Any]:
    summary = budget_summary(stage, budget, items)
    console.stderr.print(budget_line(summary), highlight=False, markup=False)
    return summary


def question_conversations(source: str, limit: int | None, seed: int, persona: str) -> list[Any]:
    from pbt_cli.data.prompts import question_prompt
    from pbt_cli.data.questions import load_questions, select_questions

    questions = select_questions(load_questions(source), limit=limit, seed=seed)[:SAMPLE_REQUESTS]
    return [(q.question, [{"role": "user", "content": question_prompt(q.question, persona)}]) for q in questions]


def estimate_dialogues(backend: Any, speaker: Any, extractor: Any, asked: list[Any], reply_sampling: Any,
                       extraction_max_new_tokens: int, budget: Budget, items: int | None) -> None:
    """Time a batch of first replies and their extractions; print the whole run's estimate."""
    from pbt_cli.budget import time_requests
    from pbt_cli.data.prompts import extraction_conversation
    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.models.backends.base import Sampling

    if not asked or not items:
        console.stderr.print("[yellow]note[/]: no estimate: " + ("no questions to time" if not asked else
                             "the number of items is unknown (give --limit)"), highlight=False)
        return
    pool = GeneratorPool(backend)
    pool.plan([spec for spec in (speaker, extractor) if spec is not None])
    model = pool.get(speaker)
    reader = pool.get(extractor) if extractor is not None else pool.base_of(speaker)
    reply_seconds, replies = time_requests(model, [conversation for _, conversation in asked], reply_sampling)
    extraction = Sampling(temperature=0.0, max_new_tokens=extraction_max_new_tokens)
    extraction_seconds, _ = time_requests(
        reader, [extraction_conversation(question, reply) for (question, _), reply in zip(asked, replies, strict=True)],
        extraction)
    measured = {REPLY: reply_seconds, EXTRACTION: extraction_seconds}
    console.stderr.print(estimate_line(estimate_seconds(budget, items, measured), measured, len(asked), budget.exact),
                         highlight=False, markup=False)


def estimate_farm(backend: Any, spec: Any, cfg: Any, items: int, budget: Budget) -> None:
    """Time a batch of Farm asks and of persuasion replies (same opening conversations, the reply budget)."""
    from pbt_cli.budget import ASK, time_requests
    from pbt_cli.data.farm import load_farm
    from pbt_cli.data.prompts import farm_question_prompt
    from pbt_cli.evals.farm import accepts_system_role, opening
    from pbt_cli.models.backends import GeneratorPool

    questions = [q for qs in load_farm(cfg.farm, cfg.subsets, cfg.limit).values() for q in qs][:SAMPLE_REQUESTS]
    if not questions or not items:
        console.stderr.print("[yellow]note[/]: no estimate: no Farm questions to time", highlight=False)
        return
    pool = GeneratorPool(backend)
    pool.plan([spec])
    model = pool.get(spec)
    system_role = accepts_system_role(model)
    conversations = [opening(farm_question_prompt(q.question, q.option_texts), system_role) for q in questions]
    ask_seconds, _ = time_requests(model, conversations, cfg.ask_sampling(False))
    reply_seconds, _ = time_requests(model, conversations, cfg.reply_sampling())
    measured = {ASK: ask_seconds, REPLY: reply_seconds}
    console.stderr.print(estimate_line(estimate_seconds(budget, items, measured), measured, len(questions),
                                       budget.exact), highlight=False, markup=False)


def flipflop_rows(cfg: Any) -> list[dict[str, Any]]:
    """The pairs `pbt eval flipflop` would evaluate (the same balanced subset)."""
    from pbt_cli.evals.flipflop import balanced_subset
    from pbt_cli.pipeline.preprocess import load_split

    return balanced_subset([dict(r) for r in load_split(cfg.data, cfg.split)], cfg.limit, cfg.seed)
