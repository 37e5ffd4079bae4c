"""The generation backend protocol every stage uses: a batch of conversations in, replies out.

`chat(conversations, sampling)` mirrors vLLM's `LLM.chat(messages, sampling_params)`: a list of
conversations (each a list of {"role", "content"} messages) and either one `Sampling` for all or
one per conversation. A conversation that ends with an assistant message is continued (used to
prefill "Final answer:" for the answer extractor). Replies come back in input order, new text only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from pbt_cli.models.chat import Conversation


@dataclass(frozen=True)
class Sampling:
    """Decoding settings (names as in transformers' GenerationConfig). temperature 0 means greedy."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filtering
    max_new_tokens: int = 80
    min_new_tokens: int = 0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def as_greedy(self) -> Sampling:
        return replace(self, temperature=0.0, top_p=1.0, top_k=0)

    def with_seed(self, seed: int | None) -> Sampling:
        return replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationUsage:
    """Counters a backend keeps, for progress bars, manifests and benchmarks."""

    calls: int = 0
    sequences: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    padded_tokens: int = 0  # prompt + generated slots spent on padding (what length bucketing saves)
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, other: GenerationUsage) -> None:
        self.calls += other.calls
        self.sequences += other.sequences
        self.prompt_tokens += other.prompt_tokens
        self.generated_tokens += other.generated_tokens
        self.padded_tokens += other.padded_tokens
        self.seconds += other.seconds


@runtime_checkable
class Generator(Protocol):
    """What every backend provides."""

    usage: GenerationUsage

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling | Sequence[Sampling]) -> list[str]: ...

    def describe(self) -> dict[str, Any]:
        """Model name, revision, adapter, chat-template hash: what a manifest records."""
        ...


def per_conversation(sampling: Sampling | Sequence[Sampling], count: int) -> list[Sampling]:
    if isinstance(sampling, Sampling):
        return [sampling] * count
    samplings = list(sampling)
    if len(samplings) != count:
        raise ValueError(f"{len(samplings)} sampling settings for {count} conversations")
    return samplings
