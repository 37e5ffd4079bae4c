"""Helpers shared by tests: run the CLI in-process, scripted agents and extractors."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from pbt_cli.cli import main


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> CliResult:
    """`pbt ARGS` in this process, through the real entry point (flag hoisting, --config)."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def extract_reply(conversation) -> str:
    """The reply text an extraction conversation asks about."""
    user = conversation[-2]["content"]
    return user.split("Reply: ", 1)[1]


def answer_after(marker: str, text: str) -> str:
    found = re.search(re.escape(marker) + r"\s*([^.]+)", text)
    return found.group(1).strip() if found else "NONE"
