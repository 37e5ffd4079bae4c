"""`pbt filter`: dialogue trees -> preference pairs (docs/method.md §3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pbt_cli import console
from pbt_cli.commands import options as o
from pbt_cli.pipeline.filter import FilterConfig, check_trees_input, run_filter, summary_rows

HELP = "Turn dialogue trees into resist/accept preference pairs, split by tree (tokenizer-independent)."
EXAMPLE = "Example: pbt filter --trees runs/try/trees --out runs/try/pairs   (then: pbt diagnostics runs/try/trees)"


@o.pbt_command
@o.shared_options(o.LOAD_PARAMETERS, o.BACKEND_PARAMETERS, o.RUN_PARAMETERS)
def filter_trees(
    ctx: typer.Context,
    trees: Annotated[Path, typer.Option("--trees", help="A trees file or a folder of shards (pbt or reference format).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for train/valid/test.jsonl + manifest.")],
    margin: Annotated[float, typer.Option("--margin", help="Keep a pair when (hi - lo) / hi >= margin.")] = 0.5,
    judge: Annotated[str | None, typer.Option(
        "--judge", help="LLM judge for answer sameness and for confirming resist/accept kinds.")] = None,
    valid_fraction: Annotated[float, typer.Option("--valid-fraction", help="Share of trees for valid.")] = 0.15,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Share of trees for test.")] = 0.15,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial/--no-allow-partial", help="Use the trees of an unfinished `pbt generate` run (recorded in "
        "the manifest).")] = False,
    seed: o.seed_option("the train/valid/test split by tree") = 42,
    overwrite: o.Overwrite = False,
    protocol: o.Protocol = "paper",
    **shared: Any,
) -> None:
    dry_run = bool(shared["dry_run"])
    params = ctx.params
    cfg = FilterConfig(trees=trees, out=out, margin=margin, judge=o.model_spec_from(params, "judge"), seed=seed,
                       valid_fraction=valid_fraction, test_fraction=test_fraction, overwrite=overwrite,
                       allow_partial=allow_partial, backend=o.backend_options_from(params), protocol=protocol)
    o.check_input(trees, "--trees", dry_run=dry_run, check=lambda path: check_trees_input(path, allow_partial))
    o.check_models(cfg.judge, dry_run=dry_run)
    if dry_run:
        o.print_dry_run("pbt filter", cfg)
        return
    with console.progress("filter") as progress:
        result = run_filter(cfg, progress=progress)
    table = Table(title=f"preference pairs in {result.out}" + (" (up to date, reused)" if result.reused else ""))
    for column in ("split", "resist", "accept", "no kind", "total"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for row in summary_rows(result):
        table.add_row(*[str(v) for v in row])
    console.stderr.print(table)
    trees_line = ", ".join(f"{k} {v}" for k, v in result.trees.items())
    removed_line = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.removed.items())
    console.stderr.print(f"trees: {trees_line}\nsibling pairs considered: {result.pairs_considered}; removed: "
                         f"{removed_line or 'none'}", highlight=False)
    if result.diagnostics:
        from pbt_cli.commands.view import diagnostics_table

        console.stderr.print(diagnostics_table(result.diagnostics, f"tree diagnostics of {trees} (also in "
                                                                   f"{result.out}/manifest.json)"))
