"""`torchrun --nproc_per_node 2 -m pbt_cli ...` on CPU (gloo) for the multi-process tests.

Each launch is a real pair of processes: the ranks' stderr, the launcher's exit code, signals sent to
the launcher or to one rank. A launch costs some 20-60 s on a loaded 2-core machine; tests keep few.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RANKS = 2


def launch_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_FSDP"):
        env.pop(name, None)
    return env


def torchrun_command(*args: object) -> list[str]:
    # --log-every 1: rank 0's progress record (steps done, loss) reaches the log within a second
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(RANKS),
            "-m", "pbt_cli", "--log-every", "1", *[str(a) for a in args]]


def start(*args: object, log: Path) -> subprocess.Popen:
    """The launch in the background, stdout and stderr of every rank into `log`."""
    handle = open(log, "w")  # noqa: SIM115 (closed with the process by the caller's wait)
    return subprocess.Popen(torchrun_command(*args), stdout=handle, stderr=subprocess.STDOUT, env=launch_env(),
                            start_new_session=True)


def run(*args: object, timeout: float = 600) -> tuple[int, str]:
    """The launch to its end: (launcher exit code, everything printed)."""
    done = subprocess.run(torchrun_command(*args), capture_output=True, text=True, env=launch_env(),
                          timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def training_started(out: Path, log: Path) -> bool:
    """The manifest says running and a step is done: a progress record `steps N/M` with N >= 1 (or, on
    a terminal-like setup, the trainer's printed log dict)."""
    manifest = out / "manifest.json"
    if not (manifest.is_file() and json.loads(manifest.read_text()).get("status") == "running"):
        return False
    text = log.read_text()
    return "'loss'" in text or re.search(r"\bsteps [1-9][0-9,]*/", text) is not None


def children(pid: int) -> list[int]:
    """The launcher's worker processes (Linux /proc)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]
