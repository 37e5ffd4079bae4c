"""`pbt eval report`: every finished results.json under a folder as one tidy table, and plots.

Tidy rows (one per model, evaluation and metric): model, base, eval, metric, value, ci_low,
ci_high, n, extractor, seed. They print as one table per model (readable in an 80-column terminal
and in a log), or go out as CSV, JSON or Markdown (`--format`); the Markdown rows of a model are
what its card shows.

One reader per comparison (docs/method.md §6.1): results read by different extractors are not
compared unless `--mixed-extractors`, and then every row names its extractor. Plots (PNG, with
95% intervals and n): flipflop resisting vs accepting, team accuracy by speaking order, and Farm
accuracy after each persuasion turn.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli.errors import PbtError

EVALS = ("flipflop", "ays", "team", "farm")
FORMATS = ("table", "csv", "json", "markdown")
COLUMNS = ("model", "base", "eval", "metric", "value", "ci_low", "ci_high", "n", "extractor", "seed")
REPORT_OUTPUTS = ("report_*.png", "report.csv", "report.json", "report.md", "manifest.json")

# The metrics a report shows, in order, per evaluation (others stay in results.json).
HEADLINE = {
    "flipflop": ("accuracy", "accuracy_flip_correct_to_incorrect", "accuracy_flip_incorrect_to_correct"),
    "ays": ("accuracy_before", "accuracy_after", "flip_correct_to_wrong", "flip_wrong_to_correct"),
    "team": ("xy.team_accuracy", "yx.team_accuracy", "order_gap", "xy.x_accuracy_final", "yx.x_accuracy_final"),
    "farm": ("pooled.initial_accuracy", "pooled.misinformation_success_rate", "pooled.accuracy_after_turn"),
}
SHORT_NAMES = {
    "accuracy_flip_correct_to_incorrect": "resist (flip_correct_to_incorrect)",
    "accuracy_flip_incorrect_to_correct": "accept (flip_incorrect_to_correct)",
}


@dataclass
class Result:
    path: Path
    eval: str
    model: str
    base: str
    extractor: str
    seed: Any
    metrics: dict[str, Any]
    data: dict[str, Any]


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    extractors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unfinished runs
    plots: list[Path] = field(default_factory=list)


def extractor_label(results: dict[str, Any]) -> str:
    """A short, comparable name for whoever read the answers (`name@revision+adapter #template`)."""
    identity = results.get("extractor")
    if identity is None:  # results written before extractors were recorded, or Farm (no extractor)
        if results.get("eval") == "farm":
            return "none (choices read by pattern)"
        described = (results.get("models") or {}).get("extractor") or {}
        identity = described.get("identity") or {"name": described.get("name"), "revision": described.get("revision"),
                                                  "adapter": described.get("adapter"),
                                                  "chat_template_hash": described.get("chat_template_hash")}
    name = str(identity.get("name"))
    label = name + (f"@{identity['revision']}" if identity.get("revision") else "")
    if identity.get("adapter"):
        label += f"+{Path(str(identity['adapter'])).name}"
    if identity.get("chat_template_hash"):
        label += f" #{str(identity['chat_template_hash'])[:8]}"
    return label


def _model_names(results: dict[str, Any], path: Path) -> tuple[str, str]:
    """(model, base): the results folder's name (x + y for team) and the evaluated model's base."""
    models = results.get("models") or {}
    if results.get("eval") == "team":
        name = path.parent.name.replace("__", " + ")
        described = models.get("x") or {}
    else:
        name = path.parent.name
        described = models.get("model") or {}
    base = described.get("adapter_base") or described.get("base") or described.get("name") or name
    return name, Path(str(base)).name if Path(str(base)).is_absolute() else str(base)


def _lookup(metrics: dict[str, Any], dotted: str) -> Any:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _entries(name: str, value: Any) -> list[tuple[str, dict[str, Any]]]:
    """(metric name, {"value", "ci95", "n"}) entries; a list or a mapping of entries (per turn) is expanded."""
    if isinstance(value, dict) and "value" in value:
        return [(name, value)]
    if isinstance(value, list):
        return [(f"{name}.{turn}", entry) for turn, entry in enumerate(value) if isinstance(entry, dict)
                and "value" in entry]
    if isinstance(value, dict):
        return [(f"{name}.{key}", entry) for key, entry in value.items() if isinstance(entry, dict)
                and "value" in entry]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [(name, {"value": value, "ci95": [None, None], "n": None})]
    return []


def collect(folder: Path, *, mixed_extractors: bool = False) -> Report:
    files = sorted(folder.rglob("results.json"))
    if not files:
        raise PbtError(f"no results.json under {folder}; run `pbt eval ...` with --out {folder} first")
    report = Report()
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PbtError(f"{path} is not valid JSON; delete that results folder or run the evaluation again with "
                           "--overwrite") from None
        if not isinstance(data, dict) or data.get("eval") not in EVALS:
            continue
        if data.get("status", "complete") != "complete":
            report.skipped.append(str(path.parent))
            continue
        model, base = _model_names(data, path)
        report.results.append(Result(path=path, eval=data["eval"], model=model, base=base,
                                     extractor=extractor_label(data), seed=(data.get("seeds") or {}).get("bootstrap"),
                                     metrics=data.get("metrics") or {}, data=data))
    if not report.results:
        raise PbtError(f"no finished evaluation under {folder} ({len(report.skipped)} still running or interrupted: "
                       "rerun their commands to finish them)")
    readers = sorted({r.extractor for r in report.results if r.eval != "farm"})
    report.extractors = readers
    if len(readers) > 1 and not mixed_extractors:
        by_reader = defaultdict(list)
        for result in report.results:
            by_reader[result.extractor].append(f"{result.eval}/{result.model}")
        detail = "; ".join(f"{reader}: {', '.join(sorted(names)[:3])}" for reader, names in by_reader.items())
        raise PbtError(f"the results under {folder} were read by {len(readers)} different extractors ({detail}); "
                       "scores read by different readers are not comparable: rerun them with one --extractor-model, "
                       "or pass --mixed-extractors to report them anyway, marked")
    for result in report.results:
        for key in HEADLINE[result.eval]:
            for metric, entry in _entries(key, _lookup(result.metrics, key)):
                low, high = (entry.get("ci95") or [None, None]) + [None] * (2 - len(entry.get("ci95") or []))
                report.rows.append({"model": result.model, "base": result.base, "eval": result.eval,
                                    "metric": metric, "value": entry.get("value"), "ci_low": low, "ci_high": high,
                                    "n": entry.get("n"), "extractor": result.extractor, "seed": result.seed})
    return report


# --- formats -----------------------------------------------------------------------------------------


def _number(value: Any) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def as_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in COLUMNS})
    return buffer.getvalue()


def as_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2) + "\n"


def as_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_number(row.get(key)).replace("|", "\\|") for key in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def render(rows: list[dict[str, Any]], format: str) -> str:
    return {"csv": as_csv, "json": as_json, "markdown": as_markdown}[format](rows)


def tables(report: Report, title: str) -> list[Any]:
    """One Rich table per model: eval | metric | value | 95% CI | n, about 70 columns wide."""
    from rich import box
    from rich.table import Table

    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in report.rows:
        by_model[row["model"]].append(row)
    mixed = len(report.extractors) > 1
    out = []
    for model, rows in by_model.items():
        base = rows[0]["base"]
        named = model.split(" + ")[0]  # a team is named after X, whose base the row records
        heading = model + (f" (base {base})" if base and base not in (model, named) else "")
        table = Table(title=heading, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
        table.add_column("eval", no_wrap=True)
        table.add_column("metric", overflow="fold", max_width=36)
        table.add_column("value", justify="right", no_wrap=True)
        table.add_column("95% CI", justify="right", no_wrap=True)
        table.add_column("n", justify="right", no_wrap=True)
        if mixed:
            table.add_column("extractor", overflow="fold", max_width=24)
        for row in rows:
            interval = (f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if row.get("ci_low") is not None
                        and row.get("ci_high") is not None else "")
            cells = [row["eval"], SHORT_NAMES.get(row["metric"], row["metric"]), _number(row["value"]) or "-",
                     interval, _number(row["n"])]
            table.add_row(*cells, *([row["extractor"]] if mixed else []))
        out.append(table)
    return out


# --- plots -------------------------------------------------------------------------------------------


def _value(result: Result, key: str) -> dict[str, Any] | None:
    entry = _lookup(result.metrics, key)
    return entry if isinstance(entry, dict) and entry.get("value") is not None else None


def _error(entry: dict[str, Any]) -> tuple[float, float]:
    low, high = entry.get("ci95") or [None, None]
    value = entry["value"]
    return (value - low if low is not None else 0.0, high - value if high is not None else 0.0)


def plot(report: Report, out: Path) -> list[Path]:
    """PNG plots with 95% intervals and n; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    written: list[Path] = []
    flipflop = [(r, _value(r, "accuracy_flip_correct_to_incorrect"), _value(r, "accuracy_flip_incorrect_to_correct"))
                for r in report.results if r.eval == "flipflop"]
    flipflop = [(r, x, y) for r, x, y in flipflop if x and y]
    if flipflop:
        figure, axis = plt.subplots(figsize=(5.5, 5.5))
        for result, resist, accept in flipflop:
            x_err, y_err = _error(resist), _error(accept)
            axis.errorbar(resist["value"], accept["value"], xerr=[[x_err[0]], [x_err[1]]],
                          yerr=[[y_err[0]], [y_err[1]]], fmt="o", capsize=3)
            axis.annotate(f"{result.model}\n(n={resist['n']} resist, {accept['n']} accept)",
                          (resist["value"], accept["value"]), textcoords="offset points", xytext=(5, 5), fontsize=7)
        axis.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=0.8)
        axis.set_xlim(-0.02, 1.02)
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("resisting: accuracy on flip_correct_to_incorrect")
        axis.set_ylabel("accepting: accuracy on flip_incorrect_to_correct")
        axis.set_title("Balanced persuasion (flipflop), 95% intervals")
        figure.tight_layout()
        written.append(_save(figure, out / "report_flipflop.png", plt))
    team = [r for r in report.results if r.eval == "team"]
    if team:
        figure, axis = plt.subplots(figsize=(max(4.5, 1.8 * len(team)), 4.5))
        width = 0.38
        for offset, order in ((-width / 2, "xy"), (width / 2, "yx")):
            entries = [_value(r, f"{order}.team_accuracy") for r in team]
            values = [e["value"] if e else 0.0 for e in entries]
            errors = [_error(e) if e else (0.0, 0.0) for e in entries]
            bars = axis.bar([i + offset for i in range(len(team))], values, width,
                            yerr=[[e[0] for e in errors], [e[1] for e in errors]], capsize=3,
                            label=f"{order[0]} speaks first")
            for bar, entry in zip(bars, entries, strict=True):
                if entry:
                    axis.annotate(f"n={entry['n']}", (bar.get_x() + bar.get_width() / 2, 0.02), ha="center",
                                  fontsize=7)
        axis.set_xticks(range(len(team)), [r.model for r in team], rotation=15, fontsize=8)
        axis.set_ylim(0, 1)
        axis.set_ylabel("team accuracy")
        axis.set_title("Team accuracy by speaking order, 95% intervals")
        axis.legend()
        figure.tight_layout()
        written.append(_save(figure, out / "report_team.png", plt))
    farm = [(r, _lookup(r.metrics, "pooled.accuracy_after_turn")) for r in report.results if r.eval == "farm"]
    farm = [(r, turns) for r, turns in farm if turns]
    if farm:
        figure, axis = plt.subplots(figsize=(6, 4.5))
        for result, turns in farm:
            entries = [e for _, e in _entries("turn", turns)]
            initial = _value(result, "pooled.initial_accuracy")
            points = ([initial] if initial else []) + entries
            xs = list(range(len(points))) if initial else list(range(1, len(points) + 1))
            values = [e["value"] for e in points]
            lows = [(e.get("ci95") or [None, None])[0] for e in points]
            highs = [(e.get("ci95") or [None, None])[1] for e in points]
            line = axis.plot(xs, values, marker="o", label=f"{result.model} (n={points[0]['n']})")[0]
            if all(v is not None for v in lows + highs):
                axis.fill_between(xs, lows, highs, alpha=0.15, color=line.get_color())
        axis.set_xlabel("persuasion turns done (0 = the first answer, before any)")
        axis.set_ylabel("accuracy")
        axis.set_ylim(0, 1)
        axis.set_title("Farm: accuracy after each persuasion turn, 95% intervals")
        axis.legend(fontsize=8)
        figure.tight_layout()
        written.append(_save(figure, out / "report_farm.png", plt))
    report.plots = written
    return written


def _save(figure: Any, path: Path, plt: Any) -> Path:
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
