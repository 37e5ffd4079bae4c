"""`pbt generate`: tree shape, early stops, what each agent sees, answers, batching, output, resume, shards.

The exact logic is tested with scripted agents (`ScriptedGenerator`, replies from a Python function)
injected through `GeneratorPool(preset=...)`; expected values are worked out by hand from
docs/method.md §2. Two tests at the end run the tiny random Llama through the real transformers backend and
the real CLI entry point.

Scripted conventions used throughout: an agent's reply says "My answer is X." (plus other text),
and the scripted extractor returns the X after that phrase (NONE when the phrase is missing), so a
test chooses each turn's extracted answer by choosing what the agent says.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import answer_after, extract_reply, run_cli

from pbt_cli import __version__
from pbt_cli.data.prompts import PERSONAS, PROMPTS_VERSION, prompts_hash, question_prompt
from pbt_cli.data.questions import load_questions, select_questions
from pbt_cli.data.trees import Tree, resolve_answers
from pbt_cli.errors import PbtError
from pbt_cli.models.backends import GeneratorPool
from pbt_cli.models.backends.scripted import ScriptedGenerator
from pbt_cli.models.spec import ModelSpec
from pbt_cli.pipeline.dialogue import conversation_hash
from pbt_cli.pipeline.generate import GenerateConfig, GenerateResult, run_generate

QUESTIONS = "embedded:train"
A_PERSONAS = ("logical", "emotional", "credibility")
B_PERSONAS = ("resist", "accept")


# --- scripted agents and extractor -----------------------------------------------------------------


def persona_of(conversation) -> str:
    """The persona of the turn being generated: the one whose text opens the first user message."""
    first = conversation[0]["content"]
    found = [name for name, text in PERSONAS.items() if first.startswith(text)]
    assert len(found) == 1, first
    return found[0]


def says(answer: str, extra: str = "I am sure of it.") -> str:
    return f"My answer is {answer}. {extra}"


def fixed(answer: str):
    """An agent that always gives `answer`."""
    return lambda conversation, sampling: says(answer)


def by_persona(answers: dict[str, str], default: str):
    """An agent whose answer depends on the persona of the turn it is asked to write."""
    return lambda conversation, sampling: says(answers.get(persona_of(conversation), default))


def counting(prefix: str):
    """An agent whose every reply is unique ("A1", "A2", ...), so the two agents never agree."""
    counter = itertools.count(1)
    return lambda conversation, sampling: says(f"{prefix}{next(counter)}")


def hashing(prefix: str):
    """A deterministic agent (a function of the conversation only) whose answers never collide with B's."""
    return lambda conversation, sampling: says(f"{prefix}-{conversation_hash(conversation)[:8]}")


def extractor_reply(conversation, sampling) -> str:
    """The answer after "My answer is" in the reply being extracted (NONE when there is none)."""
    assert conversation[-1] == {"role": "assistant", "content": "Final answer:"}
    return " " + answer_after("My answer is", extract_reply(conversation))


def is_extraction(conversation) -> bool:
    return conversation[-1]["role"] == "assistant"


def shared(agent):
    """One reply function serving the agents and the extractor (one generator in every role)."""
    return lambda conversation, sampling: (extractor_reply(conversation, sampling) if is_extraction(conversation)
                                           else agent(conversation, sampling))


# --- running ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    result: GenerateResult
    records: list[dict]
    a: ScriptedGenerator
    b: ScriptedGenerator
    extractor: ScriptedGenerator


def config(out: Path, **overrides) -> GenerateConfig:
    settings = dict(model_a=ModelSpec("agent-a"), model_b=ModelSpec("agent-b"), extractor=ModelSpec("extractor"),
                    questions=QUESTIONS, limit=1, out=out)
    settings.update(overrides)
    return GenerateConfig(**settings)


def generate(out: Path, a, b, extractor=extractor_reply, **overrides) -> Run:
    """Run `pbt generate` with scripted agents A and B and a scripted extractor."""
    gens = {"agent-a": ScriptedGenerator(a, name="agent-a"), "agent-b": ScriptedGenerator(b, name="agent-b"),
            "extractor": ScriptedGenerator(extractor, name="extractor")}
    cfg = config(out, **overrides)
    result = run_generate(cfg, pool=GeneratorPool(preset=gens))
    return Run(result, read_records(result.trees_path), gens["agent-a"], gens["agent-b"], gens["extractor"])


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dialogue(record: dict) -> list[dict]:
    """The turns of a tree record without the root."""
    return [t for t in record["turns"] if t["level"] >= 0]


def by_id(record: dict) -> dict[int, dict]:
    return {t["id"]: t for t in record["turns"]}


def conversations(generator: ScriptedGenerator) -> list[list[dict]]:
    return [conversation for batch in generator.calls for conversation, _ in batch]


def selected_ids(limit: int, seed: int = 42) -> list[str]:
    return [q.question_id for q in select_questions(load_questions(QUESTIONS), limit=limit, seed=seed)]


# --- 1. tree shape -------------------------------------------------------------------------------------


def test_full_tree_has_21_turns_12_leaves_and_the_persona_branching(tmp_path):
    run = generate(tmp_path, fixed("Paris"), fixed("London"), limit=3)  # the agents never agree
    assert len(run.records) == 3
    for record in run.records:
        turns = record["turns"]
        assert [t["id"] for t in turns] == list(range(22))  # the root (0) and 21 dialogue turns
        root = turns[0]
        assert (root["parent"], root["level"], root["agent"], root["persona"]) == (None, -1, None, None)
        assert root["text"] == record["question"]["question"]
        assert Counter(t["level"] for t in dialogue(record)) == {0: 1, 1: 2, 2: 6, 3: 12}
        leaves = [t for t in dialogue(record) if not t["children"]]
        assert len(leaves) == 12 and all(t["level"] == 3 for t in leaves)
        for turn in dialogue(record):
            assert turn["agent"] == ("A" if turn["level"] % 2 == 0 else "B")
        # Links: every child names its parent, sits one level below it, and nothing is orphaned.
        turns_by_id = by_id(record)
        for turn in turns:
            for child in turn["children"]:
                assert turns_by_id[child]["parent"] == turn["id"]
                assert turns_by_id[child]["level"] == turn["level"] + 1
        for turn in dialogue(record):
            assert turn["id"] in turns_by_id[turn["parent"]]["children"]
        assert root["children"] == [1]
        # Personas: A opens as resist or logical; after A come B resist+accept, after B come A's three.
        assert turns_by_id[1]["persona"] in ("resist", "logical")
        for turn in dialogue(record):
            children = [turns_by_id[c]["persona"] for c in turn["children"]]
            if turn["level"] == 3:
                assert children == []
            else:
                assert children == list(B_PERSONAS if turn["agent"] == "A" else A_PERSONAS)


def test_opening_persona_is_drawn_per_tree_and_seeded(tmp_path):
    first = generate(tmp_path / "one", fixed("Paris"), fixed("London"), limit=12, max_turns=2)
    again = generate(tmp_path / "two", fixed("Paris"), fixed("London"), limit=12, max_turns=2)
    openings = [r["turns"][1]["persona"] for r in first.records]
    assert set(openings) == {"resist", "logical"}  # drawn at random, not always the same
    assert openings == [r["turns"][1]["persona"] for r in again.records]  # but reproducibly


# --- 2. early stops --------------------------------------------------------------------------------


def test_matching_independent_answers_stop_the_tree_after_b_opens(tmp_path):
    # With both-first, B answers without seeing A; both say Paris, so both B turns agree and end.
    run = generate(tmp_path, fixed("Paris"), fixed("the Paris"))  # same answer after normalisation
    turns = dialogue(run.records[0])
    assert [(t["level"], t["agent"]) for t in turns] == [(0, "A"), (1, "B"), (1, "B")]
    assert all(t["children"] == [] for t in turns if t["agent"] == "B")
    assert len(run.a.calls) == 1 and len(run.b.calls) == 1  # nothing left to ask at level 2


def test_an_extracted_agree_stops_only_its_branch(tmp_path):
    # Without both-first B's opening sees A's Paris: B accept's AGREE stops that branch; B resist
    # keeps London (goes on to 3 A turns, then 6 B turns).
    run = generate(tmp_path, fixed("Paris"), by_persona({"accept": "AGREE"}, default="London"), both_first=False)
    record = run.records[0]
    turns = by_id(record)
    level1 = [turns[c] for c in turns[1]["children"]]
    assert [t["persona"] for t in level1] == ["resist", "accept"]
    assert level1[1]["answer"]["B"] == "AGREE" and level1[1]["children"] == []
    assert len(level1[0]["children"]) == 3
    assert Counter(t["level"] for t in dialogue(record)) == {0: 1, 1: 2, 2: 3, 3: 6}


def test_an_agree_in_bs_blind_opening_is_no_agreement(tmp_path):
    # With both-first B opens without seeing A: its AGREE is no answer and the branch goes on.
    run = generate(tmp_path, fixed("Paris"), by_persona({"accept": "AGREE"}, default="London"))
    record = run.records[0]
    level1 = [by_id(record)[c] for c in by_id(record)[1]["children"]]
    assert level1[1]["answer"]["B"] == "AGREE" and len(level1[1]["children"]) == 3  # stored raw, not obeyed
    assert Counter(t["level"] for t in dialogue(record)) == {0: 1, 1: 2, 2: 6, 3: 12}


def test_agent_coming_round_to_the_others_answer_stops_that_branch(tmp_path):
    # At level 2, A credibility switches to B's London (the answers now match): those 2 branches end.
    run = generate(tmp_path, by_persona({"credibility": "London"}, default="Paris"), fixed("London"))
    record = run.records[0]
    assert Counter(t["level"] for t in dialogue(record)) == {0: 1, 1: 2, 2: 6, 3: 8}
    for turn in dialogue(record):
        if turn["level"] == 2:
            assert (turn["children"] == []) == (turn["persona"] == "credibility")


def test_two_none_answers_do_not_count_as_agreement(tmp_path):
    run = generate(tmp_path, fixed("NONE"), fixed("NONE"))
    assert len(dialogue(run.records[0])) == 21
    assert {t["answer"]["A"] for t in dialogue(run.records[0]) if t["agent"] == "A"} == {"NONE"}


def test_agree_with_an_agent_that_gave_no_answer_does_not_stop_the_branch(tmp_path):
    # A never answers; B accept says AGREE, which resolves to A's NONE: both agents are at NONE,
    # which docs/method.md §2.9 says is not agreement, so the AGREE branches go on like the others.
    run = generate(tmp_path, fixed("NONE"), by_persona({"accept": "AGREE"}, default="NONE"))
    turns = dialogue(run.records[0])
    assert len(turns) == 21
    assert all(t["children"] for t in turns if t["persona"] == "accept" and t["level"] == 1)


def test_a_bare_disagree_does_not_stop_the_branch(tmp_path):
    run = generate(tmp_path, fixed("Paris"), fixed("DISAGREE"))
    turns = dialogue(run.records[0])
    assert len(turns) == 21
    assert {t["answer"]["B"] for t in turns if t["agent"] == "B"} == {"DISAGREE"}


# --- 3. what each agent sees -----------------------------------------------------------------------


def expected_path_views(question: str, path: list[dict], both_first: bool) -> list[list[dict]]:
    """The four views along one root-to-leaf path (levels 0..3), written out by hand."""
    a0, b1, a2, b3 = path

    def prompt(turn):
        return question_prompt(question, turn["persona"])

    if both_first:
        b1_view = [{"role": "user", "content": prompt(b1)}]
        b3_view = [{"role": "user", "content": prompt(b3)}, {"role": "assistant", "content": b1["text"]},
                   {"role": "user", "content": a2["text"]}]
    else:  # B sees A's opening, joined to its prompt: two user messages in a row become one
        b1_view = [{"role": "user", "content": f"{prompt(b1)}\n\n{a0['text']}"}]
        b3_view = [{"role": "user", "content": f"{prompt(b3)}\n\n{a0['text']}"},
                   {"role": "assistant", "content": b1["text"]}, {"role": "user", "content": a2["text"]}]
    return [
        [{"role": "user", "content": prompt(a0)}],
        b1_view,
        [{"role": "user", "content": prompt(a2)}, {"role": "assistant", "content": a0["text"]},
         {"role": "user", "content": b1["text"]}],
        b3_view,
    ]


@pytest.mark.parametrize("both_first", [True, False])
def test_each_agent_sees_exactly_its_own_view(tmp_path, both_first):
    # Unique replies, so a view holding the wrong turn cannot match by accident.
    run = generate(tmp_path, counting("A"), counting("B"), both_first=both_first)
    record = run.records[0]
    question = record["question"]["question"]
    turns = by_id(record)
    seen = {"A": conversations(run.a), "B": conversations(run.b)}
    # Follow one path: the opening, its B accept, that turn's A emotional, then its B resist.
    a0 = turns[turns[0]["children"][0]]
    b1 = turns[a0["children"][1]]
    a2 = turns[b1["children"][1]]
    b3 = turns[a2["children"][0]]
    assert (b1["persona"], a2["persona"], b3["persona"]) == ("accept", "emotional", "resist")
    for turn, view in zip([a0, b1, a2, b3], expected_path_views(question, [a0, b1, a2, b3], both_first),
                          strict=True):
        assert view in seen[turn["agent"]], (turn["level"], view)
        assert turn["messages_seen_hash"] == conversation_hash(view)
    # Every conversation either agent got alternates roles, starts and ends with a user message.
    for conversation in seen["A"] + seen["B"]:
        roles = [m["role"] for m in conversation]
        assert roles[0] == "user" and roles[-1] == "user"
        assert all(x != y for x, y in itertools.pairwise(roles))
    # Each stored turn was generated from a view that opens with the prompt of that turn's persona.
    for turn in dialogue(record):
        views = [c for c in seen[turn["agent"]] if conversation_hash(c) == turn["messages_seen_hash"]]
        assert len(views) == 1
        assert views[0][0]["content"].startswith(question_prompt(question, turn["persona"]))


# --- 4. answers keyed by agent ---------------------------------------------------------------------


def test_answers_are_keyed_by_agent_and_carried_from_the_parent(tmp_path):
    a = by_persona({"logical": "DISAGREE", "emotional": "Rome", "credibility": "NONE"}, default="Paris")
    b = by_persona({"accept": "AGREE"}, default="London")
    # A's opening may also be "logical"; with both-first it is A's only one-message view: make it Paris.
    def a_opening_aware(conversation, sampling):
        return says("Paris") if len(conversation) == 1 else a(conversation, sampling)

    run = generate(tmp_path, a_opening_aware, b)
    record = run.records[0]
    turns = by_id(record)
    for turn in dialogue(record):
        speaker = turn["agent"]
        other = "B" if speaker == "A" else "A"
        assert set(turn["answer"]) == {"A", "B"}
        assert turn["answer"][speaker] == turn["raw_extraction"].strip()  # raw, specials included
        assert turn["answer"][other] == turns[turn["parent"]]["answer"][other]

    a0 = turns[1]
    assert a0["answer"]["A"] == "Paris"
    b_resist, b_accept = (turns[c] for c in a0["children"])
    assert b_resist["answer"] == {"A": "Paris", "B": "London"}
    assert b_accept["answer"] == {"A": "Paris", "B": "AGREE"}
    a_logical, a_emotional, a_credibility = (turns[c] for c in b_resist["children"])
    assert a_logical["answer"] == {"A": "DISAGREE", "B": "London"}
    assert a_emotional["answer"] == {"A": "Rome", "B": "London"}
    assert a_credibility["answer"] == {"A": "NONE", "B": "London"}
    accept_after_logical = turns[a_logical["children"][1]]
    assert accept_after_logical["answer"] == {"A": "DISAGREE", "B": "AGREE"}

    resolved = resolve_answers(Tree.from_record(record, "test"))
    assert resolved[b_accept["id"]] == {"A": "Paris", "B": "NONE"}  # a blind opening agrees with nothing
    assert resolved[a_logical["id"]] == {"A": "Paris", "B": "London"}  # DISAGREE keeps A's previous answer
    assert resolved[accept_after_logical["id"]] == {"A": "Paris", "B": "Paris"}
    assert resolved[a_emotional["id"]] == {"A": "Rome", "B": "London"}
    assert resolved[turns[a_credibility["children"][1]]["id"]] == {"A": "NONE", "B": "NONE"}  # AGREE with no answer


# --- 5. batching -----------------------------------------------------------------------------------


def test_one_call_per_level_per_wave_for_each_agent_and_the_extractor(tmp_path):
    run = generate(tmp_path, counting("A"), counting("B"), limit=5, trees_per_batch=2)
    assert len(run.records) == 5
    # Waves of 2, 2 and 1 trees; A speaks at levels 0 and 2 (1 and 6 turns a tree), B at 1 and 3 (2 and 12).
    assert [len(batch) for batch in run.a.calls] == [2, 12, 2, 12, 1, 6]
    assert [len(batch) for batch in run.b.calls] == [4, 24, 4, 24, 2, 12]
    assert [len(batch) for batch in run.extractor.calls] == [2, 4, 12, 24, 2, 4, 12, 24, 1, 2, 6, 12]
    # The trees of a wave go together: the first call holds the first two questions.
    ids = selected_ids(5)
    questions = {q.question_id: q.question for q in load_questions(QUESTIONS)}
    first_call = [conversation[0]["content"] for conversation, _ in run.a.calls[0]]
    assert all(text.endswith(f"Question: {questions[i]}") for text, i in zip(first_call, ids[:2], strict=True))


def test_one_generator_may_play_both_agents_and_the_extractor(tmp_path):
    generator = ScriptedGenerator(shared(counting("X")), name="one-model")
    cfg = config(tmp_path, model_a=ModelSpec("one"), model_b=ModelSpec("one"), extractor=None, limit=3,
                 trees_per_batch=2)
    pool = GeneratorPool(preset={"one": generator})
    result = run_generate(cfg, pool=pool)
    assert pool.generators() == [generator]
    assert result.written == 3
    # Per wave and level: one agent call, then one extraction call over the same turns.
    sizes = [len(batch) for batch in generator.calls]
    assert sizes == [2, 2, 4, 4, 12, 12, 24, 24, 1, 1, 2, 2, 6, 6, 12, 12]
    assert [is_extraction(batch[0][0]) for batch in generator.calls] == [False, True] * 8
    record = read_records(result.trees_path)[0]
    assert {record["models"][role]["name"] for role in ("A", "B", "extractor")} == {"one-model"}


# --- 6. output and manifest -------------------------------------------------------------------------


def test_trees_file_and_manifest_hold_what_spec_section_3_lists(tmp_path):
    run = generate(tmp_path, fixed("Paris"), fixed("London"), limit=3, max_turns=2)
    result = run.result
    assert result.trees_path == tmp_path / "trees.jsonl" and result.manifest_path == tmp_path / "manifest.json"
    questions = {q.question_id: q for q in load_questions(QUESTIONS)}
    assert [r["tree_id"] for r in run.records] == selected_ids(3)
    for record in run.records:
        assert record["question"] == questions[record["tree_id"]].to_record()
        for role, name in (("A", "agent-a"), ("B", "agent-b"), ("extractor", "extractor")):
            assert record["models"][role]["name"] == name and "revision" in record["models"][role]
        assert record["personas"] == prompts_hash()
        assert record["sampling"] == {"temperature": 0.7, "top_p": 1.0, "top_k": 0, "max_new_tokens": 80,
                                      "min_new_tokens": 8, "seed": None}
        assert record["seed"] == 42
        for turn in record["turns"]:
            assert {"id", "parent", "children", "level", "agent", "persona", "text", "answer",
                    "raw_extraction"} <= set(turn)
        b_turn = record["turns"][2]
        assert b_turn["text"] == says("London") and b_turn["raw_extraction"] == " London"

    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["stage"] == "generate" and manifest["status"] == "complete"
    assert manifest["counts"] == {"selected": 3, "trees": 3, "written_this_run": 3, "turns_this_run": 9}
    assert manifest["settings"] == config(tmp_path, limit=3, max_turns=2).content_settings()
    assert manifest["settings"]["max_turns"] == 2 and manifest["settings"]["seed"] == 42
    assert manifest["settings"]["prompts"] == prompts_hash()
    assert manifest["prompts_version"] == PROMPTS_VERSION
    assert manifest["versions"]["pbt_cli"] == __version__
    assert (result.selected, result.already_done, result.written, result.turns) == (3, 0, 3, 9)


# --- 7. resume -------------------------------------------------------------------------------------


def test_resume_after_a_crash_mid_line_redoes_only_the_missing_tree(tmp_path):
    first = generate(tmp_path, counting("A"), counting("B"), limit=4, max_turns=2)
    assert first.result.written == 4
    path = first.result.trees_path
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 4
    # A crash while writing the last tree: complete lines, then half of the last one.
    path.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2], encoding="utf-8")

    second = generate(tmp_path, counting("A"), counting("B"), limit=4, max_turns=2)
    assert (second.result.already_done, second.result.written) == (3, 1)
    assert [len(batch) for batch in second.a.calls] == [1]  # one tree's opening, nothing else
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # every line is valid JSON
    assert [r["tree_id"] for r in records] == selected_ids(4)  # 4 unique trees, in order
    assert text.splitlines(keepends=True)[:3] == lines[:3]  # the finished trees are untouched
    manifest = json.loads(second.result.manifest_path.read_text())
    assert manifest["counts"]["trees"] == 4 and manifest["counts"]["written_this_run"] == 1

    third = generate(tmp_path, counting("A"), counting("B"), limit=4, max_turns=2)
    assert (third.result.already_done, third.result.written) == (4, 0)
    assert third.a.calls == [] and third.b.calls == [] and third.extractor.calls == []
    assert path.read_text(encoding="utf-8") == text


def test_a_garbled_line_before_the_last_is_a_one_line_error_not_a_traceback(tmp_path):
    # Not a crash (only the last line can be cut short); e.g. two runs appending to one file at once.
    first = generate(tmp_path, fixed("Paris"), fixed("London"), limit=3, max_turns=2)
    lines = first.result.trees_path.read_text().splitlines(keepends=True)
    first.result.trees_path.write_text(lines[0] + lines[1][:50] + "\n" + lines[2])
    with pytest.raises(PbtError, match="trees.jsonl"):
        generate(tmp_path, fixed("Paris"), fixed("London"), limit=3, max_turns=2)


def test_an_unreadable_manifest_is_a_one_line_error_not_a_traceback(tmp_path):
    first = generate(tmp_path, fixed("Paris"), fixed("London"), limit=2, max_turns=2)
    first.result.manifest_path.write_text("{")  # e.g. a disk that filled up under some other writer
    with pytest.raises(PbtError, match="manifest.json"):
        generate(tmp_path, fixed("Paris"), fixed("London"), limit=2, max_turns=2)


# --- 8. changed settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "named"), [({"max_turns": 3}, "max_turns"), ({"seed": 7}, "seed"),
                                               ({"max_turns": 3, "seed": 7}, "max_turns, seed")])
def test_other_settings_on_an_existing_output_are_refused_unless_overwrite(tmp_path, change, named):
    first = generate(tmp_path, fixed("Paris"), fixed("London"), limit=2, max_turns=2)
    before = first.result.trees_path.read_text()
    with pytest.raises(PbtError, match=rf"other settings \({named}\).*--overwrite"):
        generate(tmp_path, fixed("Paris"), fixed("London"), limit=2, **{"max_turns": 2, **change})
    assert first.result.trees_path.read_text() == before

    replaced = generate(tmp_path, fixed("Paris"), fixed("London"), limit=2, overwrite=True,
                        **{"max_turns": 2, **change})
    assert replaced.result.written == 2 and replaced.result.already_done == 0
    assert len(replaced.records) == 2  # replaced, not appended
    manifest = json.loads(replaced.result.manifest_path.read_text())
    for key, value in change.items():
        assert manifest["settings"][key] == value
        assert all(r[key] == value for r in replaced.records)


# --- 9. shards -------------------------------------------------------------------------------------


def test_three_shards_cover_the_selection_exactly_once(tmp_path):
    shards = []
    for shard in range(3):
        run = generate(tmp_path, fixed("Paris"), fixed("London"), limit=10, max_turns=2, num_shards=3,
                       shard_idx=shard)
        tag = f"{shard:05d}-of-00003"
        assert run.result.trees_path == tmp_path / f"trees-{tag}.jsonl"
        assert run.result.manifest_path == tmp_path / f"manifest-{tag}.json"
        manifest = json.loads(run.result.manifest_path.read_text())
        assert manifest["status"] == "complete" and manifest["settings"]["shard_idx"] == shard
        shards.append([r["tree_id"] for r in run.records])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"trees-{s:05d}-of-00003.jsonl" for s in range(3)] + [f"manifest-{s:05d}-of-00003.json" for s in range(3)])
    assert [len(ids) for ids in shards] == [4, 3, 3]
    everything = [tree_id for ids in shards for tree_id in ids]
    assert len(set(everything)) == 10
    assert set(everything) == set(selected_ids(10))


# --- 10. determinism ------------------------------------------------------------------------------


def test_deterministic_runs_are_greedy_and_repeatable(tmp_path):
    first = generate(tmp_path / "one", hashing("alpha"), hashing("beta"), limit=3, deterministic=True)
    second = generate(tmp_path / "two", hashing("alpha"), hashing("beta"), limit=3, deterministic=True)
    for generator in (first.a, first.b):
        samplings = [sampling for batch in generator.calls for _, sampling in batch]
        assert samplings and all(s.temperature == 0 and s.greedy for s in samplings)
    assert first.records[0]["sampling"]["temperature"] == 0
    assert first.result.trees_path.read_text() == second.result.trees_path.read_text()
    assert len(dialogue(first.records[0])) == 21  # the hashing agents never agree


# --- 11. trimming ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "stored"), [
    ("It is Paris. And the", "It is Paris."),
    ("Surely Paris! Because", "Surely Paris!"),
    ("Is it Paris? I would", "Is it Paris?"),
    ('He said "Paris." And then', 'He said "Paris."'),
    ("No sentence end at all", "No sentence end at all"),
])
def test_an_unfinished_last_sentence_is_trimmed(tmp_path, reply, stored):
    run = generate(tmp_path, lambda c, s: reply, fixed("London"), max_turns=2)
    a0 = run.records[0]["turns"][1]
    assert a0["text"] == stored
    assert extract_reply(run.extractor.calls[0][0][0]) == stored  # the extractor reads the trimmed turn


# --- 12. evaluation dialogues -------------------------------------------------------------------


def test_eval_split_is_one_path_of_standard_turns(tmp_path):
    run = generate(tmp_path, counting("A"), counting("B"), limit=2, split="eval", max_turns=5)
    for record in run.records:
        turns = dialogue(record)
        assert [t["level"] for t in turns] == [0, 1, 2, 3, 4]
        assert [t["agent"] for t in turns] == ["A", "B", "A", "B", "A"]
        assert {t["persona"] for t in turns} == {"standard"}
        assert all(len(t["children"]) == (0 if t["level"] == 4 else 1) for t in turns)
    agreeing = generate(tmp_path / "agree", fixed("Paris"), fixed("Paris"), split="eval", max_turns=5)
    assert [t["agent"] for t in dialogue(agreeing.records[0])] == ["A", "B"]


# --- 13. sampling settings -----------------------------------------------------------------------


def test_default_sampling_for_agents_and_greedy_short_extraction(tmp_path):
    run = generate(tmp_path, counting("A"), counting("B"), max_turns=2)
    agent_samplings = [s for g in (run.a, run.b) for batch in g.calls for _, s in batch]
    assert agent_samplings
    for s in agent_samplings:
        assert (s.temperature, s.top_p, s.top_k, s.max_new_tokens, s.min_new_tokens) == (0.7, 1.0, 0, 80, 8)
    extraction = [s for batch in run.extractor.calls for _, s in batch]
    assert extraction
    for s in extraction:
        assert s.greedy and s.temperature == 0 and s.max_new_tokens == 16


# --- 14 and 15. the real backend and the CLI ------------------------------------------------------


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the tiny model: on small (2-core) machines torch's thread pool makes its
    batched forward passes over the ~800-token extraction prompts about 100x slower (seconds, not ms)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_real_batched_run_with_the_tiny_model_loads_it_once(tmp_path, tiny_model_dir, one_torch_thread):
    from pbt_cli.models.backends.base import Sampling

    spec = ModelSpec.parse(str(tiny_model_dir))
    cfg = GenerateConfig(model_a=spec, model_b=spec, questions=QUESTIONS, limit=2, max_turns=2,
                         sampling=Sampling(temperature=0.7, top_p=1.0, max_new_tokens=8, min_new_tokens=1),
                         out=tmp_path)
    pool = GeneratorPool(cfg.backend)
    result = run_generate(cfg, pool=pool)
    assert len(pool.generators()) == 1  # A, B and the extractor share one loaded model
    records = read_records(result.trees_path)
    assert [r["tree_id"] for r in records] == selected_ids(2)
    for record in records:
        # Level 0 can never end a branch (B has no answer yet), so with 2 levels: A, then B resist + B accept.
        assert [(t["level"], t["agent"]) for t in dialogue(record)] == [(0, "A"), (1, "B"), (1, "B")]
        assert record["models"]["A"]["backend"] == "transformers"
    assert json.loads(result.manifest_path.read_text())["status"] == "complete"


def test_cli_generate_writes_trees_and_refuses_an_unknown_source(capsys, tmp_path, tiny_model_dir,
                                                                  one_torch_thread):
    out = tmp_path / "trees"
    common = ["generate", "--model-a", tiny_model_dir, "--model-b", tiny_model_dir, "--limit", "2",
              "--max-turns", "2", "--max-new-tokens", "6", "--min-new-tokens", "1", "--out", out]
    result = run_cli(capsys, *common, "--questions", "embedded:validation")
    assert result.exit_code == 0, result.stderr
    records = read_records(out / "trees.jsonl")
    assert [r["tree_id"] for r in records] == [
        q.question_id for q in select_questions(load_questions("embedded:validation"), limit=2, seed=42)]
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"

    bad = run_cli(capsys, *common, "--questions", "nope:train")
    assert bad.exit_code == 2
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown questions source" in lines[0], bad.stderr


# --- 9. per-request seeds (docs/method.md §2.10) ------------------------------------------------------------


def seeds_by_request(a: ScriptedGenerator, b: ScriptedGenerator) -> dict[tuple, int]:
    """Every sampled request's seed, keyed by what identifies the request: the agent and its conversation
    (A's resist opening and B's blind resist opening read the same text, but are two requests)."""
    seeds = {}
    for generator in (a, b):
        for call in generator.calls:
            for conversation, sampling in call:
                key = (generator.name, conversation_hash(conversation))
                assert key not in seeds or seeds[key] == sampling.seed  # one request, one seed
                seeds[key] = sampling.seed
    return seeds


@pytest.mark.parametrize(("trees_per_batch", "num_shards"), [(8, 1), (3, 1), (1, 2), (2, 3)])
def test_a_request_gets_the_same_seed_whatever_the_batching_or_sharding(tmp_path, trees_per_batch, num_shards):
    """The seed a request receives depends on the run's seed, its tree, the turn it answers and its persona,
    never on the batch it lands in, the batch size, the shard layout or the position in a call."""
    reference = generate(tmp_path / "one-by-one", hashing("A"), hashing("B"), limit=6, max_turns=3,
                         trees_per_batch=1)
    expected = seeds_by_request(reference.a, reference.b)
    assert len(set(expected.values())) == len(expected) > 6 * 3  # distinct seeds, every turn sampled
    assert None not in expected.values()
    seen: dict[tuple, int] = {}
    for shard in range(num_shards):
        run = generate(tmp_path / f"layout-{shard}", hashing("A"), hashing("B"), limit=6, max_turns=3,
                       trees_per_batch=trees_per_batch, num_shards=num_shards, shard_idx=shard)
        seen.update(seeds_by_request(run.a, run.b))
    assert seen == expected


def test_greedy_requests_carry_no_seed_and_another_run_seed_changes_every_seed(tmp_path):
    greedy = generate(tmp_path / "greedy", hashing("A"), hashing("B"), limit=2, max_turns=2, deterministic=True)
    assert set(seeds_by_request(greedy.a, greedy.b).values()) == {None}
    first = generate(tmp_path / "s42", hashing("A"), hashing("B"), limit=2, max_turns=2)
    other = generate(tmp_path / "s7", hashing("A"), hashing("B"), limit=2, max_turns=2, seed=7)
    assert not set(seeds_by_request(first.a, first.b).values()) & set(seeds_by_request(other.a, other.b).values())


# --- --protocol original-code: the original release's prompts, views and stopping rule (docs/method.md §8.7) ---


def original_persona_of(conversation) -> str:
    from pbt_cli.data.prompts import ORIGINAL_PERSONAS

    prompt = next(m["content"] for m in conversation if "Question:" in m["content"])
    found = [name for name, text in ORIGINAL_PERSONAS.items() if text and text in prompt]
    return found[0] if found else "standard"


def test_original_code_stops_only_on_the_same_raw_string_or_an_agree(tmp_path):
    # "Paris" and "the Paris" are one answer to the paper's rule (the tree ends after B opens) but two
    # strings to the original's: the tree grows in full. The same string ends it.
    assert len(dialogue(generate(tmp_path / "p", fixed("Paris"), fixed("the Paris")).records[0])) == 3
    assert len(dialogue(generate(tmp_path / "o", fixed("Paris"), fixed("the Paris"),
                                 protocol="original-code").records[0])) == 21
    assert len(dialogue(generate(tmp_path / "s", fixed("Paris"), fixed("Paris"),
                                 protocol="original-code").records[0])) == 3
    # an AGREE in B's blind opening ends its branch: the original had no blind-opening rule
    agree = lambda conversation, sampling: says("AGREE" if original_persona_of(conversation) == "accept"  # noqa: E731
                                                else "London")
    record = generate(tmp_path / "a", fixed("Paris"), agree, protocol="original-code").records[0]
    level1 = [by_id(record)[c] for c in by_id(record)[1]["children"]]
    assert [t["persona"] for t in level1] == ["resist", "accept"] and level1[1]["children"] == []


def test_original_code_views_keep_as_opening_for_b_and_use_the_original_personas(tmp_path):
    from pbt_cli.data.prompts import ORIGINAL_OPENING, ORIGINAL_PERSONAS

    run = generate(tmp_path, counting("A"), counting("B"), protocol="original-code")
    record = run.records[0]
    turns = by_id(record)
    question = record["question"]["question"]
    b_views = conversations(run.b)
    opening_views = [v for v in b_views if len(v) == 1]
    assert len(opening_views) == 2  # B's two openings see only their prompt (A's opening dropped)
    level3 = [v for v in b_views if len(v) > 1]
    assert len(level3) == 12
    view = level3[0]
    a0 = turns[1]
    b1 = next(turns[c] for c in a0["children"])
    a2 = turns[b1["children"][0]]
    assert [m["role"] for m in view] == ["user", "assistant", "user", "assistant", "user"]
    assert view[0]["content"] == ""
    assert view[1]["content"].startswith(ORIGINAL_OPENING) and ORIGINAL_PERSONAS["resist"] in view[1]["content"]
    assert view[1]["content"].endswith(f"Question: {question}")
    assert [m["content"] for m in view[2:]] == [a0["text"], b1["text"], a2["text"]]
    # A's persuading personas tell A that the other answer is wrong and its own right
    a_prompts = [v[0]["content"] for v in conversations(run.a)]
    assert all("its answer is wrong and yours is right" in p for p in a_prompts if "Argue" in p)
    manifest = json.loads(run.result.manifest_path.read_text())
    assert manifest["settings"]["protocol"] == "original-code"
    assert manifest["settings"]["prompts"] == prompts_hash("original-code") != prompts_hash()
