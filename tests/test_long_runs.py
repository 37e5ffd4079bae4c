"""Long runs you can watch, stop and resume (README "Watching, stopping and resuming").

- A run whose stderr is not a terminal writes progress lines (done / total, rate, elapsed, ETA).
- An evaluation killed with -9 and rerun ends with the same results as an uninterrupted run.
- SIGTERM ends a stage with complete files, an `interrupted` manifest and exit code 143; its
  rerun finishes the work. Training saves a checkpoint on SIGTERM and resumes from it.
- `--report-to tensorboard` writes event files holding the metrics; wandb works offline.

The kill and signal tests run `pbt` in a subprocess with the tiny model, and wait for the files
the run writes to grow before they stop it, so they depend on no timing of the machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_cli

from pbt_cli.console import LogProgress

ROOT = Path(__file__).resolve().parent.parent


def pbt_process(*args: object, env: dict | None = None) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "pbt_cli", *map(str, args)], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the run ended (code {process.returncode}) before the condition held:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.05)


def lines_in(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


# --- progress in logs --------------------------------------------------------------------------------------


def test_log_progress_writes_a_line_every_interval(monkeypatch, caplog):
    clock = [100.0]
    monkeypatch.setattr("pbt_cli.console.time.perf_counter", lambda: clock[0])
    caplog.set_level("INFO", logger="pbt")
    with LogProgress("generate", every=60) as progress:
        progress.start("trees", "trees", total=64)
        progress.advance("trees", 16)  # 0 s later: no line yet
        assert not caplog.records
        clock[0] += 61
        progress.advance("trees", 16)
        from pbt_cli.progress import report_activity

        report_activity(64, 4000)  # a backend finished a batch: 64 requests, 4000 tokens
        clock[0] += 61
        progress.advance("trees", 0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "generate: trees 32/64 (50%, 0.525/s) | elapsed 1m01s | ETA 1m01s"
    assert "requests 64 | 33 tok/s" in lines[1] and "elapsed 2m02s" in lines[1]
    assert lines[-1].startswith("generate done: trees 32/64")  # the closing line


def test_a_run_without_a_terminal_logs_its_progress(capsys, tmp_path, tiny_model_dir):
    result = run_cli(capsys, "--log-every", "1", "generate", "--model-a", tiny_model_dir, "--model-b", tiny_model_dir,
                     "--limit", "3", "--max-turns", "2", "--max-new-tokens", "4", "--min-new-tokens", "1",
                     "--out", tmp_path / "trees", "--log-file", tmp_path / "run.log")
    assert result.exit_code == 0, result.stderr
    assert "generate done: trees 3/3 (100%" in result.stderr and "requests" in result.stderr
    assert "generate done: trees 3/3" in (tmp_path / "run.log").read_text()  # --log-file gets the same lines


# --- an evaluation killed with -9 resumes to the same results ---------------------------------------------------


def test_an_evaluation_killed_with_sigkill_resumes_to_identical_results(tmp_path, tiny_model_dir):
    args = ["eval", "ays", "--model", tiny_model_dir, "--questions", "embedded:validation", "--limit", "8",
            "--max-new-tokens", "6", "--min-new-tokens", "2"]
    env = {"PBT_EVAL_CHUNK_SIZE": "2"}  # four resumable chunks
    whole = pbt_process(*args, "--out", tmp_path / "whole", env=env)
    assert whole.wait(timeout=300) == 0, whole.communicate()[1]

    out = tmp_path / "killed"
    samples = out / "ays" / tiny_model_dir.name / "samples.jsonl"
    run = pbt_process(*args, "--out", out, env=env)
    wait_for(lambda: lines_in(samples) >= 2, run)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    results = json.loads((samples.parent / "results.json").read_text())
    assert results["status"] == "running" and lines_in(samples) < 8  # stopped part-way, nothing finished

    again = pbt_process(*args, "--out", out, env=env)
    assert again.wait(timeout=300) == 0, again.communicate()[1]
    resumed = json.loads((samples.parent / "results.json").read_text())
    uninterrupted = json.loads((tmp_path / "whole" / "ays" / tiny_model_dir.name / "results.json").read_text())
    assert resumed["status"] == "complete" and resumed["metrics"] == uninterrupted["metrics"]
    assert samples.read_text() == (tmp_path / "whole" / "ays" / tiny_model_dir.name / "samples.jsonl").read_text()


# --- SIGTERM: complete files, an interrupted manifest, exit 143, and a rerun that finishes -------------------------


def test_sigterm_stops_generate_cleanly_and_the_rerun_finishes(tmp_path, tiny_model_dir):
    out = tmp_path / "trees"
    args = ["generate", "--model-a", tiny_model_dir, "--model-b", tiny_model_dir, "--limit", "6", "--max-turns", "2",
            "--max-new-tokens", "6", "--min-new-tokens", "1", "--trees-per-batch", "1", "--out", out]
    run = pbt_process(*args)
    wait_for(lambda: lines_in(out / "trees.jsonl") >= 1, run)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 143, err
    assert "Resume with the same command" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    text = (out / "trees.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(line)["tree_id"] for line in text.splitlines())
    assert not (out / ".pbt-lock").exists()

    again = pbt_process(*args)
    assert again.wait(timeout=300) == 0, again.communicate()[1]
    assert lines_in(out / "trees.jsonl") == 6
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_sigterm_during_training_saves_a_checkpoint_it_resumes_from(tmp_path, tiny_model_dir):
    sys.path.insert(0, str(Path(__file__).parent / "train"))
    from trainkit import make_pairs_folder, preprocess

    pairs = make_pairs_folder(tmp_path / "pairs", {"train": 4, "valid": 2, "test": 2})
    data = preprocess(pairs, tiny_model_dir, tmp_path / "data", "sft")
    out = tmp_path / "sft"
    # The tiny model trains ~30 steps a second on a slow 2-core machine and twice that on a faster one, and the
    # first progress record comes after --log-every (1 s): 40 steps were all done before it on CI. 600 leave
    # room for a machine ten times faster and still take only ~20 s here.
    steps = 600
    args = ["sft", "--model", tiny_model_dir, "--data", data, "--out", out, "--max-steps", str(steps), "--save-steps", "100000",
            "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "1", "--warmup-steps", "1",
            "--logging-steps", "1", "--log-every", "1"]
    run = pbt_process(*args)
    seen: list[str] = []

    def trained_two_steps() -> bool:
        # off a terminal, training logs `sft: steps N/600 ...` every --log-every seconds on stderr
        line = run.stderr.readline()
        if line:
            seen.append(line)
        return any(int(found.group(1)) >= 2 for entry in seen if (found := re.search(rf"steps (\d+)/{steps}", entry)))

    wait_for(trained_two_steps, run)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=180)
    assert run.returncode == 143, err
    saved = sorted(out.glob("checkpoints/checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert saved, "no checkpoint was saved on SIGTERM"
    step = int(saved[-1].name.split("-")[1])
    assert 2 <= step < steps
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"

    again = pbt_process(*args)
    out_text, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    logged = [json.loads(line)["step"] for line in (out / "log_history.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert logged == list(range(1, steps + 1))  # every step once: resumed from the checkpoint, not from scratch
    assert json.loads((out / "manifest.json").read_text())["global_step"] == steps


# --- tracking ---------------------------------------------------------------------------------------------------


def test_tensorboard_event_files_hold_the_evaluation_metrics(capsys, tmp_path, tiny_model_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli(capsys, "eval", "ays", "--model", tiny_model_dir, "--limit", "2", "--max-new-tokens", "4",
                     "--out", tmp_path / "results", "--report-to", "tensorboard")
    assert result.exit_code == 0, result.stderr
    folder = tmp_path / "results" / "ays" / tiny_model_dir.name
    events = EventAccumulator(str(folder / "runs"))
    events.Reload()
    results = json.loads((folder / "results.json").read_text())
    scalars = events.Tags()["scalars"]
    assert "accuracy_before" in scalars and "accuracy_before_n" in scalars
    assert events.Scalars("accuracy_before")[0].value == pytest.approx(results["metrics"]["accuracy_before"]["value"])
    assert "samples/text_summary" in events.Tags()["tensors"]


def test_wandb_offline_keeps_the_run_in_the_results_folder(capsys, tmp_path, tiny_model_dir, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run_cli(capsys, "eval", "ays", "--model", tiny_model_dir, "--limit", "2", "--max-new-tokens", "4",
                     "--out", tmp_path / "results", "--report-to", "wandb", "--project", "pbt-tests",
                     "--run-name", "tiny-ays")
    assert result.exit_code == 0, result.stderr
    runs = list((tmp_path / "results" / "ays" / tiny_model_dir.name / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


# --- a finished run is found again after its folder moves ------------------------------------------------------


def test_a_training_run_moved_elsewhere_is_reused_and_a_copy_resumes(capsys, tmp_path, tiny_model_dir):
    import shutil

    sys.path.insert(0, str(Path(__file__).parent / "train"))
    from trainkit import make_pairs_folder, preprocess

    pairs = make_pairs_folder(tmp_path / "pairs", {"train": 2, "valid": 1, "test": 1})
    data = preprocess(pairs, tiny_model_dir, tmp_path / "data", "sft")
    args = ["sft", "--model", tiny_model_dir, "--data", data, "--max-steps", "2", "--save-steps", "1",
            "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "1", "--warmup-steps", "0",
            "--eval-strategy", "no"]
    first = run_cli(capsys, *args, "--out", tmp_path / "run")
    assert first.exit_code == 0, first.stderr
    shutil.move(tmp_path / "run", tmp_path / "moved")
    again = run_cli(capsys, *args, "--out", tmp_path / "moved")
    assert again.exit_code == 0, again.stderr
    assert "up to date, reused" in again.stderr
    # a copy whose run had stopped after its first checkpoint resumes from it
    shutil.copytree(tmp_path / "moved", tmp_path / "copy")
    manifest = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    (tmp_path / "copy" / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    shutil.rmtree(tmp_path / "copy" / "checkpoints" / "checkpoint-2")
    shutil.copytree(tmp_path / "copy", tmp_path / "damaged")
    resumed = run_cli(capsys, *args, "--out", tmp_path / "copy")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads((tmp_path / "copy" / "manifest.json").read_text())["status"] == "complete"
    # a checkpoint whose trainer_state.json is damaged: one line that says what to do
    (tmp_path / "damaged" / "checkpoints" / "checkpoint-1" / "trainer_state.json").write_text('{"global_step": ')
    damaged = run_cli(capsys, *args, "--out", tmp_path / "damaged")
    lines = [line for line in damaged.stderr.splitlines() if line.strip()]
    assert damaged.exit_code == 2 and len(lines) == 1, damaged.stderr
    assert "trainer_state.json is not valid JSON" in lines[0]


# --- a server that asks to wait long ------------------------------------------------------------------------------


def test_a_long_retry_after_waits_at_most_the_request_timeout_and_says_so(capsys, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "served"))
    from stub_server import StubServer

    server = StubServer(faults=["ok"] * 5 + ["429:30"]).start()
    try:
        started = time.monotonic()
        result = run_cli(capsys, "eval", "ays", "--model", f"openai:stub@{server.url}", "--questions",
                         "embedded:validation", "--limit", "2", "--request-timeout", "2", "--out", tmp_path / "r")
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert result.exit_code == 0, result.stderr
    assert elapsed < 20  # not the 30 s the server asked for
    assert "retrying in 2 s as the server asks" in " ".join(result.stderr.split())  # the log line may wrap


def test_a_served_reply_with_no_content_is_reported(capsys, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "served"))
    from stub_server import StubServer, default_reply

    # after the start-up checks, every reply has `content: null`
    server = StubServer(reply=lambda body: None if len(server.bodies) >= 3 else default_reply(body)).start()
    try:
        result = run_cli(capsys, "eval", "ays", "--model", f"openai:stub@{server.url}", "--questions",
                         "embedded:validation", "--limit", "2", "--out", tmp_path / "r")
    finally:
        server.stop()
    assert result.exit_code == 0, result.stderr
    assert "no text (content null" in " ".join(result.stderr.split())  # the log line may wrap
