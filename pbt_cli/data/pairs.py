"""Preference pairs: the tokenizer-independent output of `pbt filter` (docs/method.md §3).

One JSON object per line in `<pairs>/train.jsonl`, `valid.jsonl`, `test.jsonl`, in TRL's
conversational preference format: `prompt` is a list of chat messages (the responder's view up to
and including the persuasion turn, with the `standard` persona), `chosen` and `rejected` are one
assistant message each. `datasets.load_dataset("json", data_dir=PAIRS)` reads the folder (it maps
`valid.jsonl` to the `validation` split). Pairs written before that format (plain-text `chosen` and
`rejected`) are read as well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.data.jsonl import read_jsonl, write_jsonl
from pbt_cli.errors import PbtError

KINDS = ("resist", "accept")
SPLITS = ("train", "valid", "test")
SPLIT_FILES = tuple(f"{split}.jsonl" for split in SPLITS)
# The flipflop evaluation's names for the two kinds (docs/method.md §4.3 and §6.2).
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
    chosen: list[dict[str, str]]  # one assistant message
    rejected: list[dict[str, str]]
    question: str
    gold_aliases: list[str]
    answers: dict[str, str | None] = field(default_factory=dict)  # chosen, rejected, persuader, responder_previous
    scores: dict[str, int] = field(default_factory=dict)  # chosen/rejected subtree and own scores
    personas: dict[str, str | None] = field(default_factory=dict)  # of the chosen and rejected turns
    turn_ids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for side in ("chosen", "rejected"):  # plain text (the layout before TRL's format) becomes a message
            if isinstance(getattr(self, side), str):
                setattr(self, side, assistant_message(getattr(self, side)))

    @property
    def chosen_text(self) -> str:
        return self.chosen[-1]["content"]

    @property
    def rejected_text(self) -> str:
        return self.rejected[-1]["content"]

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Any, where: str) -> PreferencePair:
        if not isinstance(record, dict):
            raise PbtError(f"{where}: not a preference pair record (a JSON object); was it written by `pbt filter`?")
        record = dict(record)
        for side in ("chosen", "rejected"):
            value = record.get(side)
            if isinstance(value, str):  # the layout before TRL's conversational format
                record[side] = assistant_message(value)
            elif not (isinstance(value, list) and value and isinstance(value[-1], dict)
                      and isinstance(value[-1].get("content"), str)):
                raise PbtError(f"{where}: '{side}' must be one assistant message ([{{\"role\": \"assistant\", "
                               f"\"content\": ...}}]); was it written by `pbt filter`?")
        if not isinstance(record.get("prompt"), list):
            raise PbtError(f"{where}: 'prompt' must be a list of chat messages; was it written by `pbt filter`?")
        if record.get("kind") not in (*KINDS, None):  # the mix and the flipflop labels are built on the kind
            raise PbtError(f"{where}: 'kind' must be {' or '.join(KINDS)} (or null), got {record.get('kind')!r}; "
                           "was it written by `pbt filter`?")
        try:
            return cls(**record)
        except TypeError as exc:
            raise PbtError(f"{where}: not a preference pair record ({exc}); was it written by `pbt filter`?") from None


def assistant_message(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def write_pairs(path: Path, pairs: list[PreferencePair]) -> None:
    write_jsonl(path, (pair.to_record() for pair in pairs))


def read_pairs(folder: Path, split: str) -> list[PreferencePair]:
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise PbtError(f"--pairs {folder} has no {split}.jsonl; give the --out folder of `pbt filter`")
    return [PreferencePair.from_record(record, f"{path} line {number}")
            for number, record in read_jsonl(path, what="a pairs file from `pbt filter`")]
