"""How pipelines report progress without printing: they call a `ProgressSink`; commands render it.

Pipelines take `progress: ProgressSink = NULL_PROGRESS`; the command layer passes what
`console.progress()` makes: Rich bars on a terminal, log lines every `--log-every` seconds
otherwise. Backends report the work inside one long call (each batch of rows they finish, with
its generated tokens) through `report_activity`, so a log shows movement during a level of trees
that takes many minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class ProgressSink(Protocol):
    """`start` a task (`bound`: its total is an upper bound, e.g. turns of trees that may stop early);
    `advance` it (`info` may carry numbers to show, such as loss=1.23, and tokens=n); `expect` says at
    most `remaining` more units will come from now on; `drop` takes `amount` off the total (work that
    turned out not to be needed, such as the branches of a tree whose agents agreed)."""

    def start(self, key: str, description: str, total: int | None = None, completed: int = 0,
              bound: bool = False) -> None: ...

    def advance(self, key: str, amount: int = 1, **info: object) -> None: ...

    def expect(self, key: str, remaining: int, bound: bool = False) -> None: ...

    def drop(self, key: str, amount: int) -> None: ...

    def log(self, message: str) -> None: ...


class NullProgress:
    def start(self, key: str, description: str, total: int | None = None, completed: int = 0,
              bound: bool = False) -> None:
        pass

    def advance(self, key: str, amount: int = 1, **info: object) -> None:
        pass

    def expect(self, key: str, remaining: int, bound: bool = False) -> None:
        pass

    def drop(self, key: str, amount: int) -> None:
        pass

    def log(self, message: str) -> None:
        pass


NULL_PROGRESS = NullProgress()

ActivityListener = Callable[[int, int], None]
_listeners: list[ActivityListener] = []


def add_activity_listener(listener: ActivityListener) -> None:
    _listeners.append(listener)


def remove_activity_listener(listener: ActivityListener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def report_activity(rows: int, tokens: int) -> None:
    """Called by backends after each batch: `rows` requests answered, `tokens` tokens generated."""
    for listener in list(_listeners):
        listener(rows, tokens)
