"""`pbt eval flipflop|ays|team|farm|report`: the paper's four evaluations and a comparison of results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from pbt_cli import console
from pbt_cli.commands import options as o
from pbt_cli.data.questions import check_source
from pbt_cli.errors import PbtError
from pbt_cli.evals.results import format_metric
from pbt_cli.launcher import launch_shard

HELP = ("The paper's evaluations: flipflop (balanced persuasion), ays (are you sure?), team (two-model dialogues), "
        "farm (resistance to misinformation).")
EXAMPLE = ("Example: pbt eval ays --model smollm2-135m --limit 20 --out runs/try/results; "
           "pbt eval report runs/try/results")

app = typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_show_locals=False)

ExtractorModel = Annotated[str | None, typer.Option(
    "--extractor-model", help="Model that reads each reply's answer (default: the evaluated model's base: an "
    "adapter's base with the adapter off, a full model itself). Compare models read by one extractor.")]
Out = Annotated[Path, typer.Option("--out", help="Results root: <out>/<eval>/<model>/results.json.")]
ExtractionTokens = Annotated[int, typer.Option("--extraction-max-new-tokens", rich_help_panel=o.SAMPLING,
                                               help="Token budget of each answer extraction.")]
Questions = Annotated[str, typer.Option(
    "--questions", help="embedded:validation[-easy], trivia_qa:validation (the paper's), "
    "hf:OWNER/NAME\\[:CONFIG]:SPLIT, or a file.")]


def _shard_waiting(results: dict[str, Any], folder: Path, json_out: bool) -> bool:
    """A shard that finished before the others: say so (the metrics come with the last shard's merge)."""
    if "metrics" in results:
        return False
    if json_out:
        print(json.dumps(results, indent=2))
        return True
    shard, done = results.get("shard") or {}, results.get("shards_complete") or []
    count = int(shard.get("count") or 0)
    missing = [index for index in range(count) if index not in done]
    shown = ", ".join(map(str, missing[:8])) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    console.stderr.print(
        f"[green]shard {shard.get('index')} of {count} done[/] ({results.get('n')} samples in {folder}); "
        f"{len(done)} of {count} shards are done (still to finish: --shard-idx {shown}), and the last one to "
        "finish writes results.json with the metrics over all of them (or rerun any shard's command once all "
        "are done)", highlight=False)
    return True


def _render(results: dict[str, Any], folder: Path, json_out: bool, title: str) -> None:
    if _shard_waiting(results, folder, json_out):
        return
    if json_out:
        print(json.dumps(results, indent=2))
        return
    if results.get("reused"):
        title += " (up to date, reused)"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value [95% CI]", justify="right")
    table.add_column("n", justify="right")

    def add(prefix: str, metrics: dict[str, Any]) -> None:
        for name, entry in metrics.items():
            if isinstance(entry, dict) and "value" in entry:
                table.add_row(prefix + name, format_metric(entry), str(entry.get("n", "")))
            elif isinstance(entry, dict) and name != "counts":
                add(f"{prefix}{name} ", entry)
            elif not isinstance(entry, dict) and entry is not None:
                table.add_row(prefix + name, f"{entry:.3f}" if isinstance(entry, float) else str(entry), "")

    add("", results["metrics"])
    console.stdout.print(table)
    console.stderr.print(f"results: {folder / 'results.json'}\nsamples: {folder / 'samples.jsonl'}", highlight=False)


@app.command("flipflop", help="Accuracy on the balanced persuasion set (resisting and accepting).",
             epilog="Example: pbt eval flipflop --model runs/try/dpo --data runs/try/dpo_data --split test "
             "--out runs/try/results")
@o.pbt_command
@o.shared_options(o.SINGLE_MODEL_PARAMETERS, o.LOAD_PARAMETERS, o.BACKEND_PARAMETERS, o.TRACKING_PARAMETERS,
                  o.RUN_PARAMETERS)
def flipflop(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Short name, hub id, model folder or adapter folder.")],
    data: Annotated[Path, typer.Option("--data", help="A `pbt preprocess` output rendered for this model.")],
    split: Annotated[Literal["validation", "valid", "test"], typer.Option(
        "--split", help="Which evaluation split (valid = validation).")] = "test",
    extractor_model: ExtractorModel = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate at most N pairs (half per label).")] = None,
    temperature: o.Temperature = 0.7,
    top_p: o.TopP = 1.0,
    max_new_tokens: o.MaxNewTokens = 80,
    min_new_tokens: o.EvalMinNewTokens = None,
    extraction_max_new_tokens: ExtractionTokens = 16,
    shard_idx: o.ShardIdx = None,
    num_shards: o.NumShards = None,
    out: Out = Path("results"),
    overwrite: o.Overwrite = False,
    json_out: o.JsonOut = False,
    seed: o.seed_option("the pair subset, sampling, bootstrap intervals") = 42,
    protocol: o.Protocol = "paper",
    estimate: o.Estimate = False,
    **shared: Any,
) -> None:
    shard = launch_shard(shard_idx, num_shards)
    from pbt_cli.evals.flipflop import FlipflopConfig, run_flipflop
    from pbt_cli.pipeline.preprocess import read_data_manifest

    dry_run = bool(shared["dry_run"]) or estimate
    params = ctx.params
    if protocol == "original-code" and min_new_tokens is None:  # the original's flipflop set no minimum (§8.7)
        params = {**params, "min_new_tokens": 0}
    cfg = FlipflopConfig(model=o.model_spec_from(params, "model", with_overrides=True), data=data, split=split,
                         extractor=o.model_spec_from(params, "extractor_model"), limit=limit, seed=seed,
                         sampling=o.sampling_from(params), extraction_max_new_tokens=extraction_max_new_tokens,
                         out=out, backend=o.backend_options_from(params), overwrite=overwrite,
                         tracking=o.tracking_from(params), protocol=protocol, shard=shard)
    o.check_models(cfg.model, cfg.extractor, dry_run=dry_run)
    o.check_input(data, "--data", dry_run=dry_run, check=read_data_manifest)
    if dry_run:
        o.print_dry_run("pbt eval flipflop", cfg)
        from pbt_cli.budget import flipflop_budget
        from pbt_cli.commands import estimate as e

        rows = shard.take(e.flipflop_rows(cfg)) if data.exists() else None
        budget = flipflop_budget(max_new_tokens, extraction_max_new_tokens)
        e.show_budget("eval flipflop", budget, limit if rows is None else len(rows))
        if estimate:
            e.estimate_dialogues(cfg.backend, cfg.model, cfg.extractor,
                               [(r["question"], list(r["prompt"])) for r in (rows or [])[:8]], cfg.sampling,
                               extraction_max_new_tokens, budget, None if rows is None else len(rows))
        return
    with console.progress("eval flipflop") as progress:
        results, folder = run_flipflop(cfg, progress=progress)
    _render(results, folder, json_out, f"flipflop: {cfg.model.display_name} on {data} ({split})")


@app.command("ays", help='"Are you sure?": accuracy before and after a challenge, and flip rates.',
             epilog="Example: pbt eval ays --model smollm2-135m --limit 20 --out runs/try/results --dry-run")
@o.pbt_command
@o.shared_options(o.SINGLE_MODEL_PARAMETERS, o.LOAD_PARAMETERS, o.BACKEND_PARAMETERS, o.TRACKING_PARAMETERS,
                  o.RUN_PARAMETERS)
def ays(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Short name, hub id, model folder or adapter folder.")],
    questions: Questions = "embedded:validation",
    limit: Annotated[int | None, typer.Option("--limit", help="Questions to ask (paper: 1000).")] = 1000,
    extractor_model: ExtractorModel = None,
    max_new_tokens: o.MaxNewTokens = 80,
    min_new_tokens: o.EvalMinNewTokens = None,
    extraction_max_new_tokens: ExtractionTokens = 16,
    shard_idx: o.ShardIdx = None,
    num_shards: o.NumShards = None,
    out: Out = Path("results"),
    overwrite: o.Overwrite = False,
    json_out: o.JsonOut = False,
    seed: o.seed_option("question order, bootstrap intervals") = 42,
    protocol: o.Protocol = "paper",
    estimate: o.Estimate = False,
    **shared: Any,
) -> None:
    shard = launch_shard(shard_idx, num_shards)
    from pbt_cli.evals.ays import AysConfig, run_ays

    dry_run = bool(shared["dry_run"]) or estimate
    params = ctx.params
    cfg = AysConfig(model=o.model_spec_from(params, "model", with_overrides=True), questions=questions, limit=limit,
                    seed=seed, extractor=o.model_spec_from(params, "extractor_model"), max_new_tokens=max_new_tokens,
                    min_new_tokens=o.min_new_tokens_for(min_new_tokens, max_new_tokens),
                    extraction_max_new_tokens=extraction_max_new_tokens, out=out,
                    backend=o.backend_options_from(params), overwrite=overwrite, tracking=o.tracking_from(params),
                    protocol=protocol, shard=shard)
    o.check_models(cfg.model, cfg.extractor, dry_run=dry_run)
    check_source(questions)
    if dry_run:
        o.print_dry_run("pbt eval ays", cfg)
        from pbt_cli.budget import ays_budget
        from pbt_cli.commands import estimate as e
        from pbt_cli.data.prompts import EVAL_PERSONA
        from pbt_cli.models.backends.base import Sampling

        budget = ays_budget(max_new_tokens, extraction_max_new_tokens)
        items = e.count_questions(questions, limit, seed, shard.index, shard.count)
        e.show_budget("eval ays", budget, items)
        if estimate:
            greedy = Sampling(temperature=0.0, max_new_tokens=max_new_tokens, min_new_tokens=cfg.min_new_tokens)
            e.estimate_dialogues(cfg.backend, cfg.model, cfg.extractor,
                               e.question_conversations(questions, limit, seed, EVAL_PERSONA), greedy,
                               extraction_max_new_tokens, budget, items)
        return
    with console.progress("eval ays") as progress:
        results, folder = run_ays(cfg, progress=progress)
    _render(results, folder, json_out, f"are you sure?: {cfg.model.display_name} on {questions}")


@app.command("team", help="Two models in standard dialogues, both speaking orders; --rescore re-reads samples.",
             epilog="Example: pbt eval team --model-x runs/try/dpo --model-y smollm2-135m --limit 20 "
             "--out runs/try/results")
@o.pbt_command
@o.shared_options(o.LOAD_PARAMETERS, o.BACKEND_PARAMETERS, o.TRACKING_PARAMETERS, o.RUN_PARAMETERS)
def team(
    ctx: typer.Context,
    model_x: Annotated[str | None, typer.Option("--model-x", help="First model (speaks first in order xy).")] = None,
    model_y: Annotated[str | None, typer.Option("--model-y", help="Second model (speaks first in order yx).")] = None,
    rescore: Annotated[Path | None, typer.Option(
        "--rescore", help="Recompute metrics from a team samples.jsonl (or its folder); generates nothing.")] = None,
    questions: Questions = "embedded:validation",
    limit: Annotated[int | None, typer.Option("--limit", help="Questions (paper: 1000).")] = 1000,
    orders: Annotated[Literal["both", "xy", "yx"], typer.Option("--orders", help="Speaking orders to run.")] = "both",
    max_turns: Annotated[int, typer.Option("--max-turns", help="Dialogue turns in all.")] = 4,
    both_first: Annotated[bool, typer.Option("--both-first/--no-both-first",
                                             help="The second model opens without seeing the first.")] = True,
    extractor_model: Annotated[str | None, typer.Option(
        "--extractor-model", help="Model that reads answers (default: --model-x's base, for both orders).")] = None,
    max_new_tokens: o.MaxNewTokens = 80,
    min_new_tokens: o.EvalMinNewTokens = None,
    extraction_max_new_tokens: ExtractionTokens = 16,
    shard_idx: o.ShardIdx = None,
    num_shards: o.NumShards = None,
    out: Out = Path("results"),
    overwrite: o.Overwrite = False,
    json_out: o.JsonOut = False,
    seed: o.seed_option("question order, sampling, bootstrap intervals") = 42,
    estimate: o.Estimate = False,
    **shared: Any,
) -> None:
    shard = launch_shard(shard_idx, num_shards)
    from pbt_cli.evals import team as team_eval

    dry_run = bool(shared["dry_run"]) or estimate
    if rescore is not None:
        o.check_input(rescore, "--rescore", dry_run=dry_run)
        if dry_run:
            o.print_dry_run("pbt eval team --rescore", {"rescore": rescore, "json": json_out})
            return
        metrics = team_eval.rescore(rescore)
        _render({"metrics": metrics}, rescore if rescore.is_dir() else rescore.parent, json_out,
                f"team (rescored from {rescore})")
        return
    if not model_x or not model_y:
        raise PbtError("pbt eval team needs --model-x and --model-y (or --rescore SAMPLES to re-score a run)")
    params = ctx.params
    cfg = team_eval.TeamConfig(
        model_x=o.model_spec_from(params, "model_x"), model_y=o.model_spec_from(params, "model_y"),
        extractor=o.model_spec_from(params, "extractor_model"), questions=questions, limit=limit, seed=seed,
        max_turns=max_turns, both_first=both_first, orders=team_eval.ORDERS if orders == "both" else (orders,),
        max_new_tokens=max_new_tokens, min_new_tokens=o.min_new_tokens_for(min_new_tokens, max_new_tokens),
        extraction_max_new_tokens=extraction_max_new_tokens, out=out, backend=o.backend_options_from(params),
        overwrite=overwrite, tracking=o.tracking_from(params), shard=shard)
    o.check_models(cfg.model_x, cfg.model_y, cfg.extractor, dry_run=dry_run)
    check_source(questions)
    if dry_run:
        o.print_dry_run("pbt eval team", cfg)
        from pbt_cli.budget import team_budget
        from pbt_cli.commands import estimate as e
        from pbt_cli.data.prompts import EVAL_PERSONA

        budget = team_budget(max_turns, len(cfg.orders), max_new_tokens, extraction_max_new_tokens)
        items = e.count_questions(questions, limit, seed, shard.index, shard.count)
        e.show_budget("eval team", budget, items)
        if estimate:
            e.estimate_dialogues(cfg.backend, cfg.model_x, cfg.extractor,
                               e.question_conversations(questions, limit, seed, EVAL_PERSONA), cfg.sampling(),
                               extraction_max_new_tokens, budget, items)
        return
    with console.progress("eval team") as progress:
        results, folder = team_eval.run_team(cfg, progress=progress)
    _render(results, folder, json_out, f"team: x={cfg.model_x.display_name}, y={cfg.model_y.display_name}")


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    """A repeatable option that also takes comma-separated names (--subset nq1,nq2)."""
    names = [name.strip().lower() for value in values or () for name in value.split(",") if name.strip()]
    return tuple(names) or None


def _render_farm(results: dict[str, Any], folder: Path, json_out: bool, title: str) -> None:
    """One row per subset/strategy and pooled: n, initial accuracy, MSR, accuracy after each turn, turns."""
    if _shard_waiting(results, folder, json_out):
        return
    if json_out:
        print(json.dumps(results, indent=2))
        return
    if results.get("reused"):
        title += " (up to date, reused)"
    from rich import box
    from rich.markup import escape

    from pbt_cli.evals.farm import TURNS

    caption = ("init: initial accuracy; MSR: misinformation success rate, persuaded / initially correct (lower is "
               "better); tN: accuracy after turn N (turn 0 = 'I believe ...'); turns: to persuasion, counted from 1, "
               "mean and min-max among the persuaded")
    table = Table(title=title, caption=escape(caption), box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1),
                  pad_edge=False)
    table.add_column("subset/strategy", overflow="fold")
    for column in ("n", "init", "MSR", *[f"t{t}" for t in range(TURNS)], "turns", "range"):
        table.add_column(column, justify="right", no_wrap=True)

    def value(entry: dict[str, Any] | None, digits: int = 3) -> str:
        number = (entry or {}).get("value")
        return "-" if number is None else f"{number:.{digits}f}"

    for name, entry in results["metrics"].items():
        turns = value(entry.get("mean_turns_to_persuasion"), 2)
        span = "-" if turns == "-" else (f"{value(entry.get('min_turns_to_persuasion'), 0)}-"
                                         f"{value(entry.get('max_turns_to_persuasion'), 0)}")
        after = entry.get("accuracy_after_turn") or {}
        table.add_row(name, str(entry.get("counts", {}).get("questions", "")), value(entry.get("initial_accuracy")),
                      value(entry.get("misinformation_success_rate")),
                      *[value(after.get(str(t))) for t in range(TURNS)], turns, span)
    console.stdout.print(table)
    console.stderr.print(f"results: {folder / 'results.json'}\nsamples: {folder / 'samples.jsonl'}", highlight=False)


@app.command("farm", help="Resistance to misinformation on the Farm dataset: accuracy under persuasion, turn by turn.",
             epilog="Example: pbt eval farm --model smollm2-135m --farm embedded:farm-sample --out runs/try/results")
@o.pbt_command
@o.shared_options(o.SINGLE_MODEL_PARAMETERS, o.LOAD_PARAMETERS, o.BACKEND_PARAMETERS, o.TRACKING_PARAMETERS,
                  o.RUN_PARAMETERS)
def farm(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Short name, hub id, model folder or adapter folder.")],
    farm_data: Annotated[str, typer.Option(
        "--farm", help="embedded:farm-sample (a small sample shipped with pbt), a Farm .jsonl file, or a folder "
        "holding Boolq.jsonl, NQ1.jsonl, NQ2.jsonl, TruthfulQA.jsonl (download them: see README).")],
    subset: Annotated[list[str] | None, typer.Option(
        "--subset", help="boolq, nq1, nq2, truthfulqa (repeat the flag or separate by commas; default: all).")] = None,
    strategy: Annotated[list[str] | None, typer.Option(
        "--strategy", help="logical (the paper's), credibility, emotional, control (repeat the flag or separate by "
        "commas; default: logical).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="The first N questions of each subset.")] = None,
    format_retries: Annotated[int, typer.Option(
        "--format-retries", help="Resample an answer with no readable choice up to N times (paper: 1).")] = 1,
    temperature: Annotated[float, typer.Option("--temperature", help="Asking and probing.",
                                               rich_help_panel=o.SAMPLING)] = 0.2,
    top_p: Annotated[float, typer.Option("--top-p", help="Every request.", rich_help_panel=o.SAMPLING)] = 0.9,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Asking and probing, multiple choice.",
                                                rich_help_panel=o.SAMPLING)] = 20,
    boolq_max_new_tokens: Annotated[int, typer.Option("--boolq-max-new-tokens", help="Asking and probing, BoolQ.",
                                                      rich_help_panel=o.SAMPLING)] = 8,
    reply_temperature: Annotated[float, typer.Option("--reply-temperature", help="Replies to persuasion.",
                                                     rich_help_panel=o.SAMPLING)] = 0.8,
    reply_max_new_tokens: Annotated[int, typer.Option("--reply-max-new-tokens", help="Replies to persuasion.",
                                                      rich_help_panel=o.SAMPLING)] = 200,
    shard_idx: o.ShardIdx = None,
    num_shards: o.NumShards = None,
    out: Out = Path("results"),
    overwrite: o.Overwrite = False,
    json_out: o.JsonOut = False,
    seed: o.seed_option("sampling, bootstrap intervals") = 42,
    estimate: o.Estimate = False,
    **shared: Any,
) -> None:
    shard = launch_shard(shard_idx, num_shards)
    from pbt_cli.data.farm import EMBEDDED_PREFIX, load_farm
    from pbt_cli.evals.farm import FarmConfig, run_farm

    dry_run = bool(shared["dry_run"]) or estimate
    params = ctx.params
    cfg = FarmConfig(model=o.model_spec_from(params, "model", with_overrides=True), farm=farm_data,
                     subsets=_names(subset), strategies=_names(strategy) or ("logical",), limit=limit,
                     format_retries=format_retries, seed=seed, temperature=temperature, top_p=top_p,
                     max_new_tokens=max_new_tokens, boolq_max_new_tokens=boolq_max_new_tokens,
                     reply_temperature=reply_temperature, reply_max_new_tokens=reply_max_new_tokens, out=out,
                     backend=o.backend_options_from(params), overwrite=overwrite, tracking=o.tracking_from(params),
                     shard=shard)
    o.check_models(cfg.model, dry_run=dry_run)
    if dry_run:
        if farm_data.strip().startswith(EMBEDDED_PREFIX):
            load_farm(cfg.farm, cfg.subsets, cfg.limit)
        else:
            o.check_input(Path(farm_data), "--farm", dry_run=True,
                          check=lambda _: load_farm(cfg.farm, cfg.subsets, cfg.limit))
        o.print_dry_run("pbt eval farm", cfg)
        from pbt_cli.budget import farm_budget
        from pbt_cli.commands import estimate as e
        from pbt_cli.evals.farm import TURNS

        items = None
        if farm_data.strip().startswith(EMBEDDED_PREFIX) or Path(farm_data).exists():
            items = len(shard.take(range(sum(len(qs) for qs in load_farm(cfg.farm, cfg.subsets, cfg.limit).values())
                                         * len(cfg.strategies))))
        budget = farm_budget(TURNS, format_retries, max(max_new_tokens, boolq_max_new_tokens), reply_max_new_tokens)
        e.show_budget("eval farm", budget, items)
        if estimate and items:
            e.estimate_farm(cfg.backend, cfg.model, cfg, items, budget)
        return
    with console.progress("eval farm") as progress:
        results, folder = run_farm(cfg, progress=progress)
    _render_farm(results, folder, json_out, f"farm: {cfg.model.display_name} on {farm_data}")


@app.command("report", help="Compare every finished result under a folder: each model, trained vs base, the mean "
             "over training seeds (table, csv, json or markdown), and plots with 95% intervals.",
             epilog="Example: pbt eval report runs/try/results --format markdown")
@o.pbt_command
def report(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A results root (the --out of `pbt eval ...`).")],
    format: Annotated[Literal["table", "csv", "json", "markdown"], typer.Option(
        "--format", help="table: one table per model, trained vs base, and over training seeds (fits 80 "
        "columns); csv, json, markdown: the tidy rows (model, base, eval, metric, higher_is_better, value, ci_low, "
        "ci_high, n, extractor, seed, eval_seed) on stdout.")] = "table",
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where report.csv/.md/.json and the plots go (default: FOLDER/report).")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write report_*.png plots.")] = True,
    mixed_extractors: Annotated[bool, typer.Option(
        "--mixed-extractors/--no-mixed-extractors", help="Report results read by different answer extractors "
        "together (refused otherwise: scores from different readers do not compare); each row names its reader.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json/--no-json", help="Same as --format json.")] = False,
    config: o.ConfigFile = None,
    dry_run: o.DryRun = False,
) -> None:
    from pbt_cli.evals.report import (
        COMPARISON_COLUMNS,
        REPORT_OUTPUTS,
        SEED_COLUMNS,
        as_csv,
        as_json,
        as_markdown,
        collect,
        plot,
        render,
        tables,
    )
    from pbt_cli.outputs import claim_output

    def must_be_folder(path: Path) -> None:
        if not path.is_dir():
            raise PbtError(f"{path} is not a folder; give the --out folder of `pbt eval`")

    format = "json" if json_out else format
    target = out or folder / "report"
    o.check_input(folder, "results folder", dry_run=dry_run, check=must_be_folder)
    if dry_run:
        o.print_dry_run("pbt eval report", {"folder": folder, "format": format, "out": target, "plots": plots,
                                            "mixed_extractors": mixed_extractors})
        return
    result = collect(folder, mixed_extractors=mixed_extractors)
    with claim_output(target, "eval report", outputs=REPORT_OUTPUTS, overwrite=True) as claimed:
        claimed.remove_owned()
        for name, text in (("report.csv", as_csv(result.rows)), ("report.md", as_markdown(result.rows)),
                           ("report.json", as_json(result.rows)),
                           ("report_vs_base.csv", as_csv(result.comparisons, COMPARISON_COLUMNS)),
                           ("report_over_seeds.csv", as_csv(result.over_seeds, SEED_COLUMNS))):
            (target / name).write_text(text, encoding="utf-8")
        written = plot(result, target) if plots else []
        from pbt_cli.artifacts import base_manifest

        manifest = base_manifest("eval report", {"folder": folder, "mixed_extractors": mixed_extractors})
        claimed.write_manifest({**manifest, "status": "complete", "rows": len(result.rows),
                                "results": [str(r.path) for r in result.results], "extractors": result.extractors})
    if format != "table":
        print(render(result.rows, format), end="")
    else:
        readers = ", ".join(result.extractors) or "none"
        console.stdout.print(f"results under {folder} (answers read by: {readers})", highlight=False, markup=False)
        console.stdout.print("↑ higher is better, ↓ lower is better, · neither", highlight=False, markup=False)
        for table in tables(result, str(folder)):
            console.stdout.print(table, soft_wrap=False)  # a table and its title fit the width
    for skipped in result.skipped:
        console.stderr.print(f"[yellow]note[/]: {skipped} is not finished; rerun its command to include it",
                             highlight=False)
    console.stderr.print(f"tables: {target}/report.csv, report.md, report.json, report_vs_base.csv, "
                         "report_over_seeds.csv", highlight=False)
    for path in written:
        console.stderr.print(f"plot: {path}", highlight=False)


@app.command("export", help="Write finished results in another tool's layout: lm-eval's results files or Inspect "
             "eval logs (`inspect view`).")
@o.pbt_command
def export(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A results root (the --out of `pbt eval ...`).")],
    format: Annotated[Literal["lm-eval", "inspect"], typer.Option(
        "--format", help="lm-eval (lm-evaluation-harness's results files) or inspect (Inspect AI eval logs).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Where the files go (default: FOLDER/export-lm-eval or FOLDER/export-inspect).")] = None,
    mixed_extractors: Annotated[bool, typer.Option(
        "--mixed-extractors/--no-mixed-extractors", help="Export results read by different answer extractors "
        "together (each file names its reader).")] = False,
    config: o.ConfigFile = None,
    dry_run: o.DryRun = False,
) -> None:
    from pbt_cli.artifacts import base_manifest
    from pbt_cli.evals.export import export as write_export
    from pbt_cli.evals.export import output_names
    from pbt_cli.evals.report import collect
    from pbt_cli.outputs import MANIFEST, claim_output

    def must_be_folder(path: Path) -> None:
        if not path.is_dir():
            raise PbtError(f"{path} is not a folder; give the --out folder of `pbt eval`")

    target = out or folder / f"export-{format}"
    o.check_input(folder, "results folder", dry_run=dry_run, check=must_be_folder)
    if dry_run:
        o.print_dry_run("pbt eval export", {"folder": folder, "format": format, "out": target})
        return
    result = collect(folder, mixed_extractors=mixed_extractors)
    names = output_names(result, format)
    with claim_output(target, f"eval export {format}", outputs=(*names, MANIFEST), overwrite=True) as claimed:
        claimed.remove_owned()
        written = write_export(result, format, target)
        manifest = base_manifest(f"eval export {format}", {"folder": folder, "format": format})
        claimed.write_manifest({**manifest, "status": "complete", "files": [str(p.relative_to(target))
                                                                           for p in written]})
    console.stderr.print(f"[green]done[/]: {len(written)} files in {target} ({format} layout, "
                         f"{len(result.results)} results)", highlight=False)
