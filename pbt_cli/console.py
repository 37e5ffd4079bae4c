"""Terminal output conventions shared by every command.

Data goes to stdout; logs, tables meant for people, and progress bars go to stderr. Progress bars
appear only when stderr is a terminal, so logs of SLURM jobs stay clean.
"""

from __future__ import annotations

import logging
import os
import time
import warnings

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# soft_wrap: a line of text stays one line (a terminal folds it for the eye; a log file or a grep sees it
# whole); tables and other renderables still fit the width
stderr = Console(stderr=True, soft_wrap=True)
stdout = Console(soft_wrap=True)

log = logging.getLogger("pbt")

# verbosity: -1 quiet (warnings only), 0 normal, 1 verbose (debug and library info, tracebacks)
_verbosity = 0


def verbosity() -> int:
    return _verbosity


def setup_logging(level: int) -> None:
    global _verbosity
    _verbosity = level
    handler = RichHandler(console=stderr, show_path=False, show_time=level > 0, markup=False,
                          rich_tracebacks=True, tracebacks_show_locals=False)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(level, logging.DEBUG))
    if not stderr.is_terminal:
        # progress bars only on a terminal: tqdm (used by the libraries) reads this when first
        # imported, which is always later than here
        os.environ.setdefault("TQDM_DISABLE", "1")
    if level <= 0:
        # datasets reads this when first imported (always later than here): no per-map progress bars
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        # transformers and friends are chatty at INFO; keep their warnings only.
        for name in ("transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub", "httpx"):
            logging.getLogger(name).setLevel(logging.ERROR if level < 0 else logging.WARNING)
        # bitsandbytes warns on import that an optional CPU kernel package is absent; it is not needed
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        # deprecation notices from the libraries are for their developers, not for pbt's users
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


class RichProgress:
    """A `ProgressSink` drawn with Rich on stderr; disabled when stderr is not a terminal.

    `advance(key, tokens=n)` accumulates tokens so the bar shows generated tokens per second.
    """

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=stderr,
            disable=not stderr.is_terminal,
            transient=False,
        )
        self._tasks: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        self._started: dict[str, float] = {}

    def __enter__(self) -> RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def start(self, key: str, description: str, total: int | None = None, completed: int = 0) -> None:
        if key in self._tasks:
            self._progress.update(self._tasks[key], description=description, total=total, completed=completed)
            return
        self._tasks[key] = self._progress.add_task(description, total=total, completed=completed, rate="")
        self._tokens[key] = 0
        self._started[key] = time.perf_counter()

    def advance(self, key: str, amount: int = 1, **info: object) -> None:
        if key not in self._tasks:
            self.start(key, key)
        rate = ""
        tokens = info.get("tokens")
        if isinstance(tokens, int):
            self._tokens[key] += tokens
            elapsed = max(time.perf_counter() - self._started[key], 1e-6)
            rate = f"{self._tokens[key] / elapsed:,.0f} tok/s"
        fields = {"rate": rate} if rate else {}
        self._progress.update(self._tasks[key], advance=amount, **fields)

    def log(self, message: str) -> None:
        log.info(message)
