"""`pbt preprocess --no-balance-eval`: every held-out resist and accept pair stays in valid and test (the demo's
few trees would otherwise leave no flipflop set at all)."""

from __future__ import annotations

from collections import Counter

from test_preprocess import accept_tree, load, make_pairs_folder, opening_tree, preprocess, resist_tree


def test_every_held_out_pair_of_either_kind_is_kept(tmp_path, tiny_model_dir):
    pairs = make_pairs_folder(tmp_path / "pairs", {
        "train": [resist_tree("r1"), accept_tree("a1")],
        "valid": [resist_tree("r3"), opening_tree("o2")],  # resist pairs only: balanced, nothing is left
        "test": [resist_tree("r4"), resist_tree("r5"), accept_tree("a3")],
    })
    balanced = preprocess(pairs, tiny_model_dir, tmp_path / "balanced")
    assert balanced.counts["valid"] == 0 and balanced.counts["test"] == 6
    kept = preprocess(pairs, tiny_model_dir, tmp_path / "every", balance_eval=False)
    data = load(tmp_path / "every")
    assert Counter(data["valid"]["kind"]) == {"resist": 3}  # the no-kind pair stays out
    assert Counter(data["test"]["kind"]) == {"resist": 6, "accept": 3}
    assert kept.counts["train"] == balanced.counts["train"]  # training data is untouched


def test_the_dataset_card_says_whether_the_held_out_sets_are_balanced(tmp_path, tiny_model_dir):
    pairs = make_pairs_folder(tmp_path / "pairs", {"train": [resist_tree("r1"), accept_tree("a1")],
                                                   "test": [resist_tree("r4")]})
    preprocess(pairs, tiny_model_dir, tmp_path / "balanced")
    preprocess(pairs, tiny_model_dir, tmp_path / "every", balance_eval=False)
    assert "cut to equal counts" in (tmp_path / "balanced" / "README.md").read_text()
    assert "not cut to equal counts (`--no-balance-eval`)" in (tmp_path / "every" / "README.md").read_text()
