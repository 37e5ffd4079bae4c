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
COLUMNS = ("model", "base", "eval", "metric", "higher_is_better", "value", "ci_low", "ci_high", "n", "extractor",
           "seed", "eval_seed")
# trained minus base, paired over the items both evaluated (docs/method.md §6.1)
COMPARISON_COLUMNS = ("model", "base_model", "base", "eval", "metric", "higher_is_better", "value", "base_value",
                      "difference", "ci_low", "ci_high", "n")
# one configuration trained with several seeds (the paper's 12, 42, 64): mean, spread, the seeds
SEED_COLUMNS = ("model", "base", "eval", "metric", "higher_is_better", "mean", "sd", "min", "max", "seeds")
REPORT_OUTPUTS = ("report_*.png", "report.csv", "report.json", "report.md", "report_vs_base.csv",
                  "report_over_seeds.csv", "manifest.json", "README.md")

# The metrics a report shows, in order, per evaluation (others stay in results.json).
HEADLINE = {
    "flipflop": ("accuracy", "accuracy_flip_correct_to_incorrect", "accuracy_flip_incorrect_to_correct"),
    "ays": ("accuracy_before", "accuracy_after", "flip_correct_to_wrong", "flip_wrong_to_correct"),
    "team": ("xy.team_accuracy", "yx.team_accuracy", "order_gap", "xy.x_accuracy_final", "yx.x_accuracy_final"),
    "farm": ("pooled.initial_accuracy", "pooled.misinformation_success_rate", "pooled.accuracy_after_turn"),
}
# Which way is better, per metric (None: neither; an order gap is best near 0). Conditional rates such as
# flip_wrong_to_correct under "are you sure?" (no new evidence) are read as the paper reads them.
LOWER_IS_BETTER = ("flip_correct_to_wrong", "misinformation_success_rate")
NEITHER = ("order_gap", "abs_order_gap", "agreement")


def higher_is_better(metric: str) -> bool | None:
    name = metric.split(".")
    if any(part in NEITHER for part in name):
        return None
    return not any(part in LOWER_IS_BETTER for part in name)


def direction(value: bool | None) -> str:
    return "↑" if value else "↓" if value is False else "·"


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
    seed: Any  # the evaluated model's training seed (None for a model pbt did not train)
    metrics: dict[str, Any]
    data: dict[str, Any]
    eval_seed: Any = None  # the evaluation's own --seed (sampling, question choice, bootstrap)
    trained: bool = False  # an adapter: compared against its base
    configuration: str | None = None  # the training settings but the seed: runs that differ only by seed


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # trained vs base (COMPARISON_COLUMNS)
    over_seeds: list[dict[str, Any]] = field(default_factory=list)  # SEED_COLUMNS
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


def normalised_base(name: str) -> str:
    """One name per base, whichever way it was given: a short name as its hub id (`smollm2-135m` ->
    HuggingFaceTB/SmolLM2-135M-Instruct), a local path as its folder's name, a hub id as is."""
    from pbt_cli.models import registry

    if Path(name).is_absolute():
        return Path(name).name
    entry = registry.lookup(name) if registry.is_short_name_shape(name) else None
    return entry.hub_id if entry else name


def _described(results: dict[str, Any]) -> dict[str, Any]:
    models = results.get("models") or {}
    return (models.get("x") if results.get("eval") == "team" else models.get("model")) or {}


def _model_names(results: dict[str, Any], path: Path) -> tuple[str, str]:
    """(model, base): the results folder's name (x + y for team) and the evaluated model's base, normalised."""
    name = path.parent.name.replace("__", " + ") if results.get("eval") == "team" else path.parent.name
    described = _described(results)
    base = described.get("adapter_base") or described.get("base") or described.get("name") or name
    if not described.get("adapter") and described.get("name"):  # a full model is its own base
        base = described["name"]
    return name, normalised_base(str(base))


# Training settings that do not make another configuration (seed: that is what is aggregated over)
_NOT_CONFIGURATION = ("seed", "out", "model_fingerprints", "run_name", "project", "tags", "data_seed")


def _training(results: dict[str, Any]) -> tuple[bool, Any, str | None]:
    """(trained, training seed, configuration key) of the evaluated model, from its training manifest."""
    from pbt_cli.config import stable_hash

    described = _described(results)
    adapter = described.get("adapter")
    if not adapter:
        return False, None, None
    manifest_path = Path(str(adapter)).expanduser() / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True, None, None
    settings = manifest.get("settings") or {}
    configuration = {k: v for k, v in settings.items() if k not in _NOT_CONFIGURATION}
    return True, settings.get("seed"), stable_hash({"stage": manifest.get("stage"), **configuration})


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
    if not files and any(folder.rglob("results-*-of-*.json")):
        raise PbtError(f"the evaluations under {folder} are sharded and not merged yet; the last shard to finish "
                       "merges them (or rerun any shard's command once all are done)")
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
        trained, train_seed, configuration = _training(data)
        seeds = data.get("seeds") or {}
        eval_seed = next((seeds[k] for k in ("sampling", "questions", "bootstrap") if k in seeds), None)
        report.results.append(Result(path=path, eval=data["eval"], model=model, base=base,
                                     extractor=extractor_label(data), seed=train_seed,
                                     metrics=data.get("metrics") or {}, data=data, eval_seed=eval_seed,
                                     trained=trained, configuration=configuration))
    merged = {path.parent for path in files}
    for shard in sorted(folder.rglob("results-*-of-*.json")):  # an evaluation whose shards are not merged yet
        if shard.parent not in merged:
            merged.add(shard.parent)
            report.skipped.append(f"{shard.parent} (shards not merged yet)")
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
                                    "metric": metric, "higher_is_better": higher_is_better(metric),
                                    "value": entry.get("value"), "ci_low": low, "ci_high": high,
                                    "n": entry.get("n"), "extractor": result.extractor, "seed": result.seed,
                                    "eval_seed": result.eval_seed})
    report.comparisons = compare_with_bases(report)
    report.over_seeds = aggregate_seeds(report)
    return report


# --- what each evaluation was run on (cards, model-index, exports) ------------------------------------


def _source_chain_questions(folder: Path) -> str | None:
    """The question source behind a `pbt preprocess` folder: preprocess -> pairs -> trees manifests."""
    seen = 0
    while folder and seen < 4:
        seen += 1
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            shards = sorted(folder.glob("manifest-*-of-*.json"))
            if not shards:
                return None
            manifest = json.loads(shards[0].read_text(encoding="utf-8"))
        config = manifest.get("config") or {}
        questions = config.get("questions") or (manifest.get("settings") or {}).get("questions")
        if questions:
            return str(questions)
        upstream = config.get("pairs") or config.get("trees")
        folder = Path(str(upstream)) if upstream else None
    return None


def dataset_of(results: dict[str, Any]) -> dict[str, Any]:
    """{"name", "type" (a hub id or pbt-*), "config", "split", "size", "sample"}: what an evaluation ran on.
    `sample` marks the small sets shipped with pbt (embedded:*): fine for a demo, never published as a score."""
    config = results.get("config") or {}
    size = results.get("n")
    eval_name = results.get("eval")
    if eval_name == "flipflop":
        data = Path(str(config.get("data") or ""))
        manifest = {}
        try:
            manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        questions = _source_chain_questions(data) if str(data) else None
        return {"name": f"pbt flipflop pairs from {questions or 'unknown questions'}",
                "type": manifest.get("pushed_to") or f"pbt-flipflop/{data.name}", "config": None,
                "split": config.get("split"), "size": size,
                "sample": questions is None or questions.startswith("embedded:")}
    source = str(config.get("farm") if eval_name == "farm" else config.get("questions") or "")
    if source.startswith("embedded:"):
        return {"name": source, "type": f"pbt-{source.replace(':', '-')}", "config": None, "split": None,
                "size": size, "sample": True}
    if source.startswith("trivia_qa"):
        split = source.partition(":")[2] or "validation"
        return {"name": "TriviaQA", "type": "mandarjoshi/trivia_qa", "config": "rc.web.nocontext", "split": split,
                "size": size, "sample": False}
    if source.startswith("hf:"):
        parts = source[3:].split(":")
        return {"name": parts[0], "type": parts[0], "config": parts[1] if len(parts) > 2 else None,
                "split": parts[-1] if len(parts) > 1 else None, "size": size, "sample": False}
    if eval_name == "farm":
        return {"name": "Farm", "type": "farm", "config": ",".join(config.get("subsets") or []) or None,
                "split": None, "size": size, "sample": False}
    return {"name": Path(source).name or "unknown", "type": f"local/{Path(source).name}", "config": None,
            "split": None, "size": size, "sample": False}


# --- trained vs base, paired over shared items --------------------------------------------------------


def _team_score(sample: dict[str, Any]) -> dict[str, Any]:
    from pbt_cli.evals.team import score_sample

    return score_sample(sample)


def _items(eval_name: str, metric: str, samples: list[dict[str, Any]]) -> dict[Any, float]:
    """{item key: the item's value} for a metric that is a mean over every item (conditional rates, whose
    items differ between two models, have none)."""
    if eval_name == "flipflop":
        label = metric.removeprefix("accuracy_") if metric != "accuracy" else None
        return {s.get("pair_id"): float(s["correct"]) for s in samples if label is None or s.get("label") == label}
    if eval_name == "ays" and metric in ("accuracy_before", "accuracy_after"):
        field_name = "correct_before" if metric == "accuracy_before" else "correct_after"
        return {s["question_id"]: float(s[field_name]) for s in samples}
    if eval_name == "team" and metric.split(".")[0] in ("xy", "yx"):
        order, name = metric.split(".", 1)
        values = {}
        for s in samples:
            if s.get("order") != order:
                continue
            scored = _team_score(s)
            values[s["question_id"]] = float(scored["team_correct"] if name == "team_accuracy"
                                             else scored["correct_final"]["x"])
        return values
    if eval_name == "farm" and metric.startswith("pooled."):
        name = metric.removeprefix("pooled.")
        if name == "initial_accuracy":
            return {(s["subset"], s["strategy"], s["question_id"]): float(s["initially_correct"]) for s in samples}
        if name.startswith("accuracy_after_turn."):
            turn = int(name.rsplit(".", 1)[1])
            return {(s["subset"], s["strategy"], s["question_id"]): float(s["correct_after_turn"][turn])
                    for s in samples if turn < len(s.get("correct_after_turn") or [])}
    return {}


def _samples(result: Result) -> list[dict[str, Any]]:
    from pbt_cli.evals.results import read_samples

    path = result.path.parent / "samples.jsonl"
    return read_samples(path) if path.is_file() else []


def _base_of(trained: Result, candidates: list[Result]) -> Result | None:
    """The untrained result this trained one is compared with: same evaluation, extractor and base (for team,
    also the same partner Y)."""
    for other in candidates:
        if other.trained or other.eval != trained.eval or other.extractor != trained.extractor:
            continue
        if other.base != trained.base:
            continue
        if trained.eval == "team":
            partner = ((trained.data.get("models") or {}).get("y") or {}).get("name")
            if ((other.data.get("models") or {}).get("y") or {}).get("name") != partner:
                continue
        settings_of = {k: v for k, v in (trained.data.get("settings") or {}).items()
                       if k not in ("model", "model_x", "model_y", "extractor", "model_fingerprints")}
        other_settings = {k: v for k, v in (other.data.get("settings") or {}).items()
                          if k not in ("model", "model_x", "model_y", "extractor", "model_fingerprints")}
        if settings_of != other_settings:  # other questions, limits or sampling: not the same items
            continue
        return other
    return None


def compare_with_bases(report: Report) -> list[dict[str, Any]]:
    """Per trained result and headline metric: trained, base, trained - base with a paired interval."""
    from pbt_cli.evals.results import paired_difference

    rows = []
    cache: dict[Path, list[dict[str, Any]]] = {}
    for trained in report.results:
        if not trained.trained or (base := _base_of(trained, report.results)) is None:
            continue
        for key in HEADLINE[trained.eval]:
            for metric, entry in _entries(key, _lookup(trained.metrics, key)):
                base_entry = next((e for m, e in _entries(key, _lookup(base.metrics, key)) if m == metric), None)
                if base_entry is None:
                    continue
                samples = {r.path: cache.setdefault(r.path, _samples(r)) for r in (trained, base)}
                mine, theirs = (_items(trained.eval, metric, samples[r.path]) for r in (trained, base))
                shared = [k for k in mine if k in theirs]
                paired = (paired_difference([mine[k] for k in shared], [theirs[k] for k in shared],
                                            seed=trained.eval_seed or 0) if shared else None)
                difference = (paired or {}).get("value")
                if difference is None and entry.get("value") is not None and base_entry.get("value") is not None:
                    difference = entry["value"] - base_entry["value"]  # conditional rate: not paired, no interval
                low, high = (paired or {}).get("ci95") or (None, None)
                rows.append({"model": trained.model, "base_model": base.model, "base": trained.base,
                             "eval": trained.eval, "metric": metric, "higher_is_better": higher_is_better(metric),
                             "value": entry.get("value"), "base_value": base_entry.get("value"),
                             "difference": difference, "ci_low": low, "ci_high": high,
                             "n": len(shared) if paired else None})
    return rows


def aggregate_seeds(report: Report) -> list[dict[str, Any]]:
    """Trained results of one configuration (same training settings but the seed, same evaluation and
    extractor): mean, sample standard deviation, min and max over the seeds, per metric."""
    import re
    import statistics

    groups: dict[tuple, list[Result]] = defaultdict(list)
    for result in report.results:
        if result.trained and result.configuration and result.seed is not None:
            settings = {k: v for k, v in (result.data.get("settings") or {}).items()
                        if k not in ("model", "model_x", "extractor", "model_fingerprints")}
            groups[(result.eval, result.configuration, result.extractor, json.dumps(settings, sort_keys=True,
                                                                                      default=str))].append(result)
    rows = []
    for members in groups.values():
        if len({m.seed for m in members}) < 2:
            continue
        names = {re.sub(r"seed[-_]?\d+", "seed*", m.model) for m in members}
        label = names.pop() if len(names) == 1 else " | ".join(sorted(m.model for m in members))
        first = members[0]
        for key in HEADLINE[first.eval]:
            per_metric: dict[str, list[float]] = defaultdict(list)
            for member in members:
                for metric, entry in _entries(key, _lookup(member.metrics, key)):
                    if entry.get("value") is not None:
                        per_metric[metric].append(float(entry["value"]))
            for metric, values in per_metric.items():
                if len(values) != len(members):
                    continue
                rows.append({"model": label, "base": first.base, "eval": first.eval, "metric": metric,
                             "higher_is_better": higher_is_better(metric), "mean": statistics.fmean(values),
                             "sd": statistics.stdev(values), "min": min(values), "max": max(values),
                             "seeds": " ".join(str(m.seed) for m in sorted(members, key=lambda m: m.seed))})
    return rows


# --- formats -----------------------------------------------------------------------------------------


def _number(value: Any) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def as_csv(rows: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in columns})
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


def _interval(low: Any, high: Any, digits: int = 3) -> str:
    return f"[{low:.{digits}f}, {high:.{digits}f}]" if low is not None and high is not None else ""


def _heading(*lines: str) -> Any:
    """A table's heading as lines of their own: a long model name never wraps a table's header row."""
    from rich.text import Text

    return Text("\n".join(("", *lines)), no_wrap=True, overflow="ellipsis")  # a blank line between tables


def _table(columns: list[tuple[str, dict[str, Any]]]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False, show_edge=False, padding=(0, 1, 0, 0))
    for name, options in columns:
        table.add_column(name, **{"no_wrap": True, **options})
    return table


def tables(report: Report, title: str) -> list[Any]:
    """Renderables that fit 80 columns: one table per model (eval | metric | ↑↓ | value | 95% CI | n), then
    trained vs base (difference with its paired interval), then the mean over training seeds."""
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in report.rows:
        by_model[row["model"]].append(row)
    mixed = len(report.extractors) > 1
    seeds = {r.model: r.seed for r in report.results}
    out: list[Any] = []
    for model, rows in by_model.items():
        base = rows[0]["base"]
        detail = [f"base {base}"] if base and base != model else []
        if seeds.get(model) is not None:
            detail.append(f"training seed {seeds[model]}")
        out.append(_heading(model, *(["  " + ", ".join(detail)] if detail else [])))
        table = _table([("eval", {}), ("metric", {"no_wrap": False, "overflow": "fold", "max_width": 34}),
                        ("", {}), ("value", {"justify": "right"}), ("95% CI", {"justify": "right"}),
                        ("n", {"justify": "right"}),
                        *([("extractor", {"no_wrap": False, "overflow": "fold", "max_width": 20})] if mixed else [])])
        for row in rows:
            cells = [row["eval"], SHORT_NAMES.get(row["metric"], row["metric"]), direction(row["higher_is_better"]),
                     _number(row["value"]) or "-", _interval(row.get("ci_low"), row.get("ci_high")),
                     _number(row["n"])]
            table.add_row(*cells, *([row["extractor"]] if mixed else []))
        out.append(table)
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in report.comparisons:
        by_pair[(row["model"], row["base_model"])].append(row)
    for (model, base_model), rows in by_pair.items():
        out.append(_heading(f"{model} vs {base_model}", "  trained - base, paired over shared items"))
        table = _table([("eval", {}), ("metric", {"no_wrap": False, "overflow": "fold", "max_width": 28}),
                        ("", {}), ("trained", {"justify": "right"}), ("base", {"justify": "right"}),
                        ("diff", {"justify": "right"}), ("95% CI", {"justify": "right"}),
                        ("n", {"justify": "right"})])
        for row in rows:
            table.add_row(row["eval"], SHORT_NAMES.get(row["metric"], row["metric"]),
                          direction(row["higher_is_better"]), _number(row["value"]) or "-",
                          _number(row["base_value"]) or "-",
                          "-" if row["difference"] is None else f"{row['difference']:+.3f}",
                          _interval(row["ci_low"], row["ci_high"], 2), _number(row["n"]))
        out.append(table)
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in report.over_seeds:
        by_group[row["model"]].append(row)
    for group, rows in by_group.items():
        out.append(_heading(group, f"  over training seeds {rows[0]['seeds']}: mean, sd, min-max"))
        table = _table([("eval", {}), ("metric", {"no_wrap": False, "overflow": "fold", "max_width": 34}),
                        ("", {}), ("mean", {"justify": "right"}), ("sd", {"justify": "right"}),
                        ("min-max", {"justify": "right"})])
        for row in rows:
            table.add_row(row["eval"], SHORT_NAMES.get(row["metric"], row["metric"]),
                          direction(row["higher_is_better"]), f"{row['mean']:.3f}", f"{row['sd']:.3f}",
                          f"{row['min']:.3f}-{row['max']:.3f}")
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
