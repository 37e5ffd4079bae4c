"""Benchmark: inference paths for CPUs, on the same greedy trees, side by side.

    python benchmarks/cpu_paths.py --model smollm2-135m --trees 8 --max-turns 3

Each candidate runs `pbt generate --deterministic` (greedy, so every difference in the answers comes
from the arithmetic, not from sampling) on the same questions, in a process of its own:

  bfloat16            what pbt picks on CPUs with AVX512-BF16 or AMX
  float32             what pbt picks on the others (most laptops and many cloud CPUs)
  float32, AVX2 only  float32 with torch, oneDNN and MKL held to AVX2 instructions
                      (ATEN_CPU_CAPABILITY, DNNL_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS): a stand-in,
                      on an AVX512 machine, for a CPU that has nothing newer
  dynamic int8 (+ AVX2 only)  every Linear layer in int8 with activations quantized on the fly
                      (`--dynamic-int8`, torch's fbgemm kernels), weights from the float32 model

For each: seconds, seconds per turn, generated tokens/s, and the share of extracted answers that
agree with the float32 run on the same turn (the quantized path must not change what the model
answers much). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
CANDIDATES: dict[str, tuple[list[str], dict[str, str]]] = {
    "bfloat16": (["--dtype", "bfloat16"], {}),
    "float32": (["--dtype", "float32"], {}),
    "float32, AVX2 only": (["--dtype", "float32"], AVX2_ONLY),
    "dynamic int8": (["--dtype", "float32", "--dynamic-int8"], {}),
    "dynamic int8, AVX2 only": (["--dtype", "float32", "--dynamic-int8"], AVX2_ONLY),
}
REFERENCE = "float32"


def run_candidate(args: argparse.Namespace, name: str, workdir: Path) -> dict[str, Any]:
    flags, env = CANDIDATES[name]
    out = workdir / name.replace(" ", "_").replace(",", "")
    command = [sys.executable, "-m", "pbt_cli", "-q", "generate", "--model-a", args.model, "--model-b", args.model,
               "--questions", args.questions, "--limit", str(args.trees), "--max-turns", str(args.max_turns),
               "--max-new-tokens", str(args.max_new_tokens),
               "--min-new-tokens", str(min(args.min_new_tokens, args.max_new_tokens)), "--deterministic", "--trees-per-batch",
               str(args.trees), "--out", str(out), *flags]
    environment = {**os.environ, **env}
    if args.threads:
        environment["OMP_NUM_THREADS"] = str(args.threads)
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    answers = {}
    for line in (out / "trees.jsonl").read_text().splitlines():
        tree = json.loads(line)
        for turn in tree["turns"][1:]:
            answers[(tree["tree_id"], turn["id"])] = turn["answer"][turn["agent"]]
    generation = manifest["generation"]
    turns = manifest["counts"]["turns_this_run"]
    return {"candidate": name, "seconds": generation["seconds"], "turns": turns,
            "seconds_per_turn": generation["seconds"] / max(turns, 1),
            "tokens_per_s": generation["generated_tokens"] / generation["seconds"],
            "dtype": manifest["settings"]["model_a"]["dtype"], "answers": answers}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", default="embedded:train-easy")
    parser.add_argument("--trees", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--min-new-tokens", type=int, default=8, help="lowered to --max-new-tokens when above it")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES), help="which paths to run")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pbt-cpu-paths-") as tmp:
        rows = [run_candidate(args, name, Path(tmp)) for name in args.candidates]
    reference = next((r for r in rows if r["candidate"] == REFERENCE), rows[0])
    for row in rows:
        common = set(row["answers"]) & set(reference["answers"])
        row["answers_compared"] = len(common)
        row["agreement_with_float32"] = (sum(row["answers"][k] == reference["answers"][k] for k in common)
                                         / max(len(common), 1))
        row["speedup_vs_float32"] = reference["seconds_per_turn"] / row["seconds_per_turn"]
    table = Table(title=f"greedy trees of {args.model} on CPU: {args.trees} trees, {args.max_turns} turns")
    for column in ("path", "s", "s/turn", "x float32", "tok/s", "answers = float32"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for row in rows:
        table.add_row(row["candidate"], f"{row['seconds']:.1f}", f"{row['seconds_per_turn']:.2f}",
                      f"{row['speedup_vs_float32']:.2f}", f"{row['tokens_per_s']:.1f}",
                      f"{row['agreement_with_float32']:.0%} of {row['answers_compared']}")
    Console(stderr=True).print(table)
    print(json.dumps({"benchmark": "cpu-paths", "model": args.model, "trees": args.trees,
                      "rows": [{k: v for k, v in r.items() if k != "answers"} for r in rows]}))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
