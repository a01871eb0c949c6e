"""The comparison's pairings and timeout point without a server: the run message's checks (a
refused run saves nothing), what a run and its turns carry, the verdict's sentences for each
case, the chart's labels, the exported fields, and the client's per-request idle timeout."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from django.template.loader import render_to_string
from django.test import Client

from chat import llm, providers
from chat.compare import runs
from chat.compare.charts import ChartData, TrialWaits, render_waits_chart
from chat.compare.rendering import run_context
from chat.compare.runs import Setup, Side, setups_verdict, verdict
from chat.exceptions import ClientError
from chat.models import ComparisonResult, ComparisonRun, Conversation, Message
from chat.owners import Owner

OWNER = Owner(user_id=None, session_key="pairings-test")


def side(
    mode: str,
    first: float | None,
    done: float | None,
    *,
    status: str = Message.Status.COMPLETE,
    error_kind: str = "",
    setup: str = "",
    gateway: float | None = None,
    tps: float | None = 40.0,
    tokens: int | None = 200,
    trial: int = 1,
) -> Side:
    return Side(
        mode=mode,
        trial=trial,
        status=status,
        first_text_s=first,
        complete_s=done,
        measured_in_browser=True,
        server_first_token_s=first,
        server_total_s=done,
        tokens_per_second=tps,
        prompt_tokens=20,
        completion_tokens=tokens,
        total_tokens=None if tokens is None else tokens + 20,
        error_message="Request timed out, please try again later." if error_kind else "",
        error_kind=error_kind,
        setup=setup,
        gateway_timeout_s=gateway,
    )


def timed_out(mode: str, gateway: float = 10.0, setup: str = "") -> Side:
    return side(
        mode,
        None,
        gateway,
        status=Message.Status.ERROR,
        error_kind="timeout",
        gateway=gateway,
        setup=setup,
        tps=None,
        tokens=None,
    )


# --- The run message ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, "streaming", id="absent"),
        pytest.param("", "streaming", id="empty"),
        pytest.param("streaming", "streaming", id="streaming"),
        pytest.param("setups", "setups", id="setups"),
    ],
)
def test_pairings_offered(value: Any, expected: str) -> None:
    assert runs.parse_pairing(value) == expected


@pytest.mark.parametrize("value", ["models", "STREAMING", 1, ["setups"]])
def test_an_unknown_pairing_is_refused(value: Any) -> None:
    with pytest.raises(ClientError, match="not offered"):
        runs.parse_pairing(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("", None, id="none"),
        pytest.param(None, None, id="absent"),
        pytest.param("5", 5.0, id="5"),
        pytest.param("10", 10.0, id="10"),
        pytest.param(30, 30.0, id="30-number"),
    ],
)
def test_gateway_timeouts_offered(value: Any, expected: float | None) -> None:
    assert runs.parse_gateway_timeout(value) == expected


@pytest.mark.parametrize("value", ["7", "0", "-5", "nan", "inf", "10s", "ten", [5]])
def test_a_gateway_timeout_not_offered_is_refused(value: Any) -> None:
    with pytest.raises(ClientError, match="gateway timeout is not offered"):
        runs.parse_gateway_timeout(value)


def test_a_setup_is_read_from_its_panes_fields() -> None:
    content = {"model_a": "qwen-plus", "stream_a": "off", "thinking_a": "on", "model_b": "x"}
    assert runs.parse_setup(content, "a") == Setup("qwen-plus", False, True)
    assert runs.parse_setup(content, "b") == Setup("x", True, None)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param({}, id="no-model"),
        pytest.param({"model_a": "qwen-plus", "stream_a": "maybe"}, id="bad-stream"),
        pytest.param({"model_a": "qwen-plus", "thinking_a": "yes"}, id="bad-thinking"),
    ],
)
def test_a_malformed_setup_is_refused(content: dict[str, Any]) -> None:
    with pytest.raises(ClientError):
        runs.parse_setup(content, "a")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"pairing": "models"}, "not offered", id="unknown-pairing"),
        pytest.param({"gateway_timeout_s": 7.0}, "gateway timeout", id="bad-timeout"),
        pytest.param(
            {"pairing": "setups", "setups": [Setup("qwen-plus"), Setup("gpt-nope")]},
            "Unknown model",
            id="model-not-offered",
        ),
        pytest.param(
            {"pairing": "setups", "setups": [Setup("qwen-plus")]},
            "not understood",
            id="one-setup",
        ),
    ],
)
def test_a_refused_run_saves_nothing(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(ClientError, match=expected):
        runs.create_run(OWNER, "hi", "qwen-plus", 1, **kwargs)
    assert not ComparisonRun.objects.exists() and not Conversation.objects.exists()


@pytest.mark.django_db
def test_a_setups_run_gives_each_side_its_own_setup_and_keeps_the_gateway() -> None:
    run = runs.create_run(
        OWNER,
        "Hello",
        "qwen-plus",
        5,
        pairing="setups",
        gateway_timeout_s=10.0,
        setups=[Setup("qwen-turbo", True, True), Setup("qwen-max", False, False)],
    )
    run.refresh_from_db()
    assert (run.pairing, run.gateway_timeout_s, run.model) == (
        "setups",
        10.0,
        "qwen-turbo / qwen-max",
    )
    left, right = run.stream_conversation, run.nostream_conversation
    assert (left.model, left.stream, left.enable_thinking) == ("qwen-turbo", True, True)
    assert (right.model, right.stream, right.enable_thinking) == ("qwen-max", False, False)


@pytest.mark.django_db
def test_a_streaming_run_is_as_before() -> None:
    run = runs.create_run(OWNER, "Hello", "qwen-plus", 1)
    run.refresh_from_db()
    assert (run.pairing, run.gateway_timeout_s, run.model) == ("streaming", None, "qwen-plus")
    assert run.stream_conversation.stream and not run.nostream_conversation.stream
    assert run.stream_conversation.enable_thinking is None


@pytest.mark.django_db
def test_both_turns_of_a_trial_carry_the_gateway_timeout() -> None:
    run = runs.create_run(OWNER, "Hello", "qwen-plus", 1, gateway_timeout_s=5.0)
    turns = runs.create_trial(OWNER, run, 1, set())
    assert [t.read_timeout for t in turns] == [5.0, 5.0]
    assert all("read_timeout" not in t.options for t in turns)  # never in the request body
    plain = runs.create_run(OWNER, "Hello", "qwen-plus", 1)
    assert [t.read_timeout for t in runs.create_trial(OWNER, plain, 1, set())] == [None, None]


# --- The verdict -------------------------------------------------------------------------------


def test_no_verdict_while_a_side_still_streams() -> None:
    """The cut side ends (and is reported) first: the verdict waits for the other's figures
    instead of saying it "finished in —"."""
    streaming = side("stream", 0.4, None, status=Message.Status.STREAMING, gateway=5.0)
    assert verdict([streaming], [timed_out("nostream", 5.0)]) == ""
    a = side("stream", 0.4, None, status=Message.Status.STREAMING, setup="qwen-turbo")
    assert verdict([a], [side("nostream", 0.9, 6.0, setup="qwen-max")]) == ""


def test_the_timeout_point_verdict_names_the_side_the_gateway_cut() -> None:
    text = verdict([side("stream", 0.4, 24.0, gateway=10.0)], [timed_out("nostream")])
    assert text == (
        "Without streaming, the gateway's 10 s idle timeout cut the request before any answer "
        "arrived; with streaming, the answer kept the connection busy and finished in 24.0 s."
    )


def test_a_streamed_side_cut_by_the_gateway_says_so() -> None:
    text = verdict([timed_out("stream", 5.0)], [side("nostream", 3.0, 3.0, gateway=5.0)])
    assert text.startswith("With streaming, the gateway's 5 s idle timeout cut the request")
    assert "without streaming, the answer arrived after 3.0 s" in text


def test_both_sides_cut_by_the_gateway() -> None:
    text = verdict([timed_out("stream", 5.0)], [timed_out("nostream", 5.0)])
    assert text == (
        "The gateway's 5 s idle timeout cut both requests: neither answer kept the connection busy."
    )


def test_a_timeout_without_a_gateway_is_an_ordinary_failure() -> None:
    failed = side("nostream", None, 300, status=Message.Status.ERROR, error_kind="timeout")
    text = verdict([side("stream", 0.4, 24.0)], [failed])
    assert text == "The non-streaming side failed, so there is nothing to compare yet."


def test_setups_verdict_compares_first_text_complete_speed_and_tokens() -> None:
    text = verdict(
        [side("stream", 0.3, 4.0, setup="qwen-turbo", tps=56.0, tokens=200)],
        [side("nostream", 1.1, 10.2, setup="qwen-max", tps=40.0, tokens=380)],
    )
    assert text == (
        "qwen-turbo showed text 0.80 s sooner than qwen-max (0.30 s vs 1.1 s); qwen-turbo "
        "finished 6.2 s sooner. qwen-turbo produced 1.4× the tokens per second of qwen-max. "
        "qwen-turbo wrote 200 tokens, qwen-max 380."
    )


def test_setups_verdict_when_both_are_alike() -> None:
    text = setups_verdict(
        [side("stream", 0.40, 4.0, setup="thinking on", tps=40.0, tokens=100)],
        [side("nostream", 0.42, 4.1, setup="thinking off", tps=41.0, tokens=100)],
    )
    assert text.startswith("thinking on and thinking off showed text after about the same wait")
    assert "both finished after about as long" in text
    assert "Both produced about as many tokens per second (40.0 and 41.0)." in text


def test_setups_verdict_over_five_runs_says_medians() -> None:
    left = [side("stream", 0.3, 4.0, setup="A", trial=n) for n in range(1, 6)]
    right = [side("nostream", 0.9, 4.0, setup="B", trial=n) for n in range(1, 6)]
    assert setups_verdict(left, right).startswith("Over 5 runs (medians): A showed text")


def test_setups_verdict_with_a_failed_or_cut_setup() -> None:
    ok = side("stream", 0.3, 4.0, setup="qwen-turbo", gateway=5.0)
    cut = timed_out("nostream", 5.0, setup="qwen-max")
    assert setups_verdict([ok], [cut]) == (
        "With qwen-max, the gateway's 5 s idle timeout cut the request before any answer "
        "arrived; with qwen-turbo, the answer finished in 4.0 s."
    )
    failed = side("nostream", None, 1.0, status=Message.Status.ERROR, setup="qwen-max")
    assert setups_verdict([ok], [failed]) == (
        "qwen-max failed, so there is nothing to compare yet."
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(
            ("qwen-turbo", "P", True, None), ("qwen-max", "P", True, None),
            ("qwen-turbo", "qwen-max"), id="models",
        ),
        pytest.param(
            ("m", "P", True, True), ("m", "P", True, False),
            ("thinking on", "thinking off"), id="thinking",
        ),
        pytest.param(
            ("m", "Native", True, None), ("m", "Compatible", True, None),
            ("Native", "Compatible"), id="providers",
        ),
        pytest.param(
            ("m", "P", True, None), ("m", "P", False, None),
            ("streaming on", "streaming off"), id="streaming",
        ),
        pytest.param(
            ("m", "P", True, True), ("n", "P", True, False),
            ("A (m, thinking on)", "B (n, thinking off)"), id="two-things",
        ),
        pytest.param(("m", "P", True, None), ("m", "P", True, None), ("A", "B"), id="same"),
    ],
)  # fmt: skip
def test_setup_names_say_only_what_differs(
    a: tuple[str, str, bool, bool | None], b: tuple[str, str, bool, bool | None], expected: Any
) -> None:
    setups = {
        mode: runs.PaneSetup(model, provider, stream, thinking, buffered=False)
        for mode, (model, provider, stream, thinking) in zip(runs.MODES, (a, b), strict=True)
    }
    names = runs.setup_names(setups)
    assert (names["stream"], names["nostream"]) == expected


# --- The page, the chart and the exports -------------------------------------------------------


def saved_setups_run(gateway: float | None = 10.0) -> ComparisonRun:
    run = runs.create_run(
        OWNER,
        "Hello",
        "qwen-plus",
        1,
        pairing="setups",
        gateway_timeout_s=gateway,
        setups=[Setup("qwen-turbo", True, None), Setup("qwen-max", True, None)],
    )
    for mode, conversation, kind in (
        ("stream", run.stream_conversation, ""),
        ("nostream", run.nostream_conversation, "timeout"),
    ):
        answer = Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            content="" if kind else "An answer.",
            status=Message.Status.ERROR if kind else Message.Status.COMPLETE,
            error_kind=kind,
            error_message="Request timed out, please try again later." if kind else "",
            model=conversation.model,
            streamed=True,
            ttft_ms=300.0,
            total_ms=4000.0,
        )
        ComparisonResult.objects.create(
            run=run, trial=1, mode=mode, answer=answer, browser_complete_ms=4000.0
        )
    return ComparisonRun.objects.get(pk=run.pk)


@pytest.mark.django_db
def test_each_pane_says_what_it_ran_and_the_about_line_the_gateway() -> None:
    run = saved_setups_run()
    context = run_context(run)
    html = render_to_string("compare/_run.html", {**context, "oob": False})
    assert 'data-mode="stream" data-pane="a"' in html
    assert 'data-mode="nostream" data-pane="b"' in html
    name = providers.default_upstream().name
    assert f"qwen-turbo · {name} · streaming on · thinking: model default" in html
    assert "gateway timeout 10 s" in html and "two setups side by side" in html
    assert context["verdict"].startswith("With qwen-max, the gateway's 10 s idle timeout")


@pytest.mark.django_db
def test_exports_carry_the_pairing_the_gateway_and_each_setup() -> None:
    run = saved_setups_run()
    fields = runs.run_export_fields(run)
    assert fields["pairing"] == "setups" and fields["gateway_timeout_s"] == 10.0
    assert fields["setups"]["a"]["model"] == "qwen-turbo"
    assert fields["setups"]["b"] == {
        "mode": "nostream",
        "model": "qwen-max",
        "provider": providers.default_upstream().name,
        "stream": True,
        "enable_thinking": None,
    }
    sides = runs.run_sides(run)
    row = runs.side_export_fields(sides["nostream"][0], run)
    assert row == {
        "pane": "b",
        "pairing": "setups",
        "setup": "qwen-max",
        "gateway_timeout_s": 10.0,
        "error_kind": "timeout",
    }


def test_a_setups_chart_labels_its_series_by_setup() -> None:
    svg = render_waits_chart(
        ChartData(
            stream=[TrialWaits(0.3, 4.0)],
            nostream=[TrialWaits(1.1, 9.0)],
            names=("qwen-turbo", "a-rather-long-model-name"),
        )
    )
    assert "Waits per run: qwen-turbo vs a-rather-long-model-name" in svg
    assert ">qwen-turbo</text>" in svg and "a-rather-long…<" in svg
    assert "Streaming on" not in svg and "streaming on" not in svg


# --- The client's idle timeout per request -----------------------------------------------------


async def test_a_request_read_timeout_shortens_the_pools_never_lengthens_it() -> None:
    async with llm.make_http_client(connect_timeout=3, read_timeout=20) as http:
        client = llm.ChatClient(http, "http://127.0.0.1:9/v1")
        assert client._timeout(None) == http.timeout  # the pool's own
        assert client._timeout(5.0) == httpx.Timeout(connect=3, read=5.0, write=3, pool=3)
        assert client._timeout(30.0) == httpx.Timeout(connect=3, read=20, write=3, pool=3)


@pytest.mark.django_db
def test_the_csv_and_json_exports_carry_the_pairing_and_the_gateway(client: Client) -> None:
    client.get("/compare/")
    key = client.session.session_key
    assert key
    owner = Owner(user_id=None, session_key=key)
    run = runs.create_run(
        owner,
        "Hello",
        "qwen-plus",
        1,
        pairing="setups",
        gateway_timeout_s=10.0,
        setups=[Setup("qwen-turbo"), Setup("qwen-max", stream=False)],
    )
    for mode in runs.MODES:
        answer = Message.objects.create(
            conversation=run.conversation_for(mode),
            role=Message.Role.ASSISTANT,
            content="x",
            status=Message.Status.COMPLETE,
            model="qwen-plus",
        )
        ComparisonResult.objects.create(run=run, trial=1, mode=mode, answer=answer)
    saved = client.get(f"/compare/{run.pk}.json").json()
    assert saved["pairing"] == "setups" and saved["gateway_timeout_s"] == 10.0
    assert saved["setups"]["b"]["model"] == "qwen-max" and saved["setups"]["b"]["stream"] is False
    assert {r["pane"] for r in saved["results"]} == {"a", "b"}
    header = client.get(f"/compare/{run.pk}.csv").content.decode().splitlines()[0]
    assert header.startswith("trial,mode,status,first_text_s")
    assert "pairing" in header and "gateway_timeout_s" in header and "error_kind" in header
