"""Which shard this process runs when a launcher started several copies of one command.

`pbt generate` splits its questions into `--num-shards` shards and runs `--shard-idx`. Without
`--shard-idx`:
- under `torchrun` (WORLD_SIZE > 1) the shard is RANK of WORLD_SIZE: several copies of one command
  can only mean shards;
- in a SLURM job array the shard is the task's index in the array (SLURM_ARRAY_TASK_ID counted from
  SLURM_ARRAY_TASK_MIN) when `--num-shards` says the run is sharded; an array task without
  `--num-shards` runs everything, since arrays also serve other splits (one model per task).
An explicit `--shard-idx` always wins.
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
        return shard_idx, 1 if num_shards is None else num_shards, None
    if int(env.get("WORLD_SIZE") or 1) > 1:
        world, rank = int(env["WORLD_SIZE"]), int(env.get("RANK") or 0)
        if num_shards not in (None, world):
            raise PbtError(f"--num-shards {num_shards} differs from the launch's {world} processes (WORLD_SIZE); "
                           "drop --num-shards, or give --shard-idx too")
        return rank, world, "torchrun"
    task = env.get("SLURM_ARRAY_TASK_ID")
    if num_shards and num_shards > 1 and task is not None and task.isdigit():
        tasks = int(env.get("SLURM_ARRAY_TASK_COUNT") or num_shards)
        if tasks != num_shards:
            raise PbtError(f"--num-shards {num_shards} differs from the SLURM array's {tasks} tasks; submit "
                           f"--array=0-{num_shards - 1}, or give --shard-idx")
        return int(task) - int(env.get("SLURM_ARRAY_TASK_MIN") or 0), num_shards, "slurm-array"
    return 0, 1 if num_shards is None else num_shards, None  # 0 stays 0: the config refuses it in one line


def own_gpu_only(environ: dict[str, str] | None = None) -> str | None:
    """Under torchrun, let this rank see only its own GPU (the LOCAL_RANK-th visible one), so that a model
    loaded with `--device-map auto` does not spread over the GPUs of the other ranks. Call before CUDA
    starts. Returns what CUDA_VISIBLE_DEVICES became, or None when nothing changed."""
    env = os.environ if environ is None else environ
    if int(env.get("WORLD_SIZE") or 1) <= 1 or "LOCAL_RANK" not in env:
        return None
    local = int(env["LOCAL_RANK"])
    visible = [device for device in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if device.strip()]
    if visible and local >= len(visible):
        raise PbtError(f"torchrun started local rank {local} but CUDA_VISIBLE_DEVICES names {len(visible)} GPUs; "
                       "launch at most one process per GPU")
    env["CUDA_VISIBLE_DEVICES"] = visible[local] if visible else str(local)
    return env["CUDA_VISIBLE_DEVICES"]


def refuse_several_processes(command: str, environ: Mapping[str, str] | None = None) -> None:
    """Evaluations have no shards yet: under torchrun every copy would claim the same results folder and
    all but one would stop on its lock, a failure that names the lock and not the cause. Say the cause."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE") or 1)
    if world > 1:
        raise PbtError(f"{command} runs as one process and has no shards, but this launch started {world} "
                       f"(WORLD_SIZE={world}); run it without torchrun, one command per model (a SLURM array "
                       "task per model works)")
