"""Results travel: `pbt card` and `pbt push` take a results root (plots included), and nothing uploaded
carries an absolute local path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_report as report_case
from helpers import run_cli


class RecordingHub:
    """huggingface_hub.HfApi at its network boundary: keeps a copy of every file upload_folder was given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import huggingface_hub

        self.uploaded: dict[str, bytes] = {}
        self.repo_types: list[str] = []
        hub = self

        class Api:
            def __init__(self, token=None, **kwargs):
                pass

            def create_repo(self, repo_id, **kwargs):
                hub.repo_types.append(kwargs.get("repo_type"))

            def upload_folder(self, folder_path, **kwargs):
                root = Path(folder_path)
                hub.uploaded = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
                return type("Commit", (), {"commit_url": "https://hub.test/commit/1"})()

        monkeypatch.setattr(huggingface_hub, "HfApi", Api)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture
def results_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs" / "demo" / "results"
    questions = [f"q{i}" for i in range(10)]
    report_case.ays_results(root, "smollm2-135m", {q: (i < 4, i < 2) for i, q in enumerate(questions)})
    adapter = report_case.trained_adapter(tmp_path / "runs" / "demo", "dpo", 42)
    folder = report_case.ays_results(root, "dpo", {q: (i < 4, i < 5) for i, q in enumerate(questions)},
                                     adapter=adapter)
    data = json.loads((folder / "results.json").read_text())
    data["config"] = {"model": {"name": str(adapter)}, "questions": "embedded:validation-easy",
                      "out": str(root)}
    data["command"] = f"pbt eval ays --model {adapter} --out {root}"
    (folder / "results.json").write_text(json.dumps(data))
    return root


def test_a_results_root_gets_a_card_with_its_tables_and_plots(capsys, results_root):
    assert run_cli(capsys, "eval", "report", results_root).exit_code == 0
    done = run_cli(capsys, "card", results_root)
    assert done.exit_code == 0, done.stderr
    card = (results_root / "README.md").read_text()
    assert "# PBT evaluation results" in card and "accuracy_after" in card
    assert "## Trained vs base" in card and "dpo" in card
    assert "![report_flipflop]" not in card  # no flipflop results, no such plot
    assert "embedded:validation-easy [sample]" in card


def test_push_takes_a_results_root_with_its_plots_and_no_local_paths(capsys, monkeypatch, results_root):
    assert run_cli(capsys, "eval", "report", results_root).exit_code == 0
    (results_root / "report" / "report_team.png").write_bytes(b"\x89PNG plot")  # as the report's plots are
    hub = RecordingHub(monkeypatch)
    result = run_cli(capsys, "push", results_root, "me/pbt-results")
    assert result.exit_code == 0, result.stderr
    assert hub.repo_types == ["dataset"]
    names = set(hub.uploaded)
    assert {"README.md", "ays/dpo/results.json", "ays/dpo/samples.jsonl", "report/report.csv",
            "report/report_team.png", "report/manifest.json"} <= names
    assert not any(name.startswith(".pbt-") or "/.pbt-" in name for name in names)
    local = str(results_root.parent.parent.parent)  # the test's own folder: part of every local path here
    for name, content in hub.uploaded.items():
        assert local.encode() not in content, f"{name} carries a local path"
    uploaded = json.loads(hub.uploaded["ays/dpo/results.json"])
    assert uploaded["config"]["model"]["name"] == "../runs/dpo"  # a sibling run, named relative to the results
    assert uploaded["config"]["out"] == "."
    assert not any(p.name.startswith(".pbt-push") for p in results_root.iterdir())  # the staging copy is gone
    assert str(results_root) in (results_root / "ays" / "dpo" / "results.json").read_text()  # local files as they were


def test_a_report_folder_is_pushed_with_its_plots(capsys, monkeypatch, results_root):
    assert run_cli(capsys, "eval", "report", results_root).exit_code == 0
    (results_root / "report" / "report_team.png").write_bytes(b"\x89PNG plot")
    hub = RecordingHub(monkeypatch)
    result = run_cli(capsys, "push", results_root / "report", "me/pbt-report")
    assert result.exit_code == 0, result.stderr
    assert {"README.md", "report.csv", "report_vs_base.csv", "report_team.png"} <= set(hub.uploaded)
    assert b"![report_team](report_team.png)" in hub.uploaded["README.md"]


def test_a_path_is_not_replaced_inside_a_longer_one(tmp_path):
    from pbt_cli.hub import Artifact, portable_copy

    root = tmp_path / "runs" / "dpo"
    root.mkdir(parents=True)
    (tmp_path / "runs" / "dpo_data").mkdir()  # named only inside free text: found there, as it exists here
    (root / "manifest.json").write_text(json.dumps({"out": str(root), "note": f"{root}_data {root}/sub {root}",
                                                    "url": "https://arxiv.org/abs/2410.14596"}))
    artifact = Artifact(path=root, stage="dpo", manifest_name="manifest.json", manifest={})
    with portable_copy(artifact, ["manifest.json"]) as folder:
        copied = json.loads((folder / "manifest.json").read_text())
    assert copied["out"] == "."
    assert copied["note"] == "../dpo_data ./sub ."
    assert copied["url"] == "https://arxiv.org/abs/2410.14596"  # not a local path
