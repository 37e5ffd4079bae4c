"""The transformers backend: batched generation with left padding and the KV cache.

Conversations are rendered with the chat template, grouped by decoding settings, sorted by prompt
length (so a batch pads little), and cut into batches capped both by count (`batch_size`) and by
token slots (`max_batch_tokens`: rows x (longest prompt + max_new_tokens)). Each batch is one
`model.generate` call under `torch.inference_mode()`; the prompt is encoded once per batch and the
KV cache carries it through decoding.

Shared prefixes: when every prompt of a batch starts with the same tokens (the answer extractor's
instructions and worked examples are ~370 of its ~390 tokens), the prefix is encoded once, its
KV cache kept (a few, least recently used) and copied to every row; each row then encodes only its
own suffix. The layout is [prefix][padding][suffix] with the padding masked out, so positions stay
those of the unpadded prompt and greedy replies are the same as without the cache.

Seeds: every sampled row draws its tokens from a random generator of its own, seeded with its
request's seed (`PerRowSampler`), so a reply does not depend on the other rows of its batch. What
batching can still change is the arithmetic: a row padded differently gets logits that differ in
the last bits, which moves a draw only when it lands within that distance of a token boundary
(measured in benchmarks/seeds.py).
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pbt_cli.console import log
from pbt_cli.models.backends.base import NEUTRAL_SAMPLING, GenerationUsage, Sampling, per_conversation
from pbt_cli.models.chat import Conversation, encode, render, template_hash
from pbt_cli.models.spec import ModelSpec
from pbt_cli.progress import report_activity

MIN_SHARED_PREFIX = 16  # tokens; below this, copying a cache costs about what it saves
PREFIX_CACHE_ENTRIES = 4


class TransformersGenerator:
    def __init__(self, spec: ModelSpec, *, batch_size: int = 64, max_batch_tokens: int | None = None,
                 model: Any = None, tokenizer: Any = None, resolved: Any = None) -> None:
        from pbt_cli.models.loading import load_model, load_tokenizer
        from pbt_cli.models.resolve import resolve

        self.spec = spec
        self.batch_size = max(1, batch_size)
        self.max_batch_tokens = max_batch_tokens
        self.usage = GenerationUsage()
        self.resolved = resolved or (resolve(spec) if model is None or tokenizer is None else None)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(self.resolved, padding_side="left")
        self.tokenizer.padding_side = "left"
        self.model = model if model is not None else load_model(self.resolved)
        self.model.eval()
        if _input_device(self.model).type == "cpu":
            # grouped-query attention without copying the key/value heads first (SDPA's enable_gqa): on the
            # CPU the copies cost a quarter of the extractor's prefill over its long cached prefix
            # (benchmarks: the same replies, 27% less time); transformers reads this at every call
            os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")
        self.eos_token_ids = _eos_ids(self.model, self.tokenizer)
        self.share_prefixes = True  # switches exist for benchmarks/ablation.py
        self.batch_order = "prefix"  # "prefix": group shared prefixes; "length": longest first; "input"
        self.per_row_sampling = True  # off: transformers' own sampler, one random stream per batch
        self.use_cache = True  # off only to time the reference code's pattern
        self._prefix_caches: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    # -- protocol ---------------------------------------------------------------------------------

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling | Sequence[Sampling]) -> list[str]:
        from pbt_cli.models.chat import require_chat_template

        require_chat_template(self.tokenizer, self.spec.name)
        samplings = per_conversation(sampling, len(conversations))
        prompts = [encode(self.tokenizer, render(self.tokenizer, conv)) for conv in conversations]
        replies: list[str | None] = [None] * len(conversations)
        # Rows share a generate call when their settings agree apart from the seed (each row has its own).
        groups: dict[Sampling, list[int]] = defaultdict(list)
        for index, settings in enumerate(samplings):
            groups[replace(settings, seed=None)].append(index)
        for settings, indices in groups.items():
            for batch in self.plan_batches([prompts[i] for i in indices], settings):
                rows = [indices[i] for i in batch]
                seeds = [samplings[row].seed for row in rows]
                texts = self._generate([prompts[i] for i in rows], settings, seeds)
                for row, text in zip(rows, texts, strict=True):
                    replies[row] = text
        return [r if r is not None else "" for r in replies]

    def describe(self) -> dict[str, Any]:
        info = self.resolved.describe() if self.resolved else {"name": self.spec.name, "revision": self.spec.revision}
        hash_ = template_hash(self.tokenizer)
        info.update(backend="transformers", chat_template_hash=hash_,
                    dtype=str(getattr(self.model, "dtype", "")).replace("torch.", ""))
        if self.resolved:
            info["identity"] = self.resolved.identity(hash_)
        return info

    # -- batching ---------------------------------------------------------------------------------

    def plan_batches(self, prompts: Sequence[Sequence[int]], sampling: Sampling) -> list[list[int]]:
        """Positions into `prompts`, ordered so that neighbours share work, cut by row count and by
        padded token slots (rows x (longest prompt + max new tokens) <= max_batch_tokens).

        "prefix" order sorts the token sequences themselves, so rows with the same persona and
        template preamble sit together and a batch's shared prefix is encoded once; "length"
        order puts similar lengths together, for the least padding.
        """
        lengths = [len(p) for p in prompts]
        if self.batch_order == "prefix":
            order = sorted(range(len(prompts)), key=lambda i: tuple(prompts[i]))
        elif self.batch_order == "length":
            order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        else:
            order = list(range(len(prompts)))
        batches: list[list[int]] = []
        current: list[int] = []
        for position in order:
            rows = len(current) + 1
            longest = max([lengths[i] for i in current] + [lengths[position]])
            slots = rows * (longest + sampling.max_new_tokens)
            over_tokens = self.max_batch_tokens is not None and slots > self.max_batch_tokens and current
            if current and (rows > self.batch_size or over_tokens):
                batches.append(current)
                current = []
            current.append(position)
        if current:
            batches.append(current)
        return batches

    def _generate(self, prompts: list[list[int]], sampling: Sampling, seeds: Sequence[int | None] = ()) -> list[str]:
        import torch

        started = time.perf_counter()
        device = _input_device(self.model)
        shared = shared_prefix_length(prompts) if self.share_prefixes and self.use_cache and len(prompts) > 1 else 0
        prefix_cache = None
        if shared >= MIN_SHARED_PREFIX:
            padded = self.tokenizer.pad({"input_ids": [p[shared:] for p in prompts]}, padding=True, return_tensors="pt")
            prefix = torch.tensor([prompts[0][:shared]] * len(prompts))
            input_ids = torch.cat([prefix, padded["input_ids"]], dim=1).to(device)
            attention_mask = torch.cat([torch.ones_like(prefix), padded["attention_mask"]], dim=1).to(device)
            prefix_cache = self._cache_for(tuple(prompts[0][:shared]), len(prompts), device)
        else:
            padded = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt")
            input_ids = padded["input_ids"].to(device)
            attention_mask = padded["attention_mask"].to(device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.eos_token_ids,
            "use_cache": self.use_cache,
        }
        if sampling.min_new_tokens:
            kwargs["min_new_tokens"] = sampling.min_new_tokens
        # not the checkpoint's generation_config defaults (base.py); min_p only where transformers samples
        # (greedy and pbt's own per-row sampler take no warpers, and it warns about the flag there)
        kwargs["repetition_penalty"] = NEUTRAL_SAMPLING["repetition_penalty"]
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        elif self.per_row_sampling:
            # greedy decoding over logits the sampler has already reduced to the drawn token
            from transformers import LogitsProcessorList

            row_seeds = [seed if seed is not None else index for index, seed in enumerate(seeds or [None] * len(prompts))]
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                          logits_processor=LogitsProcessorList([PerRowSampler(row_seeds, sampling)]))
        else:
            if seeds and seeds[0] is not None:
                torch.manual_seed(seeds[0])
            # top_k=0 switches top-k off; None would fall back to the generation config's default of 50
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k, min_p=NEUTRAL_SAMPLING["min_p"])
        if prefix_cache is not None:
            kwargs["past_key_values"] = prefix_cache
        with torch.inference_mode(), warnings.catch_warnings():
            # transformers 5.2x renames past_key_values to cache; the old name works from 5.16 on
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_tokens = output[:, input_ids.shape[1]:].tolist()
        texts, generated = [], 0
        for row in new_tokens:
            kept = _until_eos(row, self.eos_token_ids)
            generated += len(kept)
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True).strip())
        width = input_ids.shape[1] + len(new_tokens[0]) if new_tokens else 0
        self.usage.calls += 1
        self.usage.sequences += len(prompts)
        self.usage.prompt_tokens += sum(len(p) for p in prompts)
        self.usage.generated_tokens += generated
        self.usage.padded_tokens += width * len(prompts) - sum(len(p) for p in prompts) - generated
        self.usage.seconds += time.perf_counter() - started
        report_activity(len(prompts), generated)
        log.debug("generate: %d rows x %d prompt tokens, %d new tokens in %.1f s", len(prompts), input_ids.shape[1],
                  generated, time.perf_counter() - started)
        return texts


    def _cache_for(self, prefix: tuple[int, ...], rows: int, device: Any) -> Any:
        """A fresh copy, repeated to `rows`, of the KV cache of `prefix` (encoded once, then kept)."""
        import torch
        from transformers import DynamicCache

        cache = self._prefix_caches.get(prefix)
        if cache is None:
            cache = DynamicCache()
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
                self.model(torch.tensor([prefix], device=device), past_key_values=cache, use_cache=True)
            self._prefix_caches[prefix] = cache
            while len(self._prefix_caches) > PREFIX_CACHE_ENTRIES:
                self._prefix_caches.popitem(last=False)
        else:
            self._prefix_caches.move_to_end(prefix)
        copied = copy.deepcopy(cache)
        copied.batch_repeat_interleave(rows)
        return copied


class AdapterOffGenerator:
    """A PEFT model's base, with the adapter switched off around every call: the same weights in
    memory serve as the evaluated (or trained) model and as its answer extractor
    (docs/method.md §6.1). Wrap a generator of its own (its prefix caches must not mix with the
    adapter's)."""

    def __init__(self, generator: TransformersGenerator) -> None:
        self.generator = generator
        self.usage = generator.usage

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling | Sequence[Sampling]) -> list[str]:
        with self.generator.model.disable_adapter():
            return self.generator.chat(conversations, sampling)

    def describe(self) -> dict[str, Any]:
        info = {**self.generator.describe(), "adapter_switched_off": True}
        resolved = self.generator.resolved
        if resolved is not None:
            info["identity"] = resolved.identity(info.get("chat_template_hash"), adapter_off=True)
        return info

    @classmethod
    def sharing(cls, policy: TransformersGenerator) -> AdapterOffGenerator:
        """The base of `policy`'s model, sharing its weights and tokenizer."""
        return cls(TransformersGenerator(policy.spec, model=policy.model, tokenizer=policy.tokenizer,
                                         batch_size=policy.batch_size, max_batch_tokens=policy.max_batch_tokens,
                                         resolved=policy.resolved))


class PerRowSampler:
    """A logits processor that samples each row with its own random generator.

    It applies temperature, top-k and top-p as transformers' warpers do, draws the next token of
    row i by inverse CDF with one uniform number from generator i (seeded with request i's seed),
    and returns logits that allow only that token, so the greedy step picks it. transformers'
    own sampler draws all rows from one global stream, so a row's tokens depend on its batch.
    It runs after transformers' own processors (the minimum-length rule has already masked the
    end-of-sequence token where it must).
    """

    def __init__(self, seeds: Sequence[int], sampling: Sampling) -> None:
        import torch

        self.sampling = sampling
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float() / self.sampling.temperature
        if self.sampling.top_k > 0:
            kth = torch.topk(logits, min(self.sampling.top_k, logits.shape[-1]))[0][..., -1, None]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.sampling.top_p < 1.0:
            ordered, order = torch.sort(logits, descending=False)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = cumulative <= (1 - self.sampling.top_p)
            drop[..., -1:] = False  # always keep the most likely token
            logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
        cumulative = logits.softmax(dim=-1).cumsum(dim=-1)
        draws = torch.stack([torch.rand(1, generator=g) for g in self.generators]).to(cumulative)
        tokens = torch.searchsorted(cumulative, draws * cumulative[:, -1:], right=True)
        tokens = tokens.clamp_(max=logits.shape[-1] - 1)
        allowed = torch.full_like(scores, float("-inf"))
        return allowed.scatter_(1, tokens.to(scores.device), 0.0)


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own to encode."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    length = 0
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif configured:
        ids.extend(configured)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _until_eos(tokens: list[int], eos_ids: Sequence[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:position]
    return tokens


def _input_device(model: Any) -> Any:
    device = getattr(model, "device", None)
    if device is not None and str(device) != "meta":
        return device
    return next(model.parameters()).device
