"""The comparison page over real sockets: both sides at once, timed, saved and exported."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from typing import Any

import pytest

from tests.support.app import App
from tests.support.frames import TRIAL, Frame
from tests.support.simulator import Simulator
from tests.support.visitor import Visitor, compare_socket
from tests.support.waiting import throughout

pytestmark = pytest.mark.live


async def run_comparison(
    ws: Any, prompt: str, *, model: str = "qwen-plus", trials: int = 1, timeout: float = 60
) -> tuple[float, list[Frame], list[dict[str, str]]]:
    """Press Run; read frames until the run is done. Returns the send time, frames, trials."""
    sent = time.monotonic()
    await ws.send(
        json.dumps({"action": "run", "prompt": prompt, "model": model, "trials": str(trials)})
    )
    frames: list[Frame] = []
    deadline = sent + timeout
    while True:
        raw = str(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        frames.append(Frame(raw, time.monotonic()))
        if 'id="compare-done"' in raw or 'id="alerts"' in raw:
            break
    trials_seen = [
        dict(re.findall(r'data-([\w-]+)="([^"]*)"', tag))
        for f in frames
        for tag in TRIAL.findall(f.html)
    ]
    return sent, frames, trials_seen


def first_delta_at(frames: list[Frame], answer_id: int) -> float | None:
    return next((f.at for f in frames if any(a == answer_id for a, _, _ in f.deltas)), None)


def final_at(frames: list[Frame], answer_id: int) -> tuple[float, dict[str, str]]:
    for frame in frames:
        if final := frame.final_for(answer_id):
            return frame.at, final
    raise AssertionError(f"answer {answer_id} never finished")


async def test_streaming_reading_begins_long_before_the_whole_answer_lands(
    visitor: Visitor, simulator: Simulator
) -> None:
    visitor.http.get("/compare/")
    prompt = "Why stream? [t-cmp]\n#sim tokens=60 tps=40 ttft=0.3"
    async with compare_socket(visitor) as ws:
        sent, frames, trials = await run_comparison(ws, prompt)
        (trial,) = trials
        on, off = int(trial["stream-answer"]), int(trial["nostream-answer"])
        run_id = int(trial["run"])

        on_first = first_delta_at(frames, on)
        assert on_first is not None
        on_first_epoch = time.time() - (time.monotonic() - on_first)
        off_done, off_final = final_at(frames, off)
        on_done, on_final = final_at(frames, on)
        assert on_first is not None
        assert first_delta_at(frames, off) is None  # the "off" side arrives whole, at once
        assert off_final["data-status"] == on_final["data-status"] == "complete"
        generation = 0.3 + 60 / 40
        assert off_done - sent >= generation * 0.95  # it waited for the whole generation
        # Reading began far sooner streamed: after the 0.3 s first-token delay, while the other
        # side still had most of its 1.8 s ahead (half of it: room for a loaded machine).
        assert on_first - sent < (off_done - sent) / 2

        # The browser reports what it saw; figures and the verdict come back.
        for mode, first, done in (("stream", on_first, on_done), ("nostream", off_done, off_done)):
            await ws.send(
                json.dumps(
                    {
                        "action": "timings",
                        "run": run_id,
                        "trial": 1,
                        "mode": mode,
                        "first_text_ms": (first - sent) * 1000,
                        "complete_ms": (done - sent) * 1000,
                    }
                )
            )
            figures = str(await asyncio.wait_for(ws.recv(), 10))
        assert "With streaming, reading began after" in figures and "sooner" in figures
        assert "<svg" in figures  # the run is complete: the chart

    requests = [r for r in simulator.requests() if "[t-cmp]" in r["messages"][-1]["content"]]
    assert sorted(r["stream"] for r in requests) == [False, True]
    # Both sides at the same instant: one after the other would start the whole generation
    # (1.8 s) apart; under 1 s leaves a loaded two-core machine room to start them.
    assert abs(requests[0]["started_at"] - requests[1]["started_at"]) < 1.0
    streamed = next(r for r in requests if r["stream"])
    # The first text reached the page within the simulator's first-token delay plus a margin
    # that is small next to the whole generation (wall clocks of one machine): a relay holding
    # the text back would show it the rest of the generation (1.5 s) late. A third of the
    # whole leaves a loaded machine a few hundred milliseconds to pass the token on.
    assert streamed["first_token_at"] - streamed["started_at"] >= 0.3 * 0.95
    relay_delay = (on_first_epoch - streamed["first_token_at"]) * 1000
    assert 0 <= relay_delay < (off_done - sent) * 1000 / 3

    saved = visitor.http.get(f"/compare/{run_id}.json").json()
    by_mode = {r["mode"]: r for r in saved["results"]}
    assert saved["measured"] == f"127.0.0.1:{simulator.port}"
    assert by_mode["stream"]["measured_in_browser"] and by_mode["nostream"]["measured_in_browser"]
    assert by_mode["stream"]["first_text_s"] < by_mode["nostream"]["first_text_s"]
    assert by_mode["nostream"]["server_first_token_s"] >= generation * 0.95
    assert by_mode["stream"]["completion_tokens"] == 60
    assert "sooner" in saved["verdict"]
    csv = visitor.http.get(f"/compare/{run_id}.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("trial,mode,status,first_text_s")
    assert len(csv.text.splitlines()) == 3
    page = visitor.http.get(f"/compare/{run_id}/").text
    assert 'data-mode="stream"' in page and 'data-status="complete"' in page
    assert "reading began after" in page
    assert f"/compare/{run_id}/" in visitor.http.get("/compare/history/").text


async def test_five_runs_draw_a_chart_with_medians(visitor: Visitor, simulator: Simulator) -> None:
    visitor.http.get("/compare/")
    async with compare_socket(visitor) as ws:
        _, frames, trials = await run_comparison(
            ws, "Five [t-cmp5]\n#sim tokens=10 tps=100 ttft=0.05", trials=5
        )
        # This client never reports browser timings: the server's own figures follow.
        late = str(await asyncio.wait_for(ws.recv(), 5))
        assert 'data-figure="first-text"' in late and "Measured on the server" in late
    assert [t["trial"] for t in trials] == ["1", "2", "3", "4", "5"]
    # Each trial is the same single question, not a follow-up to the previous answer.
    sent = [r for r in simulator.requests() if "[t-cmp5]" in r["messages"][-1]["content"]]
    assert len(sent) == 10 and all(len(r["messages"]) == 1 for r in sent)
    run_id = int(trials[0]["run"])
    saved = visitor.http.get(f"/compare/{run_id}.json").json()
    assert len(saved["results"]) == 10
    assert all(r["status"] == "complete" for r in saved["results"])
    page = visitor.http.get(f"/compare/{run_id}/").text
    assert "<svg" in page and "median first text" in page
    assert "Over 5 runs (medians)" in page


async def test_one_side_failing_keeps_the_other_and_the_run(visitor: Visitor) -> None:
    """qwen3-8b only streams, and the app was not told: the "off" side gets the provider's 400."""
    visitor.http.get("/compare/")
    async with compare_socket(visitor) as ws:
        _, frames, trials = await run_comparison(
            ws, "Fail one [t-cmp-fail]\n#sim tokens=20 tps=100 ttft=0.05", model="qwen3-8b"
        )
    (trial,) = trials
    _, on = final_at(frames, int(trial["stream-answer"]))
    off_at, off = final_at(frames, int(trial["nostream-answer"]))
    assert on["data-status"] == "complete" and off["data-status"] == "error"
    assert any("only support stream mode" in f.html for f in frames)
    saved = visitor.http.get(f"/compare/{trial['run']}.json").json()
    statuses = {r["mode"]: r["status"] for r in saved["results"]}
    assert statuses == {"stream": "complete", "nostream": "error"}
    assert (
        "only support stream mode" in {r["mode"]: r for r in saved["results"]}["nostream"]["error"]
    )


async def test_stream_only_models_are_buffered_on_the_off_side(
    visitor: Visitor, simulator: Simulator
) -> None:
    visitor.http.get("/compare/")
    async with compare_socket(visitor) as ws:
        _, frames, trials = await run_comparison(
            ws, "Buffered [t-cmp-qwq]\n#sim tokens=30 tps=60 ttft=0.1", model="qwq-plus"
        )
    (trial,) = trials
    off = int(trial["nostream-answer"])
    assert first_delta_at(frames, off) is None  # delivered at once
    assert final_at(frames, off)[1]["data-status"] == "complete"
    assert any("only answers streaming calls" in f.html for f in frames)
    requests = [r for r in simulator.requests() if "[t-cmp-qwq]" in r["messages"][-1]["content"]]
    assert [r["stream"] for r in requests] == [True, True]  # both streamed upstream
    # qwq-plus thinks first: each pane shows the thought in its own block, timed.
    for answer_id, sent in zip((int(trial["stream-answer"]), off), requests, strict=False):
        assert sent["reasoning"]
        finished = next(f.html for f in frames if f.final_for(answer_id))
        assert 'class="thinking"' in finished and "Thought for" in finished
        assert html.escape(sent["reasoning"][:80]) in finished


@pytest.mark.parametrize(
    ("prompt", "model", "trials", "expected"),
    [
        pytest.param("   ", "qwen-plus", "1", "Type a prompt first.", id="empty"),
        pytest.param("x" * 4001, "qwen-plus", "1", "too long", id="too-long"),
        pytest.param("hi", "gpt-nope", "1", "Unknown model", id="unknown-model"),
        pytest.param("hi", "qwen-plus", "3", "once or 5 times", id="bad-trials"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_sent(
    visitor: Visitor, simulator: Simulator, prompt: str, model: str, trials: str, expected: str
) -> None:
    visitor.http.get("/compare/")
    before = len(simulator.requests())
    async with compare_socket(visitor) as ws:
        await ws.send(
            json.dumps({"action": "run", "prompt": prompt, "model": model, "trials": trials})
        )
        frame = str(await asyncio.wait_for(ws.recv(), 5))
    assert 'role="alert"' in frame and expected in frame
    await throughout(
        lambda: len(simulator.requests()) == before, "a refused run sent nothing", during=0.2
    )
    assert "No comparisons yet." in visitor.http.get("/compare/history/").text


async def test_a_run_belongs_to_its_visitor(app: App) -> None:
    owner, stranger = Visitor(app), Visitor(app)
    try:
        owner.http.get("/compare/")
        async with compare_socket(owner) as ws:
            _, _, trials = await run_comparison(
                ws, "Mine [t-cmp-own]\n#sim tokens=5 tps=100 ttft=0.01"
            )
        run_id = trials[0]["run"]
        for path in (f"/compare/{run_id}/", f"/compare/{run_id}.json", f"/compare/{run_id}.csv"):
            assert stranger.http.get(path).status_code == 404
        import websockets

        with pytest.raises(websockets.InvalidStatus):
            async with compare_socket(stranger, int(run_id)):
                pass
    finally:
        owner.close()
        stranger.close()
