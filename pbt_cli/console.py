"""Terminal output conventions shared by every command.

Data goes to stdout; logs, tables meant for people, and progress go to stderr. On a terminal,
progress is drawn as Rich bars; otherwise (a SLURM job's log, a pipe) every long stage writes one
line every `--log-every` seconds: done / total, rate in the stage's unit, generated tokens per
second, elapsed time and ETA. `--log-file PATH` also writes every log line to a file.

Verbosity: -q warnings only; default pbt's own info lines; -v pbt's debug lines and tracebacks;
-vv also the libraries' own logs (transformers, TRL, datasets, vLLM) and their progress bars.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pbt_cli import progress as progress_events

# soft_wrap: a line of text stays one line (a terminal folds it for the eye; a log file or a grep sees it
# whole); tables and other renderables still fit the width
stderr = Console(stderr=True, soft_wrap=True)
stdout = Console(soft_wrap=True)

log = logging.getLogger("pbt")

LIBRARY_LOGGERS = ("transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub", "httpx", "httpx2", "vllm",
                   "openai")
DEFAULT_LOG_EVERY = 60.0

# verbosity: -1 quiet (warnings only), 0 normal, 1 verbose (debug, tracebacks), 2 libraries' logs too
_verbosity = 0
_log_every = DEFAULT_LOG_EVERY


def verbosity() -> int:
    return _verbosity


def log_every() -> float:
    return _log_every


log_file_path: Path | None = None  # --log-file, for the checks that keep it off a stage's inputs


class _FolderMakingFileHandler(logging.FileHandler):
    def _open(self):  # noqa: ANN202 (logging's own signature)
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def setup_logging(level: int, *, log_file: str | os.PathLike | None = None,
                  every: float = DEFAULT_LOG_EVERY) -> None:
    global _verbosity, _log_every, log_file_path
    _verbosity = level
    log_file_path = None
    _log_every = every
    handler = log_handler(level)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if log_file:
        log_file_path = Path(log_file).expanduser().absolute()
        # opened at the first line, its folder made then: a check of the stage (its inputs, its --out)
        # runs before anything is written, and a log file inside a new --out comes after that folder
        file_handler = _FolderMakingFileHandler(log_file_path, encoding="utf-8", delay=True)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
    root.setLevel(logging.WARNING)
    log.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(level, logging.DEBUG))
    if not stderr.is_terminal and level < 2:
        # progress bars only on a terminal: tqdm (used by the libraries) reads this when first
        # imported, which is always later than here
        os.environ.setdefault("TQDM_DISABLE", "1")
    if level < 2:
        # datasets reads this when first imported (always later than here): no per-map progress bars
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        # transformers and friends are chatty at INFO; keep their warnings only.
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR if level < 0 else logging.WARNING)
        # bitsandbytes warns on import that an optional CPU kernel package is absent; it is not needed
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        # deprecation notices from the libraries are for their developers, not for pbt's users
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    else:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info")


class PlainFormatter(logging.Formatter):
    """One record, one line: a timestamp, the level and the message, never wrapped (grep-able logs)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")


def log_handler(level: int) -> logging.Handler:
    """Rich's handler on a terminal; on anything else (a SLURM log, a pipe) plain lines, since Rich
    wraps at 80 columns when it cannot ask a terminal its width."""
    if stderr.is_terminal:
        return RichHandler(console=stderr, show_path=False, show_time=level > 0, markup=False,
                           rich_tracebacks=True, tracebacks_show_locals=False,
                           log_time_format="[%Y-%m-%d %H:%M:%S]")
    handler = logging.StreamHandler(stderr.file)
    handler.setFormatter(PlainFormatter())
    return handler


@contextlib.contextmanager
def progress(stage: str) -> Iterator[Any]:
    """The progress sink for a command: Rich bars on a terminal, log lines otherwise."""
    sink: Any = RichProgress() if stderr.is_terminal else LogProgress(stage, _log_every)
    with sink:
        yield sink


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class _Task:
    def __init__(self, description: str, total: int | None, completed: int, bound: bool = False) -> None:
        self.description = description
        self.total = total
        self.completed = completed
        self.initial = completed
        self.bound = bound  # the total is an upper bound (work may end early)
        self.started = time.perf_counter()
        self.info: dict[str, float] = {}

    def rate(self, now: float) -> float:
        return (self.completed - self.initial) / max(now - self.started, 1e-9)

    def seconds_left(self, now: float) -> float | None:
        """None until the rate is known (some work done this run) or when nothing is left."""
        rate = self.rate(now)
        left = (self.total or 0) - self.completed
        return left / rate if rate > 0 and left > 0 else None


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.3e}"


class LogProgress:
    """A `ProgressSink` for logs: one line every `every` seconds (and one at the end) for the stage.

    Example: `generate: trees 12/64 (19%, 0.08/s) | turns 340/<=1,344 (2.4/s) | requests 700/<=2,688
    (4.9/s) | 72 tok/s | elapsed 2m23s | ETA <=6m50s`. Every task shows done/total and its rate;
    numbers passed to `advance` (loss, learning_rate) follow it. The ETA comes from the task with the
    largest total that moves (the finest unit: requests move inside one long batch call), and reads
    `<=` when that total is an upper bound. Rates count only this run's work (a resumed run starts its
    clock again).
    """

    def __init__(self, stage: str, every: float = DEFAULT_LOG_EVERY) -> None:
        self.stage = stage
        self.every = every
        self.tasks: dict[str, _Task] = {}
        self.started = time.perf_counter()
        self.last_line = self.started
        self.requests = 0
        self.tokens = 0
        self._lock = threading.Lock()

    def __enter__(self) -> LogProgress:
        progress_events.add_activity_listener(self._activity)
        # a heartbeat: a batch can take longer than --log-every, and a log that stays silent then
        # looks like a hung job; the line repeats the counts with the time elapsed and the ETA
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="pbt-progress", daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, kind: Any, exc: Any, traceback: Any) -> None:
        progress_events.remove_activity_listener(self._activity)
        self._stop.set()
        self._heartbeat.join(timeout=5)
        if kind is None and (self.tasks or self.requests):
            self.emit(final=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every / 4):
            if self.tasks:
                self._maybe_emit()

    def start(self, key: str, description: str, total: int | None = None, completed: int = 0,
              bound: bool = False) -> None:
        self.tasks[key] = _Task(description, total, completed, bound)

    def advance(self, key: str, amount: int = 1, **info: object) -> None:
        if key not in self.tasks:
            self.start(key, key)
        task = self.tasks[key]
        task.completed += amount
        task.info.update({name: value for name, value in info.items()  # numbers to show, not the token count
                          if name != "tokens" and isinstance(value, int | float) and not isinstance(value, bool)})
        self._maybe_emit()

    def expect(self, key: str, remaining: int, bound: bool = False) -> None:
        if key not in self.tasks:
            self.start(key, key)
        task = self.tasks[key]
        task.total, task.bound = task.completed + max(remaining, 0), bound

    def drop(self, key: str, amount: int) -> None:
        task = self.tasks.get(key)
        if task is not None and task.total is not None:
            task.total = max(task.total - amount, task.completed)

    def log(self, message: str) -> None:
        log.info(message)

    def _activity(self, rows: int, tokens: int) -> None:
        self.requests += rows
        self.tokens += tokens
        if "requests" in self.tasks:
            self.tasks["requests"].completed += rows
        self._maybe_emit()

    def _maybe_emit(self) -> None:
        if time.perf_counter() - self.last_line >= self.every:
            with self._lock:
                if time.perf_counter() - self.last_line < self.every:  # the other thread wrote it
                    return
                self.last_line = time.perf_counter()
                log.info(self.line())

    def eta(self, now: float) -> str:
        moving = [task for task in list(self.tasks.values()) if task.total and task.seconds_left(now) is not None]
        if not moving:
            return "ETA -"  # no rate yet
        finest = max(moving, key=lambda task: task.total or 0)
        return f"ETA {'<=' if finest.bound else ''}{_duration(finest.seconds_left(now) or 0)}"

    def line(self, final: bool = False) -> str:
        now = time.perf_counter()
        parts = []
        for task in list(self.tasks.values()):  # a copy: the heartbeat thread reads while the stage adds
            rate = task.rate(now)
            if task.total and not (final and task.bound):
                total = f"{'<=' if task.bound else ''}{task.total:,}"
                share = "" if task.bound else f"{task.completed / task.total:.0%}, "
                text = f"{task.description} {task.completed:,}/{total} ({share}{rate:.3g}/s)"
            else:
                text = f"{task.description} {task.completed:,} ({rate:.3g}/s)"
            text += "".join(f" {name} {_number(value)}" for name, value in task.info.items())
            parts.append(text)
        if self.requests and "requests" not in self.tasks:
            parts.append(f"requests {self.requests:,}")
        if self.tokens:
            parts.append(f"{self.tokens / max(now - self.started, 1e-9):,.0f} tok/s")
        parts.append(f"elapsed {_duration(now - self.started)}")
        if not final:
            parts.append(self.eta(now))
        return f"{self.stage}{' done' if final else ''}: " + " | ".join(parts)

    def emit(self, final: bool = False) -> None:
        with self._lock:  # the heartbeat thread and the stage's own thread
            self.last_line = time.perf_counter()
            log.info(self.line(final))


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
        progress_events.add_activity_listener(self._activity)
        return self

    def __exit__(self, *exc: object) -> None:
        progress_events.remove_activity_listener(self._activity)
        self._progress.__exit__(*exc)

    def _activity(self, rows: int, tokens: int) -> None:
        if "requests" in self._tasks:  # a bar of requests moves inside one long batch call
            self._progress.update(self._tasks["requests"], advance=rows)

    def expect(self, key: str, remaining: int, bound: bool = False) -> None:
        if key not in self._tasks:
            self.start(key, key)
        completed = next(t.completed for t in self._progress.tasks if t.id == self._tasks[key])
        self._progress.update(self._tasks[key], total=completed + max(remaining, 0))

    def drop(self, key: str, amount: int) -> None:
        if key in self._tasks:
            task = next(t for t in self._progress.tasks if t.id == self._tasks[key])
            if task.total is not None:
                self._progress.update(self._tasks[key], total=max(task.total - amount, task.completed))

    def start(self, key: str, description: str, total: int | None = None, completed: int = 0,
              bound: bool = False) -> None:
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
