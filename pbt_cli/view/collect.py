"""What `pbt view` shows, read from pbt's files into plain JSON-able data (no HTML here).

PATH may be a trees file or folder (`pbt generate`), a pairs folder or split file (`pbt filter`), a
dataset folder (`pbt preprocess`), an evaluation's folder or samples.jsonl (`pbt eval ...`), or a
whole run folder holding any of these (found by their manifests). Trees are scored as the filter
scores them (docs/method.md §3): each turn gets the speaker's resolved answer, its correctness and its
branch score (correct answers in its subtree); the pairs are marked on their sibling turns, from the
pairs folder when there is one, else by the filter's rule at margin 0.5 (marked `computed`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.data.jsonl import read_jsonl
from pbt_cli.data.pairs import SPLITS
from pbt_cli.data.trees import Tree, read_trees, resolve_answers
from pbt_cli.errors import PbtError

DEFAULT_MARGIN = 0.5
EVALS = ("flipflop", "ays", "team", "farm")


@dataclass
class ViewData:
    sources: list[str] = field(default_factory=list)
    trees: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"sources": self.sources, "trees": self.trees, "pairs": self.pairs, "samples": self.samples,
                "diagnostics": self.diagnostics, "notes": self.notes}


def margin_of(scores: dict[str, Any]) -> float | None:
    high, low = scores.get("chosen"), scores.get("rejected")
    if not isinstance(high, int | float) or not isinstance(low, int | float) or not high:
        return None
    return round((high - low) / high, 3)


# --- trees ---------------------------------------------------------------------------------------


def tree_view(tree: Tree, pairs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One tree with per-turn facts and its pairs; `pairs` None: computed by the filter's rule."""
    from pbt_cli.pipeline.diagnostics import turn_facts
    from pbt_cli.pipeline.filter import score_tree, sibling_pairs, unify_answers

    scored = score_tree(tree, unify_answers(tree, resolve_answers(tree)))
    facts = turn_facts(tree)
    if pairs is None:
        pairs = [{"chosen": c.chosen.id, "rejected": c.rejected.id, "kind": c.kind or "none",
                  "margin": margin_of({"chosen": scored.subtree[c.chosen.id], "rejected": scored.subtree[c.rejected.id]}),
                  "split": None, "computed": True}
                 for c in sibling_pairs(scored, DEFAULT_MARGIN, Counter())]
    turns = []
    for turn in tree.turns:
        fact = facts.get(turn.id, {})
        speaker = turn.agent
        turns.append({
            "id": turn.id, "parent": turn.parent, "level": turn.level, "agent": speaker, "persona": turn.persona,
            "text": turn.text, "extracted": turn.answer.get(speaker) if speaker else None,
            "answer": scored.answers[turn.id][speaker] if speaker else None,
            "correct": scored.correct[turn.id][speaker] if speaker else None,
            "own": scored.own.get(turn.id), "branch": scored.subtree.get(turn.id),
            "changed": fact.get("changed", False), "agree": fact.get("agree", False), "stop": fact.get("stop"),
            "children": list(turn.children),
        })
    return {"id": tree.tree_id, "question": tree.question.question, "gold": list(tree.question.normalized_aliases),
            "split": tree.split, "max_turns": tree.max_turns, "turns": turns, "pairs": pairs}


def pair_view(record: dict[str, Any]) -> dict[str, Any]:
    def text(messages: Any) -> str:
        if isinstance(messages, list):
            return "\n\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        return str(messages or "")

    prompt = record.get("prompt")
    scores = record.get("scores") or {}
    return {"id": record.get("pair_id"), "tree": record.get("tree_id"), "split": record.get("split"),
            "kind": record.get("kind") or record.get("label") or "none", "level": record.get("level"),
            "responder": record.get("responder"), "question": record.get("question") or "",
            "prompt": prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt or "")}],
            # an SFT dataset's train rows hold the preferred response as `completion`
            "chosen": text(record.get("chosen") or record.get("completion")), "rejected": text(record.get("rejected")),
            "answers": record.get("answers") or {}, "scores": scores, "margin": margin_of(scores),
            "personas": record.get("personas") or {}, "turn_ids": record.get("turn_ids") or {},
            "gold": record.get("gold_aliases") or []}


# --- evaluation samples --------------------------------------------------------------------------


def sample_view(kind: str, record: dict[str, Any], model: str) -> dict[str, Any]:
    """An evaluation sample as a transcript (who said what, with the answer read from it) and its scoring."""
    transcript: list[dict[str, Any]] = []
    scoring: dict[str, Any] = {}
    correct: bool | None = None
    flipped: bool | None = None
    label = kind
    if kind == "ays":
        for message in record.get("conversation") or []:
            transcript.append({"who": message.get("role"), "text": message.get("content", "")})
        scoring = {"first answer": record.get("first_answer"), "final answer": record.get("final_answer"),
                   "correct before": record.get("correct_before"), "correct after": record.get("correct_after")}
        correct = record.get("correct_after")
        flipped = record.get("correct_before") != record.get("correct_after")
    elif kind == "team":
        for turn in record.get("turns") or []:
            transcript.append({"who": f"{turn.get('model')} ({turn.get('agent')})", "text": turn.get("text", ""),
                               "note": f"answer: {turn.get('extracted')}"})
        scoring = {"first": record.get("first"), "final": record.get("final"),
                   "correct first": record.get("correct_first"), "correct final": record.get("correct_final"),
                   "team correct": record.get("team_correct"), "agree": record.get("agree")}
        final = record.get("correct_final") or {}
        correct = bool(final.get("x")) if final else None
        first = record.get("first") or {}
        flipped = any(first.get(m) != (record.get("final") or {}).get(m) for m in ("x", "y"))
        label = f"team {record.get('order', '')}".strip()
    elif kind == "flipflop":
        for message in record.get("prompt") or []:
            transcript.append({"who": message.get("role"), "text": message.get("content", "")})
        transcript.append({"who": "assistant (evaluated)", "text": record.get("reply", ""),
                           "note": f"answer: {record.get('answer')}"})
        scoring = {"label": record.get("label"), "extracted": record.get("extracted"), "answer": record.get("answer"),
                   "correct": record.get("correct")}
        correct = record.get("correct")
        flipped = None
        label = f"flipflop {record.get('label') or ''}".strip()
    elif kind == "farm":
        for message in record.get("conversation") or []:
            transcript.append({"who": message.get("role"), "text": message.get("content", "")})
        scoring = {"initially correct": record.get("initially_correct"), "persuaded": record.get("persuaded"),
                   "turns to persuasion": record.get("turns_to_persuasion"),
                   "correct after turn": record.get("correct_after_turn")}
        after = record.get("correct_after_turn") or []
        correct = bool(after[-1]) if after else None
        flipped = record.get("persuaded")
        label = f"farm {record.get('subset', '')}/{record.get('strategy', '')}"
    return {"eval": kind, "label": label, "model": model, "id": record.get("question_id") or record.get("pair_id"),
            "question": record.get("question") or "", "gold": record.get("gold_aliases") or record.get("answer") or [],
            "correct": correct, "flipped": flipped, "transcript": transcript, "scoring": scoring}


def eval_kind(folder: Path, first: dict[str, Any]) -> str:
    results = next((path for path in (folder / "results.json", *sorted(folder.glob("results-*-of-*.json")))
                    if path.is_file()), folder / "results.json")  # a shard's manifest names the evaluation too
    if results.is_file():
        try:
            name = json.loads(results.read_text(encoding="utf-8")).get("eval")
        except (json.JSONDecodeError, UnicodeDecodeError):
            name = None
        if name in EVALS:
            return name
    if "replies" in first:
        return "ays"
    if "order" in first and "turns" in first:
        return "team"
    if "strategy" in first:
        return "farm"
    return "flipflop"


# --- finding things ------------------------------------------------------------------------------


def _manifest(folder: Path) -> dict[str, Any]:
    for name in ("manifest.json", "results.json"):
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def _first_record(path: Path) -> dict[str, Any]:
    for _, record in read_jsonl(path, what="a JSON Lines file", tolerate_unfinished_last_line=True):
        return record if isinstance(record, dict) else {}
    return {}


class Collector:
    def __init__(self, limit: int | None = None) -> None:
        self.data = ViewData()
        self.limit = limit
        self._trees: dict[str, Tree] = {}
        self._pair_records: list[dict[str, Any]] = []
        self._tree_sources: set[Path] = set()
        self._pairs_given = False  # a pairs folder or file was read (even one without pairs)

    def add(self, path: Path) -> None:
        path = Path(path)
        if not path.exists():
            raise PbtError(f"{path} does not exist; give trees, pairs, a dataset, an evaluation's samples or a run "
                           "folder")
        if path.is_file():
            self._add_file(path)
        else:
            self._add_folder(path, depth=0)

    def _add_file(self, path: Path) -> None:
        if path.suffix == ".json" and path.name != "results.json":
            self._add_trees(path)
            return
        first = _first_record(path) if path.suffix == ".jsonl" else {}
        if "turns" in first and "tree_id" in first:
            self._add_trees(path)
        elif "chosen" in first and ("rejected" in first or "completion" in first):
            self._add_pairs_file(path)
        elif first:
            self._add_samples(path)
        else:
            raise PbtError(f"{path} is not a file `pbt view` reads (trees, pairs or an evaluation's samples.jsonl)")

    def _add_folder(self, folder: Path, depth: int) -> None:
        stage = str(_manifest(folder).get("stage") or "")
        if stage == "generate":
            self._add_trees(folder)
            return
        if stage == "filter":
            self._add_pairs_folder(folder)
            return
        if stage == "preprocess":
            if depth == 0:
                self._add_dataset(folder)
            else:  # inside a run folder a dataset renders the run's pairs again: shown once, as pairs
                self.data.notes.append(f"{folder} (a dataset of the run's pairs) is not listed again; "
                                       f"`pbt view {folder}` shows it")
            return
        shards = sorted(folder.glob("samples-*-of-*.jsonl"))
        if stage.startswith("eval ") or (folder / "samples.jsonl").is_file() or shards:
            if (folder / "samples.jsonl").is_file():
                self._add_samples(folder / "samples.jsonl")
            else:  # an evaluation's shards, not merged yet: what each shard of one run has written so far
                from pbt_cli.evals.results import unmerged_shard_samples

                shown, left_out = unmerged_shard_samples(folder)
                for shard in shown:
                    self._add_samples(shard)
                if left_out:
                    self.data.notes.append(
                        f"{folder}: {len(left_out)} shard file(s) of another --num-shards or other settings are not "
                        f"shown ({', '.join(p.name for p in left_out)}); the newest run's shards are")
            return
        if depth >= 4:
            return
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "checkpoint")))
        found_before = len(self.data.sources)
        for child in children:
            self._add_folder(child, depth + 1)
        if depth == 0 and len(self.data.sources) == found_before:
            raise PbtError(f"{folder} holds nothing `pbt view` reads: no trees, pairs, dataset or evaluation samples "
                           "(folders written by pbt, found by their manifest.json or results.json)")

    def _add_trees(self, path: Path) -> None:
        resolved = path.resolve()
        if resolved in self._tree_sources:
            return
        self._tree_sources.add(resolved)
        self.data.sources.append(f"trees: {path}")
        for tree in read_trees(path):
            if self.limit is not None and len(self._trees) >= self.limit:
                self.data.notes.append(f"only the first {self.limit} trees are shown (--limit)")
                break
            self._trees.setdefault(tree.tree_id, tree)

    def _add_pairs_folder(self, folder: Path) -> None:
        for split in SPLITS:
            if (folder / f"{split}.jsonl").is_file():
                self._add_pairs_file(folder / f"{split}.jsonl", announce=False)
        self.data.sources.append(f"pairs: {folder}")
        manifest = _manifest(folder)
        if manifest.get("diagnostics"):
            self.data.diagnostics = manifest["diagnostics"]
        trees = (manifest.get("config") or {}).get("trees")
        if trees:  # the trees the pairs came from, so the pairs show on their siblings
            trees_path = Path(trees)
            if not trees_path.is_absolute() and not trees_path.exists():
                trees_path = folder.parent / trees_path.name
            if trees_path.exists():
                self._add_trees(trees_path)

    def _add_pairs_file(self, path: Path, announce: bool = True) -> None:
        records = [r for _, r in read_jsonl(path, what="a pairs file") if isinstance(r, dict)]
        self._pairs_given = True
        self._pair_records.extend(records)
        if announce:
            self.data.sources.append(f"pairs: {path}")

    def _add_dataset(self, folder: Path) -> None:
        import pyarrow.parquet as pq

        files = sorted((folder / "data").glob("*.parquet")) if (folder / "data").is_dir() else []
        if not files:
            self.data.notes.append(f"{folder}: a dataset folder without Parquet files (an older layout) is skipped")
            return
        for file in files:
            split = file.name.split("-", 1)[0]
            for row in pq.read_table(file).to_pylist():
                row.setdefault("split", split)
                self._pair_records.append(row)
        self.data.sources.append(f"dataset: {folder}")

    def _add_samples(self, path: Path) -> None:
        first = _first_record(path)
        kind = eval_kind(path.parent, first)
        model = path.parent.name
        for _, record in read_jsonl(path, what="an evaluation's samples file", tolerate_unfinished_last_line=True):
            if isinstance(record, dict):
                self.data.samples.append(sample_view(kind, record, model))
        self.data.sources.append(f"{kind} samples ({model}): {path}")

    def finish(self) -> ViewData:
        from pbt_cli.pipeline.diagnostics import tree_diagnostics

        pairs_by_tree: dict[str, list[dict[str, Any]]] = {}
        for record in self._pair_records:
            view = pair_view(record)
            self.data.pairs.append(view)
            ids = view["turn_ids"]
            if view["tree"] and "chosen" in ids and "rejected" in ids:
                pairs_by_tree.setdefault(view["tree"], []).append(
                    {"chosen": ids["chosen"], "rejected": ids["rejected"], "kind": view["kind"],
                     "margin": view["margin"], "split": view["split"], "computed": False})
        from_files = self._pairs_given
        for tree in sorted(self._trees.values(), key=lambda t: t.tree_id):
            self.data.trees.append(tree_view(tree, pairs_by_tree.get(tree.tree_id, []) if from_files else None))
        if self._trees and self.data.diagnostics is None:
            self.data.diagnostics = tree_diagnostics(self._trees.values())
        if self._trees and not from_files:
            self.data.notes.append(f"pairs on the trees follow the filter's rule at margin {DEFAULT_MARGIN} (no pairs "
                                   "folder was given)")
        return self.data


def collect(paths: list[Path], limit: int | None = None) -> ViewData:
    collector = Collector(limit)
    for path in paths:
        collector.add(path)
    return collector.finish()
