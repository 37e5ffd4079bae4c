"""Questions in TriviaQA's schema, from the embedded set, a local file, or a Hugging Face dataset.

Sources (`--questions`):
  embedded:train | embedded:validation   the set shipped inside the package (offline); add -easy
                                         (embedded:train-easy) for its two easiest levels of five,
                                         which a 135M demo model answers right often enough
                                         to yield both kinds of preference pair
  trivia_qa:train | trivia_qa:validation mandarjoshi/trivia_qa, config rc.web.nocontext (needs the hub or its cache)
  hf:OWNER/NAME[:CONFIG]:SPLIT           any hub dataset in TriviaQA's schema
  PATH.jsonl | PATH.json                 a local file in TriviaQA's schema

Selection is stable: shuffle with a seed, take the first `limit`, then take every `num_shards`-th
question starting at `shard_idx` (round-robin), so the same inputs always give the same shard and
the shards of one run cover the selection exactly once.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pbt_cli.data.answers import is_correct, normalize_answer
from pbt_cli.data.jsonl import read_jsonl, read_text
from pbt_cli.errors import PbtError, require_at_least

EMBEDDED_SPLITS = ("train", "validation", "train-easy", "validation-easy")
EASY_DIFFICULTY = 2  # of 1..5: the levels the "-easy" embedded splits keep
TRIVIA_QA = ("mandarjoshi/trivia_qa", "rc.web.nocontext")
SOURCE_FORMS = "embedded:train[-easy], embedded:validation[-easy], trivia_qa:train, trivia_qa:validation, " \
               "hf:OWNER/NAME[:CONFIG]:SPLIT, or a .jsonl/.json file"


@dataclass(frozen=True)
class Question:
    question_id: str
    question: str
    answer_value: str
    aliases: tuple[str, ...]
    normalized_aliases: tuple[str, ...]

    def is_correct(self, answer: str | None) -> bool:
        return is_correct(answer, self.normalized_aliases)

    def to_record(self) -> dict[str, Any]:
        return {
            "question_id": self.question_id,
            "question": self.question,
            "answer": {
                "value": self.answer_value,
                "aliases": list(self.aliases),
                "normalized_aliases": list(self.normalized_aliases),
            },
        }

    @classmethod
    def from_record(cls, record: Any, where: str) -> Question:
        """Validate one record; `where` names its place ("file.jsonl line 3") for error messages."""
        if not isinstance(record, Mapping):
            raise PbtError(f"{where}: expected a JSON object with question and answer, got {type(record).__name__}")
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise PbtError(f"{where}: missing 'question' (a non-empty string)")
        answer = record.get("answer")
        if not isinstance(answer, Mapping):
            raise PbtError(f"{where}: missing 'answer' (an object with value, aliases, normalized_aliases)")
        value = answer.get("value")
        aliases = [a for a in answer.get("aliases") or [] if isinstance(a, str) and a.strip()]
        if isinstance(value, str) and value.strip() and value not in aliases:
            aliases.insert(0, value)
        normalized = [a for a in answer.get("normalized_aliases") or [] if isinstance(a, str) and a.strip()]
        if not normalized:
            normalized = sorted({normalize_answer(a) for a in aliases if normalize_answer(a)})
        if not normalized:
            raise PbtError(f"{where}: the answer has no gold aliases (answer.aliases or answer.normalized_aliases)")
        question_id = record.get("question_id")
        if question_id is None or str(question_id).strip() == "":
            raise PbtError(f"{where}: missing 'question_id'")
        return cls(question_id=str(question_id), question=question.strip(),
                   answer_value=str(value if isinstance(value, str) and value.strip() else aliases[0]
                                    if aliases else normalized[0]),
                   aliases=tuple(aliases), normalized_aliases=tuple(normalized))


def load_questions(source: str) -> list[Question]:
    """All questions of a source, in the source's order."""
    source = source.strip()
    kind, _, rest = source.partition(":")
    path = Path(source).expanduser()
    if path.suffix in {".jsonl", ".json"} or path.exists():
        return _from_file(path)
    if kind == "embedded":
        return _embedded(rest or "train")
    if kind == "trivia_qa":
        return _from_hub(TRIVIA_QA[0], TRIVIA_QA[1], rest or "train")
    if kind == "hf" and rest:
        parts = rest.split(":")
        if len(parts) == 2:
            return _from_hub(parts[0], None, parts[1])
        if len(parts) == 3:
            return _from_hub(parts[0], parts[1], parts[2])
    raise PbtError(f"unknown questions source {source!r}; use {SOURCE_FORMS}")


def check_source(source: str) -> None:
    """Offline validation of a source string (for --dry-run): names and paths, no loading."""
    kind, _, rest = source.partition(":")
    path = Path(source).expanduser()
    if path.suffix in {".jsonl", ".json"}:
        if not path.is_file():
            raise PbtError(f"questions file {path} does not exist")
        return
    if kind == "embedded" and (rest or "train") in EMBEDDED_SPLITS:
        return
    if kind == "trivia_qa" and (rest or "train") in ("train", "validation", "test"):
        return
    if kind == "hf" and len(rest.split(":")) in (2, 3):
        return
    raise PbtError(f"unknown questions source {source!r}; use {SOURCE_FORMS}")


def select_questions(questions: Sequence[Question], *, limit: int | None = None, seed: int = 42,
                     shard_idx: int = 0, num_shards: int = 1) -> list[Question]:
    require_at_least("--num-shards", num_shards)
    if not 0 <= shard_idx < num_shards:
        raise PbtError(f"--shard-idx {shard_idx} is out of range for --num-shards {num_shards} (0..{num_shards - 1})")
    require_at_least("--limit", limit)
    order = list(questions)
    random.Random(seed).shuffle(order)
    if limit is not None:
        order = order[:limit]
    return order[shard_idx::num_shards]


def _embedded(split: str) -> list[Question]:
    if split not in EMBEDDED_SPLITS:
        raise PbtError(f"the embedded questions have splits {', '.join(EMBEDDED_SPLITS)}, not {split!r}")
    text = resources.files("pbt_cli.data").joinpath("_examples/questions.jsonl").read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    base, _, easy = split.partition("-")
    return [Question.from_record(r, f"embedded question {r.get('question_id')}") for r in records
            if r.get("split") == base and (not easy or r.get("difficulty", 5) <= EASY_DIFFICULTY)]


def _from_file(path: Path) -> list[Question]:
    if not path.is_file():
        raise PbtError(f"questions file {path} does not exist")
    records: Iterable[tuple[str, Any]]
    if path.suffix == ".json":
        try:
            data = json.loads(read_text(path, "a questions file in TriviaQA's schema"))
        except json.JSONDecodeError as exc:
            raise PbtError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        if isinstance(data, Mapping) and "data" in data:  # TriviaQA's original release wraps records in "Data"
            data = data["data"]
        elif isinstance(data, Mapping) and "Data" in data:
            data = data["Data"]
        if not isinstance(data, list):
            raise PbtError(f"{path}: expected a list of question records (or JSON Lines in a .jsonl file)")
        records = ((f"{path} record {i}", r) for i, r in enumerate(data))
    else:
        records = [(f"{path} line {number}", record)
                   for number, record in read_jsonl(path, what="a questions file in TriviaQA's schema")]
    questions = [Question.from_record(record, where) for where, record in records]
    if not questions:
        raise PbtError(f"{path} holds no questions")
    _check_unique(questions, str(path))
    return questions


def _from_hub(name: str, config: str | None, split: str) -> list[Question]:
    from pbt_cli.models.resolve import hub_offline, require_hub_reachable

    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise PbtError("loading hub datasets needs the datasets package: pip install datasets") from None
    if not hub_offline():
        require_hub_reachable(name)
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many types for missing data, offline, bad split
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (offline mode is on and it is not in the cache)" if hub_offline() else ""
        raise PbtError(f"cannot load dataset {name} ({config or 'default'}, split {split}){hint}: {first}") from None
    questions = [Question.from_record(r, f"{name}:{split} row {i}") for i, r in enumerate(dataset)]
    _check_unique(questions, name)
    return questions


def _check_unique(questions: Sequence[Question], where: str) -> None:
    seen: set[str] = set()
    for q in questions:
        if q.question_id in seen:
            raise PbtError(f"{where}: question_id {q.question_id!r} appears twice; ids must be unique")
        seen.add(q.question_id)
