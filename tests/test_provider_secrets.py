"""No secret of the server is readable through a provider.

A staff user who may add providers picks both the variable a provider's key is read from and
the base URL it is sent to. ``api_key_env=SECRET_KEY`` (or ``DATABASE_URL``, ``REDIS_URL``) and
a server of their own would carry the secret off as ``Authorization: Bearer …``. Such names are
refused where a provider is saved (the admin form, ``set_provider``) and again where the key is
read: a row written straight to the database sends nothing, and the person chatting gets a clear
error that does not name the variable. Base URLs are http(s) only.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client

from chat import providers
from chat.exceptions import ClientError
from chat.generation.turns import create_turn
from chat.models import Conversation, Provider
from chat.owners import Owner
from tests.support.app import App, start_app
from tests.support.byte_server import ByteScript, ByteServer
from tests.support.frames import Frame
from tests.support.processes import ROOT, stop_process
from tests.support.simulator import KEY, Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor, answer_row

SERVER_SECRETS = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL")
REFUSED_KEY = "The provider “Leaky” is not allowed to use the API key it names"
SECRET_RULE = "This variable holds one of this server's own secrets"
NAME_RULE = "A provider's key variable must end in _API_KEY"
URL_RULE = "Use an http:// or https:// address"

FORM = {
    "name": "Leaky",
    "protocol": "openai",
    "base_url": "https://collector.example.com/v1",
    "model_list": "m",
    "include_usage": "on",
    "incremental_output": "on",
    "enabled": "on",
    "position": "0",
}


# --- Saving: the admin form and the management command ---------------------------------------


@pytest.fixture
def staff(django_user_model: Any) -> Client:
    """A staff user who may add and change providers, nothing more (not a superuser)."""
    user = django_user_model.objects.create_user("ops", password="pw-Provider-9", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["add_provider", "change_provider", "view_provider"])
    )
    client = Client()
    client.force_login(user)
    return client


def admin_add(client: Client, **fields: str) -> tuple[int, str]:
    response = client.post("/admin/chat/provider/add/", {**FORM, **fields})
    return response.status_code, html.unescape(response.content.decode())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("variable", "rule"),
    [
        *((name, SECRET_RULE) for name in SERVER_SECRETS),
        ("secret_key", SECRET_RULE),  # one variable on Windows, where names ignore case
        ("FOO", NAME_RULE),
        ("OPENAI_KEY", NAME_RULE),
    ],
)
def test_the_admin_refuses_a_key_variable_that_is_not_a_providers(
    staff: Client, variable: str, rule: str
) -> None:
    status, page = admin_add(staff, api_key_env=variable)
    assert status == 200  # the form again, with the reason beside the field
    assert rule in page
    assert not Provider.objects.exists()


@pytest.mark.django_db
def test_listing_a_server_secret_does_not_let_it_through(staff: Client, settings: Any) -> None:
    settings.CHAT_PROVIDER_KEY_VARIABLES = ["TEAM_TOKEN", "SECRET_KEY", "DATABASE_URL"]
    for variable in ("SECRET_KEY", "DATABASE_URL"):
        status, page = admin_add(staff, api_key_env=variable)
        assert status == 200 and SECRET_RULE in page
    assert not Provider.objects.exists()
    status, _ = admin_add(staff, api_key_env="TEAM_TOKEN")  # listed, and no secret: saved
    assert status == 302
    assert Provider.objects.get().api_key_env == "TEAM_TOKEN"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://files.example.com/v1", "gopher://example.com/v1"]
)
def test_the_admin_refuses_a_base_url_that_is_not_http(staff: Client, url: str) -> None:
    status, page = admin_add(staff, base_url=url, api_key_env="OPENAI_API_KEY")
    assert status == 200 and URL_RULE in page
    assert not Provider.objects.exists()


@pytest.mark.django_db
def test_the_admin_tells_the_rule_before_refusing(staff: Client) -> None:
    page = html.unescape(staff.get("/admin/chat/provider/add/").content.decode())
    assert "one ending in _API_KEY" in page and "CHAT_PROVIDER_KEY_VARIABLES" in page
    assert "http or https only" in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "rule"),
    [
        *(({"api_key_env": name}, SECRET_RULE) for name in SERVER_SECRETS),
        ({"api_key_env": "FOO"}, NAME_RULE),
        ({"base_url": "file:///etc/passwd"}, URL_RULE),
        ({"base_url": "ftp://files.example.com/v1"}, URL_RULE),
    ],
)
def test_set_provider_refuses_them_too(options: dict[str, str], rule: str) -> None:
    arguments = {"base_url": "https://collector.example.com/v1", "models": "m", **options}
    with pytest.raises(CommandError, match=rule.replace("(", r"\(")):
        call_command("set_provider", "Leaky", **arguments)
    assert not Provider.objects.exists()


@pytest.mark.django_db
def test_set_provider_takes_a_listed_name(settings: Any) -> None:
    settings.CHAT_PROVIDER_KEY_VARIABLES = ["TEAM_TOKEN"]
    call_command("set_provider", "Team", base_url="https://llm.example.com/v1", models="m",
                 api_key_env="TEAM_TOKEN")  # fmt: skip
    assert Provider.objects.get(name="Team").api_key_env == "TEAM_TOKEN"


# --- Reading: a row that got into the database anyway ----------------------------------------


def row(**fields: Any) -> Provider:
    """A provider as a row written before the rule or straight to the database: ``create``
    runs no validation."""
    values = {"name": "Leaky", "base_url": "http://127.0.0.1:9/v1", "model_list": "m", **fields}
    return Provider.objects.create(**values)


def send_with(provider: Provider) -> str:
    """What a person chatting with ``provider`` is told; nothing may be saved."""
    conversation = Conversation.objects.create(
        session_key="s" * 32, provider=provider, model="m", title="t"
    )
    with pytest.raises(ClientError) as refused:
        create_turn(Owner(user_id=None, session_key="s" * 32), conversation.pk, "Hello", set())
    assert not conversation.messages.exists()
    return refused.value.message


@pytest.mark.django_db
@pytest.mark.parametrize("variable", [*SERVER_SECRETS, "FOO", "PGPASSWORD"])
def test_a_refused_variable_in_the_database_is_never_read(
    variable: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    value = "hunter2-" + secrets.token_urlsafe(24)
    monkeypatch.setenv(variable, value)
    provider = row(api_key_env=variable)
    upstream = providers.from_provider(provider)
    with caplog.at_level(logging.WARNING, logger="chat.providers"):
        shown = send_with(provider)
        assert upstream.api_key() is None  # even past the check, nothing to send
    assert shown.startswith(REFUSED_KEY)
    assert variable not in shown and value not in shown
    # Staff find which variable in the log, never its value.
    assert f"key variable {variable} refused" in caplog.text
    assert value not in caplog.text


@pytest.mark.django_db
def test_a_listed_variable_holding_a_server_secret_is_not_sent(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.CHAT_PROVIDER_KEY_VARIABLES = ["TEAM_TOKEN"]
    monkeypatch.setenv("TEAM_TOKEN", settings.SECRET_KEY)  # a copy of the secret key
    provider = row(api_key_env="TEAM_TOKEN")
    assert send_with(provider).startswith(REFUSED_KEY)
    assert providers.from_provider(provider).api_key() is None


@pytest.mark.django_db
def test_a_missing_key_does_not_name_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEAM_OPENAI_API_KEY", raising=False)
    shown = send_with(row(api_key_env="TEAM_OPENAI_API_KEY"))
    assert shown == (
        "The provider “Leaky” has no API key on this server: ask an administrator to set it."
    )


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://files.example.com/v1", "localhost"])
def test_a_base_url_that_is_not_http_in_the_database_is_refused(url: str) -> None:
    shown = send_with(row(base_url=url))
    assert shown == (
        "The provider “Leaky” has an address this server does not use (only http and https): "
        "ask an administrator to fix it."
    )


@pytest.mark.django_db
def test_the_admin_list_shows_a_refused_key_as_not_set(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + secrets.token_urlsafe(24))
    row(name="Good", api_key_env="OPENAI_API_KEY")
    row(name="Leaky", api_key_env="SECRET_KEY")
    listing = admin_client.get("/admin/chat/provider/").content.decode()
    assert listing.count('alt="True"') == 1  # Good's key is set
    assert listing.count('alt="False"') == 1  # Leaky's is never sent: shown as not set


# --- Live: a chat through Daphne, against servers on loopback --------------------------------

# Answers like a model, so a leaked request would look like success to the person chatting.
LEAK_ANSWER = ByteScript(
    pieces=[b'data: {"choices":[{"delta":{"content":"leaked"}}]}\n\n', b"data: [DONE]\n\n"]
)


@pytest.fixture(scope="module")
def guarded(
    keyed_simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[App, dict[str, str]]]:
    """The app with a real secret key, a listed variable holding the simulator's key, and
    ``SECRET_KEY`` listed too (listing a server secret must not let it through)."""
    tmp = tmp_path_factory.mktemp("secrets")
    env = {
        "SECRET_KEY": "live-" + secrets.token_urlsafe(48),
        "CHAT_PROVIDER_KEY_VARIABLES": "TEAM_TOKEN,SECRET_KEY,DATABASE_URL",
        "TEAM_TOKEN": KEY,
        "LOG_LEVEL": "INFO",
    }
    instance, process = start_app(tmp, env)
    subprocess.run(
        [sys.executable, "manage.py", "set_provider", "Team", "--base-url",
         keyed_simulator.base_url, "--models", "qwen-plus", "--api-key-env", "TEAM_TOKEN"],
        cwd=ROOT,
        env={**os.environ, **env, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{instance.db_path}"},
        check=True,
        capture_output=True,
    )  # fmt: skip
    try:
        yield instance, {**env, "DATABASE_URL": f"sqlite:///{instance.db_path}"}
    finally:
        stop_process(process)


def insert_provider(db: Path, name: str, base_url: str, variable: str) -> int:
    """A provider row written with SQL, as no form or command would let it be saved."""
    connection = sqlite3.connect(db, timeout=20)
    try:
        cursor = connection.execute(
            "INSERT INTO chat_provider (name, protocol, base_url, api_key_env, model_list, "
            "include_usage, incremental_output, enabled, position) "
            "VALUES (?, 'openai', ?, ?, 'm', 1, 1, 1, 0)",
            (name, base_url, variable),
        )
        connection.commit()
        assert cursor.lastrowid is not None
        return cursor.lastrowid
    finally:
        connection.close()


async def outcome(ws: Any, within: float = 20.0) -> str:
    """What a send ended in, as the page shows it: the alert it got, or, if an answer began
    (its request went out), that answer's final frame, so the caller can look at what the
    upstream received before deciding."""
    deadline = time.monotonic() + within
    answer_id: int | None = None
    while True:
        frame = Frame(str(await asyncio.wait_for(ws.recv(), deadline - time.monotonic())), 0.0)
        for article in frame.articles:  # a turn frame also clears the alerts: look here first
            if article.get("data-role") == "assistant" and answer_id is None:
                answer_id = int(article["id"].removeprefix("message-"))
        if 'id="alerts"' in frame.html and answer_id is None:
            return html.unescape(frame.html)
        if answer_id is not None and frame.final_for(answer_id):
            return html.unescape(frame.html)


@pytest.mark.live
@pytest.mark.parametrize("variable", ["SECRET_KEY", "DATABASE_URL"])
async def test_a_row_naming_a_server_secret_sends_nothing_and_says_so(
    guarded: tuple[App, dict[str, str]], variable: str
) -> None:
    app, env = guarded
    secret = env[variable]
    async with ByteServer(LEAK_ANSWER) as collector:
        name = f"Leaky {variable.split('_')[0].title()}"  # "Leaky Secret": not the variable
        provider_id = insert_provider(app.db_path, name, collector.base_url(), variable)
        visitor = Visitor(app)
        try:
            conversation = visitor.new_conversation(model=f"p{provider_id}:m")
            async with visitor.socket(conversation) as ws:
                await send(ws, "Hello [t-leak]")
                shown = await outcome(ws)
            export = visitor.export(conversation)
            page = visitor.http.get(f"/c/{conversation}/").text
        finally:
            visitor.close()
        # What the collector received, headers included: never the secret, in fact nothing.
        received = b"".join(collector.requests)
        assert f"Bearer {secret}".encode() not in received and secret.encode() not in received
        assert collector.requests == []
        assert f"The provider “{name}” is not allowed to use the API key it names" in shown
        assert variable not in shown and secret not in shown
        assert export["messages"] == []  # nothing half-saved, nothing to clean up
        assert variable not in page and secret not in page
    # The log tells staff which variable, never its value.
    log = app.log()
    assert f"key variable {variable} refused" in log and secret not in log


@pytest.mark.live
async def test_a_listed_variable_works_end_to_end(
    guarded: tuple[App, dict[str, str]], keyed_simulator: Simulator
) -> None:
    app, _ = guarded
    visitor = Visitor(app)
    try:
        page = visitor.http.get(f"/c/{visitor.new_conversation()}/").text
        team = re.search(r'<optgroup label="Team">\s*<option value="p(\d+):', page)
        assert team, "the Team provider is offered"
        conversation = visitor.new_conversation(model=f"p{team[1]}:qwen-plus")
        async with visitor.socket(conversation) as ws:
            await send(ws, "Explain tides [t-team]\n#sim tokens=20 tps=400 ttft=0.05")
            answer_id, _frames, final = await collect_answer(ws)
        saved = answer_row(visitor.export(conversation), answer_id)
    finally:
        visitor.close()
    # The simulator demands the key: a complete answer means TEAM_TOKEN's value travelled.
    assert final["data-status"] == "complete", saved
    assert saved["content"] == keyed_simulator.request_for("[t-team]")["text"]
