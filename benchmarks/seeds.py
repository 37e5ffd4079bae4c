"""Benchmark: do sampled trees depend on batching? The same trees with --trees-per-batch 1 and 8.

    python benchmarks/seeds.py --model smollm2-135m --trees 8 --max-turns 3 [--dtype float32]

Every sampled request has its own seed and its own random generator (docs/method.md §2.10), so the
draws do not depend on the batch. What can still differ is the arithmetic: a row padded to another
length gets logits that differ in the last bits, and a draw that lands within that distance of a
token boundary picks the neighbouring token; from there the branch goes its own way. This script
generates the same trees twice, one tree per batch and eight per batch, on one model object, and
reports the share of turns (and of whole trees) whose text is identical. Prints a table and one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def turn_texts(path: Path) -> dict[tuple[str, int], str]:
    """Each turn's text by (tree, turn id); turn ids follow the same expansion order in both runs."""
    texts = {}
    for line in path.read_text().splitlines():
        tree = json.loads(line)
        for turn in tree["turns"][1:]:
            texts[(tree["tree_id"], turn["id"])] = turn["text"]
    return texts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", default="embedded:train-easy")
    parser.add_argument("--trees", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-sizes", default="1,8", help="Two --trees-per-batch values to compare.")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)

    from _common import load_for_benchmark  # this folder: on sys.path when run as a script

    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.models.backends.base import Sampling
    from pbt_cli.models.backends.hf import TransformersGenerator
    from pbt_cli.pipeline.generate import GenerateConfig, run_generate

    spec, model, tokenizer = load_for_benchmark(args.model, args.dtype, args.threads)
    first, second = (int(size) for size in args.batch_sizes.split(","))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in (first, second):
            generator = TransformersGenerator(spec, model=model, tokenizer=tokenizer)
            cfg = GenerateConfig(model_a=spec, model_b=spec, questions=args.questions, limit=args.trees,
                                 max_turns=args.max_turns, trees_per_batch=size, out=Path(tmp) / f"tpb{size}",
                                 sampling=Sampling(temperature=0.7, max_new_tokens=args.max_new_tokens,
                                                   min_new_tokens=min(8, args.max_new_tokens)))
            result = run_generate(cfg, pool=GeneratorPool(preset={spec.name: generator}))
            runs[size] = turn_texts(result.trees_path)
    common = sorted(set(runs[first]) & set(runs[second]))
    same = [key for key in common if runs[first][key] == runs[second][key]]
    trees = sorted({tree for tree, _ in set(runs[first]) | set(runs[second])})
    identical_trees = [tree for tree in trees
                       if {k: v for k, v in runs[first].items() if k[0] == tree}
                       == {k: v for k, v in runs[second].items() if k[0] == tree}]
    summary = {"benchmark": "seeds", "model": args.model, "dtype": str(model.dtype).replace("torch.", ""),
               "trees_per_batch": [first, second], "trees": len(trees), "turns_compared": len(common),
               "turns_identical": len(same), "turn_share_identical": len(same) / max(len(common), 1),
               "trees_identical": len(identical_trees),
               "tree_share_identical": len(identical_trees) / max(len(trees), 1)}
    table = Table(title=f"sampled trees, --trees-per-batch {first} vs {second}: {args.model} ({summary['dtype']})")
    for column in ("", "compared", "identical", "share"):
        table.add_column(column, justify="right")
    table.add_row("turns", str(len(common)), str(len(same)), f"{summary['turn_share_identical']:.1%}")
    table.add_row("trees", str(len(trees)), str(len(identical_trees)), f"{summary['tree_share_identical']:.1%}")
    Console(stderr=True).print(table)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
