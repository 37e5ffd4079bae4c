"""Chat templates: rendering conversations, hashing templates, checking BOS.

pbt renders every conversation with the tokenizer's own chat template and tokenizes the rendered
text with `add_special_tokens=False`, exactly as TRL (`apply_chat_template(tokenize=True)`) and
vLLM (`LLM.chat`) do. The template therefore decides the BOS token; pbt never adds a second one,
and `pbt preprocess` refuses data whose rendering starts with two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pbt_cli.errors import PbtError

Message = dict[str, str]
Conversation = list[Message]


def read_template_file(path: str | Path) -> str:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PbtError(f"--chat-template {path} cannot be read ({exc.strerror}); give a Jinja template file") from None
    except UnicodeDecodeError:
        raise PbtError(f"--chat-template {path} is not UTF-8 text; give a Jinja template file") from None
    check_template_syntax(text, path)
    return text


def check_template_syntax(text: str, path: Path) -> None:
    """A template that Jinja cannot parse is one line naming the file and the line, before any model loads."""
    import jinja2

    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise PbtError(f"--chat-template {path} line {exc.lineno}: not a valid Jinja template ({exc.message}); "
                       "fix the file or give another") from None


def require_chat_template(tokenizer: Any, model_name: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise PbtError(f"the tokenizer of {model_name} has no chat template; pass one with --chat-template FILE "
                       "(a Jinja file, e.g. taken from the instruct version of the model)")


def template_hash(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    return template_text_hash(template) if template else None


def template_text_hash(template: str | dict[str, str]) -> str:
    if isinstance(template, dict):  # named templates
        template = "\n".join(f"{k}:{v}" for k, v in sorted(template.items()))
    return hashlib.sha256(template.encode()).hexdigest()[:16]


def ends_with_prefill(conversation: Sequence[Message]) -> bool:
    """A conversation ending in an assistant message asks the model to continue that message."""
    return bool(conversation) and conversation[-1]["role"] == "assistant"


def render(tokenizer: Any, conversation: Sequence[Message], *, complete: bool = False) -> str:
    """The template's text for a conversation.

    For generation (the default) a conversation ending with a user message gets the generation
    prompt, and one ending with an assistant message is continued (an answer prefix such as
    "Final answer:"). With `complete=True` the conversation is rendered as finished, every turn
    closed by the template's end-of-turn: the form a training example takes.
    """
    prefill = ends_with_prefill(conversation) and not complete
    try:
        return tokenizer.apply_chat_template(
            list(conversation), tokenize=False, add_generation_prompt=not prefill and not complete,
            continue_final_message=prefill,
        )
    except Exception as exc:  # jinja errors from templates that refuse a role order, e.g. Mistral's
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        source = getattr(tokenizer, "pbt_template_file", None)
        whose = f"--chat-template {source}" if source else \
            f"the chat template of {getattr(tokenizer, 'name_or_path', 'the model')}"
        raise PbtError(f"{whose} refused a conversation ({first}); pass another template with "
                       "--chat-template") from None


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def leading_bos_count(ids: Sequence[int], bos_token_id: int | None) -> int:
    if bos_token_id is None:
        return 0
    count = 0
    for token in ids:
        if token != bos_token_id:
            break
        count += 1
    return count
