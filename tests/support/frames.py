"""Reading what a socket received: the HTML frames the app sends (deltas, articles, the final
state), and what they must add up to."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

FRAME_DELTA = re.compile(
    r'<div hx-swap-oob="beforeend:#answer-(\d+)-text" data-seq="(\d+)">(.*?)</div>', re.S
)
ARTICLE = re.compile(r"<article\b[^>]*>", re.S)
# The comparison page's trial marker: which run, which trial, which answer on each side.
TRIAL = re.compile(r'<span id="compare-trial"[^>]*>')


def attrs(tag: str) -> dict[str, str]:
    """A tag's attributes, unescaped as the browser reads them."""
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag)}


@dataclass
class Frame:
    """One websocket message and when it arrived (monotonic seconds)."""

    html: str
    at: float

    @property
    def deltas(self) -> list[tuple[int, int, str]]:
        return [(int(a), int(s), html.unescape(t)) for a, s, t in FRAME_DELTA.findall(self.html)]

    @property
    def articles(self) -> list[dict[str, str]]:
        return [attrs(tag) for tag in ARTICLE.findall(self.html)]

    def final_for(self, answer_id: int) -> dict[str, str] | None:
        for article in self.articles:
            if (
                article.get("id") == f"message-{answer_id}"
                and article.get("hx-swap-oob") == "outerHTML"
                and article.get("data-status") != "streaming"
            ):
                return article
        return None


def streamed_text(frames: list[Frame], answer_id: int) -> str:
    """The answer's text as its deltas spelled it, in the order they came."""
    return "".join(text for f in frames for a, _, text in f.deltas if a == answer_id)


def assert_continues_a_snapshot(frames: list[Frame], answer_id: int) -> None:
    """A socket that joined mid-answer got its text so far (a snapshot at seq S > 1), then
    frames S+1, S+2, … with no gap and no repeat."""
    snapshot = next(
        (
            article
            for f in frames
            for article in f.articles
            if article.get("id") == f"message-{answer_id}" and "data-seq" in article
        ),
        None,
    )
    assert snapshot is not None, "no snapshot of the answer so far"
    start = int(snapshot["data-seq"])
    assert start > 1  # it joined mid-answer
    seqs = [seq for f in frames for answer, seq, _ in f.deltas if answer == answer_id]
    assert seqs == list(range(start + 1, start + 1 + len(seqs)))
