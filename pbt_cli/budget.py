"""What a run will ask of its models, before it runs: requests and generated tokens per item, per stage.

Pure arithmetic on a stage's configuration (no model, no data beyond counting items), shared by the
progress lines (the expected total that an ETA divides) and by `--dry-run` (the budget printed before
a long run). Figures are upper bounds where the work can end early (a tree whose agents agree, a team
dialogue that settles, a Farm dialogue whose model is persuaded or wrong at first); `exact` says which.
Generated tokens count `max_new_tokens` per request, the most a request can produce.

`--estimate` adds a wall-clock estimate: `time_requests` sends a few real requests of each kind (replies,
extractions) at once, as one batch, and the whole run's time is the budget's requests of each kind at
the measured seconds per request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REPLY = "reply"  # an agent's or the evaluated model's reply
EXTRACTION = "extraction"  # the extractor reading an answer
ASK = "ask"  # Farm's short multiple-choice and yes/no answers


@dataclass(frozen=True)
class Part:
    kind: str  # REPLY, EXTRACTION or ASK
    requests: int  # per item
    max_new_tokens: int  # per request


@dataclass(frozen=True)
class Budget:
    """Per item (a tree, a question, a pair, a Farm question x strategy): the requests of each kind."""

    parts: tuple[Part, ...]
    exact: bool  # False: an upper bound (the work may end early)
    unit: str = "item"

    @property
    def requests(self) -> int:
        return sum(part.requests for part in self.parts)

    @property
    def tokens(self) -> int:
        return sum(part.requests * part.max_new_tokens for part in self.parts)

    def times(self, items: int) -> tuple[int, int]:
        return self.requests * items, self.tokens * items


def generate_budget(max_turns: int, split: str, max_new_tokens: int, extraction_max_new_tokens: int) -> Budget:
    """One tree: every turn is the agent's reply and its extraction (docs/method.md §2.3, §2.7)."""
    from pbt_cli.pipeline.dialogue import turns_below

    turns = turns_below(-1, max_turns, split)
    return Budget((Part(REPLY, turns, max_new_tokens), Part(EXTRACTION, turns, extraction_max_new_tokens)),
                  exact=False, unit="tree")


def flipflop_budget(max_new_tokens: int, extraction_max_new_tokens: int) -> Budget:
    """One pair's prompt: a reply and its extraction."""
    return Budget((Part(REPLY, 1, max_new_tokens), Part(EXTRACTION, 1, extraction_max_new_tokens)), exact=True,
                  unit="pair")


def ays_budget(max_new_tokens: int, extraction_max_new_tokens: int) -> Budget:
    """One question: three replies (answer, 'are you sure?', final answer) and two extractions."""
    return Budget((Part(REPLY, 3, max_new_tokens), Part(EXTRACTION, 2, extraction_max_new_tokens)), exact=True,
                  unit="question")


def team_budget(max_turns: int, orders: int, max_new_tokens: int, extraction_max_new_tokens: int) -> Budget:
    """One question: a dialogue of up to `max_turns` turns per speaking order, each turn extracted."""
    turns = max_turns * orders
    return Budget((Part(REPLY, turns, max_new_tokens), Part(EXTRACTION, turns, extraction_max_new_tokens)),
                  exact=False, unit="question")


def farm_budget(turns: int, format_retries: int, ask_max_new_tokens: int, reply_max_new_tokens: int) -> Budget:
    """One question x strategy: the ask (retried on an unreadable reply), then per persuasion turn a reply
    and a probe (retried likewise); a dialogue stops at the first wrong probe."""
    asks = format_retries + 1
    return Budget((Part(ASK, asks + turns * asks, ask_max_new_tokens), Part(REPLY, turns, reply_max_new_tokens)),
                  exact=False, unit="dialogue")


def budget_summary(stage: str, budget: Budget, items: int | None) -> dict[str, Any]:
    """The figures a dry run prints."""
    summary: dict[str, Any] = {"stage": stage, "unit": budget.unit, "items": items,
                               "requests_per_item": budget.requests, "max_new_tokens_per_item": budget.tokens,
                               "exact": budget.exact,
                               "parts": {part.kind: {"requests_per_item": part.requests,
                                                     "max_new_tokens": part.max_new_tokens} for part in budget.parts}}
    if items is not None:
        requests, tokens = budget.times(items)
        summary.update(requests=requests, max_new_tokens=tokens)
    return summary


def budget_line(summary: dict[str, Any]) -> str:
    bound = "" if summary["exact"] else "at most "
    per = (f"{summary['requests_per_item']:,} requests and {summary['max_new_tokens_per_item']:,} generated tokens "
           f"per {summary['unit']}")
    if summary.get("items") is None:
        return f"budget: {bound}{per} (the number of items is known only when the data is read; give --limit)"
    return (f"budget: {summary['items']:,} {summary['unit']}s -> {bound}{summary['requests']:,} requests, "
            f"{bound}{summary['max_new_tokens']:,} generated tokens ({per})")


# --- a wall-clock estimate from a few real requests -------------------------------------------------


def time_requests(generator: Any, conversations: Sequence[Any], sampling: Any) -> tuple[float, list[str]]:
    """Seconds per request of one batch of `conversations` (after a one-request warm-up), and the replies."""
    from dataclasses import replace

    generator.chat([conversations[0]], replace(sampling, max_new_tokens=1, min_new_tokens=0))
    started = time.perf_counter()
    replies = generator.chat(list(conversations), sampling)
    return (time.perf_counter() - started) / len(conversations), list(replies)


def estimate_seconds(budget: Budget, items: int, seconds_per_request: dict[str, float]) -> float:
    """The whole run's wall-clock time: each kind's requests at its measured seconds per request."""
    return sum(part.requests * items * seconds_per_request[part.kind] for part in budget.parts)


def _hours(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def estimate_line(seconds: float, measured: dict[str, float], sample: int, exact: bool) -> str:
    per = ", ".join(f"{kind} {value:.2f} s" for kind, value in measured.items())
    bound = "" if exact else "at most "
    return (f"estimate: {bound}{_hours(seconds)} for the whole run (measured per request, in a batch of "
            f"{sample}: {per}; the run's batches are larger and its later prompts longer, so treat it as a rough "
            "figure)")
