"""Benchmark: the demo model through `transformers serve` against the same model in process, on the same
greedy trees: trees/s of each side and their ratio.

    python benchmarks/served_demo.py --trees 4 --max-turns 3        # a few minutes on 2 CPU cores
    python benchmarks/served_demo.py --server vllm --dtype bfloat16 --trees 16   # vllm serve (vLLM installed)

Both sides grow the same trees (greedy, float32, the same questions and prompts), so the trees should
come out the same (the JSON says whether the turns and the answers did) and the ratio compares equal
work (the tiny test model's noise extractions differ, since transformers serve cannot continue the
extractor's "Final answer:" prefix; the demo model's agree):
agents A and B and the extractor are one model, served once or loaded once. The in-process side is
pbt's transformers backend (batched, shared-prefix KV cache); the served side sends one request per
turn and extraction with `--max-concurrency` in flight to `transformers serve`, which generates one
request at a time unless started with continuous batching (`--continuous-batching`). It needs
`transformers[serving]` (fastapi, uvicorn, openai: the dev extra).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="a short name or model folder pbt can load")
    parser.add_argument("--trees", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--dtype", default="float32", help="both sides (float32: greedy tokens match exactly)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on each side; 0: all CPUs")
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--continuous-batching", action="store_true", help="start transformers serve with it")
    parser.add_argument("--server", choices=("transformers", "vllm"), default="transformers",
                        help="transformers serve, or vllm serve (vLLM's continuous batching; needs vLLM installed)")
    parser.add_argument("--log", type=Path, default=Path("served_demo_server.log"))
    args = parser.parse_args(argv)

    import torch

    from pbt_cli.data.questions import load_questions, select_questions
    from pbt_cli.models.backends import BackendOptions, GeneratorPool
    from pbt_cli.models.backends.base import Sampling
    from pbt_cli.models.resolve import resolve
    from pbt_cli.models.spec import LoadOptions, ModelSpec
    from pbt_cli.pipeline.dialogue import DialogueRoles, DialogueSettings, expand_trees

    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    torch.set_num_threads(threads)
    local_spec = ModelSpec.parse(args.model, load=LoadOptions(dtype=args.dtype, device_map="cpu"))
    folder = Path(resolve(local_spec).base)
    questions = select_questions(load_questions("embedded:train-easy"), limit=args.trees, seed=42)
    settings = DialogueSettings(max_turns=args.max_turns, sampling=Sampling(
        temperature=0.0, max_new_tokens=args.max_new_tokens, min_new_tokens=min(8, args.max_new_tokens)))

    def grow(spec: ModelSpec, options: BackendOptions) -> dict[str, Any]:
        pool = GeneratorPool(options)
        model = pool.get(spec)
        if hasattr(model, "start"):
            model.start()  # the served side's start-up checks are not tree time
        started = time.perf_counter()
        trees = expand_trees(questions, DialogueRoles(agents={"A": model, "B": model}, extractor=model), settings)
        seconds = time.perf_counter() - started
        return {"trees": len(trees), "turns": sum(len(t.turns) - 1 for t in trees), "seconds": seconds,
                "trees_per_s": len(trees) / seconds, "generated_tokens": model.usage.generated_tokens,
                "requests": model.usage.sequences,
                "texts": [[t.text for t in tree.turns] for tree in trees],
                "answers": [[t.answer for t in tree.turns] for tree in trees]}

    local = grow(local_spec, BackendOptions())
    from _common import start_transformers_serve, start_vllm_serve  # this folder: on sys.path as a script

    server_started = time.perf_counter()
    if args.server == "vllm":
        process, url = start_vllm_serve(folder, args.log, dtype=args.dtype)
    else:
        process, url = start_transformers_serve(folder, args.log, device="cpu", dtype=args.dtype,
                                                continuous_batching=args.continuous_batching,
                                                env={"OMP_NUM_THREADS": str(threads)})
    server_start_s = time.perf_counter() - server_started
    try:
        served = grow(ModelSpec.parse(f"openai:{folder}@{url}"), BackendOptions(max_concurrency=args.max_concurrency))
    finally:
        process.terminate()
        process.wait(30)
    same_texts = local.pop("texts") == served.pop("texts")
    same = same_texts and local.pop("answers") == served.pop("answers")
    local.pop("answers", None)
    served.pop("answers", None)
    summary = {"benchmark": "served-demo", "server": args.server, "server_start_s": round(server_start_s, 1),
               "model": args.model, "dtype": args.dtype, "threads": threads,
               "continuous_batching": args.continuous_batching, "max_concurrency": args.max_concurrency,
               "in_process": local, "served": served, "same_trees": same, "same_turn_texts": same_texts,
               "served_over_in_process": served["trees_per_s"] / local["trees_per_s"],
               "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    table = Table(title=f"{args.model} ({args.dtype}, {threads} threads): the same greedy trees")
    for column in ("side", "trees", "turns", "seconds", "trees/s", "generated tokens", "requests"):
        table.add_column(column, justify="right")
    for name, row in (("in process (transformers backend)", local), (f"{args.server} serve", served)):
        table.add_row(name, str(row["trees"]), str(row["turns"]), f"{row['seconds']:.1f}", f"{row['trees_per_s']:.3f}",
                      str(row["generated_tokens"]), str(row["requests"]))
    console = Console(stderr=True)
    console.print(table)
    console.print(f"served / in process: {summary['served_over_in_process']:.2f}x trees/s; "
                  f"the same turns: {'yes' if same_texts else 'no'}; the same answers too: {'yes' if same else 'no'}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
