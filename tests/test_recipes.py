"""Every `pbt` command line in recipes/ runs with --dry-run, so a recipe can never drift from the CLI.

Each recipe script is executed by bash with a `pbt` shim first on PATH that runs the real CLI with
`--dry-run` appended (and an `accelerate` shim that checks its config file and does the same for
`accelerate launch ... -m pbt_cli ARGS`). Loops in the recipes are cut to one pass through
their environment variables. Every invocation is logged; the test fails on any non-zero exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"

PBT_SHIM = """#!/usr/bin/env bash
echo "pbt $*" >> "$SHIM_LOG"
exec "{python}" -m pbt_cli "$@" --dry-run
"""

ACCELERATE_SHIM = """#!/usr/bin/env bash
# accelerate launch --config_file FILE -m pbt_cli ARGS...
[ "$1" = launch ] || {{ echo "accelerate shim: expected 'launch'" >&2; exit 2; }}
shift
while [ $# -gt 0 ] && [ "$1" != -m ]; do
    if [ "$1" = --config_file ]; then [ -f "$2" ] || {{ echo "missing accelerate config $2" >&2; exit 2; }}; shift; fi
    shift
done
[ "$2" = pbt_cli ] || {{ echo "accelerate shim: expected -m pbt_cli" >&2; exit 2; }}
shift 2
echo "accelerate pbt $*" >> "$SHIM_LOG"
exec "{python}" -m pbt_cli "$@" --dry-run
"""

SCRIPTS = sorted(p for p in RECIPES.rglob("*") if p.suffix in (".sh", ".sbatch"))


@pytest.fixture
def shims(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("pbt", PBT_SHIM), ("accelerate", ACCELERATE_SHIM)):
        path = bin_dir / name
        path.write_text(text.format(python=sys.executable))
        path.chmod(0o755)
    env = dict(os.environ)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", SHIM_LOG=str(tmp_path / "calls.log"),
               SLURM_ARRAY_TASK_ID="0", OUT=str(tmp_path / "out"), DATA=str(tmp_path / "data"),
               TREES=str(tmp_path / "trees"), PAIRS=str(tmp_path / "pairs"), RESULTS=str(tmp_path / "results"),
               DATA_ROOT=str(tmp_path / "data"), SEEDS="42", MODELS="llama-3.1-8b-instruct",
               PYTHONPATH=str(ROOT))
    return env


def test_recipes_exist():
    names = {p.name for p in SCRIPTS}
    assert {"demo.sh", "generate_trees.sbatch", "prepare_data.sh", "train.sh", "train_70b.sh", "evaluate.sbatch",
            "released_models.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_command_line_of_the_recipe_dry_runs(script: Path, shims: dict[str, str], tmp_path: Path):
    args = [str(tmp_path / "run")] if script.name == "demo.sh" else []
    done = subprocess.run(["bash", str(script), *args], cwd=ROOT, env=shims, capture_output=True, text=True,
                          timeout=300)
    log = Path(shims["SHIM_LOG"])
    calls = log.read_text().splitlines() if log.exists() else []
    assert done.returncode == 0, f"{script.name} failed:\n{done.stderr[-3000:]}"
    assert calls, f"{script.name} ran no pbt command"
    assert "configuration is valid" in done.stderr


def test_every_yaml_config_names_only_real_options(shims: dict[str, str]):
    """The recipe YAML files also go through --dry-run (unknown keys are errors), once each."""
    configs = sorted((RECIPES / "configs").glob("*.yaml"))
    assert configs
    for config in configs:
        stage = config.name.split("_")[0]
        header = config.read_text().splitlines()[0]
        assert header.startswith("#"), f"{config.name} must start with a comment giving its command"
        done = subprocess.run([sys.executable, "-m", "pbt_cli", stage, "--config", str(config), "--model",
                               "llama-3.1-8b-instruct", "--data", "d", "--out", "o", "--dry-run"],
                              cwd=ROOT, env=shims, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{config.name}: {done.stderr}"


def test_accelerate_configs_parse():
    for config in (RECIPES / "accelerate").glob("*.yaml"):
        data = yaml.safe_load(config.read_text())
        assert data["distributed_type"] in ("MULTI_GPU", "FSDP")
        assert config.read_text().startswith("#")
