"""Does the original PBT code's DPO start from its SFT adapter? A check on a tiny random Llama (issue 26, item 1).

The original release trains SFT with TRL's SFTTrainer and a `peft_config`, saves the LoRA adapter, and then
starts DPO by loading that adapter folder with `AutoModelForCausalLM.from_pretrained` and handing DPOTrainer a
second `peft_config`. This script replays those calls with the library versions the original pinned
(transformers 4.43.1, TRL 0.8.3, PEFT 0.10.0) on CPU, in full precision (the original loaded the base in
8-bit, which only adds `prepare_model_for_kbit_training` and does not touch the adapter weights), and reports:

- whether `from_pretrained` on the SFT folder attached the SFT adapter (its LoRA weights as saved);
- whether the model DPOTrainer trains still holds them when training begins (checked in a callback at the
  first step, before any optimiser update);
- how far the policy's logits at that point are from the base model's and from the SFT model's.

It needs its own environment, never pbt's (pbt requires newer libraries):

    python3 -m venv /tmp/pbt-old && /tmp/pbt-old/bin/pip install torch==2.13.0 \
        transformers==4.43.1 trl==0.8.3 peft==0.10.0 "accelerate<1.0" "datasets<3" "numpy<2"
    /tmp/pbt-old/bin/python benchmarks/original_dpo_start.py [--workdir DIR]

The last line printed is a JSON summary; docs/method.md §8.7 records the result.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

_CORPUS = [
    "What is the capital of Australia? The capital of Australia is Canberra.",
    "I am confident the answer is Sydney, because it is the largest city.",
    "No, Canberra was chosen as a compromise between Sydney and Melbourne.",
    "Who wrote Hamlet? William Shakespeare wrote Hamlet around 1600.",
    "Which planet is closest to the sun? Mercury is the closest planet.",
]
# Same wording as the tiny template of tests/conftest.py: role headers and an end-of-turn token.
_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# The original's LoRA settings: r 16, alpha 32, dropout 0.05, and its target list, of which only
# q_proj, k_proj and v_proj exist in Llama.
_TARGETS = ["q_proj", "v_proj", "k_proj", "out_proj", "fc_in", "fc_out", "wte"]


def build_base(folder: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(_CORPUS, trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    tokenizer.chat_template = _TEMPLATE
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=_TARGETS, bias="none",
                      task_type="CAUSAL_LM")


def train_sft(base: Path, out: Path) -> Path:
    """SFT as the original ran it: a text field, default language-model loss, a LoRA from peft_config."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token
    texts = [{"text": line} for line in _CORPUS * 4]
    args = TrainingArguments(output_dir=str(out), max_steps=6, save_steps=6, per_device_train_batch_size=4,
                             learning_rate=5e-2, report_to=[], use_cpu=True, seed=42, logging_steps=100)
    model = AutoModelForCausalLM.from_pretrained(base)
    trainer = SFTTrainer(model, dataset_text_field="text", tokenizer=tokenizer, train_dataset=Dataset.from_list(texts),
                         max_seq_length=128, packing=False, peft_config=lora_config(), args=args)
    trainer.train()
    return out / "checkpoint-6"


def lora_tensors(model) -> dict:
    """The LoRA A/B weights of the model's adapter, keyed by module path without the adapter name."""
    found = {}
    for name, tensor in model.state_dict().items():
        if ".lora_A." in name or ".lora_B." in name:
            key = name.replace("base_model.model.", "").replace(".default", "")
            found[key] = tensor.detach().float().clone()
    return found


def saved_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    saved = load_file(str(folder / "adapter_model.safetensors"))
    return {name.replace("base_model.model.", ""): tensor.float() for name, tensor in saved.items()}


def compare(reference: dict, candidate: dict) -> dict:
    shared = sorted(set(reference) & set(candidate))
    diffs = [float((reference[k] - candidate[k]).abs().max()) for k in shared]
    b_keys = [k for k in shared if ".lora_B." in k]
    return {
        "tensors_compared": len(shared),
        "max_abs_difference": max(diffs) if diffs else None,
        "identical": bool(shared) and max(diffs) == 0.0,
        "candidate_lora_B_all_zero": all(float(candidate[k].abs().max()) == 0.0 for k in b_keys),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where to build the model (default: a temp dir)")
    workdir = parser.parse_args().workdir or Path(tempfile.mkdtemp(prefix="pbt-original-dpo-"))

    import peft
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, TrainingArguments
    from trl import DPOTrainer

    base_dir, sft_runs = workdir / "base", workdir / "sft"
    build_base(base_dir)
    sft_dir = train_sft(base_dir, sft_runs)
    sft_saved = saved_tensors(sft_dir)

    # The original's DPO start: the SFT checkpoint folder given as the model name.
    model = AutoModelForCausalLM.from_pretrained(sft_dir)
    loaded = lora_tensors(model)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.pad_token = tokenizer.eos_token
    probe = tokenizer("What is the capital of Australia? Canberra.", return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        sft_logits = model(**probe).logits
        base_logits = AutoModelForCausalLM.from_pretrained(base_dir)(**probe).logits

    seen = {}

    class FirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if "weights" in seen:
                return
            seen["weights"] = lora_tensors(model)
            was_training = model.training
            model.eval()
            with torch.no_grad():
                seen["logits"] = model(**probe).logits
            model.train(was_training)

    pairs = [{"prompt": "Q: capital of Australia?", "chosen": " Canberra.", "rejected": " Sydney."}] * 4
    args = TrainingArguments(output_dir=str(workdir / "dpo"), max_steps=1, per_device_train_batch_size=2,
                             learning_rate=5e-4, report_to=[], use_cpu=True, seed=42, remove_unused_columns=False,
                             logging_steps=100, save_strategy="no")
    trainer = DPOTrainer(model, None, beta=0.1, train_dataset=Dataset.from_list(pairs), tokenizer=tokenizer,
                         peft_config=lora_config(), args=args, max_prompt_length=64, max_length=128,
                         callbacks=[FirstStep()])
    trainer.train()

    summary = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "trl": trl.__version__, "peft": peft.__version__},
        "model_class_after_from_pretrained": type(model).__name__,
        "from_pretrained_attached_sft_adapter": compare(sft_saved, loaded),
        "dpo_first_step_vs_sft_adapter": compare(sft_saved, seen["weights"]),
        "dpo_first_step_logits_max_abs_diff_vs_base": float((seen["logits"] - base_logits).abs().max()),
        "dpo_first_step_logits_max_abs_diff_vs_sft": float((seen["logits"] - sft_logits).abs().max()),
        "sft_logits_max_abs_diff_vs_base": float((sft_logits - base_logits).abs().max()),
    }
    survived = summary["dpo_first_step_vs_sft_adapter"]["identical"]
    summary["verdict"] = ("DPO starts from the SFT adapter" if survived
                          else "DPO starts from the base model with a fresh LoRA: the SFT adapter is discarded")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
