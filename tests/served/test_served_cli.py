"""Served models through the real CLI, against the stub server: faults give retries or one-line errors
(exit 2, no traceback), the API key never reaches a file, and an interrupted `pbt generate` resumes."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli

KEY = "sk-test-0123456789abcdef"


def ays(capsys, server, out: Path, *extra: str, model: str = "stub"):
    return run_cli(capsys, "eval", "ays", "--model", f"openai:{model}@{server.url}", "--questions",
                   "embedded:validation", "--limit", "2", "--out", out, *extra)


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_eval_ays_through_a_served_model(capsys, stub, tmp_path):
    server = stub()
    result = ays(capsys, server, tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    stored = json.loads((tmp_path / "ays" / "stub" / "results.json").read_text())
    assert stored["n"] == 2
    assert stored["extractor"]["name"] == f"openai:stub@{server.url}"  # its own extractor
    # 3 start-up checks (and the models list, a GET), then 3 turns + 2 extractions per question
    assert server.model_requests == 1 and server.chat_requests == 3 + 10


def test_retried_faults_cost_only_their_requests(capsys, stub, tmp_path):
    clean = stub()
    assert ays(capsys, clean, tmp_path / "clean").exit_code == 0
    faulty = stub(faults=["ok"] * 5 + ["429", "500", "reset", "429:0"])
    result = ays(capsys, faulty, tmp_path / "faulty")
    assert result.exit_code == 0, result.stderr
    assert faulty.chat_requests == clean.chat_requests + 4
    same = [json.loads(line)["final_answer"] for line in (tmp_path / "clean/ays/stub/samples.jsonl").open()]
    assert same == [json.loads(line)["final_answer"] for line in (tmp_path / "faulty/ays/stub/samples.jsonl").open()]


def test_a_failing_server_is_one_line_after_the_retries(capsys, stub, tmp_path):
    server = stub(faults=["ok"] * 5, default="500")
    result = ays(capsys, server, tmp_path, "--max-retries", "2", "-q")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert f"the server at {server.url} gave no usable answer for stub in 3 attempt(s)" in line
    assert "HTTP 500: engine crashed" in line
    # the first turn's two requests fail together: three attempts each at most, then the rest is cancelled
    assert 5 + 3 <= server.chat_requests <= 5 + 6


def test_a_slow_server_times_out_in_one_line(capsys, stub, tmp_path):
    server = stub(faults=["ok"] * 5, default="slow:10")
    result = ays(capsys, server, tmp_path, "--request-timeout", "0.3", "--max-retries", "1", "-q")
    assert result.exit_code == 2
    assert "no answer within --request-timeout 0.3 s" in one_error_line(result)


def test_a_malformed_answer_is_one_line(capsys, stub, tmp_path):
    server = stub(faults=["ok"] * 5, default="malformed")
    result = ays(capsys, server, tmp_path, "--max-retries", "1", "-q")
    assert result.exit_code == 2
    assert "an answer that is not JSON" in one_error_line(result)


def test_an_unreachable_server_is_one_line(capsys, stub, tmp_path):
    server = stub()
    server.stop()  # the port is free again: nothing listens there
    result = ays(capsys, server, tmp_path, "--max-retries", "0")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert f"cannot reach the OpenAI-compatible server at {server.url}" in line and "vllm serve" in line


def test_an_unknown_model_id_lists_the_served_ones(capsys, stub, tmp_path):
    server = stub(models=("meta-llama/Llama-3.1-8B-Instruct", "pbt-lora"))
    result = ays(capsys, server, tmp_path, model="llama-3.1-8b")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "does not serve 'llama-3.1-8b'" in line
    assert "it serves: meta-llama/Llama-3.1-8B-Instruct, pbt-lora" in line


def test_a_refused_or_missing_key_is_one_line(capsys, stub, tmp_path, monkeypatch):
    server = stub(api_key=KEY)
    result = ays(capsys, server, tmp_path / "none", "--api-key-env", "PBT_TEST_KEY")
    assert result.exit_code == 2
    assert "wants an API key (HTTP 401) and $PBT_TEST_KEY is not set" in one_error_line(result)
    monkeypatch.setenv("PBT_TEST_KEY", "sk-wrong")
    result = ays(capsys, server, tmp_path / "wrong", "--api-key-env", "PBT_TEST_KEY")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "refused the key in $PBT_TEST_KEY (HTTP 401)" in line and "sk-wrong" not in line


def test_the_key_never_reaches_a_file_or_the_output(capsys, stub, tmp_path, monkeypatch):
    server = stub(api_key=KEY)
    monkeypatch.setenv("PBT_TEST_KEY", KEY)
    log_file = tmp_path / "run.log"
    served = f"openai:stub@{server.url}"
    result = run_cli(capsys, "-v", "--log-file", log_file, "generate", "--model-a", served, "--model-b", served,
                     "--questions", "embedded:train", "--limit", "2", "--max-turns", "2", "--api-key-env",
                     "PBT_TEST_KEY", "--out", tmp_path / "trees")
    assert result.exit_code == 0, result.stderr
    result_eval = ays(capsys, server, tmp_path / "results", "--api-key-env", "PBT_TEST_KEY")
    assert result_eval.exit_code == 0, result_eval.stderr
    assert all(header == f"Bearer {KEY}" for header in server.authorization)
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert log_file in written and len(written) > 4
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
    for text in (result.stdout, result.stderr, result_eval.stdout, result_eval.stderr):
        assert KEY not in text
    manifest = json.loads((tmp_path / "trees" / "manifest.json").read_text())
    assert manifest["config"]["backend"]["api_key_env"] == "PBT_TEST_KEY"


def test_an_interrupted_generate_resumes_from_its_last_tree_group(capsys, stub, tmp_path):
    def generate(server, out: Path, limit: int, *extra: str):
        served = f"openai:stub@{server.url}"
        return run_cli(capsys, *extra, "generate", "--model-a", served, "--model-b", served, "--questions",
                       "embedded:train", "--limit", limit, "--max-turns", "2", "--trees-per-batch", "1",
                       "--max-retries", "0", "--out", out)

    one_tree = stub()
    assert generate(one_tree, tmp_path / "one", 1).exit_code == 0
    # the server breaks right after the first tree (its start-up checks included)
    server = stub(faults=["ok"] * one_tree.chat_requests, default="500")
    result = generate(server, tmp_path / "trees", 4, "-q")
    assert result.exit_code == 2
    assert "HTTP 500" in one_error_line(result)
    trees = tmp_path / "trees" / "trees.jsonl"
    first = [json.loads(line) for line in trees.read_text().splitlines()]
    assert len(first) == 1

    server.default = "ok"
    before = server.chat_requests
    result = generate(server, tmp_path / "trees", 4)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in trees.read_text().splitlines()]
    assert records[0] == first[0] and len({r["tree_id"] for r in records}) == 4
    # three trees asked for, not four: the finished one was kept
    per_tree = one_tree.chat_requests - 3 - 3  # less the start-up checks and the seed check
    assert server.chat_requests - before == 3 + 3 + 3 * per_tree
