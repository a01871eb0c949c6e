"""Code blocks in answers: highlighted on the server by Pygments with CSS classes (never
inline styles, which the Content-Security-Policy forbids), inert, exact, and quick enough."""

from __future__ import annotations

import html as htmllib
import re
import time
from pathlib import Path

import pytest
from pygments.styles import get_style_by_name
from pygments.token import Error, Token, Whitespace

from chat.rendering.markdown import (
    DARK_STYLE,
    HIGHLIGHT_MAX_CHARS,
    LIGHT_STYLE,
    highlight_css,
    render_markdown,
    sanitize,
)

ROOT = Path(__file__).resolve().parent.parent
TAG = re.compile(r"<[^>]+>")
STYLE_ATTRIBUTE = re.compile(r"<[^>]*\sstyle=")


def code_text(html: str) -> str:
    """What the page shows (and Copy code copies) of the first code block: its text."""
    match = re.search(r"<code[^>]*>(.*?)</code>", html, re.S)
    assert match, html
    return htmllib.unescape(TAG.sub("", match.group(1)))


def test_fenced_code_is_highlighted_with_token_classes() -> None:
    html = render_markdown('```python\ndef greet(name):\n    return f"hi {name}"  # ok\n```\n')
    assert '<span class="k">def</span>' in html
    assert '<span class="nf">greet</span>' in html
    assert '<span class="c1"># ok</span>' in html
    assert '<pre class="highlight"><code class="language-python">' in html
    assert 'data-lang="python"' in html  # the label above the block (CSS shows it)


@pytest.mark.parametrize(
    "language", ["python", "Python", "py", "js", "javascript", "ts", "bash", "sh", "json",
                 "html", "css", "sql", "go", "rust", "c", "cpp", "java", "yaml", "toml"]
)  # fmt: skip
def test_no_inline_styles_whatever_the_language(language: str) -> None:
    source = 'if (a < b) { x = "<b>" + 1; } // note\n<div style="color:red">x</div>\n'
    html = render_markdown(f"```{language}\n{source}```\n")
    assert not STYLE_ATTRIBUTE.search(html)
    assert "<span class=" in html
    assert code_text(html) == source


@pytest.mark.parametrize(
    "language", ["html", "javascript", "python", "nosuchlang", ""], ids=lambda x: x or "none"
)
def test_a_script_inside_a_code_block_stays_text(language: str) -> None:
    source = '<script>alert(1)</script>\n<img src=x onerror="alert(2)">\n'
    html = render_markdown(f"```{language}\n{source}```\n")
    assert "<script" not in html and "<img" not in html
    assert code_text(html) == source  # shown as the text it is


@pytest.mark.parametrize(
    "fence",
    [
        pytest.param("```nosuchlang", id="unknown"),
        pytest.param("```", id="missing"),
        pytest.param("~~~", id="tilde-missing"),
        pytest.param("```text", id="text"),
    ],
)
def test_unknown_or_missing_language_is_plain_escaped_code(fence: str) -> None:
    html = render_markdown(f"{fence}\nx = 1 < 2\n{fence[:3]}\n")
    assert "<span" not in html  # nothing guessed
    assert "x = 1 &lt; 2\n</code></pre>" in html


def test_the_code_in_the_page_is_exactly_the_code() -> None:
    """Copy code copies the block's text: leading blank lines, trailing spaces and tabs kept."""
    source = "\n\nfor i in range(3):  \n\tprint(i)\n\n"
    assert code_text(render_markdown(f"```python\n{source}```\n")) == source


def test_every_code_block_has_a_copy_button() -> None:
    html = render_markdown("```python\nx = 1\n```\n\n    indented\n\n```\nplain\n```\n")
    buttons = re.findall(r"<button[^>]*>", html)
    assert len(buttons) == 3
    for button in buttons:
        assert 'type="button"' in button and 'data-copy="code"' in button
        assert 'aria-label="Copy code"' in button and 'data-copied-label="Copied"' in button
    assert html.count('<pre class="highlight"><code>indented\n') == 1  # not highlighted


def test_the_language_label_cannot_break_out() -> None:
    html = render_markdown('```"><script>x</script>\ncode\n```\n')
    assert "<script" not in html
    assert 'data-lang="&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in html


def test_the_sanitiser_keeps_only_what_code_blocks_need() -> None:
    dirty = (
        '<div class="codeblock evil" data-lang="py" style="color:red" onclick="x()">'
        '<button type="submit" class="copy copy--code btn" data-copy="answer"'
        ' aria-label="Copy code" formaction="/x">B</button>'
        '<pre class="highlight wide" style="x"><code class="language-py">'
        '<span class="k hidden" style="color:red" id="s">def</span></code></pre></div>'
    )
    assert sanitize(dirty) == (
        '<div class="codeblock" data-lang="py">'
        '<button class="copy copy--code" aria-label="Copy code">B</button>'
        '<pre class="highlight"><code class="language-py">'
        '<span class="k">def</span></code></pre></div>'
    )


def test_a_long_code_block_renders_in_reasonable_time() -> None:
    lines = [
        f"def f{i}(x: int) -> str:  # line {i}\n    return 'v' * x + \"{i}\"\n" for i in range(1000)
    ]
    source = "".join(lines)  # 2,000 lines
    assert len(source) < HIGHLIGHT_MAX_CHARS
    started = time.perf_counter()
    html = render_markdown(f"```python\n{source}```\n")
    elapsed = time.perf_counter() - started
    print(f"\n2,000-line python block: {len(source):,} chars, {elapsed * 1000:.0f} ms")
    assert html.count('<span class="k">def</span>') == 1000
    assert code_text(html) == source


def test_a_block_past_the_limit_is_shown_plain() -> None:
    source = "x = 1\n" * (HIGHLIGHT_MAX_CHARS // 6 + 1)
    html = render_markdown(f"```python\n{source}```\n")
    assert "<span" not in html and code_text(html) == source


def test_the_shipped_stylesheet_is_the_generated_one() -> None:
    shipped = (ROOT / "static" / "chat" / "highlight.css").read_text(encoding="utf-8")
    assert shipped == highlight_css(), "run: python manage.py highlight_css"
    assert "@media (prefers-color-scheme: light)" in shipped
    assert "@media (prefers-color-scheme: dark)" in shipped
    assert ".highlight .k {" in shipped and "linenos" not in shipped


def _luminance(hex_color: str) -> float:
    value = hex_color.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    channels = [int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.parametrize("name", [LIGHT_STYLE, DARK_STYLE])
def test_every_token_colour_meets_wcag_aa_on_its_background(name: str) -> None:
    style = get_style_by_name(name)
    background = style.background_color
    base = style.style_for_token(Token)["color"] or "1d1d1f"  # else the page's text colour
    low = []
    for token, spec in style:
        if token in Whitespace or token in Error:  # spaces; error styling is not shipped
            continue
        fg, bg = spec["color"] or base, spec["bgcolor"] or background
        light, dark = sorted((_luminance(fg), _luminance(bg)), reverse=True)
        if (light + 0.05) / (dark + 0.05) < 4.5:
            low.append(f"{token}: #{fg} on {bg}")
    assert low == []
