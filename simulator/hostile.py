"""Answers a worker must survive, by directive: one enormous token, and a code fence that never
closes. Pure, like ``script`` (which applies them), so a test can replan them.

- ``huge=N``: the middle token of the planned answer becomes N characters (``x`` repeated),
  so one SSE ``data:`` line carries more than N bytes: a model echoing a pasted file in one
  piece, or a broken server. The other tokens are the usual ones.
- ``fence=N``: the answer is a short paragraph, then a Python code block that never closes,
  N characters in all, cut into tokens of 2 to 8 characters: a model writing a long file, as
  ``bench.markdown`` feeds the live markdown splitter. It replaces the planned prose (and
  ``tokens``: the fence sets how many there are).
"""

from __future__ import annotations

import random

__all__ = [
    "CODE_LINES",
    "FENCE",
    "INTRO",
    "MAX_FENCE_CHARS",
    "MAX_HUGE_CHARS",
    "NAMES",
    "fence_tokens",
    "with_huge_token",
]

MAX_HUGE_CHARS = 64 * 1024 * 1024
"""Upper bound for ``huge``: past any cap a client may have, short of the simulator's memory."""
MAX_FENCE_CHARS = 4 * 1024 * 1024
"""Upper bound for ``fence``."""

# The code ``bench.markdown`` streams through the live markdown splitter too.
INTRO = "Here is the module:\n\n"
FENCE = "```python\n"
CODE_LINES = (
    "def {name}(value: int, other: int) -> int:",
    '    """Return the {name} of two numbers."""',
    "    result = value * {n} + other  # {name}",
    "    if result > {n}:",
    "        return result - {n}",
    "    for item in range({n}):",
    "        total += compute(item, value=value, limit={n})",
    "    return result",
    "",
    "class {Name}(Base):",
    "    items: list[str] = []",
)
NAMES = ("scale", "offset", "merge", "limit", "render", "parse", "window", "buffer")


def with_huge_token(tokens: list[str], size: int) -> list[str]:
    """``tokens`` with the middle one replaced by ``size`` characters (as many tokens)."""
    out = list(tokens)
    out[len(out) // 2] = "x" * size
    return out


def fence_tokens(size: int, rng: random.Random) -> list[str]:
    """A paragraph, then a code fence that never closes, ``size`` characters in all (never
    fewer than those two), as tokens of 2 to 8 characters after the paragraph and fence line."""
    length = len(INTRO) + len(FENCE)
    lines: list[str] = []
    while length < size:
        name = rng.choice(NAMES)
        line = rng.choice(CODE_LINES).format(name=name, Name=name.title(), n=rng.randint(2, 999))
        lines.append(line + "\n")
        length += len(line) + 1
    code = "".join(lines)[: max(0, size - len(INTRO) - len(FENCE))]
    tokens = [INTRO, FENCE]
    pos = 0
    while pos < len(code):
        step = rng.randint(2, 8)
        tokens.append(code[pos : pos + step])
        pos += step
    return tokens
