"""Model output becomes safe HTML: markdown rendered, anything executable shown as text."""

from __future__ import annotations

import pytest

from chat.markdown import BlockSplitter, render_markdown


def test_headings_lists_tables_and_code_render() -> None:
    html = render_markdown(
        "# Title\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```python\nprint(1 < 2)\n```\n"
    )
    assert "<h1>Title</h1>" in html
    assert "<li>one</li>" in html
    assert "<table>" in html and "<td>1</td>" in html
    assert '<code class="language-python">print(1 &lt; 2)' in html


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        pytest.param("<script>alert(1)</script>", "<script", id="script"),
        pytest.param('<img src=x onerror="alert(1)">', "<img", id="img-onerror"),
        pytest.param("[click](javascript:alert(1))", 'href="javascript', id="javascript-link"),
        pytest.param("![tracker](https://evil.example/p.png)", "<img", id="remote-image"),
        pytest.param('<a href="#" hx-get="/c/new/">x</a>', "<a href", id="htmx-attribute"),
        pytest.param("| a |\n|---|\n| <b onclick=x>1</b> |", "<b ", id="table-cell-html"),
    ],
)
def test_nothing_executable_survives(source: str, forbidden: str) -> None:
    html = render_markdown(source)
    assert forbidden not in html


def test_raw_html_is_shown_as_text() -> None:
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in render_markdown("<script>alert(1)</script>")


def test_links_are_kept_but_cannot_reach_back() -> None:
    html = render_markdown("[docs](https://example.com/a)")
    assert 'href="https://example.com/a"' in html
    assert 'rel="noopener noreferrer nofollow"' in html


def test_images_show_their_alt_text() -> None:
    assert "[image: a chart]" in render_markdown("![a chart](https://example.com/c.png)")


def split_all(text: str, step: int) -> tuple[list[str], str]:
    splitter = BlockSplitter()
    blocks = [b for i in range(0, len(text), step) if (b := splitter.feed(text[i : i + step]))]
    return blocks, splitter.tail


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_live_blocks_end_at_blank_lines_outside_code_fences(step: int) -> None:
    text = "# Title\n\nOne\ntwo\n\n```py\na = 1\n\nb = 2\n```\n\n~~~\nx\n\n~~~\n\nTail, still going"
    blocks, tail = split_all(text, step)
    assert "".join(blocks) + tail == text  # nothing lost or repeated
    assert "".join(blocks).endswith("~~~\n\n") and tail == "Tail, still going"
    assert "```py\na = 1\n\nb = 2\n```\n\n" in blocks or step == 1000
    for block in blocks:  # never cut inside a fence
        assert block.count("```") % 2 == 0 and block.count("~~~") % 2 == 0


def test_an_open_fence_holds_everything_back() -> None:
    blocks, tail = split_all("Intro\n\n```\ncode\n\nmore code\n", 1)
    assert blocks == ["Intro\n\n"] and tail == "```\ncode\n\nmore code\n"
