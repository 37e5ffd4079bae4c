"""JSON Lines files, read and written one way everywhere (trees, pairs, samples, question files).

Writing goes through the `jsonlines` package (compact, UTF-8 kept as is, optionally flushed after
every record). Reading keeps each record's line number, so a bad record is reported as
"FILE line N: ...", and can tolerate an unfinished last line (a writer killed mid-line).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonlines

from pbt_cli import stops
from pbt_cli.errors import PbtError


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class _StopSafeWriter(jsonlines.Writer):
    """A jsonlines.Writer whose every write completes before a stop (SIGTERM, Ctrl-C) is raised."""

    def write(self, obj: Any) -> int:
        with stops.critical():
            return super().write(obj)

    def write_all(self, iterable: Iterable[Any]) -> int:
        with stops.critical():
            return super().write_all(iterable)


@contextmanager
def jsonl_writer(path: Path, *, append: bool = False, flush: bool = False) -> Iterator[jsonlines.Writer]:
    """A jsonlines.Writer on `path`; with `flush`, every record reaches the file as it is written."""
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        with _StopSafeWriter(handle, compact=True, flush=flush, dumps=_dumps) as writer:
            yield writer


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    with jsonl_writer(path) as writer:
        writer.write_all(records)


def read_jsonl(path: Path, *, what: str = "a JSON Lines file",
               tolerate_unfinished_last_line: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, record) for every non-empty line.

    A line that is not JSON is a PbtError naming the file, the line and `what` was expected, except
    an unfinished last line (no newline after it) when `tolerate_unfinished_last_line`: it is left
    out, as a crash leaves it.
    """
    text = read_text(path, what)
    lines = text.split("\n")
    unfinished = len(lines) if text and not text.endswith("\n") else None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if tolerate_unfinished_last_line and number == unfinished:
                return
            raise PbtError(f"{path} line {number}: not valid JSON ({exc.msg}); is it {what}?") from None
        yield number, record


def read_text(path: Path, what: str = "a text file") -> str:
    """A UTF-8 file's text; other bytes are one line naming the file, the line and what was expected."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PbtError(f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); is it {what}? "
                       "Save it as UTF-8") from None


def ends_unfinished(path: Path) -> bool:
    """Whether the file's last line has no newline (a writer was stopped mid-record)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return False
        handle.seek(-1, 2)
        return handle.read(1) != b"\n"


def drop_unfinished_last_line(path: Path) -> None:
    """Cut an unfinished last line (a writer killed mid-record) so that appending starts on a new line."""
    with open(path, "rb+") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        if size == 0:
            return
        handle.seek(-1, 2)
        if handle.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        end = size
        while True:  # find the last newline, reading backwards
            handle.seek(end - block)
            chunk = handle.read(block)
            found = chunk.rfind(b"\n")
            if found >= 0:
                handle.truncate(end - block + found + 1)
                return
            end -= block
            if end <= 0:
                handle.truncate(0)
                return
            block = min(end, block)
