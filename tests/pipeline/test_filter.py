"""`pbt filter`: answers resolved and unified, trees scored, sibling pairs, kinds, splits, output.

Every tree here is built by hand with `TreeBuilder` and every expected pair is worked out by hand
from docs/method.md §3 (with §8's fixes); the comments next to each expectation give the
arithmetic. Question used throughout: "What is the capital of France?", gold alias "paris".

The two main shapes (both-first, 4 levels, as `pbt generate` grows them):

    resist tree (B right, A persuading toward London)       accept tree (A right, B wrong)
    1  A0 logical      London                               1  A0 resist    Paris
    2  B1 resist       Paris    (continues)                 2  B1 resist    London  (continues)
    3  B1 accept       London   (agrees: branch ends)       3  B1 accept    Paris   (agrees: ends)
    4,7,10  A2 logical/emotional/credibility  London        4,7,10  A2 ...  Paris
    5,8,11  B3 resist  Paris    -> chosen                   5,8,11  B3 resist  London -> rejected
    6,9,12  B3 accept  London   -> rejected                 6,9,12  B3 accept  Paris  -> chosen
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from helpers import run_cli

from pbt_cli.data.answers import is_correct, same_answer
from pbt_cli.data.pairs import PreferencePair, read_pairs
from pbt_cli.data.prompts import (
    PERSONAS,
    SAME_ANSWER_INSTRUCTIONS,
    STANCE_INSTRUCTIONS,
    question_prompt,
    same_answer_conversation,
)
from pbt_cli.data.trees import Tree, Turn, read_trees, resolve_answers
from pbt_cli.errors import PbtError
from pbt_cli.models.backends import GeneratorPool
from pbt_cli.models.backends.scripted import ScriptedGenerator
from pbt_cli.models.spec import ModelSpec
from pbt_cli.pipeline.filter import (
    FilterConfig,
    build_pair,
    has_disagreement,
    pair_kind,
    run_filter,
    score_tree,
    sibling_pairs,
    split_trees,
    unify_answers,
)

A_PERSONAS = ("logical", "emotional", "credibility")
PARIS = {"question_id": "q-paris", "question": "What is the capital of France?",
         "answer": {"value": "Paris", "aliases": ["Paris"], "normalized_aliases": ["paris"]}}


# --- hand-built trees ------------------------------------------------------------------------------


class TreeBuilder:
    """A tree in pbt's JSONL record format, one turn at a time.

    `say(parent, persona, answer)` adds a turn one level below `parent`: agent A at even levels,
    B at odd; its `answer` holds the speaker's extracted answer (maybe AGREE / DISAGREE / NONE) and
    the other agent's answer carried over from the parent, as `pbt generate` stores them.
    """

    def __init__(self, tree_id: str, question: dict = PARIS, both_first: bool = True) -> None:
        self.tree_id = tree_id
        self.question = question
        self.both_first = both_first
        self.turns = [{"id": 0, "parent": None, "children": [], "level": -1, "agent": None, "persona": None,
                       "text": question["question"], "answer": {"A": None, "B": None}}]

    def say(self, parent: int, persona: str, answer: str, text: str | None = None) -> int:
        above = self.turns[parent]
        level = above["level"] + 1
        agent = "AB"[level % 2]
        other = "B" if agent == "A" else "A"
        turn_id = len(self.turns)
        self.turns.append({
            "id": turn_id, "parent": parent, "children": [], "level": level, "agent": agent, "persona": persona,
            "text": text or f"[{turn_id}] {agent} ({persona}) says {answer}.",
            "answer": {agent: answer, other: above["answer"][other]},
        })
        above["children"].append(turn_id)
        return turn_id

    def record(self) -> dict:
        return {"tree_id": self.tree_id, "question": self.question, "models": {}, "seed": 0, "split": "train",
                "both_first": self.both_first, "max_turns": 4, "turns": self.turns}

    def tree(self) -> Tree:
        return Tree.from_record(json.loads(json.dumps(self.record())), "test")


def resist_tree(tree_id: str = "resist", keep: str = "Paris", switch: str = "London",
                question: dict = PARIS) -> TreeBuilder:
    """B right, A pushing London; the leaf B turns say `keep` (resist persona) or `switch` (accept)."""
    t = TreeBuilder(tree_id, question)
    a0 = t.say(0, "logical", "London")
    b_keeps = t.say(a0, "resist", "Paris")
    t.say(a0, "accept", "London")  # agrees with A's wrong answer: this branch ends
    for persona in A_PERSONAS:
        a2 = t.say(b_keeps, persona, "London")
        t.say(a2, "resist", keep)
        t.say(a2, "accept", switch)
    return t


def accept_tree(tree_id: str = "accept") -> TreeBuilder:
    """A right (Paris), B wrong (London); at the leaves B either stays wrong or is persuaded."""
    t = TreeBuilder(tree_id)
    a0 = t.say(0, "resist", "Paris")
    b_wrong = t.say(a0, "resist", "London")
    t.say(a0, "accept", "Paris")  # agrees: branch ends
    for persona in A_PERSONAS:
        a2 = t.say(b_wrong, persona, "Paris")
        t.say(a2, "resist", "London")
        t.say(a2, "accept", "Paris")
    return t


def write_trees(path: Path, *builders: TreeBuilder) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(b.record()) + "\n" for b in builders))
    return path


def filter_all_train(tmp_path: Path, *builders: TreeBuilder, **kwargs):
    """run_filter with every tree in train; returns (result, train pairs)."""
    trees = write_trees(tmp_path / "trees.jsonl", *builders)
    out = tmp_path / "pairs"
    result = run_filter(FilterConfig(trees=trees, out=out, valid_fraction=0, test_fraction=0, **kwargs))
    return result, read_pairs(out, "train")


def scored(builder: TreeBuilder):
    tree = builder.tree()
    return score_tree(tree, unify_answers(tree, resolve_answers(tree)))


def summary(pairs: list[PreferencePair]) -> list[tuple]:
    return [(p.pair_id, p.kind, p.answers["chosen"], p.answers["rejected"], p.scores["chosen"], p.scores["rejected"])
            for p in pairs]


# --- the method on the two clean trees --------------------------------------------------------------


def test_clean_resist_tree_gives_three_resist_pairs_at_the_leaves(tmp_path):
    result, pairs = filter_all_train(tmp_path, resist_tree())
    # Leaves under each A2: B keeps Paris -> A wrong, B right: own 1 = subtree 1; B switches -> 0.
    # (1 - 0) / 1 = 1 >= 0.5. Responder B: previous answer (B1) Paris is correct, the persuader says
    # London, chosen correct, rejected wrong -> resist.
    assert summary(pairs) == [
        ("resist:5>6", "resist", "Paris", "London", 1, 0),
        ("resist:8>9", "resist", "Paris", "London", 1, 0),
        ("resist:11>12", "resist", "Paris", "London", 1, 0),
    ]
    # No other pair: the level-1 B siblings have 3 vs 0 children; the three A2 siblings tie at
    # subtree 1 + 1 + 0 = 2 each (3 unordered pairs, all below the margin).
    assert result.removed["different_child_counts"] == 1
    assert result.removed["below_margin"] == 3
    assert result.pairs_considered == 1 + 3 + 3
    assert result.counts["train"] == {"resist": 3, "accept": 0, "none": 0}
    assert result.trees == {"read": 1, "kept": 1, "train": 1, "valid": 0, "test": 0}


def test_clean_accept_tree_passes_the_inclusive_margin(tmp_path):
    _, pairs = filter_all_train(tmp_path, accept_tree())
    # Leaves: B persuaded to Paris -> both right, own 2; B stays on London -> own 1.
    # (2 - 1) / 2 = 0.5 >= 0.5 (inclusive, docs/method.md §3.4). Responder B: previous (B1) London wrong, the
    # persuader's Paris correct, chosen correct, rejected wrong -> accept.
    assert summary(pairs) == [
        ("accept:6>5", "accept", "Paris", "London", 2, 1),
        ("accept:9>8", "accept", "Paris", "London", 2, 1),
        ("accept:12>11", "accept", "Paris", "London", 2, 1),
    ]
    assert all(p.scores["chosen_own"] == 2 and p.scores["rejected_own"] == 1 for p in pairs)


def test_accept_leaf_pairs_vanish_above_the_margin(tmp_path):
    result, pairs = filter_all_train(tmp_path, accept_tree(), margin=0.51)
    assert pairs == []  # 0.5 < 0.51
    assert result.removed["below_margin"] == 3 + 3  # three A2 ties plus the three leaf pairs
    assert result.trees["kept"] == 1  # the tree has a disagreement; it just yields no pair


def test_tree_without_disagreement_is_dropped(tmp_path):
    t = TreeBuilder("agree")
    a0 = t.say(0, "logical", "Paris")
    t.say(a0, "resist", "paris.")  # the same answer once normalised
    t.say(a0, "accept", "AGREE")
    assert not has_disagreement(scored(t))
    result, pairs = filter_all_train(tmp_path, t, resist_tree())
    assert result.removed["trees_without_disagreement"] == 1
    assert result.trees["read"] == 2 and result.trees["kept"] == 1
    assert {p.tree_id for p in pairs} == {"resist"}


# --- answers: special tokens, aliases, unification ----------------------------------------------------


def test_agree_takes_the_other_answer_and_disagree_keeps_ones_own():
    t = TreeBuilder("tokens")
    a0 = t.say(0, "logical", "London")
    b1 = t.say(a0, "resist", "Paris")
    t.say(a0, "accept", "AGREE")  # B's opening did not see A's: no answer (see the test below)
    a2 = t.say(b1, "logical", "DISAGREE")  # A keeps its previous London
    t.say(a2, "accept", "AGREE")  # B takes A's (resolved) London
    t.say(a2, "resist", "DISAGREE")  # B keeps its previous Paris
    a2b = t.say(b1, "emotional", "AGREE")  # A takes B's Paris
    t.say(a2b, "resist", "NONE")  # NONE stays NONE
    resolved = resolve_answers(t.tree())
    assert resolved[0] == {"A": "NONE", "B": "NONE"}
    assert resolved[1] == {"A": "London", "B": "NONE"}
    assert resolved[3] == {"A": "London", "B": "NONE"}
    assert resolved[4] == {"A": "London", "B": "Paris"}
    assert resolved[5] == {"A": "London", "B": "London"}
    assert resolved[6] == {"A": "London", "B": "Paris"}
    assert resolved[7] == {"A": "Paris", "B": "Paris"}
    assert resolved[8] == {"A": "Paris", "B": "NONE"}


@pytest.mark.parametrize("both_first", [True, False])
def test_b_opening_agrees_only_with_what_it_saw(both_first):
    # Under both-first B opens without seeing A0, so its AGREE / DISAGREE cannot be about A's answer.
    t = TreeBuilder("opening-tokens", both_first=both_first)
    a0 = t.say(0, "logical", "London")
    t.say(a0, "resist", "AGREE")
    t.say(a0, "accept", "DISAGREE")
    resolved = resolve_answers(t.tree())
    assert resolved[2] == {"A": "London", "B": "NONE" if both_first else "London"}
    assert resolved[3] == {"A": "London", "B": "NONE"}  # DISAGREE keeps B's previous answer: none


def test_disagree_at_the_leaves_scores_like_repeating_the_previous_answer(tmp_path):
    # The resist tree with B's leaf answers as tokens: DISAGREE keeps B1's Paris, AGREE takes A's London.
    _, with_tokens = filter_all_train(tmp_path / "tokens", resist_tree(keep="DISAGREE", switch="AGREE"))
    _, with_words = filter_all_train(tmp_path / "words", resist_tree())
    assert summary(with_tokens) == summary(with_words)
    assert [p.answers["chosen"] for p in with_tokens] == ["Paris"] * 3


def test_aliases_are_normalised_before_matching():
    tower = {"question_id": "q-tower", "question": "Which Paris landmark was finished in 1889?",
             "answer": {"value": "Eiffel Tower", "aliases": ["Eiffel Tower"], "normalized_aliases": ["eiffel tower"]}}
    assert is_correct("The Eiffel Tower.", ["eiffel tower"])  # article and trailing dot go
    t = TreeBuilder("tower", tower)
    a0 = t.say(0, "logical", "The Eiffel Tower.")
    t.say(a0, "resist", "Notre-Dame")
    s = scored(t)
    assert s.correct[1] == {"A": True, "B": False}
    assert s.own[2] == 1


def test_contained_answers_are_unified_onto_the_correct_one():
    # "paris france" contains "paris", ratio 2*5/(12+5) = 0.59 > 0.5 -> the same answer; "Paris" is
    # correct and "Paris, France" is not, so both become "Paris".
    assert same_answer("Paris, France", "Paris")
    t = TreeBuilder("unify")
    a0 = t.say(0, "logical", "Paris, France")
    t.say(a0, "resist", "Paris")
    t.say(a0, "accept", "Lyon")
    tree = t.tree()
    unified = unify_answers(tree, resolve_answers(tree))
    assert unified[2] == {"A": "Paris", "B": "Paris"}
    assert unified[3] == {"A": "Paris, France", "B": "Lyon"}  # not the same: nothing changes
    s = score_tree(tree, unified)
    assert s.own == {0: 0, 1: 0, 2: 2, 3: 0}
    assert s.subtree[0] == 2


# --- the pair rules ------------------------------------------------------------------------------------


def test_siblings_with_different_child_counts_form_no_pair():
    # B1 resist (own 1, 1 child) vs B1 accept (own 0, leaf): a big score gap, but 1 vs 0 children.
    t = TreeBuilder("children")
    a0 = t.say(0, "logical", "London")
    b_keeps = t.say(a0, "resist", "Paris")
    t.say(a0, "accept", "London")
    t.say(b_keeps, "logical", "London")
    removed: Counter = Counter()
    assert sibling_pairs(scored(t), 0.5, removed) == []
    assert removed == Counter(sibling_pairs_considered=1, different_child_counts=1)


def test_both_fully_correct_siblings_are_skipped():
    t = TreeBuilder("both-right")
    a0 = t.say(0, "logical", "Paris")
    t.say(a0, "resist", "Paris.")
    t.say(a0, "accept", "the city of Paris")
    removed: Counter = Counter()
    assert sibling_pairs(scored(t), 0.0, removed) == []  # even with margin 0
    assert removed == Counter(sibling_pairs_considered=1, both_fully_correct=1)


def test_siblings_with_no_correct_answer_are_skipped():
    t = TreeBuilder("all-wrong")
    a0 = t.say(0, "logical", "London")
    t.say(a0, "resist", "Rome")
    t.say(a0, "accept", "London")
    removed: Counter = Counter()
    assert sibling_pairs(scored(t), 0.0, removed) == []  # hi == 0: nothing to divide by
    assert removed == Counter(sibling_pairs_considered=1, no_correct_answer=1)


def test_opening_pair_has_no_kind_and_each_unordered_pair_comes_once():
    # B1 resist right (own 1) vs B1 accept wrong (own 0), both leaves: a pair, but B has no previous
    # turn (its independent opening), so no kind.
    t = TreeBuilder("opening")
    a0 = t.say(0, "logical", "London")
    t.say(a0, "resist", "Paris")
    t.say(a0, "accept", "London")
    s = scored(t)
    removed: Counter = Counter()
    [candidate] = sibling_pairs(s, 0.5, removed)
    assert (candidate.chosen.id, candidate.rejected.id, candidate.kind) == (2, 3, None)
    assert pair_kind(s, candidate.chosen, candidate.rejected) is None


def test_pair_kind_from_the_responders_view():
    # B1 Paris (right). A2 logical says NONE (no persuasion), A2 emotional says "paris." (B's own answer).
    t = TreeBuilder("kinds")
    a0 = t.say(0, "logical", "London")
    b1 = t.say(a0, "resist", "Paris")
    t.say(a0, "accept", "London")
    a2_none = t.say(b1, "logical", "NONE")  # 4
    t.say(a2_none, "resist", "Paris")  # 5: A NONE, B right: own 1
    t.say(a2_none, "accept", "London")  # 6: own 0
    a2_same = t.say(b1, "emotional", "paris.")  # 7: both right: own 2
    t.say(a2_same, "resist", "Paris")  # 8: own 2
    t.say(a2_same, "accept", "London")  # 9: A right only: own 1
    pairs = sibling_pairs(scored(t), 0.5, Counter())
    assert [(c.chosen.id, c.rejected.id, c.kind) for c in pairs] == [
        # A2 siblings: subtrees 2 + 2 + 1 = 5 vs 1 + 1 + 0 = 2, (5 - 2) / 5 = 0.6. Responder A: its
        # previous London (A0) wrong, persuader B1's Paris right, chosen right, rejected NONE -> accept.
        (7, 4, "accept"),
        # Leaves under A2 NONE: 1 vs 0. B's previous Paris was right and the persuader's NONE differs
        # from it (NONE is never the same as an answer, docs/method.md §3.5): B keeping Paris resisted.
        (5, 6, "resist"),
        # Leaves under A2 "paris.": 2 vs 1, (2 - 1) / 2 = 0.5. The persuader's answer is B's own:
        # nothing to resist, and B was not wrong before, so nothing to accept either.
        (8, 9, None),
    ]



def test_a_right_persuader_in_other_words_is_no_resist_pair():
    # Gold aliases "John F. Kennedy" and "JFK" do not unify by string rules. B1 is right, A2 pushes
    # "JFK": right too, only worded differently, so B's leaves below make no resist pair (the
    # flipflop set would label it a wrong persuasion resisted).
    kennedy = {"question_id": "q-jfk", "question": "Which US president was shot in Dallas in 1963?",
               "answer": {"value": "John F. Kennedy", "aliases": ["John F. Kennedy", "JFK"],
                          "normalized_aliases": ["john f kennedy", "jfk"]}}
    t = TreeBuilder("aliases", question=kennedy)
    a0 = t.say(0, "logical", "Nixon")
    b1 = t.say(a0, "resist", "John F. Kennedy")
    t.say(a0, "accept", "Nixon")
    a2 = t.say(b1, "logical", "JFK")
    t.say(a2, "resist", "John F. Kennedy")  # own 2
    t.say(a2, "accept", "Nixon")  # own 1
    pairs = sibling_pairs(scored(t), 0.5, Counter())
    leaves = [c for c in pairs if t.turns[c.chosen.id]["level"] == 3]
    assert [(c.chosen.id, c.rejected.id) for c in leaves] == [(5, 6)]
    assert leaves[0].kind is None


# --- the reference code's format -----------------------------------------------------------------------


def reference_record(builder: TreeBuilder) -> dict:
    """The builder's tree in the reference code's layout: node_idx = pbt id - 1 (root -1), agent_idx
    0 = A / 1 = B, and extracted_ans with A's answer in slot 1 and B's in slot 0 (docs/method.md §2.13 and §8.1)."""
    nodes = []
    for turn in builder.turns:
        is_root = turn["parent"] is None
        nodes.append({
            "node_idx": turn["id"] - 1,
            "agent_idx": None if is_root else "AB".index(turn["agent"]),
            "generation": turn["text"],
            "extracted_ans": [turn["answer"]["B"], turn["answer"]["A"]],
            "parent": None if is_root else turn["parent"] - 1,
            "children": [c - 1 for c in turn["children"]],
        })
    return {"data": nodes, "metadata": {"question": builder.question, "both_first": True},
            "model_a": "meta-llama/Llama-3.1-8B-Instruct", "model_b": "mistralai/Mistral-7B-Instruct-v0.2"}


def test_reference_format_gives_the_same_resist_pairs(tmp_path):
    builder = resist_tree(tree_id=PARIS["question_id"])  # the reference names trees by question id
    record = reference_record(builder)
    # B's keeping turn, node 1: B says Paris (slot 0), A's London carried over (slot 1).
    assert record["data"][2] == {"node_idx": 1, "agent_idx": 1, "generation": builder.turns[2]["text"],
                                 "extracted_ans": ["Paris", "London"], "parent": 0, "children": [3, 6, 9]}
    ref_file = tmp_path / "ref" / "tree_0.json"
    ref_file.parent.mkdir()
    ref_file.write_text(json.dumps(record))
    [tree] = read_trees(ref_file.parent)
    assert tree.source_format == "reference"
    assert tree.turn(2).answer == {"A": "London", "B": "Paris"}  # keyed by agent, not by slot

    ref = run_filter(FilterConfig(trees=ref_file, out=tmp_path / "ref-pairs", valid_fraction=0, test_fraction=0))
    _, ours = filter_all_train(tmp_path, builder)
    theirs = read_pairs(tmp_path / "ref-pairs", "train")
    assert ref.counts["train"] == {"resist": 3, "accept": 0, "none": 0}

    def comparable(pair: PreferencePair) -> dict:
        record = pair.to_record()
        record.pop("personas")  # the reference nodes carry no persona
        return record

    assert [comparable(p) for p in theirs] == [comparable(p) for p in ours]

    # What the reference code does (docs/method.md §8.1): read each agent's answer from the slot of its own
    # index: every B turn reads A's London and every A turn reads B's answer. Then B always says
    # London, all siblings tie, and the clean tree yields no pair at all.
    misread = reference_record(builder)
    for node in misread["data"]:
        node["extracted_ans"] = node["extracted_ans"][::-1]
    misread_file = tmp_path / "misread.json"
    misread_file.write_text(json.dumps(misread))
    [wrong] = read_trees(misread_file)
    assert sibling_pairs(score_tree(wrong, unify_answers(wrong, resolve_answers(wrong))), 0.5, Counter()) == []


# --- pair content -------------------------------------------------------------------------------------


def test_pair_prompt_is_the_responders_view_with_the_standard_persona(tmp_path):
    builder = resist_tree()
    _, pairs = filter_all_train(tmp_path, builder)
    pair = pairs[0]  # B3 (id 5) over B3 (id 6), answering A2 logical (id 4)
    text = {t["id"]: t["text"] for t in builder.turns}
    # Both-first: B sees the dialogue from its own first turn (B1, id 2) on; its turns are assistant,
    # A's are user; the last message is the persuasion turn. Persona: standard, not resist/accept.
    assert pair.prompt == [
        {"role": "user", "content": question_prompt(PARIS["question"], "standard")},
        {"role": "assistant", "content": text[2]},
        {"role": "user", "content": text[4]},
    ]
    assert PERSONAS["standard"] in pair.prompt[0]["content"]
    assert PERSONAS["resist"] not in pair.prompt[0]["content"]
    assert PERSONAS["accept"] not in pair.prompt[0]["content"]
    assert (pair.chosen, pair.rejected) == ([{"role": "assistant", "content": text[5]}],
                                            [{"role": "assistant", "content": text[6]}])
    assert (pair.chosen_text, pair.rejected_text) == (text[5], text[6])
    assert pair.to_record() | {"prompt": None, "chosen": None, "rejected": None} == {
        "pair_id": "resist:5>6", "tree_id": "resist", "split": "train", "kind": "resist", "responder": "B",
        "level": 3, "prompt": None, "chosen": None, "rejected": None, "question": PARIS["question"],
        "gold_aliases": ["paris"],
        "answers": {"chosen": "Paris", "rejected": "London", "persuader": "London", "responder_previous": "Paris"},
        "scores": {"chosen": 1, "rejected": 0, "chosen_own": 1, "rejected_own": 0},
        "personas": {"chosen": "resist", "rejected": "accept"},
        "turn_ids": {"chosen": 5, "rejected": 6, "persuasion": 4},
    }


def test_pair_prompt_without_both_first_joins_consecutive_user_messages():
    builder = resist_tree()
    builder.both_first = False
    s = scored(builder)
    [candidate] = [c for c in sibling_pairs(s, 0.5, Counter()) if c.chosen.id == 5]
    pair = build_pair(s, candidate, "train")
    text = {t["id"]: t["text"] for t in builder.turns}
    # B now also sees A's opening; it is a user message, merged with the question with a blank line.
    assert pair.prompt == [
        {"role": "user", "content": f"{question_prompt(PARIS['question'], 'standard')}\n\n{text[1]}"},
        {"role": "assistant", "content": text[2]},
        {"role": "user", "content": text[4]},
    ]


# --- splits ---------------------------------------------------------------------------------------------


def test_split_trees_is_70_15_15_and_stable_for_a_seed():
    ids = [f"t{i:02d}" for i in range(20)]
    split = split_trees(ids, seed=42, valid_fraction=0.15, test_fraction=0.15)
    assert sorted(split) == ids
    assert Counter(split.values()) == {"train": 14, "valid": 3, "test": 3}
    assert split_trees(list(reversed(ids)), 42, 0.15, 0.15) == split  # input order does not matter
    assert split_trees(ids, 7, 0.15, 0.15) != split


def test_stratified_split_sends_both_kinds_to_every_split():
    """Thin data (3 trees with resist pairs, 3 with accept pairs, 14 without a kind): plain 70/15/15
    could leave valid or test without a kind; each stratum of 3+ trees gives both at least one tree."""
    strata = {f"r{i}": ("resist",) for i in range(3)} | {f"a{i}": ("accept",) for i in range(3)}
    strata |= {f"n{i:02d}": () for i in range(14)}
    split = split_trees(list(strata), 42, 0.15, 0.15, strata)
    for kind in ("resist", "accept"):
        assert Counter(split[t] for t in strata if strata[t] == (kind,)) == {"train": 1, "valid": 1, "test": 1}
    assert Counter(split[t] for t in strata if not strata[t]) == {"train": 10, "valid": 2, "test": 2}
    assert split_trees(list(strata), 42, 0.15, 0.15, strata) == split  # stable


def test_every_pair_of_a_tree_lands_in_that_trees_split(tmp_path):
    builders = [resist_tree(f"r{i:02d}") if i % 2 else accept_tree(f"a{i:02d}") for i in range(20)]
    trees = write_trees(tmp_path / "trees.jsonl", *builders)
    result = run_filter(FilterConfig(trees=trees, out=tmp_path / "pairs"))
    # split per stratum (10 resist trees, 10 accept trees): round(1.5) = 2 valid, 2 test, 6 train each
    assert result.trees == {"read": 20, "kept": 20, "train": 12, "valid": 4, "test": 4}
    seen = {}
    for split in ("train", "valid", "test"):
        for pair in read_pairs(tmp_path / "pairs", split):
            assert pair.split == split
            seen.setdefault(pair.tree_id, set()).add(split)
    assert len(seen) == 20 and all(len(splits) == 1 for splits in seen.values())
    assert sum(sum(c.values()) for c in result.counts.values()) == 20 * 3


# --- idempotence -----------------------------------------------------------------------------------------


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_is_byte_identical_and_other_settings_are_refused(tmp_path):
    trees = write_trees(tmp_path / "trees.jsonl", resist_tree(), accept_tree())
    out = tmp_path / "pairs"
    cfg = FilterConfig(trees=trees, out=out, valid_fraction=0, test_fraction=0)
    first = run_filter(cfg)
    written = folder_bytes(out)
    assert set(written) == {"train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json"}
    assert not first.reused

    second = run_filter(cfg)
    assert second.reused and second.counts == first.counts
    assert folder_bytes(out) == written

    # Writing it again from scratch gives the same bytes too: no timestamps, no unordered output.
    shutil.rmtree(out)
    again = run_filter(cfg)
    assert not again.reused
    assert folder_bytes(out) == written

    with pytest.raises(PbtError, match="margin"):
        run_filter(FilterConfig(trees=trees, out=out, margin=0.6, valid_fraction=0, test_fraction=0))
    assert folder_bytes(out) == written  # the refusal leaves the old output alone
    changed = run_filter(FilterConfig(trees=trees, out=out, margin=0.6, valid_fraction=0, test_fraction=0,
                                      overwrite=True))
    assert changed.counts["train"] == {"resist": 3, "accept": 0, "none": 0}  # 0.5 < 0.6 drops the accept pairs
    assert json.loads((out / "manifest.json").read_text())["settings"]["margin"] == 0.6


def test_pairs_made_with_other_prompt_texts_are_not_reused(tmp_path, monkeypatch):
    import pbt_cli.data.prompts as prompts

    # every pair's prompt holds the standard persona's text, so a new text means new pairs
    trees = write_trees(tmp_path / "trees.jsonl", resist_tree())
    cfg = FilterConfig(trees=trees, out=tmp_path / "pairs", valid_fraction=0, test_fraction=0)
    run_filter(cfg)
    assert run_filter(cfg).reused
    monkeypatch.setattr(prompts, "PROMPTS_VERSION", prompts.PROMPTS_VERSION + "-edited")
    with pytest.raises(PbtError, match="prompts"):
        run_filter(cfg)


# --- the judge (scripted) ----------------------------------------------------------------------------------


def judge(same_pairs: set[frozenset[str]], stance_of) -> ScriptedGenerator:
    """A scripted judge: 'Yes' for the answer pairs in `same_pairs`, and `stance_of(reply_text)` for stances.

    Its replies continue the "Verdict:" prefix of the judge prompts.
    """

    def reply(conversation, sampling) -> str:
        user = conversation[0]["content"]
        assert conversation[-1] == {"role": "assistant", "content": "Verdict:"}
        if user.startswith(SAME_ANSWER_INSTRUCTIONS):
            first = user.split("Answer 1: ", 1)[1].split("\n", 1)[0]
            second = user.split("Answer 2: ", 1)[1].split("\n", 1)[0]
            return " Yes" if frozenset((first, second)) in same_pairs else " No"
        assert user.startswith(STANCE_INSTRUCTIONS)
        return " " + stance_of(user.split("\nReply: ", 1)[1])

    return ScriptedGenerator(reply, name="judge-model")


def judged_filter(tmp_path: Path, scripted: ScriptedGenerator, *builders: TreeBuilder):
    trees = write_trees(tmp_path / "trees.jsonl", *builders)
    cfg = FilterConfig(trees=trees, out=tmp_path / "pairs", judge=ModelSpec("judge-model"), valid_fraction=0,
                       test_fraction=0)
    result = run_filter(cfg, pool=GeneratorPool(preset={"judge-model": scripted}))
    return result, read_pairs(tmp_path / "pairs", "train")


JFK = {"question_id": "q-jfk", "question": "Which US president was shot in Dallas in 1963?",
       "answer": {"value": "John F. Kennedy", "aliases": ["John F. Kennedy"],
                  "normalized_aliases": ["john f kennedy", "john fitzgerald kennedy"]}}


def jfk_tree() -> TreeBuilder:
    t = TreeBuilder("jfk", JFK)
    a0 = t.say(0, "logical", "John F. Kennedy")
    t.say(a0, "resist", "Nixon")
    t.say(a0, "accept", "JFK")  # the same person, but "jfk" is no gold alias and no string rule matches
    return t


def test_judge_sameness_makes_both_answers_correct(tmp_path):
    # Without the judge: B1 resist (A right, B Nixon wrong) own 1, B1 accept (A right, JFK "wrong")
    # own 1 -> a tie, no pair.
    _, plain = filter_all_train(tmp_path / "plain", jfk_tree())
    assert plain == []
    # With it: JFK is judged the same as the correct answer, so B1 accept has own 2:
    # (2 - 1) / 2 = 0.5 -> a pair (of no kind: it is B's opening).
    scripted = judge({frozenset(("John F. Kennedy", "JFK"))}, stance_of=lambda reply: "AGREE")
    result, pairs = judged_filter(tmp_path / "judged", scripted, jfk_tree())
    assert summary(pairs) == [("jfk:3>2", None, "John F. Kennedy", "Nixon", 2, 1)]
    # One batch with both turns where exactly one answer is correct; no stance batch (no kind).
    assert len(scripted.calls) == 1
    assert [conversation for conversation, _ in scripted.calls[0]] == [
        same_answer_conversation(JFK["question"], "John F. Kennedy", "Nixon"),
        same_answer_conversation(JFK["question"], "John F. Kennedy", "JFK"),
    ]
    assert result.removed["kind_not_confirmed_by_judge"] == 0


def test_judge_confirms_resist_kinds(tmp_path):
    # The leaf texts say which answer B gives; a faithful judge calls "Paris" replies DISAGREE.
    scripted = judge(set(), stance_of=lambda reply: "DISAGREE" if "Paris" in reply else "AGREE")
    result, pairs = judged_filter(tmp_path, scripted, resist_tree())
    assert [p.pair_id for p in pairs] == ["resist:5>6", "resist:8>9", "resist:11>12"]
    assert result.removed["kind_not_confirmed_by_judge"] == 0
    assert len(scripted.calls) <= 2  # one sameness batch, one stance batch
    assert len(scripted.calls[-1]) == 3 * 2  # chosen and rejected of each pair, together


def test_pairs_the_judge_labels_the_other_way_are_dropped(tmp_path):
    scripted = judge(set(), stance_of=lambda reply: "AGREE" if "Paris" in reply else "DISAGREE")
    result, pairs = judged_filter(tmp_path, scripted, resist_tree())
    assert pairs == []
    assert result.removed["kind_not_confirmed_by_judge"] == 3
    assert len(scripted.calls) <= 2


# --- bad input ---------------------------------------------------------------------------------------------


def test_garbage_line_in_the_middle_is_an_error(tmp_path):
    trees = tmp_path / "trees.jsonl"
    good = json.dumps(resist_tree().record())
    trees.write_text(f"{good}\nthis is not json\n{json.dumps(accept_tree().record())}\n")
    with pytest.raises(PbtError, match="line 2: not valid JSON"):
        run_filter(FilterConfig(trees=trees, out=tmp_path / "pairs"))


def test_partial_last_line_from_a_crash_is_skipped(tmp_path):
    trees = tmp_path / "trees.jsonl"
    trees.write_text(json.dumps(resist_tree().record()) + "\n" + json.dumps(accept_tree().record())[:50])
    assert [t.tree_id for t in read_trees(trees)] == ["resist"]


def test_garbage_before_a_last_line_without_newline_is_an_error(tmp_path):
    # Line 2 is complete (newline-terminated) garbage; line 3 is a whole tree without a final newline.
    trees = tmp_path / "trees.jsonl"
    trees.write_text(f"{json.dumps(resist_tree('t1').record())}\nthis is not json\n"
                     f"{json.dumps(resist_tree('t3').record())}")
    with pytest.raises(PbtError, match="line 2"):
        list(read_trees(trees))


def test_turn_with_a_missing_parent_is_an_error(tmp_path):
    builder = resist_tree()
    builder.turns[5]["parent"] = 99
    trees = write_trees(tmp_path / "trees.jsonl", builder)
    with pytest.raises(PbtError, match="turn 5 names parent 99, which is missing"):
        run_filter(FilterConfig(trees=trees, out=tmp_path / "pairs"))


def test_tree_without_gold_aliases_is_an_error(tmp_path):
    no_gold = {"question_id": "q", "question": "What?", "answer": {"value": "", "aliases": [],
                                                                   "normalized_aliases": []}}
    trees = write_trees(tmp_path / "trees.jsonl", resist_tree(question=no_gold))
    with pytest.raises(PbtError, match="no gold aliases"):
        run_filter(FilterConfig(trees=trees, out=tmp_path / "pairs"))


def test_empty_input_folder_is_an_error(tmp_path):
    (tmp_path / "trees").mkdir()
    with pytest.raises(PbtError, match="holds no tree files"):
        run_filter(FilterConfig(trees=tmp_path / "trees", out=tmp_path / "pairs"))


def test_tree_id_twice_is_an_error(tmp_path):
    folder = tmp_path / "trees"
    folder.mkdir()
    write_trees(folder / "shard0.jsonl", resist_tree("same"))
    write_trees(folder / "shard1.jsonl", accept_tree("same"))
    with pytest.raises(PbtError, match="tree same appears twice"):
        run_filter(FilterConfig(trees=folder, out=tmp_path / "pairs"))


def test_turn_objects_round_trip():
    # The builder's records are what Turn.to_record writes (so the tests feed the real format).
    tree = resist_tree().tree()
    root, first = tree.turns[0], tree.turns[1]
    assert isinstance(first, Turn) and root.is_root and root.level == -1 and root.agent is None
    assert (first.level, first.agent, first.answer) == (0, "A", {"A": "London", "B": None})
    assert Tree.from_record(tree.to_record(), "again").to_record() == tree.to_record()


# --- the CLI ---------------------------------------------------------------------------------------------


def test_cli_filter_prints_the_counts(capsys, tmp_path):
    trees = write_trees(tmp_path / "trees.jsonl", resist_tree(), accept_tree())
    result = run_cli(capsys, "filter", "--trees", trees, "--out", tmp_path / "pairs")
    assert result.exit_code == 0, result.stderr
    # Two trees: round(2 * 0.15) = 0 for valid and test, so all six pairs are in train.
    rows = {line.split()[1]: line.split() for line in result.stderr.splitlines()
            if line.strip().startswith("│") and line.split()[1] in ("train", "valid", "test")}
    assert [int(v) for v in rows["train"][2:] if v.isdigit()] == [3, 3, 0, 6]  # resist, accept, none, total
    assert [int(v) for v in rows["valid"][2:] if v.isdigit()] == [0, 0, 0, 0]
    assert "resist" in result.stderr and "accept" in result.stderr
    assert (tmp_path / "pairs" / "train.jsonl").is_file()


def test_cli_filter_missing_trees_is_one_line(capsys, tmp_path):
    result = run_cli(capsys, "filter", "--trees", tmp_path / "nope.jsonl", "--out", tmp_path / "pairs")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "pairs").exists()


# --- --protocol original-code: the original release's scoring and kinds (docs/method.md §8.7) -----------------


def scored_as(builder: TreeBuilder, protocol: str):
    tree = builder.tree()
    return score_tree(tree, unify_answers(tree, resolve_answers(tree), protocol=protocol), protocol)


def test_original_code_matches_answers_only_lower_cased_and_stripped():
    # The original's tree scoring: "Paris." and "The Paris" miss the gold "paris"; " PARIS " hits it.
    for answer, paper, original in (("Paris.", True, False), ("The Paris", True, False), (" PARIS ", True, True)):
        assert is_correct(answer, ["paris"]) is paper
        assert is_correct(answer, ["paris"], "original-code") is original
    assert same_answer("St. Paul", "st paul") and not same_answer("St. Paul", "st paul", "original-code")
    # resist tree whose B says "Paris." at the leaves: no correct chosen reply, so no resist pair
    tree = resist_tree(keep="Paris.")
    assert [c.kind for c in sibling_pairs(scored_as(tree, "paper"), 0.5, Counter())] == ["resist"] * 3
    assert sibling_pairs(scored_as(tree, "original-code"), 0.5, Counter()) == []


def test_original_code_gives_no_kind_to_pairs_answering_bs_opening():
    # A0 London (wrong); B1 Paris; A2 logical comes round to Paris (both right, own 2), A2 emotional keeps
    # London (own 1): (2 - 1) / 2 = 0.5, a pair with A as responder and A0 as its previous turn. The paper
    # rules make it an accept pair; the original stored A0 without B's answer and gave it no kind.
    t = TreeBuilder("level2")
    a0 = t.say(0, "logical", "London")
    b1 = t.say(a0, "resist", "Paris")
    t.say(b1, "logical", "Paris")
    t.say(b1, "emotional", "London")
    kinds = {protocol: [c.kind for c in sibling_pairs(scored_as(t, protocol), 0.5, Counter())]
             for protocol in ("paper", "original-code")}
    assert kinds == {"paper": ["accept"], "original-code": [None]}


def test_original_code_accept_needs_no_correct_persuader():
    # B1 London (wrong); A2 pushes Rome (also wrong); B3 accept says Paris (right), B3 resist keeps London.
    t = TreeBuilder("wrong-persuader")
    a0 = t.say(0, "logical", "Rome")
    b1 = t.say(a0, "resist", "London")
    a2 = t.say(b1, "logical", "Rome")
    t.say(a2, "accept", "Paris")
    t.say(a2, "resist", "London")
    kinds = {protocol: [c.kind for c in sibling_pairs(scored_as(t, protocol), 0.5, Counter())]
             for protocol in ("paper", "original-code")}
    assert kinds["paper"] == [None] and kinds["original-code"] == ["accept"]


def test_original_code_keeps_trees_whose_only_disagreement_is_none():
    t = TreeBuilder("none-only")
    a0 = t.say(0, "logical", "Paris")
    b1 = t.say(a0, "resist", "NONE")
    t.say(b1, "logical", "Paris")
    assert not has_disagreement(scored_as(t, "paper"))
    assert has_disagreement(scored_as(t, "original-code"))


def test_original_code_pair_prompt_keeps_as_opening_and_is_recorded(tmp_path):
    from pbt_cli.data.prompts import ORIGINAL_OPENING

    _, pairs = filter_all_train(tmp_path, resist_tree(), protocol="original-code")
    leaf = next(p for p in pairs if p.level == 3)
    texts = {t["id"]: t["text"] for t in resist_tree().turns}
    # empty user turn, the standard prompt as assistant, then A0 (user), B1 (assistant), A2 (user)
    assert [m["role"] for m in leaf.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert leaf.prompt[0]["content"] == ""
    assert leaf.prompt[1]["content"].startswith(ORIGINAL_OPENING)
    assert leaf.prompt[1]["content"].endswith("Question: What is the capital of France?")
    assert [m["content"] for m in leaf.prompt[2:]] == [texts[1], texts[2], texts[leaf.turn_ids["persuasion"]]]
    manifest = json.loads((tmp_path / "pairs" / "manifest.json").read_text())
    assert manifest["settings"]["protocol"] == "original-code"
