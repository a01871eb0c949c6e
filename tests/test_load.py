"""Load with a crash in the middle: 200 concurrent streams across two Daphne workers on
PostgreSQL and Redis, with Redis killed and restarted while they run.

Every answer must be saved exactly as the simulator sent it (checksums), every socket must see
only its own answer and end showing it complete, and no worker may log ChannelFull or an error
of its own. Time to first token p50/p95 is printed (figures, not assertions: see bench/).
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.app import App, two_workers
from tests.support.frames import Frame
from tests.support.redis_server import RedisServer
from tests.support.simulator import Simulator
from tests.support.sockets import send
from tests.support.visitor import Visitor

pytestmark = [pytest.mark.live, pytest.mark.load]

STREAMS = 200
PROMPT = "Load {i} [t-load-{i:03d}]\n#sim tokens=120 tps=40 ttft=0.2 seed={i}"


@pytest.fixture(scope="module")
def load_workers(
    simulator: Simulator,
    database: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[App, App]]:
    env = {
        "LLM_API_BASE": simulator.base_url,
        "DATABASE_URL": database,
        "REDIS_URL": redis_server.url,
        "STREAM_SAVE_INTERVAL_MS": "1000",
    }
    with two_workers(env, tmp_path_factory, "load") as workers:
        yield workers


async def one_stream(visitor: Visitor, conversation: int, i: int, go: float) -> dict[str, object]:
    """Send one prompt and read the socket until its answer is final; what this socket saw."""
    async with visitor.socket(conversation) as ws:
        await asyncio.sleep(max(0.0, go - time.monotonic()))
        sent_at = time.monotonic()
        await send(ws, PROMPT.format(i=i))
        first_at = None
        answers: set[int] = set()
        deadline = sent_at + 60
        while True:
            frame = Frame(str(await asyncio.wait_for(ws.recv(), deadline - time.monotonic())), 0)
            answers |= {answer for answer, _, _ in frame.deltas}
            answers |= {
                int(a["id"].removeprefix("message-"))
                for a in frame.articles
                if a.get("data-role") == "assistant"
            }
            if first_at is None and frame.deltas:
                first_at = time.monotonic()
            finals = [a for a in frame.articles if a.get("data-status", "streaming") != "streaming"]
            if any(a.get("data-role") == "assistant" for a in finals):
                status = next(a["data-status"] for a in finals if a.get("data-role") == "assistant")
                return {
                    "i": i,
                    "answers": answers,
                    "status": status,
                    "ttft": None if first_at is None else first_at - sent_at,
                }


async def test_200_streams_across_two_workers_survive_a_redis_restart(
    load_workers: tuple[App, App],
    simulator: Simulator,
    redis_server: RedisServer,
    database: str,
) -> None:
    visitors = [Visitor(load_workers[i % 2]) for i in range(STREAMS)]
    try:
        conversations = await asyncio.gather(
            *(asyncio.to_thread(v.new_conversation) for v in visitors)
        )
        go = time.monotonic() + 2.0  # every socket open first; starts spread over one second
        tasks = [
            asyncio.create_task(one_stream(v, c, i, go + i / STREAMS))
            for i, (v, c) in enumerate(zip(visitors, conversations, strict=True))
        ]
        await asyncio.sleep(max(0.0, go + 1.5 - time.monotonic()))  # mid-run
        redis_server.kill()
        await asyncio.sleep(0.5)
        redis_server.start()
        results = await asyncio.gather(*tasks)
    finally:
        for visitor in visitors:
            visitor.close()

    # Each socket saw one answer, its own, and ended showing it complete.
    assert [r["status"] for r in results] == ["complete"] * STREAMS
    crossed = [r for r in results if len(r["answers"]) != 1]  # type: ignore[arg-type]
    assert crossed == []
    # Every saved answer is exactly what the simulator sent for that prompt.
    with psycopg.connect(database) as db:
        rows = db.execute(
            "SELECT u.content, a.content, a.status FROM chat_message a "
            "JOIN chat_message u ON u.conversation_id = a.conversation_id AND u.role = 'user' "
            "WHERE a.role = 'assistant'"
        ).fetchall()
    assert len(rows) == STREAMS
    for prompt, content, status in rows:
        marker = prompt.split()[2]
        sent = simulator.request_for(marker)["text"]
        assert status == "complete"
        assert (
            hashlib.sha256(content.encode()).hexdigest()
            == hashlib.sha256(sent.encode()).hexdigest()
        ), marker
    for worker in load_workers:
        log = worker.log()
        assert "ChannelFull" not in log
        assert all(
            "channels_redis" in line for line in log.splitlines() if " ERROR " in line
        )  # only the Redis client's own reconnect attempts
    ttfts = sorted(float(r["ttft"]) for r in results if r["ttft"] is not None)  # type: ignore[arg-type]
    p95 = ttfts[int(len(ttfts) * 0.95) - 1]
    print(
        f"\n{STREAMS} streams over two workers, Redis restarted mid-run: time to first token "
        f"p50 {statistics.median(ttfts) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
        f"(simulator ttft 200 ms)"
    )


@pytest.fixture(scope="module")
def sqlite_workers(
    simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[App, App]]:
    """Two processes writing one SQLite file (each with its own in-memory channel layer)."""
    shared = tmp_path_factory.mktemp("sqlite-shared") / "db.sqlite3"
    env = {
        "LLM_API_BASE": simulator.base_url,
        "DATABASE_URL": f"sqlite:///{shared}",
        "STREAM_SAVE_INTERVAL_MS": "100",  # saves ten times as often as the default
    }
    with two_workers(env, tmp_path_factory, "sqlite") as workers:
        yield workers


async def test_a_burst_of_200_new_messages_over_two_workers_all_answer(
    load_workers: tuple[App, App], simulator: Simulator
) -> None:
    """200 people press Enter within one second, half on each worker (after the Redis restart
    above, with Redis back): every one gets its own answer, whole. The time to first token is
    printed (the figure the README gives)."""
    visitors = [Visitor(load_workers[i % 2]) for i in range(STREAMS)]
    try:
        conversations = await asyncio.gather(
            *(asyncio.to_thread(v.new_conversation) for v in visitors)
        )
        go = time.monotonic() + 2.0  # every socket open first; starts spread over one second
        results = await asyncio.gather(
            *(
                one_stream(v, c, STREAMS + i, go + i / STREAMS)
                for i, (v, c) in enumerate(zip(visitors, conversations, strict=True))
            )
        )
    finally:
        for visitor in visitors:
            visitor.close()
    assert [r["status"] for r in results] == ["complete"] * STREAMS
    assert [r for r in results if len(r["answers"]) != 1] == []  # type: ignore[arg-type]
    ttfts = sorted(float(r["ttft"]) for r in results if r["ttft"] is not None)  # type: ignore[arg-type]
    print(
        f"\n{STREAMS} new messages within one second over two workers: time to first token "
        f"p50 {statistics.median(ttfts) * 1000:.0f} ms, "
        f"p95 {ttfts[int(len(ttfts) * 0.95) - 1] * 1000:.0f} ms (simulator ttft 200 ms)"
    )


async def test_sqlite_takes_concurrent_saves_without_locking(
    sqlite_workers: tuple[App, App], simulator: Simulator
) -> None:
    """WAL and a busy timeout: two writers saving 100 streams while pages are read."""
    streams = 100
    visitors = [Visitor(sqlite_workers[i % 2]) for i in range(streams)]
    try:
        conversations = await asyncio.gather(
            *(asyncio.to_thread(v.new_conversation) for v in visitors)
        )
        go = time.monotonic() + 1.0
        tasks = [
            asyncio.create_task(one_stream(v, c, 1000 + i, go + i / streams))
            for i, (v, c) in enumerate(zip(visitors, conversations, strict=True))
        ]

        def read_pages() -> None:  # readers beside the writers
            for v, c in list(zip(visitors, conversations, strict=True))[::5]:
                assert v.http.get(f"/c/{c}/").status_code == 200

        await asyncio.gather(*(asyncio.to_thread(read_pages) for _ in range(3)))
        results = await asyncio.gather(*tasks)
        exports = [v.export(c) for v, c in zip(visitors, conversations, strict=True)]
    finally:
        for visitor in visitors:
            visitor.close()
    assert [r["status"] for r in results] == ["complete"] * streams
    for i, export in enumerate(exports):
        marker = f"[t-load-{1000 + i:03d}]"
        assert export["messages"][-1]["content"] == simulator.request_for(marker)["text"]
    for worker in sqlite_workers:
        assert "database is locked" not in worker.log()
        assert " ERROR " not in worker.log()
