"""The follower (one socket's side of the live protocol), without Daphne or a database.

A fake socket records what the browser would receive; a fake source plays the generation
service and the database. Timers are shortened through the module's constants, and every
test waits for an event (with a deadline), never for a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from chat.exceptions import ClientError
from chat.live import follower as follower_module
from chat.live.follower import BACKLOG_CAP, Follower
from chat.live.protocol import FrameEvent, FrameKind, SnapshotEvent
from chat.models import Message
from chat.rendering import fragments

CONVERSATION = 7
ANSWER = 70


@pytest.fixture(autouse=True)
def short_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follower_module, "SNAPSHOT_WAIT", 0.05)
    monkeypatch.setattr(follower_module, "SILENCE_CHECK", 0.1)
    monkeypatch.setattr(follower_module, "DRAIN_POLL", 0.01)
    monkeypatch.setattr(follower_module, "BEHIND_LIMIT", 0.3)
    monkeypatch.setattr(follower_module, "SYNC_EVERY", 60.0)


@dataclass
class FakeSocket:
    channel_name: str = "socket-1"
    language: str = "en"
    sent: list[str] = field(default_factory=list)
    queued: int = 0  # bytes "unsent"
    closed: bool = False

    async def send_text(self, html: str) -> None:
        self.sent.append(html)

    def backlog(self) -> int:
        return self.queued

    async def close_behind(self) -> None:
        self.closed = True


@dataclass
class FakeSource:
    """This worker's generations (``local``) and the database (``saved``), by answer id."""

    local: dict[int, str] = field(default_factory=dict)  # answer -> text so far
    local_seq: dict[int, int] = field(default_factory=dict)
    saved: dict[int, fragments.MessageView] = field(default_factory=dict)
    streaming: list[int] = field(default_factory=list)
    requests: list[tuple[int, int, str]] = field(default_factory=list)
    database_gate: asyncio.Event | None = None  # set to let a database call go on

    def local_snapshot(self, answer_id: int) -> SnapshotEvent | None:
        if answer_id not in self.local:
            return None
        return snapshot(answer_id, self.local_seq[answer_id], self.local[answer_id])

    def local_answers(self, conversation_id: int) -> list[int]:
        return list(self.local)

    async def request_snapshot(self, conversation_id: int, answer_id: int, reply_to: str) -> None:
        self.requests.append((conversation_id, answer_id, reply_to))

    async def _database(self) -> None:
        if self.database_gate is not None:
            await self.database_gate.wait()

    async def saved_answer(self, answer_id: int) -> fragments.MessageView | None:
        await self._database()
        return self.saved.get(answer_id)

    async def saved_log(self, conversation_id: int, *, with_retry: bool) -> str:
        await self._database()
        return "<log>"

    async def streaming_answers(self, conversation_id: int, exclude: set[int]) -> list[int]:
        await self._database()
        return [a for a in self.streaming if a not in exclude]

    async def ended_answers(
        self, conversation_ids: list[int], ids: set[int]
    ) -> list[fragments.MessageView]:
        await self._database()
        return [view for pk, view in self.saved.items() if pk in ids]


def frame(seq: int, text: str = "", kind: FrameKind = "delta", answer: int = ANSWER) -> FrameEvent:
    return FrameEvent(
        type="chat.frame",
        kind=kind,
        conversation=CONVERSATION,
        answer=answer,
        seq=seq,
        origin=None,
        html=f"<{kind} {answer}:{seq}>{text}",
        chrome="",
        worker="",
        followed=False,
    )


def snapshot(answer: int, seq: int, text: str) -> SnapshotEvent:
    return SnapshotEvent(
        type="chat.snapshot", answer=answer, seq=seq, html=f"<snapshot {answer}:{seq}>{text}",
        chrome="",
    )  # fmt: skip


def view(answer: int, status: str, content: str = "done") -> fragments.MessageView:
    return fragments.MessageView(
        id=answer, role=Message.Role.ASSISTANT, status=status, content=content,
        conversation_id=CONVERSATION, is_latest=True,
    )  # fmt: skip


def shown(socket: FakeSocket) -> list[str]:
    """What the page shows, as the test's own short labels (a final article as "final")."""
    return [
        "final" if 'data-status="complete"' in html else html.split(">")[0] + ">"
        for html in socket.sent
    ]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def make(source: FakeSource | None = None) -> tuple[Follower, FakeSocket, FakeSource]:
    socket, source = FakeSocket(), source or FakeSource()
    return Follower(socket, source, chrome=False), socket, source


async def test_in_order_frames_are_shown_at_once_and_repeats_skipped() -> None:
    follower, socket, _ = make()
    for seq in (1, 2, 2, 3, 1):
        await follower.deliver(frame(seq, kind="turn" if seq == 1 else "delta"))
    # Shown inline: no task was needed, so they are there the moment deliver returns.
    assert shown(socket) == [f"<turn {ANSWER}:1>", f"<delta {ANSWER}:2>", f"<delta {ANSWER}:3>"]
    follower.close()


async def test_a_gap_in_an_answer_generated_here_is_refilled_from_its_snapshot() -> None:
    source = FakeSource(local={ANSWER: "abcd"}, local_seq={ANSWER: 4})
    follower, socket, _ = make(source)
    await follower.deliver(frame(1, kind="turn"))
    await follower.deliver(frame(4))  # 2 and 3 were lost
    await until(lambda: len(socket.sent) == 2)
    assert shown(socket) == [f"<turn {ANSWER}:1>", f"<snapshot {ANSWER}:4>"]
    await follower.deliver(frame(4))  # already in the snapshot
    await follower.deliver(frame(5))
    await until(lambda: len(socket.sent) == 3)
    assert shown(socket)[-1] == f"<delta {ANSWER}:5>"
    follower.close()


async def test_another_workers_answer_holds_frames_until_its_snapshot() -> None:
    follower, socket, source = make()
    await follower.deliver(frame(1, kind="turn"))
    await follower.deliver(frame(5))  # a gap: the answer runs on another worker
    await until(lambda: len(source.requests) == 1)
    assert source.requests == [(CONVERSATION, ANSWER, "socket-1")]
    await follower.deliver(frame(6))
    await follower.deliver(frame(7))
    assert shown(socket) == [f"<turn {ANSWER}:1>"]  # held meanwhile
    follower.snapshot_arrived(snapshot(ANSWER, 6, "abcdef"))
    await until(lambda: len(socket.sent) == 3)
    # The snapshot holds 1..6: of the held frames only 7 is new.
    assert shown(socket) == [f"<turn {ANSWER}:1>", f"<snapshot {ANSWER}:6>", f"<delta {ANSWER}:7>"]
    follower.close()


async def test_a_lost_snapshot_request_is_asked_again_then_the_database_decides() -> None:
    follower, socket, source = make()
    source.saved[ANSWER] = view(ANSWER, Message.Status.STREAMING)
    await follower.deliver(frame(1, kind="turn"))
    await follower.deliver(frame(3))
    await until(lambda: len(source.requests) == 2)  # no reply: asked again
    source.saved[ANSWER] = view(ANSWER, Message.Status.COMPLETE)
    await until(lambda: "final" in shown(socket))
    assert shown(socket) == [f"<turn {ANSWER}:1>", "final"]
    follower.close()


async def test_a_slow_database_does_not_hold_up_the_publisher() -> None:
    gate = asyncio.Event()
    follower, socket, source = make(FakeSource(database_gate=gate))
    # A frame whose start was missed needs the log from the database, which hangs...
    async with asyncio.timeout(1):
        await follower.deliver(frame(3))
        await follower.deliver(frame(4))
        await follower.deliver(frame(1, answer=ANSWER + 1, kind="turn"))
    # ...yet deliver returned at once; the frames wait in line behind the refill.
    assert socket.sent == []
    gate.set()
    await until(lambda: f"<turn {ANSWER + 1}:1>" in shown(socket))
    assert shown(socket)[0] == "<log>"
    follower.close()


async def test_a_silent_answer_that_ended_shows_its_saved_state() -> None:
    follower, socket, source = make()
    await follower.deliver(frame(1, kind="turn"))
    await follower.deliver(frame(2))
    source.saved[ANSWER] = view(ANSWER, Message.Status.COMPLETE)  # its final frame was lost
    await until(lambda: "final" in shown(socket))
    assert follower.live == {}
    follower.close()


async def test_a_silent_answer_still_streaming_is_left_alone() -> None:
    follower, socket, source = make()
    await follower.deliver(frame(1, kind="turn"))
    source.saved[ANSWER] = view(ANSWER, Message.Status.STREAMING)
    before = follower.live[ANSWER]
    await until(lambda: follower.live[ANSWER] > before)  # checked, and still watched
    assert shown(socket) == [f"<turn {ANSWER}:1>"]
    follower.close()


async def test_catch_up_shows_local_answers_and_asks_for_remote_ones() -> None:
    source = FakeSource(local={ANSWER: "ab"}, local_seq={ANSWER: 3}, streaming=[ANSWER, 99])
    follower, socket, _ = make(source)
    await follower.catch_up(CONVERSATION)
    assert shown(socket) == [f"<snapshot {ANSWER}:3>"]
    assert source.requests == [(CONVERSATION, 99, "socket-1")]
    follower.close()


async def test_a_socket_that_stops_reading_drops_deltas_then_refills_once_drained() -> None:
    source = FakeSource(local={ANSWER: ""}, local_seq={ANSWER: 0})
    follower, socket, _ = make(source)
    await follower.deliver(frame(1, kind="turn"))
    await follower.deliver(frame(2, "a"))
    socket.queued = BACKLOG_CAP + 1  # the browser stopped reading
    for seq in range(3, 50):
        await follower.deliver(frame(seq, "x"))
    assert shown(socket) == [f"<turn {ANSWER}:1>", f"<delta {ANSWER}:2>"]  # nothing queued more
    assert follower.behind_since is not None
    source.local[ANSWER], source.local_seq[ANSWER] = "a" + "x" * 47, 49
    socket.queued = 0  # it drained
    await until(lambda: len(socket.sent) == 3)
    assert shown(socket)[-1] == f"<snapshot {ANSWER}:49>"  # one snapshot for all it missed
    await follower.deliver(frame(50))
    assert shown(socket)[-1] == f"<delta {ANSWER}:50>"  # and on it goes
    follower.close()


async def test_turn_and_final_frames_are_never_dropped() -> None:
    follower, socket, source = make()
    socket.queued = BACKLOG_CAP + 1
    await follower.deliver(frame(1, kind="turn"))
    await follower.deliver(frame(2))
    await follower.deliver(frame(3, kind="final"))
    await until(lambda: len(socket.sent) == 2)
    assert shown(socket) == [f"<turn {ANSWER}:1>", f"<final {ANSWER}:3>"]
    follower.close()


async def test_a_socket_behind_for_too_long_is_closed() -> None:
    follower, socket, _ = make()
    await follower.deliver(frame(1, kind="turn"))
    socket.queued = BACKLOG_CAP * 2
    await follower.deliver(frame(2))
    await until(lambda: socket.closed)
    follower.close()


async def test_sync_sends_ended_answers_once_and_is_rate_limited() -> None:
    follower, socket, source = make()
    source.saved = {1: view(1, Message.Status.COMPLETE), 2: view(2, Message.Status.COMPLETE)}
    await follower.sync([CONVERSATION], {1, 2, 3})
    assert shown(socket) == ["final", "final"]
    with pytest.raises(ClientError):
        await follower.sync([CONVERSATION], {1})
    assert len(socket.sent) == 2
    follower.close()


async def test_sync_past_its_byte_budget_leaves_the_rest_to_the_silence_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(follower_module, "SYNC_BYTES", 1)  # the first final spends it all
    follower, socket, source = make()
    source.saved = {1: view(1, Message.Status.COMPLETE), 2: view(2, Message.Status.COMPLETE)}
    await follower.sync([CONVERSATION], {1, 2})
    assert shown(socket) == ["final"]
    await until(lambda: len(socket.sent) == 2)  # the other one, by the next silence check
    follower.close()


async def test_too_many_answers_in_one_sync_are_refused() -> None:
    follower, socket, _ = make()
    with pytest.raises(ClientError):
        await follower.sync([CONVERSATION], set(range(1, 60)))
    follower.close()


async def test_the_silence_check_outlives_a_database_that_is_away() -> None:
    follower, socket, source = make()
    failures = [1]
    answered = source.saved_answer

    async def flaky(answer_id: int) -> fragments.MessageView | None:
        if failures:
            failures.pop()
            raise OSError("the database is restarting")
        return await answered(answer_id)

    source.saved_answer = flaky  # type: ignore[method-assign]
    await follower.deliver(frame(1, kind="turn"))
    source.saved[ANSWER] = view(ANSWER, Message.Status.COMPLETE)
    await until(lambda: "final" in shown(socket))  # checked again after the failure
    assert not failures
    follower.close()
