"""A small OpenAI-compatible chat server on 127.0.0.1 that misbehaves on request.

It answers `GET /v1/models` and `POST /v1/chat/completions` (HTTP/1.1, keep-alive) on an asyncio
loop in a thread of its own, so fault tests can run pbt's CLI in the test's process against it, and
`benchmarks/served_client.py` can measure pbt's client against a server that answers at once (run it
as a separate process there: `python tests/served/stub_server.py --port 0`).

Faults are given per chat request, in order (`faults=[...]`), then `default` for every request after:

    ok                  a normal answer
    429 / 429:SECONDS   too many requests, without / with a Retry-After header
    500                 a server error
    slow:SECONDS        wait, then answer (beyond the client's time-out: a time-out)
    malformed           200 with a body that is not JSON
    reset               close the connection without an answer

`api_key` makes every request need `Authorization: Bearer <api_key>` (401 otherwise);
`reject_fields` answers 422 to a request that has any of those fields, naming them, as
`transformers serve` does; `seeds="ignore"` makes sampled replies differ even for one seed, and
`seeds="greedy"` makes them the same whatever the seed (as if every request were greedy).
Replies come from `reply(body)`; the default echoes the last user message's first words and the
seed, so the same request always gives the same text.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

Reply = Callable[[dict[str, Any]], str]


def default_reply(body: dict[str, Any]) -> str:
    last = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
    words = " ".join(str(last).split()[:4])
    return f"The answer is Paris ({words}; seed {body.get('seed')})."


class StubServer:
    def __init__(self, *, models: tuple[str, ...] = ("stub",), reply: Reply = default_reply,
                 faults: list[str] | tuple[str, ...] = (), default: str = "ok", api_key: str | None = None,
                 reject_fields: tuple[str, ...] = (), seeds: str = "honour", port: int = 0) -> None:
        self.models = list(models)
        self.reply = reply
        self.faults = list(faults)
        self.default = default
        self.api_key = api_key
        self.reject_fields = set(reject_fields)
        self.seeds = seeds
        self.port = port
        self.chat_requests = 0  # every POST to /chat/completions, refused ones included
        self.model_requests = 0
        self.bodies: list[dict[str, Any]] = []  # the chat requests answered normally
        self.authorization: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0  # connections the client closed while waiting for an answer
        self._counter = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- life -------------------------------------------------------------------------------------

    def start(self) -> StubServer:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1",
                                                                              self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="stub-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP -------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                if not await self._answer(method, path, headers, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # stop(): end quietly (asyncio logs a handler task that ends cancelled)
            pass
        finally:
            writer.close()

    @staticmethod
    def _send(writer: asyncio.StreamWriter, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 422: "Unprocessable Entity",
                  429: "Too Many Requests", 500: "Internal Server Error"}.get(status, "Status")
        lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(payload)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

    async def _answer(self, method: str, path: str, headers: dict[str, str], raw: bytes,
                      writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False closes the connection."""
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            self._send(writer, 401, json.dumps({"error": {"message": "Incorrect API key provided"}}).encode())
            return True
        if method == "GET" and path.rstrip("/").endswith("/models"):
            self.model_requests += 1
            data = [{"id": m, "object": "model", "owned_by": "stub"} for m in self.models]
            self._send(writer, 200, json.dumps({"object": "list", "data": data}).encode())
            return True
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            self._send(writer, 404, b'{"error": "not found"}')
            return True
        self.chat_requests += 1
        self.authorization.append(headers.get("authorization"))
        fault = self.faults.pop(0) if self.faults else self.default
        kind, _, argument = fault.partition(":")
        if kind == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: the close sends a reset, not a clean end of stream
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if kind == "429":
            self._send(writer, 429, b'{"error": {"message": "rate limited"}}',
                       {"retry-after": argument} if argument else None)
            return True
        if kind == "500":
            self._send(writer, 500, b'{"error": {"message": "engine crashed"}}')
            return True
        if kind == "malformed":
            self._send(writer, 200, b'{"choices": [{"message": ')
            return True
        body = json.loads(raw)
        refused = sorted(self.reject_fields & set(body))
        if refused:
            self._send(writer, 422, json.dumps({"detail": f"Unexpected fields in the request: {refused}"}).encode())
            return True
        if body.get("model") not in self.models:
            message = f"The model `{body.get('model')}` does not exist."
            self._send(writer, 404, json.dumps({"error": {"message": message}}).encode())
            return True
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if kind == "slow":
                await asyncio.sleep(float(argument or 1))
            if writer.is_closing():
                self.cancelled += 1
                return False
            text = self.reply(body)
            if self.seeds == "ignore" and body.get("temperature"):
                text = f"{text} ({next(self._counter)})"
            elif self.seeds == "greedy":  # every request decodes greedily: the seed changes nothing
                text = self.reply({**body, "seed": None})
            self.bodies.append(body)
            answer = {"id": f"stub-{len(self.bodies)}", "object": "chat.completion", "model": body["model"],
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": sum(len(str(m["content"]).split()) for m in body["messages"]),
                                "completion_tokens": len((text or "").split()), "total_tokens": 0}}
            self._send(writer, 200, json.dumps(answer).encode())
            return True
        finally:
            self.in_flight -= 1


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the stub on 127.0.0.1 until killed; prints its URL.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="stub")
    args = parser.parse_args()
    server = StubServer(models=(args.model,), port=args.port).start()
    print(server.url, flush=True)
    assert server._thread is not None
    server._thread.join()


if __name__ == "__main__":
    main()
