"""`transformers serve` as a test fixture: started on 127.0.0.1 on a free port, stopped afterwards.

`transformers serve` is transformers' own OpenAI-compatible server (the `transformers[serving]` extra:
fastapi, uvicorn, openai); without the extra, a test that needs it is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVING_MODULES = ("fastapi", "uvicorn", "openai")
START_TIMEOUT_S = 120.0


@dataclass
class ServedModel:
    url: str  # http://127.0.0.1:PORT/v1
    model_id: str  # the folder, as transformers serve names a model it was started with
    log: Path

    @property
    def spec(self) -> str:
        return f"openai:{self.model_id}@{self.url}"


def missing_serving_modules() -> list[str]:
    return [name for name in SERVING_MODULES if importlib.util.find_spec(name) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(model_dir: Path, log: Path, *extra: str, threads: str = "1") -> Iterator[ServedModel]:
    """`transformers serve MODEL_DIR` on 127.0.0.1 (CPU unless `extra` says otherwise), up and answering."""
    from pbt_cli.models.backends.served import http_client_module

    httpx = http_client_module()  # httpx2 or httpx, whichever the environment has

    missing = missing_serving_modules()
    if missing:
        pytest.skip(f"transformers serve needs {', '.join(missing)}: pip install 'transformers[serving]' "
                    "(the dev extra has it)")
    port = free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir), "--host", "127.0.0.1",
               "--port", str(port), *(extra or ("--device", "cpu"))]
    # one torch thread: the tiny model gains nothing from two, and CI's two cores run pytest too
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": threads}
    # an existing, empty hub cache: before 5.2x, transformers serve answers GET /v1/models with a 500
    # when the cache folder is missing (it scans the cache for models to list)
    hub_cache = log.parent / "hub-cache"
    hub_cache.mkdir(exist_ok=True)
    env["HF_HUB_CACHE"] = str(hub_cache)
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not answer in {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield ServedModel(url=url, model_id=str(model_dir), log=log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
