"""`pbt eval report`: one tidy table in every format, one reader per comparison, plots with intervals."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from helpers import run_cli

from pbt_cli.evals.report import COLUMNS

READER = {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": None, "adapter": None,
          "chat_template_hash": "abcdef0123456789"}
OTHER_READER = {**READER, "name": "mistralai/Mistral-7B-Instruct-v0.2"}


def entry(value: float, n: int) -> dict:
    return {"value": value, "ci95": [max(0.0, value - 0.1), min(1.0, value + 0.1)], "n": n}


def results(root: Path, eval_name: str, model: str, metrics: dict, extractor: dict = READER,
            status: str = "complete", base: str | None = None) -> Path:
    folder = root / eval_name / model
    folder.mkdir(parents=True)
    described = {"name": model, "base": base or model}
    models = {"x": described} if eval_name == "team" else {"model": described}
    (folder / "results.json").write_text(json.dumps({
        "stage": f"eval {eval_name}", "eval": eval_name, "status": status, "metrics": metrics, "models": models,
        "extractor": extractor, "seeds": {"bootstrap": 42}}))
    return folder


@pytest.fixture
def root(tmp_path) -> Path:
    long_model = "dpo_balanced_seed42_with_a_rather_long_folder_name"
    for model in ("smollm2-135m", long_model):
        results(tmp_path, "flipflop", model, {"accuracy": entry(0.5, 40),
                                              "accuracy_flip_correct_to_incorrect": entry(0.6, 20),
                                              "accuracy_flip_incorrect_to_correct": entry(0.4, 20)})
        results(tmp_path, "ays", model, {"accuracy_before": entry(0.3, 24), "accuracy_after": entry(0.25, 24),
                                         "flip_correct_to_wrong": entry(0.2, 7), "flip_wrong_to_correct": entry(0.1, 17)})
    results(tmp_path, "team", f"{long_model}__smollm2-135m",
            {"xy": {"team_accuracy": entry(0.4, 16), "x_accuracy_final": entry(0.5, 16)},
             "yx": {"team_accuracy": entry(0.3, 16), "x_accuracy_final": entry(0.4, 16)},
             "order_gap": {"value": 0.1, "ci95": [-0.1, 0.3], "n": 16}})
    return tmp_path


def test_the_tidy_table_in_every_format(capsys, root):
    result = run_cli(capsys, "eval", "report", root, "--format", "csv")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert tuple(rows[0]) == COLUMNS
    resist = {r["model"]: r for r in rows if r["eval"] == "flipflop"
              and r["metric"] == "accuracy_flip_correct_to_incorrect"}
    row = resist["smollm2-135m"]
    assert (row["value"], row["ci_low"], row["ci_high"], row["n"], row["seed"]) == ("0.6", "0.5", "0.7", "20", "42")
    assert {r["extractor"] for r in rows} == {"HuggingFaceTB/SmolLM2-135M-Instruct #abcdef01"}
    gap = next(r for r in rows if r["metric"] == "order_gap")
    assert gap["model"] == "dpo_balanced_seed42_with_a_rather_long_folder_name + smollm2-135m"

    as_json = json.loads(run_cli(capsys, "eval", "report", root, "--format", "json").stdout)
    assert len(as_json) == len(rows) and set(as_json[0]) == set(COLUMNS)
    markdown = run_cli(capsys, "eval", "report", root, "--format", "markdown").stdout
    assert markdown.startswith("| model | base | eval | metric |") and markdown.count("\n") == len(rows) + 2
    for name in ("report.csv", "report.md", "report.json", "manifest.json"):
        assert (root / "report" / name).is_file()


def test_the_table_reads_well_in_an_80_column_log(capsys, root):
    result = run_cli(capsys, "eval", "report", root)  # capsys: not a terminal, Rich's default 80 columns
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()[1:]  # the first line names the folder, whatever its length
    assert max(len(line) for line in lines) <= 80
    text = result.stdout
    assert "dpo_balanced_seed42_with_a_rather_long_folder_name" in text  # the model is never cut away
    assert "resist (flip_correct_to_incorrect)" in text and "accuracy_before" in text  # names are whole
    assert "[0.500, 0.700]" in text  # the interval and n are shown
    assert "answers read by: HuggingFaceTB/SmolLM2-135M-Instruct #abcdef01" in text


def test_results_read_by_different_extractors_are_not_compared(capsys, root):
    results(root, "ays", "graded-elsewhere", {"accuracy_before": entry(0.9, 24)}, extractor=OTHER_READER)
    refused = run_cli(capsys, "eval", "report", root)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.exit_code == 2 and len(lines) == 1
    assert "2 different extractors" in lines[0] and "--mixed-extractors" in lines[0]
    assert "mistralai/Mistral-7B-Instruct-v0.2" in lines[0]
    marked = run_cli(capsys, "eval", "report", root, "--mixed-extractors", "--format", "csv")
    assert marked.exit_code == 0, marked.stderr
    readers = {r["model"]: r["extractor"] for r in csv.DictReader(io.StringIO(marked.stdout))}
    assert readers["graded-elsewhere"].startswith("mistralai/Mistral-7B-Instruct-v0.2")
    table = run_cli(capsys, "eval", "report", root, "--mixed-extractors").stdout
    assert "extractor" in table  # the table gains a column naming each row's reader


def test_unfinished_results_are_left_out_with_a_note(capsys, root):
    results(root, "ays", "still-running", {}, status="running")
    result = run_cli(capsys, "eval", "report", root, "--format", "csv")
    assert result.exit_code == 0
    assert "still-running" not in result.stdout and "still-running is not finished" in result.stderr


def test_plots_show_intervals_and_n(capsys, root):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    calls = []
    original = plt.Axes.errorbar

    def errorbar(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    plt.Axes.errorbar = errorbar
    try:
        result = run_cli(capsys, "eval", "report", root)
    finally:
        plt.Axes.errorbar = original
    assert result.exit_code == 0
    assert (root / "report" / "report_flipflop.png").is_file() and (root / "report" / "report_team.png").is_file()
    points = [c for c in calls if c.get("xerr") is not None]  # (the team bars draw their own error bars too)
    assert len(points) == 2 and all(c["yerr"] for c in points)  # one point per model, with its interval
