"""Cards: the `README.md` of every artifact folder, in the Hugging Face Hub's format.

A card is YAML metadata (written by huggingface_hub's `DatasetCardData` / `ModelCardData`, so the
Hub reads it) followed by what a reader needs: what the folder holds, where it came from (from its
manifest), and how to open it with other tools. Cards are built only from manifests and counts, so
rerunning a stage writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PBT_URL = "https://arxiv.org/abs/2410.14596"
CITATION = """@inproceedings{stengeleskin2025persuasion,
  title     = {Teaching Models to Balance Resisting and Accepting Persuasion},
  author    = {Stengel-Eskin, Elias and Hase, Peter and Bansal, Mohit},
  booktitle = {Proceedings of NAACL},
  year      = {2025},
  url       = {https://arxiv.org/abs/2410.14596}
}"""


def _card_text(data: Any, body: str) -> str:
    return f"---\n{data.to_yaml().strip()}\n---\n\n{body.strip()}\n"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def dataset_card_text(manifest: dict[str, Any], pairs_manifest: dict[str, Any] | None = None) -> str:
    """The card of a `pbt preprocess` folder."""
    from huggingface_hub import DatasetCardData

    from pbt_cli.pipeline.preprocess import HUB_SPLITS, split_file

    files = manifest.get("files") or {}
    data = DatasetCardData(
        tags=["pbt", "persuasion", "preference", "dpo" if manifest.get("format") == "dpo" else "sft"],
        language=["en"],
        configs=[{"config_name": "default",
                  "data_files": [{"split": HUB_SPLITS[split], "path": files[split]} for split in HUB_SPLITS
                                 if split in files]}],
    )
    tokenizer = manifest.get("tokenizer") or {}
    kinds = manifest.get("kinds") or {}
    rows = [[HUB_SPLITS.get(split, split), count, kinds.get(split, {}).get("resist", 0),
             kinds.get(split, {}).get("accept", 0), kinds.get(split, {}).get("none", 0)]
            for split, count in (manifest.get("counts") or {}).items()]
    columns = ("pair_id, tree_id, kind (resist/accept/none), label, question, gold_aliases, persuader_answer, "
               "responder_previous_answer, prompt (chat messages), prompt_text, prompt_tokens, and "
               + ("completion (one assistant message), completion_text, completion_tokens"
                  if manifest.get("format") == "sft" else
                  "chosen and rejected (one assistant message each), chosen_text, rejected_text, chosen_tokens, "
                  "rejected_tokens"))
    settings = manifest.get("settings") or {}
    held_out = ("resist and accept pairs cut to equal counts" if settings.get("balance_eval", True) else
                "every held-out resist and accept pair, not cut to equal counts (`--no-balance-eval`)")
    source = (pairs_manifest or {}).get("config", {}).get("trees") if pairs_manifest else None
    body = f"""
# PBT preference data ({manifest.get('format')}, mix {manifest.get('mix')})

Persuasion-Balanced Training data made by the `pbt` command-line tool (`pbt preprocess`), after
"Teaching Models to Balance Resisting and Accepting Persuasion" ([arXiv:2410.14596]({PBT_URL})).
Each row is a persuasion dialogue from two-agent trees: `resist` rows reward keeping a correct answer
against a wrong persuader, `accept` rows reward taking a correct answer from a right one. The
`validation` and `test` splits are the flipflop evaluation sets (label `flip_correct_to_incorrect`
for resist, `flip_incorrect_to_correct` for accept), {held_out}.

{_table(["split", "rows", "resist", "accept", "no kind"], rows)}

- Rendered for the tokenizer of `{tokenizer.get('name')}` (revision {tokenizer.get('revision') or 'default'},
  chat-template hash `{tokenizer.get('chat_template_hash')}`); text columns show exactly what that model sees.
- Made from the pairs with manifest hash `{settings.get('pairs_manifest')}`{f' (trees: `{source}`)' if source else ''};
  mix `{manifest.get('mix')}`, balance {settings.get('balance', True)}, limit {settings.get('limit')},
  max length {settings.get('max_length')}, max prompt length {settings.get('max_prompt_length')}, seed {settings.get('seed')}.
- Dropped as too long: {', '.join(f'{k.replace("_", " ")} {v}' for k, v in (manifest.get('dropped') or {}).items())}.
- Columns: {columns}.

## Load it

```python
from datasets import load_dataset
data = load_dataset("path/to/this/folder")      # or the Hub repository id
print(data["train"][0]["prompt"])
```

TRL's `DPOTrainer` / `SFTTrainer` take the `train` split as it is (conversational
{'prompt/chosen/rejected' if manifest.get('format') == 'dpo' else 'prompt/completion'} format).
`manifest.json` records everything above; the files are {', '.join(f'`{split_file(s)}`' for s in files)}.

## Citation

```bibtex
{CITATION}
```
"""
    return _card_text(data, body)


def write_dataset_card(folder: Path, manifest: dict[str, Any], pairs_manifest: dict[str, Any] | None = None) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(dataset_card_text(manifest, pairs_manifest), encoding="utf-8")
    return path


# --- model cards (adapters from `pbt sft` / `pbt dpo`, merged models from `pbt export`) ----------------

STAGE_WHAT = {
    "sft": "a LoRA adapter from supervised fine-tuning on the preferred responses",
    "dpo": "a LoRA adapter from DPO on resist/accept preference pairs, continuing the SFT adapter",
    "export": "the PBT adapter merged into a 16-bit copy of its base model",
}


def is_hub_id(name: str | None) -> bool:
    return bool(name) and not Path(str(name)).expanduser().exists() and str(name).count("/") == 1 \
        and not str(name).startswith(("/", ".", "~"))


def model_card_text(manifest: dict[str, Any], results: list[dict[str, Any]] | None = None,
                    repo_id: str | None = None) -> str:
    """The card of an adapter or export folder: metadata, training, loading, and evaluation results."""
    from huggingface_hub import EvalResult, ModelCardData

    from pbt_cli.models import registry

    stage = manifest.get("stage", "sft")
    settings = manifest.get("settings") or {}
    base = manifest.get("base_model") or manifest.get("base") or (settings.get("model") or {}).get("name")
    entry = registry.lookup(str(base)) or next((e for e in registry.REGISTRY.values() if e.hub_id == base), None)
    base_id = entry.hub_id if entry else base
    data_manifest = _read_json(Path(str(settings.get("data"))) / "manifest.json") if settings.get("data") else None
    datasets = [data_manifest["pushed_to"]] if data_manifest and data_manifest.get("pushed_to") else None
    eval_results = [_eval_result(EvalResult, r) for r in (results or []) if r.get("value") is not None
                    and not (r.get("dataset") or {}).get("sample", True)]
    data = ModelCardData(
        base_model=base_id if is_hub_id(base_id) else None,
        library_name="peft" if stage in ("sft", "dpo") else "transformers",
        tags=["pbt", "persuasion", stage, *(["lora"] if stage in ("sft", "dpo") else [])],
        datasets=datasets, license=entry.license if entry else None,
        model_name=repo_id or Path(str(manifest.get("config", {}).get("out", "model"))).name,
        eval_results=eval_results or None,
    )
    where = repo_id or "path/to/this/folder"
    if stage == "export":
        load = f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{where}")
tokenizer = AutoTokenizer.from_pretrained("{where}")
```"""
    else:
        load = f"""```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer
model = AutoPeftModelForCausalLM.from_pretrained("{where}")   # loads {base_id} and this adapter on it
tokenizer = AutoTokenizer.from_pretrained("{where}")           # the chat template it was trained with
```
vLLM serves it as a LoRA adapter of its base (`vllm serve {base_id} --enable-lora --lora-modules pbt={where}`)."""
    lora = settings.get("lora") or {}
    load_options = (settings.get("model") or {}).get("load") or {}
    quantization = (load_options.get("quantization") or {})
    quant = "8-bit" if quantization.get("load_in_8bit") else (
        f"4-bit {quantization.get('bnb_4bit_quant_type', 'nf4')}" if quantization.get("load_in_4bit") else "none")
    weights = manifest.get("base_weights") or _base_weights_of(settings)
    rows = [
        ["base model", f"`{base_id}`" + (f" (revision {manifest.get('base_revision')})"
                                          if manifest.get("base_revision") else "")],
        ["data", f"`{settings.get('data')}`" + (f", mix {data_manifest.get('mix')}, {data_manifest['counts'].get('train')} "
                                                  "training pairs" if data_manifest else "")],
        ["LoRA", f"r {lora.get('r')}, alpha {lora.get('lora_alpha')}, dropout {lora.get('lora_dropout')}, modules "
                 f"{', '.join(sorted(manifest.get('adapted_modules') or {})) or 'default'}"],
        ["optimisation", f"lr {settings.get('learning_rate')} ({settings.get('lr_scheduler_type')}, "
                         f"{settings.get('warmup_steps')} warm-up steps), batch {settings.get('per_device_train_batch_size')}"
                         f" x {settings.get('gradient_accumulation_steps')} accumulation, max length "
                         f"{settings.get('max_length')}, seed {settings.get('seed')}"],
        ["length", f"{manifest.get('global_step')} steps"
                   + (f" ({settings.get('num_train_epochs')} epochs)" if settings.get('max_steps', -1) < 1 else "")],
        ["base weights", f"{describe_base_weights(weights)}; quantization in training: {quant}"],
    ]
    if stage == "dpo":
        rows.append(["DPO", f"beta {settings.get('beta')}, reference {settings.get('reference')} (base = the policy "
                            "with its adapter off)"])
    if manifest.get("best_checkpoint"):
        rows.append(["kept checkpoint", f"`{manifest['best_checkpoint']}`, flipflop accuracy "
                                        f"{manifest.get('best_metric'):.3f} on the validation pairs"
                                        + (" (chosen by `pbt select-checkpoint`)" if manifest.get("selected_by")
                                           else "")])
    if stage == "export":
        rows = [["base model", f"`{base_id}`"], ["adapter", f"`{manifest.get('adapter')}`"],
                ["dtype", str(manifest.get("dtype"))]]
    results_text = ""
    if results:
        table = [[r["eval"], r["metric"], f"{r['value']:.3f}" if r.get("value") is not None else "-",
                  f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else "-", r.get("n", ""),
                  _dataset_label(r.get("dataset")), r.get("extractor", "")] for r in results]
        samples = sorted({(r.get("dataset") or {}).get("name") for r in results
                          if (r.get("dataset") or {}).get("sample")} - {None})
        note = (f"\nRows on {', '.join(f'`{name}`' for name in samples)} come from the small sets shipped with pbt "
                "for its demo: they show that the pipeline runs, not what the model can do, and are left out of "
                "the `model-index` metadata.\n" if samples else "")
        results_text = "\n## Evaluation results (`pbt eval`)\n\n" + _table(
            ["evaluation", "metric", "value", "95% CI", "n", "dataset", "extractor"], table) + "\n" + note
    body = f"""
# {data.model_name}

This is {STAGE_WHAT.get(stage, stage)}, made with the `pbt` command-line tool
(`pbt {stage}`), which implements Persuasion-Balanced Training from "Teaching Models to Balance
Resisting and Accepting Persuasion" ([arXiv:2410.14596]({PBT_URL})). PBT trains a model to resist
persuasion towards wrong answers and to accept persuasion towards right ones.

## Training

{_table(["", ""], rows)}

`manifest.json` in this folder records the full configuration, library versions, the data's hash
and every evaluation during training.

## Load it

{load}
{results_text}
## Citation

```bibtex
{CITATION}
```
"""
    return _card_text(data, body)


# The Hub's task for every pbt evaluation: each asks trivia-style questions and scores the answers
HUB_TASK_TYPE = "question-answering"
TASK_NAMES = {"flipflop": "balanced persuasion (flipflop)", "ays": "are you sure? (ays)",
              "team": "two-model dialogue (team)", "farm": "resisting misinformation (farm)"}


def _eval_result(factory: Any, row: dict[str, Any]) -> Any:
    """One model-index entry: a real evaluation set, named with its split and size."""
    dataset = row.get("dataset") or {}
    size = f", {dataset['size']} items" if dataset.get("size") else ""
    split = f" {dataset['split']}" if dataset.get("split") else ""
    return factory(task_type=HUB_TASK_TYPE, task_name=TASK_NAMES.get(row["eval"], row["eval"]),
                   dataset_type=dataset.get("type") or f"pbt-{row['eval']}",
                   dataset_name=f"{dataset.get('name') or row['eval']}{split}{size}",
                   dataset_config=dataset.get("config"), dataset_split=dataset.get("split"),
                   metric_type=row["metric"], metric_value=round(row["value"], 4), metric_name=row["metric"])


def _dataset_label(dataset: dict[str, Any] | None) -> str:
    if not dataset:
        return ""
    split = f" ({dataset['split']})" if dataset.get("split") else ""
    return f"{dataset.get('name')}{split}" + (" [sample]" if dataset.get("sample") else "")


def _base_weights_of(settings: dict[str, Any]) -> dict[str, Any] | None:
    """For a manifest written before pbt recorded `base_weights`: worked out from the base's name."""
    from pbt_cli.fingerprints import base_weights
    from pbt_cli.models.spec import ModelSpec

    name = (settings.get("model") or {}).get("name")
    return base_weights(ModelSpec(str(name))) if name else None


def describe_base_weights(info: dict[str, Any] | None) -> str:
    from pbt_cli.fingerprints import describe_base_weights as describe

    return describe(info)


def write_model_card(folder: Path, manifest: dict[str, Any], results: list[dict[str, Any]] | None = None,
                     repo_id: str | None = None) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(model_card_text(manifest, results, repo_id), encoding="utf-8")
    if manifest.get("stage") in ("sft", "dpo"):
        write_checkpoint_cards(Path(folder), manifest)
    return path


def write_checkpoint_cards(folder: Path, manifest: dict[str, Any]) -> list[Path]:
    """pbt's cards in checkpoints/ and each checkpoints/checkpoint-N/, over the empty ones TRL and PEFT write
    there ("a fine-tuned version of [None]"), which `pbt push --include-checkpoints` would publish."""
    from huggingface_hub import ModelCardData

    root = folder / "checkpoints"
    if not root.is_dir():
        return []
    stage = manifest.get("stage", "sft")
    base = manifest.get("base_model")
    best = manifest.get("best_checkpoint")
    run = Path(str((manifest.get("config") or {}).get("out") or folder)).name
    written = []
    found = sorted((p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    rows = []
    for checkpoint in found:
        state = _read_json(checkpoint / "trainer_state.json") or {}
        evaluation = next((e for e in reversed(state.get("log_history") or []) if "eval_flipflop_accuracy" in e), {})
        score = evaluation.get("eval_flipflop_accuracy")
        rows.append([f"`{checkpoint.name}`", state.get("global_step", checkpoint.name.split("-")[-1]),
                     f"{state['epoch']:.2f}" if isinstance(state.get("epoch"), (int, float)) else "-",
                     f"{score:.3f}" if isinstance(score, (int, float)) else "-",
                     "yes" if best and Path(best).name == checkpoint.name else ""])
        data = ModelCardData(base_model=base if is_hub_id(base) else None, library_name="peft",
                             tags=["pbt", "persuasion", stage, "lora", "checkpoint"])
        body = f"""
# {run}: {checkpoint.name}

An intermediate checkpoint of a `pbt {stage}` run (Persuasion-Balanced Training, [arXiv:2410.14596]({PBT_URL})),
step {rows[-1][1]}, epoch {rows[-1][2]}, flipflop accuracy on the validation pairs {rows[-1][3]}. The run's
final adapter{' (the best checkpoint by flipflop accuracy)' if best else ''} and its card are two folders up;
`trainer_state.json` here lets `pbt {stage} ... --resume` with this folder continue from it.
"""
        (checkpoint / "README.md").write_text(_card_text(data, body), encoding="utf-8")
        written.append(checkpoint / "README.md")
    data = ModelCardData(base_model=base if is_hub_id(base) else None, library_name="peft",
                         tags=["pbt", "persuasion", stage, "lora", "checkpoints"])
    body = f"""
# {run}: checkpoints

The Trainer checkpoints of a `pbt {stage}` run. The run's final adapter and its card are one folder up.

{_table(["checkpoint", "step", "epoch", "flipflop accuracy (validation)", "kept"], rows)}
"""
    (root / "README.md").write_text(_card_text(data, body), encoding="utf-8")
    written.append(root / "README.md")
    return written


def _read_json(path: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- trees, pairs and evaluation results (dataset repositories) ----------------------------------------

LOAD_JSON = """```python
from datasets import load_dataset
data = load_dataset("{where}")
```"""


def artifact_card_text(stage: str, manifests: dict[str, dict[str, Any]], repo_id: str | None = None) -> str:
    """The card of a trees folder (`pbt generate`), a pairs folder (`pbt filter`) or evaluation results."""
    from huggingface_hub import DatasetCardData

    where = repo_id or "path/to/this/folder"
    manifest = next(iter(manifests.values()))
    if stage == "generate":
        files = sorted(name.replace("manifest", "trees").replace(".json", ".jsonl") for name in manifests)
        trees = sum((m.get("counts") or {}).get("trees", 0) for m in manifests.values())
        settings = manifest.get("settings") or {}
        data = DatasetCardData(tags=["pbt", "persuasion", "dialogue-trees"], language=["en"],
                               configs=[{"config_name": "default", "data_files": [{"split": "train", "path": files}]}])
        body = f"""
# PBT dialogue trees

Two-agent persuasion dialogue trees made by the `pbt` command-line tool (`pbt generate`) for
Persuasion-Balanced Training ([arXiv:2410.14596]({PBT_URL})): one tree per trivia question, in
which agent A ({(settings.get('model_a') or {}).get('name')}) and agent B ({(settings.get('model_b') or {}).get('name')})
answer, then try to persuade each other with different personas, up to {settings.get('max_turns')} turns.
Each turn records its text, the persona that produced it and both agents' current answers.

- {trees} trees in {len(files)} file(s): {', '.join(f'`{f}`' for f in files)}
- questions `{settings.get('questions')}`, seed {settings.get('seed')}, sampling {settings.get('sampling')}
- prompt texts hash `{settings.get('prompts')}`; each manifest records the full settings and versions.

## Load it

{LOAD_JSON.format(where=where)}

`pbt filter --trees FOLDER` turns the trees into preference pairs.
"""
    elif stage == "filter":
        counts = manifest.get("counts") or {}
        rows = [[split, c.get("resist", 0), c.get("accept", 0), c.get("none", 0), sum(c.values())]
                for split, c in counts.items()]
        data = DatasetCardData(tags=["pbt", "persuasion", "preference", "dpo"], language=["en"],
                               configs=[{"config_name": "default", "data_files": [
                                   {"split": "train", "path": "train.jsonl"},
                                   {"split": "validation", "path": "valid.jsonl"},
                                   {"split": "test", "path": "test.jsonl"}]}])
        settings = manifest.get("settings") or {}
        body = f"""
# PBT preference pairs

Preference pairs from persuasion dialogue trees, made by the `pbt` command-line tool
(`pbt filter`) for Persuasion-Balanced Training ([arXiv:2410.14596]({PBT_URL})). Each pair is in
TRL's conversational preference format: `prompt` (the responder's view of the dialogue up to the
persuasion turn, as chat messages), `chosen` and `rejected` (one assistant message each). `kind`
is `resist` (keeping a correct answer against a wrong persuader), `accept` (taking a correct answer
from a right one) or null; the split is by tree.

{_table(["split", "resist", "accept", "no kind", "total"], rows)}

- margin {settings.get('margin')}, judge {settings.get('judge') or 'none (string matching)'}, seed {settings.get('seed')}
- tokenizer-independent: render them for a model with `pbt preprocess --pairs FOLDER --tokenizer MODEL`.

## Load it

{LOAD_JSON.format(where=where)}
"""
    else:  # evaluation results
        data = DatasetCardData(tags=["pbt", "persuasion", "evaluation"], language=["en"],
                               configs=[{"config_name": "default",
                                         "data_files": [{"split": "test", "path": "samples.jsonl"}]}])
        metrics = manifest.get("metrics") or {}
        lines = []
        for name, entry in metrics.items():
            if isinstance(entry, dict) and "value" in entry and entry.get("value") is not None:
                low, high = entry.get("ci95") or [None, None]
                interval = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
                lines.append(f"- {name}: {entry['value']:.3f}{interval} (n={entry.get('n')})")
        body = f"""
# PBT evaluation: {manifest.get('eval')}

Results of `pbt {stage}` (the `pbt` command-line tool for Persuasion-Balanced Training,
[arXiv:2410.14596]({PBT_URL})): `results.json` holds the metrics with 95% bootstrap intervals, the
models and their revisions, the answer extractor, seeds and versions; `samples.jsonl` holds every
question or pair with the replies, the extracted answers and their correctness.

{chr(10).join(lines) or '- (see results.json)'}

## Load the samples

{LOAD_JSON.format(where=where)}
"""
    body += f"""
## Citation

```bibtex
{CITATION}
```
"""
    return _card_text(data, body)


# --- a whole results root (`pbt push results/`) and a report folder ---------------------------------------


def results_root_card_text(root: Path, repo_id: str | None = None) -> str:
    """The card of a results root: every evaluation's headline numbers, trained vs base, the plots of
    `pbt eval report` (report/), and one dataset config per evaluation's samples."""
    from huggingface_hub import DatasetCardData

    from pbt_cli.evals.report import COLUMNS, COMPARISON_COLUMNS, collect, dataset_of

    report = collect(Path(root), mixed_extractors=True)
    configs = [{"config_name": f"{r.eval}-{r.path.parent.name}",
                "data_files": [{"split": "test", "path": (r.path.parent / "samples.jsonl").relative_to(root).as_posix()}]}
               for r in report.results if (r.path.parent / "samples.jsonl").is_file()]
    data = DatasetCardData(tags=["pbt", "persuasion", "evaluation"], language=["en"], configs=configs or None)
    sets = sorted({(r.eval, _dataset_label(dataset_of(r.data))) for r in report.results})
    plots = sorted((Path(root) / "report").glob("report_*.png"))
    shown = [c for c in COLUMNS if c not in ("extractor",)]
    comparison = ""
    if report.comparisons:
        comparison = ("\n## Trained vs base\n\nThe difference over the items both models answered, with its paired "
                      "95% interval (`report/report_vs_base.csv`).\n\n"
                      + _markdown(report.comparisons, COMPARISON_COLUMNS) + "\n")
    body = f"""
# PBT evaluation results

Results of `pbt eval` (the `pbt` command-line tool for Persuasion-Balanced Training,
[arXiv:2410.14596]({PBT_URL})) for {len({r.model for r in report.results})} model(s): each
`<eval>/<model>/results.json` holds the metrics with 95% intervals (Wilson for proportions, paired for
differences), the models with revisions, the answer extractor, seeds and versions; `samples.jsonl`
holds every question or pair with the replies, extracted answers and correctness. Answers read by:
{', '.join(f'`{e}`' for e in report.extractors) or 'none'}.

Evaluation sets: {'; '.join(f'{e}: {label}' for e, label in sets)}.
{' Sets marked [sample] are the small ones shipped with pbt for its demo: their numbers show that the pipeline runs, not what a model can do.' if any('[sample]' in label for _, label in sets) else ''}

## Results

{_markdown(report.rows, tuple(shown))}
{comparison}
{chr(10).join(f'![{p.stem}](report/{p.name})' for p in plots)}

## Load the samples

{LOAD_JSON.format(where=repo_id or 'path/to/this/folder')}

## Citation

```bibtex
{CITATION}
```
"""
    return _card_text(data, body)


def _markdown(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "↑" if value else "↓"
        return f"{value:.3f}" if isinstance(value, float) else str(value).replace("|", "\\|")

    return _table(list(columns), [[cell(row.get(c)) for c in columns] for row in rows])


def report_card_text(folder: Path, repo_id: str | None = None) -> str:
    """The card of a `pbt eval report` folder: its tables and its plots."""
    from huggingface_hub import DatasetCardData

    tables = (folder / "report.md").read_text(encoding="utf-8") if (folder / "report.md").is_file() else ""
    plots = sorted(folder.glob("report_*.png"))
    data = DatasetCardData(tags=["pbt", "persuasion", "evaluation", "report"], language=["en"])
    body = f"""
# PBT evaluation report

`pbt eval report` over a results folder ([arXiv:2410.14596]({PBT_URL})): one row per model, evaluation
and metric with its 95% interval (`report.csv`, `report.json`), trained vs base with paired intervals
(`report_vs_base.csv`) and the mean over training seeds (`report_over_seeds.csv`).

{tables}
{chr(10).join(f'![{p.stem}]({p.name})' for p in plots)}

## Citation

```bibtex
{CITATION}
```
"""
    return _card_text(data, body)
