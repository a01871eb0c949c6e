"""Two Daphne workers sharing PostgreSQL and Redis, as a team deploys them: an answer generated
on one worker streams to sockets on both, and Stop works from either.

Runs against the machine's real PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379); where
they are not running these tests are skipped and say so, unless STREAMSIDE_REQUIRE_SERVICES=1
(as in CI), where their absence fails the run.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from tests.support.app import App, start_app
from tests.support.frames import TRIAL, Frame, assert_continues_a_snapshot, streamed_text
from tests.support.processes import stop_process
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, first_delta, send
from tests.support.visitor import Visitor, compare_socket, on
from tests.support.waiting import until

pytestmark = pytest.mark.live


async def test_an_answer_streams_to_sockets_on_both_workers(
    workers: tuple[App, App], simulator: Simulator
) -> None:
    a, b = workers
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    try:
        conversation = tab_a.new_conversation()
        async with tab_a.socket(conversation) as ws_a, tab_b.socket(conversation) as ws_b:
            await send(ws_a, "Both tabs [t-two-workers]\n#sim tokens=60 tps=60 ttft=0.05")
            answer_id, frames_a, final_a = await collect_answer(ws_a)
            _, frames_b, final_b = await collect_answer(ws_b, answer_id)
        sent = simulator.request_for("[t-two-workers]")
        assert streamed_text(frames_a, answer_id) == sent["text"]
        assert streamed_text(frames_b, answer_id) == sent["text"]  # via Redis, from worker a
        assert final_a["data-status"] == final_b["data-status"] == "complete"
        saved = tab_b.export(conversation)["messages"][-1]  # read through worker b
        assert saved["content"] == sent["text"]
    finally:
        tab_a.close()
        tab_b.close()


async def test_stop_from_the_other_worker(workers: tuple[App, App], simulator: Simulator) -> None:
    a, b = workers
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    try:
        conversation = tab_a.new_conversation()
        async with tab_a.socket(conversation) as ws_a, tab_b.socket(conversation) as ws_b:
            await send(ws_a, "Stop me elsewhere [t-stop-b]\n#sim tokens=600 tps=40 ttft=0.05")
            answer_id = await first_delta(ws_b)  # worker b's socket sees the answer begin
            # Worker b does not run it, yet knows it is alive (its heartbeat), not orphaned.
            page = tab_b.http.get(f"/c/{conversation}/").text
            assert f'id="message-{answer_id}" class="message message--assistant"' in page
            assert 'data-status="streaming"' in page
            assert ">Stop</button>" in page  # and it can be stopped from here
            await ws_b.send(json.dumps({"action": "stop", "answer": str(answer_id)}))
            _, _, final = await collect_answer(ws_a, answer_id, timeout=10)
        assert final["data-status"] == "stopped"
        sent = simulator.request_for("[t-stop-b]")
        assert sent["outcome"] == "disconnected" and sent["tokens_sent"] < 600
        saved = tab_a.export(conversation)["messages"][-1]
        assert saved["status"] == "stopped" and sent["text"].startswith(saved["content"])
    finally:
        tab_a.close()
        tab_b.close()


async def test_a_socket_joining_mid_answer_on_the_other_worker_misses_nothing(
    workers: tuple[App, App], simulator: Simulator
) -> None:
    """A reload or reconnect that lands on the worker not generating the answer: it gets the
    text so far from the generating worker, then every later frame once, in order."""
    a, b = workers
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    try:
        conversation = tab_a.new_conversation()
        async with tab_a.socket(conversation) as ws_a:
            await send(ws_a, "Join late [t-join-b]\n#sim tokens=160 tps=40 ttft=0.05")
            answer_id, frames, _ = None, [], None
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                frame = Frame(str(await asyncio.wait_for(ws_a.recv(), 5)), time.monotonic())
                frames.append(frame)
                if frame.deltas and answer_id is None:
                    answer_id = frame.deltas[0][0]
            assert answer_id is not None, [f.html[:300] for f in frames]
            async with tab_b.socket(conversation) as ws_b:
                _, late, final = await collect_answer(ws_b, answer_id, timeout=15)
        assert_continues_a_snapshot(late, answer_id)
        assert final["data-status"] == "complete"
        sent = simulator.request_for("[t-join-b]")
        assert tab_b.export(conversation)["messages"][-1]["content"] == sent["text"]
    finally:
        tab_a.close()
        tab_b.close()


async def test_deleting_on_the_other_worker_stops_the_answer(
    workers: tuple[App, App], simulator: Simulator
) -> None:
    a, b = workers
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    try:
        conversation = tab_a.new_conversation()
        async with tab_a.socket(conversation) as ws_a:
            await send(ws_a, "Delete me elsewhere [t-delete-b]\n#sim tokens=600 tps=40 ttft=0.05")
            while not Frame(str(await asyncio.wait_for(ws_a.recv(), 10)), 0).deltas:
                pass
            token = tab_b.http.cookies.get("csrftoken", "")
            deleted = tab_b.http.post(
                f"/c/{conversation}/delete/", headers={"X-CSRFToken": token}
            )  # served by worker b; the answer runs on a
            assert deleted.status_code == 200
            # Worker a hears of it through Redis and closes the upstream request: well before
            # the 15 s the answer would take (a loaded machine may take a while to get there).
            sent = await until(
                lambda: simulator.ended_as("[t-delete-b]", "disconnected"),
                "the upstream request was closed",
                within=10,
            )
        assert sent["tokens_sent"] < 600
        assert tab_a.http.get(f"/c/{conversation}/").status_code == 404
    finally:
        tab_a.close()
        tab_b.close()


async def test_a_comparison_followed_on_the_other_worker_misses_nothing(
    workers: tuple[App, App], simulator: Simulator
) -> None:
    """A comparison's permalink opened on the worker not running it, mid-run."""
    a, b = workers
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    try:
        tab_a.http.get("/compare/")
        async with compare_socket(tab_a) as ws_a:
            prompt = "Race elsewhere [t-cmp-b]\n#sim tokens=120 tps=40 ttft=0.05"
            await ws_a.send(
                json.dumps({"action": "run", "prompt": prompt, "model": "qwen-plus", "trials": 1})
            )
            trial: dict[str, str] = {}
            answer_seen = False
            while not answer_seen:
                raw = str(await asyncio.wait_for(ws_a.recv(), 10))
                for tag in TRIAL.findall(raw):
                    trial = dict(re.findall(r'data-([\w-]+)="([^"]*)"', tag))
                answer_seen = bool(trial) and Frame(raw, 0).deltas != []
            on_answer = int(trial["stream-answer"])
            await asyncio.sleep(0.5)
            async with compare_socket(tab_b, int(trial["run"])) as ws_b:
                _, late, final = await collect_answer(ws_b, on_answer, timeout=15)
        assert_continues_a_snapshot(late, on_answer)
        assert final["data-status"] == "complete"
    finally:
        tab_a.close()
        tab_b.close()


def test_the_workers_logged_no_error(workers: tuple[App, App]) -> None:
    for worker in workers:
        assert " ERROR " not in worker.log(), worker.log()[-3000:]


async def test_two_deployments_sharing_a_redis_server_do_not_hear_each_other(
    simulator: Simulator, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Redis pub/sub ignores the database number: without a per-deployment prefix, staging's
    "conversation-1" would stream into production's "conversation-1"."""
    env = {"LLM_API_BASE": simulator.base_url, "REDIS_URL": redis_url}
    first, first_process = start_app(tmp_path_factory.mktemp("deployment-1"), env)
    second, second_process = start_app(tmp_path_factory.mktemp("deployment-2"), env)
    ours, theirs = Visitor(first), Visitor(second)
    try:
        conversation = ours.new_conversation()
        assert theirs.new_conversation() == conversation  # both databases start at 1
        async with ours.socket(conversation) as ws, theirs.socket(conversation) as other:
            await send(ws, "Only ours [t-two-deployments]\n#sim tokens=30 tps=100 ttft=0.05")
            await collect_answer(ws)
            with pytest.raises(TimeoutError):
                raw = await asyncio.wait_for(other.recv(), 1.0)
                pytest.fail(f"the other deployment heard: {str(raw)[:200]}")
    finally:
        ours.close()
        theirs.close()
        stop_process(first_process)
        stop_process(second_process)
