import json

import pytest
from helpers import run_cli

from pbt_cli import __version__
from pbt_cli.cli import app, command_path, hoist_global_flags


def _commands(typer_app, prefix=()):
    """Every command path of the Typer app, groups included."""
    import typer.main

    root = typer.main.get_command(typer_app)
    paths = []

    def walk(command, path):
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(root, tuple(prefix))
    return paths


def test_every_command_has_help(capsys):
    paths = _commands(app)
    assert ("generate",) in paths and ("env",) in paths
    for path in paths:
        result = run_cli(capsys, *path, "--help")
        assert result.exit_code == 0, (path, result.stderr)
        assert "Usage" in result.stdout


def test_version(capsys):
    result = run_cli(capsys, "--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"pbt {__version__}"


def test_global_flags_after_the_subcommand_are_hoisted():
    assert hoist_global_flags(["generate", "--model-a", "x", "-v", "--offline"]) == [
        "-v", "--offline", "generate", "--model-a", "x"]
    assert hoist_global_flags(["generate", "--", "-v"]) == ["generate", "--", "-v"]
    assert command_path(["-v", "eval", "ays", "--model", "x"]) == ["eval", "ays"]
    assert command_path(["generate", "--model-a", "x"]) == ["generate"]


def test_env_prints_what_a_bug_report_needs(capsys):
    result = run_cli(capsys, "env", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    for key in ("python", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes",
                "vllm_installed", "HF_HOME", "HF_HUB_OFFLINE", "bitsandbytes_4bit", "cuda"):
        assert key in info
    assert info["bitsandbytes_4bit"].startswith("works on")


def test_config_file_values_apply_and_flags_win(capsys, tmp_path):
    config = tmp_path / "generate.yaml"
    config.write_text("model-a: smollm2-135m\nmodel_b: smollm2-135m\nmax_turns: 6\nlimit: 7\nboth_first: false\n")
    result = run_cli(capsys, "generate", "--config", config, "--limit", "3", "--out", tmp_path / "o", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "max_turns: 6" in result.stdout  # from the file
    assert "limit: 3" in result.stdout  # the flag beats the file's 7
    assert "both_first: false" in result.stdout


def test_unknown_config_key_is_an_error_with_a_suggestion(capsys, tmp_path):
    config = tmp_path / "generate.yaml"
    config.write_text("model_a: smollm2-135m\nmodel_b: smollm2-135m\nmax_turn: 6\n")
    result = run_cli(capsys, "generate", "--config", config, "--dry-run")
    assert result.exit_code == 2
    assert "unknown option 'max_turn'" in result.stderr and 'did you mean "max_turns"' in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--model-a", "smollm2-135", "--model-b", "smollm2-135m"], "unknown model name"),
    (["--model-a", "smollm2-135m", "--model-b", "smollm2-135m", "--questions", "nope:train"], "unknown questions"),
    (["--model-a", "smollm2-135m", "--model-b", "smollm2-135m", "--shard-idx", "4", "--num-shards", "2"],
     "out of range"),
    (["--model-a", "smollm2-135m", "--model-b", "smollm2-135m", "--max-turns", "1"], "--max-turns"),
    (["--model-a", "smollm2-135m", "--model-b", "smollm2-135m", "--load-in-4bit", "--load-in-8bit"], "exclusive"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, args, message):
    result = run_cli(capsys, "generate", *args, "--dry-run")
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 3  # one message, soft-wrapped


def test_output_path_that_is_a_file_is_refused(capsys, tmp_path):
    out = tmp_path / "file.txt"
    out.write_text("x")
    result = run_cli(capsys, "generate", "--model-a", "smollm2-135m", "--model-b", "smollm2-135m",
                     "--questions", "embedded:validation", "--limit", "1", "--out", out)
    assert result.exit_code == 2 and "is a file" in result.stderr
