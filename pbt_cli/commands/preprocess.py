"""`pbt preprocess`: preference pairs rendered for one tokenizer (docs/method.md §4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.panel import Panel
from rich.text import Text

from pbt_cli import console
from pbt_cli.commands import options as o
from pbt_cli.models.spec import ModelSpec
from pbt_cli.pipeline.filter import read_pairs_manifest
from pbt_cli.pipeline.preprocess import PreprocessConfig, run_preprocess

HELP = "Render preference pairs with one tokenizer's chat template into train/valid/test datasets."
EXAMPLE = ("Example: pbt preprocess --pairs runs/try/pairs --tokenizer smollm2-135m --format sft --mix all "
           "--out runs/try/sft_data --show 1")


@o.pbt_command
def preprocess(
    ctx: typer.Context,
    pairs: Annotated[Path, typer.Option("--pairs", help="The --out folder of `pbt filter`.")],
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="Model whose tokenizer and chat template to use.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (Parquet splits, dataset card, manifest).")],
    format: Annotated[Literal["dpo", "sft"], typer.Option(
        "--format", help="dpo: prompt/chosen/rejected; sft: prompt/completion (the chosen response).")] = "dpo",
    mix: Annotated[Literal["balanced", "accept", "resist", "all"], typer.Option(
        "--mix", help="balanced (PBT) | accept-only | resist-only | all pairs.")] = "balanced",
    limit: Annotated[int | None, typer.Option("--limit", help="Cap the training pairs (fair comparisons).")] = None,
    balance: Annotated[bool, typer.Option(
        "--balance/--no-balance", help="Cut both kinds to the smaller kind's count before mixing, as the original "
        "runs did (balanced = 2m pairs, accept or resist = m); --no-balance keeps every pair of a single kind.")
    ] = True,
    balance_eval: Annotated[bool, typer.Option(
        "--balance-eval/--no-balance-eval", help="Cut the valid and test splits to equal resist and accept counts "
        "(the paper's flipflop sets); --no-balance-eval keeps every held-out pair of either kind (few trees).")
    ] = True,
    max_length: Annotated[int | None, typer.Option(
        "--max-length", help="Drop pairs longer than this (tokens); default: what training uses, 1024 for sft, "
        "1000 for dpo.")] = None,
    max_prompt_length: Annotated[int, typer.Option("--max-prompt-length",
                                                   help="Drop pairs whose prompt is longer (tokens).")] = 512,
    show: Annotated[int, typer.Option("--show", help="Print N rendered training examples.")] = 0,
    revision: o.Revision = None,
    chat_template: o.ChatTemplate = None,
    trust_remote_code: o.TrustRemoteCode = False,
    seed: o.Seed = 42,
    overwrite: o.Overwrite = False,
    config: o.ConfigFile = None,
    dry_run: o.DryRun = False,
) -> None:
    spec = ModelSpec.parse(tokenizer, revision=revision, chat_template=chat_template,
                           load=o.load_options_from(ctx.params))
    if max_length is None:  # the paper's training lengths (docs/method.md §4.5), so nothing kept is truncated later
        max_length = 1024 if format == "sft" else 1000
    cfg = PreprocessConfig(pairs=pairs, tokenizer=spec, out=out, format=format, mix=mix, limit=limit,
                           max_length=max_length, max_prompt_length=max_prompt_length, seed=seed, balance=balance,
                           overwrite=overwrite, balance_eval=balance_eval)
    o.check_models(spec, dry_run=dry_run)
    o.check_input(pairs, "--pairs", dry_run=dry_run, check=read_pairs_manifest)
    if dry_run:
        o.print_dry_run("pbt preprocess", cfg)
        return
    with console.progress("preprocess") as progress:
        result = run_preprocess(cfg, show=show, progress=progress)
    for example in result.examples:  # Text, not markup: the dialogue may contain brackets
        body = Text(example["prompt_text"])
        body.append(example.get("chosen_text") or example.get("completion_text") or "", style="bold green")
        if "rejected_text" in example:
            body.append("\nrejected: ", style="bold red")
            body.append(example["rejected_text"])
        console.stderr.print(Panel(body, title=f"{example['pair_id']} ({example['kind']})", expand=False))
    status = "up to date, reused" if result.reused else "written"
    console.stderr.print(f"[green]{status}[/]: {result.out} ({', '.join(f'{k} {v}' for k, v in result.counts.items())}"
                         f"; dropped: {', '.join(f'{k} {v}' for k, v in result.dropped.items())})", highlight=False)
