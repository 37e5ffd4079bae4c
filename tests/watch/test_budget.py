"""Budgets before a long run (issue 27, item 5): the figures `--dry-run` prints, checked against what the
stages really ask of their models, and `--estimate` timing real requests."""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import run_cli

from pbt_cli.budget import ays_budget, farm_budget, flipflop_budget, generate_budget, team_budget
from pbt_cli.console import LogProgress
from pbt_cli.evals.results import CHUNK_SIZE
from pbt_cli.pipeline.dialogue import turns_below

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))
sys.path.insert(0, str(Path(__file__).parents[1] / "evals"))


def test_the_tree_shape_gives_21_turns_and_42_requests_per_tree():
    assert turns_below(-1, 4, "train") == 1 + 2 + 6 + 12
    assert turns_below(0, 4, "train") == 2 + 6 + 12 and turns_below(3, 4, "train") == 0
    assert turns_below(-1, 4, "eval") == 4
    budget = generate_budget(4, "train", 80, 16)
    assert (budget.requests, budget.tokens, budget.exact) == (42, 21 * 96, False)


def test_generate_dry_run_prints_the_budget_of_the_papers_run(capsys):
    # TriviaQA comes from the hub, not read in a dry run: --limit bounds the trees
    result = run_cli(capsys, "generate", "--model-a", "smollm2-135m", "--model-b", "smollm2-135m", "--questions",
                     "trivia_qa:train", "--limit", "76495", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "budget: 76,495 trees -> at most 3,212,790 requests, at most 154,213,920 generated tokens" in result.stderr
    demo = run_cli(capsys, "generate", "--model-a", "smollm2-135m", "--model-b", "smollm2-135m", "--questions",
                   "embedded:train-easy", "--limit", "64", "--num-shards", "2", "--dry-run")
    assert "budget: 32 trees -> at most 1,344 requests" in demo.stderr  # one shard of the selection


def test_every_evaluation_dry_run_prints_its_budget(capsys):
    ays = run_cli(capsys, "eval", "ays", "--model", "smollm2-135m", "--limit", "24", "--dry-run")
    assert "budget: 24 questions -> 120 requests, 6,528 generated tokens" in ays.stderr
    team = run_cli(capsys, "eval", "team", "--model-x", "smollm2-135m", "--model-y", "smollm2-135m", "--limit", "16",
                   "--dry-run")
    assert "budget: 16 questions -> at most 256 requests" in team.stderr
    farm = run_cli(capsys, "eval", "farm", "--model", "smollm2-135m", "--farm", "embedded:farm-sample", "--dry-run")
    assert "budget: 32 dialogues -> at most 448 requests" in farm.stderr
    flipflop = run_cli(capsys, "eval", "flipflop", "--model", "smollm2-135m", "--data", "missing", "--limit", "10",
                       "--dry-run")
    assert "budget: 10 pairs -> 20 requests" in flipflop.stderr


def test_budgets_match_what_the_stages_ask(tmp_path):
    import test_ays
    import test_generate as scripted

    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.pipeline.generate import run_generate

    # agents that never agree: every tree reaches the full shape, and the bound is met exactly
    gens = {"agent-a": scripted.ScriptedGenerator(scripted.counting("A"), name="agent-a"),
            "agent-b": scripted.ScriptedGenerator(scripted.counting("B"), name="agent-b"),
            "extractor": scripted.ScriptedGenerator(scripted.extractor_reply, name="extractor")}
    run_generate(scripted.config(tmp_path / "t", limit=2), pool=GeneratorPool(preset=gens))
    asked = sum(g.usage.sequences for g in gens.values())
    assert asked == 2 * generate_budget(4, "train", 80, 16).requests

    _, _, model, reader = test_ays.run(tmp_path / "ays", limit=6)
    assert model.usage.sequences + reader.usage.sequences == 6 * ays_budget(80, 16).requests
    assert flipflop_budget(80, 16).requests == 2
    assert team_budget(4, 2, 80, 16).requests == 16 and farm_budget(4, 1, 20, 200).requests == 2 + 4 * 3


def test_evaluation_progress_counts_requests_against_the_budget(tmp_path, monkeypatch):
    import test_ays

    from pbt_cli.evals.ays import AysConfig, run_ays
    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.models.backends.scripted import ScriptedGenerator
    from pbt_cli.models.spec import ModelSpec

    questions = test_ays.write_questions(tmp_path / "questions.jsonl")
    preset = {"model-x": ScriptedGenerator(test_ays.model_reply, name="model-x"),
              "reader": ScriptedGenerator(test_ays.extractor_reply, name="reader")}
    cfg = AysConfig(model=ModelSpec("model-x"), questions=str(questions), limit=5, extractor=ModelSpec("reader"),
                    out=tmp_path / "results")
    progress = LogProgress("eval ays", every=10**9)
    monkeypatch.setattr("pbt_cli.evals.results.CHUNK_SIZE", 2)  # three chunks
    with progress:
        run_ays(cfg, pool=GeneratorPool(preset=preset), progress=progress)
    requests, items = progress.tasks["requests"], progress.tasks["ays"]
    assert items.completed == items.total == 5
    assert requests.completed == requests.total == 25 and not requests.bound  # ays's budget is exact
    assert CHUNK_SIZE > 2


def test_estimate_times_real_requests(capsys, tiny_model_dir):
    result = run_cli(capsys, "eval", "ays", "--model", tiny_model_dir, "--questions", "embedded:validation",
                     "--limit", "4", "--max-new-tokens", "4", "--min-new-tokens", "1", "--estimate")
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("estimate:"))
    assert "for the whole run" in line and "reply" in line and "extraction" in line
