"""`pbt eval report` on results the real commands wrote: a trained adapter is compared with its base,
and its row carries its training seed."""

from __future__ import annotations

import csv
import io

from helpers import run_cli


def test_the_report_compares_a_real_adapter_with_its_real_base(capsys, tmp_path, dpo_run, tiny_model_dir):
    out, code, err = dpo_run
    assert code == 0, err
    results = tmp_path / "results"
    for model in (tiny_model_dir, out):
        done = run_cli(capsys, "eval", "ays", "--model", model, "--limit", "3", "--max-new-tokens", "4",
                       "--out", results)
        assert done.exit_code == 0, done.stderr
    report = run_cli(capsys, "eval", "report", results, "--format", "csv", "--no-plots")
    assert report.exit_code == 0, report.stderr
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    assert len({r["base"] for r in rows}) == 1  # the base folder and the adapter's base: one name
    seeds = {r["model"]: r["seed"] for r in rows}
    assert seeds[out.name] == "42" and seeds[tiny_model_dir.name] == ""  # the training seed, not the bootstrap's
    compared = list(csv.DictReader(io.StringIO((results / "report" / "report_vs_base.csv").read_text())))
    before = next(r for r in compared if r["metric"] == "accuracy_before")
    assert (before["model"], before["base_model"], before["n"]) == (out.name, tiny_model_dir.name, "3")
    assert before["ci_low"] and before["ci_high"]
