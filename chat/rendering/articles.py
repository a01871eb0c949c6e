"""Finished messages drawn once per process, for the chat page of a long conversation.

A chat page is mostly its messages, and each answer costs about a millisecond to draw
(markdown, code highlighting, the template), so a conversation of 100 answers would take
100 ms on every visit (``python -m bench.page``). A finished message does not change: its HTML
depends only on its ``MessageView`` (a frozen dataclass of the saved row, plus whether it is
the latest and its versions) and the active language, so it is kept, keyed by both, in a
least-recently-used store bounded by size. A streaming answer, which changes, is drawn afresh
each time; so is everything after ``runserver`` sees a file change (the store is emptied).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from django.utils import translation
from django.utils.autoreload import file_changed
from django.utils.safestring import SafeString, mark_safe

from chat.models import Message
from chat.rendering import fragments
from chat.rendering.fragments import MessageView, render_message

MAX_CHARS = 8_000_000
"""What the store may hold in all: the messages' text and HTML, in characters (about 8-30 MB)."""


class ArticleCache:
    """A size-bounded LRU of rendered ``chat/_message.html`` articles (``oob=""``)."""

    def __init__(self, max_chars: int = MAX_CHARS) -> None:
        self.max_chars = max_chars
        self.chars = 0
        self._entries: OrderedDict[tuple[MessageView, str | None], tuple[SafeString, int]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def render(self, view: MessageView, *, oob: str = "") -> SafeString:
        """The message's article: from the store if it is finished and was drawn before.
        ``oob``: as a frame swaps it in (the same stored article, its attribute added)."""
        if view.status == Message.Status.STREAMING:
            return mark_safe(render_message(view, oob=oob))
        html = self._finished(view)
        if not oob:
            return html
        # The template writes hx-swap-oob last in the article's opening tag, just before its
        # ">" (no earlier attribute value holds a ">": they are escaped): the same bytes.
        end = html.index(">")
        return mark_safe(f'{html[:end]}hx-swap-oob="{oob}"{html[end:]}')

    def _finished(self, view: MessageView) -> SafeString:
        key = (view, translation.get_language())
        try:
            with self._lock:
                hit = self._entries.get(key)
                if hit is not None:
                    self._entries.move_to_end(key)
                    return hit[0]
        except TypeError:  # a field that cannot be hashed: draw it every time
            return mark_safe(render_message(view))
        html = mark_safe(render_message(view))
        size = len(view.content) + len(view.reasoning) + len(html)
        if size > self.max_chars // 4:
            return html
        with self._lock:
            if key not in self._entries:
                self._entries[key] = (html, size)
                self.chars += size
            while self.chars > self.max_chars:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.chars -= dropped
        return html

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.chars = 0


articles = ArticleCache()

LARGE = 16_000
"""Characters of text and thinking above which an answer is drawn off the event loop: its
markdown and code highlighting take milliseconds per 10 KB, which every other stream of the
worker would wait for (a thread still takes the GIL, but gives it back every few ms)."""


def final_frame(view: MessageView) -> fragments.Frame:
    """The finished answer's frame, its article drawn once (the page's next visit, and any
    socket that syncs, reuse it)."""
    return fragments.final_frame(view, article=articles.render(view, oob="outerHTML"))


def is_large(view: MessageView) -> bool:
    """Drawn off the event loop (``LARGE``)."""
    return len(view.content) + len(view.reasoning) >= LARGE


async def final_frame_off_loop(view: MessageView) -> fragments.Frame:
    """``final_frame``, in a thread when the answer is large, in the active language (Django's
    is per thread: it does not follow the call by itself)."""
    if not is_large(view):
        return final_frame(view)
    return await asyncio.to_thread(_in_language, translation.get_language(), final_frame, view)


def _in_language(
    language: str | None, draw: Callable[[MessageView], fragments.Frame], view: MessageView
) -> fragments.Frame:
    with translation.override(language):
        return draw(view)


def _on_file_changed(sender: Any, file_path: Any, **kwargs: Any) -> None:
    """``runserver`` saw an edit (a template, say): draw every message afresh."""
    articles.clear()


file_changed.connect(_on_file_changed, dispatch_uid="chat.rendering.articles")
