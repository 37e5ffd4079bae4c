"""`pbt filter`: from dialogue trees to preference pairs (docs/method.md §3, with §8's fixes).

Pure functions do the method (unify, score, pair, kind, split); `run_filter` reads trees, asks the
optional judge in batched calls (its replies kept in `judge_cache.jsonl` as they come, so a killed
run does not ask again), and writes `train.jsonl`, `valid.jsonl`, `test.jsonl` and a
`manifest.json` into a staging folder whose contents replace the earlier pairs only when complete.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from pbt_cli import stops
from pbt_cli.artifacts import MANIFEST, base_manifest, sha256_file
from pbt_cli.config import stable_hash, to_plain
from pbt_cli.data.answers import NONE, ORIGINAL_CODE, PAPER, PROTOCOLS, is_correct, is_special, same_answer
from pbt_cli.data.jsonl import drop_unfinished_last_line, ends_unfinished, jsonl_writer, read_jsonl
from pbt_cli.data.pairs import KINDS, SPLIT_FILES, SPLITS, PreferencePair, assistant_message, write_pairs
from pbt_cli.data.prompts import (
    EVAL_PERSONA,
    parse_stance,
    parse_yes_no,
    prompts_hash,
    same_answer_conversation,
    stance_conversation,
)
from pbt_cli.data.trees import AGENTS, Tree, Turn, other_agent, read_trees, resolve_answers, tree_files
from pbt_cli.errors import PbtError, require_one_of
from pbt_cli.models.backends import BackendOptions, GeneratorPool
from pbt_cli.models.backends.base import Generator, Sampling, sampling_rule
from pbt_cli.models.chat import Conversation
from pbt_cli.models.spec import ModelSpec
from pbt_cli.outputs import OutputFolder, claim_output, read_json_manifest, require_complete, require_stage
from pbt_cli.pipeline.diagnostics import tree_diagnostics
from pbt_cli.pipeline.dialogue import agent_view, original_pair_prompt
from pbt_cli.progress import NULL_PROGRESS, ProgressSink

JUDGE_SAMPLING = Sampling(temperature=0.0, max_new_tokens=4)


@dataclass(frozen=True)
class FilterConfig:
    trees: Path
    out: Path
    margin: float = 0.5
    judge: ModelSpec | None = None
    seed: int = 42
    valid_fraction: float = 0.15
    test_fraction: float = 0.15
    overwrite: bool = False
    allow_partial: bool = False  # use the trees of an unfinished `pbt generate` run
    backend: BackendOptions = field(default_factory=BackendOptions)
    protocol: str = PAPER  # original-code: the released code's scoring, kinds and pair prompts (§8.7)

    def __post_init__(self) -> None:
        require_one_of("--protocol", self.protocol, PROTOCOLS)
        if not 0 <= self.margin <= 1:
            raise PbtError(f"--margin must be between 0 and 1, got {self.margin}")
        if self.valid_fraction < 0 or self.test_fraction < 0 or self.valid_fraction + self.test_fraction >= 1:
            raise PbtError("--valid-fraction and --test-fraction must be >= 0 and leave room for a train split")


# --- the method, as pure functions ---------------------------------------------------------------


@dataclass
class ScoredTree:
    """A tree with unified answers, per-agent correctness, own scores and subtree scores per turn."""

    tree: Tree
    answers: dict[int, dict[str, str]]
    correct: dict[int, dict[str, bool]]
    own: dict[int, int]
    subtree: dict[int, int]
    protocol: str = PAPER


def unify_answers(tree: Tree, resolved: dict[int, dict[str, str]],
                  judged_same: dict[tuple[str, int], bool] | None = None,
                  protocol: str = PAPER) -> dict[int, dict[str, str]]:
    """Both agents' answers per turn, with two answers that name the same thing made identical.

    Same means: string rules (normalised equality, or containment with similarity > 0.5), or the
    judge said so. When they are the same and one is correct, both take the correct one.
    """
    aliases = tree.question.normalized_aliases
    unified: dict[int, dict[str, str]] = {}
    for turn_id, state in resolved.items():
        a, b = state["A"], state["B"]
        same = same_answer(a, b, protocol) or bool((judged_same or {}).get((tree.tree_id, turn_id)))
        a_ok, b_ok = is_correct(a, aliases, protocol), is_correct(b, aliases, protocol)
        if same and a_ok != b_ok:
            a = b = a if a_ok else b
        unified[turn_id] = {"A": a, "B": b}
    return unified


def score_tree(tree: Tree, unified: dict[int, dict[str, str]], protocol: str = PAPER) -> ScoredTree:
    aliases = tree.question.normalized_aliases
    correct = {tid: {agent: is_correct(ans[agent], aliases, protocol) for agent in AGENTS}
               for tid, ans in unified.items()}
    own = {tid: int(flags["A"]) + int(flags["B"]) for tid, flags in correct.items()}
    subtree: dict[int, int] = {}
    for turn in reversed(tree.depth_first()):  # children before parents, without recursion (deep chains)
        subtree[turn.id] = own[turn.id] + sum(subtree[child] for child in turn.children)
    return ScoredTree(tree=tree, answers=unified, correct=correct, own=own, subtree=subtree, protocol=protocol)


def has_disagreement(scored: ScoredTree) -> bool:
    """Whether the agents ever hold different (non-NONE) answers at some turn.

    Under `original-code` a NONE against an answer counts too, at any turn after A's opening: the
    original dropped a tree only when every such turn agreed, which keeps the trees behind its
    NONE-persuasion resist pairs (docs/method.md §8.7).
    """
    if scored.protocol == ORIGINAL_CODE:
        tree = scored.tree
        return any(tree.turn(tid).level >= 1 and state["A"] != state["B"] and not (state["A"] == state["B"] == NONE)
                   and not same_answer(state["A"], state["B"], ORIGINAL_CODE)
                   for tid, state in scored.answers.items() if not tree.turn(tid).is_root)
    for state in scored.answers.values():
        a, b = state["A"], state["B"]
        if not is_special(a) and not is_special(b) and a != b and not same_answer(a, b):
            return True
    return False


@dataclass
class Candidate:
    chosen: Turn
    rejected: Turn
    kind: str | None


def sibling_pairs(scored: ScoredTree, margin: float, removed: Counter) -> list[Candidate]:
    """Pairs of siblings by the margin rule (inclusive, docs/method.md §3.4 and §8.2), each unordered pair once."""
    tree = scored.tree
    found: list[Candidate] = []
    for parent in tree.turns:
        for first, second in combinations(tree.children(parent), 2):
            removed["sibling_pairs_considered"] += 1
            if len(first.children) != len(second.children):
                removed["different_child_counts"] += 1
                continue
            if scored.own[first.id] == 2 and scored.own[second.id] == 2:
                removed["both_fully_correct"] += 1
                continue
            high, low = sorted((first, second), key=lambda t: scored.subtree[t.id], reverse=True)
            hi, lo = scored.subtree[high.id], scored.subtree[low.id]
            if hi == 0:
                removed["no_correct_answer"] += 1
                continue
            if (hi - lo) / hi < margin or hi == lo:
                removed["below_margin"] += 1
                continue
            found.append(Candidate(chosen=high, rejected=low, kind=pair_kind(scored, high, low)))
    return found


def pair_kind(scored: ScoredTree, chosen: Turn, rejected: Turn) -> str | None:
    """resist / accept / None, from the responder's view (docs/method.md §3.5).

    Under `original-code` (§8.7): a pair whose responder's previous turn is A's opening gets no kind
    (the original stored that turn without B's answer and skipped it), and an accept pair needs no
    correct persuader.
    """
    tree = scored.tree
    original = scored.protocol == ORIGINAL_CODE
    responder = chosen.agent
    persuader = other_agent(responder)
    parent = tree.turn(chosen.parent)
    if parent.is_root or parent.parent is None:
        return None
    grandparent = tree.turn(parent.parent)
    if grandparent.is_root or grandparent.agent != responder:
        return None  # the responder has no previous turn (B's independent opening)
    if original and grandparent.level == 0:
        return None
    previous = scored.answers[grandparent.id][responder]
    previous_ok = scored.correct[grandparent.id][responder]
    persuasion = scored.answers[parent.id][persuader]
    persuasion_ok = scored.correct[parent.id][persuader]
    chosen_ok = scored.correct[chosen.id][responder]
    rejected_ok = scored.correct[rejected.id][responder]
    if not chosen_ok or rejected_ok:
        return None
    # The persuader's answer differs from the responder's correct one: a wrong answer, or NONE (which is
    # never correct and never the same as another answer). A persuader who is right, even in other
    # words ("JFK" after "John F. Kennedy"), is not a wrong persuasion.
    if previous_ok and not persuasion_ok and not same_answer(persuasion, previous, scored.protocol):
        return "resist"
    if not previous_ok and (persuasion_ok or original):
        return "accept"
    return None


def split_trees(tree_ids: list[str], seed: int, valid_fraction: float, test_fraction: float,
                strata: dict[str, Any] | None = None) -> dict[str, str]:
    """Assign whole trees to train / valid / test (never single pairs), stable for a seed.

    With `strata` (tree id -> which kinds of pair it holds) each stratum is split on its own, so
    resist and accept pairs reach every split in the same proportions; a stratum of trees that
    hold pairs of a kind, three trees or more, always gives valid and test at least one tree.
    Without it (or for the trees without kinds) the proportions are simply 70/15/15.
    """
    groups: dict[Any, list[str]] = {}
    for tree_id in sorted(tree_ids):
        groups.setdefault((strata or {}).get(tree_id), []).append(tree_id)
    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for key in sorted(groups, key=repr):
        order = groups[key]
        rng.shuffle(order)
        n_valid = round(len(order) * valid_fraction)
        n_test = round(len(order) * test_fraction)
        if key and len(order) >= 3:  # a stratum that carries a kind of pair
            n_valid = max(n_valid, 1 if valid_fraction > 0 else 0)
            n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_train = len(order) - n_valid - n_test
        splits = ["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test
        assignment.update(zip(order, splits, strict=True))
    return assignment


def build_pair(scored: ScoredTree, candidate: Candidate, split: str) -> PreferencePair:
    tree = scored.tree
    chosen, rejected = candidate.chosen, candidate.rejected
    responder = chosen.agent
    parent = tree.turn(chosen.parent)
    path = tree.path_to(parent.id) if not parent.is_root else []
    if scored.protocol == ORIGINAL_CODE:
        # the original built every pair prompt as A's view, keeping A's opening (docs/method.md §8.7)
        prompt = original_pair_prompt(tree.question.question, path)
    else:
        prompt = agent_view(tree.question.question, path, responder, EVAL_PERSONA, tree.both_first)
    previous = None
    if not parent.is_root and parent.parent is not None and not tree.turn(parent.parent).is_root:
        previous = scored.answers[parent.parent][responder]
    return PreferencePair(
        pair_id=f"{tree.tree_id}:{chosen.id}>{rejected.id}", tree_id=tree.tree_id, split=split, kind=candidate.kind,
        responder=responder, level=chosen.level, prompt=prompt, chosen=assistant_message(chosen.text),
        rejected=assistant_message(rejected.text),
        question=tree.question.question, gold_aliases=list(tree.question.normalized_aliases),
        answers={"chosen": scored.answers[chosen.id][responder], "rejected": scored.answers[rejected.id][responder],
                 "persuader": None if parent.is_root else scored.answers[parent.id][other_agent(responder)],
                 "responder_previous": previous},
        scores={"chosen": scored.subtree[chosen.id], "rejected": scored.subtree[rejected.id],
                "chosen_own": scored.own[chosen.id], "rejected_own": scored.own[rejected.id]},
        personas={"chosen": chosen.persona, "rejected": rejected.persona},
        turn_ids={"chosen": chosen.id, "rejected": rejected.id, "persuasion": parent.id},
    )


# --- the judge -----------------------------------------------------------------------------------


def judge_same_answers(trees: list[Tree], resolved: dict[str, dict[int, dict[str, str]]],
                       judge: Generator, protocol: str = PAPER) -> dict[tuple[str, int], bool]:
    """Ask the judge, in one batch, about every turn where sameness changes a score.

    That is where both agents give an answer, string rules do not call them the same, and exactly
    one of them is correct.
    """
    queries: list[tuple[tuple[str, int], list[dict[str, str]]]] = []
    for tree in trees:
        aliases = tree.question.normalized_aliases
        for turn_id, state in resolved[tree.tree_id].items():
            a, b = state["A"], state["B"]
            if is_special(a) or is_special(b) or same_answer(a, b, protocol):
                continue
            if is_correct(a, aliases, protocol) != is_correct(b, aliases, protocol):
                queries.append(((tree.tree_id, turn_id), same_answer_conversation(tree.question.question, a, b)))
    if not queries:
        return {}
    replies = judge.chat([conversation for _, conversation in queries], JUDGE_SAMPLING)
    return {key: parse_yes_no(reply) is True for (key, _), reply in zip(queries, replies, strict=True)}


def confirm_kinds(scored_trees: dict[str, ScoredTree], candidates: list[tuple[str, Candidate]],
                  judge: Generator) -> list[bool]:
    """Whether the judge's stance labels agree with each candidate's kind (pairs of no kind pass)."""
    queries, slots = [], []
    for index, (tree_id, candidate) in enumerate(candidates):
        if candidate.kind is None:
            continue
        tree = scored_trees[tree_id].tree
        persuasion = tree.turn(candidate.chosen.parent).text
        for turn in (candidate.chosen, candidate.rejected):
            queries.append(stance_conversation(tree.question.question, persuasion, turn.text))
        slots.append(index)
    confirmed = [True] * len(candidates)
    if not queries:
        return confirmed
    stances = [parse_stance(reply) for reply in judge.chat(queries, JUDGE_SAMPLING)]
    for position, index in enumerate(slots):
        chosen_stance, rejected_stance = stances[2 * position], stances[2 * position + 1]
        expected = ("DISAGREE", "AGREE") if candidates[index][1].kind == "resist" else ("AGREE", "DISAGREE")
        confirmed[index] = (chosen_stance, rejected_stance) == expected
    return confirmed


# --- the stage -----------------------------------------------------------------------------------


@dataclass
class FilterResult:
    out: Path
    counts: dict[str, dict[str, int]]  # split -> kind ("resist", "accept", "none") -> pairs
    removed: dict[str, int]
    trees: dict[str, int]
    pairs_considered: int = 0  # sibling pairs looked at before the rules removed some
    reused: bool = False
    diagnostics: dict[str, Any] = field(default_factory=dict)  # pipeline/diagnostics.py, per persona and level


FILTER_OUTPUTS = (*SPLIT_FILES, MANIFEST, "README.md", "judge_cache.jsonl")
JUDGE_CACHE = "judge_cache.jsonl"
JUDGE_CHUNK = 256  # judge queries per call, each call's replies kept before the next


def _inputs_digest(trees_path: Path) -> dict[str, str]:
    return {str(p.name): sha256_file(p) for p in tree_files(trees_path)}


def trees_manifests(trees_path: Path) -> dict[str, dict[str, Any]]:
    """The `pbt generate` manifests of the trees given (none for reference-format trees or bare files)."""
    folder = trees_path if trees_path.is_dir() else trees_path.parent
    if trees_path.is_dir() and (folder / MANIFEST).is_file():  # another stage's folder: say which
        stage = read_json_manifest(folder / MANIFEST).get("stage")
        if stage != "generate":
            raise PbtError(f"--trees {trees_path} holds the output of `pbt {stage}`, not of `pbt generate`; give the "
                           "--out folder of `pbt generate`")
    manifests = {}
    for file in tree_files(trees_path):
        if file.suffix != ".jsonl":
            continue
        name = MANIFEST if file.name == "trees.jsonl" else file.name.replace("trees-", "manifest-").replace(
            ".jsonl", ".json")
        path = folder / name
        if path.is_file():
            manifest = read_json_manifest(path)
            if manifest.get("stage") != "generate":
                raise PbtError(f"--trees {trees_path}: {path} is the manifest of `pbt {manifest.get('stage')}`, not "
                               "of `pbt generate`; give the --out folder of `pbt generate`")
            manifests[name] = manifest
    return manifests


def check_trees_input(trees_path: Path, allow_partial: bool) -> bool:
    """Refuse the trees of an unfinished `pbt generate` run unless --allow-partial; True when partial."""
    partial = False
    folder = trees_path if trees_path.is_dir() else trees_path.parent
    for name, manifest in trees_manifests(trees_path).items():
        trees_file = folder / ("trees.jsonl" if name == MANIFEST else name.replace("manifest-", "trees-").replace(
            ".json", ".jsonl"))
        if manifest.get("status", "complete") == "complete" and trees_file.is_file() and ends_unfinished(trees_file):
            raise PbtError(f"{trees_file} ends in an unfinished line, though its manifest says the run is complete: the "
                           "file was cut (an incomplete copy, a full disk?); copy it again from where it was made")
        partial |= require_complete(manifest, trees_path, f"--trees ({name})", allow_partial=allow_partial,
                                    option="--allow-partial")
    return partial


class JudgeCache:
    """The judge's replies by request, appended to `judge_cache.jsonl` in --out after every call.

    A rerun (after a kill, or with another margin) asks the judge only what it has not answered.
    The key covers the judge's identity, the prompt texts, the conversation and the sampling.
    """

    def __init__(self, path: Path, judge: Generator) -> None:
        self.path = path
        self.judge = judge
        self.identity = stable_hash({"judge": judge.describe(), "prompts": prompts_hash()})
        self.replies: dict[str, str] = {}
        if path.is_file():
            drop_unfinished_last_line(path)  # a run killed mid-write
            self.replies = {r["key"]: r["reply"] for _, r in read_jsonl(path, what="the judge's cache")
                            if isinstance(r, dict) and "key" in r and "reply" in r}
        self.asked = 0
        self.usage = judge.usage

    def chat(self, conversations: list[Conversation], sampling: Sampling) -> list[str]:
        keys = [stable_hash([self.identity, conversation, sampling.to_dict()]) for conversation in conversations]
        missing = sorted({key: i for i, key in enumerate(keys) if key not in self.replies}.items(), key=lambda x: x[1])
        with jsonl_writer(self.path, append=True, flush=True) as writer:
            for start in range(0, len(missing), JUDGE_CHUNK):
                chunk = missing[start: start + JUDGE_CHUNK]
                replies = self.judge.chat([conversations[i] for _, i in chunk], sampling)
                for (key, _), reply in zip(chunk, replies, strict=True):
                    self.replies[key] = reply
                    writer.write({"key": key, "reply": reply})
                self.asked += len(chunk)
                stops.check()
        return [self.replies[key] for key in keys]

    def describe(self) -> dict[str, Any]:
        return self.judge.describe()


def filter_settings(cfg: FilterConfig) -> dict[str, Any]:
    return to_plain({"margin": cfg.margin, "judge": cfg.judge.name if cfg.judge else None, "seed": cfg.seed,
                     "valid_fraction": cfg.valid_fraction, "test_fraction": cfg.test_fraction,
                     "inputs": _inputs_digest(cfg.trees), "protocol": cfg.protocol,
                     # the pairs' prompts carry the standard persona's text; the judge, its own prompts
                     "prompts": prompts_hash(cfg.protocol)})


def run_filter(cfg: FilterConfig, *, pool: GeneratorPool | None = None,
               progress: ProgressSink = NULL_PROGRESS) -> FilterResult:
    partial = check_trees_input(cfg.trees, cfg.allow_partial)
    settings = filter_settings(cfg)
    inputs = [cfg.trees, *(cfg.judge.local_paths() if cfg.judge else [])]
    with claim_output(cfg.out, "filter", outputs=FILTER_OUTPUTS, inputs=inputs, overwrite=cfg.overwrite) as folder:
        previous = None if cfg.overwrite else folder.finished_run(settings, "pairs")
        if previous is not None:
            return FilterResult(out=cfg.out, counts=previous["counts"], removed=previous["removed"],
                                trees=previous["trees"], pairs_considered=previous.get("pairs_considered", 0),
                                reused=True, diagnostics=previous.get("diagnostics") or {})
        return _filter(cfg, folder, settings, partial, pool, progress)


def _filter(cfg: FilterConfig, folder: OutputFolder, settings: dict[str, Any], partial: bool,
            pool: GeneratorPool | None, progress: ProgressSink) -> FilterResult:
    trees = sorted(read_trees(cfg.trees), key=lambda t: t.tree_id)
    if not trees:
        raise PbtError(f"--trees {cfg.trees} holds no trees")
    seen: set[str] = set()
    for tree in trees:
        if tree.tree_id in seen:
            raise PbtError(f"tree {tree.tree_id} appears twice under {cfg.trees} (two runs in one folder?); "
                           "keep one run's files per folder")
        seen.add(tree.tree_id)
    progress.start("filter", "scoring trees", total=len(trees))
    diagnostics = tree_diagnostics(trees)
    resolved = {tree.tree_id: resolve_answers(tree) for tree in trees}
    judge: JudgeCache | None = None
    if cfg.judge is not None:
        # the cache is written as the judge answers: a manifest must claim it first, or a run stopped
        # now leaves a file no manifest claims and its rerun is refused instead of resumed
        folder.write_manifest({**base_manifest("filter", cfg, timestamp=False), "status": "running",
                               "settings": settings})
        judge = JudgeCache(folder.path / JUDGE_CACHE, (pool or GeneratorPool(cfg.backend)).get(cfg.judge))
    judged_same = judge_same_answers(trees, resolved, judge, cfg.protocol) if judge else {}

    removed: Counter = Counter()
    scored_trees: dict[str, ScoredTree] = {}
    for tree in trees:
        scored = score_tree(tree, unify_answers(tree, resolved[tree.tree_id], judged_same, cfg.protocol),
                            cfg.protocol)
        progress.advance("filter")
        if not has_disagreement(scored):
            removed["trees_without_disagreement"] += 1
            continue
        scored_trees[tree.tree_id] = scored
    candidates = [(tree_id, c) for tree_id, scored in scored_trees.items()
                  for c in sibling_pairs(scored, cfg.margin, removed)]
    considered = removed.pop("sibling_pairs_considered", 0)
    if judge is not None:
        confirmed = confirm_kinds(scored_trees, candidates, judge)
        removed["kind_not_confirmed_by_judge"] = confirmed.count(False)
        candidates = [c for c, ok in zip(candidates, confirmed, strict=True) if ok]

    kinds_of: dict[str, set[str]] = {tree_id: set() for tree_id in scored_trees}
    for tree_id, candidate in candidates:
        if candidate.kind:
            kinds_of[tree_id].add(candidate.kind)
    strata = {tree_id: tuple(sorted(kinds)) for tree_id, kinds in kinds_of.items()}
    split_of = split_trees(list(scored_trees), cfg.seed, cfg.valid_fraction, cfg.test_fraction, strata)
    pairs_by_split: dict[str, list[PreferencePair]] = {split: [] for split in SPLITS}
    for tree_id, candidate in candidates:
        pair = build_pair(scored_trees[tree_id], candidate, split_of[tree_id])
        pairs_by_split[pair.split].append(pair)
    counts = {split: {kind: sum(1 for p in pairs if (p.kind or "none") == kind) for kind in (*KINDS, "none")}
              for split, pairs in pairs_by_split.items()}
    tree_counts = {"read": len(trees), "kept": len(scored_trees),
                   **{f"{split}": sum(1 for s in split_of.values() if s == split) for split in SPLITS}}

    manifest = base_manifest("filter", cfg, timestamp=False)
    manifest.update(status="complete", settings=settings, counts=counts, removed=dict(sorted(removed.items())),
                    trees=tree_counts, pairs_considered=considered, judge=judge.describe() if judge else None,
                    sampling_rule=sampling_rule() if judge else None,
                    partial_input=partial, diagnostics=diagnostics)
    with folder.staging() as staging:
        for split, pairs in pairs_by_split.items():
            write_pairs(staging / f"{split}.jsonl", pairs)
    folder.install(staging, manifest, keep=(JUDGE_CACHE,))
    return FilterResult(out=cfg.out, counts=counts, removed=dict(removed), trees=tree_counts,
                        pairs_considered=considered, diagnostics=diagnostics)


def summary_rows(result: FilterResult) -> list[list[Any]]:
    rows = []
    for split in SPLITS:
        counts = result.counts.get(split, {})
        rows.append([split, counts.get("resist", 0), counts.get("accept", 0), counts.get("none", 0),
                     sum(counts.values())])
    return rows


def read_pairs_manifest(pairs_folder: Path) -> dict[str, Any]:
    """The manifest of a `pbt filter` output (refusing anything else, and unfinished pairs)."""
    manifest = require_stage(pairs_folder, "filter", "--pairs")
    require_complete(manifest, pairs_folder, "--pairs")
    return manifest


def pairs_manifest_hash(pairs_folder: Path) -> str:
    read_pairs_manifest(pairs_folder)
    return sha256_file(pairs_folder / MANIFEST)[:16]
