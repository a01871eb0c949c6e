"""The comparison page's pairings and timeout point over real sockets, real Daphne and real
simulators: a gateway timeout that cuts the silent (non-streamed) request for real, two models
through two providers (two simulators, one per protocol), and thinking on vs off."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from chat.compare.runs import PRESETS
from tests.support.app import App, manage, running_app, set_provider
from tests.support.compare_runs import press_run, read_until, verdict_of
from tests.support.simulator import Simulator, running_simulator
from tests.support.visitor import Visitor, compare_socket
from tests.support.waiting import throughout

pytestmark = pytest.mark.live

LONG_ESSAY = str(PRESETS[2][1])
TIMEOUT_WORDING = "Request timed out, please try again later."


@pytest.fixture(scope="module")
def second() -> Iterator[Simulator]:
    """A second upstream: another simulator, asked in DashScope's native protocol."""
    with running_simulator() as instance:
        yield instance


@pytest.fixture(scope="module")
def paired(
    simulator: Simulator, second: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    """The app with its default idle read timeout (300 s: only the gateway's can cut) and two
    providers: the default one (compatible, the shared simulator) and "Second sim" (native)."""
    tmp = tmp_path_factory.mktemp("pairings")
    env = {
        "LLM_API_BASE": simulator.base_url,
        "LLM_PROVIDER_NAME": "First sim",
        "LLM_MODELS": "qwen-plus,qwen-turbo",
    }
    db = tmp / "db.sqlite3"
    full = {**os.environ, **env}
    manage(full, db, "migrate", "--noinput")
    native = ["--protocol", "dashscope", "--base-url", f"{second.base}/api/v1"]
    set_provider(full, db, "Second sim", *native, "--models", "qwen-max,qwen-plus")
    with running_app(tmp, env) as instance:
        yield instance


@pytest.fixture
def guest(paired: App) -> Iterator[Visitor]:
    v = Visitor(paired)
    try:
        yield v
    finally:
        v.close()


def second_provider(visitor: Visitor) -> int:
    page = visitor.http.get("/compare/").text
    group = re.search(r'<optgroup label="Second sim">(.*?)</optgroup>', page, re.S)
    assert group, "the picker offers the second provider"
    found = re.search(r'value="p(\d+):', group.group(1))
    assert found
    return int(found.group(1))


def is_verdict(html: str) -> bool:
    return "data-verdict" in html


async def test_the_gateway_timeout_cuts_the_silent_request_and_the_streamed_one_finishes(
    guest: Visitor, simulator: Simulator
) -> None:
    """The long-essay preset, as offered: the simulator writes the ~800 words it asks for
    (some 1,070 tokens, 20-35 s), so a 10 s gateway cuts the unstreamed request."""
    guest.http.get("/compare/")
    async with compare_socket(guest) as ws:
        run = await press_run(
            ws, {"prompt": LONG_ESSAY, "model": "qwen-plus", "gateway_timeout": "10"}, timeout=90
        )
        (trial,) = run.trials
        on, off = int(trial["stream-answer"]), int(trial["nostream-answer"])
        off_at, off_final, off_html = run.final(off)
        on_at, on_final, _ = run.final(on)
        assert on_final["data-status"] == "complete"
        assert off_final["data-status"] == "error" and off_final["data-outcome"] == "failed"
        assert TIMEOUT_WORDING in off_html  # the upstream's own timeout wording
        # Cut by the gateway's 10 s of silence (never sooner), before its answer was written.
        assert off_at - run.sent >= 10 * 0.95
        assert run.first_delta_at(on) is not None and on_at > off_at
        # No browser reports here: the server's own figures and the verdict follow.
        verdict = verdict_of(await read_until(ws, is_verdict, timeout=10))
    assert verdict.startswith("Without streaming, the gateway's 10 s idle timeout cut the request")
    assert "with streaming, the answer kept the connection busy and finished in" in verdict
    sent = [r for r in simulator.requests() if r["messages"][-1]["content"] == LONG_ESSAY]
    silent = next(r for r in sent[-2:] if not r["stream"])
    assert silent["disconnected_at"] is not None  # we hung up: the gateway cut it
    assert silent["outcome"] == "disconnected"  # before the simulator had written the answer
    saved = guest.http.get(f"/compare/{run.run_id}/").text
    assert "gateway timeout 10 s" in saved
    assert 'data-pane="a"' in saved and 'data-pane="b"' in saved


async def test_two_models_through_two_providers_each_pane_its_own(
    guest: Visitor, simulator: Simulator, second: Simulator
) -> None:
    provider = second_provider(guest)
    prompt = "Two setups [t-pair-2p]\n#sim tokens=40 tps=80 ttft=0.2"
    fields = {
        "prompt": prompt,
        "model": "qwen-plus",
        "pairing": "setups",
        "model_a": "qwen-turbo",
        "stream_a": "on",
        "thinking_a": "",
        "model_b": f"p{provider}:qwen-max",
        "stream_b": "off",
        "thinking_b": "",
    }
    async with compare_socket(guest) as ws:
        run = await press_run(ws, fields)
        (trial,) = run.trials
        a, b = int(trial["stream-answer"]), int(trial["nostream-answer"])
        assert run.final(a)[1]["data-status"] == run.final(b)[1]["data-status"] == "complete"
        assert run.first_delta_at(a) is not None  # A streams
        assert run.first_delta_at(b) is None  # B (streaming off) lands whole
        headers = dict(
            re.findall(
                r'data-pane="([ab])".*?<p class="pane__setup" data-setup>(.*?)</p>',
                run.html(),
                re.S,
            )
        )
        verdict = verdict_of(await read_until(ws, is_verdict, timeout=10))
    assert headers["a"] == "qwen-turbo · First sim · streaming on · thinking: model default"
    assert headers["b"] == "qwen-max · Second sim · streaming off · thinking: model default"
    first, other = simulator.request_for("[t-pair-2p]"), second.request_for("[t-pair-2p]")
    assert (first["model"], first["stream"], first["protocol"]) == ("qwen-turbo", True, "openai")
    assert (other["model"], other["stream"], other["protocol"]) == ("qwen-max", False, "dashscope")
    # The verdict names what differs: model, provider and streaming.
    assert "A (qwen-turbo, First sim, streaming on)" in verdict
    assert "B (qwen-max, Second sim, streaming off)" in verdict
    assert "showed text" in verdict and "tokens per second" in verdict
    saved = guest.http.get(f"/compare/{run.run_id}/").text
    assert "two setups side by side" in saved and "Setup A" in saved


async def test_thinking_on_vs_off_sends_enable_thinking_each_way(
    guest: Visitor, simulator: Simulator
) -> None:
    guest.http.get("/compare/")
    prompt = "Think or not [t-pair-think]\n#sim tokens=20 tps=100 ttft=0.1"
    fields = {
        "prompt": prompt,
        "model": "qwen-plus",
        "pairing": "setups",
        "model_a": "qwen-plus",
        "stream_a": "on",
        "thinking_a": "on",
        "model_b": "qwen-plus",
        "stream_b": "on",
        "thinking_b": "off",
    }
    async with compare_socket(guest) as ws:
        run = await press_run(ws, fields)
        verdict = verdict_of(await read_until(ws, is_verdict, timeout=10))
    sent = [r for r in simulator.requests() if "[t-pair-think]" in r["messages"][-1]["content"]]
    assert sorted(r["enable_thinking"] for r in sent) == [False, True]
    thought = next(r for r in sent if r["enable_thinking"])
    assert thought["reasoning"]  # the simulator thought when asked to
    assert "thinking on" in verdict and "thinking off" in verdict
    assert "qwen-plus" not in verdict  # only what differs is named
    assert len(run.trials) == 1


async def test_five_runs_of_a_setups_pairing_chart_each_setup(guest: Visitor) -> None:
    guest.http.get("/compare/")
    fields = {
        "prompt": "Five setups [t-pair-5]\n#sim tokens=10 tps=100 ttft=0.05",
        "model": "qwen-plus",
        "pairing": "setups",
        "model_a": "qwen-plus",
        "stream_a": "on",
        "model_b": "qwen-turbo",
        "stream_b": "on",
        "trials": "5",
    }
    async with compare_socket(guest) as ws:
        run = await press_run(ws, fields)
        chart = await read_until(ws, lambda html: "<svg" in html, timeout=10)
    assert len(run.trials) == 5
    assert "Waits per run: qwen-plus vs qwen-turbo" in chart
    assert "Streaming on" not in chart
    assert "Over 5 runs (medians):" in verdict_of(chart)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"pairing": "models"}, "not offered", id="unknown-pairing"),
        pytest.param({"gateway_timeout": "7"}, "gateway timeout is not offered", id="bad-timeout"),
        pytest.param(
            {"pairing": "setups", "model_a": "qwen-plus", "model_b": "gpt-nope"},
            "Unknown model",
            id="model-not-offered",
        ),
    ],
)
async def test_a_bad_run_message_is_refused_and_nothing_is_sent(
    guest: Visitor, simulator: Simulator, fields: dict[str, str], expected: str
) -> None:
    guest.http.get("/compare/")
    before = len(simulator.requests())
    async with compare_socket(guest) as ws:
        run = await press_run(
            ws, {"prompt": "hi [t-pair-bad]", "model": "qwen-plus", **fields}, timeout=5
        )
    assert 'role="alert"' in run.html() and expected in run.html()
    await throughout(
        lambda: len(simulator.requests()) == before, "a refused run sent nothing", during=0.2
    )
    assert "No comparisons yet." in guest.http.get("/compare/history/").text
