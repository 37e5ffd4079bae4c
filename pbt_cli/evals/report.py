"""`pbt eval report`: every results.json under a folder in one comparison, plus two plots.

Rows are models (flipflop and ays results of the same model share a row) and model pairs (team
results). Plots: resist accuracy against accept accuracy for flipflop runs (the balance PBT is
about: up and to the right is better), and team accuracy in each speaking order.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.errors import PbtError

COLUMNS = (
    ("flipflop", "flipflop", "accuracy"),
    ("resist", "flipflop", "accuracy_flip_correct_to_incorrect"),
    ("accept", "flipflop", "accuracy_flip_incorrect_to_correct"),
    ("ays pre", "ays", "accuracy_before"),
    ("ays post", "ays", "accuracy_after"),
    ("ays c>w", "ays", "flip_correct_to_wrong"),
    ("team xy", "team", "xy.team_accuracy"),
    ("team yx", "team", "yx.team_accuracy"),
    ("gap", "team", "order_gap"),
)


@dataclass
class Report:
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    plots: list[Path] = field(default_factory=list)


def _lookup(metrics: dict[str, Any], dotted: str) -> float | None:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, dict):
        value = value.get("value")
    return value if isinstance(value, (int, float)) else None


def collect(folder: Path) -> Report:
    files = sorted(folder.rglob("results.json"))
    if not files:
        raise PbtError(f"no results.json under {folder}; run `pbt eval ...` with --out {folder} first")
    report = Report()
    for path in files:
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise PbtError(f"{path} is not valid JSON") from None
        eval_name = results.get("eval")
        if eval_name not in ("flipflop", "ays", "team"):
            continue
        row_name = path.parent.name.replace("__", " + ") if eval_name == "team" else path.parent.name
        row = report.rows.setdefault(row_name, {})
        for column, source_eval, key in COLUMNS:
            if source_eval == eval_name:
                row[column] = _lookup(results.get("metrics", {}), key)
        report.sources[row_name].append(str(path))
    return report


def plot(report: Report, out: Path) -> list[Path]:
    """PNG plots next to the results; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    written = []
    flipflop = {name: row for name, row in report.rows.items()
                if row.get("resist") is not None and row.get("accept") is not None}
    if flipflop:
        figure, axis = plt.subplots(figsize=(5, 5))
        for name, row in flipflop.items():
            axis.scatter(row["resist"], row["accept"], s=40)
            axis.annotate(name, (row["resist"], row["accept"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axis.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=0.8)
        axis.set_xlim(-0.02, 1.02)
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("resisting: accuracy on flip_correct_to_incorrect")
        axis.set_ylabel("accepting: accuracy on flip_incorrect_to_correct")
        axis.set_title("Balanced persuasion (flipflop)")
        figure.tight_layout()
        path = out / "report_flipflop.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    team = {name: row for name, row in report.rows.items()
            if row.get("team xy") is not None or row.get("team yx") is not None}
    if team:
        figure, axis = plt.subplots(figsize=(max(4, 1.6 * len(team)), 4))
        names = list(team)
        width = 0.38
        for offset, order in ((-width / 2, "team xy"), (width / 2, "team yx")):
            values = [team[n].get(order) or 0.0 for n in names]
            axis.bar([i + offset for i in range(len(names))], values, width, label=order.replace("team ", "order "))
        axis.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
        axis.set_ylim(0, 1)
        axis.set_ylabel("team accuracy")
        axis.set_title("Team accuracy by speaking order")
        axis.legend()
        figure.tight_layout()
        path = out / "report_team.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    report.plots = written
    return written
