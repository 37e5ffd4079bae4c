"""What each speed-up of the transformers backend buys, measured on `pbt generate` itself.

    python benchmarks/ablation.py --model smollm2-135m --trees 8
    python benchmarks/ablation.py --model smollm2-135m --trees 8 --dtype float32   # CPUs without bf16

Runs the same trees (same questions, seeds, settings) once per variant, each switching one thing
off: prefix-ordered batching (length order or input order instead), shared-prefix caching, pbt's
per-row sampler (transformers' own sampler, one random stream per batch, instead), and the dtype
(`--dtype`, default auto; the "float32 instead" variant applies when that is bfloat16). Variants
whose arithmetic differs grow somewhat different trees: compare seconds per turn. Prints seconds,
generated tokens/s, the share of token slots spent on padding, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

VARIANTS = {
    "pbt (all on)": {},
    "length order, not prefix order": {"batch_order": "length"},
    "input order": {"batch_order": "input"},
    "no shared-prefix cache": {"share_prefixes": False},
    "transformers' sampler (one stream per batch)": {"per_row_sampling": False},
    "float32 instead of bf16": {"dtype": "float32"},
}


def run_variant(args: argparse.Namespace, name: str, switches: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from pbt_cli.models.backends import BackendOptions, GeneratorPool
    from pbt_cli.models.backends.base import Sampling
    from pbt_cli.models.backends.hf import TransformersGenerator
    from pbt_cli.models.spec import LoadOptions, ModelSpec
    from pbt_cli.pipeline.generate import GenerateConfig, run_generate

    spec = ModelSpec.parse(args.model, load=LoadOptions(dtype=switches.get("dtype", args.dtype)))
    generator = TransformersGenerator(spec, batch_size=args.batch_size)
    generator.batch_order = switches.get("batch_order", "prefix")
    generator.share_prefixes = switches.get("share_prefixes", True)
    generator.per_row_sampling = switches.get("per_row_sampling", True)
    pool = GeneratorPool(BackendOptions(batch_size=args.batch_size), preset={spec.cache_key(): generator})
    cfg = GenerateConfig(model_a=spec, model_b=spec, questions=args.questions, limit=args.trees, seed=42,
                         sampling=Sampling(temperature=0.7, top_p=1.0, max_new_tokens=args.max_new_tokens,
                                           min_new_tokens=args.min_new_tokens),
                         out=workdir / name.replace(" ", "_"), trees_per_batch=args.trees)
    started = time.perf_counter()
    result = run_generate(cfg, pool=pool)
    seconds = time.perf_counter() - started
    usage = generator.usage
    slots = usage.prompt_tokens + usage.generated_tokens + usage.padded_tokens
    return {"variant": name, "seconds": seconds, "turns": result.turns, "generated_tokens": usage.generated_tokens,
            "tokens_per_s": usage.generated_tokens / seconds, "padding_share": usage.padded_tokens / max(slots, 1),
            "dtype": str(generator.model.dtype).replace("torch.", "")}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", default="embedded:train")
    parser.add_argument("--trees", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--min-new-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", default="auto", help="The dtype of every variant but 'float32 instead of bf16'.")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="which variants to run")
    args = parser.parse_args(argv)

    if args.dtype == "float32" and "float32 instead of bf16" in args.variants:
        args.variants.remove("float32 instead of bf16")  # already float32: nothing to switch off
    workdir = Path(tempfile.mkdtemp(prefix="pbt-ablation-"))
    try:
        rows = [run_variant(args, name, VARIANTS[name], workdir) for name in args.variants]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = rows[0]["seconds"] / rows[0]["turns"]
    table = Table(title=f"pbt generate, {args.trees} trees of {args.model}: one speed-up off at a time")
    for column in ("variant", "dtype", "seconds", "s/turn", "x slower", "turns", "tokens/s", "padding"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in rows:
        per_turn = row["seconds"] / row["turns"]
        table.add_row(row["variant"], row["dtype"], f"{row['seconds']:.1f}", f"{per_turn:.2f}", f"{per_turn / base:.2f}",
                      str(row["turns"]), f"{row['tokens_per_s']:.1f}", f"{row['padding_share']:.0%}")
    Console(stderr=True).print(table)
    print(json.dumps({"benchmark": "ablation", "model": args.model, "trees": args.trees, "rows": rows}))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
