"""Training launched as several processes (`torchrun`, `accelerate launch`): one writer, ranks that agree.

Every process of a launch runs the same `pbt sft|dpo` command; what differs is who does what:
- the process group starts first (`process_group`), before any model loads, so that each rank loads
  onto its own device and FSDP's `cpu_ram_efficient_loading` applies (transformers honours it only
  inside an existing group);
- rank 0 alone claims and locks `--out`, deletes an earlier run's files under --overwrite and picks
  the resume point; the other ranks wait for its answer, or its refusal, in a broadcast (`from_main`,
  train/run.py `claim_on_main`);
- a stop (SIGTERM, Ctrl-C) that any rank received is agreed on at every step end (`any_rank`), so all
  ranks save the same checkpoint and stop after the same step;
- a rank that dies makes the others' collectives fail: they end with one line (`peer_failure`).
Outside a launcher (no WORLD_SIZE, or 1 without FSDP) every function here is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from pbt_cli.console import log, verbosity
from pbt_cli.errors import PbtError

DEFAULT_TIMEOUT_S = 3 * 3600  # how long a rank waits in a collective (e.g. for rank 0's flipflop evaluation)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE") or 1)


def rank() -> int:
    return int(os.environ.get("RANK") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK") or 0)


def is_main_process() -> bool:
    return rank() == 0


def launched() -> bool:
    """Whether this process is one rank of a launch that needs a process group: several processes, or
    FSDP (whose loading needs the group even with one process)."""
    from pbt_cli.models.quant import fsdp_launch

    return "WORLD_SIZE" in os.environ and (world_size() > 1 or fsdp_launch())


def _ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def process_group(*, cuda: bool, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Start the launch's process group (NCCL on GPUs, gloo on CPU) for the life of one training run.

    The Trainer (accelerate) later finds the group and uses it. Ranks other than 0 log warnings only, so
    a launch prints each progress line once."""
    if not launched() or _ready():
        yield
        return
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if cuda:
        torch.cuda.set_device(local_rank())  # before the group: NCCL binds each rank to its current GPU
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    if rank() > 0 and verbosity() <= 0:
        log.setLevel(logging.WARNING)
    log.debug("rank %d of %d: process group %s started", rank(), world_size(), dist.get_backend())
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a peer that died leaves a group that cannot close cleanly
            dist.destroy_process_group()


def from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (a barrier too: every rank waits for rank 0 to get here)."""
    if not _ready():
        return value
    import torch.distributed as dist

    box = [value if is_main_process() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one (an all-reduce: every rank must call it)."""
    if not _ready():
        return flag
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def ignore_launcher_stop() -> None:
    """This rank is leaving already (stopped, or a peer died): the SIGTERM the launcher sends once
    another rank has exited must not cut the line that says why, nor the manifest being marked.
    pbt's handler is put back when the command ends."""
    import signal

    if launched():
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


class FollowerExit(SystemExit):
    """A rank other than 0 leaving because rank 0 refused the run. Rank 0 prints the one line and exits
    with the refusal's code, which the launcher reports; the others leave silently and successfully,
    so the launcher does not kill rank 0 (a failed rank makes it stop the rest) before it has printed."""


def peer_failure(exc: BaseException) -> PbtError | None:
    """A collective that failed because another rank died or stopped answering, as one line; None for
    any other error (which keeps its traceback)."""
    if not launched():
        return None
    import torch.distributed as dist

    text = str(exc)
    distributed_error = isinstance(exc, getattr(dist, "DistError", ())) or any(
        mark in text for mark in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL",
                                  "ProcessGroup", "Broken pipe", "timed out", "Timed out"))
    if not isinstance(exc, RuntimeError) or not distributed_error:
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    # gloo starts with its source location in brackets, which a console reads as markup: drop it
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).replace("[", "(").replace("]", ")")
    return PbtError(f"rank {rank()} of {world_size()}: another process of this launch stopped or died ({first[:160]}); "
                    "the run's last checkpoint is kept: run the same launch command again to resume from it")
