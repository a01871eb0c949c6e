"""Model output to safe HTML: markdown-it-py renders, nh3 sanitises, on the server only.

Raw HTML in the markdown is not passed through (``html=False``) and nh3 removes whatever
else could execute, so ``<script>`` or ``onerror=`` in an answer shows as text. Images are
rendered as their alt text: a remote image would make the browser call a host of the model's
choosing. Table cell alignment (a ``style`` attribute) is dropped: the Content-Security-Policy
forbids inline styles.

Fenced code is highlighted here with Pygments: tokens become ``<span class="k">`` and the like
(never inline styles), coloured by ``static/chat/highlight.css`` (``manage.py highlight_css``
writes it from ``highlight_css()``). A fence with an unknown or no language is plain escaped
text: nothing guesses. Each code block carries its copy button; its label comes from
``data-lang`` through CSS, so neither is part of the answer's text.

TeX formulas (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``) become MathML: ``chat.rendering.math``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import nh3
import pygments
import pygments.token
from django.utils.translation import gettext
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

from chat.rendering.math import (
    DISPLAY_CLASS,
    MATH_ATTRIBUTES,
    MATH_TAGS,
    display_math_closer,
    math_plugin,
)

ALLOWED_TAGS = {
    "a", "blockquote", "br", "button", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5",
    "h6", "hr", "li", "ol", "p", "pre", "s", "span", "strong", "table", "tbody", "td", "th",
    "thead", "tr", "ul", *MATH_TAGS,
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "button": {"aria-label", "data-copied-label"},
    "code": {"class"},  # language-…
    "div": {"data-lang"},
    "ol": {"start"},
    **MATH_ATTRIBUTES,
}
# Classes are kept only where the code blocks need them: Pygments' token classes on spans.
ALLOWED_CLASSES = {
    "button": {"copy", "copy--code"},
    "div": {"codeblock", DISPLAY_CLASS},
    "pre": {"highlight"},
    "span": {name for name in STANDARD_TYPES.values() if name},
}
ATTRIBUTE_VALUES = {"button": {"type": {"button"}, "data-copy": {"code"}}}

LIGHT_STYLE = "default"
DARK_STYLE = "github-dark"
"""Pygments styles of code blocks, light and dark (``prefers-color-scheme``); both keep every
token at WCAG AA contrast (4.5:1) on their own background."""

HIGHLIGHT_MAX_CHARS = 100_000
"""Longer code blocks are shown plain: highlighting is linear, but not free."""

_formatter = HtmlFormatter(nowrap=True)


@lru_cache(maxsize=128)
def _lexer(language: str) -> Lexer | None:
    """The lexer for a fence's language name or alias (``python``, ``py``, ``js``…), or None."""
    try:
        # stripnl=False, ensurenl=False: the text in the page is exactly the code, to copy.
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def highlight_code(code: str, language: str) -> str:
    """Escaped HTML of ``code``, with token spans when ``language`` is one Pygments knows."""
    lexer = _lexer(language.lower()) if language else None
    if lexer is None or len(code) > HIGHLIGHT_MAX_CHARS:
        return escapeHtml(code)
    html: str = pygments.highlight(code, lexer, _formatter)
    return html


def _code_block_html(code: str, language: str) -> str:
    label = f' data-lang="{escapeHtml(language)}"' if language else ""
    code_class = f' class="language-{escapeHtml(language)}"' if language else ""
    # Outside the f-string: xgettext does not see calls inside one.
    copy, copied = escapeHtml(gettext("Copy code")), escapeHtml(gettext("Copied"))
    return (
        f'<div class="codeblock"{label}>'
        f'<button type="button" class="copy copy--code" data-copy="code"'
        f' aria-label="{copy}" data-copied-label="{copied}"></button>'
        f'<pre class="highlight"><code{code_class}>{highlight_code(code, language)}</code></pre>'
        "</div>\n"
    )


def _fence(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    info = unescapeAll(token.info).strip() if token.info else ""
    language = info.split(maxsplit=1)[0][:40] if info else ""
    return _code_block_html(token.content, language)


def _indented_code(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    return _code_block_html(tokens[idx].content, "")


def highlight_css() -> str:
    """The token colours of code blocks, light and dark: ``static/chat/highlight.css``."""
    parts = [
        "/* Code highlighting: Pygments token colours. Generated by `python manage.py"
        " highlight_css` from chat/rendering/markdown.py; do not edit. */"
    ]
    for style, scheme in ((LIGHT_STYLE, "light"), (DARK_STYLE, "dark")):
        formatter = HtmlFormatter(style=style)
        background = formatter.style.background_color
        text = formatter.style.style_for_token(pygments.token.Token)["color"]
        color = f" color: #{text};" if text else ""  # else the page's own text colour
        rules = [f".markdown pre.highlight {{ background: {background};{color} }}"]
        # No error boxes: a snippet the lexer does not fully follow is still just code.
        rules += [
            rule
            for rule in formatter.get_token_style_defs(".highlight")
            if not rule.startswith((".highlight .err ", ".highlight .hll "))
        ]
        body = "\n".join("  " + rule for rule in rules)
        parts.append(f"@media (prefers-color-scheme: {scheme}) {{\n{body}\n}}")
    return "\n".join(parts) + "\n"


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
    md.add_render_rule("fence", _fence)
    md.add_render_rule("code_block", _indented_code)
    md.use(math_plugin)
    return md


_md = _build_parser()


def render_markdown(text: str) -> str:
    """Return sanitised HTML for a model's markdown answer."""
    return sanitize(_md.render(text))


_CLEANER = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    attributes=ALLOWED_ATTRIBUTES,
    allowed_classes=ALLOWED_CLASSES,
    tag_attribute_values=ATTRIBUTE_VALUES,
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer nofollow",
)
"""Built once: ``nh3.clean`` converts these rule sets for every call, which cost 15 times the
cleaning itself for a paragraph (110 µs against 7; the live path sanitises each block)."""


def sanitize(html: str) -> str:
    """Keep only the markup markdown and the code blocks make, never anything that runs."""
    return _CLEANER.clean(html)


class BlockSplitter:
    """Cuts a growing markdown text into finished blocks and a raw tail, for live rendering.

    A block is finished at a blank line outside a fenced code block (or a display formula,
    ``$$``/``\\[`` alone on a line up to its closing line): nothing that follows can
    change how it renders (near enough; the final answer is rendered again as a whole). Each
    block is rendered once, so live markdown costs O(n) overall, not a re-render per token.

    Splitting is O(n) overall too: each line is examined once, when its line break arrives,
    and whether a fence is open is remembered between feeds. (Rescanning the unfinished tail
    on every token was quadratic inside a long unclosed code fence; ``make bench`` runs
    ``bench.markdown``, which compares the two.) The tail is kept in pieces and joined only
    when read.
    """

    __slots__ = ("_fence", "_joined", "_lines", "_math", "_partial")

    def __init__(self) -> None:
        self._lines: list[str] = []  # whole lines since the last cut, each with its "\n"
        self._partial: list[str] = []  # the line still being written, in the pieces it came
        self._fence = ""  # the marker of the open code fence (```, ~~~~, …); "" outside one
        self._math = ""  # what closes the open display formula ($$ or \\]); "" outside one
        self._joined: str | None = ""  # the tail, once read (None: changed since)

    @property
    def tail(self) -> str:
        """The text after the last finished block (raw: still growing)."""
        if self._joined is None:
            lines, partial = "".join(self._lines), "".join(self._partial)
            self._lines, self._partial = [lines] if lines else [], [partial] if partial else []
            self._joined = lines + partial
        return self._joined

    def feed(self, text: str) -> str:
        """Add streamed text; return the source of the blocks it finished (may be empty)."""
        if not text:
            return ""
        self._joined = None
        cut = 0  # the lines before this index end in a blank line outside a fence
        start = 0
        while (end := text.find("\n", start)) != -1:
            line = text[start : end + 1]
            if self._partial:
                self._partial.append(line)
                line = "".join(self._partial)
                self._partial.clear()
            self._lines.append(line)
            if self._ends_block(line[:-1].strip()):
                cut = len(self._lines)
            start = end + 1
        if start < len(text):
            self._partial.append(text[start:])
        if not cut:
            return ""
        block = "".join(self._lines[:cut])
        del self._lines[:cut]
        return block

    def _ends_block(self, line: str) -> bool:
        """Whether this whole line (stripped) is a blank one outside a fence or formula; opens
        or closes one on the way."""
        fence = self._fence
        if fence:
            if line.startswith(fence) and not line[len(fence) :].strip(fence[0]).strip():
                self._fence = ""
        elif self._math:
            if line.endswith(self._math):
                self._math = ""
        elif line.startswith(("```", "~~~")):
            marker = line[0]
            self._fence = line[: len(line) - len(line.lstrip(marker))]
        elif not line:
            return True
        else:
            self._math = display_math_closer(line)
        return False
