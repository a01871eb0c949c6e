"""Errors are saved as data (a template of ours and its params) and shown in the reader's
language through the catalogue; nothing parses our own English sentences back.

``chat/llm`` (no Django) and ``chat/generation`` word every error as a ``Wording``; the row
keeps the English (``error_message``) and the wording (``error_wording``), and
``chat.rendering.errors.error_text`` renders the wording with ``gettext``. A provider's own words
stay as written; a row saved before wordings existed shows its English as saved.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import translation

from chat.conversations.work import export_markdown
from chat.generation.failures import (
    InternalFailure,
    ServerRestarted,
    ServerStopped,
    ServiceFailure,
)
from chat.generation.records import save_final, settle_answers
from chat.generation.state import Generation
from chat.generation.turns import create_turn
from chat.llm import ChatClient, UpstreamError, Wording
from chat.llm import errors as llm_errors
from chat.llm.deadline import deadline_error
from chat.llm.dialects import make_dialect
from chat.llm.responses import stream_events, whole_events
from chat.llm.transport import map_transport_error
from chat.models import Conversation, Message
from chat.owners import Owner
from chat.rendering import errors
from chat.rendering.fragments import message_view, render_message

ROOT = Path(__file__).resolve().parent.parent
ZH = "zh-hans"
HAN = re.compile(r"[\u4e00-\u9fff]")
URL = "http://127.0.0.1:9/v1/chat/completions"
QUOTA = json.dumps({"error": {"message": "quota exceeded"}}).encode()
OWNER = Owner(user_id=None, session_key="w" * 32)

# The .mo catalogue, built if missing, before any test of the module.
pytestmark = pytest.mark.usefixtures("compiled")


@pytest.fixture(autouse=True)
def english_afterwards() -> Iterator[None]:
    yield
    translation.deactivate()


# --- Every template the code can produce ------------------------------------------------------


def _written_templates() -> set[str]:
    """Each ``Wording("…")`` and each error class's ``default_message`` in ``chat``, read from
    the source: a template added anywhere is found without being listed here."""
    found: set[str] = set()
    for path in sorted((ROOT / "chat").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _called(node.func) == "Wording":
                first = node.args[0] if node.args else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.add(first.value)
                else:  # only a class's default may be passed by name (found below)
                    assert first is not None and _called(first) == "default_message", (
                        f"{path.relative_to(ROOT)}:{node.lineno}: write the template itself"
                    )
            elif isinstance(node, ast.ClassDef):
                for statement in node.body:
                    if (
                        isinstance(statement, ast.Assign)
                        and [_called(t) for t in statement.targets] == ["default_message"]
                        and isinstance(statement.value, ast.Constant)
                        and statement.value.value
                    ):
                        found.add(statement.value.value)
    return found


def _called(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in [direct, *_subclasses(direct)]]


def test_every_template_is_in_the_catalogue_and_translated() -> None:
    written = _written_templates()
    defaults = {
        cls.default_message
        for cls in [UpstreamError, *_subclasses(UpstreamError), *_subclasses(ServiceFailure)]
        if cls.default_message
    }
    assert len(written) > 30 and defaults <= written
    # The catalogue module lists exactly what the code writes (so makemessages finds each).
    assert written == errors.TEMPLATES, written ^ errors.TEMPLATES
    with translation.override(ZH):
        untranslated = [t for t in sorted(written) if not HAN.search(translation.gettext(t))]
    assert untranslated == []


def _templates(wording: Wording) -> Iterator[str]:
    yield wording.template
    for value in wording.params.values():
        if isinstance(value, Wording):
            yield from _templates(value)


async def _failure(events: AsyncGenerator[Any, None]) -> UpstreamError:
    with pytest.raises(UpstreamError) as raised:
        async for _ in events:
            pass
    return raised.value


def _response_errors() -> list[UpstreamError]:
    dialect = make_dialect("openai", incremental=True)
    html = httpx.Response(200, headers={"content-type": "text/html"}, content=b"<p>hi</p>")
    garbage = httpx.Response(200, content=b"not json")
    sse = {"content-type": "text/event-stream"}
    malformed = httpx.Response(200, headers=sse, content=b"data: [\n\n")
    early_done = httpx.Response(200, headers=sse, content=b"data: [DONE]\n\n")
    endless_line = httpx.Response(200, headers=sse, content=b"data: " + b"x" * (2 << 20))
    huge = httpx.Response(200, content=b" " * (9 << 20))

    async def collect() -> list[UpstreamError]:
        return [
            await _failure(stream_events(dialect, html, URL, {})),
            await _failure(whole_events(dialect, garbage, URL)),
            await _failure(stream_events(dialect, malformed, URL, {})),
            await _failure(stream_events(dialect, early_done, URL, {})),
            await _failure(stream_events(dialect, endless_line, URL, {})),
            await _failure(whole_events(dialect, huge, URL)),
        ]

    return asyncio.run(collect())


def produced() -> list[UpstreamError | ServiceFailure]:
    """Errors as the code makes them, one or more per way it has of failing."""
    made: list[UpstreamError | ServiceFailure] = [
        cls() for cls in [UpstreamError, *_subclasses(UpstreamError)]
    ]
    for status in (400, 401, 403, 404, 429, 500, 503, 302):
        for body in (b"", QUOTA):
            made.append(llm_errors.error_from_response(status, {}, body, URL))
    stream_only = b'{"message": "This model only support stream mode"}'
    made.append(llm_errors.error_from_response(400, {}, stream_only, ""))
    made.append(llm_errors.error_from_response(429, {"Retry-After": "7.2"}, b"", URL))
    made.append(llm_errors.stream_error({"code": "InternalError"}))
    made.append(llm_errors.stream_error({}))
    made.append(llm_errors.error_from_event({"code": "Throttling.RateQuota"}))
    request = httpx.Request("POST", URL)
    for exc, got_response in (
        (httpx.ConnectError("refused", request=request), False),
        (httpx.ReadTimeout("slow", request=request), True),
        (httpx.InvalidURL("nope"), False),
        (httpx.DecodingError("gzip", request=request), True),
        (httpx.RemoteProtocolError("closed", request=request), False),
        (httpx.RemoteProtocolError("closed", request=request), True),
    ):
        made.append(map_transport_error(exc, got_response=got_response, base_url=URL))
    made += [deadline_error(600, partial=True), deadline_error(0.5, partial=False)]
    made += _response_errors()
    made += [ServerStopped(), ServerRestarted(), InternalFailure.of(KeyError("x"))]
    return made


def test_every_error_made_is_worded_in_catalogued_templates() -> None:
    for error in produced():
        wording = error.wording
        assert wording is not None, error
        assert set(_templates(wording)) <= errors.TEMPLATES, error
        assert wording.text() == error.message  # the English is the template filled in
        data = json.loads(json.dumps(wording.as_data()))  # as the JSONField keeps it
        assert Wording.from_data(data) == wording
        with translation.override("en"):
            assert errors.error_text(data, "unused") == error.message
        with translation.override(ZH):
            shown = errors.error_text(data, "unused")
        assert HAN.search(shown), shown
        assert set(re.findall(r"\d+", error.message)) <= set(re.findall(r"\d+", shown)), shown


def test_the_service_failures_are_not_upstream_errors_and_have_their_own_kinds() -> None:
    kinds = {type(f): f.kind for f in (ServerStopped(), ServerRestarted(), InternalFailure())}
    assert kinds == {
        ServerStopped: "interrupted",
        ServerRestarted: "interrupted",
        InternalFailure: "internal",
    }
    assert not any(issubclass(cls, UpstreamError) for cls in kinds)
    assert InternalFailure.of(KeyError("secret")).message == (
        "Internal error (KeyError); the partial answer was kept."
    )


# --- Rendering a saved wording ----------------------------------------------------------------


def test_a_nested_wording_renders_inside_out_in_chinese() -> None:
    """A 404 without a body: our hint is the detail of our refusal, both translated."""
    error = llm_errors.error_from_response(404, {}, b"", URL)
    assert error.message == (
        "The model server refused the request (HTTP 404): nothing answers at "
        "127.0.0.1:9/v1/chat/completions; check the base URL"
    )
    data = error.wording.as_data() if error.wording else None
    assert data == {
        "template": "The model server refused the request (HTTP %(status)s): %(detail)s",
        "params": {
            "status": 404,
            "detail": {
                "template": "nothing answers at %(endpoint)s; check the base URL",
                "params": {"endpoint": "127.0.0.1:9/v1/chat/completions"},
            },
        },
    }
    with translation.override(ZH):
        assert errors.error_text(data, error.message) == (
            "模型服务器拒绝了该请求（HTTP 404）：127.0.0.1:9/v1/chat/completions 没有响应，"
            "请检查 base URL"
        )
        retry = llm_errors.rate_limited_wording(7.2).as_data()
        assert errors.error_text(retry, "") == "模型服务器限流了，请在 8 秒后重试。"


def test_a_providers_own_words_pass_through_unchanged() -> None:
    refused = llm_errors.error_from_response(400, {}, QUOTA, URL)
    assert refused.wording is not None and refused.wording.params["detail"] == "quota exceeded"
    moderated = llm_errors.stream_error({"error": {"message": "Bad output.", "code": "x_y"}})
    assert moderated.wording is None and moderated.message == "Bad output. (x_y)"
    with translation.override(ZH):
        assert errors.error_text(refused.wording.as_data(), refused.message) == (
            "模型服务器拒绝了该请求（HTTP 400）：quota exceeded"
        )
        assert errors.error_text(None, moderated.message) == "Bad output. (x_y)"


def test_an_unreadable_wording_falls_back_to_the_saved_english() -> None:
    with translation.override(ZH):
        assert errors.error_text({"template": 3}, "Saved.") == "Saved."
        assert errors.error_text({"template": "%(gone)s", "params": {"x": 1}}, "Saved.") == "Saved."


def test_a_key_a_provider_echoes_is_hidden_in_the_wording_too() -> None:
    body = json.dumps({"error": {"message": "bad key sk-secret-1"}}).encode()
    error = llm_errors.error_from_response(400, {}, body, URL)

    async def redact() -> UpstreamError:
        async with httpx.AsyncClient() as http:
            client = ChatClient(http, "http://127.0.0.1:9/v1", api_key="sk-secret-1")
            return client._redact(error)

    hidden = asyncio.run(redact())
    assert "sk-secret-1" not in hidden.message and "sk-secret-1" not in str(hidden.args)
    assert hidden.wording is not None
    assert "sk-secret-1" not in json.dumps(hidden.wording.as_data())
    assert hidden.message == "The model server refused the request (HTTP 400): bad key ***"


# --- Saved and shown --------------------------------------------------------------------------


def _conversation() -> Conversation:
    return Conversation.objects.create(session_key=OWNER.session_key, model="qwen-plus")


@pytest.mark.django_db
def test_a_saved_answer_keeps_english_and_wording_and_shows_chinese() -> None:
    chat = _conversation()
    turn = create_turn(OWNER, chat.pk, "Hello", live=set())
    generation = Generation(turn=turn)
    generation.text.append("Half an ans")
    generation.error = llm_errors.error_from_response(404, {}, b"", URL)
    assert save_final(turn.answer.id, generation.outcome())
    row = Message.objects.get(pk=turn.answer.id)
    assert row.error_kind == "bad_request"
    assert row.error_message.startswith("The model server refused the request (HTTP 404)")
    assert row.error_wording["params"]["detail"]["params"]["endpoint"] == (
        "127.0.0.1:9/v1/chat/completions"
    )
    with translation.override(ZH):
        html = render_message(message_view(row))
        markdown = export_markdown(chat)
    shown = "模型服务器拒绝了该请求（HTTP 404）：127.0.0.1:9/v1/chat/completions 没有响应"
    assert shown in html and shown in markdown
    assert "The model server refused" not in html


@pytest.mark.django_db
def test_the_services_own_failures_are_saved_with_their_kinds_and_outcomes() -> None:
    chat = _conversation()
    stopped = create_turn(OWNER, chat.pk, "One", live=set())
    generation = Generation(turn=stopped)
    generation.error = ServerStopped()
    save_final(stopped.answer.id, generation.outcome())
    row = Message.objects.get(pk=stopped.answer.id)
    assert (row.error_kind, row.outcome) == ("interrupted", "interrupted")
    assert row.error_wording == {"template": ServerStopped.default_message, "params": {}}

    broken = create_turn(OWNER, chat.pk, "Two", live=set())
    generation = Generation(turn=broken)
    generation.text.append("Some")
    generation.error = InternalFailure.of(ZeroDivisionError())
    save_final(broken.answer.id, generation.outcome())
    row = Message.objects.get(pk=broken.answer.id)
    assert (row.error_kind, row.outcome) == ("internal", "incomplete")
    assert row.error_message == "Internal error (ZeroDivisionError); the partial answer was kept."
    with translation.override(ZH):
        assert "内部错误（ZeroDivisionError），已保留部分回答。" in render_message(
            message_view(row)
        )

    left = Message.objects.create(
        conversation=chat, role="assistant", content="cut", status="streaming"
    )
    settle_answers([left.pk])
    left.refresh_from_db()
    assert (left.error_kind, left.outcome) == ("interrupted", "interrupted")
    assert left.error_message == ServerRestarted.default_message
    with translation.override(ZH):
        assert "服务器在此回答完成前重启了。" in render_message(message_view(left))


@pytest.mark.django_db
def test_an_older_row_without_wording_shows_its_saved_message() -> None:
    """Rows saved before wordings existed have only ``error_message``: shown as saved."""
    chat = _conversation()
    Message.objects.create(conversation=chat, role="user", content="Hi")
    old = Message.objects.create(
        conversation=chat,
        role="assistant",
        status="error",
        error_kind="server",
        error_message="The model server failed (HTTP 502): upstream went away",
    )
    assert old.error_wording is None
    with translation.override(ZH):
        html = render_message(message_view(old))
        markdown = export_markdown(chat)
    assert "The model server failed (HTTP 502): upstream went away" in html
    assert "The model server failed (HTTP 502): upstream went away" in markdown
