"""Preference pairs: the tokenizer-independent output of `pbt filter` (SPEC.md section 4).

One JSON object per line in `<pairs>/train.jsonl`, `valid.jsonl`, `test.jsonl`. The prompt is a
list of chat messages (the responder's view up to and including the persuasion turn, with the
`standard` persona); `chosen` and `rejected` are the two sibling responses as plain text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.data.jsonl import read_jsonl, write_jsonl
from pbt_cli.errors import PbtError

KINDS = ("resist", "accept")
SPLITS = ("train", "valid", "test")
# The flipflop evaluation's names for the two kinds (SPEC.md 5 and 7).
EVAL_LABELS = {"resist": "flip_correct_to_incorrect", "accept": "flip_incorrect_to_correct"}


@dataclass
class PreferencePair:
    pair_id: str
    tree_id: str
    split: str
    kind: str | None
    responder: str  # the agent ("A" or "B") who speaks the two sibling turns
    level: int
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    question: str
    gold_aliases: list[str]
    answers: dict[str, str | None] = field(default_factory=dict)  # chosen, rejected, persuader, responder_previous
    scores: dict[str, int] = field(default_factory=dict)  # chosen/rejected subtree and own scores
    personas: dict[str, str | None] = field(default_factory=dict)  # of the chosen and rejected turns
    turn_ids: dict[str, int] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any], where: str) -> PreferencePair:
        try:
            return cls(**record)
        except TypeError as exc:
            raise PbtError(f"{where}: not a preference pair record ({exc}); was it written by `pbt filter`?") from None


def write_pairs(path: Path, pairs: list[PreferencePair]) -> None:
    write_jsonl(path, (pair.to_record() for pair in pairs))


def read_pairs(folder: Path, split: str) -> list[PreferencePair]:
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise PbtError(f"--pairs {folder} has no {split}.jsonl; give the --out folder of `pbt filter`")
    return [PreferencePair.from_record(record, f"{path} line {number}")
            for number, record in read_jsonl(path, what="a pairs file from `pbt filter`")]
