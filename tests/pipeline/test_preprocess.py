"""`pbt preprocess`: pairs rendered with the tiny tokenizer's chat template (docs/method.md §4).

Pairs come from hand-built trees (the resist / accept shapes of test_filter.py, plus an "opening"
tree whose single pair has no kind) run through the filter's own functions, then written per split
with `write_pairs`, so every split's content is known by hand:

    train: 2 resist trees (6 resist pairs), 1 accept tree (3 accept), 1 opening tree (1 no-kind)
    valid: 1 resist tree (3), 1 accept tree (3), 1 opening tree (1)
    test:  2 resist trees (6), 1 accept tree (3)

The tiny template is `{{ bos_token }}` then `<|role|>\\ncontent</s>\\n` per message, then
`<|assistant|>\\n` as the generation prompt.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from helpers import run_cli

from pbt_cli.artifacts import write_json
from pbt_cli.data.pairs import SPLITS, PreferencePair, write_pairs
from pbt_cli.data.prompts import PERSONAS, question_prompt
from pbt_cli.data.trees import Tree, resolve_answers
from pbt_cli.errors import PbtError
from pbt_cli.models.chat import template_hash
from pbt_cli.models.loading import load_tokenizer
from pbt_cli.models.spec import ModelSpec
from pbt_cli.pipeline.filter import (
    FilterConfig,
    build_pair,
    pairs_manifest_hash,
    run_filter,
    score_tree,
    sibling_pairs,
    unify_answers,
)
from pbt_cli.pipeline.preprocess import (
    PreprocessConfig,
    check_same_tokenizer,
    load_split,
    read_data_manifest,
    run_preprocess,
)

PARIS = {"question_id": "q-paris", "question": "What is the capital of France?",
         "answer": {"value": "Paris", "aliases": ["Paris"], "normalized_aliases": ["paris"]}}
GENERATION_PROMPT = "<|assistant|>\n"
LONG = "word " * 100  # 400 tokens with the tiny tokenizer (4 per "word "); a short pair is about 210


# --- hand-built trees and pairs ------------------------------------------------------------------------


class TreeBuilder:
    """A tree record in pbt's format; `say` adds a turn below `parent` (A at even levels, B at odd) whose
    answer holds the speaker's extracted answer and the other agent's carried over from the parent."""

    def __init__(self, tree_id: str) -> None:
        self.tree_id = tree_id
        self.turns = [{"id": 0, "parent": None, "children": [], "level": -1, "agent": None, "persona": None,
                       "text": PARIS["question"], "answer": {"A": None, "B": None}}]

    def say(self, parent: int, persona: str, answer: str, text: str | None = None) -> int:
        above = self.turns[parent]
        level = above["level"] + 1
        agent, other = ("A", "B") if level % 2 == 0 else ("B", "A")
        turn_id = len(self.turns)
        self.turns.append({"id": turn_id, "parent": parent, "children": [], "level": level, "agent": agent,
                           "persona": persona, "text": text or f"[{self.tree_id}/{turn_id}] I say {answer}.",
                           "answer": {agent: answer, other: above["answer"][other]}})
        above["children"].append(turn_id)
        return turn_id

    def record(self) -> dict:
        return {"tree_id": self.tree_id, "question": PARIS, "both_first": True, "turns": self.turns}


def resist_tree(tree_id: str, persuasion: str | None = None) -> TreeBuilder:
    """B keeps the right Paris against A's London: 3 resist pairs at the leaves (chosen keeps Paris)."""
    t = TreeBuilder(tree_id)
    a0 = t.say(0, "logical", "London")
    b1 = t.say(a0, "resist", "Paris")
    t.say(a0, "accept", "London")
    for persona in ("logical", "emotional", "credibility"):
        a2 = t.say(b1, persona, "London", text=persuasion)
        t.say(a2, "resist", "Paris")
        t.say(a2, "accept", "London")
    return t


def accept_tree(tree_id: str, stubborn_text: str | None = None) -> TreeBuilder:
    """A right, B wrong: 3 accept pairs at the leaves (chosen: B moves to Paris; own 2 vs 1)."""
    t = TreeBuilder(tree_id)
    a0 = t.say(0, "resist", "Paris")
    b1 = t.say(a0, "resist", "London")
    t.say(a0, "accept", "Paris")
    for persona in ("logical", "emotional", "credibility"):
        a2 = t.say(b1, persona, "Paris")
        t.say(a2, "resist", "London", text=stubborn_text)  # the rejected reply
        t.say(a2, "accept", "Paris")
    return t


def opening_tree(tree_id: str) -> TreeBuilder:
    """B's independent opening: right (own 1) vs wrong (own 0): one pair of no kind."""
    t = TreeBuilder(tree_id)
    a0 = t.say(0, "logical", "London")
    t.say(a0, "resist", "Paris")
    t.say(a0, "accept", "London")
    return t


def pairs_of(builder: TreeBuilder, split: str) -> list[PreferencePair]:
    tree = Tree.from_record(json.loads(json.dumps(builder.record())), builder.tree_id)
    scored = score_tree(tree, unify_answers(tree, resolve_answers(tree)))
    return [build_pair(scored, candidate, split) for candidate in sibling_pairs(scored, 0.5, Counter())]


def make_pairs_folder(folder: Path, layout: dict[str, list[TreeBuilder]]) -> Path:
    """A `pbt filter`-shaped folder: train/valid/test.jsonl and a manifest.json."""
    folder.mkdir(parents=True)
    for split in SPLITS:
        write_pairs(folder / f"{split}.jsonl", [p for b in layout.get(split, []) for p in pairs_of(b, split)])
    write_json(folder / "manifest.json", {"stage": "filter", "status": "complete", "note": "made by the tests",
                                          "layout": {s: [b.tree_id for b in bs] for s, bs in layout.items()}})
    return folder


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    return make_pairs_folder(tmp_path_factory.mktemp("pairs") / "pairs", {
        "train": [resist_tree("r1"), resist_tree("r2"), accept_tree("a1"), opening_tree("o1")],
        "valid": [resist_tree("r3"), accept_tree("a2"), opening_tree("o2")],
        "test": [resist_tree("r4"), resist_tree("r5"), accept_tree("a3")],
    })


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    return load_tokenizer(ModelSpec.parse(str(tiny_model_dir)), padding_side="right")


def preprocess(pairs: Path, tokenizer_dir: Path, out: Path, **kwargs):
    spec = ModelSpec.parse(str(tokenizer_dir), chat_template=kwargs.pop("chat_template", None))
    return run_preprocess(PreprocessConfig(pairs=pairs, tokenizer=spec, out=out, **kwargs))


def load(out: Path) -> dict:
    """Every split as pbt's later stages read it (empty splits included)."""
    return {split: load_split(out, split) for split in SPLITS}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- rendering ------------------------------------------------------------------------------------------


def test_rendering_has_one_bos_and_ends_with_the_generation_prompt(pairs_dir, tiny_model_dir, tiny_tokenizer,
                                                                     tmp_path):
    result = preprocess(pairs_dir, tiny_model_dir, tmp_path / "out")
    data = load(tmp_path / "out")
    bos = tiny_tokenizer.bos_token_id
    rows = [row for split in SPLITS for row in data[split]]
    assert len(rows) == sum(result.counts.values()) == 18
    for row in rows:
        ids = tiny_tokenizer(row["prompt_text"], add_special_tokens=False)["input_ids"]
        leading = len(ids) - len(list(itertools.dropwhile(lambda i: i == bos, ids)))
        assert leading == 1, row["pair_id"]  # the template's own BOS, and only that
        assert row["prompt_text"].endswith(GENERATION_PROMPT)
        roles = [m["role"] for m in row["prompt"]]
        assert roles[0] == roles[-1] == "user"  # ends with the persuader's turn
        assert all(first != second for first, second in itertools.pairwise(roles))  # alternating
        assert PERSONAS["standard"] in row["prompt"][0]["content"]
        assert PERSONAS["resist"] not in row["prompt_text"] and PERSONAS["accept"] not in row["prompt_text"]
        for side in ("chosen", "rejected"):  # the continuation starts with the reply itself
            assert row[f"{side}_text"].startswith(row[side][0]["content"])


def test_continuations_complete_the_rendered_conversation(pairs_dir, tiny_model_dir, tiny_tokenizer, tmp_path):
    preprocess(pairs_dir, tiny_model_dir, tmp_path / "out")
    for row in load(tmp_path / "out")["valid"]:
        for side in ("chosen", "rejected"):
            full = tiny_tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=False)
            assert row["prompt_text"] + row[f"{side}_text"] == full
            assert row[f"{side}_text"] == row[side][0]["content"] + "</s>\n"  # what the tiny template adds


def test_rendered_prompt_by_hand(pairs_dir, tiny_model_dir, tmp_path):
    preprocess(pairs_dir, tiny_model_dir, tmp_path / "out", mix="all")
    row = next(r for r in load(tmp_path / "out")["train"] if r["pair_id"] == "r1:5>6")
    # B's view of leaf pair 5 > 6: the question with the standard persona, B1 (turn 2), then A2 (turn 4).
    assert row["prompt_text"] == (
        f"<s><|user|>\n{question_prompt(PARIS['question'], 'standard')}</s>\n"
        "<|assistant|>\n[r1/2] I say Paris.</s>\n"
        "<|user|>\n[r1/4] I say London.</s>\n"
        "<|assistant|>\n"
    )
    assert row["chosen_text"] == "[r1/5] I say Paris.</s>\n"  # closed by the template's end-of-turn
    assert row["rejected_text"].startswith("[r1/6] I say London.")
    assert (row["kind"], row["label"], row["persuader_answer"], row["responder_previous_answer"]) == (
        "resist", "flip_correct_to_incorrect", "London", "Paris")


# --- formats and mixes ----------------------------------------------------------------------------------

COMMON = {"pair_id", "tree_id", "kind", "label", "question", "gold_aliases", "persuader_answer",
          "responder_previous_answer", "prompt", "prompt_text", "prompt_tokens"}
DPO = COMMON | {"chosen", "rejected", "chosen_text", "rejected_text", "chosen_tokens", "rejected_tokens"}
SFT = COMMON | {"completion", "completion_text", "completion_tokens"}


@pytest.mark.parametrize(("fmt", "train_columns"), [("dpo", DPO), ("sft", SFT)])
def test_format_columns_and_balanced_eval_sets(pairs_dir, tiny_model_dir, tmp_path, fmt, train_columns):
    preprocess(pairs_dir, tiny_model_dir, tmp_path / "out", format=fmt)
    data = load(tmp_path / "out")
    assert set(data["train"].column_names) == train_columns
    row = data["train"][0]
    assert row["prompt"][-1]["role"] == "user"
    if fmt == "dpo":
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
    else:
        assert row["completion"][0]["role"] == "assistant"
        assert row["completion_text"].startswith(row["completion"][0]["content"])
    # Every chosen reply in these trees says Paris (resist: B keeps it; accept: B moves to it).
    chosen_key = "chosen" if fmt == "dpo" else "completion"
    assert all(m[0]["content"].endswith("I say Paris.") for m in data["train"][chosen_key])
    # Evaluation splits always have the dpo layout and the flipflop labels, resist and accept cut to
    # equal counts: valid has 3 + 3 (the no-kind pair left out), test has 6 resist cut to 3 + 3 accept.
    for split in ("valid", "test"):
        assert set(data[split].column_names) == DPO
        assert Counter(zip(data[split]["kind"], data[split]["label"], strict=True)) == {
            ("resist", "flip_correct_to_incorrect"): 3, ("accept", "flip_incorrect_to_correct"): 3}


@pytest.mark.parametrize(("mix", "limit", "balance", "kinds"), [
    # the original runs' sizes: both kinds cut to the smaller count m = 3 (6 resist, 3 accept in train)
    ("balanced", None, True, {"resist": 3, "accept": 3}),
    ("accept", None, True, {"accept": 3}),
    ("resist", None, True, {"resist": 3}),
    ("resist", None, False, {"resist": 6}),  # --no-balance keeps every pair of the kind
    ("all", None, True, {"resist": 6, "accept": 3, "none": 1}),
    ("balanced", 4, True, {"resist": 2, "accept": 2}),
    ("all", 4, True, None),  # 4 of the 10, whichever the shuffle picks
    ("resist", 2, True, {"resist": 2}),
])
def test_mixes_and_limit(pairs_dir, tiny_model_dir, tmp_path, mix, limit, balance, kinds):
    result = preprocess(pairs_dir, tiny_model_dir, tmp_path / "out", mix=mix, limit=limit, balance=balance)
    train = load(tmp_path / "out")["train"]
    if kinds is not None:
        assert Counter(train["kind"]) == kinds
    assert len(train) == result.counts["train"] == (limit or sum(kinds.values()))
    assert len(set(train["pair_id"])) == len(train)


@pytest.mark.parametrize(("missing", "message"), [
    ("accept", "0 accept and 3 resist"),
    ("resist", "3 accept and 0 resist"),
])
def test_balanced_needs_both_kinds(tmp_path, tiny_model_dir, missing, message):
    train = [accept_tree("a1")] if missing == "resist" else [resist_tree("r1")]
    pairs = make_pairs_folder(tmp_path / "pairs", {"train": train})
    with pytest.raises(PbtError, match=message):
        preprocess(pairs, tiny_model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- lengths --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_pairs_dir(tmp_path_factory) -> Path:
    return make_pairs_folder(tmp_path_factory.mktemp("long") / "pairs", {
        "train": [
            resist_tree("short"),  # about 210 tokens per pair
            accept_tree("long-rejected", stubborn_text=LONG),  # rejected replies of 400 tokens
            resist_tree("long-prompt", persuasion="word " * 60),  # A2's persuasion: 240 more prompt tokens
        ],
        # short eval pairs, so no split is empty (see test_empty_eval_splits_can_be_loaded)
        "valid": [resist_tree("v-r"), accept_tree("v-a")],
        "test": [resist_tree("t-r"), accept_tree("t-a")],
    })


@pytest.mark.parametrize(("fmt", "dropped", "kept"), [
    # dpo counts the longer of the two replies: the long rejected ones go (210 + 400 > 400).
    ("dpo", {"prompt_longer_than_max_prompt_length": 3, "longer_than_max_length": 3}, {"resist": 3}),
    # sft trains on chosen replies only, so the long rejected replies do not matter.
    ("sft", {"prompt_longer_than_max_prompt_length": 3, "longer_than_max_length": 0}, {"resist": 3, "accept": 3}),
])
def test_long_pairs_are_dropped_and_counted(long_pairs_dir, tiny_model_dir, tmp_path, fmt, dropped, kept):
    result = preprocess(long_pairs_dir, tiny_model_dir, tmp_path / "out", format=fmt, mix="all",
                        max_length=400, max_prompt_length=300)
    assert result.dropped == dropped
    train = load(tmp_path / "out")["train"]
    assert Counter(train["kind"]) == kept
    assert all(tree_id in ("short", "long-rejected") for tree_id in train["tree_id"])
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["dropped"] == dropped


# --- chat templates and tokenizers ----------------------------------------------------------------------

OTHER_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def test_tokenizer_without_template_names_chat_template(pairs_dir, tiny_model_no_template_dir, tmp_path):
    with pytest.raises(PbtError, match="--chat-template"):
        preprocess(pairs_dir, tiny_model_no_template_dir, tmp_path / "out")
    template = tmp_path / "template.jinja"
    template.write_text(OTHER_TEMPLATE)
    result = preprocess(pairs_dir, tiny_model_no_template_dir, tmp_path / "out", chat_template=template)
    row = load(tmp_path / "out")["train"][0]
    assert row["prompt_text"].startswith("<s>[user] ") and row["prompt_text"].endswith("[assistant] ")
    manifest = read_data_manifest(tmp_path / "out")
    assert manifest["tokenizer"]["chat_template_override"] == str(template)
    assert result.counts["train"] == 6


def test_manifest_records_the_tokenizer_and_later_stages_check_it(pairs_dir, tiny_model_dir,
                                                                  tiny_model_no_template_dir, tiny_tokenizer,
                                                                  tmp_path):
    out = tmp_path / "out"
    preprocess(pairs_dir, tiny_model_dir, out)
    manifest = read_data_manifest(out)
    assert manifest["tokenizer"]["name"] == str(tiny_model_dir)
    assert manifest["tokenizer"]["chat_template_hash"] == template_hash(tiny_tokenizer) is not None
    assert manifest["settings"]["pairs_manifest"] == pairs_manifest_hash(pairs_dir)
    assert manifest["counts"] == {"train": 6, "valid": 6, "test": 6}

    same_spec = ModelSpec.parse(str(tiny_model_dir))
    check_same_tokenizer(out, manifest, same_spec, tiny_tokenizer)  # the same template: accepted

    template = tmp_path / "template.jinja"
    template.write_text(OTHER_TEMPLATE)
    other_spec = ModelSpec.parse(str(tiny_model_no_template_dir), chat_template=template)
    other = load_tokenizer(other_spec)
    with pytest.raises(PbtError) as refused:
        check_same_tokenizer(out, manifest, other_spec, other)
    message = str(refused.value)
    assert str(tiny_model_dir) in message and str(tiny_model_no_template_dir) in message
    assert "pbt preprocess" in message


def test_saved_dataset_has_three_splits(pairs_dir, tiny_model_dir, tmp_path):
    preprocess(pairs_dir, tiny_model_dir, tmp_path / "out")
    data = load(tmp_path / "out")
    assert set(data) == {"train", "valid", "test"}
    assert set(data["train"]["tree_id"]) == {"r1", "r2", "a1"}  # train comes from the train pairs only
    assert set(data["test"]["tree_id"]) <= {"r4", "r5", "a3"}


# --- idempotence ----------------------------------------------------------------------------------------


def test_rerun_is_byte_identical_and_other_settings_are_refused(pairs_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    first = preprocess(pairs_dir, tiny_model_dir, out)
    written = folder_bytes(out)
    assert {"manifest.json", "README.md", "data/train-00000-of-00001.parquet",
            "data/validation-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"} == set(written)
    assert not first.reused

    second = preprocess(pairs_dir, tiny_model_dir, out)
    assert second.reused and second.counts == first.counts
    assert folder_bytes(out) == written

    # From scratch again: the same bytes, Parquet files and card included.
    shutil.rmtree(out)
    again = preprocess(pairs_dir, tiny_model_dir, out)
    assert not again.reused
    assert folder_bytes(out) == written

    with pytest.raises(PbtError, match="mix"):
        preprocess(pairs_dir, tiny_model_dir, out, mix="resist")
    assert folder_bytes(out) == written
    changed = preprocess(pairs_dir, tiny_model_dir, out, mix="resist", overwrite=True)
    assert changed.counts["train"] == 3 and not changed.reused  # resist-only: cut to the 3 accept pairs


def test_the_tokenizer_files_moving_does_not_make_other_settings(pairs_dir, tiny_model_dir, tmp_path):
    """The demo model's tokenizer lives under PBT_HOME; the same tokenizer found under another cache
    folder renders the same datasets, so a rerun reuses them (manifests of earlier versions included,
    which recorded the folder as a setting)."""
    out = tmp_path / "out"
    preprocess(pairs_dir, tiny_model_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert "name_or_path" not in manifest["settings"]["tokenizer"]
    manifest["settings"]["tokenizer"]["name_or_path"] = "/another/cache/models/tiny"  # as earlier versions wrote
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert preprocess(pairs_dir, tiny_model_dir, out).reused


# --- the CLI --------------------------------------------------------------------------------------------


def test_cli_preprocess_shows_an_example(capsys, pairs_dir, tmp_path, tiny_model_dir):
    result = run_cli(capsys, "preprocess", "--pairs", pairs_dir, "--tokenizer", tiny_model_dir,
                     "--format", "sft", "--mix", "balanced", "--out", tmp_path / "data", "--show", "1")
    assert result.exit_code == 0, result.stderr
    assert "<|user|>" in result.stderr and "<|assistant|>" in result.stderr  # the rendered example
    assert "(resist)" in result.stderr or "(accept)" in result.stderr  # its panel title names the kind
    assert "train 6" in result.stderr  # 3 accept + 3 resist
    assert set(load(tmp_path / "data")["train"].column_names) == SFT


def test_cli_preprocess_missing_pairs_is_one_line(capsys, tmp_path, tiny_model_dir):
    result = run_cli(capsys, "preprocess", "--pairs", tmp_path / "nope", "--tokenizer", tiny_model_dir,
                     "--out", tmp_path / "data")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "does not exist" in result.stderr


def test_empty_eval_splits_can_be_loaded(tmp_path, tiny_model_dir):
    # Two trees: round(2 * 0.15) = 0 trees for valid and test, so both eval splits are empty.
    trees = tmp_path / "trees.jsonl"
    trees.write_text("".join(json.dumps(b.record()) + "\n" for b in (resist_tree("r"), accept_tree("a"))))
    run_filter(FilterConfig(trees=trees, out=tmp_path / "pairs"))
    result = preprocess(tmp_path / "pairs", tiny_model_dir, tmp_path / "data")
    assert result.counts == {"train": 6, "valid": 0, "test": 0}
    data = load(tmp_path / "data")
    assert len(data["valid"]) == 0 and set(data["valid"].column_names) == DPO
    assert not (tmp_path / "data" / "data" / "validation-00000-of-00001.parquet").exists()


def test_the_folder_loads_with_load_dataset_and_trains_with_trl_as_it_is(pairs_dir, tiny_model_dir, tmp_path):
    """Other tools read the folder: `datasets.load_dataset(FOLDER)` gives the Hub's split names."""
    import datasets

    preprocess(pairs_dir, tiny_model_dir, tmp_path / "out")
    data = datasets.load_dataset(str(tmp_path / "out"))
    assert set(data) == {"train", "validation", "test"}
    assert [len(data[s]) for s in ("train", "validation", "test")] == [6, 6, 6]
    assert data["train"][0]["chosen"][0]["role"] == "assistant"
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\n") and "configs:" in card and "data/train-00000-of-00001.parquet" in card
    assert "| train | 6 | 3 | 3 | 0 |" in card  # rows, resist, accept, no kind


def test_pairs_load_with_load_dataset_json(pairs_dir):
    """`pbt filter`'s folder is TRL's conversational preference format, readable by `datasets`."""
    import datasets

    data = datasets.load_dataset("json", data_dir=str(pairs_dir))
    assert set(data) == {"train", "validation", "test"}
    row = data["train"][0]
    assert row["prompt"][-1]["role"] == "user"
    assert row["chosen"] == [{"role": "assistant", "content": row["chosen"][0]["content"]}]


def test_old_layouts_still_read(pairs_dir, tiny_model_dir, tmp_path):
    """Pairs with plain-text replies (before the conversational format) render the same."""
    old = tmp_path / "old-pairs"
    shutil.copytree(pairs_dir, old)
    for split in SPLITS:
        lines = (old / f"{split}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        for record in records:
            record["chosen"], record["rejected"] = record["chosen"][0]["content"], record["rejected"][0]["content"]
        (old / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    preprocess(old, tiny_model_dir, tmp_path / "from-old")
    preprocess(pairs_dir, tiny_model_dir, tmp_path / "from-new")
    assert load(tmp_path / "from-old")["train"]["chosen_text"] == load(tmp_path / "from-new")["train"]["chosen_text"]
