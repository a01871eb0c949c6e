"""Finished messages are drawn once per process for the chat page (chat/article_cache.py)."""

from __future__ import annotations

import dataclasses

from django.utils import translation

from chat.rendering.articles import ArticleCache
from chat.rendering.fragments import MessageView, render_message

ANSWER = MessageView(
    id=7,
    role="assistant",
    status="complete",
    content="# Rivers\n\nThey **flow**.\n\n```python\nprint('sea')\n```\n",
    model="qwen-plus",
    ttft_ms=412.0,
    total_ms=2000.0,
    completion_tokens=20,
    is_latest=True,
)


def test_a_finished_message_is_drawn_once_then_reused() -> None:
    cache = ArticleCache()
    first = cache.render(ANSWER)
    assert first == render_message(ANSWER)  # exactly what the template draws
    again = cache.render(dataclasses.replace(ANSWER))  # an equal view, as the next visit makes
    assert again is first
    assert len(cache) == 1


def test_anything_that_changes_the_view_is_drawn_again() -> None:
    cache = ArticleCache()
    latest = cache.render(ANSWER)
    older = cache.render(dataclasses.replace(ANSWER, is_latest=False))  # no Regenerate now
    assert older != latest and "btn--regenerate" in latest and "btn--regenerate" not in older
    assert len(cache) == 2


def test_a_streaming_answer_is_never_kept() -> None:
    cache = ArticleCache()
    live = dataclasses.replace(ANSWER, status="streaming", total_ms=None, elapsed_s=1.5)
    assert cache.render(live) == render_message(live)
    assert len(cache) == 0


def test_each_language_has_its_own_copy() -> None:
    cache = ArticleCache()
    with translation.override("en"):
        cache.render(ANSWER)
    with translation.override("zh-hans"):
        cache.render(ANSWER)
    assert len(cache) == 2


def test_the_store_keeps_within_its_size_dropping_the_least_recently_used() -> None:
    size = len(render_message(ANSWER)) + len(ANSWER.content)
    cache = ArticleCache(max_chars=size * 5)
    for answer_id in range(20):
        cache.render(dataclasses.replace(ANSWER, id=answer_id))
    assert cache.chars <= cache.max_chars
    assert 1 <= len(cache) <= 5
    newest = dataclasses.replace(ANSWER, id=19)
    assert cache.render(newest) is cache.render(newest)
