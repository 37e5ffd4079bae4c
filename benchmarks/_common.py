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
