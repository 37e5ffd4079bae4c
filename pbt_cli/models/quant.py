"""QuantizationSpec -> transformers' BitsAndBytesConfig (or None when off)."""

from __future__ import annotations

import os
from importlib import util as importlib_util
from typing import Any

from pbt_cli.errors import PbtError
from pbt_cli.models.spec import QuantizationSpec


def bitsandbytes_installed() -> bool:
    return importlib_util.find_spec("bitsandbytes") is not None


def bnb_config(quantization: QuantizationSpec, compute_dtype: Any) -> Any | None:
    """A BitsAndBytesConfig for the spec; `compute_dtype` is the torch dtype used when the spec says "auto"."""
    if not quantization.enabled:
        return None
    if not bitsandbytes_installed():
        raise PbtError(f"--load-in-{'8' if quantization.load_in_8bit else '4'}bit needs bitsandbytes; "
                       "install it with `pip install bitsandbytes`")
    import torch
    from transformers import BitsAndBytesConfig

    if quantization.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    dtype = compute_dtype if quantization.bnb_4bit_compute_dtype == "auto" else getattr(
        torch, quantization.bnb_4bit_compute_dtype)
    extra = {}
    if fsdp_launch():
        # FSDP flattens parameters of one dtype: store the packed 4-bit weights in the compute dtype
        extra["bnb_4bit_quant_storage"] = dtype
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.bnb_4bit_quant_type,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=quantization.bnb_4bit_use_double_quant,
        **extra,
    )


def fsdp_launch() -> bool:
    """Whether this process was started by `accelerate launch` with an FSDP config."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
