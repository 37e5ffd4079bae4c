"""`pbt generate` under torchrun or a SLURM array takes its shard from the launcher when --shard-idx is not
given (pbt_cli/launcher.py)."""

from __future__ import annotations

import pytest
from helpers import run_cli

from pbt_cli.errors import PbtError
from pbt_cli.launcher import launcher_shard, own_gpu_only

LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN",
                      "SLURM_ARRAY_TASK_COUNT")


@pytest.mark.parametrize(("flags", "env", "expected"), [
    ((None, None), {}, (0, 1, None)),
    ((None, 4), {}, (0, 4, None)),
    ((None, None), {"WORLD_SIZE": "4", "RANK": "2"}, (2, 4, "torchrun")),
    ((None, None), {"WORLD_SIZE": "1", "RANK": "0"}, (0, 1, None)),
    ((None, 8), {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "8"},
     (5, 8, "slurm-array")),
    ((None, 4), {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "4"},
     (2, 4, "slurm-array")),  # --array=10-13: counted from the array's first task
    ((None, 8), {"SLURM_ARRAY_TASK_ID": "3"}, (3, 8, "slurm-array")),
    # an array without --num-shards may split something else (one model per task): no sharding
    ((None, None), {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8"}, (0, 1, None)),
    ((1, 2), {"WORLD_SIZE": "4", "RANK": "3", "SLURM_ARRAY_TASK_ID": "7"}, (1, 2, None)),  # the flags win
])
def test_the_shard_comes_from_the_flags_then_torchrun_then_a_slurm_array(flags, env, expected):
    assert launcher_shard(*flags, environ=env) == expected


@pytest.mark.parametrize(("flags", "env", "message"), [
    ((None, 3), {"WORLD_SIZE": "4", "RANK": "0"}, "differs from the launch's 4 processes"),
    ((None, 10), {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "5"}, "differs from the SLURM array's 5"),
])
def test_a_shard_that_cannot_be_worked_out_is_one_line(flags, env, message):
    with pytest.raises(PbtError, match=message):
        launcher_shard(*flags, environ=env)


def test_generate_in_a_slurm_array_runs_its_task_shard(capsys, monkeypatch, tmp_path):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "8")
    args = ("generate", "--model-a", "smollm2-135m", "--model-b", "smollm2-135m", "--out", tmp_path / "t", "--dry-run")
    result = run_cli(capsys, *args, "--num-shards", "8")
    assert result.exit_code == 0, result.stderr
    assert "shard_idx: 3\n" in result.stdout and "num_shards: 8\n" in result.stdout
    result = run_cli(capsys, *args, "--shard-idx", "1", "--num-shards", "2")
    assert "shard_idx: 1\n" in result.stdout and "num_shards: 2\n" in result.stdout


@pytest.mark.parametrize(("env", "expected"), [
    ({"WORLD_SIZE": "4", "LOCAL_RANK": "2"}, "2"),
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "4,5"}, "5"),  # the rank's of those visible
    ({"WORLD_SIZE": "1", "LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": "0,1"}, "0,1"),  # one process: all GPUs
    ({}, None),
])
def test_under_torchrun_each_generating_rank_sees_only_its_own_gpu(env, expected):
    own_gpu_only(env)
    assert env.get("CUDA_VISIBLE_DEVICES") == expected


def test_more_ranks_than_visible_gpus_is_one_line():
    with pytest.raises(PbtError, match="at most one process per GPU"):
        own_gpu_only({"WORLD_SIZE": "4", "LOCAL_RANK": "3", "CUDA_VISIBLE_DEVICES": "0,1"})


def test_generate_under_torchrun_writes_one_shard_per_rank(tmp_path, tiny_model_dir):
    """Two processes of one command line (CPU): each takes its RANK's shard; together they cover the selection."""
    import json
    import os
    import subprocess
    import sys

    from pbt_cli.data.questions import load_questions, select_questions

    out = tmp_path / "trees"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for name in LAUNCHER_VARIABLES:
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pbt_cli",
         "generate", "--model-a", str(tiny_model_dir), "--model-b", str(tiny_model_dir), "--limit", "4",
         "--questions", "embedded:validation", "--max-turns", "2", "--max-new-tokens", "4", "--min-new-tokens", "1",
         "--dtype", "float32", "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith(".pbt-"))
    assert names == ["manifest-00000-of-00002.json", "manifest-00001-of-00002.json",
                     "trees-00000-of-00002.jsonl", "trees-00001-of-00002.jsonl"]
    ids = [json.loads(line)["tree_id"] for name in names if name.startswith("trees")
           for line in (out / name).read_text().splitlines()]
    expected = [q.question_id for q in select_questions(load_questions("embedded:validation"), limit=4, seed=42)]
    assert sorted(ids) == sorted(expected) and len(ids) == 4
