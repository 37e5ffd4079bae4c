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

from pbt_cli.errors import PbtError


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@contextmanager
def jsonl_writer(path: Path, *, append: bool = False, flush: bool = False) -> Iterator[jsonlines.Writer]:
    """A jsonlines.Writer on `path`; with `flush`, every record reaches the file as it is written."""
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        with jsonlines.Writer(handle, compact=True, flush=flush, dumps=_dumps) as writer:
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
    text = path.read_text(encoding="utf-8")
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


def ends_unfinished(path: Path) -> bool:
    """Whether the file's last line has no newline (a writer was stopped mid-record)."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return False
        handle.seek(-1, 2)
        return handle.read(1) != b"\n"
