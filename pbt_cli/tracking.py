"""Experiment tracking for the stages that are not training: `--report-to none|wandb|tensorboard|trackio`.

Training reports through the trainer's own integrations (same option names, pbt_cli/train/policy.py).
Generation and the evaluations report here once they finish: their metrics (flattened, one scalar
each, with the interval bounds) and a table of a few samples. TensorBoard event files go to
`<folder>/runs`, wandb's files to `<folder>/wandb`; trackio keeps its own local database.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.errors import PbtError

TABLE_ROWS = 8  # samples shown in the tracker's table


@dataclass(frozen=True)
class TrackingOptions:
    report_to: str = "none"
    run_name: str | None = None
    project: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.report_to not in ("none", "wandb", "tensorboard", "trackio"):
            raise PbtError(f"--report-to must be none, wandb, tensorboard or trackio, got {self.report_to!r}")
        if self.report_to != "none" and importlib.util.find_spec(self.report_to) is None:
            raise PbtError(f"--report-to {self.report_to} needs {self.report_to}: pip install {self.report_to} "
                           "(or use --report-to none)")

    @property
    def enabled(self) -> bool:
        return self.report_to != "none"


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """{"accuracy": {"value": .5, "ci95": [.4, .6], "n": 20}} -> accuracy, accuracy_ci_low, ..._ci_high, ..._n."""
    flat: dict[str, float] = {}
    for name, entry in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(entry, dict) and "value" in entry:
            if entry.get("value") is not None:
                flat[key] = float(entry["value"])
                low, high = entry.get("ci95") or (None, None)
                if low is not None and high is not None:
                    flat[f"{key}_ci_low"], flat[f"{key}_ci_high"] = float(low), float(high)
            if entry.get("n") is not None:
                flat[f"{key}_n"] = float(entry["n"])
        elif isinstance(entry, dict):
            flat.update(flatten_metrics(entry, f"{key}/"))
        elif isinstance(entry, (int, float)) and not isinstance(entry, bool):
            flat[key] = float(entry)
    return flat


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 300 else text[:297] + "..."


def sample_table(samples: Sequence[dict[str, Any]], limit: int = TABLE_ROWS) -> tuple[list[str], list[list[str]]]:
    rows = list(samples[:limit])
    columns = sorted({key for row in rows for key in row})
    return columns, [[_cell(row.get(column, "")) for column in columns] for row in rows]


def report(options: TrackingOptions, *, folder: Path, name: str, config: dict[str, Any], metrics: dict[str, Any],
           samples: Sequence[dict[str, Any]] = ()) -> None:
    """Send one finished stage's metrics and a sample table to the tracker the user chose."""
    if not options.enabled:
        return
    flat = flatten_metrics(metrics)
    columns, rows = sample_table(samples)
    run_name = options.run_name or name
    if options.report_to == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(folder / "runs"))
        for key, value in flat.items():
            writer.add_scalar(key, value, 0)
        if rows:
            header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
            body = "\n".join("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |"
                             for row in rows)
            writer.add_text("samples", header + body, 0)
        writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)
        writer.close()
    elif options.report_to == "wandb":
        import wandb

        run = wandb.init(project=options.project or "pbt", name=run_name, tags=list(options.tags) or None,
                         config=config, dir=str(folder), reinit="finish_previous")
        run.log(flat)
        if rows:
            run.log({"samples": wandb.Table(columns=columns, data=rows)})
        run.finish()
    elif options.report_to == "trackio":
        import trackio

        trackio.init(project=options.project or "pbt", name=run_name, config=config)
        trackio.log(flat)
        if rows and hasattr(trackio, "Table"):
            trackio.log({"samples": trackio.Table(columns=columns, data=rows)})
        trackio.finish()
