"""Training logs its steps like every other stage when stderr is not a terminal (issue 27, item 1)."""

from __future__ import annotations

import re


def test_sft_logs_steps_of_total_with_loss_and_learning_rate_as_numbers(sft_run):
    out, code, err = sft_run
    assert code == 0, err
    done = [line for line in err.splitlines() if "sft done: steps" in line]
    assert len(done) == 1, err
    assert re.search(r"steps 4/4 \(100%, [0-9.e+]+/s\) loss [0-9.e+-]+ learning_rate [0-9.e+-]+", done[0]), done[0]
    assert "{'loss'" not in err  # transformers' PrinterCallback (its dicts of strings) is replaced


def test_view_reads_a_preprocessed_dataset(sft_data):
    from pbt_cli.view.collect import collect

    data = collect([sft_data])
    assert data.pairs and {p["split"] for p in data.pairs} <= {"train", "valid", "validation", "test"}
    assert all(p["chosen"] for p in data.pairs)
