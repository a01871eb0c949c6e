"""HTML the browser receives over the websocket: htmx out-of-band fragments.

Every frame is one or more elements carrying ``hx-swap-oob``; the htmx websocket extension
swaps them into the page. Deltas are built with plain escaping (the hot path: one per frame).
Whatever else lands in the page comes from the page's own templates, so its markup is written
once: whole messages from ``chat/_message.html``, and the parts sent alone from partials of it
and of ``chat/page.html`` (``render_to_string("chat/page.html#title", ...)``), with ``frame``
set for their ``hx-swap-oob``. Only the wrappers stay here: an element whose children a swap
moves (``innerHTML``, ``beforeend``), or one that names what to delete, never lands itself.
Rendering starts from plain data (``MessageView``), never from ORM objects, so it never
touches the database.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from django.conf import settings
from django.template.defaultfilters import floatformat
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import formats
from django.utils.functional import lazy
from django.utils.safestring import mark_safe
from django.utils.translation import gettext, ngettext

from chat.models import Message, answer_outcome
from chat.rendering.errors import error_text
from chat.rendering.markdown import render_markdown


@dataclass(frozen=True, slots=True)
class ImageView:
    """An image attached to a question, as its thumbnail needs it (``chat.images``)."""

    id: str
    width: int
    height: int
    filename: str

    @property
    def url(self) -> str:
        return reverse("chat:image", args=[self.id])


@dataclass(frozen=True, slots=True)
class MessageView:
    """What the template needs to draw one message."""

    id: int
    role: str
    status: str
    content: str
    reasoning: str = ""
    model: str = ""
    streamed: bool = True
    error_kind: str = ""
    error_message: str = ""  # English; shown with ``error_text`` from ``error_wording``
    # Compared but not hashed (a dict; ``error_message`` says the same): views stay cache keys.
    error_wording: dict[str, Any] | None = field(default=None, hash=False)
    retry_after: float | None = None
    request_id: str = ""  # the upstream's id for this answer, shown with errors for support
    finish_reason: str = ""
    ttft_ms: float | None = None
    thinking_ms: float | None = None
    answer_ms: float | None = None
    total_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    tokens_estimated: bool = False  # the counts are our estimate: no usage was reported
    elapsed_s: float = 0.0
    seq: int | None = None
    is_latest: bool = False
    committed: int = 0  # while streaming: how much of content is finished markdown blocks
    buffered: bool = False  # stream off, but the model only streams: the server buffered it
    provider_name: str = ""
    thinking_s: float | None = None  # while streaming: seconds the model has been thinking
    conversation_id: int | None = None
    version_ids: tuple[int, ...] = ()  # a regenerated answer's versions, oldest first
    retry_note: str = ""  # while waiting: why the first word is late (see ``retry_note``)
    # While streaming: tokens so far and their rate (``live_stats``); ``live_estimated``: our
    # count from the text, the upstream reporting none yet.
    live_tokens: int | None = None
    live_rate: float | None = None
    live_estimated: bool = False
    images: tuple[ImageView, ...] = ()  # a question's attached images, in order
    # While streaming: the finished blocks as their delta frames drew them (the generation
    # keeps them), so a snapshot draws no markdown; None: draw them from ``content``.
    committed_html: str | None = field(default=None, compare=False)

    @property
    def outcome(self) -> str:
        return answer_outcome(self.status, self.error_kind, bool(self.content or self.reasoning))

    @property
    def html(self) -> str:
        """Sanitised markdown for finished assistant text."""
        return render_markdown(self.content) if self.content else ""

    @property
    def live_html(self) -> str:
        """While streaming: the finished blocks, rendered."""
        if self.committed_html is not None:
            return self.committed_html
        return render_markdown(self.content[: self.committed]) if self.committed else ""

    @property
    def live_stats_html(self) -> str:
        """While streaming: the "N tokens · X tokens/s" line (``live_stats``)."""
        line = live_stats(
            self.id, self.live_tokens, self.live_rate, estimated=self.live_estimated, frame=False
        )
        return mark_safe(line)  # built from escaped parts

    @property
    def live_tail(self) -> str:
        """While streaming: the text after the last finished block, shown raw until it is."""
        return self.content[self.committed :]

    @property
    def ttft_s(self) -> float | None:
        return None if self.ttft_ms is None else self.ttft_ms / 1000

    @property
    def thinking_live(self) -> bool:
        """While streaming, once the model began to think: the summary's timer counts."""
        return self.status == Message.Status.STREAMING and self.thinking_s is not None

    @property
    def thinking_seconds(self) -> float | None:
        return None if self.thinking_ms is None else self.thinking_ms / 1000

    @property
    def answer_s(self) -> float | None:
        return None if self.answer_ms is None else self.answer_ms / 1000

    @property
    def total_s(self) -> float | None:
        return None if self.total_ms is None else self.total_ms / 1000

    @property
    def tokens_per_second(self) -> float | None:
        """Completion tokens over the time they took to arrive (after the first, if streamed)."""
        if not self.completion_tokens or self.total_ms is None:
            return None
        span_ms = self.total_ms - (self.ttft_ms or 0) if self.streamed else self.total_ms
        if span_ms <= 0:
            span_ms = self.total_ms
        return self.completion_tokens / (span_ms / 1000) if span_ms > 0 else None

    @property
    def can_retry(self) -> bool:
        return self.is_latest and self.status in {Message.Status.ERROR, Message.Status.STOPPED}

    @property
    def can_regenerate(self) -> bool:
        return self.is_latest and self.status == Message.Status.COMPLETE

    @property
    def can_continue(self) -> bool:
        """The latest answer, cut at the length limit: the model may go on from there."""
        return (
            self.is_latest
            and self.status == Message.Status.COMPLETE
            and self.finish_reason == "length"
            and bool(self.content)
        )

    @property
    def versions(self) -> int:
        return len(self.version_ids) or 1

    @property
    def version(self) -> int:
        """This version's number, from 1 (the first answer) to ``versions`` (the newest)."""
        return self.version_ids.index(self.id) + 1 if self.id in self.version_ids else 1

    @property
    def previous_version(self) -> int | None:
        return self.version_ids[self.version - 2] if self.version > 1 else None

    @property
    def next_version(self) -> int | None:
        return self.version_ids[self.version] if self.version < len(self.version_ids) else None


def message_view(
    message: Message,
    *,
    is_latest: bool = False,
    version_ids: tuple[int, ...] = (),
    images: tuple[ImageView, ...] = (),
) -> MessageView:
    return MessageView(
        id=message.pk,
        role=message.role,
        status=message.status,
        content=message.content,
        reasoning=message.reasoning,
        model=message.model,
        streamed=message.streamed,
        error_kind=message.error_kind,
        error_message=message.error_message,
        error_wording=message.error_wording,
        retry_after=message.retry_after,
        request_id=message.request_id,
        finish_reason=message.finish_reason,
        ttft_ms=message.ttft_ms,
        thinking_ms=message.thinking_ms,
        answer_ms=message.answer_ms,
        total_ms=message.total_ms,
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        total_tokens=message.total_tokens,
        tokens_estimated=message.tokens_estimated,
        is_latest=is_latest,
        buffered=not message.streamed and is_stream_only(message.model),
        provider_name=message.provider_name,
        conversation_id=message.conversation_id,
        version_ids=version_ids,
        images=images,
    )


def is_stream_only(model: str) -> bool:
    """Models that refuse ``stream: false`` (QwQ, Qwen3 open-source, thinking models)."""
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in settings.LLM_STREAM_ONLY_MODELS)


def render_message(view: MessageView, *, oob: str = "") -> str:
    return render_to_string("chat/_message.html", {"m": view, "oob": oob})


def render_composer_actions(streaming_answer_id: int | None) -> str:
    return render_to_string(
        "chat/_composer_actions.html", {"streaming_answer_id": streaming_answer_id, "oob": True}
    )


def title_frame(conversation_id: int, title: str) -> str:
    """A conversation named by its first message: the header and the sidebar show it."""
    title_input = render_to_string(
        "chat/page.html#title", {"conversation": {"display_title": title}, "frame": True}
    )
    return (
        title_input
        + f'<a id="conversation-{conversation_id}-link" hx-swap-oob="innerHTML">{escape(title)}</a>'
    )


def log_id(conversation_id: int) -> str:
    """The element holding a conversation's messages (the chat log, or a comparison pane)."""
    return f"conversation-{conversation_id}-log"


def log_frame(conversation_id: int, views: list[MessageView]) -> str:
    """Every message of a conversation, replacing what a page shows of it."""
    articles = "".join(render_message(view) for view in views)
    return f'<div id="{log_id(conversation_id)}" hx-swap-oob="innerHTML">{articles}</div>'


@dataclass(frozen=True, slots=True)
class Frame:
    """What one event changes: ``body`` on any page showing the messages, ``chrome`` only on
    the chat page (its Send/Stop button, title and alerts)."""

    body: str
    chrome: str = ""


def turn_frame(
    conversation_id: int,
    user: MessageView | None,
    answer: MessageView,
    *,
    stale_retry: int | None,
    new_title: str = "",
    replaces: int | None = None,
    log: Sequence[MessageView] | None = None,
) -> Frame:
    """A new exchange: the user's message (none on retry) and the empty answer join the log.

    A regenerated answer takes the place of the version it ``replaces``; after an edit the
    ``log`` (the messages before the edited one) is redrawn first, and the turn appended to it.
    """
    articles = (render_message(user) if user else "") + render_message(answer)
    stale = (
        f'<button id="retry-{stale_retry}" hx-swap-oob="delete"></button>' if stale_retry else ""
    )
    titled = title_frame(conversation_id, new_title) if new_title else ""
    redrawn = log_frame(conversation_id, list(log)) if log is not None else ""
    if replaces is not None:
        placed = render_message(answer, oob=f"outerHTML:#message-{replaces}")
    else:
        placed = f'<div hx-swap-oob="beforeend:#{log_id(conversation_id)}">{articles}</div>'
    return Frame(
        body=stale + redrawn + placed,
        chrome=titled
        + render_composer_actions(answer.id)
        + '<div id="alerts" hx-swap-oob="innerHTML"></div>'
        + ANNOUNCER_CLEAR,
    )


def continue_frame(answer: MessageView) -> Frame:
    """A cut answer goes on (Continue): it is drawn streaming again, its text so far kept,
    and later deltas append to it as to any answer."""
    return Frame(
        body=render_message(answer, oob="outerHTML"),
        chrome=render_composer_actions(answer.id)
        + '<div id="alerts" hx-swap-oob="innerHTML"></div>'
        + ANNOUNCER_CLEAR,
    )


def delta_frame(
    answer_id: int,
    seq: int,
    text: str,
    reasoning: str,
    first: bool,
    *,
    block_html: str | None = None,
    tail: str = "",
    thinking_began: bool = False,
    thought_ms: float | None = None,
) -> str:
    """Appends what arrived since the last frame; only the new characters travel.

    The raw text always travels as an append (the exact stream, numbered by ``data-seq``).
    When it finishes a markdown block (``block_html``: rendered by the caller, which keeps it
    for snapshots), that block is appended and the raw box left holding only the unfinished
    ``tail``.
    """
    parts = []
    if first:
        parts.append(f'<p id="answer-{answer_id}-wait" hx-swap-oob="delete"></p>')
    if thinking_began:
        parts.append(thinking_status(answer_id, elapsed_s=0.0))
    if reasoning:
        parts.append(
            f'<div hx-swap-oob="beforeend:#answer-{answer_id}-reasoning">{escape(reasoning)}</div>'
        )
    if thought_ms is not None:
        parts.append(thinking_status(answer_id, thought_ms=thought_ms))
    if text:
        parts.append(
            f'<div hx-swap-oob="beforeend:#answer-{answer_id}-text" data-seq="{seq}">'
            f"{escape(text)}</div>"
        )
    if block_html is not None:
        parts.append(
            f'<div hx-swap-oob="beforeend:#answer-{answer_id}-md">{block_html}</div>'
            f'<div id="answer-{answer_id}-text" hx-swap-oob="innerHTML">{escape(tail)}</div>'
        )
    return "".join(parts)


def thinking_status(
    answer_id: int, *, elapsed_s: float | None = None, thought_ms: float | None = None
) -> str:
    """The Thinking block's summary: a live "Thinking… 1.2 s", then "Thought for 3.4 s"
    (in the active language; the live timer takes its words from ``data-label``/``data-unit``).

    Sent twice an answer at most, so it may take the template's time (tens of microseconds).
    """
    if thought_ms is not None:
        view = _answer_part(answer_id, thinking_ms=thought_ms)
    else:
        view = _answer_part(answer_id, thinking_s=elapsed_s or 0.0)
    return render_to_string("chat/_message.html#thinking_status", {"m": view, "frame": True})


def live_stats(
    answer_id: int, tokens: int | None, rate: float | None, *, estimated: bool, frame: bool = True
) -> str:
    """The streaming answer's "N tokens · X tokens/s" line, replaced a few times a second at
    most (``pipeline``), riding on a delta frame; ``estimated``: our count, not the upstream's.

    Written here rather than as a template partial (the page's article includes it through
    ``MessageView.live_stats_html``): sent by every streaming answer four times a second, the
    partial's render took 90 µs, more than the rest of the token's relay; this takes 15.
    """
    swap = ' hx-swap-oob="true"' if frame else ""
    if tokens is None:
        return f'<p id="answer-{answer_id}-live" class="stats stats--live"{swap}></p>'
    count = ngettext("%(tokens)s token", "%(tokens)s tokens", tokens) % {"tokens": tokens}
    parts = [f"<span>{escape(count)}</span>"]
    if rate:
        unit = gettext("tokens/s")
        figure = formats.number_format(rate, 1)
        parts.append(f"<span>· <strong>{escape(figure)}</strong> {escape(unit)}</span>")
    if estimated:
        note = gettext("(estimated)")
        parts.append(f"<span>{escape(note)}</span>")
    marker = " data-tokens-estimated" if estimated else ""
    return (
        f'<p id="answer-{answer_id}-live" class="stats stats--live"{swap}{marker}'
        f' data-live-tokens="{tokens}">{"".join(parts)}</p>'
    )


def _answer_part(answer_id: int, **fields: Any) -> MessageView:
    """A streaming answer with only the fields a partial of ``chat/_message.html`` reads."""
    return MessageView(
        id=answer_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        content="",
        **fields,
    )


def retry_note(attempt: int, retries: int, wait: float, reason: str) -> str:
    """Why the first word is late: the model server refused for now and is asked again."""
    return gettext(
        "The model server refused for now (%(reason)s): asking again in %(seconds)s s"
        " (%(attempt)s of %(retries)s)."
    ) % {
        "reason": reason,
        "seconds": floatformat(wait, -1),
        "attempt": attempt,
        "retries": retries,
    }


def retry_frame(answer_id: int, note: str) -> str:
    """Shows ``note`` beside the "waiting…" timer, which keeps counting."""
    view = _answer_part(answer_id, retry_note=note)
    return render_to_string("chat/_message.html#retry_note", {"m": view, "frame": True})


def final_frame(answer: MessageView, *, article: str | None = None) -> Frame:
    """The finished answer replaces the live one: markdown rendered once, figures shown
    (``article``: already drawn, see ``articles.final_frame``)."""
    return Frame(
        render_message(answer, oob="outerHTML") if article is None else article,
        render_composer_actions(None) + announcer_frame(announcement(answer)),
    )


ANNOUNCER_CLEAR = '<div id="announcer" hx-swap-oob="innerHTML"></div>'
"""A new turn empties the chat page's announcer, so the next ending is news even if worded
the same."""


def announcement(answer: MessageView) -> str:
    """How an answer ended, in a few words, for screen readers: the log itself is not live
    (it would read every token), so the page's ``#announcer`` says it once, at the end."""
    if answer.status == Message.Status.ERROR:
        return error_text(answer.error_wording, answer.error_message) or gettext(
            "The answer failed."
        )
    if answer.status == Message.Status.STOPPED:
        return gettext("Answer stopped.")
    if answer.finish_reason == "length":
        return gettext("Answer complete, truncated at the length limit.")
    return gettext("Answer complete.")


def announcer_frame(text: str) -> str:
    return f'<div id="announcer" hx-swap-oob="innerHTML">{escape(text)}</div>'


def snapshot_frame(answer: MessageView) -> Frame:
    """A socket that joins mid-answer gets the text so far, then only later deltas."""
    return Frame(render_message(answer, oob="outerHTML"), render_composer_actions(answer.id))


def alert_frame(message: str) -> str:
    """The page's alerts, replaced by ``message`` (the chat and the comparison page alike)."""
    alert = render_to_string("chat/page.html#alert", {"alert": message})
    return f'<div id="alerts" hx-swap-oob="innerHTML">{alert}</div>'


@functools.cache
def _sent_marker() -> str:
    return render_to_string("chat/page.html#composer_sent", {"frame": True})


SENT_MARKER: str = lazy(_sent_marker, str)()
"""Added to a turn frame for the socket that sent it, so only that page clears its message box.

Drawn from the page's own ``#composer_sent`` once, when first used: templates cannot render
while Django starts, which is when this module may be imported."""
