"""Model output becomes safe HTML: markdown rendered, anything executable shown as text."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat.rendering.markdown import BlockSplitter, render_markdown
from tests.support.rescanning_splitter import RescanningSplitter


def test_headings_lists_tables_and_code_render() -> None:
    html = render_markdown(
        "# Title\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```python\nprint(1 < 2)\n```\n"
    )
    assert "<h1>Title</h1>" in html
    assert "<li>one</li>" in html
    assert "<table>" in html and "<td>1</td>" in html
    assert '<code class="language-python"><span class="nb">print</span>' in html
    assert '<span class="o">&lt;</span>' in html  # highlighted, and still escaped


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


TABLE_ANSWER = (
    "Compare them:\n\n"
    "| River | Length |\n| --- | --- |\n| Nile | 6,650 km |\n| Amazon | 6,400 km |\n\n"
    "The Nile is longer."
)


@pytest.mark.parametrize("step", [1, 4, 9])
def test_a_table_streams_raw_until_the_blank_line_after_it_then_renders_once(step: int) -> None:
    """As the publisher sends it: no half-built table is ever rendered (its header row alone
    would be a paragraph, then a one-row table, and so on); it appears rendered once, whole."""
    from chat.rendering.fragments import delta_frame

    splitter = BlockSplitter()
    rendered = []  # (how much had arrived, the frame) for frames that carried a block
    for start in range(0, len(TABLE_ANSWER), step):
        block = splitter.feed(TABLE_ANSWER[start : start + step])
        block_html = render_markdown(block) if block else None
        frame = delta_frame(1, start + 1, "x", "", False, block_html=block_html, tail=splitter.tail)
        if "<table>" in frame:
            rendered.append((start + step, frame))
        elif "| River" in TABLE_ANSWER[: start + step]:
            assert "<table" not in frame and "<p>| River" not in frame
    table_ends = TABLE_ANSWER.index("km |\n\n") + len("km |\n\n")
    ((arrived, frame),) = rendered  # exactly one frame renders the table
    assert arrived >= table_ends and arrived - step < table_ends  # as soon as the blank line came
    assert frame.count("<table>") == 1 and frame.count("<tr>") == 3
    assert "<td>Amazon</td>" in frame


def test_while_a_table_grows_its_text_is_the_raw_tail() -> None:
    splitter = BlockSplitter()
    assert splitter.feed("Compare them:\n\n| River | Length |\n| --- |") == "Compare them:\n\n"
    assert splitter.tail == "| River | Length |\n| --- |"
    assert splitter.feed(" --- |\n| Nile | 6,650 km |\n") == ""  # still open: the next row?
    block = splitter.feed("\n")
    assert block == "| River | Length |\n| --- | --- |\n| Nile | 6,650 km |\n\n"
    assert "<td>Nile</td>" in render_markdown(block)


@pytest.mark.parametrize("step", [1, 2, 7])
def test_a_fenced_block_with_blank_lines_inside_is_rendered_once_and_whole(step: int) -> None:
    fence = "```python\ndef f():\n\n\n    return 1\n\n# done\n```\n\n"
    blocks, tail = split_all("Intro\n\n" + fence + "After", step)
    assert blocks == ["Intro\n\n", fence] and tail == "After"
    html = render_markdown(blocks[1])
    assert html.count('<div class="codeblock"') == 1
    assert '<span class="k">def</span>' in html and "# done" in html


# --- The live splitter is incremental, and splits exactly as the rescanning one did ----------

DOCUMENTS = {
    "fences": (
        "Intro\n\n```python\ndef f():\n\n\n    return 1\n```\n\n~~~~\n~~~\nstill code\n\n~~~~\n\n"
        "````md\n```\nnested\n```\n\n````\n\n   ```  \nindented fence\n\n  ```   \n\n"
        "```js\nnot closed by ``` x\n\n```\n\nAfter\n"
    ),
    "lists and tables": (
        "# Rivers\n\n- Nile\n- Amazon\n  - long\n\n1. one\n2. two\n\n"
        "| River | Length |\n| --- | ---: |\n| Nile | 6,650 km |\n\nThe end, still going"
    ),
    "cjk": (
        "## 长江与黄河\n\n长江是中国最长的河流。\n\u3000\n黄河流经九个省份：\n\n"
        "- 青海\n- 四川\n\n```\n代码块里的中文\n\n　全角空格\n```\n\n🇨🇳 结束"
    ),
    "line ends": "One\r\n\r\nTwo\r\n```\r\n\r\ncode\r\n```\r\n\r\nThree\n \t \nFour\u2028five\n\n",
    "unclosed fence": "Intro\n\n```python\n" + "x = 1\n\n" * 40 + "y = 2",
}


def fed(splitter: BlockSplitter | RescanningSplitter, pieces: list[str]) -> list[tuple[str, str]]:
    """Each feed's block and the tail after it."""
    return [(splitter.feed(piece), splitter.tail) for piece in pieces]


def blocks_then_tail(splitter: BlockSplitter | RescanningSplitter, pieces: list[str]) -> list[str]:
    """Each feed's block, the tail read only at the end (as the pipeline does, which reads it
    only with a block)."""
    return [splitter.feed(piece) for piece in pieces] + [splitter.tail]


def token_split(text: str, rng: random.Random, longest: int) -> list[str]:
    """``text`` in pieces of 1 to ``longest`` characters, as a model's tokens come."""
    pieces, start = [], 0
    while start < len(text):
        size = rng.randint(1, longest)
        pieces.append(text[start : start + size])
        start += size
    return pieces


@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_any_token_split_gives_the_blocks_and_tails_of_the_rescanning_splitter(name: str) -> None:
    text = DOCUMENTS[name]
    rng = random.Random(name)
    for trial in range(200):
        pieces = token_split(text, rng, longest=(1, 4, 12, 80)[trial % 4])
        assert fed(BlockSplitter(), pieces) == fed(RescanningSplitter(), pieces), pieces
        new, old = BlockSplitter(), RescanningSplitter()
        assert blocks_then_tail(new, pieces) == blocks_then_tail(old, pieces), pieces
    whole = BlockSplitter()
    assert whole.feed(text) + whole.tail == text


LINES = ["", " ", "\u3000", "```", "```py", "``` x", "````", "~~~", "~~~~", "  ~~~ ", "text",
         "中文", "| a | b |", "- item", "\r"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.sampled_from(LINES), max_size=40),
    end=st.sampled_from(["\n", "\r\n"]),
    cuts=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=20),
)
def test_any_document_any_split_agrees_with_the_rescanning_splitter(
    lines: list[str], end: str, cuts: list[int]
) -> None:
    text = end.join(lines)
    pieces, start, turn = [], 0, 0
    while start < len(text):
        pieces.append(text[start : start + cuts[turn % len(cuts)]])
        start += cuts[turn % len(cuts)]
        turn += 1
    assert fed(BlockSplitter(), pieces) == fed(RescanningSplitter(), pieces)
