"""Replaying a saved comparison (``chat.compare.replay``) and the presentation view: the frames
are cut from the saved rows by their timelines, moved onto the browser's clock, and a run saved
before timelines falls back to an even, approximate pace."""

from __future__ import annotations

import json
import re

import pytest
from django.template.loader import render_to_string
from django.test import Client

from chat.compare import replay
from chat.compare.replay import present_context
from chat.models import ComparisonResult, ComparisonRun, Conversation, Message
from chat.timeline import Step, encode

pytestmark = pytest.mark.django_db

ANSWER = "Canberra was chosen as a compromise between Sydney and Melbourne. 堪培拉是首都。"
THOUGHT = "The user asks about capitals."


def session_of(client: Client) -> str:
    """A visitor's session key (the comparison page gives one to whoever opens it)."""
    client.get("/compare/")
    key = client.session.session_key
    assert key
    return key


def stream_steps(text: str, every: int, *, start: int, gap: int, thought: str = "") -> list[Step]:
    """Frames of ``every`` characters, ``gap`` ms apart from ``start``: the thought first."""
    steps, at = [], start
    for i in range(0, len(thought), every):
        steps.append(Step(at, 0, len(thought[i : i + every])))
        at += gap
    for i in range(0, len(text), every):
        steps.append(Step(at, len(text[i : i + every])))
        at += gap
    return steps


def saved_run(
    session_key: str,
    *,
    timelines: bool = True,
    trials: int = 1,
    browser: tuple[float | None, float | None, float | None, float | None] = (
        420.0,
        1200.0,
        2350.0,
        2350.0,
    ),
) -> ComparisonRun:
    """A finished run as the service saves it: two conversations, their answers (with or
    without timelines) and what the browser measured (on first, on complete, off first, off
    complete)."""
    sides = {
        mode: Conversation.objects.create(
            purpose=Conversation.Purpose.COMPARE,
            model="qwen-plus",
            stream=mode == "stream",
            session_key=session_key,
        )
        for mode in ("stream", "nostream")
    }
    run = ComparisonRun.objects.create(
        prompt="Why Canberra?",
        model="qwen-plus",
        trials=trials,
        upstream="simulator",
        stream_conversation=sides["stream"],
        nostream_conversation=sides["nostream"],
        session_key=session_key,
    )
    on_first, on_done, off_first, off_done = browser
    for trial in range(1, trials + 1):
        steps = stream_steps(ANSWER, 7, start=300, gap=25, thought=THOUGHT)
        rows = {
            "stream": (steps, True, 300.0, steps[-1].at_ms + 15.0),
            "nostream": ([Step(2310, len(ANSWER), len(THOUGHT))], False, 2310.0, 2310.0),
        }
        for mode, (mode_steps, streamed, ttft, total) in rows.items():
            Message.objects.create(
                conversation=sides[mode], role=Message.Role.USER, content=run.prompt
            )
            answer = Message.objects.create(
                conversation=sides[mode],
                role=Message.Role.ASSISTANT,
                content=ANSWER,
                reasoning=THOUGHT,
                status=Message.Status.COMPLETE,
                model="qwen-plus",
                streamed=streamed,
                ttft_ms=ttft,
                total_ms=total,
                timeline=encode(mode_steps) if timelines else None,
            )
            first, done = (on_first, on_done) if streamed else (off_first, off_done)
            ComparisonResult.objects.create(
                run=run,
                trial=trial,
                mode=mode,
                answer=answer,
                browser_first_text_ms=first,
                browser_complete_ms=done,
            )
    return run


def joined(frames: list[list[object]]) -> tuple[str, str]:
    return "".join(str(f[1]) for f in frames), "".join(str(f[2]) for f in frames)


def test_frames_are_cut_from_the_saved_text_and_keep_their_recorded_gaps() -> None:
    run = saved_run("s1")
    data = replay.replay_data(run)
    assert data["run"] == run.pk and data["approximate"] is False
    (trial,) = data["trials"]
    on, off = trial["panes"]["stream"], trial["panes"]["nostream"]
    assert joined(on["frames"]) == (ANSWER, THOUGHT)
    assert joined(off["frames"]) == (ANSWER, THOUGHT)
    offsets = [f[0] for f in on["frames"]]
    assert offsets == sorted(offsets)
    # The first frame moves to where the browser saw the first text; the gaps stay 25 ms.
    assert offsets[0] == 420 and {b - a for a, b in zip(offsets, offsets[1:], strict=False)} == {25}
    assert on["first_text_ms"] == 420
    # The browser's completion is consistent (after the last frame, within the server's tail
    # and a second): it is used.
    assert offsets[-1] < 1200 and on["complete_ms"] == 1200
    # The non-streamed answer lands whole at its recorded time.
    assert off["frames"] == [[2350, ANSWER, THOUGHT]] and off["complete_ms"] == 2350
    # The run ends as it looked: each pane's finished article.
    assert f'id="message-{on["answer"]}"' in on["article"]
    assert 'data-status="complete"' in off["article"] and "Canberra" in off["article"]


@pytest.mark.parametrize(
    ("browser_complete", "expected"),
    [
        pytest.param(1300.0, 1300, id="consistent-browser-completion"),
        pytest.param(900.0, 1015, id="before-the-last-frame-server-tail-instead"),
        pytest.param(9000.0, 1015, id="a-background-tab-reported-late-server-tail-instead"),
        pytest.param(None, 1015, id="not-measured-server-tail"),
    ],
)
def test_completion_is_the_browsers_only_when_it_is_consistent(
    browser_complete: float | None, expected: int
) -> None:
    frames = [(300, "a", ""), (500, "b", ""), (700, "c", "")]
    plan = replay.align(
        frames,
        browser_first_text_ms=600.0,
        browser_complete_ms=browser_complete,
        server_total_ms=715.0,
    )
    assert [f[0] for f in plan.frames] == [600, 800, 1000]
    assert plan.complete_ms == expected


def test_without_a_browser_measure_the_servers_times_stand_and_never_go_negative() -> None:
    plan = replay.align(
        [(300, "a", ""), (320, "b", "")],
        browser_first_text_ms=None,
        browser_complete_ms=None,
        server_total_ms=400.0,
    )
    assert plan.frames == [(300, "a", ""), (320, "b", "")] and plan.complete_ms == 400
    early = replay.align(  # a later trial, timed from when its frame reached the page
        [(300, "a", ""), (320, "b", "")],
        browser_first_text_ms=10.0,
        browser_complete_ms=None,
        server_total_ms=400.0,
    )
    assert [f[0] for f in early.frames] == [10, 30]


def test_text_the_steps_do_not_account_for_joins_the_last_frame() -> None:
    frames = replay.cut([Step(100, 3), Step(150, 0), Step(200, 2)], "Hello world", "")
    assert frames == [(100, "Hel", ""), (200, "lo world", "")]
    assert replay.cut([], "", "") == []


def test_a_run_saved_before_timelines_is_replayed_approximately() -> None:
    run = saved_run("s2", timelines=False)
    data = replay.replay_data(run)
    assert data["approximate"] is True
    (trial,) = data["trials"]
    on, off = trial["panes"]["stream"], trial["panes"]["nostream"]
    assert joined(on["frames"]) == (ANSWER, THOUGHT)
    offsets = [f[0] for f in on["frames"]]
    assert offsets == sorted(offsets) and offsets[0] == 420 and offsets[-1] < 1200
    assert len(on["frames"]) == len(re.findall(r"\S+", THOUGHT + " " + ANSWER))
    assert off["frames"] == [[2350, ANSWER, THOUGHT]] and off["complete_ms"] == 2350


def test_a_five_trial_run_replays_every_finished_trial_in_order() -> None:
    run = saved_run("s3", trials=5)
    data = replay.replay_data(run)
    assert [t["trial"] for t in data["trials"]] == [1, 2, 3, 4, 5]
    streaming = ComparisonResult.objects.get(run=run, trial=5, mode="nostream").answer
    assert streaming is not None
    Message.objects.filter(pk=streaming.pk).update(status=Message.Status.STREAMING)
    run = ComparisonRun.objects.get(pk=run.pk)
    assert [t["trial"] for t in replay.replay_data(run)["trials"]] == [1, 2, 3, 4]


def test_the_run_page_offers_a_replay_with_its_data_and_no_script_to_execute(
    client: Client,
) -> None:
    run = saved_run(session_of(client))
    html = client.get(f"/compare/{run.pk}/").content.decode()
    assert re.search(r"<button[^>]*data-replay-button[^>]*>Replay</button>", html)
    block = re.search(r'<script id="replay-data" type="application/json">(.*?)</script>', html)
    assert block is not None and json.loads(block.group(1))["run"] == run.pk
    assert "Replay of the run of" in html and "data-replay-label" in html
    assert f'href="/compare/{run.pk}/present/"' in html


def test_the_presentation_view_is_the_owners_with_clocks_chart_and_keys(client: Client) -> None:
    run = saved_run(session_of(client))
    response = client.get(f"/compare/{run.pk}/present/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="compare compare--present"' in html
    assert html.count("data-pane-timer") == 2 and "<svg" in html  # both clocks, the chart
    assert "data-present-rerun" in html and "ws-connect" in html
    assert "run again" in html and "replay" in html
    assert Client().get(f"/compare/{run.pk}/present/").status_code == 404  # someone else


def test_the_presentation_template_shared_has_no_socket_and_no_running_again() -> None:
    run = saved_run("s4")
    html = render_to_string(
        "compare/present.html", present_context(run, shared=True, back_url="/s/token/")
    )
    assert "ws-connect" not in html and "data-present-rerun" not in html
    assert "run again" not in html and "data-replay-button" in html
    assert 'data-back-url="/s/token/"' in html
