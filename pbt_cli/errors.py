"""The one kind of error a user should ever see without `-v`: a single line saying what and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PbtError(Exception):
    """Bad input or an unmet requirement. The CLI prints the message as one line and exits with 2."""

    exit_code = 2


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest known name, or '' when nothing is close."""
    known = list(known)
    prefixed = [k for k in known if k.startswith(name)] if name else []
    close = prefixed[:1] if len(prefixed) == 1 else difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def require_at_least(option: str, value: int | None, minimum: int = 1, why: str = "") -> None:
    """A counting option below its minimum is one line; None (no limit) passes."""
    if value is not None and value < minimum:
        raise PbtError(f"{option} must be at least {minimum}{why}, got {value}")


def require_one_of(option: str, value: str, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise PbtError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
