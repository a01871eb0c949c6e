"""Deterministic answer and reasoning text: the token pieces a request will stream.

Everything here is pure (no I/O, no clock) so the exact token pieces a request will stream can be
recomputed by a test: ``plan_answer(model, messages, SimOptions(**log_entry["options"]))`` gives
the same list the server sent, and ``plan_reasoning`` the thinking streamed before it (empty when
``think`` is 0). Seeding uses string seeds for ``random.Random`` because ``hash()`` is salted per
process; the reasoning has its own RNG so turning thinking on never changes the answer text.

The options themselves are parsed in ``simulator.options`` and the messages read in
``simulator.prompt``; their public names stay importable from here, where tests and benchmarks
have always found them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

from simulator.corpus import (
    CODE_SNIPPETS,
    EN_HEADINGS,
    EN_MATH,
    EN_SENTENCES,
    EN_STOP,
    EN_TABLE,
    EN_TERMS,
    EN_THINK,
    EN_THINK_OPENERS,
    ZH_HEADINGS,
    ZH_MATH,
    ZH_SENTENCES,
    ZH_TABLE,
    ZH_TERMS,
    ZH_THINK,
    ZH_THINK_OPENERS,
)
from simulator.hostile import fence_tokens, with_huge_token
from simulator.options import (
    FAULT_FRAMINGS,
    FAULTS,
    HTTP_FAULTS,
    MIDSTREAM_KINDS,
    REASONING_FIELDS,
    SimOptionError,
    SimOptions,
    parse_options,
    resolve_options,
)
from simulator.prompt import (
    CJK,
    CJK_RE,
    estimate_prompt_tokens,
    has_cjk,
    last_user_text,
    message_text,
    parse_directive_string,
    prompt_of,
    split_directives,
)

__all__ = [
    "FAULTS",
    "FAULT_FRAMINGS",
    "HTTP_FAULTS",
    "MIDSTREAM_KINDS",
    "REASONING_FIELDS",
    "SimOptionError",
    "SimOptions",
    "estimate_prompt_tokens",
    "has_cjk",
    "last_user_text",
    "message_text",
    "parse_directive_string",
    "parse_options",
    "plan_answer",
    "plan_reasoning",
    "prompt_of",
    "resolve_options",
    "split_directives",
]

# One token: optional leading whitespace, then a CJK run (chunked later), a markdown marker,
# a word, or a single other character. Every non-trailing character lands in exactly one token.
_UNIT_RE = re.compile(rf"(\s*)([{CJK}]+|`{{3}}|#{{1,6}}|-{{3}}|\*\*|[A-Za-z0-9_']+|\S)")


def _topic(prompt: str, lang: str) -> str:
    """A few words of the prompt to weave into the answer, so answers look on-topic."""
    if lang == "zh":
        runs = re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff]+", prompt)
        return max(runs, key=len)[:8] if runs else "这个问题"
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z-]{3,}", prompt) if w.lower() not in EN_STOP]
    return " ".join(words[:3]).lower() if words else "this topic"


def _tokenize(text: str, rng: random.Random) -> list[str]:
    """Cut text into token pieces: words with their leading space, 1-4 char CJK chunks."""
    pieces: list[str] = []
    for match in _UNIT_RE.finditer(text):
        space, unit = match.group(1), match.group(2)
        if CJK_RE.match(unit):
            first = True
            pos = 0
            while pos < len(unit):
                size = rng.choice((1, 2, 2, 2, 3, 4))
                chunk = unit[pos : pos + size]
                pieces.append(space + chunk if first else chunk)
                first = False
                pos += size
        else:
            pieces.append(space + unit)
    return pieces


class _Writer:
    """Produces markdown blocks for one language from a seeded RNG."""

    def __init__(self, rng: random.Random, lang: str, topic: str, math: bool = False) -> None:
        self.rng = rng
        self.zh = lang == "zh"
        self.topic = topic
        self.math = math
        self._deck: list[str] = []

    def sentence(self) -> str:
        # Deal from a shuffled deck so sentences do not repeat until the bank is used up.
        if not self._deck:
            self._deck = list(ZH_SENTENCES if self.zh else EN_SENTENCES)
            self.rng.shuffle(self._deck)
        text = self._deck.pop().replace("{t}", self.topic)
        return text if self.zh else text[0].upper() + text[1:]

    def paragraph(self, low: int = 2, high: int = 4) -> str:
        count = self.rng.randint(low, high)
        joiner = "" if self.zh else " "
        return joiner.join(self.sentence() for _ in range(count))

    def heading(self) -> str:
        level = self.rng.choice(("##", "###"))
        return f"{level} {self.rng.choice(ZH_HEADINGS if self.zh else EN_HEADINGS)}"

    def bullets(self) -> str:
        terms = list(ZH_TERMS if self.zh else EN_TERMS)
        self.rng.shuffle(terms)
        colon = "：" if self.zh else ":"
        items = []
        for term in terms[: self.rng.randint(3, 5)]:
            if self.rng.random() < 0.6:
                items.append(f"- **{term}**{colon}{'' if self.zh else ' '}{self.sentence()}")
            else:
                items.append(f"- {self.sentence()}")
        return "\n".join(items)

    def table(self) -> str:
        header, rows = ZH_TABLE if self.zh else EN_TABLE
        chosen = self.rng.sample(rows, self.rng.randint(2, 4))
        lines = ["| " + " | ".join(header) + " |", "| --- | --- | --- |"]
        lines += ["| " + " | ".join(row) + " |" for row in chosen]
        return "\n".join(lines)

    def code(self) -> str:
        lang, body = self.rng.choice(CODE_SNIPPETS)
        return f"```{lang}\n{body}\n```"

    def blocks(self) -> Iterator[str]:
        """An endless, realistic-looking sequence of markdown blocks."""
        yield self.paragraph(1, 3)
        if self.math:
            yield self.rng.choice(ZH_MATH if self.zh else EN_MATH)
        while True:
            yield self.heading()
            yield self.paragraph()
            yield self.bullets()
            if self.rng.random() < 0.4:
                yield self.table()
            if self.rng.random() < 0.5:
                yield self.paragraph(1, 2)
                yield self.code()
            yield self.paragraph()


_TAIL_MIN = 12
"""Tokens always left for the closing paragraph, so the answer ends on a sentence."""


def _closing(writer: _Writer, rng: random.Random, count: int, lead: str) -> list[str]:
    """Exactly ``count`` tokens of prose ending in sentence punctuation."""
    text = lead + writer.paragraph(1, 1)
    tokens = _tokenize(text, rng)
    while len(tokens) < count:
        text += ("" if writer.zh else " ") + writer.sentence()
        tokens = _tokenize(text, rng)
    tokens = tokens[:count]
    end = "。" if writer.zh else "."
    last = tokens[-1]
    if last.rstrip()[-1:] in {",", ";", ":", "，", "；", "：", "、"}:
        tokens[-1] = last.rstrip()[:-1] + end
    elif last.rstrip()[-1:] not in {".", "!", "?", "。", "！", "？"}:
        tokens[-1] = last + end
    return tokens


def _weird(tokens: list[str], rng: random.Random) -> list[str]:
    """Hide raw U+2028 and U+0085 inside some tokens (legal in JSON, fatal to splitlines)."""
    out = list(tokens)
    oddities = ["\u2028", "\u0085"]
    for index in range(1, len(out)):
        if oddities:
            char = oddities.pop(0)
        elif rng.random() < 0.05:
            char = rng.choice(("\u2028", "\u0085", "\u2029"))
        else:
            continue
        token = out[index]
        cut = rng.randint(1, len(token) - 1) if len(token) > 1 else 1
        out[index] = token[:cut] + char + token[cut:]
    return out


def plan_answer(model: str, messages: list[dict[str, Any]], opts: SimOptions) -> list[str]:
    """The token pieces a request will stream, exactly ``opts.tokens`` of them.

    Deterministic for (model, prompt, seed, tokens, lang, weird); ``max_tokens`` truncation and
    ``stamp`` prefixes are applied by the server on top of this plan.
    """
    prompt = prompt_of(messages)
    rng = random.Random(f"{model}|{prompt}|{opts.seed}|{opts.tokens}|{opts.lang}")
    if opts.echo:
        return _tokenize(prompt, rng)
    if opts.fence:
        return fence_tokens(opts.fence, rng)
    writer = _Writer(rng, opts.lang, _topic(prompt, opts.lang), math=opts.math)
    budget = opts.tokens
    tokens: list[str] = []
    if budget > _TAIL_MIN:
        for block in writer.blocks():
            piece = _tokenize(("\n\n" if tokens else "") + block, rng)
            if len(tokens) + len(piece) > budget - _TAIL_MIN:
                break
            tokens += piece
    tokens += _closing(writer, rng, budget - len(tokens), "\n\n" if tokens else "")
    if opts.weird:
        tokens = _weird(tokens, rng)
    if opts.huge:
        tokens = with_huge_token(tokens, opts.huge)
    return tokens


def plan_reasoning(model: str, messages: list[dict[str, Any]], opts: SimOptions) -> list[str]:
    """The thinking token pieces streamed before the answer, exactly ``opts.think`` of them.

    Deterministic for (model, prompt, seed, think, lang, weird) and drawn from its own RNG, so
    the answer a request gets is the same whether it thinks or not.
    """
    if opts.think <= 0:
        return []
    prompt = prompt_of(messages)
    rng = random.Random(f"{model}|{prompt}|{opts.seed}|{opts.think}|{opts.lang}|think")
    zh = opts.lang == "zh"
    topic = _topic(prompt, opts.lang)
    bank = list(ZH_THINK if zh else EN_THINK)
    rng.shuffle(bank)
    joiner = "" if zh else " "
    text = rng.choice(ZH_THINK_OPENERS if zh else EN_THINK_OPENERS).replace("{t}", topic)
    tokens = _tokenize(text, rng)
    index = 0
    while len(tokens) < opts.think:
        # Thinking comes in short paragraphs, like the real reasoning_content does.
        sep = "\n\n" if rng.random() < 0.25 else joiner
        sentence = bank[index % len(bank)].replace("{t}", topic)
        index += 1
        tokens += _tokenize(sep + sentence, rng)
    tokens = tokens[: opts.think]
    end = "。" if zh else "."
    last = tokens[-1]
    if last.rstrip()[-1:] in {",", ";", ":", "，", "；", "：", "、"}:
        tokens[-1] = last.rstrip()[:-1] + end
    elif last.rstrip()[-1:] not in {".", "?", "。", "？"}:
        tokens[-1] = last + end
    if opts.weird:
        tokens = _weird(tokens, rng)
    return tokens
