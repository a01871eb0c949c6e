"""A socket whose browser stops reading, against a real Daphne worker over real TCP.

The client's receive buffer is made small and the client stops reading, so frames pile up in
the worker's Twisted transport: the very buffer ``chat.live.socket`` reads. The worker must
drop that socket's deltas (not queue them without end), refill it once it reads again, close
it if it stays behind, and keep every other socket streaming meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from tests.support.app import App, start_app
from tests.support.frames import Frame
from tests.support.processes import stop_process
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor

pytestmark = pytest.mark.live

FAST_LONG = "#sim tokens=20000 tps=2000 ttft=0.05"  # ~10 s of tokens, faster than read


@pytest.fixture(scope="module")
def worker(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    instance, process = start_app(
        tmp_path_factory.mktemp("backlog"),
        {
            "LLM_API_BASE": simulator.base_url,
            "STREAM_SOCKET_BUFFER_KB": "64",
            "STREAM_BEHIND_LIMIT_MS": "3000",
            "CHAT_RATE_LIMIT": "0",
        },
    )
    try:
        yield instance
    finally:
        stop_process(process)


def slow_reader(visitor: Visitor, conversation_id: int) -> Any:
    """A websocket whose kernel receive buffer is tiny and whose client queues one frame:
    once the test stops calling recv, the worker's side backs up."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", visitor.app.port))
    cookie = "; ".join(f"{k}={v}" for k, v in visitor.http.cookies.items())
    return websockets.connect(
        f"ws://127.0.0.1:{visitor.app.port}/ws/c/{conversation_id}/",
        sock=raw,
        additional_headers={"Cookie": cookie},
        origin=visitor.app.url,  # type: ignore[arg-type]
        max_size=None,
        max_queue=1,
    )


async def log_says(app: App, words: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while words not in app.log():
        assert time.monotonic() < deadline, f"the worker never logged {words!r}"
        await asyncio.sleep(0.05)


async def test_a_socket_that_stops_reading_drops_deltas_and_refills_when_it_reads_again(
    worker: App, simulator: Simulator
) -> None:
    tab, other = Visitor(worker), Visitor(worker)
    try:
        stuck_id, other_id = tab.new_conversation(), other.new_conversation()
        async with slow_reader(tab, stuck_id) as stuck, other.socket(other_id) as ws:
            await send(stuck, f"Unread [t-backlog-refill]\n{FAST_LONG}")
            await log_says(worker, "fell behind")
            # Meanwhile another socket on the same worker streams as usual.
            await send(ws, "Meanwhile [t-backlog-other]\n#sim tokens=60 tps=200 ttft=0.05")
            _, frames, final = await collect_answer(ws, timeout=30)
            assert final["data-status"] == "complete"
            assert (
                "".join(t for f in frames for _, _, t in f.deltas)
                == (simulator.request_for("[t-backlog-other]")["text"])
            )
            # The stuck tab reads again (before the limit): one snapshot, then frames again.
            answer_id, frames, final = await collect_answer(stuck, timeout=60)
        sent = simulator.request_for("[t-backlog-refill]")
        assert final["data-status"] == "complete"
        assert tab.export(stuck_id)["messages"][-1]["content"] == sent["text"]
        snapshots = [
            article
            for f in frames
            for article in f.articles
            if article.get("id") == f"message-{answer_id}" and "data-seq" in article
        ]
        assert snapshots, "no snapshot once the socket drained"
        # Frames 2..S (1 is the turn) that never came as deltas were dropped while the socket
        # was behind; the snapshot (S) holds them. (Not a count of deltas: an idle worker sends
        # each token in a frame of its own, so after the refill there may be thousands.)
        snapshot_seq = int(snapshots[0]["data-seq"])
        seqs = {seq for f in frames for a, seq, _ in f.deltas if a == answer_id}
        dropped = snapshot_seq - 1 - len({seq for seq in seqs if seq <= snapshot_seq})
        assert dropped > 0, "the deltas were queued, not dropped"
    finally:
        tab.close()
        other.close()


async def test_a_socket_behind_for_too_long_is_closed_and_the_page_can_catch_up(
    worker: App, simulator: Simulator
) -> None:
    tab = Visitor(worker)
    try:
        conversation = tab.new_conversation()
        async with slow_reader(tab, conversation) as stuck:
            await send(stuck, f"Never read [t-backlog-close]\n{FAST_LONG}")
            await log_says(worker, "stayed behind for 3 s: closing it")
            frames: list[Frame] = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    frames.append(Frame(str(await asyncio.wait_for(stuck.recv(), 30)), 0.0))
            # 1013 when the close frame is read in time; else the worker dropped the connection
            # after its close handshake timed out (1006). htmx reconnects on either.
            code = closed.value.rcvd.code if closed.value.rcvd is not None else 1006
            assert code in (1013, 1006), code
        answer_id = next(
            int(article["id"].removeprefix("message-"))
            for f in frames
            for article in f.articles
            if article.get("data-role") == "assistant"
        )
        # The page reconnects and syncs: it is shown the answer so far and the rest, or its end.
        async with tab.socket(conversation) as ws:
            await ws.send(json.dumps({"action": "sync", "answers": [str(answer_id)]}))
            _, _, final = await collect_answer(ws, answer_id, timeout=60)
        assert final["data-status"] == "complete"
        sent = simulator.request_for("[t-backlog-close]")
        assert tab.export(conversation)["messages"][-1]["content"] == sent["text"]
    finally:
        tab.close()
