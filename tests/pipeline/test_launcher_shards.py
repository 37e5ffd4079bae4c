"""`pbt generate` under torchrun or a SLURM array takes its shard from the launcher when --shard-idx is not
given (pbt_cli/launcher.py)."""

from __future__ import annotations

import pytest
from helpers import run_cli

from pbt_cli.errors import PbtError
from pbt_cli.launcher import launcher_shard

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
