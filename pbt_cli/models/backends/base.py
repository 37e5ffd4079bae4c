"""The generation backend protocol every stage uses: a batch of conversations in, replies out.

`chat(conversations, sampling)` mirrors vLLM's `LLM.chat(messages, sampling_params)`: a list of
conversations (each a list of {"role", "content"} messages) and either one `Sampling` for all or
one per conversation. A conversation that ends with an assistant message is continued (used to
prefill "Final answer:" for the answer extractor). Replies come back in input order, new text only.

Seeds belong to requests, not to batches (docs/method.md §2.10): a sampled request carries its own
`seed`, derived by the stage from stable ids (`request_seed`), and every backend draws that
request's tokens from a random stream of its own, so a reply does not depend on which other
requests shared its batch, on the batch size, the shard layout or the backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol, runtime_checkable

from pbt_cli.errors import PbtError
from pbt_cli.models.chat import Conversation

MAX_TEMPERATURE = 2.0  # the OpenAI API's and vLLM's upper bound; beyond it sampling is noise anyway
# Sampling fields a model's generation_config.json may set that pbt has no option for: every backend
# sends them at these neutral values, so that no backend applies the checkpoint's defaults (transformers
# merges generation_config into generate(), vLLM's server fills unsent fields from it, in-process vLLM
# ignores it); with pbt's own temperature, top_p, top_k and lengths, a request says all of its sampling
NEUTRAL_SAMPLING: dict[str, float] = {"repetition_penalty": 1.0, "min_p": 0.0}


@dataclass(frozen=True)
class Sampling:
    """Decoding settings (names as in transformers' GenerationConfig). temperature 0 means greedy."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filtering
    max_new_tokens: int = 80
    min_new_tokens: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        """The ranges every backend accepts, checked once, before any model loads."""
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise PbtError(f"--temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}, got {self.temperature:g}")
        if not 0 < self.top_p <= 1:
            raise PbtError(f"--top-p must be above 0 and at most 1, got {self.top_p:g}")
        if self.top_k < 0:
            raise PbtError(f"--top-k must be 0 (off) or more, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise PbtError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.min_new_tokens < 0:
            raise PbtError(f"--min-new-tokens must be 0 or more, got {self.min_new_tokens}")
        if self.min_new_tokens > self.max_new_tokens:
            raise PbtError(f"--min-new-tokens ({self.min_new_tokens}) is larger than --max-new-tokens "
                           f"({self.max_new_tokens})")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def as_greedy(self) -> Sampling:
        return replace(self, temperature=0.0, top_p=1.0, top_k=0)

    def with_seed(self, seed: int | None) -> Sampling:
        return replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sampling_rule() -> dict[str, Any]:
    """NEUTRAL_SAMPLING's rule as run records state it (generate's and `filter --judge`'s manifests, every
    evaluation's results.json): whichever backend answered, a request held all of its sampling."""
    return {"model_generation_config": "not applied (a checkpoint's generation_config.json sets nothing)",
            "sent_with_every_request": dict(NEUTRAL_SAMPLING),
            "sent_from_options": [f.name for f in fields(Sampling)]}


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


def request_seed(*ids: Any) -> int:
    """A request's seed from stable ids (run seed, tree id, turn id, role, ...), in [0, 2**31).

    The same ids give the same seed in every process and on every machine (no Python hash
    randomisation), and changing any id gives an unrelated seed.
    """
    text = "\x1f".join(str(part) for part in ids)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def seeded(sampling: Sampling, *ids: Any) -> Sampling:
    """`sampling` with the seed of the request named by `ids` (greedy requests need none)."""
    return sampling if sampling.greedy else sampling.with_seed(request_seed(*ids))


def per_conversation(sampling: Sampling | Sequence[Sampling], count: int) -> list[Sampling]:
    if isinstance(sampling, Sampling):
        return [sampling] * count
    samplings = list(sampling)
    if len(samplings) != count:
        raise ValueError(f"{len(samplings)} sampling settings for {count} conversations")
    return samplings
