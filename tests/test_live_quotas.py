"""Quotas that hold, on real servers: a Stop cannot dodge the daily token limit, every request
of a comparison counts against the rate, and neither a burst of sends nor two workers let a
user past the cap on answers at once (or start two answers in one conversation).

One app (login required, small limits) against the simulator on loopback, over real sockets;
the two-worker tests use the machine's PostgreSQL and Redis (``workers``) and are skipped,
saying why, where those are not running.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from chat.accounts.usage import estimate_tokens
from simulator.prompt import estimate_prompt_tokens
from tests.support.app import App, start_app
from tests.support.frames import TRIAL, Frame, streamed_text
from tests.support.processes import ROOT, stop_process
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import PASSWORD, Visitor, answer_row, compare_socket, on, signed_in
from tests.support.waiting import until

pytestmark = pytest.mark.live

DAILY_LIMIT = 1000  # tokens a user may use a day
RATE_LIMIT = 10  # requests a user may make a minute
USERS = ("ada", "nat", "cat", "con")  # one per test: each has a day and a minute of its own


@pytest.fixture(scope="module")
def quotas(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app with logins, small limits and a second, DashScope-native provider."""
    tmp = tmp_path_factory.mktemp("quotas")
    env = {
        "LLM_API_BASE": simulator.base_url,
        "CHAT_REQUIRE_LOGIN": "1",
        "CHAT_DAILY_TOKEN_LIMIT": str(DAILY_LIMIT),
        "CHAT_RATE_LIMIT": str(RATE_LIMIT),
        "CHAT_MAX_CONCURRENT": "4",
    }
    manage_env = {
        **os.environ,
        **env,
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
    }
    create_users = "from django.contrib.auth.models import User\n" + "".join(
        f"User.objects.create_user({name!r}, password={PASSWORD!r})\n" for name in USERS
    )
    native = ["set_provider", "Native", "--protocol", "dashscope", "--base-url",
              f"{simulator.base}/api/v1", "--models", "qwen-plus"]  # fmt: skip
    for command in (["migrate", "--noinput"], ["shell", "-c", create_users], native):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=manage_env,
            check=True,
            capture_output=True,
        )
    instance, process = start_app(tmp, env)
    try:
        yield instance
    finally:
        stop_process(process)


def day_of(app: App, username: str) -> tuple[int, int, int, int]:
    """The user's usage today as saved: requests, prompt, completion, estimated tokens."""
    with sqlite3.connect(app.db_path) as db:
        row = db.execute(
            "SELECT requests, prompt_tokens, completion_tokens, estimated_tokens "
            "FROM chat_dailyusage JOIN auth_user ON auth_user.id = user_id WHERE username = ?",
            (username,),
        ).fetchone()
    return tuple(row)


async def stop_after(ws: Any, enough: int) -> tuple[int, str]:
    """Read an answer's frames until its text so far is worth ``enough`` estimated tokens, then
    press Stop; its id and the text streamed by then."""
    frames: list[Frame] = []
    answer_id = None
    while answer_id is None or estimate_tokens(streamed_text(frames, answer_id)) < enough:
        frame = Frame(str(await asyncio.wait_for(ws.recv(), 10)), time.monotonic())
        frames.append(frame)
        if answer_id is None and frame.deltas:
            answer_id = frame.deltas[0][0]
    await ws.send(json.dumps({"action": "stop", "answer": str(answer_id)}))
    return answer_id, streamed_text(frames, answer_id)


async def alert(ws: Any, timeout: float = 10) -> str:
    """The next alert this socket is shown, as the reader sees it."""
    deadline = time.monotonic() + timeout
    while True:
        frame = str(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if 'role="alert"' in frame:
            return html.unescape(re.sub(r"<[^>]+>", " ", frame))


async def outcome_of_send(ws: Any, timeout: float = 10) -> tuple[str, int | None]:
    """What became of this socket's send: ("started", answer id) when the turn it asked for
    arrived (the frame marked as sent by this socket), or ("refused", None) and the alert."""
    deadline = time.monotonic() + timeout
    while True:
        frame = Frame(str(await asyncio.wait_for(ws.recv(), deadline - time.monotonic())), 0)
        if 'role="alert"' in frame.html:
            return html.unescape(re.sub(r"<[^>]+>", " ", frame.html)), None
        if 'id="composer-sent"' in frame.html and "data-sent" in frame.html:
            streaming = [
                a for a in frame.articles
                if a.get("data-role") == "assistant" and a.get("data-status") == "streaming"
            ]  # fmt: skip
            return "started", int(streaming[0]["id"].removeprefix("message-"))


async def stop(ws: Any, answer_id: int) -> dict[str, str]:
    await ws.send(json.dumps({"action": "stop", "answer": str(answer_id)}))
    _, _, final = await collect_answer(ws, answer_id, timeout=15)
    return final


# --- Stop cannot dodge the daily token limit ----------------------------------------------------


async def test_a_stopped_answer_counts_an_estimate_and_the_daily_limit_then_refuses(
    quotas: App, simulator: Simulator
) -> None:
    """OpenAI-compatible servers report usage in the last chunk only: an answer stopped before
    it counts what it streamed, marked as an estimate, and the day's limit fills with it."""
    ada = signed_in(quotas, "ada")
    try:
        conversation = ada.new_conversation()
        async with ada.socket(conversation) as ws:
            await send(ws, "Stop me [t-q-stop]\n#sim tokens=6000 tps=1500 ttft=0.05")
            answer_id, shown = await stop_after(ws, DAILY_LIMIT)
            _, _, final = await collect_answer(ws, answer_id, timeout=15)
            assert final["data-status"] == "stopped"
            sent = await until(
                lambda: simulator.ended_as("[t-q-stop]", "disconnected"), "the upstream closed"
            )
            assert sent["tokens_sent"] < 6000  # stopped before the end: no usage chunk came
            row = answer_row(ada.export(conversation), answer_id)
            assert row["status"] == "stopped" and row["content"].startswith(shown)
            assert row["tokens_estimated"] is True
            estimate = estimate_tokens(row["reasoning"]) + estimate_tokens(row["content"])
            assert row["completion_tokens"] == estimate >= DAILY_LIMIT
            assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
            page = ada.http.get(f"/c/{conversation}/").text
            assert "completion / " in page and "(estimated)" in page
            assert day_of(quotas, "ada") == (
                1, row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]
            )  # fmt: skip

            # The next request is refused, and nothing of it is saved or sent.
            await send(ws, "One more [t-q-after-limit]\n#sim tokens=5 tps=100 ttft=0.01")
            refusal = await alert(ws)
        used = f"{row['total_tokens']:,}"
        assert f"You have used today's {DAILY_LIMIT:,} tokens ({used})" in refusal
        assert len(ada.export(conversation)["messages"]) == 2
        assert not any("[t-q-after-limit]" in str(r["messages"]) for r in simulator.requests())
    finally:
        ada.close()


async def test_a_stopped_native_answer_counts_the_providers_cumulative_usage(
    quotas: App, simulator: Simulator
) -> None:
    """DashScope's native events carry the usage so far on every event: a stopped answer
    counts the last one seen, the provider's own figures, not an estimate."""
    nat = signed_in(quotas, "nat")
    try:
        page = nat.http.get(f"/c/{nat.new_conversation()}/").text
        groups = dict(re.findall(r'<optgroup label="([^"]+)">(.*?)</optgroup>', page, re.S))
        choice = re.search(r'value="(p\d+:qwen-plus)"', groups["Native"])
        assert choice, groups
        conversation = nat.new_conversation(model=choice.group(1))
        async with nat.socket(conversation) as ws:
            await send(ws, "Stop me natively [t-q-native]\n#sim tokens=3000 tps=300 ttft=0.05")
            answer_id, _ = await stop_after(ws, 50)
            _, _, final = await collect_answer(ws, answer_id, timeout=15)
        assert final["data-status"] == "stopped"
        sent = await until(
            lambda: simulator.ended_as("[t-q-native]", "disconnected"), "the upstream closed"
        )
        assert sent["protocol"] == "dashscope" and sent["tokens_sent"] < 3000
        row = answer_row(nat.export(conversation), answer_id)
        assert row["tokens_estimated"] is False
        assert row["prompt_tokens"] == estimate_prompt_tokens(sent["messages"])  # the server's
        assert 0 < row["completion_tokens"] <= sent["tokens_sent"]
        assert day_of(quotas, "nat") == (1, row["prompt_tokens"], row["completion_tokens"], 0)
    finally:
        nat.close()


# --- Comparisons: every request counts ------------------------------------------------------------


async def read_run(ws: Any, timeout: float = 60) -> tuple[list[str], list[dict[str, str]]]:
    """A run's frames until it is done or refused, and the trials it began."""
    frames: list[str] = []
    deadline = time.monotonic() + timeout
    while not frames or not ('id="compare-done"' in frames[-1] or 'id="alerts"' in frames[-1]):
        frames.append(str(await asyncio.wait_for(ws.recv(), deadline - time.monotonic())))
    trials = [
        dict(re.findall(r'data-([\w-]+)="([^"]*)"', t)) for f in frames for t in TRIAL.findall(f)
    ]
    return frames, trials


async def test_every_trial_counts_against_the_rate_and_a_refused_one_ends_the_run(
    quotas: App, simulator: Simulator
) -> None:
    """Two runs that each fit the rate alone: checked once per run, both would make all their
    requests (12 against a limit of 10); counted per trial, the one that comes too late ends
    with the usual alert and keeps its trials done."""
    cat = signed_in(quotas, "cat")
    try:
        cat.http.get("/compare/")
        async with compare_socket(cat) as five, compare_socket(cat) as once:
            prompt = "Five [t-q-cmp5]\n#sim tokens=20 tps=20 ttft=0.05"  # 1 s a trial
            await five.send(json.dumps({"action": "run", "prompt": prompt, "model": "qwen-plus",
                                        "trials": "5"}))  # fmt: skip
            while not TRIAL.search(str(await asyncio.wait_for(five.recv(), 10))):
                pass  # its first trial has begun: 2 of 10 made
            prompt = "Once [t-q-cmp1]\n#sim tokens=5 tps=100 ttft=0.05"
            await once.send(json.dumps({"action": "run", "prompt": prompt, "model": "qwen-plus",
                                        "trials": "1"}))  # fmt: skip
            once_frames, once_trials = await read_run(once)
            five_frames, five_trials = await read_run(five)
        assert 'id="compare-done"' in once_frames[-1] and len(once_trials) == 1
        refusal = html.unescape(five_frames[-1])
        assert f"Slow down: at most {RATE_LIMIT} requests a minute" in refusal
        assert [t["trial"] for t in five_trials] == ["2", "3", "4"]  # after trial 1, read above
        requests = [str(r["messages"]) for r in simulator.requests()]
        assert sum("[t-q-cmp5]" in r for r in requests) == 8  # trials 1-4, both sides
        assert sum("[t-q-cmp1]" in r for r in requests) == 2
        run_id = five_trials[0]["run"]
        saved = cat.http.get(f"/compare/{run_id}.json").json()
        assert sorted(r["trial"] for r in saved["results"]) == [1, 1, 2, 2, 3, 3, 4, 4]
        assert all(r["status"] == "complete" for r in saved["results"])
    finally:
        cat.close()


# --- Answers at once ---------------------------------------------------------------------------


async def test_a_fifth_answer_at_once_is_refused_clearly_and_nothing_is_lost(
    quotas: App, simulator: Simulator
) -> None:
    con = signed_in(quotas, "con")
    try:
        async with AsyncExitStack() as stack:
            streaming: list[tuple[Any, int]] = []
            for n in range(4):  # four chats, each with a long answer streaming
                ws = await stack.enter_async_context(con.socket(con.new_conversation()))
                await send(ws, f"Long {n} [t-q-four-{n}]\n#sim tokens=900 tps=10 ttft=0.05")
                started, answer_id = await outcome_of_send(ws)
                assert started == "started" and answer_id is not None, started
                streaming.append((ws, answer_id))
            fifth = con.new_conversation()
            ws = await stack.enter_async_context(con.socket(fifth))
            await send(ws, "The fifth [t-q-fifth]\n#sim tokens=5 tps=100 ttft=0.01")
            refusal, _ = await outcome_of_send(ws)
            assert "You already have 4 answers streaming" in refusal, refusal
            assert con.export(fifth)["messages"] == []  # nothing saved, nothing sent
            assert not any("[t-q-fifth]" in str(r["messages"]) for r in simulator.requests())
            # One stops: the same message goes through.
            assert (await stop(*streaming.pop(0)))["data-status"] == "stopped"
            await send(ws, "The fifth [t-q-fifth]\n#sim tokens=5 tps=100 ttft=0.01")
            _, _, final = await collect_answer(ws)
            assert final["data-status"] == "complete"
            for socket, answer_id in streaming:
                await stop(socket, answer_id)
    finally:
        con.close()


async def test_the_cap_holds_for_sends_at_the_same_instant_on_two_workers(
    workers: tuple[App, App], simulator: Simulator
) -> None:
    """Two answers streaming, then four sends into four chats at once, two on each worker
    (a demo session, default cap 4): exactly two start, two are refused."""
    a, b = workers
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    tabs = (tab_a, tab_b)
    try:
        async with AsyncExitStack() as stack:
            running: list[tuple[Any, int]] = []
            for n in range(2):
                ws = await stack.enter_async_context(tabs[n].socket(tab_a.new_conversation()))
                await send(ws, f"Long {n} [t-q-w-long-{n}]\n#sim tokens=900 tps=10 ttft=0.05")
                started, answer_id = await outcome_of_send(ws)
                assert answer_id is not None, started
                running.append((ws, answer_id))
            racers = []
            for n in range(4):
                # A quick exchange, so that the next new chat is a new one.
                conversation = tab_a.new_conversation()
                ws = await stack.enter_async_context(tabs[n % 2].socket(conversation))
                await send(ws, f"Quick {n} [t-q-w-quick-{n}]\n#sim tokens=3 tps=200 ttft=0.01")
                await collect_answer(ws)
                racers.append(ws)
            await asyncio.gather(
                *(
                    send(ws, f"Race {n} [t-q-w-race-{n}]\n#sim tokens=900 tps=10 ttft=0.05")
                    for n, ws in enumerate(racers)
                )
            )
            outcomes = await asyncio.gather(*(outcome_of_send(ws) for ws in racers))
            started = [(ws, o[1]) for ws, o in zip(racers, outcomes, strict=True) if o[1]]
            refused = [o[0] for o in outcomes if o[1] is None]
            assert len(started) == 2, outcomes
            assert len(refused) == 2 and all("You already have 4 answers" in r for r in refused)
            sent = [str(r["messages"]) for r in simulator.requests()]
            assert sum("[t-q-w-race-" in r for r in sent) == 2
            for socket, answer_id in [*running, *started]:
                assert answer_id is not None
                await stop(socket, answer_id)
    finally:
        tab_a.close()
        tab_b.close()


async def test_two_sends_into_one_chat_at_the_same_instant_on_two_workers_start_one_answer(
    workers: tuple[App, App], simulator: Simulator
) -> None:
    """Both workers find the conversation idle only if nothing orders them: the row lock
    makes the second wait for the first's turn, then see its answer streaming."""
    a, b = workers
    tab_a = Visitor(a)
    tab_b = on(b, tab_a)
    try:
        for round_ in range(3):
            conversation = tab_a.new_conversation()
            async with tab_a.socket(conversation) as ws_a, tab_b.socket(conversation) as ws_b:
                markers = (f"[t-q-same-{round_}-a]", f"[t-q-same-{round_}-b]")
                await asyncio.gather(
                    *(
                        send(ws, f"At once {marker}\n#sim tokens=20 tps=50 ttft=0.05")
                        for ws, marker in zip((ws_a, ws_b), markers, strict=True)
                    )
                )
                outcomes = await asyncio.gather(outcome_of_send(ws_a), outcome_of_send(ws_b))
                [answer_id] = [o[1] for o in outcomes if o[1]]
                [refusal] = [o[0] for o in outcomes if o[1] is None]
                assert "An answer is still streaming" in refusal
                # Both tabs show the one answer to its end.
                finals = await asyncio.gather(
                    collect_answer(ws_a, answer_id), collect_answer(ws_b, answer_id)
                )
            assert [final["data-status"] for _, _, final in finals] == ["complete", "complete"]
            messages = tab_b.export(conversation)["messages"]
            assert [m["role"] for m in messages] == ["user", "assistant"]
            sent = [str(r["messages"]) for r in simulator.requests()]
            assert sum(any(m in r for m in markers) for r in sent) == 1
    finally:
        tab_a.close()
        tab_b.close()
