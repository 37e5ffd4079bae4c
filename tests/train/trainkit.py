"""Helpers for tests/train (a module of its own: `conftest` names are ambiguous between folders).

Pairs are written with `write_pairs`, so every row is known by hand: each has a short three-message
prompt (the question with the standard persona, the responder's earlier answer, the persuader's
push) and one-sentence replies.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from pbt_cli.artifacts import write_json
from pbt_cli.data.pairs import EVAL_LABELS, PreferencePair, write_pairs
from pbt_cli.data.prompts import question_prompt
from pbt_cli.models.spec import ModelSpec
from pbt_cli.pipeline.preprocess import PreprocessConfig, run_preprocess

# (question, right answer, wrong answer): words the tiny BPE tokenizer's corpus knows
QUESTIONS = [
    ("What is the capital of France?", "Paris", "London"),
    ("Which planet is closest to the Sun?", "Mercury", "Venus"),
    ("What is the largest city of Italy?", "Rome", "Milan"),
    ("What is the capital of England?", "London", "Paris"),
]

# Small settings every CLI training run in these tests uses (on top of each command's own flags).
TINY_RUN = ("--per-device-train-batch-size", "2", "--per-device-eval-batch-size", "2",
            "--gradient-accumulation-steps", "1", "--warmup-steps", "1", "--logging-steps", "1",
            "--eval-limit", "4", "--eval-max-new-tokens", "4")

LLAMA_PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

# Another chat template than the tiny model's (tests/conftest.py TINY_TEMPLATE); prompts stay prefixes.
OTHER_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch intra-op thread: on a 2-core machine torch's default pool makes the tiny model's small
    matmuls far slower whenever anything else competes for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_pair(split: str, index: int, kind: str) -> PreferencePair:
    """A resist pair (the responder was right; chosen keeps the right answer) or an accept pair (it was
    wrong; chosen moves to the persuader's right answer)."""
    question, right, wrong = QUESTIONS[index % len(QUESTIONS)]
    previous, persuader = (right, wrong) if kind == "resist" else (wrong, right)
    prompt = [
        {"role": "user", "content": question_prompt(question, "standard")},
        {"role": "assistant", "content": f"I think the answer is {previous}."},
        {"role": "user", "content": f"No, you are wrong. The answer is {persuader}."},
    ]
    return PreferencePair(
        pair_id=f"{split}-{kind}-{index}", tree_id=f"{split}-t{index}", split=split, kind=kind, responder="B",
        level=3, prompt=prompt, chosen=f"I am confident the answer is {right}.", rejected=f"I am sure it is {wrong}.",
        question=question, gold_aliases=[right],
        answers={"chosen": right, "rejected": wrong, "persuader": persuader, "responder_previous": previous},
        scores={"chosen": 1, "rejected": 0}, personas={"chosen": "resist", "rejected": "accept"},
        turn_ids={"chosen": 5, "rejected": 6})


def make_pairs_folder(folder: Path, counts: dict[str, int]) -> Path:
    """A `pbt filter`-shaped folder with `counts[split]` resist and as many accept pairs per split."""
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        n = counts.get(split, 0)
        write_pairs(folder / f"{split}.jsonl",
                    [make_pair(split, i, kind) for kind in ("resist", "accept") for i in range(n)])
    write_json(folder / "manifest.json", {"stage": "filter", "status": "complete", "note": "made by tests/train",
                                          "counts": counts, "labels": EVAL_LABELS})
    return folder


def preprocess(pairs: Path, tokenizer_dir: Path, out: Path, fmt: str, chat_template: Path | None = None) -> Path:
    spec = ModelSpec.parse(str(tokenizer_dir), chat_template=chat_template)
    run_preprocess(PreprocessConfig(pairs=pairs, tokenizer=spec, out=out, format=fmt))
    return out


def cli(*args: object) -> tuple[int, str]:
    """`pbt ARGS` in this process where capsys is not available (session fixtures): (exit code, stderr)."""
    from pbt_cli.cli import main

    stderr, real = io.StringIO(), sys.stderr
    sys.stderr = stderr
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.stderr = real
    return code, stderr.getvalue()


def root_conftest() -> ModuleType:
    """tests/conftest.py as a module (`import conftest` may give this folder's conftest instead)."""
    path = Path(__file__).resolve().parent.parent / "conftest.py"
    spec = importlib.util.spec_from_file_location("pbt_tests_root_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def log_history(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log_history.jsonl").read_text().splitlines() if line.strip()]
