"""Backends by name, loaded lazily (`module:Class`), and a pool that loads each model once.

A pipeline asks the pool for a generator per role (agent A, agent B, extractor, judge); roles that
name the same model with the same options get the same generator, so a model that plays both
agents and the extractor is loaded once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pbt_cli.errors import PbtError, did_you_mean, require_at_least
from pbt_cli.models.backends.base import GenerationUsage, Generator, Sampling
from pbt_cli.models.spec import ModelSpec

BACKENDS: dict[str, str] = {
    "transformers": "pbt_cli.models.backends.hf:TransformersGenerator",
    "vllm": "pbt_cli.models.backends.vllm:VLLMGenerator",
}
ALIASES = {"hf": "transformers"}

__all__ = ["BACKENDS", "BackendOptions", "Generator", "GenerationUsage", "GeneratorPool", "Sampling"]


@dataclass(frozen=True)
class BackendOptions:
    """Throughput settings, shared by every generator of a command."""

    backend: str = "transformers"
    batch_size: int = 64
    max_batch_tokens: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None  # None: split 0.9 between the engines a command needs
    max_model_len: int | None = None
    # served models (`openai:MODEL_ID[@BASE_URL]`, pbt_cli/models/backends/served.py)
    base_url: str | None = None  # None: $OPENAI_BASE_URL, else http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # the name of the variable that holds the key, never the key
    max_concurrency: int = 64
    request_timeout: float = 600.0
    max_retries: int = 5

    def __post_init__(self) -> None:
        name = ALIASES.get(self.backend, self.backend)
        if name not in BACKENDS:
            raise PbtError(f"unknown backend {self.backend!r}{did_you_mean(self.backend, BACKENDS)}; "
                           f"known: {', '.join(BACKENDS)}")
        object.__setattr__(self, "backend", name)
        require_at_least("--batch-size", self.batch_size)
        require_at_least("--max-batch-tokens", self.max_batch_tokens)
        require_at_least("--max-concurrency", self.max_concurrency)
        require_at_least("--max-retries", self.max_retries, 0)
        if self.request_timeout <= 0:
            raise PbtError(f"--request-timeout must be above 0 seconds, got {self.request_timeout:g}")


# the extra's name on an installed pbt_cli; in a clone, `pip install -e '.[vllm]'` is the same thing
VLLM_MISSING = "the vllm backend needs vLLM: pip install 'pbt_cli[vllm]' (in a clone: pip install -e '.[vllm]')"


def _backend_class(name: str) -> Any:
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if name == "vllm":
            raise PbtError(VLLM_MISSING) from None
        raise PbtError(f"the {name} backend cannot be imported ({exc})") from None
    return getattr(module, class_name)


class GeneratorPool:
    """One generator per distinct model spec; `usage()` sums their counters."""

    def __init__(self, options: BackendOptions | None = None, preset: dict[Any, Generator] | None = None) -> None:
        self.options = options or BackendOptions()
        self._generators: dict[Any, Generator] = dict(preset or {})
        self._planned: list[ModelSpec] = []

    def plan(self, specs: list[ModelSpec]) -> None:
        """Tell the pool every model the command will use (vLLM splits GPU memory between engines)."""
        for spec in specs:
            if spec.cache_key() not in {s.cache_key() for s in self._planned}:
                self._planned.append(spec)

    def get(self, spec: ModelSpec) -> Generator:
        key = spec.cache_key()
        if key in self._generators:
            return self._generators[key]
        if spec.name in self._generators:  # tests preset generators by plain name
            return self._generators[spec.name]
        if spec.is_served:
            from pbt_cli.models.backends.served import ServedGenerator

            self._generators[key] = ServedGenerator(spec, self.options)
            return self._generators[key]
        cls = _backend_class(self.options.backend)
        if self.options.backend == "vllm":
            generator = cls.for_pool(spec, self.options, self)
        else:
            generator = cls(spec, batch_size=self.options.batch_size, max_batch_tokens=self.options.max_batch_tokens)
        self._generators[key] = generator
        return generator

    def base_of(self, spec: ModelSpec) -> Generator:
        """The default answer extractor of an evaluated model: its base (docs/method.md §6.1).

        An adapter's base is the same weights with the adapter switched off (transformers: no second
        copy in memory; vLLM: the engine's base without a LoRA request); a full model, and a served
        model, is its own base.
        """
        if spec.name in self._generators or spec.is_served:
            return self.get(spec)
        from pbt_cli.models.resolve import resolve

        resolved = resolve(spec)
        if resolved.kind != "adapter":
            return self.get(spec)
        key = ("base of", spec.cache_key())
        if key not in self._generators:
            if self.options.backend == "transformers":
                from pbt_cli.models.backends.hf import AdapterOffGenerator

                self._generators[key] = AdapterOffGenerator.sharing(self.get(spec))  # type: ignore[arg-type]
            else:
                base = ModelSpec(name=resolved.base, revision=resolved.base_revision, load=spec.load)
                self._generators[key] = self.get(base)
        return self._generators[key]

    def generators(self) -> list[Generator]:
        unique: list[Generator] = []
        for generator in self._generators.values():
            if all(generator is not seen for seen in unique):
                unique.append(generator)
        return unique

    def usage(self) -> GenerationUsage:
        total = GenerationUsage()
        for generator in self.generators():
            total.add(generator.usage)
        return total
