"""The served-model backend: every request goes to an OpenAI-compatible chat server.

A model named `openai:MODEL_ID` or `openai:MODEL_ID@http://HOST:PORT/v1` is not loaded by pbt: each
conversation becomes one POST to `<base URL>/chat/completions` on whatever serves it (vLLM, SGLang,
TGI, llama.cpp's server, Ollama, `transformers serve`, a hosted API). The server applies the model's
chat template and batches the requests with its own engine, so pbt only has to keep enough of them
in flight: `--max-concurrency` at once, each under `--request-timeout`, retried `--max-retries`
times on 429, 5xx, connection errors and time-outs, with exponential back-off and full jitter (or
the server's Retry-After).

What a request carries: `model`, `messages`, `max_tokens`, `temperature`, `top_p`, `n` 1, the
request's own `seed` when it is sampled (docs/method.md §2.10), and, where the server takes them,
`top_k` and `min_tokens` (vLLM's and SGLang's names) when they are set. A conversation that ends
with an assistant message (the extractor's "Final answer:", the judge's "Verdict:") is sent with
vLLM's `continue_final_message: true, add_generation_prompt: false`, so the model continues it as
it does in process.

Servers differ in what they accept, so making a generator asks its server (where another backend
would load weights; a few requests of one or two tokens): `GET /models` (is it there, is the key
good, does it serve this model id), then whether it takes `continue_final_message`, `min_tokens` and
`top_k`. What it refuses is left out of every later request, with one warning line when a request
first needs it. `transformers serve` refuses all three but reads a `generation_config` field (a JSON
string of GenerationConfig settings): pbt sends `do_sample`, `top_k` and `min_new_tokens` there
instead. Without continuation, the prefix message is left out, the budget grows by its length, and
the prefix is cut off the reply when the model writes it itself. The first call with sampled requests
also checks that the server honours seeds (the same seed twice must give the same text).

The HTTP client is `httpx2` (httpx's successor, which huggingface_hub 2 and openai 3 already
require), else `httpx` (what older huggingface_hub releases bring): this backend adds no dependency,
and either is a few times cheaper per request than openai's client (benchmarks/served_client.py).
The requests of one `chat` call run on an asyncio loop in a background thread, while the calling
thread waits, reports progress and stays the one place where a stop signal lands: a StopRequested
there cancels every request in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import json
import os
import queue
import random
import re
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pbt_cli.console import log
from pbt_cli.errors import PbtError
from pbt_cli.models.backends.base import NEUTRAL_SAMPLING, GenerationUsage, Sampling, per_conversation
from pbt_cli.models.chat import Conversation, ends_with_prefill
from pbt_cli.models.spec import ModelSpec
from pbt_cli.progress import report_activity

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
BASE_URL_VARIABLE = "OPENAI_BASE_URL"  # the variable the openai client and most tools read
# Back-off before retry n (0-based): a uniform draw in [0, min(cap, base * 2**n)] ("full jitter"), so
# many clients that failed together do not come back together. Tests shorten these.
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 300.0  # a Retry-After beyond this is a server misconfiguration, not a plan
RETRIED_STATUSES = frozenset({408, 409, 429})  # and every 5xx
REJECTED_STATUSES = frozenset({400, 422})  # how servers refuse a field they do not know
WAIT_SLICE_S = 0.2  # how often the waiting thread reports progress (and at the latest notices a stop)
CONNECTIONS_PER_CLIENT = 8  # see ServedGenerator._ensure_clients
SEED_PROBE = [{"role": "user", "content": "Write one sentence about the sea."}]
FIELD_PROBE = [{"role": "user", "content": "Say yes."}]
PREFILL_PROBE = [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Answer:"}]


def http_client_module() -> Any:
    """httpx2 where it is installed, else httpx: the same API for everything used here."""
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise PbtError("served models need the httpx2 (or httpx) package: pip install httpx2")


def resolve_base_url(spec_url: str | None, option_url: str | None) -> str:
    """The server of a served spec: its own @URL, else --base-url, else $OPENAI_BASE_URL, else localhost:8000."""
    url = spec_url or option_url or os.environ.get(BASE_URL_VARIABLE) or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise PbtError(f"the server address {url!r} is not an http:// or https:// URL; write it as "
                       "http://HOST:PORT/v1")
    return url.rstrip("/")


def backoff_delay(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt))


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (the form servers use for rate limits)."""
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP_S)
    except ValueError:  # an HTTP date: rare for APIs; the back-off applies instead
        return None


def server_message(response: Any) -> str:
    """The first line of a server's error message, from the JSON shapes servers use, or its text."""
    try:
        data = response.json()
    except ValueError:
        data = None
    message: Any = None
    if isinstance(data, dict):
        message = data.get("error") or data.get("detail") or data.get("message")
        if isinstance(message, dict):
            message = message.get("message") or message
    text = str(message if message is not None else response.text).strip()
    first = text.splitlines()[0] if text else ""
    return first[:300] or f"HTTP {response.status_code}"


class RequestRejected(Exception):
    """A 4xx answer that retrying cannot fix; `status` and the server's `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class MalformedAnswer(Exception):
    """A 200 answer that is not a chat completion (retried: proxies truncate bodies)."""


@dataclass
class ServerFeatures:
    """What one server accepted when asked at start; a refused field is never sent again."""

    continue_final_message: bool = True
    min_tokens: bool = True
    top_k: bool = True
    generation_config: bool = False  # transformers serve: do_sample / top_k / min_new_tokens go here
    seeds_checked: bool = False


class _BackgroundLoop:
    """One asyncio loop in a daemon thread, shared by every served model of the process."""

    _instance: _BackgroundLoop | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="pbt-served", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _BackgroundLoop:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance

    def run(self, coroutine: Any, finished: queue.SimpleQueue | None = None) -> Any:
        """Run `coroutine` on the loop and wait for it here, reporting `finished` (rows, tokens) as they come.

        Waiting in short slices keeps this thread responsive: a stop signal raises StopRequested
        (or KeyboardInterrupt) here, and cancelling the future cancels the requests in flight as the
        exception propagates.
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            while True:
                try:
                    result = future.result(timeout=WAIT_SLICE_S)
                except concurrent.futures.TimeoutError:
                    _drain(finished)
                    continue
                _drain(finished)
                return result
        except BaseException:
            future.cancel()  # cancels the call's task on the loop, and with it every request in flight
            raise


def _drain(finished: queue.SimpleQueue | None) -> None:
    if finished is None:
        return
    rows = tokens = 0
    while True:
        try:
            done_rows, done_tokens = finished.get_nowait()
        except queue.Empty:
            break
        rows += done_rows
        tokens += done_tokens
    if rows:
        report_activity(rows, tokens)


def _close_clients(loop: asyncio.AbstractEventLoop, clients: list[Any]) -> None:
    if loop.is_running():
        for client in clients:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop)


class ServedGenerator:
    """A model behind an OpenAI-compatible server: the Generator protocol over HTTP.

    Making one asks the server at once (`start`), as making another backend loads the weights.
    """

    def __init__(self, spec: ModelSpec, options: Any) -> None:
        model_id, spec_url = spec.served_model
        self.spec = spec
        self.model_id = model_id
        self.base_url = resolve_base_url(spec_url, getattr(options, "base_url", None))
        self.api_key_env = getattr(options, "api_key_env", "OPENAI_API_KEY") or "OPENAI_API_KEY"
        self.max_concurrency = max(1, int(getattr(options, "max_concurrency", 64)))
        self.request_timeout = float(getattr(options, "request_timeout", 600.0))
        self.max_retries = max(0, int(getattr(options, "max_retries", 5)))
        self.usage = GenerationUsage()
        self.features = ServerFeatures()
        self.requests_sent = 0  # every POST and GET, retries included (tests and benchmarks read it)
        self.retries = 0
        self._rng = random.Random()  # back-off jitter only; never touches what the model generates
        self._started = False
        self._warned: set[str] = set()
        self._clients: list[Any] = []
        self._slots: asyncio.Queue | None = None
        self._loop = _BackgroundLoop.get()
        # Checked now, where another backend would load its weights: a server that is not there, a
        # refused key or an unknown model id stops the command before it claims an output.
        self.start()

    # -- protocol ---------------------------------------------------------------------------------

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling | Sequence[Sampling]) -> list[str]:
        samplings = per_conversation(sampling, len(conversations))
        if not conversations:
            return []
        started = time.perf_counter()
        self.start()
        if not self.features.seeds_checked and any(not s.greedy for s in samplings):
            self._check_seeds()
        self._warn_unsupported(conversations, samplings)
        bodies = [self.request_body(c, s) for c, s in zip(conversations, samplings, strict=True)]
        finished: queue.SimpleQueue = queue.SimpleQueue()
        answers = self._loop.run(self._send_all(bodies, finished), finished)
        replies = []
        empty = sum(1 for data in answers if data["choices"][0]["message"].get("content") is None)
        if empty:  # an empty reply scores as no answer: say so, rather than let it pass unseen
            log.warning("served model %s answered %d of %d request(s) with no text (content null: a reasoning-only "
                        "reply, or a server fault); they count as empty replies", self.model_id, empty,
                        len(answers))
        for conversation, data in zip(conversations, answers, strict=True):
            usage = data.get("usage") or {}
            self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.usage.generated_tokens += int(usage.get("completion_tokens") or 0)
            text = reply_text(data)
            if ends_with_prefill(conversation) and not self.features.continue_final_message:
                text = without_prefix(text, conversation[-1]["content"])
            replies.append(text)
        self.usage.calls += 1
        self.usage.sequences += len(conversations)
        self.usage.seconds += time.perf_counter() - started
        return replies

    def describe(self) -> dict[str, Any]:
        """What manifests and results record: the model id and the server, never the key."""
        identity = {"name": f"openai:{self.model_id}@{self.base_url}", "revision": None, "adapter": None,
                    "chat_template_hash": None}
        return {"name": self.model_id, "backend": "openai", "base_url": self.base_url, "revision": None,
                "adapter": None, "chat_template_hash": None, "identity": identity}

    # -- requests ---------------------------------------------------------------------------------

    def request_body(self, conversation: Conversation, sampling: Sampling) -> dict[str, Any]:
        """The JSON of one chat completion request, in the fields this server accepts."""
        features = self.features
        messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
        body: dict[str, Any] = {"model": self.model_id, "messages": messages, "max_tokens": sampling.max_new_tokens,
                                "temperature": 0.0 if sampling.greedy else sampling.temperature,
                                "top_p": 1.0 if sampling.greedy else sampling.top_p, "n": 1}
        if not sampling.greedy and sampling.seed is not None:
            body["seed"] = sampling.seed
        if features.generation_config:
            config: dict[str, Any] = {"do_sample": not sampling.greedy}
            if not sampling.greedy:
                config["top_k"] = sampling.top_k  # 0 = off; unset would mean transformers' default of 50
            if sampling.min_new_tokens:
                config["min_new_tokens"] = sampling.min_new_tokens
            # not the model's generation_config.json defaults, which the server merges in (base.py); min_p
            # only where it samples (transformers warns about the flag in greedy decoding)
            config.update(NEUTRAL_SAMPLING if not sampling.greedy else
                          {"repetition_penalty": NEUTRAL_SAMPLING["repetition_penalty"]})
            body["generation_config"] = json.dumps(config)
        else:
            if not sampling.greedy and features.top_k:
                # 0 = off, sent too: vLLM's server fills a field left out from generation_config.json
                body["top_k"] = sampling.top_k
            if features.top_k:  # a server with vLLM's sampling fields (vLLM, SGLang) takes these too
                body.update(NEUTRAL_SAMPLING)
            if sampling.min_new_tokens and features.min_tokens:
                body["min_tokens"] = sampling.min_new_tokens
        if ends_with_prefill(messages):
            if features.continue_final_message:
                body.update(continue_final_message=True, add_generation_prompt=False)
            else:
                # The extractor's worked examples still make the model write "Final answer: X" in a turn
                # of its own (chat() then cuts the repeated prefix off the reply). The reply now holds
                # the prefix too, so its budget grows by about the prefix's length in tokens (its words
                # plus one: "Final answer:" is three tokens for Llama's and SmolLM2's tokenizers), which
                # keeps an answer cut by the budget as long as it is in process.
                body["messages"] = messages[:-1]
                body["max_tokens"] += len(messages[-1]["content"].split()) + 1
        return body

    async def _send_all(self, bodies: list[dict[str, Any]], finished: queue.SimpleQueue) -> list[dict[str, Any]]:
        """Every request, at most max_concurrency in flight; the first failure cancels the rest."""

        async def one(body: dict[str, Any]) -> dict[str, Any]:
            try:
                data = await self._post(body)
            except RequestRejected as exc:
                raise self._request_error(exc) from None
            except _Unanswered as exc:
                raise self._unanswered_error(exc) from None
            usage = data.get("usage") or {}
            finished.put((1, int(usage.get("completion_tokens") or 0)))
            return data

        tasks = [asyncio.ensure_future(one(body)) for body in bodies]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception()), None)
            if failed is not None:
                raise failed.exception()  # type: ignore[misc]
            return [task.result() for task in tasks]
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _ensure_clients(self) -> asyncio.Queue:
        """The HTTP clients and the queue of free request slots, made on the loop's thread, kept for the
        generator's life (connections are reused from one call to the next).

        max_concurrency slots, spread over clients of at most CONNECTIONS_PER_CLIENT connections each:
        httpcore's pool walks all its connections every time a request starts or ends, so one pool of
        64 connections spends ~3.7 ms of CPU per request against ~1.3 ms for eight pools of eight
        with httpx (benchmarks/served_client.py; httpx2's pool costs less, and sharding still helps it).
        Taking a slot is also what bounds the requests in flight.
        """
        if self._slots is None:
            httpx = http_client_module()
            headers = {"Content-Type": "application/json"}
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            # The whole request is bounded by asyncio.timeout in _request; httpx's own limits are the same
            # number so that a stalled connect or read fails the same way. Plain http needs no TLS
            # context (loading the CA bundle costs ~25 ms per client).
            verify = self.base_url.startswith("https://")
            slots: asyncio.Queue = asyncio.Queue()
            for start in range(0, self.max_concurrency, CONNECTIONS_PER_CLIENT):
                size = min(CONNECTIONS_PER_CLIENT, self.max_concurrency - start)
                limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
                client = httpx.AsyncClient(base_url=self.base_url + "/", headers=headers, limits=limits,
                                           timeout=httpx.Timeout(self.request_timeout), verify=verify)
                self._clients.append(client)
                for _ in range(size):
                    slots.put_nowait(client)
            self._slots = slots
            weakref.finalize(self, _close_clients, self._loop.loop, list(self._clients))
        return self._slots

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion in a free slot, retried on 429 / 5xx / connection errors / time-outs /
        malformed answers (the slot is held through the back-off: a waiting retry is still in flight)."""
        slots = self._ensure_clients()
        client = await slots.get()
        try:
            return await self._request(client, "POST", "chat/completions", body)
        finally:
            slots.put_nowait(client)

    async def _request(self, client: Any, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        httpx = http_client_module()
        last = ""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            delay: float | None = None
            try:
                self.requests_sent += 1
                async with asyncio.timeout(self.request_timeout):
                    if method == "GET":
                        response = await client.get(path)
                    else:
                        response = await client.post(path, content=json.dumps(body).encode())
                status = response.status_code
                if status == 200:
                    return _completion_json(response, expect_choices=method == "POST")
                if status in RETRIED_STATUSES or status >= 500:
                    last = f"HTTP {status}: {server_message(response)}"
                    delay = retry_after_seconds(response.headers.get("retry-after"))
                else:
                    raise RequestRejected(status, server_message(response))
            except (TimeoutError, httpx.TimeoutException):
                last = f"no answer within --request-timeout {self.request_timeout:g} s"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except MalformedAnswer as exc:
                last = str(exc)
            if attempt + 1 < attempts:
                self.retries += 1
                if delay is not None:
                    # a server's Retry-After waits no longer than one request may take, and says so
                    delay = min(delay, self.request_timeout)
                    if delay >= 1:  # a wait a user notices
                        log.info("served model %s: %s; retrying in %.0f s as the server asks (attempt %d of %d)",
                                 self.model_id, last, delay, attempt + 2, attempts)
                await asyncio.sleep(delay if delay is not None else backoff_delay(attempt, self._rng))
        raise _Unanswered(last, attempts)

    # -- start: is the server there, does it serve the model, what does it accept ---------------

    def start(self) -> None:
        """The first use of this server: check it and learn what it accepts (a few tiny requests)."""
        if self._started:
            return
        self._loop.run(self._start())
        self._started = True
        features = self.features
        log.info("served model %s at %s: continue_final_message %s, min_tokens %s, top_k %s%s", self.model_id,
                 self.base_url, _yes(features.continue_final_message), _yes(features.min_tokens),
                 _yes(features.top_k), " (through generation_config)" if features.generation_config else "")

    async def _start(self) -> None:
        self._ensure_clients()
        try:
            listing = await self._request(self._clients[0], "GET", "models")
        except RequestRejected as exc:
            if exc.status in (401, 403):
                raise self._key_error(exc.status) from None
            if exc.status != 404:  # servers without a model list: the first request tells instead
                raise self._request_error(exc) from None
            listing = {}
        except _Unanswered as exc:
            raise PbtError(f"cannot reach the OpenAI-compatible server at {self.base_url} ({exc.last}, "
                           f"{exc.attempts} attempt(s)); start it (e.g. `vllm serve MODEL --port 8000`) or give "
                           f"its address: openai:{self.model_id}@http://HOST:PORT/v1, --base-url or "
                           f"${BASE_URL_VARIABLE}") from None
        served = [str(m.get("id")) for m in listing.get("data") or [] if isinstance(m, dict)]
        if served and self.model_id not in served:
            raise PbtError(f"the server at {self.base_url} does not serve {self.model_id!r}; it serves: "
                           f"{', '.join(served[:20])}{' ...' if len(served) > 20 else ''} "
                           "(name one of those as openai:MODEL_ID)")
        greedy = Sampling(temperature=0.0, max_new_tokens=2)
        features = self.features
        # greedy probes first: transformers serve's continuous batching fixes its sampling settings
        # from the first request it sees
        features.continue_final_message = await self._accepts(self._bare(PREFILL_PROBE, greedy)
                                                              | {"continue_final_message": True,
                                                                 "add_generation_prompt": False})
        features.min_tokens = await self._accepts(self._bare(FIELD_PROBE, greedy) | {"min_tokens": 1})
        features.top_k = await self._accepts(self._bare(FIELD_PROBE, greedy) | {"top_k": 1})
        if not (features.min_tokens and features.top_k):
            probe = self._bare(FIELD_PROBE, greedy) | {"generation_config": json.dumps({"min_new_tokens": 1})}
            features.generation_config = await self._accepts(probe)
            if features.generation_config:
                features.min_tokens = features.top_k = True

    def _bare(self, messages: list[dict[str, str]], sampling: Sampling) -> dict[str, Any]:
        return {"model": self.model_id, "messages": messages, "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "n": 1}

    async def _accepts(self, body: dict[str, Any]) -> bool:
        """Whether the server takes a request with these fields: a 400 or 422 says it refuses them."""
        try:
            await self._post(body)
        except RequestRejected as exc:
            if exc.status in (401, 403):
                raise self._key_error(exc.status) from None
            if exc.status in REJECTED_STATUSES:
                log.debug("served model %s refused probe fields %s: %s", self.model_id,
                          sorted(set(body) - {"model", "messages", "max_tokens", "temperature", "top_p", "n"}),
                          exc.message)
                return False
            raise self._request_error(exc) from None
        except _Unanswered as exc:
            raise self._unanswered_error(exc) from None
        return True

    def _check_seeds(self) -> None:
        """Two sampled requests with one seed must agree; a third with another seed should not."""
        self.features.seeds_checked = True
        base = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=24)
        bodies = [self.request_body(SEED_PROBE, base.with_seed(seed)) for seed in (1234, 1234, 4321)]

        async def in_turn() -> list[dict[str, Any]]:  # one at a time: concurrency is not what is checked
            return [await self._post_or_raise(body) for body in bodies]

        texts = [reply_text(data) for data in self._loop.run(in_turn())]
        if texts[0] != texts[1]:
            self._warn("seeds", f"the server at {self.base_url} ignores per-request seeds (one seed gave two "
                                "different replies): sampled trees and flipflop replies will not be reproducible")
        elif texts[0] == texts[2]:
            self._warn("sampling", f"the server at {self.base_url} gave the same reply for two different seeds at "
                                   "temperature 1: it may decode greedily whatever the temperature")

    async def _post_or_raise(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._post(body)
        except RequestRejected as exc:
            raise self._request_error(exc) from None
        except _Unanswered as exc:
            raise self._unanswered_error(exc) from None

    def _warn_unsupported(self, conversations: Sequence[Conversation], samplings: Sequence[Sampling]) -> None:
        features = self.features
        if not features.continue_final_message and any(ends_with_prefill(c) for c in conversations):
            self._warn("continue", f"the server at {self.base_url} does not continue a final assistant message "
                                   "(it refused continue_final_message): the extractor's and judge's answer prefix "
                                   "is left out and the model answers in a turn of its own")
        if not features.min_tokens and any(s.min_new_tokens for s in samplings):
            self._warn("min_tokens", f"the server at {self.base_url} refuses min_tokens: replies may be shorter than "
                                     f"--min-new-tokens ({max(s.min_new_tokens for s in samplings)})")
        if not features.top_k and any(s.top_k and not s.greedy for s in samplings):
            self._warn("top_k", f"the server at {self.base_url} refuses top_k: sampling ignores --top-k")

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    # -- errors -----------------------------------------------------------------------------------

    def _key_error(self, status: int) -> PbtError:
        if os.environ.get(self.api_key_env):
            return PbtError(f"the server at {self.base_url} refused the key in ${self.api_key_env} (HTTP {status}); "
                            "check the key, or name the variable that holds the right one with --api-key-env")
        return PbtError(f"the server at {self.base_url} wants an API key (HTTP {status}) and ${self.api_key_env} is "
                        "not set; put the key in it, or name another variable with --api-key-env")

    def _request_error(self, exc: RequestRejected) -> PbtError:
        if exc.status in (401, 403):
            return self._key_error(exc.status)
        return PbtError(f"the server at {self.base_url} refused a request for {self.model_id} "
                        f"(HTTP {exc.status}: {exc.message})")

    def _unanswered_error(self, exc: _Unanswered) -> PbtError:
        return PbtError(f"the server at {self.base_url} gave no usable answer for {self.model_id} in "
                        f"{exc.attempts} attempt(s) (last: {exc.last}); check the server's log, or raise "
                        "--max-retries / --request-timeout")


class _Unanswered(Exception):
    """Every attempt of one request failed in a way worth retrying; `last` says how."""

    def __init__(self, last: str, attempts: int) -> None:
        super().__init__(last)
        self.last = last
        self.attempts = attempts


def _completion_json(response: Any, *, expect_choices: bool) -> dict[str, Any]:
    try:
        data = json.loads(response.content)
    except ValueError:
        raise MalformedAnswer(f"an answer that is not JSON ({response.content[:80]!r})") from None
    if not isinstance(data, dict) or (expect_choices and not _has_message(data)):
        raise MalformedAnswer(f"an answer that is not a chat completion ({str(data)[:80]})")
    return data


def _has_message(data: dict[str, Any]) -> bool:
    choices = data.get("choices")
    return isinstance(choices, list) and bool(choices) and isinstance(choices[0], dict) \
        and isinstance(choices[0].get("message"), dict)


def without_prefix(reply: str, prefix: str) -> str:
    """A reply that had to be asked for without its prefix, as a continuation of it: "Final answer: Rome"
    becomes "Rome", so what the extractor and the judge write reads as it does in process (the judge's
    parser takes the first word, which would otherwise be "Verdict"). A reply that does not repeat the
    prefix is kept whole."""
    found = re.match(r"[\s*_#>`\"']*" + re.escape(prefix.strip()), reply, re.IGNORECASE)
    return reply[found.end():].lstrip(" *_").strip() if found and prefix.strip() else reply


def reply_text(data: dict[str, Any]) -> str:
    """The new text of a chat completion, stripped (None content, e.g. a reasoning-only reply, is "")."""
    return str(data["choices"][0]["message"].get("content") or "").strip()


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
