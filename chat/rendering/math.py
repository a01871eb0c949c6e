"""TeX formulas in model answers drawn as MathML, on the server: no script, no inline style.

A markdown-it plugin (``math_plugin``) finds the formulas and latex2mathml converts them;
Chromium, Firefox and Safari draw MathML natively. Delimiters, as models write them:

- inline: ``$…$``, ``\\(…\\)``, and ``$$…$$`` inside a line of text (drawn as display math);
- display, as a block of its own: ``$$`` or ``\\[`` alone on a line, the TeX on the lines
  after, up to a line ending in ``$$`` or ``\\]``; or the whole formula on one line
  (``$$ … $$``, ``\\[ … \\]``). Such a block may interrupt a paragraph, as models write it
  straight after "The formula is:".

The traps, after pandoc's rules (mdit-py-plugins' dollarmath follows them too): a ``$`` opens
inline math only before a non-space, and closes it only after a non-space and not before a
digit, so "$5 and $10" stays prices; ``\\$`` is a dollar; code spans and fences are never
looked into (their rules consume them first); ``\\[`` in the middle of a line is CommonMark's
escaped bracket, math only at the start of a block line. Blank lines inside a display block
do not end it, which is also what ``BlockSplitter`` assumes while streaming.

The TeX is kept in the markup, as ``<annotation encoding="application/x-tex">`` inside
``<semantics>`` (the standard place; the browser draws only the first child of
``<semantics>``), so the formula's source is still in the page. The answer's copy button and the
exports use the stored markdown, which holds the TeX as written. TeX that latex2mathml cannot
convert is shown as its source, escaped, in ``<code class="math-error">``: never an error page,
never a broken stream.

The sanitiser (``chat.rendering.markdown.sanitize``) keeps ``MATH_TAGS`` with
``MATH_ATTRIBUTES`` only: presentation attributes, never ``href``, ``style``, ``class`` or
event handlers (latex2mathml turns ``\\href``, ``\\style`` and ``\\class`` into those).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from latex2mathml.converter import convert
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.rules_block import StateBlock
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

__all__ = [
    "DISPLAY_CLASS",
    "MATH_ATTRIBUTES",
    "MATH_TAGS",
    "MAX_TEX_CHARS",
    "display_math_closer",
    "math_plugin",
    "tex_to_mathml",
]

MAX_TEX_CHARS = 20_000
"""Longer formulas are shown as their source: converting is not free."""
MAX_INLINE_SCAN = 4_000
"""How far past an opening ``$`` a closing one is looked for: a paragraph of prices is not
scanned to its end from every dollar (quadratic)."""

DISPLAY_CLASS = "math-display"
"""The block around display math: centred, scrolling sideways when wider than the answer."""

MATH_TAGS = frozenset(
    {
        "annotation", "math", "menclose", "merror", "mfrac", "mi", "mmultiscripts", "mn", "mo",
        "mover", "mpadded", "mphantom", "mprescripts", "mroot", "mrow", "ms", "mspace", "msqrt",
        "mstyle", "msub", "msubsup", "msup", "mtable", "mtd", "mtext", "mtr", "munder",
        "munderover", "semantics",
    }
)  # fmt: skip

_PRESENTATION = {"dir", "displaystyle", "mathbackground", "mathcolor", "mathsize", "mathvariant",
                 "scriptlevel"}  # fmt: skip
_SIZES = {"depth", "height", "lspace", "voffset", "width"}
_TABLE = {"columnalign", "columnlines", "columnspacing", "frame", "rowalign", "rowlines",
          "rowspacing"}  # fmt: skip
_OPERATOR = {"accent", "fence", "form", "largeop", "lspace", "maxsize", "minsize",
             "movablelimits", "rspace", "separator", "stretchy", "symmetric"}  # fmt: skip
_PER_TAG = {
    "annotation": {"encoding"},
    "math": {"display", "xmlns"},
    "menclose": {"notation"},
    "mfrac": {"linethickness"},
    "mo": _OPERATOR,
    "mover": {"accent"},
    "mpadded": _SIZES,
    "mspace": _SIZES | {"linebreak"},
    "mtable": _TABLE,
    "mtd": {"columnalign", "columnspan", "rowalign", "rowspan"},
    "mtr": {"columnalign", "rowalign"},
    "munder": {"accentunder"},
    "munderover": {"accent", "accentunder"},
}
MATH_ATTRIBUTES: dict[str, set[str]] = {
    tag: _PRESENTATION | _PER_TAG.get(tag, set()) for tag in MATH_TAGS
}
"""Attributes kept on MathML elements: how a formula looks, nothing that links or runs."""

_DISPLAY_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"))


CACHED_TEX_CHARS = 2_000
"""Formulas up to this long are remembered once drawn (a snapshot, the final render and each
page view draw them again); longer ones are rare and would make the cache big."""


def tex_to_mathml(tex: str, display: bool) -> str | None:
    """MathML for ``tex`` with the TeX kept in an annotation, or None when it is not valid TeX."""
    tex = tex.strip()
    if not tex or len(tex) > MAX_TEX_CHARS:
        return None
    return _cached(tex, display) if len(tex) <= CACHED_TEX_CHARS else _convert(tex, display)


def _convert(tex: str, display: bool) -> str | None:
    try:
        mathml = convert(tex, display="block" if display else "inline")
    # latex2mathml raises its own errors and plain ones (IndexError, RecursionError…) on TeX
    # it cannot follow; any of them means "show the source".
    except Exception:
        return None
    opened = mathml.find(">") + 1
    closed = mathml.rfind("</math>")
    if not opened or closed < opened:
        return None
    annotation = f'<annotation encoding="application/x-tex">{escapeHtml(tex)}</annotation>'
    return (
        f"{mathml[:opened]}<semantics><mrow>{mathml[opened:closed]}</mrow>{annotation}"
        "</semantics></math>"
    )


_cached = lru_cache(maxsize=512)(_convert)


def _math_html(tex: str, display: bool, source: str) -> str:
    mathml = tex_to_mathml(tex, display)
    if mathml is None:
        return f'<code class="math-error">{escapeHtml(source)}</code>'
    return mathml


def display_math_closer(line: str) -> str:
    """The closer a stripped line alone on itself opens (``$$`` or ``\\]``), or ""."""
    for opener, closer in _DISPLAY_DELIMITERS:
        if line == opener:
            return closer
    return ""


# --- Inline: $…$, $$…$$, \(…\) --------------------------------------------------------------


def _escaped(src: str, pos: int) -> bool:
    """Whether the character at ``pos`` follows an odd run of backslashes."""
    count = 0
    while pos - count - 1 >= 0 and src[pos - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _paren_close(src: str, start: int, end: int) -> int:
    """Where ``\\)`` closes from ``start``, skipping TeX's escapes (``\\\\``), or -1."""
    pos = start
    while (pos := src.find("\\", pos, end)) != -1:
        if src.startswith("\\)", pos) and pos + 2 <= end:
            return pos
        pos += 2
    return -1


def _dollar_close(src: str, start: int, end: int) -> int:
    """Where a single ``$`` closes inline math from ``start`` (pandoc's rules), or -1."""
    end = min(end, start + MAX_INLINE_SCAN)
    pos = start
    while (pos := src.find("$", pos, end)) != -1:
        after = src[pos + 1] if pos + 1 < len(src) else ""
        if not _escaped(src, pos) and not src[pos - 1].isspace() and not after.isdigit():
            return pos
        pos += 1
    return -1


def _double_close(src: str, start: int, end: int) -> int:
    pos = start
    while (pos := src.find("$$", pos, end)) != -1:
        if not _escaped(src, pos):
            return pos
        pos += 1
    return -1


def _math_inline(state: StateInline, silent: bool) -> bool:
    """Inline math at ``state.pos``; runs before ``escape`` so that it sees ``\\(``."""
    src, pos, end = state.src, state.pos, state.posMax
    if src.startswith("\\(", pos):
        opener, close = "\\(", _paren_close(src, pos + 2, end)
        kind, closer = "math_inline", "\\)"
    elif src.startswith("$$", pos):
        opener, close = "$$", _double_close(src, pos + 2, end)
        kind, closer = "math_inline_double", "$$"
    elif src.startswith("$", pos) and pos + 1 < end and not src[pos + 1].isspace():
        opener, close = "$", _dollar_close(src, pos + 2, end)
        kind, closer = "math_inline", "$"
    else:
        return False
    if close == -1 or not src[pos + len(opener) : close].strip():
        return False
    if not silent:
        token = state.push(kind, "math", 0)
        token.content = src[pos + len(opener) : close]
        token.markup = opener
    state.pos = close + len(closer)
    return True


# --- Display blocks: $$ … $$ and \[ … \] on lines of their own --------------------------------


def _line(state: StateBlock, line: int) -> str:
    return state.src[state.bMarks[line] + state.tShift[line] : state.eMarks[line]].rstrip()


def _math_block(state: StateBlock, start_line: int, end_line: int, silent: bool) -> bool:
    """A display formula starting at ``start_line``, closed on it or on a later line."""
    if state.is_code_block(start_line):
        return False
    first = _line(state, start_line)
    found = [pair for pair in _DISPLAY_DELIMITERS if first.startswith(pair[0])]
    if not found:
        return False
    ((opener, closer),) = found
    rest = first[len(opener) :]
    if rest.strip():  # all on one line, or not display math
        if len(rest) < len(closer) or not rest.endswith(closer):
            return False
        lines, last = [rest[: -len(closer)]], start_line
    else:
        last = start_line + 1
        while last < end_line:
            text = _line(state, last)
            if text and state.sCount[last] < state.blkIndent:
                return False  # the list or quote it was in ended first
            if text.endswith(closer):
                break
            last += 1
        else:
            return False  # never closed: left as text
        lines = [_line(state, line) for line in range(start_line + 1, last)]
        lines.append(_line(state, last)[: -len(closer)])
    tex = "\n".join(lines).strip("\n")
    if not tex.strip():
        return False
    if silent:
        return True
    token = state.push("math_block", "math", 0)
    token.block = True
    token.content = tex
    token.markup = opener
    token.meta = {"source": "\n".join(_line(state, line) for line in range(start_line, last + 1))}
    token.map = [start_line, last + 1]
    state.line = last + 1
    return True


# --- Rendering ----------------------------------------------------------------------------------


def _render_inline(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    closer = "\\)" if token.markup == "\\(" else token.markup
    return _math_html(token.content, False, token.markup + token.content + closer)


def _render_inline_double(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    return _math_html(token.content, True, f"$${token.content}$$")


def _render_block(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    source = token.meta["source"]
    return f'<div class="{DISPLAY_CLASS}">{_math_html(token.content, True, source)}</div>\n'


def math_plugin(md: MarkdownIt) -> None:
    """Teach ``md`` TeX formulas (when the parser is built, in ``_build_parser``)."""
    md.inline.ruler.before("escape", "math_inline", _math_inline)
    interrupts = ["paragraph", "reference", "blockquote", "list"]
    md.block.ruler.before("fence", "math_block", _math_block, {"alt": interrupts})
    md.add_render_rule("math_inline", _render_inline)
    md.add_render_rule("math_inline_double", _render_inline_double)
    md.add_render_rule("math_block", _render_block)
