"""`pbt eval team` (docs/method.md §6.4): two models in standard dialogues, in both speaking orders.

Scripted models: X's own answer is always right, Y's always wrong. Each is an "adopter" (once it sees
the other model's answer, it takes it over) or "stubborn" (it never changes), per question:

    question   X         Y
    q-adopt-1  adopter   adopter
    q-adopt-2  adopter   adopter
    q-y-stub   adopter   stubborn
    q-x-stub   stubborn  adopter
    q-both     stubborn  stubborn

With both-first, the second speaker opens without seeing the first speaker's opening (level 1);
the first speaker is the first to see an answer of the other (level 2). Worked out by hand, with
4 turns (levels 0-3) and a dialogue ending as soon as the two answers match:

    order xy (X opens)                         order yx (Y opens)
    adopt-1/2: X right, Y wrong, X takes Y's   Y wrong, X right, Y takes X's
               wrong: both wrong, agree                  right: both right, agree
    y-stub:    X right, Y wrong, X takes wrong Y wrong, X right, Y wrong, X takes wrong
               both wrong, agree                          both wrong, agree
    x-stub:    X right, Y wrong, X right,      Y wrong, X right, Y takes right:
               Y takes right: both right                  both right, agree
    both:      X right, Y wrong, X, Y: no agreement at the end (team 0.5)   same

So the order changes the outcome: team accuracy 0.3 in order xy, 0.7 in order yx, a gap of -0.4.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import answer_after, extract_reply, run_cli

from pbt_cli.data.prompts import question_prompt
from pbt_cli.errors import PbtError
from pbt_cli.evals import team as team_module
from pbt_cli.evals.team import TeamConfig, rescore, run_team, score_sample, team_metrics
from pbt_cli.models.backends import GeneratorPool
from pbt_cli.models.backends.scripted import ScriptedGenerator
from pbt_cli.models.spec import ModelSpec

# question_id: (question, gold, Y's wrong answer, X stubborn, Y stubborn)
CASES = {
    "q-adopt-1": ("What is the capital of France?", "Paris", "Lyon", False, False),
    "q-adopt-2": ("What is the capital of Italy?", "Rome", "Milan", False, False),
    "q-y-stub": ("What is the capital of Germany?", "Berlin", "Munich", False, True),
    "q-x-stub": ("What is the capital of Spain?", "Madrid", "Seville", True, False),
    "q-both": ("What is the capital of Japan?", "Tokyo", "Osaka", True, True),
}
BY_QUESTION = {case[0]: case for case in CASES.values()}
MY_ANSWER = re.compile(r"My answer is ([^.]+)\.")

# per order: x_first, y_first, x_final, y_final, team, agreement (values over the 5 questions)
EXPECTED = {
    "xy": {"x_accuracy_first": 1.0, "y_accuracy_first": 0.0, "x_accuracy_final": 0.4, "y_accuracy_final": 0.2,
           "team_accuracy": 0.3, "agreement": 0.8},
    "yx": {"x_accuracy_first": 1.0, "y_accuracy_first": 0.0, "x_accuracy_final": 0.8, "y_accuracy_final": 0.6,
           "team_accuracy": 0.7, "agreement": 0.8},
}


def write_questions(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for qid, (question, gold, *_) in CASES.items():
            handle.write(json.dumps({"question_id": qid, "question": question,
                                     "answer": {"value": gold, "aliases": [gold]}}) + "\n")
    return path


def question_of(conversation) -> str:
    return conversation[0]["content"].split("Question: ", 1)[1].split("\n\n", 1)[0]


def seen_answer(conversation) -> str | None:
    """The last answer the other model gave in this view (its turns are the user messages)."""
    found = [m for message in conversation if message["role"] == "user" for m in MY_ANSWER.findall(message["content"])]
    return found[-1] if found else None


def agent(which: str):
    def reply(conversation, sampling) -> str:
        _, gold, wrong, x_stubborn, y_stubborn = BY_QUESTION[question_of(conversation)]
        own, stubborn = (gold, x_stubborn) if which == "x" else (wrong, y_stubborn)
        seen = seen_answer(conversation)
        answer = own if stubborn or seen is None else seen
        return f"My answer is {answer}. I am sure of it"  # the unfinished last sentence is trimmed

    return reply


def extractor_reply(conversation, sampling) -> str:
    assert conversation[-1] == {"role": "assistant", "content": "Final answer:"}
    return " " + answer_after("My answer is", extract_reply(conversation))


def run(tmp_path: Path, **overrides):
    gens = {"model-x": ScriptedGenerator(agent("x"), name="model-x"),
            "model-y": ScriptedGenerator(agent("y"), name="model-y"),
            "reader": ScriptedGenerator(extractor_reply, name="reader")}
    settings = dict(model_x=ModelSpec("model-x"), model_y=ModelSpec("model-y"), extractor=ModelSpec("reader"),
                    questions=str(write_questions(tmp_path / "questions.jsonl")), limit=None,
                    out=tmp_path / "results")
    settings.update(overrides)
    results, folder = run_team(TeamConfig(**settings), pool=GeneratorPool(preset=gens))
    return results, folder, gens


def read_samples(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


# --- metrics -------------------------------------------------------------------------------------------


def test_order_changes_the_outcome_metrics_by_hand(tmp_path):
    results, _, _ = run(tmp_path)
    metrics = results["metrics"]
    assert set(metrics) == {"xy", "yx", "order_gap", "abs_order_gap"}
    for order, expected in EXPECTED.items():
        for name, value in expected.items():
            entry = metrics[order][name]
            assert entry["value"] == pytest.approx(value), (order, name)
            assert entry["n"] == 5
            assert entry["ci95"][0] <= entry["value"] <= entry["ci95"][1]
    # xy minus yx per question: adopt-1 and adopt-2 -1 each, the others 0
    assert metrics["order_gap"]["value"] == pytest.approx(-0.4)
    assert metrics["order_gap"]["n"] == 5
    assert metrics["abs_order_gap"] == pytest.approx(0.4)
    low, high = metrics["order_gap"]["ci95"]
    assert low <= -0.4 <= high and high <= 0.0  # no question has a positive difference


def test_per_question_answers_by_hand(tmp_path):
    _, folder, _ = run(tmp_path)
    samples = {(s["order"], s["question_id"]): s for s in read_samples(folder)}
    assert len(samples) == 10
    assert samples["xy", "q-adopt-1"]["final"] == {"x": "Lyon", "y": "Lyon"}
    assert samples["yx", "q-adopt-1"]["final"] == {"x": "Paris", "y": "Paris"}
    assert samples["xy", "q-adopt-1"]["first"] == {"x": "Paris", "y": "Lyon"}
    assert samples["yx", "q-y-stub"]["final"] == {"x": "Munich", "y": "Munich"}
    assert samples["xy", "q-x-stub"]["final"] == {"x": "Madrid", "y": "Madrid"}
    both = samples["xy", "q-both"]
    assert both["final"] == {"x": "Tokyo", "y": "Osaka"} and both["agree"] is False and both["team_correct"] == 0.5
    # Dialogue lengths: the dialogue ends as soon as the two answers match.
    lengths = {key: len(s["turns"]) for key, s in samples.items()}
    assert lengths == {("xy", "q-adopt-1"): 3, ("xy", "q-adopt-2"): 3, ("xy", "q-y-stub"): 3, ("xy", "q-x-stub"): 4,
                       ("xy", "q-both"): 4, ("yx", "q-adopt-1"): 3, ("yx", "q-adopt-2"): 3, ("yx", "q-y-stub"): 4,
                       ("yx", "q-x-stub"): 3, ("yx", "q-both"): 4}
    for (order, _), sample in samples.items():
        assert sample["roles"] == {"A": order[0], "B": order[1]}
        assert [t["agent"] for t in sample["turns"]] == ["A", "B", "A", "B"][: len(sample["turns"])]
        assert [t["model"] for t in sample["turns"]] == [order[0], order[1], order[0], order[1]][: len(sample["turns"])]
        assert sample["gold_aliases"] == [CASES[sample["question_id"]][1].lower()]


def test_the_second_speaker_opens_without_seeing_the_first_with_both_first(tmp_path):
    _, _, gens = run(tmp_path)
    x_calls, y_calls = gens["model-x"].calls, gens["model-y"].calls
    # x's calls: xy level 0 and 2, then yx level 1 and 3; y's: xy level 1 and 3, then yx level 0 and 2
    for conversation, _ in y_calls[0] + x_calls[2]:  # the second speaker's opening, in each order
        assert conversation == [{"role": "user", "content": question_prompt(question_of(conversation), "standard")}]
    for conversation, _ in x_calls[1]:  # X at level 2 of xy: its opening, then Y's opening
        assert [m["role"] for m in conversation] == ["user", "assistant", "user"]
        assert conversation[0]["content"] == question_prompt(question_of(conversation), "standard")
        assert conversation[1]["content"] == f"My answer is {BY_QUESTION[question_of(conversation)][1]}."


def test_without_both_first_the_first_speaker_wins(tmp_path):
    # The second speaker now sees the opening at level 1: an adopter takes it and the dialogue ends.
    results, folder, gens = run(tmp_path, both_first=False)
    metrics = results["metrics"]
    # xy: adopt-1/2 and x-stub: Y takes X's right opening (1 each); y-stub: X takes Y's wrong answer at
    # level 2 (0); both stubborn: 0.5.
    assert metrics["xy"]["team_accuracy"]["value"] == pytest.approx(0.7)
    assert metrics["xy"]["y_accuracy_first"]["value"] == pytest.approx(0.6)  # Y took X's right answer at once
    # yx: adopt-1/2 and y-stub: X takes Y's wrong opening (0); x-stub: Y takes X's right answer at level 2.
    assert metrics["yx"]["team_accuracy"]["value"] == pytest.approx(0.3)
    assert metrics["yx"]["x_accuracy_first"]["value"] == pytest.approx(0.4)
    assert metrics["order_gap"]["value"] == pytest.approx(0.4)  # +1 on adopt-1 and adopt-2
    assert metrics["abs_order_gap"] == pytest.approx(0.4)
    opening = gens["model-y"].calls[0][0][0]
    assert opening[0]["content"].startswith(question_prompt(question_of(opening), "standard") + "\n\nMy answer is ")


# --- batching and sampling ---------------------------------------------------------------------------


def test_one_call_per_level_for_all_questions_per_order(tmp_path):
    _, _, gens = run(tmp_path)
    # xy: X 5 (level 0), Y 5, X 5, Y 2 (x-stub and both still open); yx: Y 5, X 5, Y 5, X 2 (y-stub, both)
    assert [len(call) for call in gens["model-x"].calls] == [5, 5, 5, 2]
    assert [len(call) for call in gens["model-y"].calls] == [5, 2, 5, 5]
    assert [len(call) for call in gens["reader"].calls] == [5, 5, 5, 2, 5, 5, 5, 2]


def test_greedy_dialogue_and_short_greedy_extraction(tmp_path):
    _, _, gens = run(tmp_path, max_new_tokens=40)
    for name in ("model-x", "model-y"):
        samplings = [s for call in gens[name].calls for _, s in call]
        assert samplings and all(s.greedy and s.temperature == 0 and s.max_new_tokens == 40 for s in samplings)
    extraction = [s for call in gens["reader"].calls for _, s in call]
    assert all(s.greedy and s.max_new_tokens == 16 for s in extraction)


def test_model_x_is_the_extractor_for_both_orders_by_default(tmp_path):
    def x_and_extractor(conversation, sampling):
        if conversation[-1]["role"] == "assistant":
            return extractor_reply(conversation, sampling)
        return agent("x")(conversation, sampling)

    gens = {"model-x": ScriptedGenerator(x_and_extractor, name="model-x"),
            "model-y": ScriptedGenerator(agent("y"), name="model-y")}
    cfg = TeamConfig(model_x=ModelSpec("model-x"), model_y=ModelSpec("model-y"),
                     questions=str(write_questions(tmp_path / "questions.jsonl")), out=tmp_path / "results")
    results, _ = run_team(cfg, pool=GeneratorPool(preset=gens))
    assert results["metrics"]["order_gap"]["value"] == pytest.approx(-0.4)
    assert results["models"]["extractor"]["name"] == "model-x"
    assert all(conversation[-1]["role"] == "user" for call in gens["model-y"].calls for conversation, _ in call)


# --- files and rescoring -------------------------------------------------------------------------------


def test_results_files_and_rescore_reproduce_the_metrics_exactly(tmp_path, monkeypatch):
    results, folder, _ = run(tmp_path, seed=7)
    assert folder == tmp_path / "results" / "team" / "model-x__model-y"
    stored = json.loads((folder / "results.json").read_text())
    assert stored["metrics"] == json.loads(json.dumps(results["metrics"]))
    assert stored["seeds"] == {"questions": 7, "bootstrap": 7}
    assert stored["orders"] == ["xy", "yx"] and stored["n"] == 10
    assert set(stored["models"]) == {"x", "y", "extractor"}
    # rescoring reads the bootstrap seed beside the samples: every CI bound is the same
    assert rescore(folder / "samples.jsonl") == stored["metrics"]
    assert rescore(folder) == stored["metrics"]
    # the seed really is the one results.json records (5 questions give the same coarse CIs for many seeds)
    seeds = []

    def spy(samples, seed=0):
        seeds.append(seed)
        return team_metrics(samples, seed)

    monkeypatch.setattr(team_module, "team_metrics", spy)
    assert rescore(folder) == stored["metrics"] and seeds == [7]


def test_rescore_from_the_turns_alone(tmp_path):
    # the stored scores are not needed: only the transcript's turns, roles and gold aliases
    _, folder, _ = run(tmp_path)
    stored = json.loads((folder / "results.json").read_text())
    keep = ("order", "question_id", "question", "gold_aliases", "roles", "turns")
    stripped = [{k: s[k] for k in keep} for s in read_samples(folder)]
    assert team_metrics(stripped, seed=42) == stored["metrics"]
    assert score_sample(stripped[0])["team_correct"] in (0.0, 0.5, 1.0)


@pytest.mark.parametrize(("both_first", "y_first"), [(True, "NONE"), (False, "Paris")])
def test_y_agreeing_in_a_blind_opening_has_no_first_answer(both_first, y_first):
    # y speaks second; under both-first it did not see x's Paris, so its AGREE is no answer of its own
    sample = {"roles": {"A": "x", "B": "y"}, "gold_aliases": ["paris"], "both_first": both_first,
              "turns": [{"level": 0, "agent": "A", "model": "x", "extracted": "Paris"},
                        {"level": 1, "agent": "B", "model": "y", "extracted": "AGREE"}]}
    scores = score_sample(sample)
    assert scores["first"] == {"x": "Paris", "y": y_first}
    assert scores["correct_final"]["y"] is (not both_first)


def test_cli_rescore_prints_the_stored_metrics(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # the table's width does not depend on the terminal running the tests
    _, folder, _ = run(tmp_path)
    stored = json.loads((folder / "results.json").read_text())
    as_json = run_cli(capsys, "eval", "team", "--rescore", folder / "samples.jsonl", "--json")
    assert as_json.exit_code == 0, as_json.stderr
    assert json.loads(as_json.stdout)["metrics"] == stored["metrics"]

    table = run_cli(capsys, "eval", "team", "--rescore", folder)
    assert table.exit_code == 0, table.stderr
    for name in ("team_accuracy", "agreement", "x_accuracy_first", "order_gap", "abs_order_gap"):
        assert name in table.stdout
    assert "0.300" in table.stdout and "0.700" in table.stdout and "-0.400" in table.stdout


def test_cli_rescore_of_a_non_team_file_is_one_line(capsys, tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"question_id": "q1", "correct_before": True}) + "\n")
    result = run_cli(capsys, "eval", "team", "--rescore", samples)
    assert result.exit_code == 2
    assert "not a team samples file" in result.stderr
    with pytest.raises(PbtError, match="does not exist"):
        rescore(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("order", ["xy", "yx"])
def test_one_order_only_reports_no_gap(tmp_path, order):
    results, folder, gens = run(tmp_path, orders=(order,))
    metrics = results["metrics"]
    assert set(metrics) == {order}
    assert metrics[order]["team_accuracy"]["value"] == pytest.approx(EXPECTED[order]["team_accuracy"])
    assert {s["order"] for s in read_samples(folder)} == {order}
    assert len(gens["reader"].calls) == 4
    assert rescore(folder) == metrics


def test_cli_orders_xy_runs_one_order(capsys, tmp_path, monkeypatch):
    # The CLI with scripted models: hub-id-shaped names pass the offline checks, the pool is preset.
    gens = {"owner/model-x": ScriptedGenerator(agent("x"), name="model-x"),
            "owner/model-y": ScriptedGenerator(agent("y"), name="model-y")}

    def preset_pool(options=None):
        return GeneratorPool(options, preset=gens)

    def shared_x(conversation, sampling):
        is_extraction = conversation[-1]["role"] == "assistant"
        return extractor_reply(conversation, sampling) if is_extraction else agent("x")(conversation, sampling)

    gens["owner/model-x"].reply = shared_x
    monkeypatch.setattr(team_module, "GeneratorPool", preset_pool)
    questions = write_questions(tmp_path / "questions.jsonl")
    result = run_cli(capsys, "eval", "team", "--model-x", "owner/model-x", "--model-y", "owner/model-y",
                     "--questions", questions, "--orders", "xy", "--out", tmp_path / "results", "--json")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed["metrics"]) == {"xy"}
    assert printed["metrics"]["xy"]["team_accuracy"]["value"] == pytest.approx(0.3)
    assert printed["orders"] == ["xy"]
    assert (tmp_path / "results" / "team" / "model-x__model-y" / "results.json").is_file()


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "message"), [
    ({"orders": ("xz",)}, "--orders"),
    ({"orders": ()}, "--orders"),
    ({"max_turns": 1}, "--max-turns"),
    ({"limit": 0}, "--limit"),
])
def test_bad_team_settings_are_refused(overrides, message):
    with pytest.raises(PbtError, match=message):
        TeamConfig(model_x=ModelSpec("model-x"), model_y=ModelSpec("model-y"), **overrides)


def test_cli_team_needs_both_models(capsys):
    result = run_cli(capsys, "eval", "team", "--model-x", "smollm2-135m")
    assert result.exit_code == 2
    assert "--model-x and --model-y" in result.stderr


# --- the real demo model -----------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_team_with_the_demo_model(capsys, tmp_path):
    result = run_cli(capsys, "eval", "team", "--model-x", "smollm2-135m", "--model-y", "smollm2-135m",
                     "--questions", "embedded:validation", "--limit", "3", "--max-new-tokens", "24",
                     "--max-turns", "2", "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "team" / "smollm2-135m__smollm2-135m"
    stored = json.loads((folder / "results.json").read_text())
    assert json.loads(result.stdout)["metrics"] == stored["metrics"]
    assert set(stored["metrics"]) == {"xy", "yx", "order_gap", "abs_order_gap"}
    for order in ("xy", "yx"):
        for name in EXPECTED[order]:
            entry = stored["metrics"][order][name]
            assert entry["n"] == 3 and 0.0 <= entry["value"] <= 1.0
            assert entry["ci95"][0] <= entry["value"] <= entry["ci95"][1]
    # the same model in both seats with greedy decoding: the two orders are the same dialogue
    assert stored["metrics"]["order_gap"]["value"] == 0.0
    samples = read_samples(folder)
    assert len(samples) == 6
    for sample in samples:
        assert 1 <= len(sample["turns"]) <= 2
    assert rescore(folder) == stored["metrics"]


def test_rescore_dry_run_reads_nothing(capsys, tmp_path):
    # a recipe's dry run meets a run that is not there yet: a note, and nothing is scored
    result = run_cli(capsys, "eval", "team", "--rescore", str(tmp_path / "later"), "--dry-run")
    assert result.exit_code == 0
    assert "does not exist yet" in result.stderr and "team_accuracy" not in result.stdout
    assert run_cli(capsys, "eval", "team", "--rescore", str(tmp_path / "later")).exit_code == 2


def test_team_replies_are_greedy_with_the_trees_minimum_length(tmp_path):
    _, _, gens = run(tmp_path)
    samplings = [s for name in ("model-x", "model-y") for call in gens[name].calls for _, s in call]
    assert samplings and all(s.greedy and s.min_new_tokens == 8 and s.max_new_tokens == 80 for s in samplings)


def test_the_default_reader_is_model_x_s_base(tmp_path):
    """Without --extractor-model, X (a full model here, so its own base) reads every answer, in both orders."""
    x = agent("x")

    def x_and_reader(conversation, sampling):
        is_extraction = conversation[-1] == {"role": "assistant", "content": "Final answer:"}
        return extractor_reply(conversation, sampling) if is_extraction else x(conversation, sampling)

    gens = {"model-x": ScriptedGenerator(x_and_reader, name="model-x"),
            "model-y": ScriptedGenerator(agent("y"), name="model-y")}
    cfg = TeamConfig(model_x=ModelSpec("model-x"), model_y=ModelSpec("model-y"), limit=None,
                     questions=str(write_questions(tmp_path / "questions.jsonl")), out=tmp_path / "results")
    results, _ = run_team(cfg, pool=GeneratorPool(preset=gens))
    extractions = [c for call in gens["model-x"].calls for c, _ in call if c[-1]["role"] == "assistant"]
    assert extractions and not any(c[-1]["role"] == "assistant" for call in gens["model-y"].calls for c, _ in call)
    assert results["extractor"]["name"] == "model-x"
