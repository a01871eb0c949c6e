"""Finished messages are drawn once per process for the chat page (chat/article_cache.py)."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from django.utils import translation

from chat.rendering import articles as articles_module
from chat.rendering import fragments
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


VIEWS = [
    ANSWER,
    dataclasses.replace(ANSWER, status="error", error_kind="timeout", error_message="Slow."),
    dataclasses.replace(ANSWER, status="stopped", reasoning="First, <think> & weigh."),
    MessageView(id=8, role="user", status="complete", content="Why > 2 & < 3?"),
]


@pytest.mark.parametrize("language", ["en", "zh-hans"])
@pytest.mark.parametrize("view", VIEWS, ids=["complete", "error", "stopped", "user"])
def test_a_frames_article_is_the_stored_one_with_its_swap_byte_for_byte(
    view: MessageView, language: str
) -> None:
    cache = ArticleCache()
    with translation.override(language):
        framed = cache.render(view, oob="outerHTML")
        assert framed == render_message(view, oob="outerHTML")
        assert cache.render(view) == render_message(view)  # the page's, from the same entry
    assert len(cache) == 1


def test_a_final_frame_draws_the_answer_once_for_the_page_and_every_sync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[int] = []
    draw = fragments.render_message

    def counted(view: MessageView, *, oob: str = "") -> str:
        drawn.append(view.id)
        return draw(view, oob=oob)

    monkeypatch.setattr(articles_module, "render_message", counted)
    monkeypatch.setattr(articles_module, "articles", ArticleCache())
    view = dataclasses.replace(ANSWER, id=99)
    frames = [articles_module.final_frame(view).body for _ in range(3)]  # the end, two syncs
    page = articles_module.articles.render(view)
    assert drawn == [99]
    assert frames[0] == fragments.final_frame(view).body and page == draw(view)


async def test_a_large_answer_is_drawn_off_the_event_loop_in_the_sockets_language(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    final_frame = articles_module.final_frame

    def noted(view: MessageView) -> fragments.Frame:
        threads.append(threading.get_ident())
        return final_frame(view)

    monkeypatch.setattr(articles_module, "final_frame", noted)
    large = dataclasses.replace(ANSWER, id=100, content="Para **bold**.\n\n" * 2000)
    small = dataclasses.replace(ANSWER, id=101)
    with translation.override("zh-hans"):
        frame = await articles_module.final_frame_off_loop(large)
        await articles_module.final_frame_off_loop(small)
        expected = fragments.final_frame(large).body
    assert frame.body == expected and 'aria-label="回答"' in frame.body
    assert threads[0] != threading.get_ident()  # the large one: a thread
    assert threads[1] == threading.get_ident()  # a small one: not worth the hop
