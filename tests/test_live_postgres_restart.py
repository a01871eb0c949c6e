"""PostgreSQL stopped mid-answer and started again: nothing is lost.

An answer's text streams to its sockets straight from the generating task, so it keeps coming
while the database is away; the final save waits for the database (``save_final_retrying``)
and only then do the sockets get the final frame. Given up (the database away for longer than
STREAM_FINAL_SAVE_TIMEOUT_MS), the answer is settled as interrupted once the database is back.

This module runs a private PostgreSQL cluster (``tests.support.postgres_server``) on a free port, so
it can stop and start it; the machine's own PostgreSQL is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.app import App, start_app
from tests.support.inbox import Inbox
from tests.support.postgres_server import PostgresServer
from tests.support.processes import stop_process
from tests.support.simulator import Simulator
from tests.support.sockets import send
from tests.support.visitor import Visitor
from tests.support.waiting import until

pytestmark = pytest.mark.live

REFUSED = "the database refused the final save"


@pytest.fixture(scope="module")
def created_database(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("streamside")


@pytest.fixture
def private_database(postgres_server: PostgresServer, created_database: str) -> str:
    """The module's database, its server running (a test that failed may have left it down)."""
    if not postgres_server.running():
        postgres_server.start()
    return created_database


@contextlib.contextmanager
def worker(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str]
) -> Iterator[tuple[App, subprocess.Popen[bytes]]]:
    app, process = start_app(tmp_path_factory.mktemp(name), env)  # migrates the database first
    try:
        yield app, process
    finally:
        stop_process(process)


@pytest.fixture
def patient_worker(
    simulator: Simulator, private_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[App, subprocess.Popen[bytes]]]:
    """A worker with the default final-save timeout (minutes)."""
    env = {"LLM_API_BASE": simulator.base_url, "DATABASE_URL": private_database}
    with worker(tmp_path_factory, "patient", env) as started:
        yield started


@pytest.fixture
def impatient_worker(
    simulator: Simulator, private_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[App, subprocess.Popen[bytes]]]:
    """A worker that gives a final save up after 2 s, and settles answers silent for 1 s."""
    env = {
        "LLM_API_BASE": simulator.base_url,
        "DATABASE_URL": private_database,
        "STREAM_FINAL_SAVE_TIMEOUT_MS": "2000",
        "STREAM_ORPHAN_AFTER_MS": "1000",
    }
    with worker(tmp_path_factory, "impatient", env) as started:
        yield started


def saved_row(database: str, answer_id: int) -> dict[str, Any]:
    with psycopg.connect(database, connect_timeout=5) as connection:
        cursor = connection.execute(
            "SELECT content, status, error_kind FROM chat_message WHERE id = %s", (answer_id,)
        )
        content, status, error_kind = cursor.fetchone()  # type: ignore[misc]
    return {"content": content, "status": status, "error_kind": error_kind}


def finished_upstream(simulator: Simulator, marker: str) -> dict[str, Any] | None:
    """The simulator's log of the request, once it has sent all it had to send."""
    entry = simulator.request_for(marker)
    return entry if entry["finished_at"] is not None else None


def log_lines(app: App, level: str, since: int = 0) -> list[str]:
    return [line for line in app.log()[since:].splitlines() if f" {level} " in line]


async def test_postgres_restarting_mid_answer_loses_nothing(
    patient_worker: tuple[App, subprocess.Popen[bytes]],
    simulator: Simulator,
    postgres_server: PostgresServer,
    private_database: str,
) -> None:
    app, process = patient_worker
    tab = Visitor(app)
    try:
        conversation = tab.new_conversation()
        async with tab.socket(conversation) as ws:
            inbox = Inbox(ws)
            marker = "[t-pg-restart]"
            await send(ws, f"Through a database restart {marker}\n#sim tokens=400 tps=50 ttft=0.05")
            answer_id = await until(inbox.first_answer, "the answer's first text", 15)
            await asyncio.to_thread(postgres_server.stop, "fast")
            assert finished_upstream(simulator, marker) is None  # stopped mid-answer

            # The text keeps streaming live; the upstream ends; the final save is refused.
            sent = await until(lambda: finished_upstream(simulator, marker), "upstream end", 30)
            await until(lambda: inbox.text(answer_id) == sent["text"], "all the text, live")
            await until(lambda: REFUSED in app.log(), "the refused final save's warning")
            assert inbox.final(answer_id) is None  # not shown final while it is not saved
            assert not postgres_server.running()

            restarting = time.monotonic()
            await asyncio.to_thread(postgres_server.start)
            frame, final = await until(lambda: inbox.final(answer_id), "the final frame", 30)
            assert frame.at > restarting
            assert final["data-status"] == "complete"
            assert saved_row(private_database, answer_id) == {
                "content": sent["text"], "status": "complete", "error_kind": "",
            }  # fmt: skip
            assert tab.export(conversation)["messages"][-1]["content"] == sent["text"]
            log = app.log()
            assert log.count(REFUSED) == 1
            assert re.search(rf"answer {answer_id}: saved after \d+ failed attempts", log)
            assert "Traceback" not in log
            assert not log_lines(app, "ERROR")

            # PostgreSQL restarts again while the worker is idle: the connection that saved the
            # answer dies unused, and the health check replaces it before the next answer's
            # first query, which streams and saves without a complaint.
            since, after = len(log), len(inbox.frames)
            await asyncio.to_thread(postgres_server.stop, "fast")
            await asyncio.to_thread(postgres_server.start)
            marker = "[t-pg-after]"
            await send(ws, f"After the restart {marker}\n#sim tokens=60 tps=80 ttft=0.05")
            next_id = await until(lambda: inbox.first_answer(after), "the next answer", 15)
            _, final = await until(lambda: inbox.final(next_id), "the next final frame", 20)
            sent = simulator.request_for(marker)
            assert final["data-status"] == "complete"
            assert inbox.text(next_id) == sent["text"]
            assert saved_row(private_database, next_id)["content"] == sent["text"]
            assert not log_lines(app, "WARNING", since) and not log_lines(app, "ERROR", since)
            inbox.stop()
        assert process.poll() is None
    finally:
        tab.close()


async def test_a_database_away_too_long_leaves_the_answer_interrupted(
    impatient_worker: tuple[App, subprocess.Popen[bytes]],
    simulator: Simulator,
    postgres_server: PostgresServer,
    private_database: str,
) -> None:
    """The final save is given up (one error line); the worker goes on, and once the database
    is back the answer shows as interrupted with the text saved before, not "streaming"."""
    app, process = impatient_worker
    tab = Visitor(app)
    try:
        conversation = tab.new_conversation()
        async with tab.socket(conversation) as ws:
            inbox = Inbox(ws)
            marker = "[t-pg-gone]"
            await send(ws, f"Down for too long {marker}\n#sim tokens=200 tps=50 ttft=0.05")
            answer_id = await until(inbox.first_answer, "the answer's first text", 15)
            # Some of its text was saved by the progress saver before the database went away.
            await until(
                lambda: saved_row(private_database, answer_id)["content"], "a progress save"
            )
            await asyncio.to_thread(postgres_server.stop, "immediate")
            assert finished_upstream(simulator, marker) is None  # stopped mid-answer

            sent = await until(lambda: finished_upstream(simulator, marker), "upstream end", 30)
            await until(lambda: inbox.text(answer_id) == sent["text"], "all the text, live")
            await until(lambda: "giving up" in app.log(), "the final save given up")
            assert inbox.final(answer_id) is None
            assert process.poll() is None  # the worker goes on
            inbox.stop()
        await asyncio.to_thread(postgres_server.start)

        # A socket opening now (the page reconnecting) is shown the answer interrupted.
        async with tab.socket(conversation) as ws:
            inbox = Inbox(ws)
            _, final = await until(lambda: inbox.final(answer_id), "the interrupted answer", 20)
            inbox.stop()
        assert final["data-status"] == "error"
        assert final["data-outcome"] == "interrupted"
        row = saved_row(private_database, answer_id)
        assert (row["status"], row["error_kind"]) == ("error", "interrupted")
        assert row["content"] and sent["text"].startswith(row["content"])  # the text saved

        errors = log_lines(app, "ERROR")
        assert len(errors) == 1, errors
        assert f"answer {answer_id}: the final save failed for" in errors[0]
        assert app.log().count(REFUSED) == 1
        assert "Traceback" not in app.log()
        assert process.poll() is None
    finally:
        tab.close()
