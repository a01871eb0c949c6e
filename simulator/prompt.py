"""Reading a request's messages: their text, ``#sim`` directive lines and the prompt.

Shared by option resolution (directives, language) and by the planner and usage counts (the
prompt that seeds the answer, the prompt's token estimate), so both see the same text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
"""Character ranges (a regex class body) counted as CJK: ideographs and CJK punctuation."""
CJK_RE = re.compile(f"[{CJK}]")
_DIRECTIVE_RE = re.compile(r"^\s*#sim\b(.*)$")
_WORD_RE = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")


def parse_directive_string(text: str) -> dict[str, str]:
    """Split ``key=value key=value`` (as in a ``#sim`` line or ``SIM_OPTIONS``) into a dict."""
    raw: dict[str, str] = {}
    for item in text.split():
        key, _, value = item.partition("=")
        raw[key.strip().lower()] = value.strip()
    return raw


def message_text(content: Any) -> str:
    """Text of an OpenAI message ``content``: a string, or the text parts of a parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Native parts have no "type"; an image part ({"image": …}) has no text either.
        parts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text" and "text" in part
        ]
        return "\n".join(parts)
    return ""


def split_directives(text: str) -> tuple[dict[str, str], str]:
    """Pull ``#sim key=value`` lines out of a user message; return (raw options, clean text)."""
    raw: dict[str, str] = {}
    kept: list[str] = []
    for line in text.splitlines():
        match = _DIRECTIVE_RE.match(line)
        if match:
            raw.update(parse_directive_string(match.group(1)))
        else:
            kept.append(line)
    return raw, "\n".join(kept).strip()


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last user message, directive lines included."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def prompt_of(messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt that seeds the answer: the last user message without its directive lines."""
    return split_directives(last_user_text(messages))[1]


def has_cjk(text: str) -> bool:
    """True when ``text`` contains CJK ideographs or CJK punctuation."""
    return bool(CJK_RE.search(text))


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Rough prompt token count for ``usage``: a CJK char or a word each, plus message overhead."""
    total = 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        text = message_text(message.get("content"))
        cjk = len(CJK_RE.findall(text))
        total += cjk + len(_WORD_RE.findall(CJK_RE.sub(" ", text))) + 4
    return max(total, 1)


_MATH_RE = re.compile(r"\b(?:formulas?|formulae|equations?)\b|公式|方程", re.IGNORECASE)


def asks_for_math(prompt: str) -> bool:
    """Whether the prompt asks about a formula or an equation (any case; 公式, 方程): its answer
    then shows one in TeX, as a model writes it (``math`` option)."""
    return bool(_MATH_RE.search(prompt))


_LENGTH_RE = re.compile(r"(\d{2,5})\s*(?:-\s*)?(words?\b|字)", re.IGNORECASE)
MAX_ASKED_TOKENS = 4096
"""The most a length asked for in the prompt sets (``max_tokens`` still cuts sooner)."""


def asked_tokens(prompt: str) -> int | None:
    """Tokens for an answer of the length the prompt asks ("about 800 words", "约800字"), as a
    model would write it: about 4 tokens per 3 English words, one per Chinese character.
    None when the prompt names no length: the simulator's own default applies."""
    found = _LENGTH_RE.search(prompt)
    if found is None:
        return None
    count = int(found.group(1))
    tokens = count if found.group(2) == "字" else round(count * 4 / 3)
    return min(tokens, MAX_ASKED_TOKENS)
