"""Clean stops: SIGTERM (SLURM's pre-emption and time limit) and Ctrl-C end a stage between units of work.

`pbt` installs one handler for SIGTERM and SIGINT. It records the request and raises `StopRequested`
at once, unless the code is inside a `critical()` section (a record or a manifest being written):
then the exception waits until the section ends, so no file is left half-written. Training defers
every stop (`deferred()`): the trainer finishes its current step, saves a checkpoint and returns.

`StopRequested` derives from BaseException, like KeyboardInterrupt, so that `except Exception`
blocks in libraries do not swallow it. The command layer turns it into the exit codes shells and
SLURM expect: 143 for SIGTERM, 130 for SIGINT.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class StopRequested(BaseException):  # noqa: N818 (it is a request, like KeyboardInterrupt)
    """A stop was asked for by a signal; the stage has left its files complete."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + int(self.signum))


_requested: int | None = None
_critical_depth = 0
_defer_depth = 0


def requested() -> int | None:
    """The signal number of a pending stop request, or None."""
    return _requested


def _handler(signum: int, frame: Any) -> None:
    global _requested
    _requested = signum
    if _critical_depth == 0 and _defer_depth == 0:
        raise StopRequested(signum)


@contextlib.contextmanager
def handling_signals() -> Iterator[None]:
    """Install the handler for the life of one command (the CLI's main), then put back the previous ones."""
    global _requested
    _requested = None
    previous = {}
    for signum in EXIT_CODES:
        try:
            previous[signum] = signal.signal(signum, _handler)
        except ValueError:  # not the main thread (a test runner's worker): stops are not handled
            pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        _requested = None


def check() -> None:
    """Raise a pending stop now (call between units of work)."""
    if _requested is not None:
        raise StopRequested(_requested)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section that must not be cut (a write): a stop arriving inside it is raised when it ends."""
    global _critical_depth
    _critical_depth += 1
    try:
        yield
    finally:
        _critical_depth -= 1
    if _critical_depth == 0 and _defer_depth == 0:
        check()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Record stops without raising (training polls `requested()` at every step end)."""
    global _defer_depth
    _defer_depth += 1
    try:
        yield
    finally:
        _defer_depth -= 1
