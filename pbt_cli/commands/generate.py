"""`pbt generate`: persuasion dialogue trees (docs/method.md §2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pbt_cli import console
from pbt_cli.budget import generate_budget
from pbt_cli.commands import options as o
from pbt_cli.commands.estimate import count_questions, estimate_dialogues, question_conversations, show_budget
from pbt_cli.data.questions import check_source
from pbt_cli.launcher import launch_shard
from pbt_cli.pipeline.generate import GenerateConfig, run_generate

HELP = "Generate two-agent persuasion dialogue trees (batched, sharded, resumable)."
EXAMPLE = ("Example: pbt generate --model-a smollm2-135m --model-b smollm2-135m --questions embedded:train-easy "
           "--limit 20 --out runs/try/trees   (add --dry-run to see the request and token budget first)")


@o.pbt_command
@o.shared_options(o.LOAD_PARAMETERS, o.BACKEND_PARAMETERS, o.RUN_PARAMETERS)
def generate(
    ctx: typer.Context,
    model_a: Annotated[str, typer.Option("--model-a", help="Agent A (speaks first): short name, hub id or path.")],
    model_b: Annotated[str, typer.Option("--model-b", help="Agent B: short name, hub id or path.")],
    extractor_model: Annotated[str | None, typer.Option(
        "--extractor-model", help="Model that extracts each turn's answer (default: agent B's).")] = None,
    questions: Annotated[str, typer.Option(
        "--questions", help="embedded:train|validation (add -easy for the two easiest levels), "
                            "trivia_qa:train|validation, hf:OWNER/NAME\\[:CONFIG]:SPLIT, or a .jsonl/.json file.")
    ] = "embedded:train",
    limit: Annotated[int | None, typer.Option("--limit", help="Use the first N questions after shuffling.")] = None,
    shard_idx: o.ShardIdx = None,
    num_shards: o.NumShards = None,
    max_turns: Annotated[int, typer.Option("--max-turns", help="Dialogue levels (A at even, B at odd).")] = 4,
    both_first: Annotated[bool, typer.Option("--both-first/--no-both-first",
                                             help="B opens without seeing A's opening.")] = True,
    split: Annotated[Literal["train", "eval"], typer.Option(
        "--split", help="train: persona branching; eval: standard persona, one path.")] = "train",
    deterministic: Annotated[bool, typer.Option("--deterministic/--no-deterministic",
                                                help="Greedy decoding for every turn.")] = False,
    temperature: o.Temperature = 0.7,
    top_p: o.TopP = 1.0,
    top_k: o.TopK = 0,
    max_new_tokens: o.MaxNewTokens = 80,
    min_new_tokens: o.MinNewTokens = 8,
    extraction_max_new_tokens: Annotated[int, typer.Option(
        "--extraction-max-new-tokens", help="Token budget of each answer extraction.", rich_help_panel=o.SAMPLING)] = 16,
    trees_per_batch: Annotated[int, typer.Option(
        "--trees-per-batch", help="Trees expanded together; each finished group is written at once.",
        rich_help_panel=o.BACKEND)] = 32,
    out: Annotated[Path, typer.Option("--out", help="Output folder (trees JSONL + manifest).")] = Path("trees"),
    overwrite: o.Overwrite = False,
    seed: o.Seed = 42,
    protocol: o.Protocol = "paper",
    estimate: o.Estimate = False,
    **shared: Any,
) -> None:
    dry_run = bool(shared["dry_run"]) or estimate
    params = ctx.params
    shard = launch_shard(shard_idx, num_shards)  # under torchrun: one GPU per rank, before CUDA starts
    shard_idx, num_shards = shard.index, shard.count
    cfg = GenerateConfig(
        model_a=o.model_spec_from(params, "model_a"), model_b=o.model_spec_from(params, "model_b"),
        extractor=o.model_spec_from(params, "extractor_model"), questions=questions, limit=limit, seed=seed,
        shard_idx=shard_idx, num_shards=num_shards, max_turns=max_turns, both_first=both_first, split=split,
        deterministic=deterministic, sampling=o.sampling_from(params), extraction_max_new_tokens=extraction_max_new_tokens,
        trees_per_batch=trees_per_batch, out=out, overwrite=overwrite, backend=o.backend_options_from(params),
        protocol=protocol,
    )
    o.check_models(cfg.model_a, cfg.model_b, cfg.extractor_spec, dry_run=dry_run)
    check_source(questions)
    if dry_run:
        o.print_dry_run("pbt generate", cfg)
        budget = generate_budget(max_turns, split, max_new_tokens, extraction_max_new_tokens)
        items = count_questions(questions, limit, seed, shard_idx, num_shards)
        show_budget("generate", budget, items)
        if estimate:
            from pbt_cli.data.prompts import EVAL_PERSONA, OPENING_PERSONAS

            persona = EVAL_PERSONA if split == "eval" else OPENING_PERSONAS[0]
            estimate_dialogues(cfg.backend, cfg.model_a, cfg.extractor_spec,
                               question_conversations(questions, limit, seed, persona), cfg.sampling,
                               extraction_max_new_tokens, budget, items or 0)
        return
    with console.progress("generate") as progress:
        result = run_generate(cfg, progress=progress)
    rate = result.generated_tokens / result.seconds if result.seconds else 0.0
    console.stderr.print(
        f"[green]done[/]: {result.written} trees written ({result.turns} turns, {result.generated_tokens} tokens, "
        f"{rate:,.0f} tok/s), {result.already_done} already there, {result.selected} in this shard -> "
        f"{result.trees_path}", highlight=False)
