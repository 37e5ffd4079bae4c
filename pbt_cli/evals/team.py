"""`pbt eval team`: two models answer together in a `standard` dialogue, in both speaking orders.

The dialogue is `pbt generate`'s machinery with `--split eval` (one path, the standard persona),
greedy with at least 8 new tokens, `max_turns` 4 and both-first by default. Order "xy" has model X
speak first (agent A) and Y second; "yx" swaps them. Per order: each model's accuracy at its first
answer and at the end, team accuracy (mean of the two final correctness values per question), how
often the final answers agree; and the order gap, team accuracy of xy minus yx (docs/method.md §6.4).
The answers are read by X's base unless `--extractor-model` names another reader.

Metrics are computed from the stored samples alone, so `--rescore samples.jsonl` reproduces them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.budget import team_budget
from pbt_cli.data.answers import NONE, is_correct, same_answer
from pbt_cli.data.questions import load_questions, select_questions
from pbt_cli.data.trees import answer_as_heard, is_blind_opening, resolve_step
from pbt_cli.errors import PbtError, require_at_least
from pbt_cli.evals.results import extractor_identity, metric, model_paths, open_eval, paired_difference
from pbt_cli.launcher import Shard
from pbt_cli.models.backends import BackendOptions, GeneratorPool
from pbt_cli.models.backends.base import Generator, Sampling
from pbt_cli.models.spec import ModelSpec
from pbt_cli.pipeline.dialogue import DialogueRoles, DialogueSettings, expand_trees
from pbt_cli.progress import NULL_PROGRESS, ProgressSink
from pbt_cli.tracking import TrackingOptions

ORDERS = ("xy", "yx")


@dataclass(frozen=True)
class TeamConfig:
    model_x: ModelSpec
    model_y: ModelSpec
    extractor: ModelSpec | None = None  # default: model X's base, the same extractor for both orders
    questions: str = "embedded:validation"
    limit: int | None = 1000
    seed: int = 42
    max_turns: int = 4
    both_first: bool = True
    orders: tuple[str, ...] = ORDERS
    max_new_tokens: int = 80
    min_new_tokens: int = 8
    extraction_max_new_tokens: int = 16
    out: Path = Path("results")
    backend: BackendOptions = field(default_factory=BackendOptions)
    overwrite: bool = False
    tracking: TrackingOptions = field(default_factory=TrackingOptions)
    shard: Shard = field(default_factory=Shard)  # which questions this process runs (pbt_cli/launcher.py)

    def __post_init__(self) -> None:
        require_at_least("--limit", self.limit)
        require_at_least("--max-turns", self.max_turns, 2)
        require_at_least("--extraction-max-new-tokens", self.extraction_max_new_tokens)
        self.sampling()  # checks the ranges before any model loads
        bad = [o for o in self.orders if o not in ORDERS]
        if bad or not self.orders:
            raise PbtError(f"--orders takes xy, yx or both, got {', '.join(bad) or 'nothing'}")

    @property
    def name(self) -> str:
        return f"{self.model_x.display_name}__{self.model_y.display_name}"

    def sampling(self) -> Sampling:
        return Sampling(temperature=0.0, max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens)


def dialogue_samples(trees: Sequence[Any], order: str) -> list[dict[str, Any]]:
    """One sample per tree (a single path): the transcript with each turn's extracted answer."""
    roles = {"A": order[0], "B": order[1]}  # which of x / y speaks as agent A and B
    samples = []
    for tree in trees:
        turns = sorted((t for t in tree.turns if not t.is_root), key=lambda t: t.level)
        samples.append({
            "order": order, "question_id": tree.question.question_id, "question": tree.question.question,
            "both_first": tree.both_first,
            "gold_aliases": list(tree.question.normalized_aliases), "roles": roles,
            "turns": [{"level": t.level, "agent": t.agent, "model": roles[t.agent], "text": t.text,
                       "extracted": t.answer.get(t.agent), "raw_extraction": t.raw_extraction} for t in turns],
        })
    return samples


def score_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """First and final answers of x and y, their correctness, team correctness and agreement."""
    state = {"A": NONE, "B": NONE}
    first: dict[str, str] = {}
    both_first = sample.get("both_first", True)
    for turn in sample["turns"]:
        heard = answer_as_heard(turn["extracted"], blind=is_blind_opening(turn["level"], both_first))
        state = resolve_step(state, turn["agent"], heard)
        first.setdefault(turn["model"], state[turn["agent"]])
    roles = sample["roles"]
    final = {roles[agent]: state[agent] for agent in ("A", "B")}
    for model in ("x", "y"):
        first.setdefault(model, NONE)
    aliases = sample["gold_aliases"]
    correct_first = {m: is_correct(first[m], aliases) for m in ("x", "y")}
    correct_final = {m: is_correct(final[m], aliases) for m in ("x", "y")}
    return {"first": first, "final": final, "correct_first": correct_first, "correct_final": correct_final,
            "team_correct": (int(correct_final["x"]) + int(correct_final["y"])) / 2,
            "agree": same_answer(final["x"], final["y"])}


def team_metrics(samples: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    scored = [(s, score_sample(s)) for s in samples]
    metrics: dict[str, Any] = {}
    team_by_order: dict[str, dict[str, float]] = {}
    for order in ORDERS:
        of_order = [(s, r) for s, r in scored if s["order"] == order]
        if not of_order:
            continue
        metrics[order] = {
            "x_accuracy_first": metric([r["correct_first"]["x"] for _, r in of_order], seed=seed),
            "y_accuracy_first": metric([r["correct_first"]["y"] for _, r in of_order], seed=seed),
            "x_accuracy_final": metric([r["correct_final"]["x"] for _, r in of_order], seed=seed),
            "y_accuracy_final": metric([r["correct_final"]["y"] for _, r in of_order], seed=seed),
            "team_accuracy": metric([r["team_correct"] for _, r in of_order], seed=seed),
            "agreement": metric([r["agree"] for _, r in of_order], seed=seed),
        }
        team_by_order[order] = {s["question_id"]: r["team_correct"] for s, r in of_order}
    if all(order in team_by_order for order in ORDERS):
        common = sorted(set(team_by_order["xy"]) & set(team_by_order["yx"]))
        xy = [team_by_order["xy"][q] for q in common]
        yx = [team_by_order["yx"][q] for q in common]
        metrics["order_gap"] = paired_difference(xy, yx, seed=seed)
        gap = metrics["order_gap"]["value"]
        metrics["abs_order_gap"] = None if gap is None else abs(gap)
    return metrics


def run_team_dialogues(cfg: TeamConfig, questions: Sequence[Any], x: Generator, y: Generator, extractor: Generator,
                       progress: ProgressSink = NULL_PROGRESS) -> list[dict[str, Any]]:
    """Both speaking orders for a chunk of questions; one sample per question and order, question by question
    (each question's samples together, in `cfg.orders`' order: shards merge item by item)."""
    settings = DialogueSettings(max_turns=cfg.max_turns, both_first=cfg.both_first, split="eval",
                                sampling=cfg.sampling(),
                                extraction=Sampling(temperature=0.0, max_new_tokens=cfg.extraction_max_new_tokens),
                                seed=cfg.seed)
    by_name = {"x": x, "y": y}
    samples = []
    for order in cfg.orders:
        roles = DialogueRoles(agents={"A": by_name[order[0]], "B": by_name[order[1]]}, extractor=extractor)
        trees = expand_trees(questions, roles, settings, progress=progress)
        samples.extend(dialogue_samples(trees, order))
    for sample in samples:
        sample.update(score_sample(sample))
    per_order = len(questions)
    return [samples[position * per_order + index] for index in range(per_order)
            for position in range(len(cfg.orders))]


def run_team(cfg: TeamConfig, *, pool: GeneratorPool | None = None,
             progress: ProgressSink = NULL_PROGRESS) -> tuple[dict[str, Any], Path]:
    inputs = [cfg.questions, *model_paths(cfg.model_x, cfg.model_y, cfg.extractor)]
    with open_eval(cfg.out, "team", cfg.name, cfg, inputs=inputs, overwrite=cfg.overwrite, shard=cfg.shard,
                   metrics_of=lambda samples: team_metrics(samples, cfg.seed)) as run:
        if run.reused:
            return run.reused, run.path
        questions = select_questions(load_questions(cfg.questions), limit=cfg.limit, seed=cfg.seed)
        pool = pool or GeneratorPool(cfg.backend)
        pool.plan([cfg.model_x, cfg.model_y] + ([cfg.extractor] if cfg.extractor else []))
        x, y = pool.get(cfg.model_x), pool.get(cfg.model_y)
        extractor = pool.get(cfg.extractor) if cfg.extractor else pool.base_of(cfg.model_x)
        budget = team_budget(cfg.max_turns, len(cfg.orders), cfg.max_new_tokens, cfg.extraction_max_new_tokens)
        for chunk in run.chunks(questions, samples_per_item=len(cfg.orders), progress=progress, budget=budget):
            run.append(run_team_dialogues(cfg, chunk, x, y, extractor))
        results = run.finish(models={"x": x.describe(), "y": y.describe(), "extractor": extractor.describe()},
                             extractor=extractor_identity(extractor),
                             seeds={"questions": cfg.seed, "bootstrap": cfg.seed},
                             extra={"questions": cfg.questions, "orders": list(cfg.orders),
                                    "chat_template_hash": {"x": x.describe().get("chat_template_hash"),
                                                           "y": y.describe().get("chat_template_hash")}})
        run.track(results)
        return results, run.path


def rescore(samples_path: Path) -> dict[str, Any]:
    """Team metrics recomputed from a stored samples.jsonl, without generating anything.

    The bootstrap seed is taken from the results.json beside the samples, so the intervals match too.
    """
    import json

    from pbt_cli.evals.results import read_samples

    samples = read_samples(samples_path)
    folder = samples_path if samples_path.is_dir() else samples_path.parent
    seed = 42
    if (folder / "results.json").is_file():
        seed = json.loads((folder / "results.json").read_text()).get("seeds", {}).get("bootstrap", seed)
    if not samples or "turns" not in samples[0]:
        raise PbtError(f"{samples_path} is not a team samples file (no 'turns'); give <out>/team/<x__y>/samples.jsonl")
    return team_metrics(samples, seed)

