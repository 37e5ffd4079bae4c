"""Evaluations in shards (`--shard-idx/--num-shards`, or torchrun's RANK and a SLURM array's task).

Every shard writes `samples-K-of-N.jsonl` and `results-K-of-N.json` into the evaluation's folder; the
last shard to finish merges them into `samples.jsonl` and `results.json`. The merged files must be
exactly what one process writes: the same samples in the same order and the same metrics (intervals
included), whatever order the shards finish in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_ays
import test_farm
import test_team
from helpers import run_cli
from test_flipflop import data_dir, extractor_reply, resister  # noqa: F401  (data_dir: a fixture used below)

from pbt_cli.evals.flipflop import FlipflopConfig, run_flipflop
from pbt_cli.launcher import Shard
from pbt_cli.models.backends import GeneratorPool
from pbt_cli.models.backends.scripted import ScriptedGenerator
from pbt_cli.models.spec import ModelSpec

LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT",
                      "SLURM_ARRAY_TASK_MIN")


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def run_flipflop_on(data: Path, tmp_path: Path, **overrides):
    model = ScriptedGenerator(resister, name="model-x")
    reader = ScriptedGenerator(extractor_reply, name="reader")
    cfg = FlipflopConfig(model=ModelSpec("model-x"), data=data, extractor=ModelSpec("reader"),
                         out=tmp_path / "results", **overrides)
    return run_flipflop(cfg, pool=GeneratorPool(preset={"model-x": model, "reader": reader}))


def run_eval(name: str, tmp_path: Path, data: Path, **overrides) -> tuple[dict, Path]:
    """One run of an evaluation on the scripted models of its own test module (a fresh script each time)."""
    if name == "ays":
        results, folder, *_ = test_ays.run(tmp_path, **overrides)
    elif name == "team":
        results, folder, _ = test_team.run(tmp_path, **overrides)
    elif name == "farm":
        # one strategy: the scripted model counts a question's retries across its strategies, state a real
        # model does not have (its requests are seeded one by one), and strategies of a question split over shards
        results, folder, _ = test_farm.run(tmp_path, **overrides)
    else:
        results, folder = run_flipflop_on(data, tmp_path, **overrides)
    return results, folder


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("evaluation", ["ays", "team", "farm", "flipflop"])
def test_shards_merge_into_exactly_what_one_process_writes(tmp_path, data_dir, evaluation):  # noqa: F811
    whole, whole_folder = run_eval(evaluation, tmp_path / "one", data_dir)
    expected = lines(whole_folder / "samples.jsonl")
    count = 3
    finished = []
    for index in (2, 0, 1):  # not in order: the merge does not depend on who finishes when
        results, folder = run_eval(evaluation, tmp_path / "sharded", data_dir, shard=Shard(index, count))
        finished.append(index)
        shard_samples = lines(folder / f"samples-{index:05d}-of-00003.jsonl")
        per_item = 2 if evaluation == "team" else 1  # team: both speaking orders of a question
        assert len(shard_samples) == len(range(index, len(expected) // per_item, count)) * per_item
        if len(finished) < count:
            assert results["merged"] is False and "metrics" not in results
            assert results["shards_complete"] == sorted(finished)
            assert not (folder / "results.json").exists() and not (folder / "samples.jsonl").exists()
    assert results["metrics"] == whole["metrics"]  # values, intervals and counts
    assert results["n"] == whole["n"] and results["status"] == "complete"
    assert results["shards"]["count"] == count and len(results["shards"]["sources"]) == count
    assert lines(folder / "samples.jsonl") == expected  # the same samples in the same order
    on_disk = json.loads((folder / "results.json").read_text())
    assert on_disk["metrics"] == whole["metrics"] and on_disk["outputs"][:2] == ["results.json", "samples.jsonl"]


def failing(conversations, sampling):
    raise AssertionError("a finished shard must not generate again")


def test_a_finished_shard_rerun_generates_nothing_and_merges_once_all_are_done(tmp_path, monkeypatch):
    first, folder, *_ = test_ays.run(tmp_path, shard=Shard(0, 2))
    assert first["merged"] is False
    monkeypatch.setattr(test_ays, "model_reply", failing)
    monkeypatch.setattr(test_ays, "extractor_reply", failing)
    again, *_ = test_ays.run(tmp_path, shard=Shard(0, 2))  # shard 1 is not done: nothing to merge yet
    assert again["merged"] is False and again["reused"] is True and again["shards_complete"] == [0]
    monkeypatch.undo()
    merged, *_ = test_ays.run(tmp_path, shard=Shard(1, 2))
    assert merged["metrics"]["accuracy_before"]["n"] == 7
    # a merge that never happened (the files gone): any shard's rerun writes it, without a model
    (folder / "results.json").unlink()
    (folder / "samples.jsonl").unlink()
    monkeypatch.setattr(test_ays, "model_reply", failing)
    monkeypatch.setattr(test_ays, "extractor_reply", failing)
    redone, *_ = test_ays.run(tmp_path, shard=Shard(0, 2))
    assert redone["metrics"] == merged["metrics"] and redone["reused"] is True
    assert len(lines(folder / "samples.jsonl")) == 7


def test_shards_run_with_other_settings_are_not_merged(tmp_path):
    test_ays.run(tmp_path, shard=Shard(0, 2))
    other, folder, *_ = test_ays.run(tmp_path, shard=Shard(1, 2), seed=7)
    assert other["merged"] is False and other["shards_complete"] == [1]
    assert not (folder / "results.json").exists()


def test_finished_results_are_reused_by_every_shard(tmp_path, monkeypatch):
    whole, folder, *_ = test_ays.run(tmp_path)
    monkeypatch.setattr(test_ays, "model_reply", failing)
    monkeypatch.setattr(test_ays, "extractor_reply", failing)
    reused, *_ = test_ays.run(tmp_path, shard=Shard(1, 2))
    assert reused["reused"] is True and reused["metrics"] == whole["metrics"]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["results.json", "samples.jsonl"]


def test_a_shard_rerun_with_overwrite_is_merged_again(tmp_path):
    test_ays.run(tmp_path, shard=Shard(0, 2))
    merged, folder, *_ = test_ays.run(tmp_path, shard=Shard(1, 2))
    rerun, *_ = test_ays.run(tmp_path, shard=Shard(1, 2), overwrite=True)
    assert rerun["metrics"] == merged["metrics"]
    sources = rerun["shards"]["sources"]
    assert sources["results-00000-of-00002.json"] == merged["shards"]["sources"]["results-00000-of-00002.json"]
    assert sources["results-00001-of-00002.json"] != merged["shards"]["sources"]["results-00001-of-00002.json"]


def test_report_and_view_of_shards_not_merged_yet(capsys, tmp_path):
    _, folder, *_ = test_ays.run(tmp_path, shard=Shard(0, 2))
    result = run_cli(capsys, "eval", "report", tmp_path / "results")
    assert result.exit_code == 2 and "not merged yet" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    from pbt_cli.view.collect import Collector

    collector = Collector()
    collector.add(tmp_path / "results")
    data = collector.finish()
    assert {sample["id"] for sample in data.samples} == {s["question_id"] for s in lines(
        folder / "samples-00000-of-00002.jsonl")} and all(sample["eval"] == "ays" for sample in data.samples)


def test_view_of_unmerged_shards_shows_one_run_never_two_layouts_or_settings(tmp_path):
    """Shards of an abandoned --num-shards 2 run, then of --num-shards 3: view shows the newer run's shards
    (each item once), names the others; a newer shard of other settings (another seed) is a run of its own."""
    from pbt_cli.view.collect import Collector

    def view() -> tuple[list[str], list[str]]:
        collector = Collector()
        collector.add(tmp_path / "results")
        data = collector.finish()
        return [sample["id"] for sample in data.samples], data.notes

    def ids(*names: str) -> list[str]:
        return [s["question_id"] for name in names for s in lines(folder / name)]

    _, folder, *_ = test_ays.run(tmp_path, shard=Shard(0, 2))
    for index in (0, 1):
        test_ays.run(tmp_path, shard=Shard(index, 3))
    for name in os.listdir(folder):  # file times that say which run came later, whatever the clock's grain
        later = 200 if "of-00003" in name else 100
        os.utime(folder / name, (later, later))
    shown, notes = view()
    assert shown == ids("samples-00000-of-00003.jsonl", "samples-00001-of-00003.jsonl")
    assert len(shown) == len(set(shown))
    assert any("samples-00000-of-00002.jsonl" in note and "not shown" in note for note in notes), notes

    test_ays.run(tmp_path, shard=Shard(2, 3), seed=7)
    os.utime(folder / "results-00002-of-00003.json", (300, 300))
    shown, notes = view()
    assert shown == ids("samples-00002-of-00003.jsonl")
    assert any("samples-00000-of-00003.jsonl" in note and "samples-00000-of-00002.jsonl" in note for note in notes)


# --- the launcher chooses the shard -----------------------------------------------------------------------


@pytest.mark.parametrize("evaluation", [["ays"], ["team"], ["farm", "--farm", "embedded:farm-sample"]])
def test_under_torchrun_an_evaluation_runs_its_rank_s_shard(capsys, monkeypatch, tmp_path, tiny_model_dir,
                                                            evaluation):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # keep this process's view of GPUs as it was
    models = ["--model-x", tiny_model_dir, "--model-y", tiny_model_dir] if evaluation[0] == "team" \
        else ["--model", tiny_model_dir]
    result = run_cli(capsys, "eval", *evaluation, *models, "--limit", "4", "--out", tmp_path / "results",
                     "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "shard:\n  index: 1\n  count: 2\n  launcher: torchrun" in result.stdout, result.stdout


def test_a_slurm_array_task_runs_its_shard_and_the_last_merges(capsys, monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
    out = tmp_path / "results"
    args = ["eval", "ays", "--model", tiny_model_dir, "--limit", "3", "--max-new-tokens", "4", "--min-new-tokens",
            "1", "--extraction-max-new-tokens", "2", "--dtype", "float32", "--num-shards", "2", "--out", out]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    first = run_cli(capsys, *args)
    assert first.exit_code == 0, first.stderr
    assert "shard 1 of 2 done" in first.stderr and "1 of 2 shards are done" in first.stderr
    assert "still to finish: --shard-idx 0)" in first.stderr
    folder = out / "ays" / tiny_model_dir.name
    assert (folder / "results-00001-of-00002.json").is_file() and not (folder / "results.json").exists()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    last = run_cli(capsys, *args, "--json")
    assert last.exit_code == 0, last.stderr
    results = json.loads(last.stdout)
    assert results["n"] == 3 and results["shards"]["count"] == 2 and results["shards"]["launcher"] == "slurm-array"
    assert results["metrics"]["accuracy_before"]["n"] == 3


def test_two_processes_under_torchrun_write_one_merged_result(tmp_path, tiny_model_dir):
    """Two ranks of one command line (CPU) each run their shard, at the same time, into one folder; the one
    that finishes last merges, and the merged samples are one process's, in the selection's order."""
    common = ["eval", "ays", "--model", str(tiny_model_dir), "--limit", "5", "--max-new-tokens", "4",
              "--min-new-tokens", "1", "--extraction-max-new-tokens", "2", "--dtype", "float32", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for name in LAUNCHER_VARIABLES:
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pbt_cli",
         *common, "--out", str(tmp_path / "sharded")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "pbt_cli", *common, "--out", str(tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = tmp_path / "sharded" / "ays" / tiny_model_dir.name
    one = tmp_path / "one" / "ays" / tiny_model_dir.name
    assert sorted(p.name for p in sharded.iterdir() if not p.name.startswith(".")) == [
        "results-00000-of-00002.json", "results-00001-of-00002.json", "results.json",
        "samples-00000-of-00002.jsonl", "samples-00001-of-00002.jsonl", "samples.jsonl"]
    assert lines(sharded / "samples.jsonl") == lines(one / "samples.jsonl")
    merged, alone = (json.loads((folder / "results.json").read_text()) for folder in (sharded, one))
    assert merged["metrics"] == alone["metrics"] and merged["shards"]["launcher"] == "torchrun"
    assert "shard 0 of 2 done" in done.stderr or "shard 1 of 2 done" in done.stderr  # the first to finish


def test_a_merge_waits_for_a_live_writer_then_says_how_to_finish(tmp_path, monkeypatch):
    """Another live pbt holding the evaluation's folder (an unsharded run, by mistake): the last shard waits
    for it, then stops with one line saying its part is kept and how to merge; the rerun merges."""
    import socket

    import pbt_cli.evals.results as results_module
    from pbt_cli.errors import PbtError

    monkeypatch.setattr(results_module, "MERGE_WAIT_SECONDS", 1.0)
    _, folder, *_ = test_ays.run(tmp_path, shard=Shard(0, 2))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / ".pbt-lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                      "started": "now", "command": "pbt eval ays ..."}))
        with pytest.raises(PbtError, match="every shard is done but not merged.*rerun any shard's command"):
            test_ays.run(tmp_path, shard=Shard(1, 2))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert json.loads((folder / "results-00001-of-00002.json").read_text())["status"] == "complete"
    merged, *_ = test_ays.run(tmp_path, shard=Shard(1, 2))  # the writer is gone: its lock is taken over
    assert merged["metrics"]["accuracy_before"]["n"] == 7


# --- found in review: edges of the merge -------------------------------------------------------------------


def test_more_shards_than_items_still_merge(tmp_path):
    """A shard whose share is empty (torchrun with 8 ranks over 2 questions) is done at once and merges."""
    for index in range(3):
        results, folder, *_ = test_ays.run(tmp_path, limit=2, shard=Shard(index, 3))
    assert results["n"] == 2 and results["metrics"]["accuracy_before"]["n"] == 2
    assert (folder / "samples-00002-of-00003.jsonl").read_text() == ""


def test_only_the_process_that_writes_the_merge_reports_to_a_tracker(tmp_path, monkeypatch):
    import pbt_cli.tracking

    reported = []
    monkeypatch.setattr(pbt_cli.tracking, "report", lambda options, **kwargs: reported.append(kwargs["metrics"]))
    test_ays.run(tmp_path, shard=Shard(0, 2))
    assert reported == []  # a shard alone has no metrics to report
    merged, folder, *_ = test_ays.run(tmp_path, shard=Shard(1, 2))
    assert reported == [merged["metrics"]]
    test_ays.run(tmp_path, shard=Shard(0, 2))  # reused: nothing new to report
    assert len(reported) == 1
    (folder / "results.json").unlink()
    (folder / "samples.jsonl").unlink()
    test_ays.run(tmp_path, shard=Shard(0, 2))  # the rerun that writes the merge reports it
    assert len(reported) == 2


def test_a_shard_replaced_while_its_files_are_read_is_left_to_merge_itself(tmp_path, monkeypatch):
    """Shard 0 rerun with --overwrite deletes its files just as shard 1 merges: shard 1 does not fail (the
    launch would lose a rank); it leaves the merge to shard 0, which finishes later."""
    import pbt_cli.evals.results as results_module

    _, folder, *_ = test_ays.run(tmp_path, shard=Shard(0, 2))
    real = results_module._shard_parts

    def replaced_meanwhile(path, names, manifests):
        manifest = json.loads((folder / "results-00000-of-00002.json").read_text())
        (folder / "samples-00000-of-00002.jsonl").unlink()
        (folder / "results-00000-of-00002.json").write_text(json.dumps({**manifest, "status": "running",
                                                                         "shard": {}}))
        return real(path, names, manifests)

    monkeypatch.setattr(results_module, "_shard_parts", replaced_meanwhile)
    waiting, *_ = test_ays.run(tmp_path, shard=Shard(1, 2))
    assert waiting["merged"] is False and not (folder / "results.json").exists()
    monkeypatch.undo()
    merged, *_ = test_ays.run(tmp_path, shard=Shard(0, 2))  # shard 0 runs again and merges
    assert merged["metrics"]["accuracy_before"]["n"] == 7


def test_a_merge_cut_short_never_leaves_complete_results_over_missing_samples(tmp_path, monkeypatch):
    import pbt_cli.evals.results as results_module

    test_ays.run(tmp_path, shard=Shard(0, 2))
    merged, folder, *_ = test_ays.run(tmp_path, shard=Shard(1, 2))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results_module, "write_jsonl", disk_full)
    with pytest.raises(OSError):
        test_ays.run(tmp_path, shard=Shard(1, 2), overwrite=True)
    assert json.loads((folder / "results.json").read_text())["status"] == "failed"  # never complete
    monkeypatch.undo()
    redone, *_ = test_ays.run(tmp_path, shard=Shard(0, 2))  # any shard's rerun finishes the merge
    assert redone["metrics"] == merged["metrics"] and len(lines(folder / "samples.jsonl")) == 7


def test_whole_results_are_reused_even_over_a_stale_shard_of_other_settings(tmp_path):
    test_ays.run(tmp_path, shard=Shard(0, 2), seed=7)  # an old shard, other settings
    whole, folder, *_ = test_ays.run(tmp_path)
    reused, *_ = test_ays.run(tmp_path, shard=Shard(0, 2))
    assert reused["reused"] is True and reused["metrics"] == whole["metrics"]


def test_card_and_push_of_a_merged_sharded_evaluation(capsys, tmp_path):
    from pbt_cli.hub import read_artifact, upload_list

    test_ays.run(tmp_path, shard=Shard(0, 2))
    _, folder, *_ = test_ays.run(tmp_path, shard=Shard(1, 2))
    result = run_cli(capsys, "card", folder)
    assert result.exit_code == 0, result.stderr
    assert (folder / "README.md").is_file()
    files = upload_list(read_artifact(folder), include_checkpoints=False)
    assert sorted(files) == ["README.md", "results.json", "samples.jsonl"]  # the shard files stay home
    root = upload_list(read_artifact(tmp_path / "results"), include_checkpoints=False)
    assert not [name for name in root if "-of-" in name] and "ays/model-x/samples.jsonl" in root
