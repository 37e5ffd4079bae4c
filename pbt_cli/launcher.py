"""Which shard this process runs when a launcher started several copies of one command.

`pbt generate` splits its questions into `--num-shards` shards and runs `--shard-idx`. Under `torchrun`
(RANK / WORLD_SIZE) or a SLURM job array (SLURM_ARRAY_TASK_ID, counted from SLURM_ARRAY_TASK_MIN, with
SLURM_ARRAY_TASK_COUNT tasks) the shard comes from the launcher when `--shard-idx` is not given, so
one command line serves every task. An explicit `--shard-idx` always wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pbt_cli.errors import PbtError


def launcher_shard(shard_idx: int | None, num_shards: int | None,
                   environ: Mapping[str, str] | None = None) -> tuple[int, int, str | None]:
    """(shard index, number of shards, the launcher they came from or None)."""
    env = os.environ if environ is None else environ
    if shard_idx is not None:
        return shard_idx, num_shards or 1, None
    if int(env.get("WORLD_SIZE") or 1) > 1:
        world, rank = int(env["WORLD_SIZE"]), int(env.get("RANK") or 0)
        if num_shards not in (None, world):
            raise PbtError(f"--num-shards {num_shards} differs from the launch's {world} processes (WORLD_SIZE); "
                           "drop --num-shards, or give --shard-idx too")
        return rank, world, "torchrun"
    task = env.get("SLURM_ARRAY_TASK_ID")
    if task is not None and task.isdigit():
        index = int(task) - int(env.get("SLURM_ARRAY_TASK_MIN") or 0)
        count = num_shards or int(env.get("SLURM_ARRAY_TASK_COUNT") or 0)
        if not count:
            raise PbtError("a SLURM array task without SLURM_ARRAY_TASK_COUNT: pass --num-shards (the array's size)")
        return index, count, "slurm-array"
    return 0, num_shards or 1, None
