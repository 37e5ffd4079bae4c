"""Benchmark: `pbt generate` against the reference code's generation pattern, side by side.

    python benchmarks/generate.py --model smollm2-135m --trees 16 --reference-trees 2

Both sides load the same weights once (same model, dtype and threads), use the same questions
(the reference loop takes the first `--reference-trees` of them), the same personas, views,
agreement rule, sampling settings and answer extraction; only the generation pattern differs:
- pbt: `run_generate` with the transformers backend: every open branch of every tree at a level in
  one batch (length-sorted, left-padded, KV cache, shared-prefix caching for extraction);
- reference: one turn at a time, batch 1, `use_cache=False`, then its extraction the same way,
  as the reference code generates.
It also measures the model's large-batch forward ceiling (tokens/s of one big prefill batch), and
prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def reference_tree(model: Any, tokenizer: Any, question: Any, settings: Any, rng: random.Random) -> dict[str, int]:
    """One tree the reference way: recursive, one sequence at a time, no KV cache."""
    import torch

    from pbt_cli.data.prompts import extraction_conversation, parse_extraction
    from pbt_cli.data.trees import Turn, agent_at_level, agents_agree, other_agent, resolve_step
    from pbt_cli.models.chat import encode, render
    from pbt_cli.pipeline.dialogue import agent_view, personas_for, trim_unfinished_sentence

    counts = {"turns": 0, "generated_tokens": 0}

    def one(conversation: list[dict[str, str]], greedy: bool, max_new: int, min_new: int) -> str:
        ids = torch.tensor([encode(tokenizer, render(tokenizer, conversation))])
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new, min_new_tokens=min_new or None, use_cache=False,
                                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        if greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=settings.sampling.temperature, top_p=settings.sampling.top_p,
                          top_k=0)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        new = out[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id)]
        counts["generated_tokens"] += len(new)
        return tokenizer.decode(new, skip_special_tokens=True).strip()

    def expand(path: list[Turn], state: dict[str, str], level: int) -> None:
        if level >= settings.max_turns:
            return
        speaker = agent_at_level(level)
        for persona in personas_for(level, settings.split, rng):
            view = agent_view(question.question, path, speaker, persona, settings.both_first)
            text = trim_unfinished_sentence(one(view, False, settings.sampling.max_new_tokens,
                                                settings.sampling.min_new_tokens))
            extracted = parse_extraction(one(extraction_conversation(question.question, text), True,
                                             settings.extraction.max_new_tokens, 0))
            counts["turns"] += 1
            turn = Turn(id=len(path) + 1, parent=None, level=level, agent=speaker, persona=persona, text=text,
                        answer={speaker: extracted, other_agent(speaker): None})
            new_state = resolve_step(state, speaker, extracted)
            if not agents_agree(new_state, extracted):
                expand([*path, turn], new_state, level + 1)

    expand([], {"A": "NONE", "B": "NONE"}, 0)
    return counts


def prefill_ceiling(model: Any, rows: int, length: int) -> float:
    """Tokens/s of one large forward pass: what the hardware does with no generation overhead."""
    import torch

    # ordinary token ids, clear of the specials at the start of most vocabularies
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(min(100, vocab // 2), min(5000, vocab), (rows, length))
    with torch.inference_mode():
        model(ids[:2, :16])  # warm up
        started = time.perf_counter()
        model(ids)
        return ids.numel() / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", default="embedded:train")
    parser.add_argument("--trees", type=int, default=16, help="trees for pbt generate")
    parser.add_argument("--reference-trees", type=int, default=2, help="trees for the reference loop (slow)")
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--min-new-tokens", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--dtype", default="auto", help="same for both sides (auto: bf16 on CPUs with AVX512-BF16)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    import torch
    from _common import load_for_benchmark  # this folder: on sys.path when run as a script

    from pbt_cli.data.questions import load_questions, select_questions
    from pbt_cli.models.backends import BackendOptions, GeneratorPool
    from pbt_cli.models.backends.base import Sampling
    from pbt_cli.models.backends.hf import TransformersGenerator
    from pbt_cli.pipeline.generate import GenerateConfig, run_generate

    spec, model, tokenizer = load_for_benchmark(args.model, args.dtype, args.threads)
    sampling = Sampling(temperature=0.7, top_p=1.0, max_new_tokens=args.max_new_tokens,
                        min_new_tokens=args.min_new_tokens)
    workdir = Path(tempfile.mkdtemp(prefix="pbt-bench-"))
    try:
        generator = TransformersGenerator(spec, model=model, tokenizer=tokenizer, batch_size=args.batch_size)
        pool = GeneratorPool(BackendOptions(batch_size=args.batch_size), preset={spec.cache_key(): generator})
        cfg = GenerateConfig(model_a=spec, model_b=spec, questions=args.questions, limit=args.trees, seed=args.seed,
                             max_turns=args.max_turns, sampling=sampling, out=workdir / "trees",
                             trees_per_batch=args.trees)
        started = time.perf_counter()
        result = run_generate(cfg, pool=pool)
        pbt_seconds = time.perf_counter() - started
        pbt_turns = result.turns
        pbt_tokens = generator.usage.generated_tokens

        questions = select_questions(load_questions(args.questions), limit=args.trees, seed=args.seed)
        settings = cfg.dialogue_settings()
        reference = {"turns": 0, "generated_tokens": 0}
        started = time.perf_counter()
        for question in questions[: args.reference_trees]:
            counts = reference_tree(model, tokenizer, question, settings, random.Random(f"{args.seed}:{question.question_id}"))
            for key in reference:
                reference[key] += counts[key]
        reference_seconds = time.perf_counter() - started
        ceiling = prefill_ceiling(model, rows=32, length=256)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    pbt = {"trees": result.written, "turns": pbt_turns, "generated_tokens": pbt_tokens, "seconds": pbt_seconds,
           "trees_per_s": result.written / pbt_seconds, "tokens_per_s": pbt_tokens / pbt_seconds,
           # every token the model read or wrote, prompts included: the work the forward passes did
           "processed_tokens_per_s": (generator.usage.prompt_tokens + pbt_tokens) / pbt_seconds}
    ref = {"trees": args.reference_trees, **reference, "seconds": reference_seconds,
           "trees_per_s": args.reference_trees / reference_seconds,
           "tokens_per_s": reference["generated_tokens"] / reference_seconds}
    summary = {
        "benchmark": "generate", "model": args.model, "dtype": str(model.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(), "max_new_tokens": args.max_new_tokens, "pbt": pbt, "reference": ref,
        "speedup_trees_per_s": pbt["trees_per_s"] / ref["trees_per_s"],
        "speedup_tokens_per_s": pbt["tokens_per_s"] / ref["tokens_per_s"],
        "prefill_ceiling_tokens_per_s": ceiling, "share_of_ceiling": pbt["tokens_per_s"] / ceiling,
        "processed_share_of_ceiling": pbt["processed_tokens_per_s"] / ceiling,
    }
    table = Table(title=f"generate: {args.model} ({summary['dtype']}, {summary['threads']} threads)")
    for column in ("", "trees", "turns", "generated tokens", "seconds", "trees/s", "tokens/s"):
        table.add_column(column, justify="right")
    for name, row in (("pbt generate", pbt), ("reference loop", ref)):
        table.add_row(name, str(row["trees"]), str(row["turns"]), str(row["generated_tokens"]),
                      f"{row['seconds']:.1f}", f"{row['trees_per_s']:.4f}", f"{row['tokens_per_s']:.1f}")
    console = Console(stderr=True)
    console.print(table)
    console.print(f"speed-up: {summary['speedup_trees_per_s']:.1f}x trees/s, {summary['speedup_tokens_per_s']:.1f}x "
                  f"tokens/s; prefill ceiling {ceiling:.0f} tokens/s: pbt's generated tokens/s are "
                  f"{summary['share_of_ceiling']:.0%} of it, its prompt + generated tokens/s "
                  f"{summary['processed_share_of_ceiling']:.0%}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
