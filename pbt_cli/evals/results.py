"""Results files shared by every evaluation: metrics with bootstrap intervals, results.json, samples.jsonl.

Layout: `<out>/<eval>/<model-name>/results.json` and `samples.jsonl` (one line per question or
pair: prompts, responses, extracted answers, gold aliases, correctness).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pbt_cli.artifacts import base_manifest, write_json
from pbt_cli.data.jsonl import read_jsonl, write_jsonl
from pbt_cli.errors import PbtError

BOOTSTRAP_SAMPLES = 1000
CONFIDENCE = 0.95


def bootstrap_interval(values: Sequence[float], *, statistic: Callable[[Any], float] | None = None,
                       samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (or of `statistic` over index arrays)."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, data.shape[0], size=(samples, data.shape[0]))
    stats = data[draws].mean(axis=1) if statistic is None else np.array([statistic(d) for d in draws])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return (float(low), float(high))


def metric(values: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """{"value": mean, "ci95": [low, high], "n": count} (value None when n is 0)."""
    values = [float(v) for v in values]
    if not values:
        return {"value": None, "ci95": [None, None], "n": 0}
    low, high = bootstrap_interval(values, seed=seed)
    return {"value": sum(values) / len(values), "ci95": [low, high], "n": len(values)}


def paired_difference(first: Sequence[float], second: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """Mean of first - second over the same items, with a paired bootstrap interval."""
    if len(first) != len(second):
        raise ValueError("paired metrics need the same items")
    return metric([a - b for a, b in zip(first, second, strict=True)], seed=seed)


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def folder_name(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("_") or "model"


def results_folder(out: Path, eval_name: str, model_name: str) -> Path:
    return out / eval_name / folder_name(model_name)


# Options that change how fast, not what: a rerun that differs only in these reuses the results.
_NOT_SETTINGS = ("out", "overwrite", "backend")


def eval_settings(config: Any) -> dict[str, Any]:
    """What decides an evaluation's results: its options, and the persona and extractor texts it sends."""
    from pbt_cli.config import to_plain
    from pbt_cli.data.prompts import prompts_hash

    settings = {k: v for k, v in to_plain(config).items() if k not in _NOT_SETTINGS}
    return {**settings, "prompts": prompts_hash()}


def prior_results(folder: Path, config: Any, *, overwrite: bool) -> dict[str, Any] | None:
    """Stored results of the same evaluation (reused: a recipe run twice does not evaluate twice), or None.

    Results made with other settings are never replaced silently: that is an error unless `overwrite`.
    """
    path = folder / "results.json"
    if overwrite or not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise PbtError(f"{path} is damaged (not valid JSON); pass --overwrite to evaluate again") from None
    old, new = stored.get("settings") or {}, eval_settings(config)
    differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if differing:
        raise PbtError(f"{path} holds results made with other settings ({', '.join(differing)}); pass --overwrite "
                       "to replace them, or choose another --out")
    stored["reused"] = True
    return stored


def write_results(folder: Path, *, eval_name: str, config: Any, metrics: dict[str, Any],
                  samples: list[dict[str, Any]], models: dict[str, Any], seeds: dict[str, Any],
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    results = base_manifest(f"eval {eval_name}", config)
    results.update(eval=eval_name, metrics=metrics, n=len(samples), seeds=seeds, models=models,
                   settings=eval_settings(config), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {}))
    write_jsonl(folder / "samples.jsonl", samples)
    write_json(folder / "results.json", results)
    return results


def read_samples(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        path = path / "samples.jsonl"
    if not path.is_file():
        raise PbtError(f"{path} does not exist; give a samples.jsonl written by `pbt eval`")
    return [record for _, record in read_jsonl(path, what="a samples file from `pbt eval`")]


def format_metric(entry: dict[str, Any]) -> str:
    value = entry.get("value")
    if value is None:
        return "-"
    low, high = entry.get("ci95") or (None, None)
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{value:.3f}{interval}"
