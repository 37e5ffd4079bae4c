"""The vLLM backend against a fake `vllm` package that records calls (vLLM cannot be installed here),
plus one real test marked `vllm` for machines that have it."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field

import pytest

from pbt_cli.errors import PbtError
from pbt_cli.models.backends import BackendOptions, GeneratorPool
from pbt_cli.models.backends.base import Sampling
from pbt_cli.models.spec import LoadOptions, ModelSpec, QuantizationSpec


@dataclass
class FakeCompletion:
    text: str
    token_ids: list[int]


@dataclass
class FakeOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]


@dataclass
class FakeLLM:
    kwargs: dict
    calls: list = field(default_factory=list)

    def chat(self, messages, **kwargs):
        self.calls.append({"messages": messages, **kwargs})
        return [FakeOutput([1, 2, 3], [FakeCompletion(f" reply to {m[-1]['content'][:20]} ", [7, 8])])
                for m in messages]

    def get_tokenizer(self):
        return types.SimpleNamespace(chat_template="{{ fake }}")


@pytest.fixture
def fake_vllm(monkeypatch):
    engines: list[FakeLLM] = []
    module = types.ModuleType("vllm")

    def make_llm(**kwargs):
        engines.append(FakeLLM(kwargs))
        return engines[-1]

    module.LLM = make_llm
    module.SamplingParams = lambda **kwargs: dict(kwargs)
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, lora_id, path: ("lora", name, lora_id, path)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    return engines


@pytest.fixture
def adapter_dir(tmp_path, tiny_model_dir):
    folder = tmp_path / "my-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir), "r": 32}))
    return folder


def _pool(**options):
    return GeneratorPool(BackendOptions(backend="vllm", **options))


def test_one_engine_serves_both_agents_and_the_extractor(fake_vllm, tiny_model_dir):
    pool = _pool()
    spec = ModelSpec.parse(str(tiny_model_dir))
    pool.plan([spec, spec, spec])
    agent_a, agent_b, extractor = pool.get(spec), pool.get(spec), pool.get(spec)
    agent_a.chat([[{"role": "user", "content": "Q?"}]], Sampling())
    extractor.chat([[{"role": "user", "content": "x"}, {"role": "assistant", "content": "Final answer:"}]],
                   Sampling(temperature=0))
    assert agent_a is agent_b is extractor
    assert len(fake_vllm) == 1
    assert fake_vllm[0].kwargs["gpu_memory_utilization"] == 0.9
    assert fake_vllm[0].kwargs["model"] == str(tiny_model_dir)


def test_chat_passes_per_conversation_seeded_sampling_and_prefill_flags(fake_vllm, tiny_model_dir):
    pool = _pool()
    generator = pool.get(ModelSpec.parse(str(tiny_model_dir)))
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
    prefilled = [{"role": "user", "content": "extract"}, {"role": "assistant", "content": "Final answer:"}]
    replies = generator.chat([*conversations, prefilled], Sampling(temperature=0.7, max_new_tokens=80,
                                                                   min_new_tokens=8, seed=5))
    assert replies[0] == "reply to question 0" and replies[3] == "reply to Final answer:"
    normal, continued = fake_vllm[0].calls
    assert [p["seed"] for p in normal["sampling_params"]] == [5, 6, 7]  # one seed per conversation
    assert normal["sampling_params"][0] == {"temperature": 0.7, "top_p": 1.0, "max_tokens": 80, "min_tokens": 8,
                                            "seed": 5}
    assert (normal["add_generation_prompt"], normal["continue_final_message"]) == (True, False)
    assert (continued["add_generation_prompt"], continued["continue_final_message"]) == (False, True)
    assert generator.usage.generated_tokens == 8 and generator.usage.prompt_tokens == 12


def test_greedy_sends_temperature_zero_without_seed(fake_vllm, tiny_model_dir):
    generator = _pool().get(ModelSpec.parse(str(tiny_model_dir)))
    generator.chat([[{"role": "user", "content": "q"}]], Sampling(temperature=0.0, max_new_tokens=16, seed=3))
    [params] = fake_vllm[0].calls[0]["sampling_params"]
    assert params["temperature"] == 0.0 and "seed" not in params and "top_k" not in params


def test_lora_adapter_goes_through_a_lora_request_on_the_shared_engine(fake_vllm, tiny_model_dir, adapter_dir):
    pool = _pool()
    base = ModelSpec.parse(str(tiny_model_dir))
    adapted = ModelSpec.parse(str(adapter_dir))
    pool.plan([base, adapted])
    pool.get(adapted).chat([[{"role": "user", "content": "q"}]], Sampling())
    pool.get(base).chat([[{"role": "user", "content": "q"}]], Sampling())
    assert len(fake_vllm) == 1  # the adapter rides on the base model's engine
    engine = fake_vllm[0]
    assert engine.kwargs["enable_lora"] is True and engine.kwargs["max_lora_rank"] == 32
    with_lora, without = engine.calls
    assert with_lora["lora_request"] == ("lora", "my-adapter", 1, str(adapter_dir))
    assert "lora_request" not in without


def test_two_base_models_split_gpu_memory(fake_vllm, tiny_model_dir, tmp_path):
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    pool = _pool(tensor_parallel_size=2)
    a, b = ModelSpec.parse(str(tiny_model_dir)), ModelSpec.parse(str(other))
    pool.plan([a, b])
    pool.get(a).chat([[{"role": "user", "content": "q"}]], Sampling())
    pool.get(b).chat([[{"role": "user", "content": "q"}]], Sampling())
    assert [e.kwargs["gpu_memory_utilization"] for e in fake_vllm] == [0.45, 0.45]
    assert all(e.kwargs["tensor_parallel_size"] == 2 for e in fake_vllm)


def test_quantization_and_options(fake_vllm, tiny_model_dir):
    four_bit = LoadOptions(quantization=QuantizationSpec(load_in_4bit=True))
    pool = _pool(gpu_memory_utilization=0.5, max_model_len=2048)
    pool.get(ModelSpec.parse(str(tiny_model_dir), load=four_bit)).chat([[{"role": "user", "content": "q"}]], Sampling())
    kwargs = fake_vllm[0].kwargs
    assert kwargs["quantization"] == "bitsandbytes"
    assert kwargs["gpu_memory_utilization"] == 0.5 and kwargs["max_model_len"] == 2048
    eight_bit = LoadOptions(quantization=QuantizationSpec(load_in_8bit=True))
    with pytest.raises(PbtError, match="8-bit"):
        _pool().get(ModelSpec.parse(str(tiny_model_dir), load=eight_bit)).chat([[{"role": "user", "content": "q"}]],
                                                                               Sampling())


def test_missing_vllm_is_one_line(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    generator = _pool().get(ModelSpec.parse(str(tiny_model_dir)))
    with pytest.raises(PbtError, match=r"pip install 'pbt_cli\[vllm\]'"):
        generator.chat([[{"role": "user", "content": "q"}]], Sampling())


@pytest.mark.vllm
def test_real_vllm_generates(tiny_model_dir):  # pragma: no cover - runs only where vllm is installed
    generator = _pool(gpu_memory_utilization=0.3).get(ModelSpec.parse(str(tiny_model_dir)))
    replies = generator.chat([[{"role": "user", "content": "What is the capital of France?"}]] * 2,
                             Sampling(temperature=0.0, max_new_tokens=4))
    assert len(replies) == 2 and replies[0] == replies[1]
