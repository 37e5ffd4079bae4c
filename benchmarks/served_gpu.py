"""Benchmark and check: pbt's served-model backend against `transformers serve` on a GPU, with continuous
batching, on a randomly initialised model (no download, no network).

    python benchmarks/served_gpu.py                                  # Llama-1B shape, bf16, cuda, CB on
    python benchmarks/served_gpu.py --shape tiny --device cpu --requests 16 --new-tokens 8 --ays-questions 2 \\
        --no-continuous-batching                                     # the CPU smoke test

It saves a model of the chosen shape with a word-level tokenizer and a chat template to a folder,
starts `transformers serve` on it (127.0.0.1), then measures (1) `--requests` chat requests of about
`--prompt-words` words each, greedy, exactly `--new-tokens` new tokens each (min = max), through pbt's
ServedGenerator with `--concurrency` in flight: requests/s and generated tokens/s; and (2) `pbt eval ays`
end to end through the server on `--ays-questions` questions (the replies are noise: the figure is
the pipeline's pace). `transformers serve` reads the sampling settings of its continuous-batching
manager from the first request it gets (a TODO in transformers 5.24), so with it on, every request
decodes as the first did: greedy, from pbt's start-up check.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

SHAPES = {
    "llama-3.1-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192),
    # Llama-3.2-1B's shape: big enough to keep a GPU busy, small enough to save and load in seconds
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192),
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048),
}
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} t1 {% endfor %}"
            "{% if add_generation_prompt %}<assistant> {% endif %}")


def save_random_model(folder: Path, shape: str, device: str, dtype: str) -> Path:
    """A randomly initialised Llama of `shape` and a word-level tokenizer (tokens t0..tN) with a chat template."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    size = SHAPES[shape]
    # the template's role words are unknown to this vocabulary and read as t0; the ids are what count
    backend = Tokenizer(models.WordLevel({f"t{i}": i for i in range(size["vocab_size"])}, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="t0", eos_token="t1", bos_token="t2",
                                        unk_token="t0")
    tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**size, bos_token_id=2, eos_token_id=1, pad_token_id=0,
                                             tie_word_embeddings=False)).to(getattr(torch, dtype))
    model.generation_config.eos_token_id = 1
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-1b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--prompt-words", type=int, default=300, help="about a level-3 dialogue view")
    parser.add_argument("--new-tokens", type=int, default=80, help="pbt's default max new tokens per turn")
    parser.add_argument("--concurrency", type=int, default=64, help="pbt's default --max-concurrency")
    parser.add_argument("--continuous-batching", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ays-questions", type=int, default=64)
    parser.add_argument("--ays-max-new-tokens", type=int, default=80)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    import random

    from pbt_cli.models.backends import BackendOptions
    from pbt_cli.models.backends.base import Sampling
    from pbt_cli.models.backends.served import ServedGenerator
    from pbt_cli.models.spec import ModelSpec

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pbt-served-gpu-"))
    workdir.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    started = time.perf_counter()
    folder = save_random_model(workdir / f"random-{args.shape}", args.shape, args.device, args.dtype)
    saved_s = time.perf_counter() - started
    from _common import start_transformers_serve  # this folder: on sys.path when run as a script

    process, url = start_transformers_serve(folder, workdir / "serve.log", device=args.device, dtype=args.dtype,
                                            continuous_batching=args.continuous_batching,
                                            timeout=args.start_timeout)
    server_s = time.perf_counter() - started - saved_s
    spec = f"openai:{folder}@{url}"
    try:
        generator = ServedGenerator(ModelSpec.parse(spec), BackendOptions(max_concurrency=args.concurrency))
        generator.start()
        rng = random.Random(0)
        vocab = SHAPES[args.shape]["vocab_size"]
        conversations = [[{"role": "user", "content": " ".join(f"t{rng.randrange(3, vocab)}"
                                                             for _ in range(args.prompt_words))}]
                         for _ in range(args.requests)]
        fixed = Sampling(temperature=0.0, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
        generator.chat(conversations[: min(8, len(conversations))], fixed)  # warm-up: kernels, CB manager
        before = generator.usage.generated_tokens
        began = time.perf_counter()
        generator.chat(conversations, fixed)
        chat_s = time.perf_counter() - began
        tokens = generator.usage.generated_tokens - before
        throughput = {"requests": args.requests, "seconds": chat_s, "requests_per_s": args.requests / chat_s,
                      "generated_tokens": tokens, "tokens_per_s": tokens / chat_s}

        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pbt_cli", "-q", "eval", "ays", "--model", spec, "--questions",
                               "embedded:validation", "--limit", str(args.ays_questions), "--max-new-tokens",
                               str(args.ays_max_new_tokens), "--min-new-tokens", str(min(8, args.ays_max_new_tokens)),
                               "--out",
                               str(workdir / "results"), "--overwrite", "--max-concurrency", str(args.concurrency)],
                              capture_output=True, text=True)
        ays_s = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"pbt eval ays through the server failed ({done.returncode}):\n{done.stderr[-3000:]}")
        ays = {"questions": args.ays_questions, "seconds": ays_s, "questions_per_s": args.ays_questions / ays_s}
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()

    device_name = args.device
    if args.device.startswith("cuda"):
        import torch

        device_name = torch.cuda.get_device_name(0)
    summary = {"benchmark": "served-gpu", "shape": args.shape, "device": device_name, "dtype": args.dtype,
               "continuous_batching": args.continuous_batching, "concurrency": args.concurrency,
               "prompt_words": args.prompt_words, "new_tokens": args.new_tokens, "chat": throughput, "ays": ays,
               "model_saved_s": saved_s, "server_ready_s": server_s}
    table = Table(title=f"transformers serve on {device_name}: {args.shape} {args.dtype}, continuous batching "
                        f"{'on' if args.continuous_batching else 'off'}, {args.concurrency} in flight")
    for column in ("measure", "count", "seconds", "per second"):
        table.add_column(column, justify="right")
    table.add_row("chat requests", str(args.requests), f"{chat_s:.1f}", f"{throughput['requests_per_s']:.1f}")
    table.add_row("generated tokens", str(tokens), f"{chat_s:.1f}", f"{throughput['tokens_per_s']:.0f}")
    table.add_row("pbt eval ays questions", str(args.ays_questions), f"{ays_s:.1f}", f"{ays['questions_per_s']:.2f}")
    console.print(table)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
