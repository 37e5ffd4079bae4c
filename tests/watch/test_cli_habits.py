"""The CLI follows its ecosystem (issue 27, item 6): one test per surprise that was seen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from pbt_cli import __version__, console

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
COMMANDS = [("generate",), ("filter",), ("preprocess",), ("sft",), ("dpo",), ("select-checkpoint",), ("export",),
            ("eval", "flipflop"), ("eval", "ays"), ("eval", "team"), ("eval", "farm"), ("eval", "report"), ("view",),
            ("diagnostics",), ("download-models",), ("card",), ("push",), ("env",)]


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # help text on one line per option


def help_of(capsys, *path):
    result = run_cli(capsys, *path, "--help")
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_v_counts_and_a_number_after_it_says_what_to_type(capsys):
    assert run_cli(capsys, "-vv", "env", "--json").exit_code == 0
    assert console.verbosity() == 2
    result = run_cli(capsys, "-v", "2", "env")
    assert result.exit_code == 2 and "-v takes no number: repeat it instead (-vv for 2)" in result.stderr
    text = help_of(capsys)
    line = next(line for line in text.splitlines() if "--verbose" in line)
    assert "<int>" not in line and "[default: 0]" not in text


def test_flags_show_as_flags_not_bool_values(capsys):
    for path in (("generate",), ("sft",), ("eval", "ays"), ()):
        assert "<bool>" not in help_of(capsys, *path), path


def test_sft_lists_only_its_own_options_and_keeps_dpo_defaults(capsys, tmp_path):
    sft, dpo = help_of(capsys, "sft"), help_of(capsys, "dpo")
    assert "--beta" not in sft and "--reference" not in sft
    assert "--beta" in dpo and "--reference" in dpo
    result = run_cli(capsys, "sft", "--model", "smollm2-135m", "--data", tmp_path / "data", "--out", tmp_path / "o",
                     "--dry-run")
    assert result.exit_code == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["beta"] == 0.1 and config["reference"] == "base"  # the configuration (and its hash) is unchanged


def test_seed_help_says_what_each_command_seeds(capsys):
    texts = {path: next(line for line in help_of(capsys, *path).splitlines() if "--seed" in line)
             for path in (("generate",), ("filter",), ("sft",), ("dpo",), ("eval", "flipflop"), ("eval", "farm"))}
    assert "personas" in texts[("generate",)]
    assert "split by tree" in texts[("filter",)] and "personas" not in texts[("filter",)]
    assert "LoRA" in texts[("sft",)] and "LoRA" in texts[("dpo",)] and "personas" not in texts[("sft",)]
    assert "pair subset" in texts[("eval", "flipflop")] and "personas" not in texts[("eval", "farm")]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p))
def test_every_command_help_has_an_example(capsys, path):
    text = help_of(capsys, *path)
    assert f"Example: pbt {' '.join(path)}" in text


def test_shell_completion_shows_installs_and_completes(capsys, tmp_path):
    result = run_cli(capsys, "--show-completion", "bash")
    assert result.exit_code == 0 and "_PBT_COMPLETE" in result.stdout
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    code = "from pbt_cli.cli import main; main()"
    installed = subprocess.run([sys.executable, "-c", code, "--install-completion", "bash"], env=env,
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    assert "pbt" in (tmp_path / ".bashrc").read_text()
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               env={**env, "_PBT_COMPLETE": "complete_bash", "COMP_WORDS": "pbt gen", "COMP_CWORD": "1"})
    assert "generate" in completed.stdout.split()


def test_trl_and_lm_eval_underscore_spellings_are_accepted(capsys, tmp_path):
    result = run_cli(capsys, "sft", "--model_name_or_path", "smollm2-135m", "--data", tmp_path / "data",
                     "--output_dir", tmp_path / "o", "--learning_rate", "1e-4", "--per_device_train_batch_size=3",
                     "--dry-run")
    assert result.exit_code == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["learning_rate"] == 1e-4 and config["per_device_train_batch_size"] == 3
    assert config["out"] == str(tmp_path / "o")
    result = run_cli(capsys, "eval", "ays", "--model", "smollm2-135m", "--output_path", tmp_path / "r", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert yaml.safe_load(result.stdout)["out"] == str(tmp_path / "r")


def test_commands_are_listed_in_pipeline_order(capsys):
    text = help_of(capsys)
    order = ["generate", "filter", "preprocess", "sft", "dpo", "select-checkpoint", "export", "eval", "view",
             "diagnostics", "download-models", "card", "push", "env"]
    positions = [text.index(f"│ {name} ") for name in order]
    assert positions == sorted(positions)


def test_version_after_a_subcommand_as_readme_says(capsys):
    assert "`--version` (also typed after the subcommand)" in " ".join(README.split())
    result = run_cli(capsys, "generate", "--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"pbt {__version__}"


def test_report_to_is_where_readme_says(capsys):
    for path in (("generate",), ("filter",), ("preprocess",)):
        assert "--report-to" not in help_of(capsys, *path), path
    for path in (("sft",), ("dpo",), ("eval", "flipflop"), ("eval", "ays"), ("eval", "team"), ("eval", "farm")):
        assert "--report-to" in help_of(capsys, *path), path
    text = " ".join(README.split())
    assert "`--report-to none|wandb|tensorboard|trackio` on every stage" not in text
    assert "`generate`, `filter` and `preprocess` have no tracker" in text


def test_dynamic_int8_help_agrees_with_the_readme(capsys):
    line = " ".join(help_of(capsys, "eval", "ays").split())
    assert "the fast path" not in line and "changes a small model's answers" in line
    assert "not recommended for small models" in line
    assert "*not* recommended for small models" in " ".join(README.split())
