"""Tree diagnostics: what the agents and the extractor did, per agent, persona and level.

A pure function of the trees (no model, no files), so `pbt filter` stores it in its manifest, `pbt view`
shows it and `pbt diagnostics` prints it, all from the same numbers. For each turn the speaker's
extraction is read as the filter reads it (docs/method.md §2.7, §3.2):

- answered: the extractor gave an answer (not NONE, AGREE or DISAGREE);
- none: the extractor read NONE (no answer found: the model rambled, or the extraction failed);
- stance: AGREE or DISAGREE (the speaker only took a side);
- correct: the speaker's resolved answer after this turn matches a gold alias;
- agree: after this turn both agents hold the same answer (the branch stops there);
- changed: the speaker's resolved answer differs from the one it held after its own previous turn
  (out of `had_previous`, the turns where it held a real answer before).

Stop reasons count the leaves of every tree: `agreement` (a branch ended because the agents agreed)
and `max_turns` (it ran to the last level).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pbt_cli.data.answers import AGREE, DISAGREE, NONE, is_correct, is_special, same_answer
from pbt_cli.data.trees import Tree, resolve_answers

COUNTS = ("turns", "answered", "none", "stance", "correct", "agree", "changed", "had_previous")
RATES = {"answer_rate": ("answered", "turns"), "none_rate": ("none", "turns"), "accuracy": ("correct", "turns"),
         "agreement": ("agree", "turns"), "answer_changes": ("changed", "had_previous")}


def _agree(state: dict[str, str]) -> bool:
    a, b = state["A"], state["B"]
    return not is_special(a) and not is_special(b) and (a == b or same_answer(a, b))


def turn_facts(tree: Tree) -> dict[int, dict[str, Any]]:
    """Per non-root turn: the extraction's class and the speaker's correctness, agreement and change."""
    resolved = resolve_answers(tree)
    aliases = tree.question.normalized_aliases
    facts: dict[int, dict[str, Any]] = {}
    for turn in tree.depth_first():
        if turn.is_root or turn.agent is None:
            continue
        extracted = (turn.answer.get(turn.agent) or NONE).strip()
        upper = extracted.upper()
        kind = "none" if upper == NONE or not extracted else "stance" if upper in (AGREE, DISAGREE) else "answered"
        state = resolved[turn.id]
        previous = None  # the speaker's answer after its own previous turn on this path
        parent = tree.turn(turn.parent) if turn.parent is not None else None
        grandparent = tree.turn(parent.parent) if parent is not None and parent.parent is not None else None
        if grandparent is not None and not grandparent.is_root:
            previous = resolved[grandparent.id][turn.agent]
        had_previous = previous is not None and not is_special(previous)
        own = state[turn.agent]
        facts[turn.id] = {
            "extraction": kind, "correct": is_correct(own, aliases), "agree": _agree(state),
            "had_previous": had_previous,
            "changed": had_previous and not is_special(own) and not (own == previous or same_answer(own, previous)),
            "stop": None if turn.children else ("max_turns" if turn.level >= tree.max_turns - 1 else "agreement"),
        }
    return facts


def tree_diagnostics(trees: Iterable[Tree]) -> dict[str, Any]:
    """Counts and rates per (agent, persona, level), per level over personas, and the stop reasons."""
    groups: dict[tuple[str, str, int], Counter] = {}
    stops: dict[int, Counter] = {}
    n_trees = 0
    for tree in trees:
        n_trees += 1
        facts = turn_facts(tree)
        for turn in tree.turns:
            fact = facts.get(turn.id)
            if fact is None:
                continue
            counter = groups.setdefault((turn.agent or "?", turn.persona or "?", turn.level), Counter())
            counter["turns"] += 1
            counter[fact["extraction"]] += 1
            for name in ("correct", "agree", "changed", "had_previous"):
                counter[name] += int(fact[name])
            if fact["stop"]:
                stops.setdefault(turn.level, Counter())[fact["stop"]] += 1

    def row(key: dict[str, Any], counter: Counter) -> dict[str, Any]:
        entry = {**key, **{name: counter[name] for name in COUNTS}}
        for rate, (top, bottom) in RATES.items():
            entry[rate] = round(counter[top] / counter[bottom], 4) if counter[bottom] else None
        return entry

    rows = [row({"agent": agent, "persona": persona, "level": level}, counter)
            for (agent, persona, level), counter in sorted(groups.items(), key=lambda item: (item[0][2], item[0][1]))]
    by_level: dict[int, Counter] = {}
    for (_, _, level), counter in groups.items():
        by_level.setdefault(level, Counter()).update(counter)
    total: Counter = Counter()
    for counter in groups.values():
        total.update(counter)
    return {
        "trees": n_trees,
        "by_persona_level": rows,
        "by_level": [row({"level": level}, counter) for level, counter in sorted(by_level.items())],
        "all": row({}, total),
        "stops": {str(level): dict(sorted(counter.items())) for level, counter in sorted(stops.items())},
        "stop_totals": dict(sorted(sum(stops.values(), Counter()).items())),
    }


def diagnostics_rows(diagnostics: dict[str, Any]) -> list[list[str]]:
    """The table `pbt diagnostics` prints: one row per agent, persona and level, then the totals."""

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    table = []
    for entry in [*diagnostics["by_persona_level"], {**diagnostics["all"], "agent": "all", "persona": "", "level": ""}]:
        table.append([str(entry["agent"]), str(entry["persona"]), str(entry["level"]), str(entry["turns"]),
                      rate(entry["answer_rate"]), rate(entry["none_rate"]), rate(entry["accuracy"]),
                      rate(entry["agreement"]), rate(entry["answer_changes"])])
    return table


DIAGNOSTICS_COLUMNS = ("agent", "persona", "level", "turns", "answered", "NONE", "accuracy", "agree", "changed")
