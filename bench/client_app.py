"""The app's protocol for the load client: htmx ``ws-send`` JSON in, HTML frames out.

Everything that knows the app's frame HTML is in this module (``AppProtocol`` and the
``app_*`` helpers), and it relies only on markers meant to stay: the ``data-seq`` attribute of
a delta, the answer article's ``id="message-N"`` and its ``data-status`` (``streaming`` while
live, anything else once final). The rest of the markup may shrink without breaking the bench.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bench.client import ParsedFrame, Prompt, StreamRecord
from bench.client_socket import ws_connect, ws_frame_bytes
from tests.support.app import App

NEW_CONVERSATION = re.compile(r"/c/(\d+)/$")
ARTICLE_TAG = re.compile(r"<article\b[^>]*>")
ATTRIBUTE = re.compile(r'([\w-]+)="([^"]*)"')
# A delta: any element but an article that carries data-seq; its text runs to the next tag
# (the text is escaped, so it holds no "<").
SEQ_ELEMENT = re.compile(r'<(?!article\b)[A-Za-z][\w-]*\b[^>]*\bdata-seq="(\d+)"[^>]*>([^<]*)')
TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class AppSeat:
    """One browser: its session cookie, the worker it talks to and the conversation it uses."""

    app: App
    cookie: str
    conversation_id: int


def _attrs(tag: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in ATTRIBUTE.findall(tag)}


def app_articles(frame: str) -> list[dict[str, str]]:
    """The attributes of every ``<article>`` in a frame."""
    return [_attrs(tag) for tag in ARTICLE_TAG.findall(frame)]


def app_answer_id(frame: str) -> int | None:
    """The id of the answer a turn frame starts: its article is the one still streaming."""
    for article in app_articles(frame):
        if article.get("data-status") == "streaming" and article.get("data-role") != "user":
            ident = article.get("id", "")
            if ident.startswith("message-") and ident[8:].isdigit():
                return int(ident[8:])
    return None


def app_final_status(frame: str, answer_id: int) -> str | None:
    """The answer's final ``data-status`` if this frame ends it (its article, no longer live)."""
    if f'id="message-{answer_id}"' not in frame:  # cheap test first: it runs per frame
        return None
    for article in app_articles(frame):
        if article.get("id") == f"message-{answer_id}":
            status = article.get("data-status", "")
            if status and status != "streaming":
                return status
    return None


def app_deltas(frame: str) -> list[tuple[int, str]]:
    """``(seq, text)`` of every delta in a frame: the elements that carry ``data-seq``."""
    return [(int(seq), html.unescape(text)) for seq, text in SEQ_ELEMENT.findall(frame)]


class AppProtocol:
    """Streamside: a session and a conversation per stream, spread round-robin over workers."""

    name = "app"

    def __init__(self, apps: Sequence[App]) -> None:
        self.apps = list(apps)

    def prepare(self, count: int) -> list[AppSeat]:
        """One session per stream, each with a new conversation.

        A session cannot hold several new conversations (the app reuses its untouched one), and
        one session per stream is what real users look like anyway.
        """
        return [self._seat(self.apps[i % len(self.apps)]) for i in range(count)]

    @staticmethod
    def _seat(app: App) -> AppSeat:
        with httpx.Client(base_url=app.url, timeout=30, follow_redirects=True) as http:
            http.get("/").raise_for_status()
            token = http.cookies.get("csrftoken", "")
            response = http.post("/c/new/", headers={"X-CSRFToken": token}, follow_redirects=False)
            match = NEW_CONVERSATION.search(response.headers.get("location", ""))
            if response.status_code != 302 or match is None:
                raise RuntimeError(f"could not create a conversation: HTTP {response.status_code}")
            cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        return AppSeat(app, cookie, int(match.group(1)))

    async def connect(self, seat: AppSeat, *, stuck: bool = False, compress: bool = False) -> Any:
        url = f"ws://127.0.0.1:{seat.app.port}/ws/c/{seat.conversation_id}/"
        return await ws_connect(
            url, {"Cookie": seat.cookie}, seat.app.url, stuck=stuck, compress=compress
        )

    async def send(self, ws: Any, prompt: Prompt) -> None:
        await ws.send(json.dumps({"action": "send", "message": prompt.text, "HEADERS": {}}))

    def watch(self, record: StreamRecord, raw: str) -> bool:
        if record.answer_id is None:
            record.answer_id = app_answer_id(raw)
        elif (status := app_final_status(raw, record.answer_id)) is not None:
            record.final_status = status
            return True
        if 'class="alert"' in raw:
            record.error = "alert: " + html.unescape(TAG.sub("", raw)).strip()
            return True
        return False

    def parse(self, record: StreamRecord) -> list[ParsedFrame]:
        out = []
        for index, (at, raw) in enumerate(record.frames):
            size = ws_frame_bytes(raw)
            deltas = tuple(app_deltas(raw))
            if deltas:
                kind = "delta"
            elif record.answer_id is not None and app_final_status(raw, record.answer_id):
                kind = "final"
            else:
                kind = "turn" if index == 0 else "other"
            out.append(ParsedFrame(at, size, kind, deltas))
        return out
