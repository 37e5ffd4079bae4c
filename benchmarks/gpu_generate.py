"""Benchmark on a CUDA GPU: generated tokens/s of pbt's transformers backend at batch 1 and at the batch
pbt uses, for a randomly initialised model with Llama-3.1-8B's shape (no download, no network).

    python benchmarks/gpu_generate.py                      # Llama-3.1-8B shape, bf16, on cuda
    python benchmarks/gpu_generate.py --shape tiny --device cpu   # a smoke test anywhere

Every row generates exactly `--new-tokens` tokens (min = max new tokens), from prompts of
`--prompt-tokens` random token ids, so the numbers measure the backend, not the text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

SHAPES = {
    # Llama-3.1-8B-Instruct's config.json, the parts that set the compute
    "llama-3.1-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                         rope_theta=500000.0, rms_norm_eps=1e-5),
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048),
}


def word_level_tokenizer(vocab_size: int) -> Any:
    """A tokenizer with the right vocabulary size and pad/eos ids, built offline."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                        pad_token="t0", eos_token="t1", unk_token="t0")
    tokenizer.padding_side = "left"
    return tokenizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prompt-tokens", type=int, default=300, help="about a level-3 dialogue view")
    parser.add_argument("--new-tokens", type=int, default=80, help="pbt's default max new tokens per turn")
    parser.add_argument("--batch-size", type=int, default=64, help="pbt's default --batch-size")
    parser.add_argument("--rows", type=int, default=256, help="conversations in the batched measurement")
    args = parser.parse_args(argv)

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pbt_cli.models.backends.base import Sampling
    from pbt_cli.models.backends.hf import TransformersGenerator
    from pbt_cli.models.spec import ModelSpec

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here; use --device cpu --shape tiny for a smoke test", file=sys.stderr)
        return {}
    dtype = getattr(torch, args.dtype)
    shape = SHAPES[args.shape]
    with torch.device(args.device):
        model = LlamaForCausalLM(LlamaConfig(**shape, bos_token_id=2, eos_token_id=1, pad_token_id=0)).to(dtype)
    model.eval()
    tokenizer = word_level_tokenizer(shape["vocab_size"])
    generator = TransformersGenerator(ModelSpec("random-" + args.shape), model=model, tokenizer=tokenizer,
                                      batch_size=args.batch_size)
    generator.share_prefixes = False  # random prompts share nothing anyway
    # min = max new tokens: eos is suppressed, so every row makes exactly --new-tokens tokens
    fixed = Sampling(temperature=0.7, top_p=1.0, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                     seed=0)
    generator_prompts = torch.randint(3, shape["vocab_size"], (args.rows, args.prompt_tokens)).tolist()

    def measure(prompts: list[list[int]], batch_size: int) -> dict[str, float]:
        generator.batch_size = batch_size
        generator._generate(prompts[:1], fixed)  # warm up kernels
        if args.device == "cuda":
            torch.cuda.synchronize()
        before = generator.usage.generated_tokens
        started = time.perf_counter()
        for start in range(0, len(prompts), batch_size):
            generator._generate(prompts[start: start + batch_size], fixed)
        if args.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        tokens = generator.usage.generated_tokens - before
        return {"rows": len(prompts), "batch_size": batch_size, "generated_tokens": tokens, "seconds": seconds,
                "tokens_per_s": tokens / seconds}

    single = measure(generator_prompts[:4], 1)
    batched = measure(generator_prompts, args.batch_size)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    summary = {"benchmark": "gpu-generate", "shape": args.shape, "device": device_name, "dtype": args.dtype,
               "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "batch_1": single,
               "batched": batched, "speedup": batched["tokens_per_s"] / single["tokens_per_s"],
               "torch": torch.__version__}
    print(f"{device_name}: batch 1 {single['tokens_per_s']:.0f} tok/s, batch {args.batch_size} "
          f"{batched['tokens_per_s']:.0f} tok/s ({summary['speedup']:.1f}x)", file=sys.stderr)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
