"""The live markdown splitter as it was before it became incremental, kept verbatim as the
oracle ``chat.rendering.markdown.BlockSplitter`` must agree with (``tests/test_markdown.py``)
and the baseline ``bench/markdown.py`` times it against.

It rescans the whole unfinished tail on every feed: quadratic inside a long unclosed fence.
"""

from __future__ import annotations


class RescanningSplitter:
    """Cuts a growing markdown text into finished blocks and a raw tail (the old algorithm)."""

    def __init__(self) -> None:
        self.tail = ""

    def feed(self, text: str) -> str:
        """Add streamed text; return the source of the blocks it finished (may be empty)."""
        self.tail += text
        fence = ""
        cut = 0
        start = 0
        while (end := self.tail.find("\n", start)) != -1:
            line = self.tail[start:end].strip()
            if fence:
                if line.startswith(fence) and not line[len(fence) :].strip(fence[0]).strip():
                    fence = ""
            elif line.startswith(("```", "~~~")):
                marker = line[0]
                fence = line[: len(line) - len(line.lstrip(marker))]
            elif not line:
                cut = end + 1
            start = end + 1
        block, self.tail = self.tail[:cut], self.tail[cut:]
        return block
