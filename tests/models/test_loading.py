import pytest

from pbt_cli.errors import PbtError
from pbt_cli.models.backends.base import Sampling
from pbt_cli.models.backends.hf import TransformersGenerator
from pbt_cli.models.chat import encode, leading_bos_count, render, require_chat_template
from pbt_cli.models.loading import apply_pad_policy, load_model, load_tokenizer
from pbt_cli.models.spec import LoadOptions, ModelSpec, QuantizationSpec

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Final answer:"}],
    [{"role": "user", "content": "A much longer question about rivers, planets and the sun, asked slowly?"}],
]


def test_tokenizer_pads_left_and_gets_a_pad_token(tiny_model_dir):
    tokenizer = load_tokenizer(ModelSpec.parse(str(tiny_model_dir)))
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None  # the tiny vocabulary has no pad, so unk is used
    assert tokenizer.pad_token == tokenizer.unk_token


def test_pad_policy_prefers_unused_token_then_unk_then_eos():
    class FakeTokenizer:
        def __init__(self, vocab, unk=None, eos="</s>"):
            self.pad_token, self.unk_token, self.eos_token, self.name_or_path = None, unk, eos, "fake"
            self._vocab = vocab

        def get_vocab(self):
            return self._vocab

    llama = FakeTokenizer({"<|finetune_right_pad_id|>": 5}, unk=None, eos="<|eot_id|>")
    assert apply_pad_policy(llama) == "unused-token" and llama.pad_token == "<|finetune_right_pad_id|>"
    with_unk = FakeTokenizer({}, unk="<unk>")
    assert apply_pad_policy(with_unk) == "unk" and with_unk.pad_token == "<unk>"
    bare = FakeTokenizer({})
    assert apply_pad_policy(bare) == "eos" and bare.pad_token == "</s>"


def test_chat_template_override_and_missing_template(tiny_model_no_template_dir, tmp_path):
    spec = ModelSpec.parse(str(tiny_model_no_template_dir))
    tokenizer = load_tokenizer(spec)
    with pytest.raises(PbtError, match="--chat-template"):
        require_chat_template(tokenizer, spec.name)
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    tokenizer = load_tokenizer(ModelSpec.parse(str(tiny_model_no_template_dir), chat_template=template))
    assert render(tokenizer, CONVERSATIONS[0]).startswith("[user] What is")


def test_render_has_exactly_one_bos_and_continues_prefill(tiny_model_dir):
    tokenizer = load_tokenizer(ModelSpec.parse(str(tiny_model_dir)))
    text = render(tokenizer, CONVERSATIONS[0])
    assert text.endswith("<|assistant|>\n")
    assert leading_bos_count(encode(tokenizer, text), tokenizer.bos_token_id) == 1
    prefilled = render(tokenizer, CONVERSATIONS[1])
    assert prefilled.endswith("Final answer:")  # continued, no end-of-turn after the prefix


def test_model_loads_fp32_on_cpu(tiny_model_dir):
    import torch

    model = load_model(ModelSpec.parse(str(tiny_model_dir), load=LoadOptions(dtype="float32", device_map="auto")))
    assert model.dtype == torch.float32
    assert model.device.type == "cpu"


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_dtype_on_cpu_is_bf16_only_where_native_and_never_for_training(monkeypatch, native_bf16):
    import torch

    from pbt_cli.models import loading

    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: native_bf16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    auto = LoadOptions(dtype="auto")
    assert loading.torch_dtype(auto) == (torch.bfloat16 if native_bf16 else torch.float32)
    assert loading.torch_dtype(auto, training=True) == torch.float32
    assert loading.torch_dtype(LoadOptions(dtype="float16")) == torch.float16


def test_model_loads_in_4bit_nf4_on_cpu(tiny_model_dir):
    bnb = pytest.importorskip("bitsandbytes")
    load = LoadOptions(quantization=QuantizationSpec(load_in_4bit=True, bnb_4bit_quant_type="nf4"))
    model = load_model(ModelSpec.parse(str(tiny_model_dir), load=load))
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit)
    assert layer.weight.quant_state.quant_type == "nf4"


FP32 = LoadOptions(dtype="float32")  # exact comparisons need exact arithmetic


def test_transformers_backend_batches_and_matches_one_by_one(tiny_model_dir):
    generator = TransformersGenerator(ModelSpec.parse(str(tiny_model_dir), load=FP32), batch_size=8)
    greedy = Sampling(temperature=0.0, max_new_tokens=6)
    batched = generator.chat(CONVERSATIONS, greedy)
    assert generator.usage.calls == 1 and generator.usage.sequences == 3
    single = [generator.chat([conversation], greedy)[0] for conversation in CONVERSATIONS]
    assert batched == single
    assert generator.usage.generated_tokens > 0


def test_shared_prefix_is_encoded_once_and_changes_no_reply(tiny_model_dir):
    from pbt_cli.data.prompts import extraction_conversation

    conversations = [extraction_conversation(f"Question {i}?", reply) for i, reply in
                     enumerate(["It is Paris.", "I agree with you.", "No, it is Rome, I am certain."])]
    greedy = Sampling(temperature=0.0, max_new_tokens=6)
    shared = TransformersGenerator(ModelSpec.parse(str(tiny_model_dir), load=FP32), batch_size=8)
    plain = TransformersGenerator(ModelSpec.parse(str(tiny_model_dir), load=FP32), batch_size=8)
    plain.share_prefixes = False
    assert shared.chat(conversations, greedy) == plain.chat(conversations, greedy)
    assert len(shared._prefix_caches) == 1  # the worked examples, encoded once
    [prefix] = shared._prefix_caches
    assert len(prefix) >= 32
    shared.chat(conversations, greedy)
    assert len(shared._prefix_caches) == 1  # reused, not encoded again


def test_sampled_generation_is_reproducible_with_a_seed(tiny_model_dir):
    generator = TransformersGenerator(ModelSpec.parse(str(tiny_model_dir), load=FP32), batch_size=8)
    sampled = Sampling(temperature=1.0, max_new_tokens=8, min_new_tokens=8, seed=3)
    first = generator.chat(CONVERSATIONS, sampled)
    assert first == generator.chat(CONVERSATIONS, sampled)
    assert first != generator.chat(CONVERSATIONS, sampled.with_seed(4))


def test_batches_are_cut_by_count_and_by_tokens(tiny_model_dir):
    generator = TransformersGenerator(ModelSpec.parse(str(tiny_model_dir)), batch_size=2, max_batch_tokens=100)
    generator.batch_order = "length"
    prompts = [[7] * n for n in (10, 50, 20, 5, 5)]
    plan = generator.plan_batches(prompts, Sampling(max_new_tokens=10))
    assert plan[0] == [1]  # 2 x (50 + 10) = 120 > 100 tokens: the longest goes alone
    assert all(len(batch) <= 2 for batch in plan)
    assert sorted(i for batch in plan for i in batch) == [0, 1, 2, 3, 4]


def test_prefix_order_puts_prompts_with_a_shared_start_together(tiny_model_dir):
    generator = TransformersGenerator(ModelSpec.parse(str(tiny_model_dir)), batch_size=2)
    prompts = [[1, 2, 9], [5, 6, 7], [1, 2, 3], [5, 6, 8]]
    plan = generator.plan_batches(prompts, Sampling(max_new_tokens=4))
    assert sorted(map(sorted, plan)) == [[0, 2], [1, 3]]  # [1, 2, ...] together, [5, 6, ...] together


def test_dynamic_int8_puts_every_linear_layer_in_int8_and_still_generates(tiny_model_dir):
    spec = ModelSpec.parse(str(tiny_model_dir), load=LoadOptions(dynamic_int8=True, device_map="cpu"))
    generator = TransformersGenerator(spec)
    import torch

    linear = [m for m in generator.model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in generator.model.modules() if "quantized.dynamic" in type(m).__module__
                 and type(m).__name__ == "Linear"]
    assert not linear and len(quantized) == 2 * 7 + 1  # every projection of both layers, and lm_head
    [reply] = generator.chat([[{"role": "user", "content": "Paris?"}]], Sampling(temperature=0.0, max_new_tokens=3))
    assert isinstance(reply, str)
    assert generator.describe()["quantization"] == "dynamic-int8"


@pytest.mark.parametrize(("load", "message"), [
    ({"dynamic_int8": True, "quantization": QuantizationSpec(load_in_8bit=True)}, "exclusive"),
    ({"dynamic_int8": True, "dtype": "bfloat16"}, "float32"),
    ({"dynamic_int8": True, "device_map": "cuda"}, "CPU inference path"),
])
def test_dynamic_int8_refusals(load, message):
    with pytest.raises(PbtError, match=message):
        LoadOptions(**load)
