"""`pbt eval flipflop|ays|team|report`: the paper's three evaluations and a comparison of results."""

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

HELP = "The paper's evaluations: flipflop (balanced persuasion), ays (are you sure?), team (two-model dialogues)."

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


def _render(results: dict[str, Any], folder: Path, json_out: bool, title: str) -> None:
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


@app.command("flipflop", help="Accuracy on the balanced persuasion set (resisting and accepting).")
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
    out: Out = Path("results"),
    overwrite: o.Overwrite = False,
    json_out: o.JsonOut = False,
    seed: o.Seed = 42,
    **shared: Any,
) -> None:
    from pbt_cli.evals.flipflop import FlipflopConfig, run_flipflop
    from pbt_cli.pipeline.preprocess import read_data_manifest

    dry_run = bool(shared["dry_run"])
    params = ctx.params
    cfg = FlipflopConfig(model=o.model_spec_from(params, "model", with_overrides=True), data=data, split=split,
                         extractor=o.model_spec_from(params, "extractor_model"), limit=limit, seed=seed,
                         sampling=o.sampling_from(params), extraction_max_new_tokens=extraction_max_new_tokens,
                         out=out, backend=o.backend_options_from(params), overwrite=overwrite,
                         tracking=o.tracking_from(params))
    o.check_models(cfg.model, cfg.extractor, dry_run=dry_run)
    o.check_input(data, "--data", dry_run=dry_run, check=read_data_manifest)
    if dry_run:
        o.print_dry_run("pbt eval flipflop", cfg)
        return
    with console.progress("eval flipflop") as progress:
        results, folder = run_flipflop(cfg, progress=progress)
    _render(results, folder, json_out, f"flipflop: {cfg.model.display_name} on {data} ({split})")


@app.command("ays", help='"Are you sure?": accuracy before and after a challenge, and flip rates.')
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
    out: Out = Path("results"),
    overwrite: o.Overwrite = False,
    json_out: o.JsonOut = False,
    seed: o.Seed = 42,
    **shared: Any,
) -> None:
    from pbt_cli.evals.ays import AysConfig, run_ays

    dry_run = bool(shared["dry_run"])
    params = ctx.params
    cfg = AysConfig(model=o.model_spec_from(params, "model", with_overrides=True), questions=questions, limit=limit,
                    seed=seed, extractor=o.model_spec_from(params, "extractor_model"), max_new_tokens=max_new_tokens,
                    min_new_tokens=o.min_new_tokens_for(min_new_tokens, max_new_tokens),
                    extraction_max_new_tokens=extraction_max_new_tokens, out=out,
                    backend=o.backend_options_from(params), overwrite=overwrite, tracking=o.tracking_from(params))
    o.check_models(cfg.model, cfg.extractor, dry_run=dry_run)
    check_source(questions)
    if dry_run:
        o.print_dry_run("pbt eval ays", cfg)
        return
    with console.progress("eval ays") as progress:
        results, folder = run_ays(cfg, progress=progress)
    _render(results, folder, json_out, f"are you sure?: {cfg.model.display_name} on {questions}")


@app.command("team", help="Two models in standard dialogues, both speaking orders; --rescore re-reads samples.")
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
    out: Out = Path("results"),
    overwrite: o.Overwrite = False,
    json_out: o.JsonOut = False,
    seed: o.Seed = 42,
    **shared: Any,
) -> None:
    from pbt_cli.evals import team as team_eval

    dry_run = bool(shared["dry_run"])
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
        overwrite=overwrite, tracking=o.tracking_from(params))
    o.check_models(cfg.model_x, cfg.model_y, cfg.extractor, dry_run=dry_run)
    check_source(questions)
    if dry_run:
        o.print_dry_run("pbt eval team", cfg)
        return
    with console.progress("eval team") as progress:
        results, folder = team_eval.run_team(cfg, progress=progress)
    _render(results, folder, json_out, f"team: x={cfg.model_x.display_name}, y={cfg.model_y.display_name}")



@app.command("report", help="Compare every result under a folder in one table; plot resist vs accept and team order.")
@o.pbt_command
def report(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="A results root (the --out of `pbt eval ...`).")],
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write report_*.png into the folder.")] = True,
    json_out: o.JsonOut = False,
    config: o.ConfigFile = None,
    dry_run: o.DryRun = False,
) -> None:
    from pbt_cli.evals.report import COLUMNS, collect, plot

    def must_be_folder(path: Path) -> None:
        if not path.is_dir():
            raise PbtError(f"{path} is not a folder; give the --out folder of `pbt eval`")

    o.check_input(folder, "results folder", dry_run=dry_run, check=must_be_folder)
    if dry_run:
        o.print_dry_run("pbt eval report", {"folder": folder, "plots": plots})
        return
    result = collect(folder)
    written = plot(result, folder) if plots else []
    if json_out:
        print(json.dumps({"rows": result.rows, "plots": [str(p) for p in written]}, indent=2))
        return
    used = [c for c, _, _ in COLUMNS if any(row.get(c) is not None for row in result.rows.values())]
    table = Table(title=f"results under {folder}")
    table.add_column("model", overflow="fold")
    for column in used:  # numbers never wrap; long model names fold instead
        table.add_column(column, justify="right", no_wrap=True, min_width=6)
    for name, row in result.rows.items():
        table.add_row(name, *[("-" if row.get(c) is None else f"{row[c]:.3f}") for c in used])
    console.stdout.print(table)
    for path in written:
        console.stderr.print(f"plot: {path}", highlight=False)
