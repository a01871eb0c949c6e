"""``python -m bench.markdown``: what live markdown splitting costs inside a long unclosed code
fence, fed one token at a time, as the pipeline feeds each frame's text: the incremental
``BlockSplitter`` (chat/rendering/markdown.py) against the rescanning splitter it replaced
(``tests/support/rescanning_splitter.py``), in CPU time (``time.process_time``), as a ratio.

The answer is a Python code block that opens after a short paragraph and never closes (a
model writing a long file): nothing can be cut into a block, so the old splitter rescanned
the whole growing tail on every token. It is quadratic: fed 200 KB it takes tens of seconds,
so it is timed exactly up to ``--exact`` sizes and estimated at the full size from samples:
at ``--samples`` evenly spaced points of the growth the splitter is put in the very state it
would have there (its tail, the whole text since the fence opened), ``--feeds`` tokens are
timed, and each point's mean cost counts for the tokens around it. The estimate is checked
against the exact run at the largest exact size, printed beside it. The new splitter is always
timed exactly, over the whole text (best of three).

Figures, not assertions (see ``bench/README.md``). About 3 s; ``--smoke`` well under 1 s.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from simulator.hostile import CODE_LINES, FENCE, INTRO, NAMES


class Splitter(Protocol):
    def feed(self, text: str) -> str: ...


@dataclass
class Row:
    kb: int
    tokens: int
    old_s: float  # measured, or estimated (``estimated``)
    new_s: float
    estimated: bool = False
    check: tuple[float, float] | None = None  # (estimated, measured) at the largest exact size

    @property
    def ratio(self) -> float:
        return self.old_s / self.new_s if self.new_s else float("inf")


def code_answer(size: int, seed: int = 0) -> str:
    """A paragraph, then a code fence that never closes, ``size`` characters in all."""
    rng = random.Random(seed)
    parts, length = [INTRO, FENCE], len(INTRO) + len(FENCE)
    while length < size:
        name = rng.choice(NAMES)
        line = rng.choice(CODE_LINES).format(name=name, Name=name.title(), n=rng.randint(2, 999))
        parts.append(line + "\n")
        length += len(line) + 1
    return "".join(parts)[:size]


def tokens_of(text: str, chars: int) -> list[str]:
    return [text[i : i + chars] for i in range(0, len(text), chars)]


def cpu_time(make: Callable[[], Splitter], tokens: Sequence[str], repeat: int = 1) -> float:
    """The least CPU time of ``repeat`` runs feeding every token to a new splitter."""
    best = float("inf")
    for _ in range(repeat):
        splitter = make()
        started = time.process_time()
        for token in tokens:
            splitter.feed(token)
        best = min(best, time.process_time() - started)
    return best


def estimated_old(tokens: Sequence[str], samples: int, feeds: int) -> float:
    """The rescanning splitter's CPU time over all ``tokens``, from ``samples`` strata: each
    timed over ``feeds`` tokens from its middle, the splitter set to its state there."""
    from tests.support.rescanning_splitter import RescanningSplitter

    text_before = [0]
    for token in tokens:
        text_before.append(text_before[-1] + len(token))
    text = "".join(tokens)
    total, n = 0.0, len(tokens)
    for stratum in range(samples):
        first, last = stratum * n // samples, (stratum + 1) * n // samples
        if last <= first:
            continue
        at = max(0, (first + last) // 2 - feeds // 2)
        count = min(feeds, n - at)
        splitter = RescanningSplitter()
        # Its state after the tokens before ``at``: the intro was cut off as a block when its
        # blank line came; everything since is the tail (the fence never closes).
        done = text[: text_before[at]]
        cut = len(INTRO) if len(done) >= len(INTRO) else 0
        splitter.tail = done[cut:]
        started = time.process_time()
        for token in tokens[at : at + count]:
            splitter.feed(token)
        total += (time.process_time() - started) / count * (last - first)
    return total


def run(args: argparse.Namespace) -> list[Row]:
    from chat.rendering.markdown import BlockSplitter
    from tests.support.rescanning_splitter import RescanningSplitter

    rows = []
    for kb in args.exact:
        tokens = tokens_of(code_answer(kb * 1024), args.token_chars)
        old = cpu_time(RescanningSplitter, tokens)
        rows.append(Row(kb, len(tokens), old, cpu_time(BlockSplitter, tokens, repeat=3)))
    tokens = tokens_of(code_answer(args.size * 1024), args.token_chars)
    full = Row(
        args.size,
        len(tokens),
        estimated_old(tokens, args.samples, args.feeds),
        cpu_time(BlockSplitter, tokens, repeat=3),
        estimated=True,
    )
    if rows:  # the estimator against the largest exact run
        largest = rows[-1]
        check = tokens_of(code_answer(largest.kb * 1024), args.token_chars)
        full.check = (estimated_old(check, args.samples, args.feeds), largest.old_s)
    return [*rows, full]


def seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def render(rows: Sequence[Row], args: argparse.Namespace) -> str:
    lines = [
        f"Live markdown: a code fence that never closes, fed one token ({args.token_chars} chars)"
        " at a time; CPU time to feed it all",
        "",
        f"  {'size':>7} {'tokens':>8} {'rescanning (old)':>18} {'incremental (new)':>18}"
        f" {'old / new':>10} {'new per token':>14}",
    ]
    for row in rows:
        old = seconds(row.old_s) + (" (est.)" if row.estimated else "")
        per_token = row.new_s / row.tokens * 1e6
        lines.append(
            f"  {row.kb:>4} KB {row.tokens:>8,} {old:>18} {seconds(row.new_s):>18}"
            f" {'×' + format(row.ratio, ',.0f'):>10} {per_token:>11.2f} µs"
        )
    full = rows[-1]
    lines.append("")
    lines.append(
        f"  At {full.kb} KB the new splitter costs ×{full.ratio:,.0f} less CPU; the old one's"
        f" {seconds(full.old_s)}"
    )
    lines.append(
        f"  are estimated from {args.samples} × {args.feeds} sampled feeds (a full run would take"
        " that long)."
    )
    if full.check is not None:
        estimate, measured = full.check
        lines.append(
            f"  The estimator at {rows[-2].kb} KB: {seconds(estimate)} estimated,"
            f" {seconds(measured)} measured ({estimate / measured - 1:+.0%})."
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.markdown", description=__doc__)
    parser.add_argument("--size", type=int, default=200, help="KB of code at the full size")
    parser.add_argument("--token-chars", type=int, default=4, help="characters per token")
    parser.add_argument(
        "--exact",
        type=lambda text: [int(kb) for kb in text.split(",") if kb],
        default=[8, 16, 32],
        help="sizes (KB, comma-separated) at which the old splitter is timed in full",
    )
    parser.add_argument("--samples", type=int, default=32, help="strata of the estimate")
    parser.add_argument("--feeds", type=int, default=20, help="tokens timed per stratum")
    parser.add_argument("--smoke", action="store_true", help="briefly (CI): 8 KB exact")
    args = parser.parse_args(argv)
    if args.smoke:
        args.exact, args.samples, args.feeds = [8], 8, 5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(render(run(args), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
