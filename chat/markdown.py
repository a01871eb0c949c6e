"""Model output to safe HTML: markdown-it-py renders, nh3 sanitises, on the server only.

Raw HTML in the markdown is not passed through (``html=False``) and nh3 removes whatever
else could execute, so ``<script>`` or ``onerror=`` in an answer shows as text. Images are
rendered as their alt text: a remote image would make the browser call a host of the model's
choosing. Table cell alignment (a ``style`` attribute) is dropped: the Content-Security-Policy
forbids inline styles.
"""

from __future__ import annotations

from collections.abc import Sequence

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "li", "ol", "p", "pre", "s", "span", "strong", "table", "tbody", "td", "th", "thead", "tr",
    "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "ol": {"start"},
}


def _image_as_text(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    return escapeHtml(f"[image: {alt}]" if alt else "[image]")


def _build_parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _image_as_text)
    return md


_md = _build_parser()


def render_markdown(text: str) -> str:
    """Return sanitised HTML for a model's markdown answer."""
    html: str = _md.render(text)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


class BlockSplitter:
    """Cuts a growing markdown text into finished blocks and a raw tail, for live rendering.

    A block is finished at a blank line outside a fenced code block: nothing that follows can
    change how it renders (near enough; the final answer is rendered again as a whole). Each
    block is rendered once, so live markdown costs O(n) overall, not a re-render per token.
    """

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
