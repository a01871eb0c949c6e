"""A socket flood: one client sending a thousand messages a second is refused with one alert,
then silence, then closed (1008), while another socket on the same worker streams an answer
untouched (its per-token p99 is printed, not asserted).

The limiter itself (``chat.live.inbound``) is tried first on a fake clock: the burst, the one
alert, the drop, the close, a client back under the rate served again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

import pytest
import websockets

from chat.live.inbound import BURST, CALM, CLOSE_AFTER, CLOSE_FLOOD, RATE, InboundLimit, Verdict
from tests.support.app import App, running_app
from tests.support.inbox import Inbox
from tests.support.latency import STAMP, summary, token_latencies
from tests.support.simulator import Simulator
from tests.support.sockets import send
from tests.support.visitor import Visitor
from tests.support.waiting import until

TOO_MANY = "Too many requests: wait a moment and try again."
NOT_UNDERSTOOD = "That request was not understood."
FLOOD_PER_S = 1000
FLOOD_FOR_AT_MOST = 8.0  # seconds; it is closed after CLOSE_AFTER (3 s) of flooding


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def verdicts(limit: InboundLimit, clock: FakeClock, count: int, every: float) -> list[Verdict]:
    """``count`` messages ``every`` seconds apart; what the limiter said to each."""
    said = []
    for _ in range(count):
        said.append(limit.admit())
        clock.advance(every)
    return said


# --- The limiter, on a fake clock ------------------------------------------------------------


def test_a_burst_is_accepted_then_one_alert_then_silence_then_a_close() -> None:
    clock = FakeClock()
    limit = InboundLimit(clock=clock)
    assert verdicts(limit, clock, BURST, 0.0) == ["accept"] * BURST
    flood = verdicts(limit, clock, int(CLOSE_AFTER * FLOOD_PER_S) + 10, 1 / FLOOD_PER_S)
    assert flood[0] == "alert"
    assert flood.count("alert") == 1 and flood.count("close") == 1
    # Tokens come back at RATE during the flood: they are dropped too, nothing gets through.
    assert "accept" not in flood
    closed_at = flood.index("close")
    assert closed_at == pytest.approx(CLOSE_AFTER * FLOOD_PER_S, abs=2)
    assert set(flood[closed_at + 1 :]) == {"drop"}
    clock.advance(60)
    assert limit.admit() == "drop"  # closed is closed, however calm it became


def test_a_client_at_the_rate_is_never_refused() -> None:
    clock = FakeClock()
    limit = InboundLimit(clock=clock)
    assert set(verdicts(limit, clock, 500, 1 / RATE)) == {"accept"}
    # A burst again once it has rested as long as the bucket takes to fill.
    clock.advance(BURST / RATE)
    assert set(verdicts(limit, clock, BURST, 0.0)) == {"accept"}


def test_a_flood_that_stops_is_forgiven_and_a_new_one_is_said_again() -> None:
    clock = FakeClock()
    limit = InboundLimit(clock=clock)
    said = verdicts(limit, clock, BURST + 50, 0.001)
    assert said[BURST] == "alert" and set(said[BURST + 1 :]) == {"drop"}
    clock.advance(CALM)
    assert limit.admit() == "accept"  # calm: served again, from what the bucket regained
    said = verdicts(limit, clock, BURST + 50, 0.001)
    assert said.count("alert") == 1 and "close" not in said


def test_a_client_back_under_the_rate_is_served_after_a_calm_second() -> None:
    """Dropped while it floods, even when a token is there; served once no message has been
    refused for CALM seconds, at a rate the bucket sustains."""
    clock = FakeClock()
    limit = InboundLimit(clock=clock)
    said = verdicts(limit, clock, BURST + 20, 0.001)
    assert "alert" in said
    slower = verdicts(limit, clock, 40, 2 / RATE)  # half the rate
    assert "alert" not in slower and "close" not in slower
    calm_after = int(CALM / (2 / RATE)) + 1
    assert set(slower[calm_after:]) == {"accept"}


# --- A real flood, against a real worker ----------------------------------------------------


@pytest.fixture(scope="module")
def flooded_app(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """A worker of this module's own: the flood and the answer share nothing else."""
    env = {"LLM_API_BASE": simulator.base_url, "STREAM_SAVE_INTERVAL_MS": "1000"}
    with running_app(tmp_path_factory.mktemp("flood"), env) as app:
        yield app


async def flood(ws: websockets.ClientConnection, inbox: Inbox) -> int:
    """Send ``FLOOD_PER_S`` cheap messages a second (an action the page never sends) until the
    socket is closed, or ``FLOOD_FOR_AT_MOST`` seconds pass; how many went out."""
    message = json.dumps({"action": "ping", "HEADERS": {}})
    start = time.monotonic()
    sent = 0
    with contextlib.suppress(websockets.ConnectionClosed):
        while not inbox.closed and time.monotonic() - start < FLOOD_FOR_AT_MOST:
            due = int((time.monotonic() - start) * FLOOD_PER_S) + 1
            while sent < due:
                await ws.send(message)
                sent += 1
            await asyncio.sleep(0.005)
    return sent


@pytest.mark.live
@pytest.mark.load
async def test_a_socket_flood_is_refused_once_then_closed_and_others_stream_on(
    flooded_app: App, simulator: Simulator
) -> None:
    reader, flooder = Visitor(flooded_app), Visitor(flooded_app)  # two browsers
    try:
        conversation = reader.new_conversation()
        async with (
            reader.socket(conversation) as calm_ws,
            flooder.socket(flooder.new_conversation()) as flood_ws,
        ):
            calm, noisy = Inbox(calm_ws), Inbox(flood_ws)
            marker = "[t-flood-calm]"
            await send(calm_ws, f"Stream on {marker}\n#sim tokens=200 tps=40 ttft=0.05 stamp=1")
            answer_id = await until(calm.first_answer, "the calm socket's first text", 15)
            sent = await flood(flood_ws, noisy)
            await until(lambda: noisy.closed, "the flooding socket closed", 10)
            _, final = await until(lambda: calm.final(answer_id), "the calm answer's end", 30)

        # The flooder: one "too many" alert, the replies to its first burst, then nothing.
        alerts = noisy.alerts()
        assert alerts.count(TOO_MANY) == 1, alerts[:5]
        answered = alerts.count(NOT_UNDERSTOOD)
        # Its burst, and what the bucket regained while the burst was answered.
        assert BURST <= answered <= BURST + RATE, answered
        assert len(alerts) == answered + 1
        assert noisy.close_code == CLOSE_FLOOD and noisy.close_reason == "too many messages"
        assert sent >= CLOSE_AFTER * FLOOD_PER_S / 2, sent  # a flood, not a trickle

        # The other socket on the same worker: its answer, exact and complete, no alert.
        upstream = simulator.request_for(marker)
        assert final["data-status"] == "complete"
        assert calm.text(answer_id) == upstream["text"]
        assert reader.export(conversation)["messages"][-1]["content"] == upstream["text"]
        assert calm.alerts() == []
        latencies = token_latencies(calm.frames, answer_id)
        assert len(latencies) == len(STAMP.findall(upstream["text"]))  # one per chunk sent
        print(
            f"\nflood: {sent} messages in {len(noisy.frames)} replies, closed "
            f"{noisy.close_code}; the other socket's tokens: {summary(latencies)}"
        )
        log = flooded_app.log()
        assert "sent too many messages" in log and "Traceback" not in log
    finally:
        reader.close()
        flooder.close()
