"""Answer normalisation and matching (docs/method.md §1.4-§1.6 and §3.2).

The normaliser is TriviaQA's official scoring rule, exactly, so that a gold alias matches its own
normalised form (the original code used it for "Are you sure?" and team only; trees and flipflop used
the plainer matches of `--protocol original-code`, docs/method.md §8.7): underscores to spaces, lower-case,
punctuation (Python's string.punctuation plus the single typographic quotes and the accents
‘ ’ ´ `) to spaces, drop the articles a/an/the, collapse white space. Curly double quotes are not
in that set, so they stay. Predicted answers are cleaned first: quotes of any kind around them, a
trailing parenthetical and trailing punctuation go, because extractors often answer
"“Canberra” (the capital)." where the gold alias is "canberra".
"""

from __future__ import annotations

import difflib
import re
import string

# The special answers an extractor may return instead of an answer (docs/method.md §2.8).
AGREE = "AGREE"
DISAGREE = "DISAGREE"
NONE = "NONE"
SPECIAL_ANSWERS = (AGREE, DISAGREE, NONE)

# string.punctuation plus the characters TriviaQA's scorer adds to it (‘ ’ ´ `); nothing else
_PUNCTUATION = set(string.punctuation) | {"\u2018", "\u2019", "\u00b4", "`"}
# quotes a prediction may come wrapped in: straight, curly, and guillemets
_QUOTES = "\"'`\u2018\u2019\u201c\u201d\u00ab\u00bb\u201e\u201a"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_TRAILING_PARENTHETICAL = re.compile(r"\s*\([^()]*\)\s*$")

# Two answers that contain one another count as the same only above this ratio (docs/method.md §1.6).
SIMILARITY_THRESHOLD = 0.5

# The rules an answer is judged by (`--protocol`, docs/method.md §8.7): `paper` is the method as the paper
# describes it; `original-code` is what the released code that produced the paper's numbers did.
PAPER = "paper"
ORIGINAL_CODE = "original-code"
PROTOCOLS = (PAPER, ORIGINAL_CODE)


def normalize_answer(text: str) -> str:
    """TriviaQA's normal form of an answer string."""
    text = text.replace("_", " ").lower()
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def clean_prediction(text: str) -> str:
    """Strip what extractors add around an answer: quotes of any kind, a trailing parenthetical,
    trailing punctuation."""
    text = text.strip()
    previous = None
    while previous != text:  # '"Paris" (France).' needs every rule, in any order
        previous = text
        text = _TRAILING_PARENTHETICAL.sub("", text).strip()
        text = text.rstrip(".,;:!?").strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:  # wrapped whole, not quoting a part
            text = text[1:-1].strip()
    return text


def normalize_prediction(text: str) -> str:
    return normalize_answer(clean_prediction(text))


def is_special(answer: str | None) -> bool:
    return answer is None or answer.strip().upper() in SPECIAL_ANSWERS


def is_correct(answer: str | None, normalized_aliases: list[str] | tuple[str, ...], protocol: str = PAPER) -> bool:
    """True when the answer's normal form is one of the gold normalised aliases.

    None and the special tokens are never correct (a resolved NONE means "no answer"). Under
    `original-code` the answer is only lower-cased and stripped, as the original's tree scoring did, so
    "The Beatles" misses the gold "beatles".
    """
    if is_special(answer):
        return False
    normal = answer.lower().strip() if protocol == ORIGINAL_CODE else normalize_prediction(answer)
    return bool(normal) and normal in set(normalized_aliases)


def is_correct_flipflop_original(answer: str | None, normalized_aliases: list[str] | tuple[str, ...]) -> bool:
    """The original flipflop scorer: lower-case, strip, drop one trailing punctuation mark, exact match."""
    if is_special(answer):
        return False
    text = answer.lower().strip()
    if text and text[-1] in string.punctuation:
        text = text[:-1]
    return bool(text) and text in set(normalized_aliases)


def similarity_ratio(a: str, b: str) -> float:
    """Normalised indel similarity in [0, 1]: 2 * matching characters / (len a + len b).

    This is python-Levenshtein's ``ratio``; when one string contains the other it is exactly
    2 * len(shorter) / (len a + len b), so a contained answer must be over a third of the other's
    length to pass the 0.5 threshold ("paris" vs "paris france" passes, "a" vs "alabama" fails).
    """
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def same_answer(a: str | None, b: str | None, protocol: str = PAPER) -> bool:
    """Whether two (resolved) answers name the same thing, by string rules only (docs/method.md §1.6).

    NONE is never the same as anything, itself included. Under `original-code` the strings are only
    lower-cased and stripped before the same equality and containment tests.
    """
    if is_special(a) or is_special(b):
        return False
    if protocol == ORIGINAL_CODE:
        na, nb = a.lower().strip(), b.lower().strip()
    else:
        na, nb = normalize_prediction(a), normalize_prediction(b)
    if not na or not nb:
        return False
    if na == nb:
        return True
    contained = na in nb or nb in na
    return contained and similarity_ratio(na, nb) > SIMILARITY_THRESHOLD
