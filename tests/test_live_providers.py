"""Both protocols and both incremental modes through the whole relay, against the simulator.

One app, four upstreams on one simulator that demands an API key: the default provider speaks
DashScope native with ``incremental_output: false``; admin-added providers speak native
incremental, OpenAI-compatible, and one holds a wrong key. For each, what the page streamed,
what was saved and what the simulator sent must be the same text, thinking included; and the
keys must never appear in a page, a frame or a log line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.app import App, manage, running_app, set_provider
from tests.support.frames import Frame, streamed_text
from tests.support.simulator import KEY, Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor, answer_row

WRONG = "sk-wrong-Provider9876543210fedcba"
FAST = "tokens=40 tps=400 ttft=0.05"

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def multi(keyed_simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    sim = f"http://127.0.0.1:{keyed_simulator.port}"
    tmp = tmp_path_factory.mktemp("multi")
    env = {
        "LLM_API_PROTOCOL": "dashscope",
        "LLM_API_BASE": f"{sim}/api/v1",
        "LLM_API_KEY": KEY,
        "LLM_INCREMENTAL_OUTPUT": "0",
        "LLM_PROVIDER_NAME": "Native cumulative",
        "LLM_MODELS": "qwen-plus,qwq-plus",
        "COMPAT_API_KEY": KEY,
        "WRONG_API_KEY": WRONG,
        "LOG_LEVEL": "DEBUG",
    }
    # Migrate and register the providers before the server starts.
    full = {**os.environ, **env}
    db = tmp / "db.sqlite3"
    manage(full, db, "migrate", "--noinput")
    set_provider(
        full,
        db,
        "Native incremental",
        "--protocol",
        "dashscope",
        "--base-url",
        f"{sim}/api/v1",
        "--models",
        "qwen-plus,qwq-plus",
        "--api-key-env",
        "COMPAT_API_KEY",
    )
    set_provider(
        full,
        db,
        "Compatible",
        "--base-url",
        f"{sim}/v1",
        "--models",
        "qwen-plus,qwq-plus",
        "--api-key-env",
        "COMPAT_API_KEY",
    )
    set_provider(full, db, "Wrong key", "--base-url", f"{sim}/v1", "--models", "qwen-plus",
                 "--api-key-env", "WRONG_API_KEY")  # fmt: skip
    with running_app(tmp, env) as instance:
        yield instance


@pytest.fixture
def guest(multi: App) -> Iterator[Visitor]:
    v = Visitor(multi)
    try:
        yield v
    finally:
        v.close()


def provider_ids(visitor: Visitor, conversation_id: int) -> dict[str, int]:
    page = visitor.http.get(f"/c/{conversation_id}/").text
    found: dict[str, int] = {}
    for label, body in re.findall(r'<optgroup label="([^"]+)">(.*?)</optgroup>', page, re.S):
        match = re.search(r'value="p(\d+):', body)
        if match:
            found[label] = int(match.group(1))
    return found


async def ask(
    visitor: Visitor, choice: str, marker: str, directives: str
) -> tuple[dict[str, Any], list[Frame], dict[str, str]]:
    conversation = visitor.new_conversation(model=choice)
    async with visitor.socket(conversation) as ws:
        await send(ws, f"Explain tides {marker}\n#sim {directives}")
        answer_id, frames, final = await collect_answer(ws)
    row = answer_row(visitor.export(conversation), answer_id)
    row["streamed_text"] = streamed_text(frames, answer_id)
    return row, frames, final


CASES = [
    pytest.param("", "native-cumulative", id="native-cumulative"),
    pytest.param("Native incremental", "native-incremental", id="native-incremental"),
    pytest.param("Compatible", "openai", id="openai-compatible"),
]


@pytest.mark.parametrize(("provider", "label"), CASES)
async def test_answer_relayed_and_saved_exactly(
    guest: Visitor, keyed_simulator: Simulator, provider: str, label: str
) -> None:
    ids = provider_ids(guest, guest.new_conversation())
    choice = f"p{ids[provider]}:qwen-plus" if provider else "qwen-plus"
    marker = f"[t-{label}]"
    row, _, final = await ask(guest, choice, marker, f"{FAST} seed=11")
    sent = keyed_simulator.request_for(marker)
    assert sent["protocol"] == ("openai" if label == "openai" else "dashscope")
    if label.startswith("native"):
        assert sent["incremental"] is (label == "native-incremental")
    assert final["data-status"] == "complete"
    assert row["content"] == sent["text"] and row["content"]
    assert row["streamed_text"] == sent["text"]  # every character crossed the socket once
    assert row["completion_tokens"] == sent["tokens_sent"]
    assert row["provider_name"] == (provider or "Native cumulative")


@pytest.mark.parametrize(("provider", "label"), CASES)
async def test_thinking_relayed_saved_and_timed(
    guest: Visitor, keyed_simulator: Simulator, provider: str, label: str
) -> None:
    ids = provider_ids(guest, guest.new_conversation())
    choice = f"p{ids[provider]}:qwq-plus" if provider else "qwq-plus"
    marker = f"[t-think-{label}]"
    row, frames, final = await ask(guest, choice, marker, f"{FAST} seed=5 think=30")
    sent = keyed_simulator.request_for(marker)
    assert sent["reasoning"] and sent["text"]
    assert row["reasoning"] == sent["reasoning"]
    assert row["content"] == sent["text"]
    assert row["thinking_ms"] is not None and row["answer_ms"] >= row["ttft_ms"]
    everything = "".join(f.html for f in frames)
    # The summary became a live timer when thinking began, then "Thought for" at the answer.
    assert "Thinking…" in everything and 'data-thought-ms="' in everything
    assert everything.index("Thinking…") < everything.index("data-thought-ms")
    assert "data-thinking-ms" in frames[-1].html and final["data-status"] == "complete"


async def test_a_wrong_key_is_a_clear_error_and_no_key_leaks(guest: Visitor, multi: App) -> None:
    ids = provider_ids(guest, guest.new_conversation())
    row, frames, final = await ask(guest, f"p{ids['Wrong key']}:qwen-plus", "[t-wrong]", FAST)
    assert final["data-status"] == "error"
    assert row["error_message"] == "The model server rejected the API key (HTTP 401)."
    # Nothing the app shows, sends or logs holds a key: pages, exports, frames, the log.
    conversation = guest.new_conversation()
    seen = [f.html for f in frames]
    for path in ("/", f"/c/{conversation}/", "/compare/", "/compare/history/", "/admin/login/",
                 f"/c/{conversation}/export.json"):  # fmt: skip
        seen.append(guest.http.get(path).text)
    seen.append(multi.log())
    # Nor does the database: providers name the variable that holds a key, never the key.
    for stored in multi.db_path.parent.glob("db.sqlite3*"):
        seen.append(stored.read_bytes().decode("latin-1"))
    for text in seen:
        assert KEY not in text and WRONG not in text
        assert KEY[:12] not in text and WRONG[:12] not in text


async def test_native_error_event_keeps_partial_text_and_shows_the_request_id(
    guest: Visitor, keyed_simulator: Simulator
) -> None:
    marker = "[t-native-moderation]"
    row, frames, final = await ask(
        guest, "qwen-plus", marker, f"{FAST} fault=midstream_error fault_after=8"
    )
    sent = keyed_simulator.request_for(marker)
    assert final["data-status"] == "error"
    assert row["content"] and sent["text"].startswith(row["content"])
    assert row["error_message"] == (
        "Output data may contain inappropriate content. (DataInspectionFailed)"
    )
    assert row["request_id"] == sent["request_id"]
    assert f"<code data-request-id>{sent['request_id']}</code>" in frames[-1].html


async def test_native_rate_limit_behind_http_200_is_a_rate_limit(
    guest: Visitor, keyed_simulator: Simulator
) -> None:
    row, _, final = await ask(guest, "qwen-plus", "[t-native-429]", f"{FAST} fault=429")
    assert final["data-status"] == "error"
    assert row["error_kind"] == "rate_limit"
    assert row["error_message"].startswith("Rate limited by the model server")


@pytest.mark.parametrize("field", ["reasoning", "reasoning_text", "think"])
async def test_every_name_for_thinking_is_saved_as_thinking(
    guest: Visitor, keyed_simulator: Simulator, field: str
) -> None:
    """vLLM's ``reasoning``, ``reasoning_text`` and ``<think>`` tags inside the content."""
    ids = provider_ids(guest, guest.new_conversation())
    marker = f"[t-field-{field}]"
    row, _, final = await ask(
        guest, f"p{ids['Compatible']}:qwen-plus", marker, f"{FAST} think=25 reasoning_field={field}"
    )
    sent = keyed_simulator.request_for(marker)
    assert final["data-status"] == "complete"
    assert row["reasoning"] == sent["reasoning"] and row["reasoning"]
    assert row["content"] == sent["text"]
    assert "<think>" not in row["content"]
