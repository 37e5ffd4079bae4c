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


@pytest.fixture(scope="module")
def shims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp_path = tmp_path_factory.mktemp("recipes")
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
               DATA_ROOT=str(tmp_path / "data"), SEEDS="12 42 64", MODELS="llama-3.1-8b-instruct",
               PYTHONPATH=str(ROOT))
    return env


def test_recipes_exist():
    names = {p.name for p in SCRIPTS}
    assert {"demo.sh", "generate_trees.sbatch", "prepare_data.sh", "train.sh", "train_70b.sh", "evaluate.sbatch",
            "released_models.sh"} <= names


_RUNS: dict[tuple, tuple[subprocess.CompletedProcess, list[str]]] = {}


def run_recipe(script: Path, env: dict[str, str], **extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run a recipe once per environment through the dry-run shims (cached: each pbt line costs a
    process start); returns the finished process and the pbt command lines it ran."""
    key = (str(script), tuple(sorted(extra.items())))
    if key not in _RUNS:
        log = Path(env["SHIM_LOG"]).with_name(f"calls-{len(_RUNS)}.log")
        args = [str(log.with_suffix(".run"))] if script.name == "demo.sh" else []
        done = subprocess.run(["bash", str(script), *args], cwd=ROOT, env={**env, **extra, "SHIM_LOG": str(log)},
                              capture_output=True, text=True, timeout=600)
        _RUNS[key] = (done, log.read_text().splitlines() if log.exists() else [])
    return _RUNS[key]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_command_line_of_the_recipe_dry_runs(script: Path, shims: dict[str, str]):
    done, calls = run_recipe(script, shims)
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


# --- the paper's protocol, as the recipes run it (docs/method.md §7) -------------------------------------------


def recipe_calls(script: str, env: dict[str, str], **extra: str) -> list[list[str]]:
    """The pbt command lines a recipe runs, each split into words (through the dry-run shims)."""
    import shlex

    done, calls = run_recipe(RECIPES / script, env, **extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return [shlex.split(line) for line in calls]


def option(call: list[str], name: str) -> str | None:
    return call[call.index(name) + 1] if name in call else None


def test_each_mix_gets_its_own_sft_and_the_original_sizes(shims: dict[str, str]):
    calls = recipe_calls("paper/prepare_data.sh", shims)
    renders = [c for c in calls if c[1] == "preprocess"]
    assert {(option(c, "--format"), option(c, "--mix")) for c in renders} == {
        (fmt, mix) for fmt in ("sft", "dpo") for mix in ("balanced", "accept", "resist")}
    assert not any("--limit" in c or "--no-balance" in c for c in renders)  # the original 2m / m / m sizes
    [judge] = [option(c, "--judge") for c in calls if c[1] == "filter"]
    assert judge == "llama-3-8b-instruct"


def test_the_equal_size_ablation_cuts_every_mix_to_one_size(shims: dict[str, str]):
    calls = recipe_calls("paper/prepare_data.sh", shims, EQUAL_SIZE="1", FAMILIES="mistral-7b-instruct-v0.2")
    limits = {option(c, "--limit") for c in calls if c[1] == "preprocess"}
    assert limits == {"1"}  # m (1 in a dry run, where the pairs do not exist yet), the same for every mix


def test_every_dpo_run_starts_from_the_sft_of_its_own_mix(shims: dict[str, str]):
    calls = recipe_calls("paper/train.sh", shims)
    sft_out = {(option(c, "--seed"), option(c, "--data").rsplit("sft_", 1)[1]): option(c, "--out")
               for c in calls if c[1] == "sft"}
    dpo = [c for c in calls if c[1] == "dpo"]
    assert len(sft_out) == len(dpo) == 9  # three mixes x three seeds, each with its own SFT
    for call in dpo:
        seed, mix = option(call, "--seed"), option(call, "--data").rsplit("dpo_", 1)[1]
        assert option(call, "--adapter") == sft_out[(seed, mix)], call
        assert option(call, "--extractor-model") == "mistral-7b-instruct-v0.2"  # the one reader
        assert option(call, "--config") == "recipes/configs/dpo_8b.yaml" and "--eval-limit" not in call
    config = yaml.safe_load((RECIPES / "configs" / "dpo_8b.yaml").read_text())
    assert config["eval_limit"] == 1000 and config["eval_strategy"] == "epoch"


def test_the_70b_run_keeps_its_best_epoch(shims: dict[str, str]):
    calls = recipe_calls("paper/train_70b.sh", shims)
    [dpo] = [c for c in calls if "dpo" in c]
    [select] = [c for c in calls if "select-checkpoint" in c]
    assert option(select, "--run") == option(dpo, "--out")
    assert option(select, "--extractor-model") == "mistral-7b-instruct-v0.2" and option(select, "--eval-limit") == "1000"
    config = yaml.safe_load((RECIPES / "configs" / "dpo_70b.yaml").read_text())
    assert config["save_strategy"] == "epoch" and config["save_total_limit"] is None
    assert config["eval_strategy"] == "no"


def test_one_reader_grades_every_evaluation(shims: dict[str, str]):
    for script in ("paper/evaluate.sbatch", "paper/released_models.sh"):
        calls = recipe_calls(script, shims)
        graded = [c for c in calls if c[1] == "eval" and c[2] in ("flipflop", "ays", "team")]
        assert graded and all(option(c, "--extractor-model") == "mistral-7b-instruct-v0.2" for c in graded), script


def test_slurm_recipes_stop_cleanly_and_requeue():
    for script in ("generate_trees.sbatch", "evaluate.sbatch"):
        text = (RECIPES / "paper" / script).read_text()
        assert "#SBATCH --signal=B:TERM@300" in text and "#SBATCH --requeue" in text
        assert "source recipes/paper/on_preemption.bash" in text
        pbt_lines = [line for line in text.splitlines() if line.lstrip().startswith(("pbt ", "resumable pbt "))]
        assert pbt_lines and all(line.lstrip().startswith("resumable pbt ") for line in pbt_lines)


# --- the original release's behaviour where it changes data, training or scores (docs/method.md §8.7) ----------

PROTOCOL_STAGES = {  # recipe -> the pbt stages in it that take --protocol
    "paper/generate_trees.sbatch": {"generate"}, "paper/serve_and_generate.sbatch": {"generate"},
    "paper/prepare_data.sh": {"filter"}, "paper/filter_served_judge.sh": {"filter"},
    "paper/evaluate.sbatch": {"flipflop", "ays"}, "paper/released_models.sh": {"flipflop", "ays"},
    "paper/evaluate_served.sh": {"flipflop", "ays"}, "paper/evaluate_hosted.sh": {"flipflop", "ays"},
}


def _stage(call: list[str]) -> str:
    return call[2] if call[1] == "eval" else call[1]


@pytest.mark.parametrize("script", sorted(PROTOCOL_STAGES))
def test_paper_recipes_run_the_original_code_protocol(script: str, shims: dict[str, str]):
    calls = [c for c in recipe_calls(script, shims) if _stage(c) in PROTOCOL_STAGES[script]]
    assert {_stage(c) for c in calls} == PROTOCOL_STAGES[script]
    assert all(option(c, "--protocol") == "original-code" for c in calls), calls


def test_one_setting_switches_a_recipe_to_the_paper_protocol(shims: dict[str, str]):
    calls = recipe_calls("paper/evaluate.sbatch", shims, PROTOCOL="paper")
    graded = [c for c in calls if _stage(c) in ("flipflop", "ays")]
    assert len(graded) == 2 and all(option(c, "--protocol") == "paper" for c in graded)


def test_paper_training_configs_use_the_originals_lora_targets_and_protocol():
    for name in ("sft_8b", "dpo_8b", "sft_70b", "dpo_70b"):
        config = yaml.safe_load((RECIPES / "configs" / f"{name}.yaml").read_text())
        assert config["lora_target_modules"] == ["q_proj", "k_proj", "v_proj"], name  # §8.3
        assert config["protocol"] == "original-code", name


def test_the_demo_keeps_the_paper_protocol(shims: dict[str, str]):
    assert "--protocol" not in (RECIPES / "demo.sh").read_text()
