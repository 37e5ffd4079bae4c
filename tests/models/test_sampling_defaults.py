"""A checkpoint's generation_config.json sampling defaults apply in no backend (issue 23, item 4c): pbt
sends every sampling field itself, the ones it has no option for at neutral values (base.py:
NEUTRAL_SAMPLING), so that a model's repetition_penalty or min_p cannot change replies in one backend
and not in another."""

from __future__ import annotations

import json
import shutil

import pytest

from pbt_cli.models.backends import BackendOptions, GeneratorPool
from pbt_cli.models.backends.base import Sampling
from pbt_cli.models.spec import ModelSpec

QUESTIONS = [[{"role": "user", "content": "What is the capital of France?"}],
             [{"role": "user", "content": "Which planet is closest to the Sun?"}]]
# what a checkpoint could ship: each of these changes greedy replies where it applies
LOUD_DEFAULTS = {"repetition_penalty": 50.0, "min_p": 0.9, "top_k": 1, "temperature": 0.1, "do_sample": True}


@pytest.fixture
def loud_model_dir(tiny_model_dir, tmp_path):
    folder = tmp_path / "loud"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, **LOUD_DEFAULTS}))
    return folder


@pytest.mark.parametrize("sampling", [Sampling(temperature=0.0, max_new_tokens=12),
                                      Sampling(temperature=1.0, max_new_tokens=12, seed=3)])
def test_the_transformers_backend_ignores_the_checkpoints_sampling_defaults(tiny_model_dir, loud_model_dir,
                                                                            sampling):
    def replies(folder):
        return GeneratorPool(BackendOptions()).get(ModelSpec.parse(str(folder))).chat(QUESTIONS, sampling)

    assert replies(loud_model_dir) == replies(tiny_model_dir)


def test_generate_and_evaluations_record_the_rule_they_sampled_under(capsys, tmp_path, loud_model_dir):
    """The rule is stated in the run records, so a reader of a manifest or results.json knows that the
    loud model's own defaults were not applied and what every request carried besides pbt's options."""
    from helpers import run_cli

    trees = tmp_path / "trees"
    result = run_cli(capsys, "generate", "--model-a", loud_model_dir, "--model-b", loud_model_dir, "--limit", "1",
                     "--max-turns", "2", "--max-new-tokens", "4", "--min-new-tokens", "1", "--out", trees)
    assert result.exit_code == 0, result.stderr
    result = run_cli(capsys, "eval", "ays", "--model", loud_model_dir, "--limit", "1", "--max-new-tokens", "4",
                     "--out", tmp_path / "results")
    assert result.exit_code == 0, result.stderr
    records = [json.loads((trees / "manifest.json").read_text()),
               json.loads((tmp_path / "results" / "ays" / loud_model_dir.name / "results.json").read_text())]
    for record in records:
        rule = record["sampling_rule"]
        assert rule["sent_with_every_request"] == {"repetition_penalty": 1.0, "min_p": 0.0}
        assert rule["model_generation_config"].startswith("not applied")
        assert {"temperature", "top_p", "top_k", "seed"} <= set(rule["sent_from_options"])
