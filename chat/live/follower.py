"""One socket's side of the live protocol: show every frame of every answer once, in order.

Frames reach a socket at most once: directly from an answer's task on this worker (``hub``),
or through the channel layer from another worker, which may drop them (Redis restarting, a
worker that did not yet know this one follows). Each frame carries its answer's ``seq``, so:

- a frame already contained in what the socket shows is skipped;
- a gap is refilled from a snapshot of the answer so far: this worker's generation's at once,
  or the generating worker's on request, holding later frames until it comes (asked again,
  up to ``SNAPSHOT_ATTEMPTS`` times, and the database asked when none comes);
- an answer that falls silent for ``SILENCE_CHECK`` seconds is looked up in the database: its
  final frame was lost (show the saved answer) or its worker died (settle it as interrupted);
- a socket whose peer stops reading is bounded: once ``BACKLOG_CAP`` bytes wait unsent, its
  deltas are dropped; when it drains it gets one snapshot per answer and goes on; behind for
  ``BEHIND_LIMIT`` seconds, it is closed with ``CLOSE_BEHIND`` (the page reconnects, resyncs);
- after a reconnect the page names the answers it still shows as streaming (``sync``); those
  that ended meanwhile get their final frame, within ``SYNC_BYTES``, once per ``SYNC_EVERY``.

In-order frames are shown inline, in the publishing task, without waiting on anything but the
send (which Daphne does not suspend on). Everything else (refills, database checks, snapshots)
runs one job at a time in a task of this follower's own, and frames that arrive meanwhile wait
in line behind it, so the publisher never waits on one slow socket.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable

from django.utils.translation import gettext

from chat.exceptions import ClientError
from chat.models import Message
from chat.rendering import articles, fragments

from .jobs import JobLine
from .ports import Socket, Source
from .protocol import FrameEvent, SnapshotEvent

logger = logging.getLogger(__name__)

# How long a socket holds another worker's frames waiting for that worker's snapshot, and how
# often it asks: a request published while that worker's Redis connection is still coming back
# is lost, and a second one a moment later is not.
SNAPSHOT_WAIT = 2.0
SNAPSHOT_ATTEMPTS = 3
# How long an answer shown as streaming may go without a frame before the database is asked
# whether it ended (its final frame lost) or its worker died. A slow upstream costs one query.
SILENCE_CHECK = 5.0
# Bytes a socket may have queued but unsent before its deltas are dropped (a few seconds of
# dozens of answers: a browser merely busy never gets near it; it must drain to a quarter),
# and the seconds it may stay behind before it is closed (``STREAM_SOCKET_BUFFER_KB``,
# ``STREAM_BEHIND_LIMIT_MS``; these are the defaults).
BACKLOG_CAP = 256 * 1024
BEHIND_LIMIT = 20.0
DRAIN_POLL = 0.25  # seconds between looks at a socket that is behind
CLOSE_BEHIND = 1013  # "try again later": htmx's websocket extension reconnects on it
SYNC_LIMIT = 50  # answers a page may ask about in one sync
SYNC_EVERY = 2.0  # seconds between two syncs of one socket
SYNC_BYTES = 1024 * 1024  # final frames one sync may send; the rest follow by the silence check
DONE = 1 << 62  # the seq of an answer shown final: nothing comes after it


class Follower:
    """The live protocol for one socket, over every conversation it shows."""

    def __init__(
        self,
        socket: Socket,
        source: Source,
        *,
        chrome: bool,
        clock: Callable[[], float] = time.monotonic,
        backlog_cap: int | None = None,
        behind_limit: float | None = None,
    ) -> None:
        self.socket = socket
        self.backlog_cap = backlog_cap if backlog_cap is not None else BACKLOG_CAP
        self.behind_limit = behind_limit if behind_limit is not None else BEHIND_LIMIT
        self.source = source
        self.chrome = chrome  # the chat page: Send/Stop button, title, alerts, "sent" marker
        self.clock = clock
        self.seen: dict[int, int] = {}  # answer -> the last seq shown
        self.pending: dict[int, list[FrameEvent]] = {}  # answer -> frames held for a snapshot
        self.live: dict[int, float] = {}  # answer shown streaming -> when it last had news
        self.conversation_of: dict[int, int] = {}  # answers shown streaming
        self.dropped: set[int] = set()  # answers whose deltas were dropped while behind
        self.behind_since: float | None = None
        self.last_sync = float("-inf")
        self.closed = False
        self.jobs = JobLine(socket.channel_name, lambda: socket.language)
        self._watcher: asyncio.Task[None] | None = None
        self._draining: asyncio.Task[None] | None = None

    # Entry points -------------------------------------------------------------------------

    async def deliver(self, event: FrameEvent) -> None:
        """A frame of an answer in a conversation this socket shows (from the hub)."""
        if self.closed:
            return  # its disconnect is on its way to the hub
        if self.jobs.busy or self._needs_work(event):
            self.jobs.queue(lambda: self._on_frame(event))
        else:
            await self._on_frame(event)

    def snapshot_arrived(self, event: SnapshotEvent) -> None:
        """Another worker's answer so far, asked for by this socket."""
        if not self.closed:
            self.jobs.queue(lambda: self._on_snapshot(event))

    async def catch_up(self, conversation_id: int) -> None:
        """Answers already streaming, here or on another worker: their text so far, then
        only later frames. Call it once the socket follows the conversation (``hub``), so
        frames newer than the snapshot still arrive."""
        await self.jobs.exclusive(lambda: self._catch_up(conversation_id))

    async def sync(self, conversation_ids: list[int], ids: set[int]) -> None:
        """After a reconnect: of the answers the page still shows as streaming, those that
        ended meanwhile (their final frame went to the old socket) get it now."""
        if len(ids) > SYNC_LIMIT:
            raise ClientError(gettext("That request was not understood."))
        now = self.clock()
        if now - self.last_sync < SYNC_EVERY:
            raise ClientError(gettext("Too many requests: wait a moment and try again."))
        self.last_sync = now
        await self.jobs.exclusive(lambda: self._sync(conversation_ids, ids))

    def close(self) -> None:
        """The socket closed: stop every timer and job of this follower."""
        self.closed = True
        self.jobs.close()
        for task in [self._watcher, self._draining]:
            if task is not None:
                task.cancel()

    # Frames ---------------------------------------------------------------------------------

    def _needs_work(self, event: FrameEvent) -> bool:
        """Would ``_on_frame`` wait on anything but the send (a refill, the database)?"""
        answer, seq = event["answer"], event["seq"]
        last = self.seen.get(answer, 0)
        if answer in self.pending:
            return event["kind"] == "final" and seq > last + 1 and last == 0
        if event["kind"] == "turn" and seq > last:
            return False  # an answer's start (or a continuation's: see ``_on_frame``)
        if seq <= last or (event["kind"] == "delta" and self.behind_since is not None):
            return False  # skipped, or dropped while behind (the backlog is read once, below)
        return seq > last + 1 and (event["kind"] != "final" or last == 0)

    async def _on_frame(self, event: FrameEvent) -> None:
        answer, seq, kind = event["answer"], event["seq"], event["kind"]
        held = self.pending.get(answer)
        if held is not None:
            if kind != "final":
                held.append(event)  # until the snapshot it follows arrives
                return
            del self.pending[answer]  # the final frame holds the whole answer: no wait
        last = self.seen.get(answer, 0)
        if kind == "turn" and seq > last:
            # A turn starts its answer's numbers: at 1, or for an answer that goes on after it
            # ended (Continue) past every number it had (``state.continuation_seq``).
            last = seq - 1
        if seq <= last:
            return  # already contained in a snapshot this socket got
        if kind == "delta" and self._falling_behind():
            self.dropped.add(answer)
            self.conversation_of[answer] = event["conversation"]
            return
        if seq > last + 1 and kind != "final":
            await self._refill(event, missed_start=last == 0)
            return
        if seq > last + 1 and last == 0:
            await self._send_log(event["conversation"])  # the final frame needs its article
        self.seen[answer] = seq
        self.conversation_of[answer] = event["conversation"]
        self._note(answer, ended=kind == "final")
        await self.socket.send_text(self._html(event))

    def _html(self, event: FrameEvent) -> str:
        html = self._with_chrome(event["html"], event["chrome"])
        if self.chrome and event["kind"] == "turn" and event["origin"] == self.socket.channel_name:
            html += fragments.SENT_MARKER
        return html

    async def _refill(self, event: FrameEvent, *, missed_start: bool) -> None:
        """Frames went missing: show the answer so far, then only the frames after it."""
        answer, conversation_id = event["answer"], event["conversation"]
        logger.info("socket %s missed frames of answer %d: refilling", self.socket.channel_name,
                    answer)  # fmt: skip
        if missed_start:
            await self._send_log(conversation_id)
        snapshot = self.source.local_snapshot(answer)
        if snapshot is not None:  # generated here: its text so far, right now
            await self._show_snapshot(snapshot, conversation_id)
            await self._on_frame(event)
        else:
            await self._ask_snapshot(conversation_id, answer, held=[event])

    async def _send_log(self, conversation_id: int) -> None:
        html = await self.source.saved_log(conversation_id, with_retry=self.chrome)
        await self.socket.send_text(html)

    async def _show_snapshot(self, snapshot: SnapshotEvent, conversation_id: int) -> None:
        answer = snapshot["answer"]
        if snapshot["seq"] <= self.seen.get(answer, 0):
            return  # it already shows as much
        self.seen[answer] = snapshot["seq"]
        self.conversation_of[answer] = conversation_id
        self._note(answer, ended=False)
        await self.socket.send_text(self._with_chrome(snapshot["html"], snapshot["chrome"]))

    def _with_chrome(self, body: str, chrome: str) -> str:
        return body + chrome if self.chrome else body

    # Snapshots from other workers -----------------------------------------------------------

    async def _ask_snapshot(
        self, conversation_id: int, answer: int, held: list[FrameEvent]
    ) -> None:
        """An answer another worker generates: ask it for the text so far, holding its frames
        meanwhile, so nothing is lost or doubled however the two race."""
        if answer in self.pending:
            self.pending[answer].extend(held)
            return
        self.pending[answer] = held
        self.conversation_of[answer] = conversation_id
        await self._request_snapshot(conversation_id, answer)
        self.jobs.spawn(self._snapshot_deadline(conversation_id, answer))

    async def _request_snapshot(self, conversation_id: int, answer: int) -> None:
        try:
            await self.source.request_snapshot(conversation_id, answer, self.socket.channel_name)
        except Exception as exc:  # the layer is down: the deadline asks again, then falls back
            logger.warning("could not ask for a snapshot of answer %d: %s", answer, exc)

    async def _on_snapshot(self, event: SnapshotEvent) -> None:
        answer = event["answer"]
        held = self.pending.pop(answer, None)
        if held is None:
            return  # the deadline came first
        self.seen[answer] = max(event["seq"], self.seen.get(answer, 0))
        self._note(answer, ended=False)
        await self.socket.send_text(self._with_chrome(event["html"], event["chrome"]))
        for frame in held:
            await self._on_frame(frame)

    async def _snapshot_deadline(self, conversation_id: int, answer: int) -> None:
        """No snapshot came yet. If the answer ended meanwhile, show its saved state; if it
        still streams, ask again (a request lost to a reconnecting layer), and after the last
        attempt show the frames held (the final frame mends the gap); silence is watched after.
        """
        for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
            await asyncio.sleep(SNAPSHOT_WAIT)
            if answer not in self.pending:
                return  # the snapshot (or the final frame) came
            view = await self.source.saved_answer(answer)
            if answer not in self.pending:
                return  # it came while the database answered
            if view is not None and view.status != Message.Status.STREAMING:
                await self.jobs.exclusive(functools.partial(self._give_up_waiting, answer, view))
                return
            if view is None or attempt == SNAPSHOT_ATTEMPTS:
                break
            logger.info("no snapshot of answer %d yet: asking again", answer)
            await self._request_snapshot(conversation_id, answer)
        await self.jobs.exclusive(lambda: self._give_up_waiting(answer, None))

    async def _give_up_waiting(self, answer: int, view: fragments.MessageView | None) -> None:
        held = self.pending.pop(answer, None)
        if held is None:
            return
        if view is not None:
            await self._send_final(view)
            return
        self._note(answer, ended=False)
        for frame in held:
            self.seen[answer] = frame["seq"] - 1  # best effort: the final frame mends all
            await self._on_frame(frame)

    # Answers shown as streaming -------------------------------------------------------------

    async def _catch_up(self, conversation_id: int) -> None:
        local: set[int] = set()
        for answer in self.source.local_answers(conversation_id):
            snapshot = self.source.local_snapshot(answer)
            if snapshot is not None:
                local.add(answer)
                await self._show_snapshot(snapshot, conversation_id)
        for answer in await self.source.streaming_answers(conversation_id, local):
            if answer not in self.seen:
                await self._ask_snapshot(conversation_id, answer, held=[])

    async def _send_final(self, view: fragments.MessageView) -> int:
        self.seen[view.id] = DONE
        self._note(view.id, ended=True)
        frame = await articles.final_frame_off_loop(view)
        html = self._with_chrome(frame.body, frame.chrome)
        await self.socket.send_text(html)
        return len(html)

    def _note(self, answer: int, *, ended: bool) -> None:
        """Keep the time of each shown answer's last news; silence gets a database check."""
        if ended:
            self.live.pop(answer, None)
            self.dropped.discard(answer)
            self.conversation_of.pop(answer, None)
            return
        self.live[answer] = self.clock()
        self._ensure_watching()

    def _ensure_watching(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.ensure_future(self._watch_silence())

    async def _watch_silence(self) -> None:
        while self.live:
            await asyncio.sleep(SILENCE_CHECK / 2)
            try:
                await self.jobs.exclusive(self._check_silence)
            except Exception as exc:  # the database away: look again next time
                logger.warning("socket %s: checking silent answers failed (%s: %s)",
                               self.socket.channel_name, type(exc).__name__, exc)  # fmt: skip

    async def _check_silence(self) -> None:
        """An answer with no frame for ``SILENCE_CHECK`` seconds: lost final frame, or a dead
        worker? The database knows; a live answer merely thinking is left alone."""
        now = self.clock()
        quiet = [
            answer
            for answer, heard in self.live.items()
            if now - heard >= SILENCE_CHECK and answer not in self.pending
        ]
        for answer in quiet:
            view = await self.source.saved_answer(answer)
            if view is None:
                self.live.pop(answer, None)
            elif view.status != Message.Status.STREAMING:
                if answer in self.live:  # no final frame arrived meanwhile
                    await self._send_final(view)
            elif answer in self.live:
                self.live[answer] = now

    async def _sync(self, conversation_ids: list[int], ids: set[int]) -> None:
        budget = SYNC_BYTES
        for view in await self.source.ended_answers(conversation_ids, ids):
            if view.id in self.live or view.id in self.pending:
                continue
            if budget <= 0:  # the rest at the next silence check, not all in one burst
                self.live[view.id] = self.clock() - SILENCE_CHECK
                self._ensure_watching()
                continue
            budget -= await self._send_final(view)

    # A socket that cannot keep up -------------------------------------------------------------

    def _falling_behind(self) -> bool:
        """Is this socket behind (its deltas dropped)? Checked per delta: a few attribute reads."""
        if self.behind_since is not None:
            return True
        if self.socket.backlog() <= self.backlog_cap:
            return False
        self.behind_since = self.clock()
        logger.info("socket %s fell behind: its deltas are dropped until it drains",
                    self.socket.channel_name)  # fmt: skip
        self._draining = asyncio.ensure_future(self._watch_drain())
        return True

    async def _watch_drain(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_POLL)
            if self.socket.backlog() <= self.backlog_cap // 4:
                self.behind_since = None
                dropped, self.dropped = self.dropped, set()
                self.jobs.queue(functools.partial(self._refill_dropped, dropped))
                return
            assert self.behind_since is not None
            if self.clock() - self.behind_since > self.behind_limit:
                logger.warning("socket %s stayed behind for %.0f s: closing it",
                               self.socket.channel_name, self.behind_limit)  # fmt: skip
                await self.socket.close_behind()
                return

    async def _refill_dropped(self, answers: Iterable[int]) -> None:
        """Drained: one snapshot per answer whose deltas were dropped, then frames as usual."""
        for answer in answers:
            conversation_id = self.conversation_of.get(answer)
            if conversation_id is None or answer not in self.live:
                continue  # ended meanwhile: its final frame (never dropped) says all
            snapshot = self.source.local_snapshot(answer)
            if snapshot is not None:
                await self._show_snapshot(snapshot, conversation_id)
            else:
                await self._ask_snapshot(conversation_id, answer, held=[])
