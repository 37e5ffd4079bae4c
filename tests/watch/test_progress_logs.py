"""Progress in logs (issue 27, items 1-2): one plain line per record, totals in the unit that moves,
numbers for training, and a numeric ETA once a rate is known."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from pbt_cli import console
from pbt_cli.console import LogProgress
from pbt_cli.progress import report_activity

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("pbt_cli.console.time.perf_counter", lambda: now[0])
    return now


def test_requests_move_inside_a_batch_and_give_a_bounded_eta(clock, caplog):
    caplog.set_level("INFO", logger="pbt")
    with LogProgress("generate", every=60) as progress:
        progress.start("trees", "trees", total=64)
        progress.start("turns", "turns", total=64 * 21, bound=True)
        progress.start("requests", "requests", total=2 * 64 * 21, bound=True)
        clock[0] += 61
        report_activity(100, 5000)  # a backend finished a batch inside one long level: no tree, no turn yet
    first = caplog.records[0].getMessage()
    assert "trees 0/64 (0%, 0/s)" in first and "turns 0/<=1,344" in first
    assert "requests 100/<=2,688 (1.64/s)" in first
    # 2,588 requests left at 100 per 61 s: the ETA is numeric and marked as an upper bound
    assert first.endswith("ETA <=26m18s")
    assert "\n" not in first


def test_eta_is_a_dash_until_something_moved_then_numeric(clock):
    progress = LogProgress("eval farm", every=60)
    progress.start("farm", "farm: items", total=32)
    clock[0] += 30
    assert progress.line().endswith("ETA -")
    progress.advance("farm", 8)
    assert progress.line().endswith("ETA 1m30s")  # 24 left at 8 per 30 s


def test_drop_tightens_a_bound_and_expect_resets_what_is_left(clock):
    progress = LogProgress("generate", every=60)
    progress.start("turns", "turns", total=42, bound=True)
    progress.advance("turns", 2)
    progress.drop("turns", 38)  # both trees ended after B's opening
    assert progress.tasks["turns"].total == 4
    progress.drop("turns", 10)
    assert progress.tasks["turns"].total == 2  # never below what is done
    progress.expect("requests", 10, bound=True)
    assert progress.tasks["requests"].total == 10 and progress.tasks["requests"].bound


def test_training_numbers_are_numbers_in_the_line(clock):
    from pbt_cli.train.progress_log import numeric_logs

    progress = LogProgress("sft", every=60)
    progress.start("steps", "steps", total=240)
    clock[0] += 10
    progress.advance("steps", 20)
    progress.advance("steps", 0, **numeric_logs({"loss": "1.2345", "learning_rate": 0.0003, "epoch": 0.5,
                                                 "grad_norm": 2.0, "train_runtime": 9}))
    line = progress.line()
    assert "steps 20/240 (8%, 2/s) loss 1.234 learning_rate 3.000e-04 grad_norm 2 epoch 0.5" in line
    assert line.endswith("ETA 1m50s") and "train_runtime" not in line


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_log_records_are_one_plain_line_when_stderr_is_not_a_terminal(capsys, restored_logging):
    assert not console.stderr.is_terminal  # pytest captures stderr
    console.setup_logging(0)
    message = "generate: " + " | ".join(f"part {i} with some words" for i in range(12))
    logging.getLogger("pbt").info(message)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].endswith(message)  # no wrapping at 80 columns
    assert lines[0][:4].isdigit() and " INFO " in lines[0]  # a timestamp and the level to grep by


def test_generate_turn_total_ends_exact_from_the_tree_shape(tmp_path):
    import test_generate as scripted

    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.pipeline.generate import run_generate

    gens = {"agent-a": scripted.ScriptedGenerator(scripted.fixed("Paris"), name="agent-a"),
            "agent-b": scripted.ScriptedGenerator(scripted.by_persona({"resist": "B1"}, "Paris"), name="agent-b"),
            "extractor": scripted.ScriptedGenerator(scripted.extractor_reply, name="extractor")}
    progress = LogProgress("generate", every=10**9)
    with progress:
        result = run_generate(scripted.config(tmp_path / "t", limit=3, max_turns=4), pool=GeneratorPool(preset=gens),
                              progress=progress)
    turns = progress.tasks["turns"]
    assert turns.initial == 0 and turns.completed == result.turns
    # the bound started at 21 turns a tree and every ended branch took its subtree off: exact at the end
    assert turns.total == result.turns < 3 * 21
    requests = progress.tasks["requests"]  # the scripted backend reports its requests as the real ones do
    assert requests.total == requests.completed == 2 * result.turns


def test_evaluations_count_requests_against_their_budget(tmp_path):
    from pbt_cli.budget import ays_budget

    budget = ays_budget(80, 16)
    assert (budget.requests, budget.tokens, budget.exact) == (5, 272, True)


def test_terminal_bars_take_the_same_calls(monkeypatch):
    from rich.console import Console

    from pbt_cli.console import RichProgress

    terminal = Console(force_terminal=True, file=open(os.devnull, "w"), width=100)  # noqa: SIM115
    monkeypatch.setattr(console, "stderr", terminal)
    bars = RichProgress()
    with bars:
        bars.start("turns", "turns", total=42, bound=True)
        bars.start("requests", "requests", total=84, bound=True)
        report_activity(10, 100)
        bars.advance("turns", 5, tokens=100)
        bars.drop("turns", 30)
        bars.expect("requests", 20)
        tasks = {task.description: task for task in bars._progress.tasks}
    assert tasks["turns"].total == 12 and tasks["turns"].completed == 5
    assert tasks["requests"].completed == 10 and tasks["requests"].total == 30


def test_a_long_batch_still_gets_a_line_every_interval(caplog):
    import time

    caplog.set_level("INFO", logger="pbt")
    with LogProgress("generate", every=0.2) as progress:
        progress.start("turns", "turns", total=10, bound=True)
        time.sleep(0.7)  # one long batch: nothing advances
    beats = [r.getMessage() for r in caplog.records if "done" not in r.getMessage()]
    assert 2 <= len(beats) <= 4 and all(line.endswith("ETA -") for line in beats)
