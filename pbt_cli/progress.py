"""How pipelines report progress without printing: they call a `ProgressSink`; commands render it.

Pipelines take `progress: ProgressSink = NULL_PROGRESS`; the command layer passes a `RichProgress`
(pbt_cli/console.py) that draws bars on a terminal and stays silent otherwise.
"""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def start(self, key: str, description: str, total: int | None = None, completed: int = 0) -> None: ...

    def advance(self, key: str, amount: int = 1, **info: object) -> None: ...

    def log(self, message: str) -> None: ...


class NullProgress:
    def start(self, key: str, description: str, total: int | None = None, completed: int = 0) -> None:
        pass

    def advance(self, key: str, amount: int = 1, **info: object) -> None:
        pass

    def log(self, message: str) -> None:
        pass


NULL_PROGRESS = NullProgress()
