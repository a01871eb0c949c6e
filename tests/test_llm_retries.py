"""Asking again before the first token, never after, and one answer's overall deadline.

Against the real simulator over loopback: ``fault_times=N`` makes a fault hit only the first N
requests of a message, so the simulator's request log shows every attempt the client made.
Backoffs are shortened with ``retry_backoff``; Retry-After waits are real seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from chat.llm import (
    ChatClient,
    Event,
    Failed,
    Finished,
    Retrying,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamStreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    make_http_client,
)
from tests.support.events import failure, text_of
from tests.support.processes import free_port
from tests.support.simulator import Simulator
from tests.support.waiting import throughout, until

FAST = "tokens=12 tps=400 ttft=0.01"
KEY = "sk-retry-Secret0123456789"
# "At once", in seconds, for a client that must not wait: well under the shortest wait it must
# skip here (3 s), with room for a loaded two-core machine to hold a process back a while.
AT_ONCE = 2.0

pytestmark = pytest.mark.live  # the simulator runs under Daphne in its own process


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = make_http_client(connect_timeout=2.0, read_timeout=5.0)
    try:
        yield client
    finally:
        await client.aclose()


def client_for(
    http: httpx.AsyncClient, simulator: Simulator, protocol: str = "openai", **kwargs: Any
) -> ChatClient:
    base = f"http://127.0.0.1:{simulator.port}/{'v1' if protocol == 'openai' else 'api/v1'}"
    kwargs.setdefault("retry_backoff", 0.05)
    return ChatClient(http, base, KEY, protocol=protocol, **kwargs)


def prompt(marker: str, directive: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Tell me about retries {marker}\n#sim {directive}"}]


async def ask(
    client: ChatClient, marker: str, directive: str, *, stream: bool = True
) -> tuple[list[Event], float]:
    started = time.monotonic()
    events = [
        event
        async for event in client.stream_reply(
            "qwen-plus", prompt(marker, directive), stream=stream
        )
    ]
    return events, time.monotonic() - started


def attempts(simulator: Simulator, marker: str) -> list[dict[str, Any]]:
    """Every request the simulator saw for this marker, oldest first."""
    found = []
    for entry in simulator.requests():
        users = [m for m in entry["messages"] if m["role"] == "user"]
        if users and marker in users[-1]["content"]:
            found.append(entry)
    return found


def finished(events: list[Event]) -> bool:
    return any(isinstance(e, Finished) for e in events) and not isinstance(events[-1], Failed)


# --------------------------------------------------------------------------------------------
# Asked again before the first token


async def test_429_with_retry_after_waits_that_long_then_answers(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    marker = "[r-429-then-ok]"
    events, elapsed = await ask(
        client_for(http, simulator), marker, f"{FAST} fault=429 retry_after=1 fault_times=1"
    )
    first, second = attempts(simulator, marker)
    assert first["outcome"] == "fault:429" and second["outcome"] == "complete"
    assert finished(events)
    assert text_of(events) == second["text"] and second["text"]
    # The caller heard why the first word is late, and for how long, before it arrived.
    assert events[0] == Retrying(attempt=1, retries=2, wait=1.0, reason="HTTP 429 (limit_requests)")
    waited = second["started_at"] - first["finished_at"]
    # Retry-After: 1, not the 0.05 s backoff; and not twice that (the upper bound leaves a
    # loaded machine most of a second to send the second request).
    assert 0.95 <= waited < 1.9, waited
    assert elapsed < 1 + 2 * AT_ONCE  # the wait and two quick requests


@pytest.mark.parametrize("protocol", ["openai", "dashscope"])
async def test_503_twice_then_an_answer(
    http: httpx.AsyncClient,
    simulator: Simulator,
    protocol: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chat.llm")
    marker = f"[r-503-twice-{protocol}]"
    client = client_for(http, simulator, protocol, retries=2)
    events, _ = await ask(client, marker, f"{FAST} fault=503 fault_times=2")
    tries = attempts(simulator, marker)
    assert [t["outcome"] for t in tries] == ["fault:503", "fault:503", "complete"]
    assert [t["attempt"] for t in tries] == [1, 2, 3]
    assert finished(events)
    assert text_of(events) == tries[-1]["text"]
    told = [(e.attempt, e.retries, e.reason[:8]) for e in events if isinstance(e, Retrying)]
    assert told == [(1, 2, "HTTP 503"), (2, 2, "HTTP 503")]
    assert all(isinstance(e, Retrying) for e in events[:2])  # before any text
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2
    assert all(r.levelno == logging.INFO for r in caplog.records if "retry" in r.getMessage())
    assert "HTTP 503" in retries[0] and "retry 1 of 2 in" in retries[0]
    for line in retries:  # host:port only: no path, no key, no headers
        assert f"127.0.0.1:{simulator.port}:" in line
        assert "/v1" not in line and KEY not in line and "Bearer" not in line


async def test_503_more_times_than_retries_is_the_503(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    marker = "[r-503-thrice]"
    client = client_for(http, simulator, retries=2)
    events, _ = await ask(client, marker, f"{FAST} fault=503 fault_times=3")
    error = failure(events)
    assert isinstance(error, UpstreamServerError) and error.status == 503
    assert error.message.startswith("The model server failed (HTTP 503)")
    assert [type(e) for e in events] == [Retrying, Retrying, Failed]
    assert [t["outcome"] for t in attempts(simulator, marker)] == ["fault:503"] * 3


async def test_non_streaming_call_is_asked_again_too(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    marker = "[r-500-whole]"
    events, _ = await ask(
        client_for(http, simulator), marker, f"{FAST} fault=500 fault_times=1", stream=False
    )
    assert finished(events)
    assert [t["outcome"] for t in attempts(simulator, marker)] == ["fault:500", "complete"]


async def test_dashscope_throttling_behind_http_200_is_asked_again(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    """The native 429 arrives as ``event:error`` / ``:HTTP_STATUS/429`` in an HTTP 200 stream."""
    marker = "[r-native-throttled]"
    events, _ = await ask(
        client_for(http, simulator, "dashscope"), marker, f"{FAST} fault=429 fault_times=1"
    )
    first, second = attempts(simulator, marker)
    assert first["status"] == 200 and first["outcome"] == "fault:429"
    assert second["outcome"] == "complete"
    assert finished(events) and text_of(events) == second["text"]


async def test_dashscope_throttling_takes_retry_after_from_the_200_response(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    marker = "[r-native-throttled-long]"
    client = client_for(http, simulator, "dashscope", max_retry_wait=5)
    events, elapsed = await ask(client, marker, f"{FAST} fault=429 retry_after=30")
    error = failure(events)
    assert isinstance(error, UpstreamRateLimited) and error.retry_after == 30
    assert error.message == "Rate limited by the model server; retry in 30 s."
    assert len(attempts(simulator, marker)) == 1 and elapsed < AT_ONCE  # not the 30 s asked


async def test_a_refused_connection_is_asked_again(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chat.llm")
    client = ChatClient(http, f"http://127.0.0.1:{free_port()}/v1", KEY, retry_backoff=0.02)
    events = [e async for e in client.stream_reply("qwen-plus", prompt("[r-refused]", FAST))]
    assert isinstance(failure(events), UpstreamUnavailable)
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "ConnectError" in retries[0]


async def test_a_connection_reset_before_any_response_is_asked_again(
    http: httpx.AsyncClient,
) -> None:
    accepted = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = ChatClient(http, f"http://127.0.0.1:{port}/v1", KEY, retry_backoff=0.02)
        events = [e async for e in client.stream_reply("qwen-plus", prompt("[r-reset]", FAST))]
    finally:
        server.close()
        await server.wait_closed()
    error = failure(events)
    assert isinstance(error, UpstreamUnavailable)
    assert "closed the connection without answering" in error.message
    assert accepted == 3


# --------------------------------------------------------------------------------------------
# Not asked again


async def test_retry_after_over_the_cap_fails_at_once(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    marker = "[r-429-600]"
    client = client_for(http, simulator, max_retry_wait=20)
    events, elapsed = await ask(client, marker, f"{FAST} fault=429 retry_after=600")
    error = failure(events)
    assert isinstance(error, UpstreamRateLimited)
    assert error.message == "Rate limited by the model server; retry in 600 s."
    assert error.retry_after == 600
    assert len(attempts(simulator, marker)) == 1
    assert elapsed < AT_ONCE  # not the 600 s asked


async def test_retry_after_past_the_deadline_fails_at_once(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    marker = "[r-429-past-deadline]"
    client = client_for(http, simulator, total_timeout=2)
    events, elapsed = await ask(client, marker, f"{FAST} fault=429 retry_after=3")
    assert isinstance(failure(events), UpstreamRateLimited)
    assert len(attempts(simulator, marker)) == 1 and elapsed < AT_ONCE  # not the 3 s asked


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        pytest.param("401", UpstreamAuthError, id="401"),
        pytest.param("403", UpstreamAuthError, id="403"),
        pytest.param("400", UpstreamBadRequest, id="400"),
    ],
)
async def test_client_errors_are_never_retried(
    http: httpx.AsyncClient, simulator: Simulator, fault: str, kind: type[UpstreamError]
) -> None:
    marker = f"[r-{fault}-once]"
    events, _ = await ask(client_for(http, simulator), marker, f"{FAST} fault={fault}")
    assert type(failure(events)) is kind
    assert len(attempts(simulator, marker)) == 1


@pytest.mark.parametrize(
    ("protocol", "directive", "kind"),
    [
        # DashScope's throttling and server errors are retryable before the first token (see
        # above); after it they are final.
        pytest.param(
            "dashscope", "fault=midstream_error midstream_kind=429", UpstreamRateLimited, id="429"
        ),
        pytest.param(
            "dashscope", "fault=midstream_error midstream_kind=503", UpstreamServerError, id="503"
        ),
        pytest.param("openai", "fault=midstream_error", UpstreamStreamError, id="moderation"),
        pytest.param("openai", "fault=eof", UpstreamInterrupted, id="eof"),
    ],
)
async def test_an_error_after_the_first_tokens_is_final(
    http: httpx.AsyncClient,
    simulator: Simulator,
    protocol: str,
    directive: str,
    kind: type[UpstreamError],
) -> None:
    marker = f"[r-after-tokens-{protocol}-{directive}]"
    events, _ = await ask(
        client_for(http, simulator, protocol),
        marker,
        f"tokens=40 tps=400 ttft=0.01 {directive} fault_after=4 fault_times=1",
    )
    (only,) = attempts(simulator, marker)  # a retry would have answered, and repeated text
    assert type(failure(events)) is kind
    assert text_of(events) == only["text"] and only["tokens_sent"] == 4


async def test_retries_zero_asks_once(http: httpx.AsyncClient, simulator: Simulator) -> None:
    marker = "[r-503-no-retries]"
    events, _ = await ask(
        client_for(http, simulator, retries=0), marker, f"{FAST} fault=503 fault_times=1"
    )
    assert isinstance(failure(events), UpstreamServerError)
    assert len(attempts(simulator, marker)) == 1


# --------------------------------------------------------------------------------------------
# Stop during the wait


async def test_cancelling_during_the_backoff_returns_at_once(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    marker = "[r-cancel-in-backoff]"
    client = client_for(http, simulator)

    async def consume() -> list[Event]:
        return (await ask(client, marker, f"{FAST} fault=429 retry_after=10 fault_times=1"))[0]

    task = asyncio.create_task(consume())
    deadline = time.monotonic() + 5
    while not attempts(simulator, marker):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # well inside the 10 s wait
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at < AT_ONCE  # not the 9.8 s left of the wait
    await throughout(
        lambda: len(attempts(simulator, marker)) == 1, "it asked again after Stop", during=0.2
    )


# --------------------------------------------------------------------------------------------
# The overall deadline


@pytest.mark.parametrize("protocol", ["openai", "dashscope"])
async def test_endless_keepalive_comments_hit_the_overall_deadline(
    http: httpx.AsyncClient, simulator: Simulator, protocol: str
) -> None:
    """Pings every 0.1 s keep the 5 s idle timeout happy; the 1.5 s deadline ends the reply."""
    marker = f"[r-keepalive-forever-{protocol}]"
    client = client_for(http, simulator, protocol, total_timeout=1.5)
    events, elapsed = await ask(client, marker, "ttft=999 keepalive=1")
    error = failure(events)
    assert isinstance(error, UpstreamTimeout)
    assert error.message == "The model took longer than 1.5 s in all to answer."
    # The 1.5 s deadline ended it, not the 5 s idle timeout (which the pings keep away).
    assert 1.4 <= elapsed < 4.0, elapsed
    assert len(events) == 1  # a timeout is not asked again
    await until(  # the stream was closed
        lambda: attempts(simulator, marker)[-1]["outcome"] == "disconnected",
        "the simulator saw the stream closed",
        within=5,
    )
    assert len(attempts(simulator, marker)) == 1


async def test_a_stall_with_pings_hits_the_deadline_and_keeps_the_partial_answer(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    marker = "[r-stall-pinging]"
    client = client_for(http, simulator, total_timeout=1.5)
    events, elapsed = await ask(
        client, marker, "tokens=40 tps=400 ttft=0.01 fault=stall fault_after=5 keepalive=1"
    )
    error = failure(events)
    assert error.message == "The model took longer than 1.5 s in all; the partial answer was kept."
    # The 1.5 s deadline ended it, not the 5 s idle timeout (which the pings keep away).
    assert 1.4 <= elapsed < 4.0, elapsed
    (only,) = attempts(simulator, marker)
    assert text_of(events) == only["text"] and only["tokens_sent"] == 5


async def test_a_silent_stall_is_the_idle_timeout(simulator: Simulator) -> None:
    """No bytes at all: the idle (read) timeout ends it long before the overall deadline."""
    http = make_http_client(connect_timeout=2.0, read_timeout=0.5)
    try:
        client = client_for(http, simulator, total_timeout=30)
        events, elapsed = await ask(
            client, "[r-stall-silent]", "tokens=40 tps=400 ttft=0.01 fault=stall fault_after=5"
        )
    finally:
        await http.aclose()
    error = failure(events)
    assert isinstance(error, UpstreamTimeout)
    assert error.message == UpstreamTimeout.default_message
    assert text_of(events) and elapsed < 5  # the 0.5 s idle timeout, not the 30 s deadline


async def test_the_deadline_spares_a_reply_that_ends_in_time(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    marker = "[r-in-time]"
    client = client_for(http, simulator, total_timeout=5)
    events, _ = await ask(client, marker, "tokens=30 tps=200 ttft=0.05 keepalive=1")
    assert finished(events)
    assert text_of(events) == attempts(simulator, marker)[-1]["text"]


async def test_the_deadline_also_bounds_the_wait_for_headers(
    http: httpx.AsyncClient, simulator: Simulator
) -> None:
    marker = "[r-slow-headers]"
    client = client_for(http, simulator, total_timeout=1)
    events, elapsed = await ask(client, marker, f"{FAST} fault=slow_headers delay=4")
    error = failure(events)
    assert error.message == "The model took longer than 1 s in all to answer."
    assert 0.9 <= elapsed < 3.5, elapsed  # the 1 s deadline, not the 4 s the headers took
    assert len(attempts(simulator, marker)) == 1
