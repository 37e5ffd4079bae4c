"""Configuration precedence, in one place: command-line flags > `--config` YAML file > defaults.

The YAML file holds a flat mapping for one command, keyed by option names (`max_turns` or
`max-turns`). It is read before the command line is parsed and handed to the parser as the
command's `default_map`, so every value goes through the same type conversion and validation as
a flag, and a flag given on the command line still wins. Keys that name no option of the command
are an error (see `check_config_keys`, called by every command).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from pbt_cli.errors import PbtError, did_you_mean


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PbtError(f"config file {path} does not exist; pass --config with the path of a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise PbtError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise PbtError(f"config file {path}{line} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise PbtError(f"config file {path} must hold a mapping of option names to values, got {type(data).__name__}")
    options: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name == "config":
            raise PbtError(f"config file {path}: a config file cannot name another config file (key '{key}')")
        if name in options:  # max-turns and max_turns are one option: which one wins would be a guess
            raise PbtError(f"config file {path} sets {name.replace('_', '-')} twice (key '{key}' and another "
                           "spelling of it); keep one")
        if isinstance(value, dict):
            raise PbtError(f"config file {path}: key '{key}' holds a mapping ({value!r:.60}); an option takes one "
                           "value (or a list, for options that repeat)")
        options[name] = value
    return options


def find_config_argument(argv: Sequence[str]) -> str | None:
    """The value of `--config` in raw arguments, before any parsing (None when absent)."""
    for i, token in enumerate(argv):
        if token == "--":
            break
        if token == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--config="):
            return token.split("=", 1)[1]
    return None


def nest_default_map(command_path: Sequence[str], options: Mapping[str, Any]) -> dict[str, Any]:
    """{'eval': {'ays': options}} for the path ['eval', 'ays']: the shape click's default_map wants."""
    nested: dict[str, Any] = dict(options)
    for name in reversed(command_path):
        nested = {name: nested}
    return nested


def check_config_keys(ctx: Any) -> None:
    """Refuse keys of the `--config` file that name no option of this command."""
    given = getattr(ctx, "default_map", None) or {}
    known = set(ctx.params)
    unknown = [key for key in given if key not in known]
    if unknown:
        key = unknown[0]
        config_path = ctx.params.get("config")
        raise PbtError(
            f"config file {config_path}: unknown option '{key}' for `pbt {ctx.command_path.split(' ', 1)[-1]}`"
            f"{did_you_mean(key, known)}; run the command with --help for the list"
        )


def to_plain(value: Any) -> Any:
    """Dataclasses, paths and enums as plain YAML/JSON-friendly values (for manifests and --dry-run)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def dump_yaml(value: Any) -> str:
    return yaml.safe_dump(to_plain(value), sort_keys=False, default_flow_style=False)


def stable_hash(value: Any) -> str:
    """A short content hash of a configuration, independent of key order."""
    import hashlib

    text = json.dumps(to_plain(value), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
