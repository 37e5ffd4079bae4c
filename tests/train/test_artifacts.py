"""Artifacts that travel (README "Formats and other tools"): adapters that load with plain PEFT, model
cards, `pbt card`, and `pbt push` tested at the boundary of huggingface_hub (nothing leaves the machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from pbt_cli.models.spec import ModelSpec
from pbt_cli.train.output import adapter_base_name


def test_a_trained_adapter_loads_with_plain_peft_in_a_process_without_pbt(dpo_run, tiny_model_dir):
    out, code, err = dpo_run
    assert code == 0, err
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())  # a local base: its absolute path
    script = f"""
import sys
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer
model = AutoPeftModelForCausalLM.from_pretrained({str(out)!r})
tokenizer = AutoTokenizer.from_pretrained({str(out)!r})
ids = tokenizer.apply_chat_template([{{"role": "user", "content": "Paris?"}}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)
model.generate(**ids, max_new_tokens=2)
assert "pbt_cli" not in sys.modules
print("loaded", type(model).__name__)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded PeftModelForCausalLM" in done.stdout


def test_the_adapter_names_a_base_other_tools_can_find(tmp_path, caplog):
    assert adapter_base_name(ModelSpec.parse("llama-3.1-8b-instruct")) == ("meta-llama/Llama-3.1-8B-Instruct", None)
    assert adapter_base_name(ModelSpec.parse("smollm2-135m")) == ("HuggingFaceTB/SmolLM2-135M-Instruct", None)
    assert adapter_base_name(ModelSpec.parse("org/model@v2")) == ("org/model", "v2")
    assert adapter_base_name(ModelSpec.parse("llama-3.1-8b-instruct"), "me/my-base") == ("me/my-base", None)
    local = tmp_path / "base"
    local.mkdir()
    with caplog.at_level("WARNING", logger="pbt"):
        assert adapter_base_name(ModelSpec.parse(str(local))) == (str(local.resolve()), None)
    assert "--base-model-name" in caplog.text  # the warning says how to name the base


def test_adapter_folders_carry_a_model_card(sft_run, dpo_run):
    from huggingface_hub import ModelCard

    for (out, code, err), stage in ((sft_run, "sft"), (dpo_run, "dpo")):
        assert code == 0, err
        card = ModelCard.load(out / "README.md")
        assert card.data.library_name == "peft"
        assert {"pbt", stage, "lora"} <= set(card.data.tags)
        assert card.data.base_model is None  # a local base folder is no Hub id
        assert "AutoPeftModelForCausalLM.from_pretrained" in card.text and "## Training" in card.text
        manifest = json.loads((out / "manifest.json").read_text())
        assert "README.md" in manifest["outputs"]


def test_a_hub_base_and_its_licence_go_into_the_metadata():
    from pbt_cli.cards import model_card_text

    manifest = {"stage": "dpo", "base_model": "meta-llama/Llama-3.1-8B-Instruct", "global_step": 10,
                "settings": {"lora": {"r": 16}, "data": "/nowhere"}, "config": {"out": "models/pbt"}}
    results = [{"eval": "ays", "metric": "accuracy_after", "value": 0.71, "ci_low": 0.68, "ci_high": 0.74, "n": 1000,
                "extractor": "mistralai/Mistral-7B-Instruct-v0.2",
                "dataset": {"name": "TriviaQA", "type": "mandarjoshi/trivia_qa", "split": "validation", "size": 1000,
                            "sample": False}}]
    text = model_card_text(manifest, results, "me/pbt-llama")
    assert "base_model: meta-llama/Llama-3.1-8B-Instruct" in text and "license: llama3.1" in text
    assert "model-index:" in text and "value: 0.71" in text  # the Hub's metadata for results
    assert '"me/pbt-llama"' in text and "| ays | accuracy_after | 0.710 | [0.680, 0.740] | 1000 | TriviaQA" in text


def test_pbt_card_adds_the_evaluations_of_the_model(capsys, tmp_path, dpo_run, tiny_model_dir):
    from huggingface_hub import ModelCard

    out, _, _ = dpo_run
    results = tmp_path / "results"
    evaluated = run_cli(capsys, "eval", "ays", "--model", out, "--limit", "2", "--max-new-tokens", "4",
                        "--out", results)
    assert evaluated.exit_code == 0, evaluated.stderr
    before = (out / "README.md").read_text()
    try:
        done = run_cli(capsys, "card", out, "--results", results)
        assert done.exit_code == 0, done.stderr
        card = ModelCard.load(out / "README.md")
        assert "## Evaluation results" in card.text and "accuracy_before" in card.text
        # embedded:validation is a sample shipped with pbt: shown in the table, never published as a score
        assert "embedded:validation [sample]" in card.text and not card.data.eval_results
    finally:
        (out / "README.md").write_text(before)  # the session's run is shared with other tests
        (out / ".pbt-card.json").unlink(missing_ok=True)  # as if `pbt card` had never run


# --- pbt push, at the boundary of huggingface_hub --------------------------------------------------------------


class FakeHub:
    """Stands in for huggingface_hub.HfApi's network calls and records them."""

    def __init__(self, monkeypatch):
        import huggingface_hub

        self.calls: list[tuple[str, dict]] = []
        hub = self

        class Api:
            def __init__(self, token=None, **kwargs):
                hub.calls.append(("HfApi", {"token": token}))

            def create_repo(self, repo_id, **kwargs):
                hub.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

            def create_branch(self, repo_id, **kwargs):
                hub.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

            def upload_folder(self, **kwargs):
                hub.calls.append(("upload_folder", kwargs))
                return type("Commit", (), {"commit_url": f"https://hub.test/{kwargs['repo_id']}/commit/1"})()

        monkeypatch.setattr(huggingface_hub, "HfApi", Api)

    def named(self, name: str) -> list[dict]:
        return [kwargs for call, kwargs in self.calls if call == name]


def test_push_dry_run_lists_what_would_go_and_writes_nothing(capsys, dpo_run):
    out, _, _ = dpo_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = run_cli(capsys, "push", out, "me/pbt-tiny", "--dry-run")
    assert result.exit_code == 0, result.stderr
    files = result.stdout.split()
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "manifest.json"} <= set(files)
    assert not any(name.startswith(("checkpoints/", ".pbt-")) for name in files)  # bulk and bookkeeping stay home
    assert "model repository me/pbt-tiny" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_push_creates_the_repository_and_uploads_with_the_card(capsys, monkeypatch, dpo_run):
    out, _, _ = dpo_run
    fake = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = (out / "README.md").read_text()
    try:
        result = run_cli(capsys, "push", out, "me/pbt-tiny", "--private", "--revision", "v1",
                         "--commit-message", "first")
        assert result.exit_code == 0, result.stderr
        assert fake.named("HfApi") == [{"token": "hf_test_token"}]
        assert fake.named("create_repo") == [{"repo_id": "me/pbt-tiny", "repo_type": "model", "private": True,
                                              "exist_ok": True}]
        assert fake.named("create_branch") == [{"repo_id": "me/pbt-tiny", "branch": "v1", "repo_type": "model",
                                                "exist_ok": True}]
        [upload] = fake.named("upload_folder")
        # a copy of the folder with local paths made portable (pbt_cli/hub.py: portable_copy), removed afterwards
        assert Path(upload["folder_path"]).parent == out and Path(upload["folder_path"]).name.startswith(".pbt-push")
        assert upload["revision"] == "v1" and upload["commit_message"] == "first"
        assert "checkpoints/**" in upload["ignore_patterns"] and ".pbt-*" in upload["ignore_patterns"]
        assert '"me/pbt-tiny"' in (out / "README.md").read_text()  # the card names the repository it went to
        assert "https://hub.test/me/pbt-tiny/commit/1" in result.stderr
    finally:
        (out / "README.md").write_text(before)
        (out / ".pbt-card.json").unlink(missing_ok=True)


@pytest.mark.parametrize(("case", "message"), [
    ("offline", "offline mode is on"),
    ("no-token", "no Hugging Face token"),
    ("bad-repo", "OWNER/NAME"),
    ("unfinished", "not finished"),
])
def test_push_refusals_are_one_line(capsys, monkeypatch, tmp_path, dpo_run, case, message):
    out, _, _ = dpo_run
    FakeHub(monkeypatch)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved token either
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    target, repo = out, "me/pbt-tiny"
    if case == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elif case == "bad-repo":
        repo = "no owner here"
    elif case == "unfinished":
        target = tmp_path / "run"
        target.mkdir()
        (target / "manifest.json").write_text(json.dumps({"stage": "dpo", "status": "interrupted"}))
    result = run_cli(capsys, "push", target, repo)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_push_of_a_dataset_folder_goes_to_a_dataset_repository(capsys, monkeypatch, dpo_data):
    fake = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    card = (Path(dpo_data) / "README.md").read_text()
    result = run_cli(capsys, "push", dpo_data, "me/pbt-data")
    assert result.exit_code == 0, result.stderr
    assert fake.named("create_repo")[0]["repo_type"] == "dataset"
    assert (Path(dpo_data) / "README.md").read_text() == card  # preprocess's own card, written again the same


def test_the_manifest_and_card_say_how_the_base_weights_were_obtained(sft_run):
    out, code, err = sft_run
    assert code == 0, err
    weights = json.loads((out / "manifest.json").read_text())["base_weights"]
    assert weights["source"] == "local folder" and weights["loaded_as"] == "none"
    assert "base weights | a local folder" in (out / "README.md").read_text()


def test_checkpoint_cards_are_pbts_not_the_empty_ones_trl_writes(dpo_run):
    out, code, err = dpo_run
    assert code == 0, err
    cards = [out / "checkpoints" / "README.md", *sorted((out / "checkpoints").glob("checkpoint-*/README.md"))]
    assert len(cards) >= 2
    for card in cards:
        text = card.read_text()
        assert "[None]" not in text and "pbt dpo" in text
    assert "flipflop accuracy" in cards[0].read_text() and "| yes |" in cards[0].read_text()
