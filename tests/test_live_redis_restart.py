"""Redis restarting under two workers: the channel layer loses what it carried meanwhile, yet
every answer is generated once, saved exactly, and every socket ends showing it.

The channel layer is only a courier. Frames are numbered per answer: a socket that sees a gap
asks for the answer so far and continues from there; one whose answer falls silent asks the
database whether it ended. This module runs its own redis-server on a free port so it can kill
and restart it; PostgreSQL is the machine's (see test_live_team).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.app import App, two_workers
from tests.support.frames import Frame, assert_continues_a_snapshot, streamed_text
from tests.support.redis_server import RedisServer
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, first_delta, send
from tests.support.visitor import Visitor, on
from tests.support.waiting import until

pytestmark = [pytest.mark.live, pytest.mark.load]


@pytest.fixture(scope="module")
def redis_workers(
    simulator: Simulator,
    database: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[App, App]]:
    """Two workers on the machine's PostgreSQL and this module's own Redis."""
    env = {
        "LLM_API_BASE": simulator.base_url,
        "DATABASE_URL": database,
        "REDIS_URL": redis_server.url,
    }
    with two_workers(env, tmp_path_factory) as workers:
        yield workers


def assert_refilled(frames: list[Frame], answer_id: int) -> None:
    """After the gap, the socket got the answer so far (a snapshot at seq S), then S+1, S+2, …
    with no gap and no repeat: nothing the user reads is lost or doubled."""
    snapshots = [
        (index, int(article["data-seq"]))
        for index, f in enumerate(frames)
        for article in f.articles
        if article.get("id") == f"message-{answer_id}" and "data-seq" in article
    ]
    assert snapshots, "no refill after the gap"
    index, start = snapshots[-1]
    seqs = [seq for f in frames[index + 1 :] for answer, seq, _ in f.deltas if answer == answer_id]
    assert seqs == list(range(start + 1, start + 1 + len(seqs)))


def assert_every_delta_live(frames: list[Frame], answer_id: int) -> None:
    """A socket on the worker generating the answer gets its frames directly, not through
    Redis: every delta arrives, in order, with no gap and no snapshot, Redis or not."""
    seqs = [seq for f in frames for answer, seq, _ in f.deltas if answer == answer_id]
    assert seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    refills = [a for f in frames for a in f.articles if a.get("id") == f"message-{answer_id}"]
    assert all("data-seq" not in article for article in refills)


def redis_complaints(worker: App) -> list[str]:
    """What the worker's Redis client (channels-redis) logged as errors: it does so each time
    Redis goes away under a subscription ("Unexpected exception in receive task")."""
    return [line for line in worker.log().splitlines() if " ERROR channels_redis" in line]


def assert_only_redis_complained(*workers: App) -> None:
    """While Redis was away, channels-redis logged its reconnect attempts as errors (and Django
    each 503 of /healthz meanwhile); nothing of ours failed (a refused frame is a warning, a
    refill or a new subscription information)."""
    expected = ("channels_redis", "Service Unavailable: /healthz")
    for worker in workers:
        errors = [line for line in worker.log().splitlines() if " ERROR " in line]
        assert all(any(word in line for word in expected) for line in errors), errors


async def test_redis_restarting_mid_answer_loses_nothing(
    redis_workers: tuple[App, App], simulator: Simulator, redis_server: RedisServer
) -> None:
    a, b = redis_workers
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    try:
        conversation = tab_a.new_conversation()
        async with tab_a.socket(conversation) as ws_a, tab_b.socket(conversation) as ws_b:
            await send(
                ws_a, "Through a restart [t-redis-restart]\n#sim tokens=400 tps=60 ttft=0.05"
            )
            answer_id = await first_delta(ws_b)
            redis_server.kill()
            await asyncio.sleep(1.0)  # frames published now are lost
            redis_server.start()
            _, frames_a, final_a = await collect_answer(ws_a, answer_id, timeout=30)
            _, frames_b, final_b = await collect_answer(ws_b, answer_id, timeout=30)
            sent = simulator.request_for("[t-redis-restart]")
            assert final_a["data-status"] == final_b["data-status"] == "complete"
            assert tab_b.export(conversation)["messages"][-1]["content"] == sent["text"]
            assert_every_delta_live(frames_a, answer_id)  # the generating worker's own socket
            assert_refilled(frames_b, answer_id)  # the other worker's, via a snapshot request

            # After the restart the layer works again: the next answer streams live to both.
            await send(ws_b, "And after it [t-redis-after]\n#sim tokens=40 tps=80 ttft=0.05")
            next_id, frames_b, final_b = await collect_answer(ws_b, timeout=15)
            _, frames_a, final_a = await collect_answer(ws_a, next_id, timeout=15)
        sent = simulator.request_for("[t-redis-after]")
        assert streamed_text(frames_a, next_id) == streamed_text(frames_b, next_id) == sent["text"]
        assert final_a["data-status"] == final_b["data-status"] == "complete"
    finally:
        tab_a.close()
        tab_b.close()


async def test_an_answer_ending_while_redis_is_down_still_shows_its_end(
    redis_workers: tuple[App, App], simulator: Simulator, redis_server: RedisServer
) -> None:
    """The final frame itself is lost: the silent socket asks the database, which has it."""
    a, b = redis_workers
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    try:
        conversation = tab_a.new_conversation()
        async with tab_b.socket(conversation) as ws_b:
            async with tab_a.socket(conversation) as ws_a:
                await send(ws_a, "End unseen [t-redis-down-end]\n#sim tokens=60 tps=60 ttft=0.05")
            answer_id = await first_delta(ws_b)
            redis_server.kill()
            try:
                _, _, final = await collect_answer(ws_b, answer_id, timeout=15)
            finally:
                redis_server.start()
        sent = simulator.request_for("[t-redis-down-end]")
        assert final["data-status"] == "complete"
        assert tab_b.export(conversation)["messages"][-1]["content"] == sent["text"]
    finally:
        tab_a.close()
        tab_b.close()


@pytest.fixture(scope="module")
def workers_of_their_own(
    simulator: Simulator,
    database: str,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[App, App]]:
    """Two workers that reach Redis as different users: one can be cut off alone."""
    env = {"LLM_API_BASE": simulator.base_url, "DATABASE_URL": database}
    with two_workers(
        env,
        tmp_path_factory,
        name="own",
        per_side=lambda side: {"REDIS_URL": redis_server.user_url(f"worker-{side}")},
    ) as workers:
        yield workers


async def test_a_snapshot_request_lost_on_the_way_is_asked_again(
    workers_of_their_own: tuple[App, App], simulator: Simulator, redis_server: RedisServer
) -> None:
    """The generating worker is cut off from Redis just as a socket on the other worker asks
    it for the answer so far: that request is lost, so the socket asks again once the worker
    is back, and shows the text so far, then every later frame once (not later frames after
    a hole in the text)."""
    a, b = workers_of_their_own
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    try:
        conversation = tab_a.new_conversation()
        async with tab_a.socket(conversation) as ws_a:
            await send(ws_a, "Ask twice [t-lost-request]\n#sim tokens=300 tps=40 ttft=0.05")
            answer_id = await first_delta(ws_a)
            redis_server.allow_channels("worker-a", False)
            try:
                async with tab_b.socket(conversation) as ws_b:
                    await asyncio.sleep(1.0)  # b asked on connect; a could not hear it
                    redis_server.allow_channels("worker-a", True)
                    _, late, final = await collect_answer(ws_b, answer_id, timeout=30)
            finally:
                redis_server.allow_channels("worker-a", True)
        assert_continues_a_snapshot(late, answer_id)
        assert f"no snapshot of answer {answer_id} yet: asking again" in b.log()
        assert final["data-status"] == "complete"
        sent = simulator.request_for("[t-lost-request]")
        assert tab_b.export(conversation)["messages"][-1]["content"] == sent["text"]
        assert_only_redis_complained(a, b)
    finally:
        tab_a.close()
        tab_b.close()


async def health_becomes(app: App, status: int, within: float) -> dict[str, str]:
    """Polls /healthz until it answers ``status``; returns what it said."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=app.url) as client:
        while True:
            response = await client.get("/healthz")
            if response.status_code == status or time.monotonic() > deadline:
                assert response.status_code == status, response.text
                return dict(response.json())
            await asyncio.sleep(0.5)


async def test_a_worker_refused_its_subscriptions_hears_again_by_itself(
    workers_of_their_own: tuple[App, App], simulator: Simulator, redis_server: RedisServer
) -> None:
    """Redis refuses a worker's subscriptions for a moment (its channel permissions revoked,
    then restored): redis-py stays connected, subscribed to nothing, and says nothing. The
    worker notices its own probe missing and subscribes again, so its sockets see answers
    stream live again instead of only their final text."""
    a, _ = workers_of_their_own
    tab = Visitor(a)
    try:
        conversation = tab.new_conversation()
        async with tab.socket(conversation) as ws:
            await asyncio.sleep(0.5)  # the worker's listener (and probe) start with a socket
            redis_server.allow_channels("worker-a", False)
            # Redis still answers a PING, but the worker's probes are refused: a balancer
            # checking /healthz stops sending people to it.
            assert await health_becomes(a, 503, within=20) == {"status": "unavailable"}
            redis_server.allow_channels("worker-a", True, reconnect=False)
            assert await health_becomes(a, 200, within=20) == {"status": "ok"}
            await send(ws, "Deaf no more [t-deaf]\n#sim tokens=600 tps=40 ttft=0.05")
            answer_id, frames, final = await collect_answer(ws, timeout=40)
        sent = simulator.request_for("[t-deaf]")
        assert final["data-status"] == "complete"
        assert tab.export(conversation)["messages"][-1]["content"] == sent["text"]
        live = [f.at for f in frames if any(shown == answer_id for shown, _, _ in f.deltas)]
        assert live, "no live frame: the worker never heard its answer again"
        assert frames[-1].at - live[0] > 3  # streaming again well before the end (15 s)
        assert "stopped hearing the channel layer" in a.log()
        assert_only_redis_complained(a)
    finally:
        tab.close()


async def restart_redis_mid_answer(workers: tuple[App, App], redis_server: RedisServer) -> None:
    """Kill Redis while an answer streams to a socket on each worker (so both are subscribed),
    start it again once both workers' Redis clients have noticed, and let the answer end."""
    a, b = workers
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    try:
        conversation = tab_a.new_conversation()
        async with tab_a.socket(conversation) as ws_a, tab_b.socket(conversation) as ws_b:
            await send(
                ws_a, "Under a restart [t-redis-complaint]\n#sim tokens=200 tps=60 ttft=0.05"
            )
            answer_id = await first_delta(ws_b)  # b hears a's answer: both are subscribed
            redis_server.kill()
            try:
                await until(
                    lambda: all(redis_complaints(worker) for worker in workers),
                    "both workers' Redis clients noticed Redis going away",
                )
            finally:
                redis_server.start()
            for ws in (ws_a, ws_b):
                _, _, final = await collect_answer(ws, answer_id, timeout=30)
                assert final["data-status"] == "complete"
    finally:
        tab_a.close()
        tab_b.close()


@pytest.fixture
async def redis_restarted(
    redis_workers: tuple[App, App], redis_server: RedisServer
) -> tuple[App, App]:
    """``redis_workers`` once Redis has gone away under both and come back. The tests above
    do that mid-answer; where they did not run (this test alone, or they were deselected)
    it is done here, so the log read below always holds a restart."""
    if not all(redis_complaints(worker) for worker in redis_workers):
        await restart_redis_mid_answer(redis_workers, redis_server)
    return redis_workers


def test_only_the_redis_client_complained(redis_restarted: tuple[App, App]) -> None:
    """Both workers lived through Redis restarting: each one's Redis client said so, and
    nothing of ours logged an error."""
    for worker in redis_restarted:
        assert redis_complaints(worker), "no trace of the Redis restart in the worker's log"
    assert_only_redis_complained(*redis_restarted)
