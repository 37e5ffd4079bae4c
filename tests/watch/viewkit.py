"""A small run folder with real pbt files, made with scripted agents (no model): trees from `pbt generate`,
pairs from `pbt filter`, and the samples of `pbt eval ays`. Used by the view tests and by
benchmarks/view_large.py (10,000 trees)."""

from __future__ import annotations

import random
import re
from pathlib import Path

from pbt_cli.data.questions import load_questions
from pbt_cli.evals.ays import AysConfig, run_ays
from pbt_cli.models.backends import GeneratorPool
from pbt_cli.models.backends.scripted import ScriptedGenerator
from pbt_cli.models.spec import ModelSpec
from pbt_cli.pipeline.filter import FilterConfig, run_filter
from pbt_cli.pipeline.generate import GenerateConfig, run_generate

WRONG = ("Paris", "London", "Rome", "Mercury")


def scripted_agent(questions: str, seed: int = 0):
    """Right about half the time, a wrong guess or no answer otherwise, so trees branch and pairs form."""
    gold = {q.question: q.answer_value for q in load_questions(questions)}
    rng = random.Random(seed)

    def reply(conversation, sampling) -> str:
        question = conversation[0]["content"].rsplit("Question: ", 1)[-1].strip()  # question_prompt puts it last
        right = gold.get(question, "Paris")
        draw = rng.random()
        if draw < 0.1:
            return "I am not sure; let me think about it some more."
        answer = right if draw < 0.55 else rng.choice(WRONG)
        return f"My answer is {answer}. I have good reasons to believe it."

    return reply


def extractor(conversation, sampling) -> str:
    found = re.search(r"My answer is\s*([^.]+)", conversation[-2]["content"])
    return " " + (found.group(1).strip() if found else "NONE")


def is_extraction(conversation) -> bool:
    return conversation[-1]["role"] == "assistant"


def write_questions(path: Path, count: int) -> Path:
    """`count` questions: the embedded ones again and again, each copy with an id and a wording of its own."""
    import json

    base = load_questions("embedded:train")
    with path.open("w", encoding="utf-8") as out:
        for number in range(count):
            question = base[number % len(base)]
            record = question.to_record()
            record.update(question_id=f"q-{number:06d}", question=f"{question.question} (copy {number})")
            out.write(json.dumps(record) + "\n")
    return path


def make_run(folder: Path, trees: int, *, pairs: bool = True, ays: int = 0, questions: str = "embedded:train") -> Path:
    agent = scripted_agent(questions)
    pool = GeneratorPool(preset={"agent": ScriptedGenerator(agent, name="agent"),
                                 "extractor": ScriptedGenerator(extractor, name="extractor")})
    run_generate(GenerateConfig(model_a=ModelSpec("agent"), model_b=ModelSpec("agent"),
                                extractor=ModelSpec("extractor"), questions=questions, limit=trees,
                                trees_per_batch=512, out=folder / "trees"), pool=pool)
    if pairs:
        run_filter(FilterConfig(trees=folder / "trees", out=folder / "pairs"))
    if ays:
        model = scripted_agent("embedded:validation", seed=1)
        both = ScriptedGenerator(lambda c, s: extractor(c, s) if is_extraction(c) else model(c, s), name="model")
        run_ays(AysConfig(model=ModelSpec("model"), questions="embedded:validation", limit=ays,
                          out=folder / "results"), pool=GeneratorPool(preset={"model": both}))
    return folder
