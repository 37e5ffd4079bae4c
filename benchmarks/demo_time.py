"""Benchmark: the demo's time, stage by stage (recipes/demo.sh), on this machine.

    python benchmarks/demo_time.py                       # this CPU's own path
    python benchmarks/demo_time.py --avx2-only           # as on a CPU with nothing newer than AVX2
    python benchmarks/demo_time.py --run-dir runs/timed --keep

Runs `bash recipes/demo.sh RUN_DIR` in a fresh run folder with a fresh PBT_HOME (so the demo
model's one-time conversion is counted, as on a fresh clone), stamps every line the script prints,
and reports the seconds from one "== N/M" stage line to the next. `--avx2-only` holds torch, oneDNN
and MKL to AVX2 instructions and makes `--dtype auto` see no bfloat16: a stand-in, on an
AVX512-BF16 machine, for the CPUs most laptops have. The install (`nox -s demo` from a fresh clone)
is not included: time it with `/usr/bin/time` around the README's command. Prints a table and one
JSON line with the stage times and the total.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
STAGE = re.compile(r"^== (\d+)/(\d+) (.*)$")
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "PBT_CPU_BF16": "0"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=None, help="Where the demo writes (default: a temp folder).")
    parser.add_argument("--keep", action="store_true", help="Keep the run folder and PBT_HOME afterwards.")
    parser.add_argument("--avx2-only", action="store_true", help="Run as on a CPU without AVX512 and bfloat16.")
    parser.add_argument("--script", default=str(ROOT / "recipes" / "demo.sh"))
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="pbt-demo-time-"))
    run_dir = args.run_dir or workdir / "run"
    env = {**os.environ, "PBT_HOME": str(workdir / "pbt-home"), "PYTHONUNBUFFERED": "1",
           **(AVX2_ONLY if args.avx2_only else {})}
    bin_dir = Path(sys.executable).parent  # the demo calls `pbt`: the one installed beside this python
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    marks: list[tuple[float, str]] = []
    started = time.perf_counter()
    process = subprocess.Popen(["bash", args.script, str(run_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    log = []
    for line in process.stdout:
        log.append(line)
        found = STAGE.match(line.strip())
        if found:
            marks.append((time.perf_counter() - started, f"{found.group(1)}/{found.group(2)} {found.group(3)}"))
    code = process.wait()
    total = time.perf_counter() - started
    if code != 0:
        sys.stderr.write("".join(log[-40:]))
        raise SystemExit(f"the demo failed (exit {code})")
    stages = []
    for index, (at, name) in enumerate(marks):
        end = marks[index + 1][0] if index + 1 < len(marks) else total
        stages.append({"stage": name, "seconds": round(end - at, 1)})
    summary = {"benchmark": "demo-time", "avx2_only": args.avx2_only, "stages": stages,
               "total_seconds": round(total, 1), "total_minutes": round(total / 60, 1),
               "before_first_stage_seconds": round(marks[0][0], 1) if marks else None}
    table = Table(title="recipes/demo.sh, stage by stage" + (" (AVX2 only, float32)" if args.avx2_only else ""))
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage in stages:
        table.add_row(stage["stage"], f"{stage['seconds']:.0f}")
    table.add_row("total", f"{total:.0f} ({total / 60:.1f} min)")
    Console(stderr=True).print(table)
    print(json.dumps(summary))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
