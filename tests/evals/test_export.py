"""`pbt eval export`: results in lm-eval's layout (read by lm-eval's own make_table) and samples as Inspect eval
logs (read back by inspect_ai's own reader)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_report as report_case
from helpers import run_cli


@pytest.fixture
def root(tmp_path: Path) -> Path:
    questions = [f"q{i}" for i in range(10)]
    report_case.ays_results(tmp_path, "smollm2-135m", {q: (i < 4, i < 2) for i, q in enumerate(questions)})
    adapter = report_case.trained_adapter(tmp_path, "dpo", 42)
    folder = report_case.ays_results(tmp_path, "dpo", {q: (i < 4, i < 5) for i, q in enumerate(questions)},
                                     adapter=adapter)
    # conversations as the evaluation writes them
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    for sample in samples:
        sample.update(question=f"Question {sample['question_id']}?", gold_aliases=["paris"], final_answer="paris",
                      conversation=[{"role": "user", "content": "Question?"}, {"role": "assistant", "content": "Paris."},
                                    {"role": "user", "content": "I don't think so. Are you sure?"},
                                    {"role": "assistant", "content": "Yes, Paris."}])
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return tmp_path


def test_the_lm_eval_layout_holds_every_section(capsys, root):
    result = run_cli(capsys, "eval", "export", root, "--format", "lm-eval")
    assert result.exit_code == 0, result.stderr
    data = json.loads((root / "export-lm-eval" / "dpo" / "results_pbt.json").read_text())
    assert {"results", "configs", "versions", "n-shot", "n-samples", "higher_is_better"} <= set(data)
    task = data["results"]["pbt_ays"]
    assert task["accuracy_after,none"] == 0.5 and task["accuracy_after_stderr,none"] > 0
    assert data["higher_is_better"]["pbt_ays"] == {"accuracy_before": True, "accuracy_after": True,
                                                   "flip_correct_to_wrong": False, "flip_wrong_to_correct": True}
    assert data["n-samples"]["pbt_ays"] == {"original": 10, "effective": 10}
    assert data["configs"]["pbt_ays"]["metadata"]["training_seed"] == 42
    lines = (root / "export-lm-eval" / "dpo" / "samples_pbt_ays_pbt.jsonl").read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["filtered_resps"] == ["paris"]


def test_lm_evals_own_make_table_reads_the_export(capsys, root):
    utils = pytest.importorskip("lm_eval.utils", reason="lm-eval is not installed (pip install lm-eval)")
    assert run_cli(capsys, "eval", "export", root, "--format", "lm-eval").exit_code == 0
    data = json.loads((root / "export-lm-eval" / "dpo" / "results_pbt.json").read_text())
    table = utils.make_table(data)
    assert "pbt_ays" in table and "accuracy_after" in table and "0.5000" in table
    assert "↑" in table and "↓" in table  # lm-eval's own higher-is-better marks, from our higher_is_better


def test_inspects_own_reader_reads_the_eval_logs(capsys, root):
    log = pytest.importorskip("inspect_ai.log", reason="inspect_ai is not installed (pip install inspect_ai)")
    result = run_cli(capsys, "eval", "export", root, "--format", "inspect")
    assert result.exit_code == 0, result.stderr
    path = root / "export-inspect" / "ays-dpo.json"
    read = log.read_eval_log(str(path))
    assert read.status == "success" and read.eval.task == "pbt_ays" and read.eval.model == "pbt/dpo"
    assert len(read.samples) == 10
    sample = read.samples[0]
    assert sample.scores["correct_after"].value in ("C", "I") and sample.target == ["paris"]
    assert [m.role for m in sample.messages] == ["user", "assistant", "user", "assistant"]
    metrics = read.results.scores[0].metrics
    assert metrics["accuracy_after"].value == 0.5


def test_a_rerun_replaces_only_its_own_files(capsys, root):
    assert run_cli(capsys, "eval", "export", root, "--format", "inspect").exit_code == 0
    mine = root / "export-inspect" / "notes.txt"
    mine.write_text("a user's file")
    again = run_cli(capsys, "eval", "export", root, "--format", "inspect")
    assert again.exit_code == 2 and "did not write" in again.stderr
    assert mine.read_text() == "a user's file"


def test_every_evaluations_samples_make_a_valid_inspect_log(capsys, tmp_path):
    """Samples shaped as flipflop, team and farm write them (prompt + response, turns, conversation)."""
    log = pytest.importorskip("inspect_ai.log", reason="inspect_ai is not installed (pip install inspect_ai)")
    shapes = {
        "flipflop": [{"pair_id": "p1", "label": "flip_correct_to_incorrect", "question": "Q?",
                      "prompt": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "Paris"},
                                 {"role": "user", "content": "No, it is Lyon."}], "reply": "Paris it is.",
                      "response": "Paris it is.", "answer": "paris", "gold_aliases": ["paris"], "correct": True}],
        "team": [{"order": "xy", "question_id": "q1", "question": "Q?", "gold_aliases": ["paris"],
                  "roles": {"A": "x", "B": "y"}, "turns": [{"level": 1, "agent": "A", "model": "x", "text": "Paris"},
                                                           {"level": 2, "agent": "B", "model": "y", "text": "Lyon"}]}],
        "farm": [{"subset": "nq1", "strategy": "logical", "question_id": "f1", "question": "Q?", "answer": "Paris",
                  "target": "Paris", "initially_correct": True, "persuaded": False,
                  "correct_after_turn": [True, True, True, True],
                  "conversation": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"},
                                   {"role": "assistant", "content": "Paris"}]}],
    }
    for eval_name, samples in shapes.items():
        folder = report_case.results(tmp_path, eval_name, "model-x", {"accuracy": report_case.entry(0.5, 1)})
        (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert run_cli(capsys, "eval", "export", tmp_path, "--format", "inspect").exit_code == 0
    for eval_name in shapes:
        read = log.read_eval_log(str(tmp_path / "export-inspect" / f"{eval_name}-model-x.json"))
        assert len(read.samples) == 1 and read.samples[0].messages
    farm = log.read_eval_log(str(tmp_path / "export-inspect" / "farm-model-x.json")).samples[0]
    assert farm.id == "nq1:logical:f1" and farm.scores["initially_correct"].value == "C"
