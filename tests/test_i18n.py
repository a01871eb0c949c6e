"""The interface in English and Simplified Chinese: the catalogue, pages, websocket frames.

The catalogue tests need GNU gettext (``msgfmt``, ``xgettext``); where it is missing they are
skipped and say so (``make install`` needs it too, and CI installs it).
"""

from __future__ import annotations

import ast
import asyncio
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from django.test import Client
from django.utils import translation

from chat.models import Conversation
from chat.rendering import i18n
from chat.rendering.fragments import MessageView, render_message, thinking_status
from tests.support.app import App
from tests.support.i18n import CATALOGUE, needs_gettext
from tests.support.processes import ROOT
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor

SOURCES = ("templates", "chat", "chatsite", "locale", "manage.py")
ZH = "zh-hans"
# The .mo catalogue, built if missing, before any test of the module.
pytestmark = pytest.mark.usefixtures("compiled")


# --- A tiny .po reader (Django ships none) ----------------------------------------------------


@dataclass
class Entry:
    msgid: str = ""
    msgctxt: str | None = None
    msgid_plural: str | None = None
    msgstr: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False

    @property
    def name(self) -> str:
        return f"[{self.msgctxt}] {self.msgid!r}" if self.msgctxt else repr(self.msgid)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _unquote(text: str) -> str:
    assert text.startswith('"') and text.endswith('"'), text
    return re.sub(r"\\(.)", lambda m: _ESCAPES[m.group(1)], text[1:-1])


def read_po(path: Path) -> list[Entry]:
    """Every entry but the header, with its strings joined and unescaped."""
    entries: list[Entry] = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        entry, target = Entry(), None
        for line in block.splitlines():
            if line.startswith("#~"):
                entry.obsolete = True
            elif line.startswith("#,"):
                entry.flags |= {flag.strip() for flag in line[2:].split(",")}
            elif line.startswith("#") or not line.strip():
                continue
            elif line.startswith('"'):
                value = _unquote(line)
                if target == "msgstr":
                    entry.msgstr[-1] += value
                else:
                    setattr(entry, target, (getattr(entry, target) or "") + value)  # type: ignore[arg-type]
            else:
                keyword, _, value = line.partition(" ")
                if keyword.startswith("msgstr"):
                    target = "msgstr"
                    entry.msgstr.append(_unquote(value))
                else:
                    target = keyword
                    setattr(entry, keyword, _unquote(value))
        if target is not None and (entry.msgid or entry.msgctxt):
            entries.append(entry)
    return entries


def untranslated(entries: list[Entry]) -> list[str]:
    return [
        e.name
        for e in entries
        if not e.obsolete and ("fuzzy" in e.flags or not e.msgstr or not all(e.msgstr))
    ]


@pytest.fixture(autouse=True)
def english_afterwards() -> Iterator[None]:
    """The test client's requests leave their language active in this thread (LocaleMiddleware
    does not undo it): later tests in this process must not render in Chinese."""
    yield
    translation.deactivate()


# --- (a) The catalogue ------------------------------------------------------------------------


def test_every_msgid_has_a_translation_and_none_is_fuzzy() -> None:
    entries = read_po(CATALOGUE)
    assert len(entries) > 200
    assert untranslated(entries) == []
    assert "Plural-Forms: nplurals=1; plural=0;" in CATALOGUE.read_text(encoding="utf-8")


def test_placeholders_survive_translation() -> None:
    """msgfmt --check compares every python-format placeholder of msgid and msgstr."""
    needs_gettext()
    result = subprocess.run(
        ["msgfmt", "--check", "-o", "/dev/null", str(CATALOGUE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for entry in read_po(CATALOGUE):
        wanted = sorted(re.findall(r"%\(\w+\)[sd]", entry.msgid))
        for msgstr in entry.msgstr:
            assert sorted(re.findall(r"%\(\w+\)[sd]", msgstr)) == wanted, entry.name


def test_the_catalogue_covers_every_string_in_the_sources(tmp_path: Path) -> None:
    """makemessages on a copy of the sources finds no string the catalogue lacks."""
    needs_gettext()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tmp_path / name)
    env = {k: v for k, v in __import__("os").environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", "django", "makemessages", "-l", "zh_Hans", "--add-location=file"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    fresh = read_po(tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po")
    missing = untranslated(fresh)
    assert missing == [], (
        f"{len(missing)} strings need a translation: run `make messages`, translate them in "
        f"{CATALOGUE.relative_to(ROOT)} and remove any fuzzy flag: {missing}"
    )


TRANSLATING = {"gettext", "ngettext", "pgettext", "npgettext", "gettext_lazy", "_", "gettext_noop"}


def test_no_translated_string_hides_inside_an_f_string() -> None:
    """xgettext does not look inside f-strings: a gettext() there never reaches the catalogue
    (and stays English). Call it first and put the result in the f-string."""
    hidden = []
    for path in sorted((ROOT / "chat").rglob("*.py")) + sorted((ROOT / "chatsite").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.JoinedStr):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Call) and getattr(inner.func, "id", "") in TRANSLATING:
                    hidden.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert hidden == []


def test_our_fixed_names_are_translated_and_a_providers_are_not() -> None:
    """The simulator's name is ours (English in the code), shown in the reader's language; a
    provider's name is its owner's. Errors are saved with their wording and shown by
    ``chat.rendering.errors`` (tests/test_error_wording.py), never by matching their text."""
    with translation.override(ZH):
        assert i18n.upstream_message("Offline simulator") == "离线模拟器"
        assert i18n.upstream_message("My vLLM") == "My vLLM"
        assert i18n.upstream_message("The model server failed.") == "The model server failed."
    with translation.override("en"):
        assert i18n.upstream_message("Offline simulator") == "Offline simulator"


def test_figures_and_timers_are_in_the_readers_language() -> None:
    view = MessageView(
        id=7,
        role="assistant",
        status="complete",
        content="Hi",
        ttft_ms=412.0,
        thinking_ms=3400.0,
        answer_ms=3812.0,
        total_ms=2400.0,
        prompt_tokens=10,
        completion_tokens=20,
        total_tokens=30,
        reasoning="hmm",
    )
    with translation.override("en"):
        english = render_message(view)
    assert "First token <strong>0.41 s</strong>" in english
    assert "Thought for 3.4 s" in english and "tokens/s" in english
    with translation.override(ZH):
        chinese = render_message(view)
        live = thinking_status(7, elapsed_s=1.24)
        waiting = render_message(
            MessageView(id=8, role="assistant", status="streaming", content="")
        )
    assert "首字延迟 <strong>0.41 秒</strong>" in chinese
    assert "思考了 3.4 秒" in chinese and "token/秒" in chinese
    assert "输入 10 / 输出 20 / 合计 30" in chinese
    assert 'data-label="思考中…" data-unit="秒"' in live and "思考中… 1.2 秒" in live
    assert 'data-label="等待中…" data-unit="秒"' in waiting and "等待中… 0.0 秒" in waiting


def test_a_socket_speaks_its_cookie_then_its_session_then_accept_language() -> None:
    def scope(cookie: str = "", accept: str = "", session: Any = None) -> dict[str, Any]:
        return {
            "cookies": {"django_language": cookie} if cookie else {},
            "headers": [(b"accept-language", accept.encode())] if accept else [],
            "session": session,
        }

    class Session(dict[str, str]):
        session_key = "k"

    assert i18n.language_from_scope(scope()) == "en"
    assert i18n.language_from_scope(scope(accept="zh-CN,zh;q=0.9,en;q=0.8")) == ZH
    assert i18n.language_from_scope(scope(accept="fr-FR, zh-Hans;q=0.5")) == ZH
    assert i18n.language_from_scope(scope(accept="fr-FR, de")) == "en"
    assert i18n.language_from_scope(scope(cookie="en", accept="zh-CN")) == "en"
    assert i18n.language_from_scope(scope(cookie="xx", accept="zh-CN")) == ZH
    assert i18n.language_from_scope(scope(session=Session(_language=ZH))) == ZH
    assert i18n.language_from_scope(scope(cookie="en", session=Session(_language=ZH))) == "en"


# --- (b) Pages ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_follow_accept_language_and_default_to_english(client: Client) -> None:
    english = client.get("/").content.decode()
    assert '<html lang="en">' in english and "Start a new chat" in english
    chinese = client.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).content.decode()
    assert '<html lang="zh-hans">' in chinese and "开始新对话" in chinese
    made = client.post("/c/new/", headers={"Accept-Language": "zh-CN"}, follow=True)
    page = made.content.decode()
    assert ">发送</button>" in page and 'placeholder="随便问点什么。' in page
    assert '<label class="visually-hidden" for="message">消息</label>' in page
    assert made["Content-Language"] == ZH


@pytest.mark.django_db
def test_the_language_form_switches_and_is_remembered() -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/compare/", headers={"Accept-Language": "zh-CN"}).content.decode()
    form = re.search(r'<form class="language" method="post" action="([^"]+)".*?</form>', page, re.S)
    assert form and form.group(1) == "/i18n/setlang/"
    assert 'name="csrfmiddlewaretoken"' in form.group(0)
    assert '<input type="hidden" name="next" value="/compare/">' in form.group(0)
    assert 'value="en" lang="en"' in form.group(0) and "简体中文" in form.group(0)
    # Without the CSRF token (another site's form) it changes nothing.
    assert client.post("/i18n/setlang/", {"language": "en", "next": "/compare/"}).status_code == 403
    token = client.cookies["csrftoken"].value
    switched = client.post(
        "/i18n/setlang/",
        {"language": "en", "next": "/compare/", "csrfmiddlewaretoken": token},
        headers={"Accept-Language": "zh-CN"},
    )
    assert switched.status_code == 302 and switched["Location"] == "/compare/"
    cookie = client.cookies["django_language"]
    assert cookie.value == "en" and int(cookie["max-age"]) >= 300 * 24 * 3600
    again = client.get("/compare/", headers={"Accept-Language": "zh-CN"}).content.decode()
    assert "Streaming on vs off" in again and "开启与关闭对比" not in again


@pytest.mark.django_db
def test_signed_in_users_switch_too(client: Client, django_user_model: Any, settings: Any) -> None:
    settings.CHAT_REQUIRE_LOGIN = True
    login = client.get("/accounts/login/", headers={"Accept-Language": "zh-CN"}).content.decode()
    assert ">登录</button>" in login and 'action="/i18n/setlang/"' in login  # before signing in
    client.force_login(django_user_model.objects.create_user("ada", password="x-long-pass-1"))
    client.post("/i18n/setlang/", {"language": ZH, "next": "/"})
    page = client.get("/", follow=True).content.decode()
    assert "已登录为 <strong>ada</strong>。" in page and ">退出登录</button>" in page


@pytest.mark.django_db
def test_flash_messages_settings_errors_and_the_verdict_are_translated(client: Client) -> None:
    zh = {"Accept-Language": "zh-CN"}
    client.post("/c/new/", headers=zh)
    conversation = Conversation.objects.get()
    page = client.post(
        f"/c/{conversation.pk}/rename/", {"title": "  "}, headers=zh, follow=True
    ).content.decode()
    assert "标题不能为空。" in page
    errors = client.post(
        f"/c/{conversation.pk}/settings/",
        {"temperature": "7", "seed": "x"},
        headers={**zh, "HX-Request": "true"},
    ).content.decode()
    assert "温度必须在 0 到 2 之间。" in errors and "随机种子必须是整数，而不是“x”。" in errors

    from chat.compare.runs import Side, verdict

    def side(first: float, done: float) -> Side:
        return Side("stream", 1, "complete", first, done, True, first, done, 40.0, 1, 2, 3, "")

    with translation.override(ZH):
        said = verdict([side(0.41, 9.9)], [side(9.8, 9.8)])
    assert said == (
        "开启流式输出后，0.41 秒即可开始阅读，而不是 9.8 秒（快 24 倍）；"
        "两个回答完成所用的时间差不多。"
    )


# --- (c) Websocket frames -----------------------------------------------------------------------


def _chinese_socket(app: App, visitor: Visitor, conversation_id: int) -> Any:
    """A socket whose browser asks for Chinese (Accept-Language, no cookie)."""
    cookie = "; ".join(f"{k}={v}" for k, v in visitor.http.cookies.items())
    return websockets.connect(
        f"ws://127.0.0.1:{app.port}/ws/c/{conversation_id}/",
        additional_headers={"Cookie": cookie, "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"},
        origin=app.url,  # type: ignore[arg-type]
        max_size=None,
    )


async def _alert(ws: Any) -> str:
    deadline = time.monotonic() + 10
    while True:
        frame = str(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if 'id="alerts"' in frame:
            return frame


@pytest.mark.live
async def test_a_websocket_alert_comes_in_the_sockets_language(app: App, visitor: Visitor) -> None:
    conversation_id = visitor.new_conversation()
    async with visitor.socket(conversation_id) as english:
        await send(english, "   ")
        assert "Type a message first." in await _alert(english)
    async with _chinese_socket(app, visitor, conversation_id) as chinese:
        await send(chinese, "   ")
        assert "请先输入消息。" in await _alert(chinese)
        await chinese.send("not json")
        assert "该请求不是有效的 JSON。" in await _alert(chinese)
    # The cookie the language form sets wins over Accept-Language.
    token = visitor.http.cookies.get("csrftoken", "")
    visitor.http.post(
        "/i18n/setlang/",
        data={"language": "zh-hans", "next": "/"},
        headers={"X-CSRFToken": token},
        follow_redirects=False,
    )
    async with visitor.socket(conversation_id) as switched:
        await send(switched, "   ")
        assert "请先输入消息。" in await _alert(switched)


@pytest.mark.live
async def test_an_answers_frames_use_the_language_of_the_tab_that_asked(
    app: App, visitor: Visitor
) -> None:
    """Frames are rendered once and broadcast: an English tab showing the same conversation
    sees the answer a Chinese tab asked for in Chinese (README "Languages")."""
    conversation_id = visitor.new_conversation(model="qwq-plus")
    async with (
        _chinese_socket(app, visitor, conversation_id) as chinese,
        visitor.socket(conversation_id) as english,
    ):
        await send(chinese, "Think first [t-i18n]\n#sim tokens=20 tps=200 ttft=0.05 think=20")
        answer_id, frames, final = await collect_answer(chinese)
        _, seen, _ = await collect_answer(english, answer_id)
    sent = "".join(frame.html for frame in frames)
    assert 'data-label="思考中…" data-unit="秒"' in sent and "思考了 " in sent
    assert final["data-status"] == "complete"
    finished = frames[-1].html
    assert "首字延迟" in finished and " 秒</strong>" in finished and "token/秒" in finished
    assert ">发送</button>" in finished
    assert "首字延迟" in seen[-1].html  # the English tab got the same frame
