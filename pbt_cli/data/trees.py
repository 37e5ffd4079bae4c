"""Dialogue trees: the data model, JSONL input/output, answer resolution, and the reference-format reader.

A tree's turns are stored flat; turn 0 is the root (the question itself, level -1, no agent).
Agent "A" speaks at even levels, "B" at odd ones. Each turn stores both agents' current answers
by name (never by list position): the speaker's newly extracted answer (which may be one of the
special answers AGREE / DISAGREE / NONE) and the other agent's answer carried over from the parent.
Special answers are resolved when scoring (`resolve_answers`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.console import log
from pbt_cli.data.answers import AGREE, DISAGREE, NONE, is_special, same_answer
from pbt_cli.data.jsonl import ends_unfinished, read_jsonl, read_text
from pbt_cli.data.questions import Question
from pbt_cli.errors import PbtError

AGENTS = ("A", "B")
TREE_GLOBS = ("*.jsonl", "*.json")


def other_agent(agent: str) -> str:
    return "B" if agent == "A" else "A"


def agent_at_level(level: int) -> str:
    return AGENTS[level % 2]


@dataclass
class Turn:
    id: int
    parent: int | None
    level: int
    agent: str | None
    persona: str | None
    text: str
    answer: dict[str, str | None] = field(default_factory=lambda: {"A": None, "B": None})
    raw_extraction: str | None = None
    children: list[int] = field(default_factory=list)
    messages_seen_hash: str | None = None

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id, "parent": self.parent, "children": list(self.children), "level": self.level,
            "agent": self.agent, "persona": self.persona, "messages_seen_hash": self.messages_seen_hash,
            "text": self.text, "answer": dict(self.answer), "raw_extraction": self.raw_extraction,
        }


@dataclass
class Tree:
    tree_id: str
    question: Question
    turns: list[Turn]
    models: dict[str, Any] = field(default_factory=dict)
    personas: str | None = None  # hash of the prompt texts
    sampling: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    split: str = "train"
    both_first: bool = True
    max_turns: int = 4
    source_format: str = "pbt"

    # -- navigation -------------------------------------------------------------------------------

    def turn(self, turn_id: int) -> Turn:
        return self._by_id()[turn_id]

    def _by_id(self) -> dict[int, Turn]:
        return {t.id: t for t in self.turns}

    @property
    def root(self) -> Turn:
        return next(t for t in self.turns if t.parent is None)

    def children(self, turn: Turn) -> list[Turn]:
        by_id = self._by_id()
        return [by_id[c] for c in turn.children]

    def path_to(self, turn_id: int) -> list[Turn]:
        """Turns from the first dialogue turn down to `turn_id` (the root excluded)."""
        by_id = self._by_id()
        path = []
        current: Turn | None = by_id[turn_id]
        while current is not None and not current.is_root:
            path.append(current)
            current = by_id.get(current.parent) if current.parent is not None else None
        return path[::-1]

    def depth_first(self) -> list[Turn]:
        """Every turn, parents before children, without recursion (a chain may be thousands of turns deep)."""
        by_id = self._by_id()
        order: list[Turn] = []
        stack = [self.root]
        while stack:
            turn = stack.pop()
            order.append(turn)
            stack.extend(by_id[child] for child in reversed(turn.children))
        return order

    def leaves(self) -> list[Turn]:
        return [t for t in self.turns if not t.children and not t.is_root]

    # -- records ----------------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        return {
            "tree_id": self.tree_id,
            "question": self.question.to_record(),
            "models": self.models,
            "personas": self.personas,
            "sampling": self.sampling,
            "seed": self.seed,
            "split": self.split,
            "both_first": self.both_first,
            "max_turns": self.max_turns,
            "turns": [t.to_record() for t in self.turns],
        }

    @classmethod
    def from_record(cls, record: Any, where: str) -> Tree:
        if not isinstance(record, dict):
            raise PbtError(f"{where}: expected a tree object, got {type(record).__name__}")
        if "turns" not in record and "data" in record:
            return from_reference_record(record, where)
        for key in ("tree_id", "question", "turns"):
            if key not in record:
                raise PbtError(f"{where}: tree record has no '{key}'")
        question = Question.from_record(record["question"], f"{where} (question)")
        if not isinstance(record["tree_id"], (str, int)) or isinstance(record["tree_id"], bool):
            raise PbtError(f"{where}: 'tree_id' must be a string, got {type(record['tree_id']).__name__}")
        if not isinstance(record["turns"], list):
            raise PbtError(f"{where}: 'turns' must be a list of turn objects, got {type(record['turns']).__name__}")
        turns = [_turn_from_record(item, f"{where}: turn {position}") for position, item in enumerate(record["turns"])]
        tree = cls(tree_id=str(record["tree_id"]), question=question, turns=turns, models=record.get("models") or {},
                   personas=record.get("personas"), sampling=record.get("sampling") or {}, seed=record.get("seed"),
                   split=record.get("split", "train"), both_first=record.get("both_first", True),
                   max_turns=record.get("max_turns", 4))
        check_tree(tree, where)
        return tree


def _turn_from_record(item: Any, where: str) -> Turn:
    if not isinstance(item, dict):
        raise PbtError(f"{where} is not a turn object")
    for key, kinds in (("id", int), ("level", int)):
        if not isinstance(item.get(key), kinds) or isinstance(item.get(key), bool):
            raise PbtError(f"{where}: '{key}' must be an integer, got {item.get(key)!r}")
    parent = item.get("parent")
    if parent is not None and (not isinstance(parent, int) or isinstance(parent, bool)):
        raise PbtError(f"{where}: 'parent' must be a turn id or null, got {parent!r}")
    text = item.get("text")
    if text is not None and not isinstance(text, str):
        raise PbtError(f"{where}: 'text' must be a string, got {type(text).__name__}")
    answer = item.get("answer", {})
    if answer is None:
        answer = {}
    if not isinstance(answer, dict):
        raise PbtError(f"{where}: 'answer' must be an object of answers by agent ({{\"A\": ..., \"B\": ...}}), "
                       f"got {type(answer).__name__}")
    for agent in AGENTS:
        value = answer.get(agent)
        if value is not None and not isinstance(value, str):
            raise PbtError(f"{where}: answer of {agent} must be a string or null, got {type(value).__name__}")
    return Turn(id=item["id"], parent=parent, level=item["level"], agent=item.get("agent"),
                persona=item.get("persona"), text=text or "", answer={agent: answer.get(agent) for agent in AGENTS},
                raw_extraction=item.get("raw_extraction"), messages_seen_hash=item.get("messages_seen_hash"))


def check_tree(tree: Tree, where: str) -> None:
    """Structural checks: one root, every parent exists, children lists agree with parents."""
    by_id = {}
    for turn in tree.turns:
        if turn.id in by_id:
            raise PbtError(f"{where}: tree {tree.tree_id} has two turns with id {turn.id}")
        by_id[turn.id] = turn
    roots = [t for t in tree.turns if t.parent is None]
    if len(roots) != 1:
        raise PbtError(f"{where}: tree {tree.tree_id} has {len(roots)} roots; expected exactly one")
    for turn in tree.turns:
        if turn.parent is not None and turn.parent not in by_id:
            raise PbtError(f"{where}: tree {tree.tree_id} turn {turn.id} names parent {turn.parent}, which is missing")
        if not turn.is_root and turn.agent not in AGENTS:
            raise PbtError(f"{where}: tree {tree.tree_id} turn {turn.id} has agent {turn.agent!r}; expected A or B")
    children: dict[int, list[int]] = {t.id: [] for t in tree.turns}
    for turn in tree.turns:  # rebuild children from parents, the authoritative link
        if turn.parent is not None:
            children[turn.parent].append(turn.id)
    for turn in tree.turns:
        turn.children = children[turn.id]
    reachable = {t.id for t in tree.depth_first()}
    if len(reachable) != len(tree.turns):
        looped = sorted(t.id for t in tree.turns if t.id not in reachable)
        raise PbtError(f"{where}: tree {tree.tree_id} turns {', '.join(map(str, looped[:5]))} never reach the root "
                       "(their parents form a cycle)")


# --- answer resolution (docs/method.md §2.8 and §3.2) ------------------------------------------------------------


def resolve_step(parent_state: dict[str, str], speaker: str, extracted: str | None) -> dict[str, str]:
    """Both agents' resolved answers after `speaker` says `extracted`.

    AGREE takes the other agent's current answer; DISAGREE keeps the speaker's previous answer
    (NONE if it had none); NONE stays NONE; the other agent's answer carries over.
    """
    state = dict(parent_state)
    value = (extracted or NONE).strip()
    token = value.upper()
    if token == AGREE:
        state[speaker] = parent_state[other_agent(speaker)]
    elif token == DISAGREE:
        state[speaker] = parent_state[speaker]
    elif token == NONE or not value:
        state[speaker] = NONE
    else:
        state[speaker] = value
    return state


def answer_as_heard(extracted: str | None, *, blind: bool) -> str | None:
    """A turn that saw no answer of the other agent (B's opening under both-first) can neither agree
    nor disagree with it: its AGREE or DISAGREE is no answer, and it does not end the branch."""
    if blind and (extracted or "").strip().upper() in (AGREE, DISAGREE):
        return NONE
    return extracted


def is_blind_opening(level: int, both_first: bool) -> bool:
    return both_first and level == 1


def resolve_answers(tree: Tree) -> dict[int, dict[str, str]]:
    """Resolved answers of both agents at every turn (the root: both NONE)."""
    resolved: dict[int, dict[str, str]] = {}
    for turn in tree.depth_first():  # parents first, so each turn starts from its parent's state
        if turn.is_root:
            resolved[turn.id] = {"A": NONE, "B": NONE}
            continue
        heard = answer_as_heard(turn.answer.get(turn.agent), blind=is_blind_opening(turn.level, tree.both_first))
        resolved[turn.id] = resolve_step(resolved[turn.parent], turn.agent, heard)
    return resolved


def agents_agree(state: dict[str, str], extracted: str | None) -> bool:
    """Agreement ends a branch: an AGREE, or matching answers; two NONEs are not agreement."""
    if is_special(state["A"]) and is_special(state["B"]):
        return False
    if (extracted or "").strip().upper() == AGREE:
        return True
    return same_answer(state["A"], state["B"])


# --- files -----------------------------------------------------------------------------------------


def tree_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PbtError(f"--trees {path} does not exist; give a trees file or a folder of them")
    files = sorted(p for pattern in TREE_GLOBS for p in path.glob(pattern)
                   if p.is_file() and "manifest" not in p.name)
    if not files:
        raise PbtError(f"--trees {path} holds no tree files (*.jsonl from `pbt generate`, or reference *.json)")
    return files


def read_trees(path: Path) -> Iterator[Tree]:
    """Trees from a file or a folder of shards, in pbt's JSONL format or the reference code's JSON."""
    for file in tree_files(path):
        yield from _read_tree_file(file)


def _read_tree_file(file: Path) -> Iterator[Tree]:
    if file.suffix == ".json":
        try:
            data = json.loads(read_text(file, "a trees file"))
        except json.JSONDecodeError as exc:
            raise PbtError(f"{file} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        records = data if isinstance(data, list) else [data]
        for i, record in enumerate(records):
            yield Tree.from_record(record, f"{file} record {i}")
        return
    if ends_unfinished(file):
        log.warning("%s: the last line is unfinished (an interrupted run?); it is skipped", file)
    for number, record in read_jsonl(file, what="a trees file", tolerate_unfinished_last_line=True):
        yield Tree.from_record(record, f"{file} line {number}")


# --- the reference code's format (docs/method.md §2.13) ---------------------------------------------------


def from_reference_record(record: dict[str, Any], where: str) -> Tree:
    """A tree in the reference code's layout, converted to pbt's.

    The reference stores a JSON object with `data`, `metadata`, `model_a`, `model_b`; its nodes have
    `node_idx`, `agent_idx` (0 = A, 1 = B), `generation`, `extracted_ans`, `parent`, `children`, and
    the root has `node_idx` -1. It writes agent A's answer to `extracted_ans[1]` and B's to
    `extracted_ans[0]` (docs/method.md §8.1); here answers are keyed by agent name.
    """
    metadata = record.get("metadata") or {}
    nodes = record["data"]
    if isinstance(nodes, dict):
        nodes = list(nodes.get("nodes", nodes.values())) if "nodes" in nodes else list(nodes.values())
    if not isinstance(nodes, list):
        raise PbtError(f"{where}: reference tree 'data' must be a list of nodes")
    question_record = _reference_question(record, metadata, nodes, where)
    question = Question.from_record(question_record, f"{where} (question)")
    turns: list[Turn] = [Turn(id=0, parent=None, level=-1, agent=None, persona=None, text=question.question)]
    id_map = {-1: 0}
    ordered = sorted((n for n in nodes if n.get("node_idx", -1) != -1), key=lambda n: n["node_idx"])
    for node in ordered:
        id_map[node["node_idx"]] = len(id_map)
    parents: dict[int, int] = {}
    for node in ordered:
        parent_idx = node.get("parent")
        parent_idx = -1 if parent_idx is None else parent_idx
        if parent_idx not in id_map:
            raise PbtError(f"{where}: reference node {node.get('node_idx')} names parent {parent_idx}, "
                           "which is missing")
        parents[id_map[node["node_idx"]]] = id_map[parent_idx]

    levels = {0: -1}

    def level_of(turn_id: int) -> int:
        chain = []
        current = turn_id
        while current not in levels:  # walk up to a turn of known level, without recursion
            chain.append(current)
            if len(chain) > len(parents):
                raise PbtError(f"{where}: reference nodes name each other as parents in a loop")
            current = parents[current]
        for position, turn in enumerate(reversed(chain), 1):
            levels[turn] = levels[current] + position
        return levels[turn_id]

    for node in ordered:
        agent = AGENTS[int(node["agent_idx"])]
        answers = node.get("extracted_ans") or [None, None]
        if isinstance(answers, str):
            answers = [answers, answers]
        turn_id = id_map[node["node_idx"]]
        parent = parents[turn_id]
        turns.append(Turn(
            id=turn_id, parent=parent, level=level_of(turn_id), agent=agent, persona=node.get("persona"),
            text=_reference_text(node.get("generation")),
            answer={"A": _first(answers[1] if len(answers) > 1 else None), "B": _first(answers[0])},
            raw_extraction=json.dumps(answers),
        ))
    tree = Tree(
        tree_id=str(question_record["question_id"]), question=question, turns=turns,
        models={"A": {"name": record.get("model_a")}, "B": {"name": record.get("model_b")}},
        split="train", source_format="reference", both_first=bool(metadata.get("both_first", True)),
        max_turns=max((t.level for t in turns), default=0) + 1,
    )
    check_tree(tree, where)
    return tree


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else str(value)


def _reference_text(generation: Any) -> str:
    if isinstance(generation, list):
        generation = generation[0] if generation else ""
    return str(generation or "")


def _reference_question(record: dict[str, Any], metadata: dict[str, Any], nodes: list[Any], where: str) -> dict:
    """The question record, wherever the reference file keeps it (metadata, top level, or the root node)."""
    for holder in (metadata, record, next((n for n in nodes if n.get("node_idx") == -1), {})):
        if isinstance(holder.get("question"), dict):
            holder = holder["question"]
        if isinstance(holder.get("question"), str) and isinstance(holder.get("answer"), dict):
            out = dict(holder)
            out.setdefault("question_id", holder.get("question_id") or holder.get("id") or metadata.get("question_id"))
            return out
    raise PbtError(f"{where}: reference tree has no question with gold aliases (metadata.question / answer)")
