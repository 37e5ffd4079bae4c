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
