"""The served-model backend against the stub server: what each request carries, what the start-up check
learns, concurrency, retries, time-outs and stops (pbt_cli/models/backends/served.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time

import pytest

from pbt_cli import stops
from pbt_cli.data.prompts import extraction_conversation
from pbt_cli.errors import PbtError
from pbt_cli.models.backends import BackendOptions, GeneratorPool
from pbt_cli.models.backends.base import Sampling
from pbt_cli.models.backends.served import ServedGenerator, resolve_base_url
from pbt_cli.models.spec import ModelSpec
from pbt_cli.progress import add_activity_listener, remove_activity_listener

SAMPLED = Sampling(temperature=0.7, top_p=0.9, max_new_tokens=80, min_new_tokens=8, seed=1234)
GREEDY = Sampling(temperature=0.0, max_new_tokens=16)


def generator(server, **options) -> ServedGenerator:
    return ServedGenerator(ModelSpec.parse(f"openai:stub@{server.url}"), BackendOptions(**options))


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def warning_lines(caplog) -> list[str]:
    """pbt's warnings (the start-up info line is there too when an earlier test set up logging)."""
    return [r.getMessage() for r in caplog.records if r.name == "pbt" and r.levelno >= logging.WARNING]


def test_the_pool_gives_served_specs_a_served_generator_that_is_its_own_base(stub):
    server = stub()
    pool = GeneratorPool(BackendOptions())
    spec = ModelSpec.parse(f"openai:stub@{server.url}")
    served = pool.get(spec)
    assert isinstance(served, ServedGenerator)
    assert pool.base_of(spec) is served and pool.get(ModelSpec.parse(f"openai:stub@{server.url}")) is served


def test_a_request_carries_messages_sampling_and_its_own_seed(stub):
    server = stub()
    replies = generator(server).chat([ask("first question"), ask("second question")], SAMPLED)
    assert replies == ["The answer is Paris (first question; seed 1234).",
                       "The answer is Paris (second question; seed 1234)."]
    body = server.bodies[-1]
    assert body["messages"] == ask("second question")
    assert body["max_tokens"] == 80 and body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["seed"] == 1234 and body["min_tokens"] == 8 and body["n"] == 1
    # top_k 0 (off) and the neutral values are sent: vLLM's server would fill unsent fields from the
    # model's generation_config.json (issue 23)
    assert body["top_k"] == 0 and body["repetition_penalty"] == 1.0 and body["min_p"] == 0.0
    assert "continue_final_message" not in body


def test_greedy_requests_carry_no_seed_and_each_conversation_its_own_settings(stub):
    server = stub()
    settings = [GREEDY, Sampling(temperature=1.0, top_k=5, max_new_tokens=4, seed=7)]
    generator(server).chat([ask("greedy one"), ask("sampled one")], settings)
    greedy, sampled = server.bodies[-2:]
    assert greedy["temperature"] == 0.0 and "seed" not in greedy and "min_tokens" not in greedy
    assert sampled["seed"] == 7 and sampled["top_k"] == 5 and sampled["max_tokens"] == 4


def test_a_final_assistant_message_is_continued(stub):
    server = stub()
    conversation = extraction_conversation("What is the capital of France?", "Paris, I think.")
    generator(server).chat([conversation], GREEDY)
    body = server.bodies[-1]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": "Final answer:"}


def test_replies_come_back_in_input_order_with_usage_and_progress(stub):
    server = stub(faults=["slow:0.2"])  # the first answer comes last
    served = generator(server, max_concurrency=4)
    served.start()
    rows: list[int] = []

    def listener(done: int, tokens: int) -> None:
        rows.append(done)

    add_activity_listener(listener)
    try:
        server.faults = ["slow:0.3"]
        replies = served.chat([ask(f"question {i}") for i in range(10)], GREEDY)
    finally:
        remove_activity_listener(listener)
    assert replies == [f"The answer is Paris (question {i}; seed None)." for i in range(10)]
    assert sum(rows) == 10 and len(rows) >= 2  # progress moved before the slow answer came
    assert served.usage.sequences == 10 and served.usage.calls == 1
    assert served.usage.generated_tokens == sum(len(r.split()) for r in replies)
    assert served.usage.prompt_tokens > 0


def test_no_more_than_max_concurrency_requests_are_in_flight(stub):
    server = stub(default="slow:0.05")
    generator(server, max_concurrency=3).chat([ask(f"q{i}") for i in range(12)], GREEDY)
    assert server.max_in_flight == 3


def test_describe_names_the_model_and_server_never_the_key(stub, monkeypatch):
    server = stub(api_key="sk-secret-123")
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    served = generator(server, api_key_env="MY_KEY")
    served.chat([ask("hello")], GREEDY)
    assert server.authorization[-1] == "Bearer sk-secret-123"
    info = served.describe()
    assert "sk-secret-123" not in json.dumps(info)
    assert info["name"] == "stub" and info["backend"] == "openai" and info["base_url"] == server.url
    assert info["identity"] == {"name": f"openai:stub@{server.url}", "revision": None, "adapter": None,
                                "chat_template_hash": None}


def test_the_server_address_comes_from_the_spec_then_the_option_then_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    assert resolve_base_url("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1") == "http://127.0.0.1:1/v1"
    assert resolve_base_url(None, "http://127.0.0.1:2/v1") == "http://127.0.0.1:2/v1"
    assert resolve_base_url(None, None) == "http://127.0.0.1:9/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert resolve_base_url(None, None) == "http://127.0.0.1:8000/v1"
    with pytest.raises(PbtError, match="not an http"):
        resolve_base_url(None, "127.0.0.1:8000")


# --- what the server accepts --------------------------------------------------------------------------


TRANSFORMERS_SERVE_REFUSES = ("min_tokens", "top_k", "continue_final_message", "add_generation_prompt")


def test_transformers_serve_settings_go_through_generation_config(stub, caplog):
    server = stub(reject_fields=TRANSFORMERS_SERVE_REFUSES)
    served = generator(server)
    with caplog.at_level(logging.WARNING, logger="pbt"):
        served.chat([ask("sampled"), extraction_conversation("Q?", "Paris.")],
                    [Sampling(temperature=0.7, top_k=0, max_new_tokens=80, min_new_tokens=8, seed=3), GREEDY])
    sampled, extraction = server.bodies[-2:]
    neutral = {"repetition_penalty": 1.0, "min_p": 0.0}  # not the model's generation_config.json defaults
    assert json.loads(sampled["generation_config"]) == {"do_sample": True, "top_k": 0, "min_new_tokens": 8,
                                                         **neutral}
    assert json.loads(extraction["generation_config"]) == {"do_sample": False, "repetition_penalty": 1.0}
    assert not set(TRANSFORMERS_SERVE_REFUSES) & (set(sampled) | set(extraction))
    # no continuation: the answer prefix is left out and the extractor answers in a turn of its own
    assert extraction["messages"][-1]["role"] == "user"
    assert extraction["messages"] == extraction_conversation("Q?", "Paris.")[:-1]
    warnings = warning_lines(caplog)
    assert len(warnings) == 1 and "does not continue a final assistant message" in warnings[0]


def test_without_continuation_a_repeated_prefix_is_cut_off_the_reply(stub):
    """The served extractor then writes "Final answer: X" itself; pbt returns what a continuation would."""
    def reply(body):
        reads = any("Reply:" in m["content"] for m in body["messages"][-2:])
        return "**Final answer:** Rome" if reads else "Final answer: Rome"

    refusing = stub(reject_fields=TRANSFORMERS_SERVE_REFUSES, reply=reply)
    conversations = [extraction_conversation("Q?", "Rome, surely."), ask("no prefix here")]
    assert generator(refusing).chat(conversations, GREEDY) == ["Rome", "Final answer: Rome"]
    extraction = refusing.bodies[-2]
    assert extraction["max_tokens"] == GREEDY.max_new_tokens + 3  # room for the prefix the model now writes
    continuing = stub(reply=reply)  # a server that continues: the reply is the continuation, kept whole
    assert generator(continuing).chat(conversations[:1], GREEDY) == ["**Final answer:** Rome"]


def test_refused_fields_are_dropped_with_one_warning_each(stub, caplog):
    server = stub(reject_fields=(*TRANSFORMERS_SERVE_REFUSES, "generation_config"))
    served = generator(server)
    settings = Sampling(temperature=0.7, top_k=4, max_new_tokens=20, min_new_tokens=8, seed=1)
    with caplog.at_level(logging.WARNING, logger="pbt"):
        for _ in range(2):
            served.chat([ask("a"), extraction_conversation("Q?", "Paris.")], settings)
    for body in server.bodies[-4:]:
        assert not {*TRANSFORMERS_SERVE_REFUSES, "generation_config"} & set(body)
    warnings = warning_lines(caplog)
    assert len(warnings) == 3, warnings
    assert any("refuses min_tokens" in w and "(8)" in w for w in warnings)
    assert any("refuses top_k" in w for w in warnings)
    assert any("does not continue" in w for w in warnings)


def test_a_server_that_ignores_seeds_is_named_in_one_warning(stub, caplog):
    server = stub(seeds="ignore")
    served = generator(server)
    with caplog.at_level(logging.WARNING, logger="pbt"):
        served.chat([ask("a")], SAMPLED)
        served.chat([ask("b")], SAMPLED)
    warnings = warning_lines(caplog)
    assert len(warnings) == 1 and "ignores per-request seeds" in warnings[0]


def test_a_server_that_decodes_greedily_whatever_the_seed_is_named_in_one_warning(stub, caplog):
    """What `transformers serve --continuous-batching` does after a greedy first request."""
    server = stub(seeds="greedy")
    with caplog.at_level(logging.WARNING, logger="pbt"):
        generator(server).chat([ask("a")], SAMPLED)
    warnings = warning_lines(caplog)
    assert len(warnings) == 1 and "may decode greedily whatever the temperature" in warnings[0]


def test_seeds_are_checked_only_when_something_is_sampled(stub, caplog):
    server = stub(seeds="ignore")
    with caplog.at_level(logging.WARNING, logger="pbt"):
        generator(server).chat([ask("a")], GREEDY)
    assert not warning_lines(caplog)
    assert all(not body.get("seed") for body in server.bodies)


# --- faults -----------------------------------------------------------------------------------------


def test_429_500_and_resets_are_retried(stub):
    server = stub()
    served = generator(server, max_retries=3)
    served.start()
    before = server.chat_requests
    server.faults = ["429", "500", "reset"]
    assert served.chat([ask("x")], GREEDY) == ["The answer is Paris (x; seed None)."]
    assert server.chat_requests - before == 4 and served.retries == 3


def test_a_retry_after_header_is_honoured(stub):
    server = stub()
    served = generator(server)
    served.start()
    server.faults = ["429:1"]
    started = time.monotonic()
    served.chat([ask("x")], GREEDY)
    assert time.monotonic() - started >= 1.0


def test_a_request_that_takes_too_long_is_retried_then_fails_in_one_line(stub):
    server = stub()
    served = generator(server, request_timeout=0.2, max_retries=1)
    served.start()
    server.default = "slow:5"
    started = time.monotonic()
    with pytest.raises(PbtError, match=r"2 attempt\(s\) \(last: no answer within --request-timeout 0.2 s\)"):
        served.chat([ask("x")], GREEDY)
    assert time.monotonic() - started < 2.0


def test_the_first_failure_cancels_the_other_requests(stub):
    server = stub()
    served = generator(server, max_concurrency=8, max_retries=0)
    served.start()
    server.faults = ["500"] + ["slow:5"] * 7
    started = time.monotonic()
    with pytest.raises(PbtError, match="HTTP 500"):
        served.chat([ask(f"q{i}") for i in range(8)], GREEDY)
    assert time.monotonic() - started < 2.0
    assert _pending_requests(served) == 0


def _pending_requests(served: ServedGenerator) -> int:
    loop = served._loop.loop
    for _ in range(50):  # cancelled tasks finish on the loop's next turns
        pending = asyncio.run_coroutine_threadsafe(_count_tasks(), loop).result(5)
        if pending == 0:
            return 0
        time.sleep(0.02)
    return pending


async def _count_tasks() -> int:
    return len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])


def test_a_stop_signal_cancels_the_requests_in_flight_at_once(stub):
    server = stub()
    served = generator(server)
    served.start()
    server.default = "slow:30"
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    started = time.monotonic()
    with stops.handling_signals(), pytest.raises(stops.StopRequested):
        timer.start()
        served.chat([ask(f"q{i}") for i in range(4)], GREEDY)
    assert time.monotonic() - started < 2.0
    assert _pending_requests(served) == 0
