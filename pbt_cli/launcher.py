"""Which shard this process runs when a launcher started several copies of one command.

`pbt generate` and the evaluations split their items into `--num-shards` shards and run `--shard-idx`
(item i belongs to shard i mod num_shards). Without
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pbt_cli.errors import PbtError, require_at_least

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """One shard of a run's items: item i belongs to shard i mod `count` (round-robin, so every shard gets
    the same mix of a selection's order, and a merge puts item i back at i from shard i mod count, place
    i // count)."""

    index: int = 0
    count: int = 1
    launcher: str | None = None  # torchrun or slurm-array when the shard came from the launch

    def __post_init__(self) -> None:
        require_at_least("--num-shards", self.count)
        if not 0 <= self.index < self.count:
            raise PbtError(f"--shard-idx {self.index} is out of range for --num-shards {self.count} "
                           f"(0..{self.count - 1})")

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def tag(self) -> str:
        return f"{self.index:05d}-of-{self.count:05d}"

    def take(self, items: Sequence[T]) -> list[T]:
        return list(items[self.index::self.count])

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "launcher": self.launcher}


def interleave(parts: Sequence[Sequence[Sequence[T]]]) -> list[T]:
    """Shards' per-item groups back in the selection's order: item i is group i // n of shard i mod n."""
    total = sum(len(part) for part in parts)
    merged: list[T] = []
    for position in range(total):
        merged.extend(parts[position % len(parts)][position // len(parts)])
    return merged


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


def launch_shard(shard_idx: int | None, num_shards: int | None) -> Shard:
    """The shard this process runs (from the options, else the launcher); under torchrun each rank also
    keeps to its own GPU, before CUDA starts."""
    index, count, launcher = launcher_shard(shard_idx, num_shards)
    shard = Shard(index, count, launcher)
    if launcher == "torchrun":
        own_gpu_only()
    return shard
