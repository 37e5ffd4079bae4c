"""`vllm serve` as a real OpenAI-compatible server (vLLM's CPU build, `nox -s vllm`): the demo model and a
LoRA adapter trained by `pbt sft`, served by name (`--lora-modules`), through pbt's served-model backend
for generate and the evaluations; the server killed in the middle of a run and started again, with
nothing lost or duplicated. One server per module (a start takes 1.5-3 minutes on 2 cores), marked
`vllm` and `slow`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import vllm_kit
from helpers import run_cli
from serve_process import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

START_TIMEOUT_S = 900.0
SHORT = ["--max-new-tokens", "24", "--extraction-max-new-tokens", "8"]


class VLLMServer:
    """`vllm serve` (as `python -m vllm.entrypoints.openai.api_server`: the CPU wheel's `vllm` command
    looks for a distribution named vllm) on 127.0.0.1, which a test can stop and start again."""

    def __init__(self, folder: Path, adapter: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        self.command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
                        "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(self.port),
                        "--dtype", "bfloat16", "--max-model-len", "1024", "--tokenizer-mode", "hf",
                        "--generation-config", "vllm", "--enable-lora", "--max-lora-rank", "16",
                        "--lora-modules", f"trained={adapter}",
                        # the CPU build dies on a seeded request whose prompt is split (README, vLLM on CPU)
                        "--no-enable-chunked-prefill"]
        self.process: subprocess.Popen | None = None
        self.start_seconds: list[float] = []

    def spec(self, name: str = "smollm2") -> str:
        return f"openai:{name}@{self.url}"

    def start(self) -> None:
        from pbt_cli.models.backends.served import http_client_module

        httpx = http_client_module()
        started = time.monotonic()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
        with open(self.log, "a") as handle:
            # a session of its own: the engine core is a child process, stopped with the server
            self.process = subprocess.Popen(self.command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"vllm serve exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/models", timeout=2, trust_env=False).status_code == 200:
                    break
            if time.monotonic() - started > START_TIMEOUT_S:
                self.stop()
                pytest.fail(f"vllm serve did not answer in {START_TIMEOUT_S:.0f} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(1)
        self.start_seconds.append(time.monotonic() - started)

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        # kill: -9 to the server and its engine core at once, as when a node goes down
        os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # what is left of the group (the engine core)
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PBT_HOME", str(vllm_kit.demo_home(tmp_path_factory)))
        folder = vllm_kit.require_demo_model()
        adapter = vllm_kit.trained_adapter(tmp_path_factory)
        dpo_data = vllm_kit.dpo_data(tmp_path_factory)
        served = VLLMServer(folder, adapter, tmp_path_factory.mktemp("vllm-serve") / "serve.log")
        served.adapter, served.dpo_data = adapter, dpo_data  # type: ignore[attr-defined]
        served.start()
        try:
            yield served
        finally:
            served.stop()
            print(f"\nvllm serve start: {', '.join(f'{s:.0f} s' for s in served.start_seconds)}")


def samples(root: Path) -> list[dict]:
    return [json.loads(line) for line in next(root.rglob("samples.jsonl")).read_text().splitlines()]


def test_the_models_endpoint_lists_the_base_and_the_lora_module(server):
    from pbt_cli.models.backends.served import http_client_module

    listed = http_client_module().get(f"{server.url}/models", timeout=10, trust_env=False).json()
    assert {m["id"] for m in listed["data"]} == {"smollm2", "trained"}


def test_generate_through_vllm_serve(capsys, tmp_path, server):
    result = run_cli(capsys, "generate", "--model-a", server.spec(), "--model-b", server.spec(), "--questions",
                     "embedded:train-easy", "--limit", "2", "--max-turns", "2", "--max-new-tokens", "24",
                     "--min-new-tokens", "4", "--extraction-max-new-tokens", "8", "--out", tmp_path / "trees")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "trees" / "trees.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(len(r["turns"]) > 3 for r in records)
    assert records[0]["models"]["A"]["backend"] == "openai"
    # vLLM continues the extractor's "Final answer:" prefix and honours seeds: no warning about either
    assert "does not continue" not in result.stderr and "ignores per-request seeds" not in result.stderr


def test_greedy_first_answers_agree_with_the_transformers_backend_in_bfloat16(capsys, tmp_path, server):
    ays = ["eval", "ays", "--questions", "embedded:validation-easy", "--limit", "8", *SHORT]
    served = run_cli(capsys, *ays, "--model", server.spec(), "--out", tmp_path / "served")
    assert served.exit_code == 0, served.stderr
    local = run_cli(capsys, *ays, "--model", "smollm2-135m", "--dtype", "bfloat16", "--backend", "transformers",
                    "--out", tmp_path / "transformers")
    assert local.exit_code == 0, local.stderr
    served_answers = [s["first_answer"] for s in samples(tmp_path / "served")]
    local_answers = [s["first_answer"] for s in samples(tmp_path / "transformers")]
    agree = sum(a == b for a, b in zip(served_answers, local_answers, strict=True))
    print(f"\ngreedy first answers, vllm serve (CPU build) vs transformers, bfloat16: {agree} of "
          f"{len(local_answers)} agree")
    # bfloat16 with different kernels and batch shapes: a near-tie may flip a token; most answers agree
    assert agree >= len(local_answers) // 2, list(zip(served_answers, local_answers, strict=True))


def test_evaluations_through_vllm_serve_with_the_lora_module_by_name(capsys, tmp_path, server):
    for name in ("smollm2", "trained"):
        model, out = server.spec(name), tmp_path / name
        commands = [
            ["eval", "ays", "--model", model, "--questions", "embedded:validation-easy", "--limit", "4", *SHORT],
            ["eval", "flipflop", "--model", model, "--data", server.dpo_data, "--split", "test",
             "--extractor-model", server.spec(), *SHORT],
            ["eval", "farm", "--model", model, "--farm", "embedded:farm-sample", "--limit", "2",
             "--reply-max-new-tokens", "24"],
            ["eval", "team", "--model-x", model, "--model-y", server.spec(), "--questions",
             "embedded:validation-easy", "--limit", "2", "--extractor-model", server.spec(), *SHORT],
        ]
        for command in commands:
            result = run_cli(capsys, *command, "--out", out)
            assert result.exit_code == 0, f"{command[:2]}: {result.stderr}"
    base, trained = samples(tmp_path / "smollm2" / "ays"), samples(tmp_path / "trained" / "ays")
    assert [s["replies"] for s in base] != [s["replies"] for s in trained]  # the LoRA module answered


def run_in_thread(*args: object) -> tuple[threading.Thread, dict]:
    from pbt_cli.cli import main

    outcome: dict = {}

    def target() -> None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main([str(a) for a in args])
                outcome["code"] = 0
            except SystemExit as stop:
                outcome["code"] = stop.code if isinstance(stop.code, int) else 1
        outcome["stderr"] = err.getvalue()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def test_the_server_killed_mid_run_and_restarted_loses_and_duplicates_nothing(tmp_path, server):
    out = tmp_path / "trees"
    trees = ["generate", "--model-a", server.spec(), "--model-b", server.spec(), "--questions",
             "embedded:train-easy", "--limit", "4", "--max-turns", "2", "--max-new-tokens", "24",
             "--min-new-tokens", "4", "--extraction-max-new-tokens", "8", "--trees-per-batch", "1",
             "--max-retries", "1", "--out", out]
    thread, outcome = run_in_thread(*trees)
    path = out / "trees.jsonl"
    deadline = time.monotonic() + 600
    while thread.is_alive() and not (path.is_file() and path.read_text().count("\n") >= 1):
        assert time.monotonic() < deadline, "no tree was written in 10 minutes"
        time.sleep(0.2)
    server.stop(kill=True)  # kill -9 in the middle of the run
    thread.join(300)
    assert not thread.is_alive()
    kept = path.read_text()
    if outcome["code"] == 0:
        pytest.skip("the run finished before the server was killed")
    assert outcome["code"] != 0
    assert "Traceback" not in outcome["stderr"], outcome["stderr"]  # pbt stops with a message, not a crash
    server.start()
    thread, outcome = run_in_thread(*trees)
    thread.join(600)
    assert outcome["code"] == 0, outcome["stderr"]
    text = path.read_text()
    assert text.startswith(kept)  # the trees written before the kill are untouched
    ids = [json.loads(line)["tree_id"] for line in text.splitlines()]
    assert len(ids) == 4 == len(set(ids))  # nothing lost, nothing twice
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["trees"] == 4
