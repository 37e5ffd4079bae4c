"""Benchmark: pbt's own orchestration, with no model time at all: turns per second of tree generation and
of each evaluation, with the scripted backend answering at once.

    python benchmarks/orchestration.py --trees 200 --questions 400
    python benchmarks/orchestration.py --profile generate      # where the time goes, cProfile top 15

A GPU serving an 8B model at tens of thousands of tokens per second answers a few hundred 80-token
turns per second; pbt's own work per turn (views, prompts, seeds, extraction parsing, resolution,
tree records) must stay well below that. A turn here is one agent reply together with its answer
extraction (and, for trees, its share of the JSON record `pbt generate` writes); flipflop has one per pair, ays three per question (two read), team one per dialogue turn.
The scripted agents never agree (A names London, B Paris), so every tree has its full 21 turns and every
team dialogue its 4.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

GOAL_TURNS_PER_S = 2000
ANSWER = re.compile(r"answer is (\w+)")


def agent(name: str) -> Callable[[list[dict[str, str]], Any], str]:
    def reply(conversation: list[dict[str, str]], sampling: Any) -> str:
        return f"I am quite sure the answer is {name}, because it is well known. Think again."

    return reply


def extractor_reply(conversation: list[dict[str, str]], sampling: Any) -> str:
    """What follows the "Final answer:" prefix: the answer the read reply names."""
    found = ANSWER.search(conversation[-2]["content"])
    return f" {found.group(1)}" if found else " NONE"


def flipflop_rows(count: int) -> list[dict[str, Any]]:
    from pbt_cli.data.prompts import question_prompt

    rows = []
    for i in range(count):
        label = "flip_correct_to_incorrect" if i % 2 == 0 else "flip_incorrect_to_correct"
        previous, persuader = ("Paris", "London") if i % 2 == 0 else ("London", "Paris")
        question = f"What is the capital of France? ({i})"
        rows.append({"pair_id": f"p{i}", "label": label, "question": question, "gold_aliases": ["paris"],
                     "persuader_answer": persuader, "responder_previous_answer": previous,
                     "prompt": [{"role": "user", "content": question_prompt(question, "standard")},
                                {"role": "assistant", "content": f"The answer is {previous}."},
                                {"role": "user", "content": f"No, the answer is {persuader}. Think again."}]})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", type=int, default=200, help="training trees (21 turns each)")
    parser.add_argument("--questions", type=int, default=400, help="questions for ays and team, pairs for flipflop")
    parser.add_argument("--profile", choices=("generate", "flipflop", "ays", "team"),
                        help="print cProfile's top functions for one measurement")
    args = parser.parse_args(argv)

    from pbt_cli.data.questions import Question
    from pbt_cli.evals.ays import run_ays_dialogues
    from pbt_cli.evals.flipflop import flipflop_samples
    from pbt_cli.evals.team import TeamConfig, run_team_dialogues
    from pbt_cli.models.backends.base import Sampling
    from pbt_cli.models.backends.scripted import ScriptedGenerator
    from pbt_cli.models.spec import ModelSpec
    from pbt_cli.pipeline.dialogue import DialogueRoles, DialogueSettings, expand_trees

    def questions(count: int) -> list[Question]:
        return [Question(question_id=f"q{i}", question=f"What is the capital of France? ({i})", answer_value="Paris",
                         aliases=("Paris",), normalized_aliases=("paris",)) for i in range(count)]

    def london() -> ScriptedGenerator:
        return ScriptedGenerator(agent("London"), name="london")

    def paris() -> ScriptedGenerator:
        return ScriptedGenerator(agent("Paris"), name="paris")

    def reader() -> ScriptedGenerator:
        return ScriptedGenerator(extractor_reply, name="reader")

    def generate() -> int:
        roles = DialogueRoles(agents={"A": london(), "B": paris()}, extractor=reader())
        trees = expand_trees(questions(args.trees), roles, DialogueSettings())
        for tree in trees:  # what `pbt generate` writes for each tree
            json.dumps(tree.to_record())
        return sum(len(t.turns) - 1 for t in trees)

    def flipflop() -> int:
        return len(flipflop_samples(flipflop_rows(args.questions), paris(), reader(),
                                    Sampling(temperature=0.7, max_new_tokens=80, min_new_tokens=8)))

    def ays() -> int:
        return 3 * len(run_ays_dialogues(questions(args.questions), paris(), reader()))

    def team() -> int:
        cfg = TeamConfig(model_x=ModelSpec("x"), model_y=ModelSpec("y"))
        samples = run_team_dialogues(cfg, questions(args.questions), london(), paris(), reader())
        return sum(len(s["turns"]) for s in samples)

    stages: dict[str, Callable[[], int]] = {"generate": generate, "flipflop": flipflop, "ays": ays, "team": team}
    rows: dict[str, dict[str, float]] = {}
    profile_text = ""
    for name, run in stages.items():
        run_profiled = args.profile == name
        profiler = cProfile.Profile() if run_profiled else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        turns = run()
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        rows[name] = {"turns": turns, "seconds": seconds, "turns_per_s": turns / seconds}
        if profiler:
            buffer = io.StringIO()
            pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats(25)
            profile_text = buffer.getvalue()

    summary = {"benchmark": "orchestration", "trees": args.trees, "questions": args.questions, "rows": rows,
               "goal_turns_per_s": GOAL_TURNS_PER_S, "profiled": args.profile,
               "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    table = Table(title="pbt's orchestration, scripted backend (no model time)")
    for column in ("stage", "turns", "seconds", "turns/s", f"goal {GOAL_TURNS_PER_S}/s"):
        table.add_column(column, justify="right")
    for name, row in rows.items():
        table.add_row(name, str(row["turns"]), f"{row['seconds']:.2f}", f"{row['turns_per_s']:.0f}",
                      "met" if row["turns_per_s"] >= GOAL_TURNS_PER_S else "below")
    console = Console(stderr=True)
    console.print(table)
    if profile_text:
        console.print(profile_text, markup=False, highlight=False)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
