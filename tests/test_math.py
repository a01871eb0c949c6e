"""TeX formulas in answers become MathML on the server: each delimiter, prices left alone, code
untouched, invalid TeX shown as its source, nothing executable kept, and live streaming that
draws a display formula only once it is whole."""

from __future__ import annotations

import html as htmllib
import random
import re

import pytest

from chat.rendering.markdown import BlockSplitter, render_markdown, sanitize
from chat.rendering.math import MAX_TEX_CHARS
from simulator.script import plan_answer, resolve_options

ANNOTATION = re.compile(r'<annotation encoding="application/x-tex">(.*?)</annotation>', re.S)


def formulas(html: str) -> list[tuple[str, str]]:
    """Each formula's display mode and TeX (from its annotation), in order."""
    modes = re.findall(r'<math xmlns="http://www.w3.org/1998/Math/MathML" display="(\w+)">', html)
    texs = [htmllib.unescape(tex) for tex in ANNOTATION.findall(html)]
    assert len(modes) == len(texs), html
    return list(zip(modes, texs, strict=True))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("Energy: $E = mc^2$.", [("inline", "E = mc^2")], id="dollar"),
        pytest.param(r"Energy: \(E = mc^2\).", [("inline", "E = mc^2")], id="paren"),
        pytest.param("So $$a^2 + b^2$$ holds.", [("block", "a^2 + b^2")], id="double-in-text"),
        pytest.param("$$\nx^2\n$$\n", [("block", "x^2")], id="dollars-block"),
        pytest.param("\\[\nx^2\n\\]\n", [("block", "x^2")], id="bracket-block"),
        pytest.param("$$ x^2 $$\n", [("block", "x^2")], id="dollars-one-line"),
        pytest.param("\\[ \\frac{1}{2} \\]\n", [("block", r"\frac{1}{2}")], id="bracket-one-line"),
        pytest.param(
            "The formula is:\n$$\nx = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}\n$$\nas said.",
            [("block", r"x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}")],
            id="block-interrupts-paragraph",
        ),
        pytest.param("$$\na\n\nb\n$$\n", [("block", "a\n\nb")], id="blank-line-inside"),
        pytest.param("> $$\n> x^2\n> $$\n", [("block", "x^2")], id="in-quote"),
        pytest.param("- item\n\n  $$\n  x^2\n  $$\n", [("block", "x^2")], id="in-list"),
        pytest.param(r"$a\$b$", [("inline", r"a\$b")], id="escaped-dollar-inside"),
        pytest.param("$a<b$ & $c>d$", [("inline", "a<b"), ("inline", "c>d")], id="angles"),
        pytest.param("中文 $x_1$，\\(y^2\\)。", [("inline", "x_1"), ("inline", "y^2")], id="cjk"),
    ],
)
def test_each_delimiter_becomes_mathml_with_its_tex_kept(
    source: str, expected: list[tuple[str, str]]
) -> None:
    html = render_markdown(source)
    assert formulas(html) == expected
    assert "math-error" not in html


def test_the_formula_is_real_mathml() -> None:
    html = render_markdown("$$\nx = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}\n$$\n")
    assert html.startswith('<div class="math-display"><math ')
    for element in ("<semantics>", "<mfrac>", "<msqrt>", "<msup><mi>b</mi><mn>2</mn></msup>"):
        assert element in html
    assert "$$" not in html.split("<annotation")[0]  # the delimiters are not drawn


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("It costs $5 and $10.", id="two-prices"),
        pytest.param("Between $5-$10 a month.", id="range"),
        pytest.param("From $3.50 to $4.75, or $ 6 $ flat.", id="decimals-and-spaces"),
        pytest.param("It costs 5$ and 6$, or 7 $.", id="trailing"),
        pytest.param(r"Escaped \$x\$ and \$5 \$6.", id="escaped"),
        pytest.param(r"\$x$ still not math", id="escaped-opener"),
        pytest.param(r"See \[1\] and \[2\] above.", id="escaped-brackets-in-text"),
        pytest.param("$$ unclosed display\n\nand later $ text", id="unclosed-double"),
        pytest.param("$$\nnever closed\n", id="unclosed-block"),
        pytest.param("$$$$", id="empty-double"),
        pytest.param("\\(\\)", id="empty-paren"),
    ],
)
def test_prices_and_escapes_stay_text(source: str) -> None:
    html = render_markdown(source)
    assert "<math" not in html and "math-error" not in html


def test_brackets_in_text_are_commonmark_escapes() -> None:
    assert render_markdown(r"See \[1\] above.") == "<p>See [1] above.</p>\n"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("`$x^2$` and `\\(y\\)`", id="code-span"),
        pytest.param("```\n$$\nx^2\n$$\n```\n", id="fence"),
        pytest.param("```tex\n\\[ x^2 \\] and $y$\n```\n", id="fence-with-language"),
        pytest.param("    $$\n    x^2\n    $$\n", id="indented-code"),
    ],
)
def test_math_inside_code_is_left_as_code(source: str) -> None:
    html = render_markdown(source)
    assert "<math" not in html
    shown = htmllib.unescape(re.sub(r"<[^>]+>", "", html))
    assert "x^2" in shown and "$" in shown or "`" not in source and "\\(y\\)" in shown


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        pytest.param("Bad $x^$ here", "$x^$", id="inline"),
        pytest.param("Bad \\(\\begin{nope}\\) here", "\\(\\begin{nope}\\)", id="paren"),
        pytest.param("$$\n<b>x</b>^\n$$\n", "$$\n<b>x</b>^\n$$", id="block-with-markup"),
        pytest.param("$$\n" + "x" * (MAX_TEX_CHARS + 1) + "\n$$", None, id="too-long"),
        pytest.param("$$\n" + "{" * 3000 + "x" + "}" * 3000 + "\n$$", None, id="too-deep"),
    ],
)
def test_invalid_tex_is_shown_as_its_escaped_source(source: str, shown: str | None) -> None:
    html = render_markdown(source)
    match = re.search(r'<code class="math-error">(.*?)</code>', html, re.S)
    assert match, html
    assert htmllib.unescape(match.group(1)) == (shown or source)
    assert "<math" not in html and "<b>" not in html


def test_latex2mathml_links_styles_and_classes_are_dropped() -> None:
    html = render_markdown(r"$\href{javascript:alert(1)}{x} \style{color:red}{y} \class{evil}{z}$")
    assert "<math" in html and "<mi>x</mi>" in html
    for forbidden in ("href", "style=", "class=", "javascript:alert(1)</a"):
        assert forbidden not in html.split("<annotation")[0], forbidden


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        pytest.param(
            '<math href="javascript:alert(1)" onclick="x()" display="block"><mi>x</mi></math>',
            '<math display="block"><mi>x</mi></math>',
            id="href-and-handler",
        ),
        pytest.param(
            '<math><mi style="color:red" class="c" onmouseover="y()" mathvariant="bold">x</mi>'
            "</math>",
            '<math><mi mathvariant="bold">x</mi></math>',
            id="style-class-handler",
        ),
        pytest.param(
            '<math><maction actiontype="statusline"><mi>x</mi></maction></math>',
            "<math><mi>x</mi></math>",
            id="unknown-element",
        ),
        pytest.param(
            '<math><mo stretchy="false" fence="true" xlink:href="javascript:x">(</mo></math>',
            '<math><mo stretchy="false" fence="true">(</mo></math>',
            id="xlink",
        ),
        pytest.param(
            '<math><semantics><mi>x</mi><annotation-xml encoding="text/html"><script>x()</script>'
            '</annotation-xml><annotation encoding="application/x-tex">x</annotation></semantics>'
            "</math>",
            '<math><semantics><mi>x</mi><annotation encoding="application/x-tex">x</annotation>'
            "</semantics></math>",
            id="annotation-xml",
        ),
    ],
)
def test_the_sanitiser_keeps_mathml_but_nothing_that_runs(dirty: str, clean: str) -> None:
    assert sanitize(dirty) == clean


def test_raw_mathml_in_the_markdown_is_text() -> None:
    html = render_markdown('<math onclick="x()"><mi>x</mi></math>')
    assert "<math" not in html and "&lt;math" in html


# --- Live streaming: a display formula is committed only once it is closed -------------------

ANSWER = (
    "The roots are\n\n$$\nx = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}\n\n\\qquad (a \\neq 0)\n$$\n\n"
    "and with brackets:\n\\[\n\n\\int_0^1 x^2\\,dx = \\frac{1}{3}\n\\]\n\n"
    "One line: $$ e^{i\\pi} + 1 = 0 $$\n\n```\n$$\nnot math\n\n```\n\nThe end, $x$ still going"
)


def split_all(text: str, pieces: list[str]) -> tuple[list[str], str]:
    splitter = BlockSplitter()
    blocks = [block for piece in pieces if (block := splitter.feed(piece))]
    return blocks, splitter.tail


@pytest.mark.parametrize("longest", [1, 3, 12, 1000])
def test_streaming_commits_display_formulas_whole(longest: int) -> None:
    rng = random.Random(longest)
    for _ in range(30):
        pieces, start = [], 0
        while start < len(ANSWER):
            size = rng.randint(1, longest)
            pieces.append(ANSWER[start : start + size])
            start += size
        blocks, tail = split_all(ANSWER, pieces)
        assert "".join(blocks) + tail == ANSWER  # nothing lost or repeated
        assert tail == "The end, $x$ still going"
        drawn = [formulas(render_markdown(block)) for block in blocks]
        assert [f for found in drawn for f in found] == [
            ("block", "x = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}\n\n\\qquad (a \\neq 0)"),
            ("block", "\\int_0^1 x^2\\,dx = \\frac{1}{3}"),
            ("block", "e^{i\\pi} + 1 = 0"),
        ]
        assert not any("math-error" in render_markdown(block) for block in blocks)


def test_an_open_display_formula_holds_everything_back() -> None:
    splitter = BlockSplitter()
    assert splitter.feed("Intro\n\n$$\nx^2\n\n") == "Intro\n\n"
    assert splitter.feed("y\n\n") == ""  # still inside: blank lines do not end it
    assert splitter.tail == "$$\nx^2\n\ny\n\n"
    assert splitter.feed("$$\n") == ""  # closed, but the block ends at the blank line
    block = splitter.feed("\nNext")
    assert block == "$$\nx^2\n\ny\n\n$$\n\n" and splitter.tail == "Next"
    assert formulas(render_markdown(block)) == [("block", "x^2\n\ny")]


def test_the_whole_answer_renders_as_its_blocks_did() -> None:
    blocks, tail = split_all(ANSWER, [ANSWER])
    whole = formulas(render_markdown(ANSWER))
    assert whole[:3] == [f for block in blocks for f in formulas(render_markdown(block))]
    assert whole[3:] == [("inline", "x")]  # the tail's, once the answer is final


# --- The simulator writes formulas when asked about one --------------------------------------


@pytest.mark.parametrize(
    ("prompt", "math"),
    [
        pytest.param("What is the quadratic formula?", True, id="formula"),
        pytest.param("Solve these equations for me", True, id="equations"),
        pytest.param("二次方程的求根公式是什么？", True, id="zh"),
        pytest.param("Tell me about rivers\n#sim math=1", True, id="directive"),
        pytest.param("Tell me about rivers", False, id="plain"),
        pytest.param("Explain the formula\n#sim math=0", False, id="directive-off"),
    ],
)
def test_the_simulator_answers_with_a_formula_when_asked(prompt: str, math: bool) -> None:
    messages = [{"role": "user", "content": prompt}]
    opts = resolve_options("qwen-plus", messages, body_sim={"tokens": 200})
    assert opts.math is math
    text = "".join(plan_answer("qwen-plus", messages, opts))
    shown = formulas(render_markdown(text))
    if math:
        assert ("block" in [mode for mode, _ in shown]) and "inline" in [m for m, _ in shown]
        assert "$$\n" in text
    else:
        assert shown == [] and "$" not in text
