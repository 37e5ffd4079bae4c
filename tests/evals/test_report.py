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
    assert (row["value"], row["ci_low"], row["ci_high"], row["n"]) == ("0.6", "0.5", "0.7", "20")
    # seed: the evaluated model's training seed (none for a base model); eval_seed: the evaluation's own
    assert (row["seed"], row["eval_seed"], row["higher_is_better"]) == ("", "42", "True")
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


# --- comparisons: trained vs base, training seeds, direction ---------------------------------------------

BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def trained_adapter(root: Path, name: str, seed: int) -> Path:
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"stage": "dpo", "status": "complete", "settings": {
        "seed": seed, "learning_rate": 5e-6, "out": str(folder), "beta": 0.1}}))
    return folder


def ays_results(root: Path, model: str, answers: dict[str, tuple[bool, bool]], adapter: Path | None = None) -> Path:
    """ays results and samples: {question_id: (right before, right after)}."""
    before = [b for b, _ in answers.values()]
    after = [a for _, a in answers.values()]
    from pbt_cli.evals.ays import ays_metrics
    samples = [{"question_id": q, "correct_before": b, "correct_after": a} for q, (b, a) in answers.items()]
    folder = results(root, "ays", model, ays_metrics(samples))
    data = json.loads((folder / "results.json").read_text())
    data["models"]["model"] = ({"name": str(adapter), "adapter": str(adapter), "adapter_base": BASE_ID}
                               if adapter else {"name": "smollm2-135m", "base": "/home/me/.cache/pbt/smollm2"})
    data["settings"] = {"questions": "embedded:validation-easy", "limit": 24}
    data["seeds"] = {"questions": 7, "bootstrap": 7}
    data["n"] = len(samples)
    (folder / "results.json").write_text(json.dumps(data))
    (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert len(before) == len(after)
    return folder


@pytest.fixture
def seeded(tmp_path) -> Path:
    questions = [f"q{i}" for i in range(20)]
    ays_results(tmp_path, "smollm2-135m", {q: (i < 4, i < 2) for i, q in enumerate(questions)})
    for seed, right_after in ((12, 6), (42, 8)):
        adapter = trained_adapter(tmp_path, f"dpo_seed{seed}", seed)
        ays_results(tmp_path, f"dpo_seed{seed}", {q: (i < 4, i < right_after) for i, q in enumerate(questions)},
                    adapter=adapter)
    return tmp_path


def test_trained_is_compared_with_its_base_over_shared_items(capsys, seeded):
    from pbt_cli.evals.results import paired_difference

    result = run_cli(capsys, "eval", "report", seeded, "--format", "csv", "--no-plots")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    # one base name, however the model was named: the short name and the adapter's hub id agree
    assert {r["base"] for r in rows} == {BASE_ID}
    assert {r["model"]: r["seed"] for r in rows} == {"smollm2-135m": "", "dpo_seed12": "12", "dpo_seed42": "42"}
    assert {r["eval_seed"] for r in rows} == {"7"}
    directions = {r["metric"]: r["higher_is_better"] for r in rows}
    assert directions["accuracy_after"] == "True" and directions["flip_correct_to_wrong"] == "False"

    compared = list(csv.DictReader(io.StringIO((seeded / "report" / "report_vs_base.csv").read_text())))
    after = next(r for r in compared if r["model"] == "dpo_seed42" and r["metric"] == "accuracy_after")
    assert after["base_model"] == "smollm2-135m" and after["n"] == "20"
    expected = paired_difference([1.0] * 8 + [0.0] * 12, [1.0] * 2 + [0.0] * 18)
    assert float(after["difference"]) == pytest.approx(0.3)
    assert (float(after["ci_low"]), float(after["ci_high"])) == pytest.approx(tuple(expected["ci95"]))
    assert float(after["ci_low"]) > 0  # 6 more right of 20, none fewer: the interval excludes 0
    # a conditional rate (its items differ between the models): the difference, no paired interval
    flip = next(r for r in compared if r["model"] == "dpo_seed42" and r["metric"] == "flip_correct_to_wrong")
    assert flip["difference"] and flip["ci_low"] == "" and flip["n"] == ""


def test_training_seeds_of_one_configuration_are_aggregated(capsys, seeded):
    assert run_cli(capsys, "eval", "report", seeded, "--no-plots").exit_code == 0
    over = list(csv.DictReader(io.StringIO((seeded / "report" / "report_over_seeds.csv").read_text())))
    after = next(r for r in over if r["metric"] == "accuracy_after")
    assert after["model"] == "dpo_seed*" and after["seeds"] == "12 42"
    assert float(after["mean"]) == pytest.approx(0.35) and float(after["sd"]) == pytest.approx(0.0707, abs=1e-4)
    assert (float(after["min"]), float(after["max"])) == (0.3, 0.4)


def test_the_comparison_tables_fit_80_columns_and_no_header_wraps(capsys, seeded):
    trained_adapter(seeded, "a_much_longer_configuration_name_for_a_run_seed64_with_lots_of_words", 64)
    result = run_cli(capsys, "eval", "report", seeded, "--no-plots")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines[1:]) <= 80, result.stdout
    headers = [line for line in lines if line.split()[:2] == ["eval", "metric"]]
    assert len(headers) == 3 + 2 + 1  # per model, trained vs base, over seeds
    assert all("95% CI" in line or "min-max" in line for line in headers)  # each header whole on one line
    assert "dpo_seed42 vs smollm2-135m" in result.stdout and "over training seeds 12 42" in result.stdout
    assert "↑ higher is better" in result.stdout
