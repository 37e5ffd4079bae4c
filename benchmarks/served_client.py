"""Benchmark: how many chat requests per second pbt's served-model client sustains, against a local stub
server that answers at once (so the figure is the client's own cost, not a model's).

    python benchmarks/served_client.py --requests 5000            # pbt, httpx alone, openai's client

The stub server (tests/served/stub_server.py) runs as a separate process pinned to the last CPU; this
process is pinned to CPU 0 (`--no-pin` to leave both free), so "per second on one core" is what it
says. Each request is the answer extractor's conversation (instructions, eight worked examples, the
turn to read: the largest request pbt sends often), `--concurrency` in flight. Rows: pbt's
ServedGenerator (request bodies, retries machinery, progress reporting, the background loop, its
requests spread over pools of 8 connections), a bare AsyncClient loop of httpx2 and of httpx with the
same bodies and one pool of `--concurrency` connections, and openai's AsyncOpenAI (which runs on
httpx2) when it is installed.
CPU time per request is this process's CPU time (all threads) over the requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "tests" / "served" / "stub_server.py"


def start_stub(pin: int | None) -> tuple[subprocess.Popen, str]:
    def set_cpu() -> None:
        if pin is not None:
            os.sched_setaffinity(0, {pin})

    process = subprocess.Popen([sys.executable, str(STUB), "--port", "0", "--model", "stub"], stdout=subprocess.PIPE,
                               text=True, preexec_fn=set_cpu)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        process.kill()
        raise SystemExit(f"the stub server did not start (printed {url!r})")
    return process, url


def measure(run: Any, requests: int) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    seconds = time.perf_counter() - wall
    cpu_seconds = time.process_time() - cpu
    return {"requests": requests, "seconds": seconds, "requests_per_s": requests / seconds,
            "cpu_ms_per_request": 1000 * cpu_seconds / requests}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the client and the server to CPUs")
    parser.add_argument("--clients", default="pbt,httpx2,httpx,openai", help="comma-separated rows to measure")
    args = parser.parse_args(argv)

    from pbt_cli.data.prompts import extraction_conversation
    from pbt_cli.models.backends import BackendOptions
    from pbt_cli.models.backends.base import Sampling
    from pbt_cli.models.backends.served import ServedGenerator
    from pbt_cli.models.spec import ModelSpec

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    stub, url = start_stub(cpus[-1] if pin else None)
    if pin:
        os.sched_setaffinity(0, {cpus[0]})
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    conversations = [extraction_conversation(f"Question number {i}?", f"I think the answer is Paris, number {i}.")
                     for i in range(args.requests)]
    sampling = Sampling(temperature=0.0, max_new_tokens=16)
    rows: dict[str, dict[str, float]] = {}
    try:
        generator = ServedGenerator(ModelSpec.parse(f"openai:stub@{url}"),
                                    BackendOptions(max_concurrency=args.concurrency))
        bodies = [generator.request_body(c, sampling) for c in conversations]
        if "pbt" in clients:
            generator.chat(conversations[:8], sampling)  # start-up checks and connections, outside the timing
            rows["pbt ServedGenerator"] = measure(lambda: generator.chat(conversations, sampling), args.requests)
        for module in ("httpx2", "httpx"):
            if module in clients and installed(module):
                rows[f"{module} alone, one pool"] = measure(
                    lambda m=module: asyncio.run(bare_httpx(m, url, bodies, args.concurrency)), args.requests)
        if "openai" in clients and installed("openai"):
            rows["openai AsyncOpenAI"] = measure(lambda: asyncio.run(openai_client(url, bodies, args.concurrency)),
                                                 args.requests)
    finally:
        stub.kill()
        stub.wait()

    summary = {"benchmark": "served-client", "requests": args.requests, "concurrency": args.concurrency,
               "pinned": pin, "request_bytes": len(json.dumps(bodies[0])), "rows": rows,
               "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    table = Table(title=f"chat requests against an instant stub server, {args.concurrency} in flight"
                        f"{', client on one core' if pin else ''}")
    for column in ("client", "requests", "seconds", "requests/s", "CPU ms / request"):
        table.add_column(column, justify="right")
    for name, row in rows.items():
        table.add_row(name, str(row["requests"]), f"{row['seconds']:.2f}", f"{row['requests_per_s']:.0f}",
                      f"{row['cpu_ms_per_request']:.2f}")
    Console(stderr=True).print(table)
    print(json.dumps(summary))
    return summary


def installed(module: str) -> bool:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        print(f"{module} is not installed: its row is skipped", file=sys.stderr)
        return False
    return True


async def bare_httpx(module: str, url: str, bodies: list[dict[str, Any]], concurrency: int) -> None:
    """The same requests through one AsyncClient of `concurrency` connections, nothing else."""
    import importlib

    httpx = importlib.import_module(module)
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url + "/", limits=limits) as client:
        async def one(body: dict[str, Any]) -> str:
            async with gate:
                response = await client.post("chat/completions", json=body)
                return response.json()["choices"][0]["message"]["content"]

        await asyncio.gather(*(one(b) for b in bodies))


async def openai_client(url: str, bodies: list[dict[str, Any]], concurrency: int) -> None:
    from openai import AsyncOpenAI

    gate = asyncio.Semaphore(concurrency)
    client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
    async with client:
        async def one(body: dict[str, Any]) -> str:
            async with gate:
                answer = await client.chat.completions.create(model=body["model"], messages=body["messages"],
                                                              max_tokens=body["max_tokens"],
                                                              temperature=body["temperature"], n=1)
                return answer.choices[0].message.content or ""

        await asyncio.gather(*(one(b) for b in bodies))


if __name__ == "__main__":
    main()
