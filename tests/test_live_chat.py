"""The chat end to end over real sockets: simulator → Streamside under Daphne → websocket client.

Each test asserts what a person at the browser would see (the frames and the saved page) and
compares it with what the simulator really sent, from its own request log.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from chat.rendering.markdown import render_markdown
from tests.support.app import App, start_app
from tests.support.frames import Frame, streamed_text
from tests.support.processes import free_port, stop_process
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor, answer_row
from tests.support.waiting import throughout, until

pytestmark = pytest.mark.live


async def test_streaming_answer_grows_live_and_is_saved_exactly(
    visitor: Visitor, simulator: Simulator
) -> None:
    conversation = visitor.new_conversation()
    prompt = (
        "Explain streaming in three paragraphs [t-stream]\n#sim tokens=80 tps=80 ttft=0.1 seed=3"
    )
    async with visitor.socket(conversation) as ws:
        sent_at = time.monotonic()
        await send(ws, prompt)
        answer_id, frames, final = await collect_answer(ws)

    delta_frames = [f for f in frames if any(a == answer_id for a, _, _ in f.deltas)]
    sim = simulator.request_for("[t-stream]")
    assert sim["stream"] is True and sim["include_usage"] is True
    # The answer grew in many frames, the first long before the last.
    assert len(delta_frames) >= 10
    first, last = delta_frames[0].at - sent_at, frames[-1].at - sent_at
    assert first < last / 3
    # Nothing dropped, doubled or reordered: the frames spell exactly what the simulator sent.
    assert streamed_text(frames, answer_id) == sim["text"]
    seqs = [s for f in delta_frames for a, s, _ in f.deltas if a == answer_id]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert final["data-status"] == "complete"

    saved = answer_row(visitor.export(conversation), answer_id)
    assert saved["content"] == sim["text"]
    assert saved["status"] == "complete"
    assert saved["completion_tokens"] == sim["tokens_sent"]
    assert saved["request_id"]  # the upstream's id, kept for support
    assert saved["ttft_ms"] is not None and 0 < saved["ttft_ms"] < saved["total_ms"]
    # The final frame shows the figures: first token, total, tokens/s and the upstream's usage.
    final_html = frames[-1].html
    assert "First token" in final_html and "tokens/s" in final_html
    assert f"/ {sim['tokens_sent']} completion /" in final_html


async def test_chinese_answer_arrives_intact(visitor: Visitor, simulator: Simulator) -> None:
    conversation = visitor.new_conversation()
    async with visitor.socket(conversation) as ws:
        await send(ws, "你是谁?[t-zh]\n#sim tokens=60 tps=200 ttft=0.05 fragment=1")
        answer_id, frames, _ = await collect_answer(ws)
    sim = simulator.request_for("[t-zh]")
    text = streamed_text(frames, answer_id)
    assert text == sim["text"]
    assert "\ufffd" not in text and any("\u4e00" <= ch <= "\u9fff" for ch in text)
    assert answer_row(visitor.export(conversation), answer_id)["content"] == sim["text"]


async def test_stream_off_shows_one_final_fragment(visitor: Visitor, simulator: Simulator) -> None:
    conversation = visitor.new_conversation(stream="off")
    async with visitor.socket(conversation) as ws:
        await send(ws, "No streaming please [t-nostream]\n#sim tokens=30 tps=100 ttft=0.2")
        answer_id, frames, final = await collect_answer(ws)
    sim = simulator.request_for("[t-nostream]")
    assert sim["stream"] is False
    assert streamed_text(frames, answer_id) == ""  # no partial text ever reached the page
    turn = frames[0].html
    assert "waiting…" in turn and "data-timer" in turn  # the live timer while it waits
    assert final["data-status"] == "complete"
    saved = answer_row(visitor.export(conversation), answer_id)
    assert saved["content"] == sim["text"] and saved["streamed"] is False
    assert saved["total_tokens"] is not None


async def test_stop_closes_the_upstream_request_and_keeps_the_partial_text(
    visitor: Visitor, simulator: Simulator
) -> None:
    conversation = visitor.new_conversation()
    async with visitor.socket(conversation) as ws:
        await send(ws, "A long one [t-stop]\n#sim tokens=400 tps=20 ttft=0.05")
        received = ""
        answer_id = None
        while len(received) < 20:
            raw = await asyncio.wait_for(ws.recv(), 10)
            frame = str(raw)
            if answer_id is None and 'data-role="assistant"' in frame:
                answer_id = int(frame.split('id="message-')[2].split('"')[0])
            received += "".join(t for _, _, t in Frame(frame, 0).deltas)
        assert answer_id is not None
        stop_at = time.time()
        await ws.send(json.dumps({"action": "stop", "answer": str(answer_id)}))
        _, frames, final = await collect_answer(ws, answer_id)
    assert final["data-status"] == final["data-outcome"] == "stopped"
    sim = await until(
        lambda: simulator.ended_as("[t-stop]", "disconnected"), "the upstream request closed"
    )
    # The upstream saw the request end at once: it had 20 s to go; 2 s leaves a loaded machine
    # room (the simulator's log says when it noticed, not when we looked).
    assert sim["disconnected_at"] - stop_at < 2.0
    tokens_then = sim["tokens_sent"]
    await throughout(  # and nothing more
        lambda: simulator.request_for("[t-stop]")["tokens_sent"] == tokens_then,
        "tokens were sent after Stop",
        during=0.3,
    )
    saved = answer_row(visitor.export(conversation), answer_id)
    assert saved["status"] == "stopped"
    assert saved["content"] and sim["text"].startswith(saved["content"])
    assert saved["content"].startswith(received)
    assert "Retry" in frames[-1].html


async def test_closing_the_tab_does_not_stop_the_answer(
    visitor: Visitor, simulator: Simulator
) -> None:
    conversation = visitor.new_conversation()
    async with visitor.socket(conversation) as ws:
        await send(ws, "Keep going [t-close]\n#sim tokens=40 tps=40 ttft=0.05")
        for _ in range(3):
            await asyncio.wait_for(ws.recv(), 10)

    # The tab is gone; a reload meanwhile shows the answer so far (saved while it grows)...
    def saved_so_far() -> dict[str, Any] | None:
        last = dict(visitor.export(conversation)["messages"][-1])
        return last if last["content"] else None

    during = await until(saved_so_far, "a progress save", within=10)
    assert during["status"] == "streaming"
    # ...and it runs to the end.
    deadline = time.monotonic() + 15
    while True:
        saved = visitor.export(conversation)["messages"][-1]
        if saved["status"] != "streaming" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    sim = simulator.request_for("[t-close]")
    assert saved["status"] == "complete"
    assert saved["content"] == sim["text"]
    assert sim["text"].startswith(during["content"]) and during["content"] != sim["text"]
    page = visitor.http.get(f"/c/{conversation}/").text
    assert 'data-status="complete"' in page


async def test_a_second_socket_joining_mid_answer_sees_the_same_text(
    visitor: Visitor, simulator: Simulator
) -> None:
    conversation = visitor.new_conversation()
    async with visitor.socket(conversation) as first:
        await send(first, "Two tabs [t-two]\n#sim tokens=80 tps=60 ttft=0.05")
        for _ in range(4):
            await asyncio.wait_for(first.recv(), 10)
        async with visitor.socket(conversation) as second:
            snapshot = Frame(str(await asyncio.wait_for(second.recv(), 10)), 0)
            (article,) = snapshot.articles
            assert article["data-status"] == "streaming" and "Stop" in snapshot.html
            answer_id = int(article["id"].removeprefix("message-"))
            _, frames, _ = await collect_answer(second, answer_id)
    sim = simulator.request_for("[t-two]")
    after = streamed_text(frames, answer_id)
    so_far = sim["text"][: len(sim["text"]) - len(after)]
    assert after and sim["text"].endswith(after)
    assert so_far  # the snapshot held the text so far, not an empty box
    # It shows exactly that text: finished markdown blocks rendered, the rest raw.
    marker = f'id="answer-{answer_id}-text">'
    start = snapshot.html.index(marker) + len(marker)
    tail = html.unescape(snapshot.html[start : snapshot.html.index("</div>", start)])
    assert so_far.endswith(tail)
    committed = so_far[: len(so_far) - len(tail)]
    assert render_markdown(committed) in snapshot.html


async def test_one_answer_at_a_time(visitor: Visitor) -> None:
    conversation = visitor.new_conversation()
    async with visitor.socket(conversation) as ws:
        await send(ws, "First [t-busy]\n#sim tokens=60 tps=30 ttft=0.05")
        await asyncio.wait_for(ws.recv(), 10)
        await send(ws, "Second, too soon")
        while True:
            frame = str(await asyncio.wait_for(ws.recv(), 10))
            if 'role="alert"' in frame:
                break
        assert "still streaming" in frame
    messages = visitor.export(conversation)["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "First [t-busy]\n#sim tokens=60 tps=30 ttft=0.05"
    ]


@pytest.mark.parametrize(
    ("directive", "expected", "kind"),
    [
        pytest.param("fault=401", "rejected the API key", "auth", id="401"),
        pytest.param("fault=403", "Access denied", "auth", id="403"),
        # Over LLM_RETRY_MAX_WAIT (20 s): told at once, not retried. Shorter waits are retried.
        pytest.param(
            "fault=429 retry_after=30", "retry in 30 s", "rate_limit", id="429-retry-after"
        ),
        pytest.param("fault=429", "Rate limited", "rate_limit", id="429"),
        pytest.param("fault=400", "Range of max_tokens should be", "bad_request", id="400"),
        pytest.param("fault=500", "HTTP 500", "server", id="500"),
        pytest.param("fault=503", "HTTP 503", "server", id="503"),
        pytest.param("fault=eof fault_after=5", "cut off", "incomplete", id="eof"),
        pytest.param(
            "fault=midstream_error fault_after=5",
            "inappropriate content",
            "stream_error",
            id="midstream-error",
        ),
        pytest.param(
            "fault=stall fault_after=3",
            "Request timed out, please try again later.",
            "timeout",
            id="read-timeout",
        ),
    ],
)
async def test_upstream_faults_show_a_clear_message_and_lose_nothing(
    visitor: Visitor, simulator: Simulator, directive: str, expected: str, kind: str
) -> None:
    conversation = visitor.new_conversation()
    marker = f"[t-fault-{directive}]"
    prompt = f"Fault please {marker}\n#sim tokens=50 tps=100 ttft=0.05 {directive}"
    async with visitor.socket(conversation) as ws:
        await send(ws, prompt)
        answer_id, frames, final = await collect_answer(ws)
    assert final["data-status"] == "error"
    assert expected in frames[-1].html
    assert "Retry" in frames[-1].html
    export = visitor.export(conversation)
    assert export["messages"][0]["content"] == prompt  # the user's message is kept
    saved = answer_row(export, answer_id)
    assert saved["status"] == "error" and saved["error_kind"] == kind
    # The stream broke after it began (incomplete), or no answer began at all (failed).
    outcome = "incomplete" if "fault_after" in directive else "failed"
    assert final["data-outcome"] == saved["outcome"] == outcome
    sim = simulator.request_for(marker)
    # Whatever partial text arrived is kept, exactly.
    assert saved["content"] == sim["text"]
    if "fault_after" in directive:
        assert saved["content"]


async def test_connection_refused_is_reported(tmp_path: Path) -> None:
    dead = free_port()
    app, process = start_app(tmp_path, {"LLM_API_BASE": f"http://127.0.0.1:{dead}/v1"})
    visitor = Visitor(app)
    try:
        conversation = visitor.new_conversation()
        async with visitor.socket(conversation) as ws:
            await send(ws, "Anyone there?")
            answer_id, frames, final = await collect_answer(ws)
        assert final["data-status"] == "error"
        assert "Could not reach the model server" in frames[-1].html
        saved = answer_row(visitor.export(conversation), answer_id)
        assert saved["error_kind"] == "unavailable"
        assert visitor.export(conversation)["messages"][0]["content"] == "Anyone there?"
    finally:
        visitor.close()
        stop_process(process)


async def test_retry_after_stop_answers_again(visitor: Visitor, simulator: Simulator) -> None:
    conversation = visitor.new_conversation()
    async with visitor.socket(conversation) as ws:
        await send(ws, "Retry me [t-retry]\n#sim tokens=200 tps=30 ttft=0.05")
        answer_id = None
        while answer_id is None:
            frame = Frame(str(await asyncio.wait_for(ws.recv(), 10)), 0)
            if frame.deltas:
                answer_id = frame.deltas[0][0]
        await ws.send(json.dumps({"action": "stop", "answer": str(answer_id)}))
        _, _, stopped = await collect_answer(ws, answer_id)
        assert stopped["data-status"] == "stopped"
        await ws.send(json.dumps({"action": "retry", "answer": str(answer_id)}))
        new_id, frames, final = await collect_answer(ws)
    assert new_id != answer_id and final["data-status"] == "complete"
    assert f'id="retry-{answer_id}" hx-swap-oob="delete"' in frames[0].html
    export = visitor.export(conversation)
    assert [m["status"] for m in export["messages"]] == ["complete", "stopped", "complete"]
    full = simulator.request_for("[t-retry]")["text"]
    assert answer_row(export, new_id)["content"] == full


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(
            json.dumps({"action": "send", "message": "   "}), "Type a message", id="empty"
        ),
        pytest.param(
            json.dumps({"action": "send", "message": "x" * 40_000}), "too long", id="too-long"
        ),
        pytest.param("{not json", "not valid JSON", id="invalid-json"),
        pytest.param(json.dumps({"action": "launch"}), "not understood", id="unknown-action"),
        pytest.param(
            json.dumps({"action": "send", "message": 5}), "Type a message", id="wrong-type"
        ),
        pytest.param(json.dumps({"action": "stop"}), "named no answer", id="stop-without-id"),
        pytest.param(
            json.dumps({"action": "send", "message": "汉" * 100_000}), "too large", id="huge-frame"
        ),
        pytest.param(b"\x00\x01 not text", "Binary messages are not accepted", id="binary"),
        pytest.param(json.dumps(["send", "hi"]), "not understood", id="not-an-object"),
        pytest.param(
            json.dumps({"action": "retry", "answer": "999999"}),
            "Only the latest answer can be retried",
            id="unknown-answer",
        ),
    ],
)
async def test_bad_input_gets_a_clear_message_and_stores_nothing(
    visitor: Visitor, payload: str | bytes, expected: str
) -> None:
    conversation = visitor.new_conversation()
    async with visitor.socket(conversation) as ws:
        await ws.send(payload)
        frame = str(await asyncio.wait_for(ws.recv(), 5))
        assert 'role="alert"' in frame and expected in frame
        # The socket stays usable.
        await send(ws, "Still here? [t-after-bad]\n#sim tokens=5 tps=100 ttft=0.01")
        _, _, final = await collect_answer(ws)
        assert final["data-status"] == "complete"
    assert len(visitor.export(conversation)["messages"]) == 2


async def test_other_visitors_cannot_see_or_join_a_conversation(app: App) -> None:
    owner, stranger = Visitor(app), Visitor(app)
    try:
        conversation = owner.new_conversation()
        assert stranger.http.get(f"/c/{conversation}/").status_code == 404
        assert stranger.http.get(f"/c/{conversation}/export.json").status_code == 404
        # Refused before the handshake completes: nothing about the conversation is sent.
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with stranger.socket(conversation):
                pass
        assert refused.value.response.status_code == 403
    finally:
        owner.close()
        stranger.close()


@pytest.mark.parametrize("origin", ["http://evil.example", "null", None], ids=str)
async def test_websocket_from_a_foreign_null_or_missing_origin_is_refused(
    visitor: Visitor, origin: str | None
) -> None:
    """Cross-site websocket hijacking: the session cookie alone must not open a socket."""
    conversation = visitor.new_conversation()
    cookie = "; ".join(f"{k}={v}" for k, v in visitor.http.cookies.items())
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            f"ws://127.0.0.1:{visitor.app.port}/ws/c/{conversation}/",
            additional_headers={"Cookie": cookie},
            origin=origin,  # type: ignore[arg-type]
        ):
            pass
    assert refused.value.response.status_code == 403
    async with visitor.socket(conversation):  # the same cookie from the page's own origin
        pass


async def test_html_in_prompts_and_answers_stays_text(visitor: Visitor) -> None:
    conversation = visitor.new_conversation()
    prompt = (
        "<script>alert(1)</script><img src=x onerror=alert(2)> [t-xss]"
        "\n#sim tokens=5 tps=100 ttft=0.01"
    )
    async with visitor.socket(conversation) as ws:
        await send(ws, prompt)
        _, frames, _ = await collect_answer(ws)
    for frame in frames:
        assert "<script>" not in frame.html and "<img" not in frame.html
    page = visitor.http.get(f"/c/{conversation}/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert visitor.export(conversation)["messages"][0]["content"] == prompt


def test_simulator_is_served_by_the_app_in_the_demo(tmp_path: Path) -> None:
    app, process = start_app(
        tmp_path, {"LLM_API_BASE": "", "LLM_API_KEY": "", "DASHSCOPE_API_KEY": ""}
    )
    try:
        page = httpx.get(f"{app.url}/", follow_redirects=True).text
        assert "offline simulator" in page
        models = httpx.get(f"{app.url}/simulator/v1/models").json()
        assert models["data"]
    finally:
        stop_process(process)


async def test_the_api_key_never_reaches_the_browser_or_the_log(
    tmp_path: Path, simulator: Simulator
) -> None:
    secret = "sk-test-NEVER-SHOW-4b1d"
    app, process = start_app(tmp_path, {"LLM_API_BASE": simulator.base_url, "LLM_API_KEY": secret})
    visitor = Visitor(app)
    try:
        conversation = visitor.new_conversation()
        seen = [visitor.http.get(f"/c/{conversation}/").text]
        async with visitor.socket(conversation) as ws:
            for directive in ("fault=401", "tokens=5 tps=100 ttft=0.01"):
                await send(ws, f"Key check [t-key]\n#sim {directive}")
                _, frames, _ = await collect_answer(ws)
                seen += [f.html for f in frames]
        seen.append(visitor.http.get(f"/c/{conversation}/export.json").text)
        seen.append(visitor.http.get(f"/c/{conversation}/").text)
        assert "rejected the API key" in "".join(seen)
        assert all(secret not in text for text in seen)
    finally:
        visitor.close()
        stop_process(process)
    assert secret not in app.log()


async def test_deleting_a_conversation_mid_answer_stops_it(
    visitor: Visitor, simulator: Simulator
) -> None:
    conversation = visitor.new_conversation()
    async with visitor.socket(conversation) as ws:
        await send(ws, "Delete me [t-delete]\n#sim tokens=400 tps=20 ttft=0.05")
        for _ in range(3):
            await asyncio.wait_for(ws.recv(), 10)
        response = visitor.post(f"/c/{conversation}/delete/")
        assert response.status_code == 200  # followed to the (now empty) index
    await until(  # the upstream request was closed, long before its 20 s were up
        lambda: simulator.ended_as("[t-delete]", "disconnected"), "the upstream request closed"
    )
    assert visitor.http.get(f"/c/{conversation}/").status_code == 404
    assert "Traceback" not in visitor.app.log()


async def test_stream_off_with_a_model_that_only_streams_is_buffered(
    visitor: Visitor, simulator: Simulator
) -> None:
    conversation = visitor.new_conversation(model="qwq-plus", stream="off")
    async with visitor.socket(conversation) as ws:
        await send(ws, "Think first [t-qwq]\n#sim tokens=20 tps=100 ttft=0.05")
        answer_id, frames, final = await collect_answer(ws)
    assert final["data-status"] == "complete"
    assert streamed_text(frames, answer_id) == ""  # delivered at once, as "stream off" promises
    assert "stream off (buffered)" in frames[-1].html
    sim = simulator.request_for("[t-qwq]")
    assert sim["stream"] is True  # the upstream only takes streaming calls
    assert answer_row(visitor.export(conversation), answer_id)["content"] == sim["text"]


async def test_a_reconnected_page_learns_which_of_its_answers_ended_meanwhile(
    visitor: Visitor,
) -> None:
    """The final frame went to a socket that closed; the page's next socket asks ("sync")
    about the answers it still shows streaming and gets the final ones. Not other people's."""
    conversation = visitor.new_conversation()
    stranger = Visitor(visitor.app)
    try:
        other = stranger.new_conversation()
        async with stranger.socket(other) as ws:
            await send(ws, "Not yours [t-sync-other]\n#sim tokens=5 tps=200 ttft=0.01")
            foreign, _, _ = await collect_answer(ws)
        async with visitor.socket(conversation) as ws:
            await send(ws, "Ends unseen [t-sync]\n#sim tokens=10 tps=200 ttft=0.01")
            answer_id, _, _ = await collect_answer(ws)
        async with visitor.socket(conversation) as ws:
            request = {"action": "sync", "answers": [str(answer_id), str(foreign)]}
            await ws.send(json.dumps(request))
            frame = Frame(str(await asyncio.wait_for(ws.recv(), 5)), 0)
            assert (final := frame.final_for(answer_id)) and final["data-status"] == "complete"
            assert frame.final_for(foreign) is None and f"message-{foreign}" not in frame.html
            await ws.send(json.dumps({"action": "sync", "answers": "all"}))
            assert "not understood" in str(await asyncio.wait_for(ws.recv(), 5))
    finally:
        stranger.close()


async def test_a_refusal_before_the_first_word_says_why_it_is_late(
    visitor: Visitor, simulator: Simulator
) -> None:
    """The model server refuses once (HTTP 429, Retry-After: 2) and is asked again. Meanwhile
    the answer says so beside its timer, also to a tab opened during the wait; then it streams
    as usual, and the note leaves with the timer."""
    conversation = visitor.new_conversation()
    note = "The model server refused for now (HTTP 429 (limit_requests)): asking again in 2 s"
    async with visitor.socket(conversation) as ws:
        await send(
            ws, "Busy first [t-retry-note]\n#sim fault=429 retry_after=2 fault_times=1 tokens=20"
        )
        frames: list[Frame] = []
        while not any(note in f.html for f in frames):
            frames.append(Frame(str(await asyncio.wait_for(ws.recv(), 5)), time.monotonic()))
        assert not any(f.deltas for f in frames)  # said before any word of the answer
        assert "(1 of 2)" in frames[-1].html and 'role="status"' in frames[-1].html
        async with visitor.socket(conversation) as late:
            snapshot = Frame(str(await asyncio.wait_for(late.recv(), 5)), time.monotonic())
            assert note in html.unescape(snapshot.html)  # the tab opened meanwhile sees it too
        answer_id = next(
            int(a["id"].removeprefix("message-"))
            for f in frames
            for a in f.articles
            if a.get("data-role") == "assistant"
        )
        _, rest, final = await collect_answer(ws, answer_id)
    sent = simulator.request_for("[t-retry-note]")
    assert streamed_text(rest, answer_id) == sent["text"]
    assert final["data-status"] == "complete"
    assert "asking again" not in visitor.http.get(f"/c/{conversation}/").text
