"""The Farm dataset (Xu et al. 2024, "The Earth is Flat because..."), read and validated (docs/method.md §6.5).

Farm has four subsets, one JSON Lines file each in the Farm authors' repository
(github.com/LLMs-believe-the-earth-is-flat/llms-believe-the-earth-is-flat, `src/Farm_dataset/`):
`Boolq.jsonl` (491 questions), `NQ1.jsonl` (488), `NQ2.jsonl` (489) and `TruthfulQA.jsonl` (484).
The files carry no data licence, so pbt does not ship them; `embedded:farm-sample` is a small
sample written for this project in the same schema (package data, for tests and the demo).

`--farm` takes `embedded:farm-sample`, one file, or a folder holding the files. A file's subset is
read from its name (boolq, nq1, nq2, truthfulqa, any case, anywhere in the name); a single file with
another name needs exactly one `--subset`. Every record is checked, and a bad one is one line naming
the file, the line and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pbt_cli.data.jsonl import read_jsonl
from pbt_cli.errors import PbtError, did_you_mean

SUBSETS = ("boolq", "nq1", "nq2", "truthfulqa")
# the sizes of the published files, for the README and for a note when a file holds other counts
SUBSET_SIZES = {"boolq": 491, "nq1": 488, "nq2": 489, "truthfulqa": 484}
# the Farm repository's file names
FILE_NAMES = {"boolq": "Boolq.jsonl", "nq1": "NQ1.jsonl", "nq2": "NQ2.jsonl", "truthfulqa": "TruthfulQA.jsonl"}
PASSAGE_STRATEGIES = ("logical", "credibility", "emotional")
STRATEGIES = (*PASSAGE_STRATEGIES, "control")
PASSAGES_PER_STRATEGY = 3
EMBEDDED_PREFIX = "embedded:"
EMBEDDED_SETS = ("farm-sample",)
EMBEDDED_SAMPLE = "embedded:farm-sample"
SOURCE_FORMS = "embedded:farm-sample, a Farm .jsonl file, or a folder holding Boolq.jsonl, NQ1.jsonl, NQ2.jsonl, " \
    "TruthfulQA.jsonl"
# TruthfulQA's own fields, kept in the samples for reading results by category
TRUTHFULQA_FIELDS = ("type", "category", "best_answer")


@dataclass(frozen=True)
class FarmOption:
    text: str
    score: int  # 1 correct; 0 wrong; 2 wrong, the easy misselection

    @property
    def correct(self) -> bool:
        return self.score == 1


@dataclass(frozen=True)
class FarmQuestion:
    """One Farm record. `options` is empty for BoolQ, whose `answer` is a boolean."""

    subset: str
    question_id: str  # "<subset>-<record index in its file, from 0>"
    question: str
    answer: bool | str
    control: str
    passages: Mapping[str, tuple[str, ...]]
    target: str | None = None
    options: tuple[FarmOption, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def multiple_choice(self) -> bool:
        return self.subset != "boolq"

    @property
    def option_texts(self) -> list[str] | None:
        return [o.text for o in self.options] if self.multiple_choice else None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"subset": self.subset, "question_id": self.question_id, "question": self.question,
                                  "answer": self.answer, "target": self.target, "control": self.control}
        if self.multiple_choice:
            record["options"] = [{"text": o.text, "score": o.score} for o in self.options]
        record.update(self.extra)
        return record


def subset_of_name(name: str) -> str | None:
    """The subset a file name names (boolq, nq1, nq2, truthfulqa; case and separators ignored), or None."""
    plain = re.sub(r"[^a-z0-9]", "", Path(name).name.lower())
    found = [subset for subset in SUBSETS if subset in plain]
    return found[0] if len(found) == 1 else None


def check_subsets(subsets: Sequence[str] | None) -> tuple[str, ...]:
    """The subsets asked for, in Farm's order, without repeats; all four when none are named."""
    if not subsets:
        return SUBSETS
    for subset in subsets:
        if subset not in SUBSETS:
            raise PbtError(f"unknown Farm subset {subset!r}{did_you_mean(subset, SUBSETS)}; "
                           f"known: {', '.join(SUBSETS)}")
    return tuple(s for s in SUBSETS if s in subsets)


def check_strategies(strategies: Sequence[str] | None) -> tuple[str, ...]:
    """The strategies asked for, in the order given, without repeats; `logical` when none are named."""
    if not strategies:
        return ("logical",)
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise PbtError(f"unknown Farm strategy {strategy!r}{did_you_mean(strategy, STRATEGIES)}; "
                           f"known: {', '.join(STRATEGIES)}")
    return tuple(dict.fromkeys(strategies))


# --- finding the files ---------------------------------------------------------------------------


def farm_files(source: str, subsets: Sequence[str] | None = None) -> dict[str, Path | str]:
    """Where each wanted subset is read from: a path, or `embedded:<set>/<file name>` for the sample.

    With a file, the file's subset (from its name, or the one `--subset` when the name names none);
    with a folder or the embedded sample, every subset asked for (all four by default).
    """
    source = source.strip()
    if source.startswith(EMBEDDED_PREFIX):
        name = source[len(EMBEDDED_PREFIX):]
        if name not in EMBEDDED_SETS:
            raise PbtError(f"unknown embedded Farm set {source!r}{did_you_mean(name, EMBEDDED_SETS)}; "
                           f"use {SOURCE_FORMS}")
        return {subset: f"{source}/{FILE_NAMES[subset]}" for subset in check_subsets(subsets)}
    path = Path(source).expanduser()
    if not path.exists():
        raise PbtError(f"--farm {path} does not exist; download the Farm files (see README) or use {SOURCE_FORMS}")
    if path.is_file():
        return {_subset_of_file(path, subsets): path}
    wanted = check_subsets(subsets)
    by_subset: dict[str, list[Path]] = {}
    for candidate in sorted(path.iterdir()):
        subset = subset_of_name(candidate.name) if candidate.is_file() and candidate.suffix == ".jsonl" else None
        if subset is not None:
            by_subset.setdefault(subset, []).append(candidate)
    for subset in wanted:
        found = by_subset.get(subset, [])
        if len(found) > 1:
            raise PbtError(f"--farm {path} holds several {subset} files ({', '.join(p.name for p in found)}); "
                           "keep one, or give the file itself")
    missing = [s for s in wanted if s not in by_subset]
    if missing:
        have = ", ".join(sorted(p.name for files in by_subset.values() for p in files)) or "no Farm .jsonl file"
        raise PbtError(f"--farm {path} has no file for {', '.join(missing)} (it holds {have}); put "
                       f"{', '.join(FILE_NAMES[s] for s in missing)} there, or pick subsets with --subset")
    return {subset: by_subset[subset][0] for subset in wanted}


def _subset_of_file(path: Path, subsets: Sequence[str] | None) -> str:
    named = subset_of_name(path.name)
    asked = check_subsets(subsets) if subsets else ()
    if named is not None:
        if asked and named not in asked:
            raise PbtError(f"--farm {path} is the {named} subset by its name, but --subset asks for "
                           f"{', '.join(asked)}; give the folder of all files, or a matching --subset")
        return named
    if len(asked) == 1:
        return asked[0]
    raise PbtError(f"cannot tell which Farm subset {path} is from its name; name it like the Farm files "
                   f"({', '.join(FILE_NAMES.values())}) or give exactly one --subset")


# --- reading and checking records --------------------------------------------------------------------


def load_farm(source: str, subsets: Sequence[str] | None = None,
              limit: int | None = None) -> dict[str, list[FarmQuestion]]:
    """Every wanted subset's questions in file order (the first `limit` of each when given)."""
    loaded = {}
    for subset, where in farm_files(source, subsets).items():
        questions = [_question(subset, index, record, label)
                     for index, (label, record) in enumerate(_records(where, subset))]
        if not questions:
            raise PbtError(f"{where} holds no Farm records")
        loaded[subset] = questions[:limit] if limit is not None else questions
    return loaded


def _records(where: Path | str, subset: str) -> list[tuple[str, Any]]:
    if isinstance(where, Path):
        if not where.is_file():
            raise PbtError(f"--farm {where} is not a file")
        return [(f"{where} line {number}", record)
                for number, record in read_jsonl(where, what=f"a Farm {subset} file (JSON Lines)")]
    name = where.split("/", 1)[1]
    text = resources.files("pbt_cli.data").joinpath(f"_examples/farm-sample/{name}").read_text(encoding="utf-8")
    return [(f"{where} line {number}", json.loads(line))
            for number, line in enumerate(text.split("\n"), 1) if line.strip()]


def _text(value: Any, where: str, name: str) -> str:
    if value is None:
        raise PbtError(f"{where}: missing {name!r} (a non-empty string)")
    if not isinstance(value, str) or not value.strip():
        raise PbtError(f"{where}: {name!r} is not a non-empty string")
    return value.strip()


def _question(subset: str, index: int, record: Any, where: str) -> FarmQuestion:
    if not isinstance(record, Mapping):
        raise PbtError(f"{where}: expected a Farm record (a JSON object with question, answer and adv), "
                       f"got {type(record).__name__}")
    question = _text(record.get("question"), where, "question")
    adv = record.get("adv")
    if not isinstance(adv, Mapping):
        raise PbtError(f"{where}: missing 'adv' (an object with control, logical, credibility, emotional"
                       f"{', mcq' if subset != 'boolq' else ''})")
    control = _text(adv.get("control"), where, "adv.control")
    target = adv.get("target")
    if target is not None and not isinstance(target, str):
        raise PbtError(f"{where}: 'adv.target' is not a string")
    passages = {}
    for strategy in PASSAGE_STRATEGIES:
        value = adv.get(strategy)
        if (not isinstance(value, list) or len(value) < PASSAGES_PER_STRATEGY
                or not all(isinstance(p, str) and p.strip() for p in value[:PASSAGES_PER_STRATEGY])):
            raise PbtError(f"{where}: 'adv.{strategy}' must be a list of {PASSAGES_PER_STRATEGY} non-empty "
                           "strings (the persuasive passages)")
        passages[strategy] = tuple(p.strip() for p in value[:PASSAGES_PER_STRATEGY])
    extra = {name: record[name] for name in TRUTHFULQA_FIELDS
             if isinstance(record.get(name), str)} if subset == "truthfulqa" else {}
    if subset == "boolq":
        answer = record.get("answer")
        if not isinstance(answer, bool):
            raise PbtError(f"{where}: {'missing' if answer is None else 'wrong type of'} 'answer' (BoolQ answers "
                           "are true or false)")
        return FarmQuestion(subset=subset, question_id=f"{subset}-{index:04d}", question=question, answer=answer,
                            control=control, passages=passages, target=target, extra=extra)
    answer = record.get("answer", record.get("best_answer") if subset == "truthfulqa" else None)
    if not isinstance(answer, str) or not answer.strip():
        raise PbtError(f"{where}: {'missing' if answer is None else 'wrong type of'} 'answer' (a non-empty string"
                       f"{'; TruthfulQA records may give best_answer instead' if subset == 'truthfulqa' else ''})")
    options = _options(adv.get("mcq"), where)
    return FarmQuestion(subset=subset, question_id=f"{subset}-{index:04d}", question=question, answer=answer.strip(),
                        control=control, passages=passages, target=target, options=options, extra=extra)


def _options(mcq: Any, where: str) -> tuple[FarmOption, ...]:
    if not isinstance(mcq, list) or not mcq:
        raise PbtError(f"{where}: missing 'adv.mcq' (a list of options {{text, score}})")
    options = []
    for number, option in enumerate(mcq, 1):
        text = option.get("text") if isinstance(option, Mapping) else None
        score = option.get("score") if isinstance(option, Mapping) else None
        if not isinstance(text, (str, int, float)) or isinstance(text, bool) or not str(text).strip():
            raise PbtError(f"{where}: option {number} of 'adv.mcq' has no 'text'")
        if not isinstance(score, int) or isinstance(score, bool):
            raise PbtError(f"{where}: option {number} of 'adv.mcq' has no integer 'score' (1 marks a correct option)")
        options.append(FarmOption(text=str(text).strip(), score=score))
    if not any(o.correct for o in options):
        raise PbtError(f"{where}: no option of 'adv.mcq' has score 1, so no answer could be correct")
    return tuple(options)
