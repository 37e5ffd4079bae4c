"""What a run will ask of its models, before it runs: requests and generated tokens per item, per stage.

Pure arithmetic on a stage's configuration (no model, no data beyond counting items), shared by the
progress lines (the expected total that an ETA divides) and by `--dry-run` (the budget printed before
a long run). Figures are upper bounds where the work can end early (a tree whose agents agree, a team
dialogue that settles, a Farm dialogue whose model is persuaded or wrong at first); `exact` says which.
Generated tokens count `max_new_tokens` per request, the most a request can produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    """Per item (a tree, a question, a pair, a Farm question x strategy): requests and generated tokens."""

    requests: int
    tokens: int
    exact: bool  # False: an upper bound (the work may end early)
    unit: str = "item"

    def times(self, items: int) -> tuple[int, int]:
        return self.requests * items, self.tokens * items


def generate_budget(max_turns: int, split: str, max_new_tokens: int, extraction_max_new_tokens: int) -> Budget:
    """One tree: every turn is the agent's reply and its extraction (docs/method.md §2.3, §2.7)."""
    from pbt_cli.pipeline.dialogue import turns_below

    turns = turns_below(-1, max_turns, split)
    return Budget(2 * turns, turns * (max_new_tokens + extraction_max_new_tokens), exact=False, unit="tree")


def flipflop_budget(max_new_tokens: int, extraction_max_new_tokens: int) -> Budget:
    """One pair's prompt: a reply and its extraction."""
    return Budget(2, max_new_tokens + extraction_max_new_tokens, exact=True, unit="pair")


def ays_budget(max_new_tokens: int, extraction_max_new_tokens: int) -> Budget:
    """One question: three replies (answer, 'are you sure?', final answer) and two extractions."""
    return Budget(5, 3 * max_new_tokens + 2 * extraction_max_new_tokens, exact=True, unit="question")


def team_budget(max_turns: int, orders: int, max_new_tokens: int, extraction_max_new_tokens: int) -> Budget:
    """One question: a dialogue of up to `max_turns` turns per speaking order, each turn extracted."""
    turns = max_turns * orders
    return Budget(2 * turns, turns * (max_new_tokens + extraction_max_new_tokens), exact=False, unit="question")


def farm_budget(turns: int, format_retries: int, ask_max_new_tokens: int, reply_max_new_tokens: int) -> Budget:
    """One question x strategy: the ask (retried on an unreadable reply), then per persuasion turn a reply
    and a probe (retried likewise); a dialogue stops at the first wrong probe."""
    asks = format_retries + 1
    requests = asks + turns * (1 + asks)
    tokens = asks * ask_max_new_tokens + turns * (reply_max_new_tokens + asks * ask_max_new_tokens)
    return Budget(requests, tokens, exact=False, unit="question x strategy")


def budget_summary(stage: str, budget: Budget, items: int | None) -> dict[str, Any]:
    """The figures a dry run prints (and `--json` could carry)."""
    summary: dict[str, Any] = {"stage": stage, "unit": budget.unit, "items": items,
                               "requests_per_item": budget.requests, "max_new_tokens_per_item": budget.tokens,
                               "exact": budget.exact}
    if items is not None:
        requests, tokens = budget.times(items)
        summary.update(requests=requests, max_new_tokens=tokens)
    return summary


def budget_line(summary: dict[str, Any]) -> str:
    bound = "" if summary["exact"] else "at most "
    per = (f"{summary['requests_per_item']:,} requests and {summary['max_new_tokens_per_item']:,} generated tokens "
           f"per {summary['unit']}")
    if summary.get("items") is None:
        return f"budget: {bound}{per} (the number of items is known only when the data is read)"
    return (f"budget: {summary['items']:,} {summary['unit']}s -> {bound}{summary['requests']:,} requests, "
            f"{bound}{summary['max_new_tokens']:,} generated tokens ({per})")
