"""The two-agent dialogue engine shared by `pbt generate` (persona trees) and `pbt eval team` (one path).

Trees are expanded level by level across many questions at once: every open branch of every tree
at a level goes to the speaking agent's model in one `chat` call, then every new turn goes to the
extractor in one more call (docs/method.md §2.3, §2.7 and §2.12).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pbt_cli.config import stable_hash
from pbt_cli.data.answers import AGREE, NONE, ORIGINAL_CODE, PAPER
from pbt_cli.data.prompts import (
    EVAL_PERSONA,
    OPENING_PERSONAS,
    RESPONDER_PERSONAS,
    extraction_conversation,
    parse_extraction,
    prompts_hash,
    question_prompt,
)
from pbt_cli.data.questions import Question
from pbt_cli.data.trees import (
    Tree,
    Turn,
    agent_at_level,
    agents_agree,
    answer_as_heard,
    is_blind_opening,
    other_agent,
    resolve_step,
)
from pbt_cli.models.backends.base import Generator, Sampling, seeded
from pbt_cli.models.chat import Conversation
from pbt_cli.progress import NULL_PROGRESS, ProgressSink

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class DialogueSettings:
    max_turns: int = 4
    both_first: bool = True
    split: str = "train"
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.7, top_p=1.0, max_new_tokens=80,
                                                                min_new_tokens=8))
    extraction: Sampling = field(default_factory=lambda: Sampling(temperature=0.0, max_new_tokens=16))
    seed: int = 42
    protocol: str = PAPER  # original-code: the released code's prompts, views and stopping rule (§8.7)


@dataclass
class DialogueRoles:
    """Who plays what. The same generator object may fill several roles."""

    agents: dict[str, Generator]
    extractor: Generator


# --- what each agent sees ------------------------------------------------------------------------


def agent_view(question: str, path: Sequence[Turn], speaker: str, persona: str, both_first: bool,
               protocol: str = PAPER) -> Conversation:
    """The conversation `speaker` answers: the question with this turn's persona, then the dialogue.

    `path` is the dialogue so far (root excluded). The speaker's turns are `assistant`, the other
    agent's are `user`; consecutive messages of one role are joined with a blank line, so the
    conversation alternates and ends with a user message. With `both_first`, an agent sees the
    dialogue only from its own first turn on, so B opens without seeing A's opening.
    """
    if protocol == ORIGINAL_CODE:
        return original_view(question_prompt(question, persona, protocol), path,
                             drop_opening=both_first and speaker == "B")
    visible = list(path)
    if both_first:
        first_own = next((i for i, t in enumerate(visible) if t.agent == speaker), None)
        visible = visible[first_own:] if first_own is not None else []
    messages: Conversation = [{"role": "user", "content": question_prompt(question, persona)}]
    for turn in visible:
        role = "assistant" if turn.agent == speaker else "user"
        if messages[-1]["role"] == role:
            messages[-1] = {"role": role, "content": f"{messages[-1]['content']}\n\n{turn.text}"}
        else:
            messages.append({"role": role, "content": turn.text})
    return messages


def original_view(first_message: str, path: Sequence[Turn], *, drop_opening: bool) -> Conversation:
    """The view the original code built (docs/method.md §8.7 item 4).

    The question prompt, then every turn of the path. A's opening is dropped only for B's first turn
    (`drop_opening` and a path of one turn), so B sees it again at level 3. Roles then alternate by
    position so that the last message is `user`; when that makes the question prompt an `assistant`
    message, an empty `user` message goes first. B at level 3 thus sees: empty user, the prompt as
    assistant, A's opening as user, its own turn as assistant, A's level-2 turn as user.
    """
    texts = [first_message] + [turn.text.strip() for turn in path]
    if drop_opening and len(texts) == 2:
        texts = texts[:1]
    roles = ["user" if (len(texts) - 1 - i) % 2 == 0 else "assistant" for i in range(len(texts))]
    messages: Conversation = [{"role": role, "content": text} for role, text in zip(roles, texts, strict=True)]
    if messages[0]["role"] == "assistant":
        messages.insert(0, {"role": "user", "content": ""})
    return messages


def original_pair_prompt(question: str, path: Sequence[Turn]) -> Conversation:
    """A pair's prompt as the original built it: the `standard` question prompt and the whole path, A's
    opening kept, roles by position (§8.7)."""
    return original_view(question_prompt(question, EVAL_PERSONA, ORIGINAL_CODE), path, drop_opening=False)


def original_agree(answer: dict[str, str | None]) -> bool:
    """The original's stopping test on the raw extracted answers of a turn: either is AGREE, or both
    are the same string (two NONEs excepted); no normalising, no containment (§8.7)."""
    a, b = answer.get("A"), answer.get("B")
    if AGREE in (a, b):
        return True
    return a is not None and a == b and a != NONE


def conversation_hash(conversation: Conversation) -> str:
    return stable_hash(conversation)


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*")


def trim_unfinished_sentence(text: str) -> str:
    """Cut an unfinished last sentence (back to the last '.', '!' or '?'); text without one stays."""
    text = text.strip()
    ends = list(_SENTENCE_END.finditer(text))
    if not ends:
        return text
    return text[: ends[-1].end()].strip()


def personas_for(level: int, split: str, rng: random.Random) -> tuple[str, ...]:
    """The personas of the turns that follow a turn at `level - 1` (docs/method.md §2.3)."""
    if split == "eval":
        return (EVAL_PERSONA,)
    if level == 0:
        return (rng.choice(OPENING_PERSONAS),)
    return RESPONDER_PERSONAS[agent_at_level(level)]


def branching(level: int, split: str) -> int:
    """How many turns answer one turn at `level - 1`: the number of personas at `level`."""
    if split == "eval" or level == 0:
        return 1
    return len(RESPONDER_PERSONAS[agent_at_level(level)])


def turns_below(level: int, max_turns: int, split: str) -> int:
    """Turns in the full subtree under a turn at `level` (-1: the root, so a whole tree), if no branch
    ends early; the most a tree can hold (docs/method.md §2.3: 1, 2, 6, 12, ... turns per level)."""
    total, width = 0, 1
    for deeper in range(level + 1, max_turns):
        width *= branching(deeper, split)
        total += width
    return total


# --- expansion -----------------------------------------------------------------------------------


@dataclass
class _Open:
    """An open branch: the tree, the turn to answer, and the resolved answers at that turn."""

    tree: Tree
    parent: Turn
    state: dict[str, str]


def new_tree(question: Question, settings: DialogueSettings, models: dict) -> Tree:
    root = Turn(id=0, parent=None, level=-1, agent=None, persona=None, text=question.question)
    return Tree(tree_id=question.question_id, question=question, turns=[root], models=models,
                personas=prompts_hash(settings.protocol), sampling=settings.sampling.to_dict(), seed=settings.seed,
                split=settings.split, both_first=settings.both_first, max_turns=settings.max_turns)


def expand_trees(questions: Sequence[Question], roles: DialogueRoles, settings: DialogueSettings, *,
                 models: dict | None = None, progress: ProgressSink = NULL_PROGRESS) -> list[Tree]:
    """Grow one tree per question, all at once, level by level; returns the finished trees in order.

    Every sampled turn has its own seed, from the run's seed, the tree, the turn it answers and
    its persona (docs/method.md §2.10), so a tree does not depend on which trees share its batch.
    """
    trees = [new_tree(q, settings, models or {}) for q in questions]
    rngs = {t.tree_id: random.Random(f"{settings.seed}:{t.tree_id}") for t in trees}
    frontier = [_Open(tree=t, parent=t.root, state={"A": "NONE", "B": "NONE"}) for t in trees]
    for level in range(settings.max_turns):
        if not frontier:
            break
        speaker = agent_at_level(level)
        requests: list[tuple[_Open, str, Conversation]] = []
        samplings: list[Sampling] = []
        for branch in frontier:
            path = branch.tree.path_to(branch.parent.id)
            for persona in personas_for(level, settings.split, rngs[branch.tree.tree_id]):
                view = agent_view(branch.tree.question.question, path, speaker, persona, settings.both_first,
                                  settings.protocol)
                requests.append((branch, persona, view))
                samplings.append(seeded(settings.sampling, settings.seed, branch.tree.tree_id, branch.parent.id,
                                        persona))
        generator = roles.agents[speaker]
        before = generator.usage.generated_tokens
        replies = generator.chat([view for _, _, view in requests], samplings)
        texts = [trim_unfinished_sentence(reply) for reply in replies]
        extractions = roles.extractor.chat(
            [extraction_conversation(b.tree.question.question, text) for (b, _, _), text in zip(requests, texts,
                                                                                              strict=True)],
            settings.extraction,
        )
        progress.advance("turns", len(requests), tokens=generator.usage.generated_tokens - before)
        next_frontier = []
        for (branch, persona, view), text, raw in zip(requests, texts, extractions, strict=True):
            extracted = parse_extraction(raw)
            tree = branch.tree
            carried = branch.parent.answer.get(other_agent(speaker))
            answer = {"A": extracted, "B": carried} if speaker == "A" else {"A": carried, "B": extracted}
            turn = Turn(id=len(tree.turns), parent=branch.parent.id, level=level, agent=speaker, persona=persona,
                        text=text, answer=answer, raw_extraction=raw, messages_seen_hash=conversation_hash(view))
            tree.turns.append(turn)
            branch.parent.children.append(turn.id)
            heard = answer_as_heard(extracted, blind=is_blind_opening(level, settings.both_first))
            state = resolve_step(branch.state, speaker, heard)
            agreed = (original_agree(answer) if settings.protocol == ORIGINAL_CODE
                      else agents_agree(state, heard))
            if level + 1 < settings.max_turns and not agreed:
                next_frontier.append(_Open(tree=tree, parent=turn, state=state))
        # branches that ended here will never need the turns (and their two requests each) below them
        unneeded = (len(requests) - len(next_frontier)) * turns_below(level, settings.max_turns, settings.split)
        if unneeded:
            progress.drop("turns", unneeded)
            progress.drop("requests", 2 * unneeded)
        frontier = next_frontier
    return trees
