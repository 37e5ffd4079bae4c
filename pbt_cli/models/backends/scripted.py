"""A backend whose replies come from a Python function: pipeline logic tested exactly, without weights."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from pbt_cli.models.backends.base import GenerationUsage, Sampling, per_conversation
from pbt_cli.models.chat import Conversation
from pbt_cli.progress import report_activity

ReplyFunction = Callable[[Conversation, Sampling], str]


class ScriptedGenerator:
    """Replies with `reply(conversation, sampling)`; records every call for assertions.

    `calls` holds one entry per `chat` call: the list of (conversation, sampling) it received, so a
    test can assert both what each agent saw and that work was batched.
    """

    def __init__(self, reply: ReplyFunction, name: str = "scripted") -> None:
        self.reply = reply
        self.name = name
        self.usage = GenerationUsage()
        self.calls: list[list[tuple[Conversation, Sampling]]] = []

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling | Sequence[Sampling]) -> list[str]:
        started = time.perf_counter()
        samplings = per_conversation(sampling, len(conversations))
        batch = [([dict(m) for m in conv], s) for conv, s in zip(conversations, samplings, strict=True)]
        self.calls.append(batch)
        replies = [self.reply(conv, s) for conv, s in batch]
        self.usage.calls += 1
        self.usage.sequences += len(replies)
        self.usage.generated_tokens += sum(len(r.split()) for r in replies)
        self.usage.seconds += time.perf_counter() - started
        report_activity(len(replies), sum(len(r.split()) for r in replies))  # as the real backends do
        return replies

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "backend": "scripted", "revision": None, "adapter": None,
                "chat_template_hash": None}
