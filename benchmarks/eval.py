"""Benchmark: `pbt eval ays` (all questions advance together) against one question at a time.

    python benchmarks/eval.py --model smollm2-135m --questions 32 --reference-questions 4

Same model object, dtype, questions, prompts and greedy settings on every row. The baselines ask
each question on its own (batch 1): first answer, "Are you sure?", final answer, then both
extractions; once with the KV cache on (a strong baseline) and once without it, as the reference
code generates. Prints a table and one JSON line with questions/s and the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--source", default="embedded:validation")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--reference-questions", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from _common import load_for_benchmark  # this folder: on sys.path when run as a script

    from pbt_cli.data.questions import load_questions, select_questions
    from pbt_cli.evals.ays import run_ays_dialogues
    from pbt_cli.models.backends.hf import TransformersGenerator

    spec, model, tokenizer = load_for_benchmark(args.model, args.dtype, args.threads)
    questions = select_questions(load_questions(args.source), limit=args.questions, seed=42)

    batched = TransformersGenerator(spec, model=model, tokenizer=tokenizer, batch_size=args.batch_size)
    started = time.perf_counter()
    samples = run_ays_dialogues(questions, batched, batched, max_new_tokens=args.max_new_tokens)
    pbt_seconds = time.perf_counter() - started

    def one_at_a_time(use_cache: bool, count: int) -> dict[str, Any]:
        """Batch 1 everywhere, and no prompt prefix shared between questions."""
        single = TransformersGenerator(spec, model=model, tokenizer=tokenizer, batch_size=1)
        single.share_prefixes, single.use_cache = False, use_cache
        started = time.perf_counter()
        for question in questions[:count]:
            run_ays_dialogues([question], single, single, max_new_tokens=args.max_new_tokens)
        seconds = time.perf_counter() - started
        return {"questions": count, "seconds": seconds, "questions_per_s": count / seconds,
                "generated_tokens": single.usage.generated_tokens}

    pbt = {"questions": len(samples), "seconds": pbt_seconds, "questions_per_s": len(samples) / pbt_seconds,
           "generated_tokens": batched.usage.generated_tokens}
    cached = one_at_a_time(True, args.reference_questions)
    uncached = one_at_a_time(False, max(1, args.reference_questions // 2))
    summary = {"benchmark": "eval-ays", "model": args.model, "dtype": str(model.dtype).replace("torch.", ""),
               "threads": torch.get_num_threads(), "pbt": pbt, "one_at_a_time_kv_cache": cached,
               "one_at_a_time_no_cache": uncached,
               "speedup_vs_kv_cache": pbt["questions_per_s"] / cached["questions_per_s"],
               "speedup_vs_no_cache": pbt["questions_per_s"] / uncached["questions_per_s"]}
    table = Table(title=f"eval ays: {args.model} ({summary['dtype']}, {summary['threads']} threads)")
    for column in ("", "questions", "seconds", "questions/s", "generated tokens"):
        table.add_column(column, justify="right")
    for name, row in (("pbt eval ays", pbt), ("one at a time, KV cache", cached),
                      ("one at a time, no cache", uncached)):
        table.add_row(name, str(row["questions"]), f"{row['seconds']:.1f}", f"{row['questions_per_s']:.3f}",
                      str(row["generated_tokens"]))
    console = Console(stderr=True)
    console.print(table)
    console.print(f"speed-up: {summary['speedup_vs_kv_cache']:.1f}x over one at a time with the KV cache, "
                  f"{summary['speedup_vs_no_cache']:.1f}x over one at a time without it (the reference code's way)")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
