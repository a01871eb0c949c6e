"""No socket outlives its user's login, on any worker: two Daphne workers on PostgreSQL and
Redis, with CHAT_REQUIRE_LOGIN=1.

A password change, a deactivation, a deleted user or a deleted session row on one worker (or
in a shell) closes the user's sockets on the other, saying why; the session that changed its
own password stays signed in and its sockets reconnect with its new key. Worker b never runs
the periodic check (``STREAM_SESSION_CHECK_MS=0``), so only those messages can close its
sockets here; worker a checks every second, and closes a socket whose login was ended behind
every signal's back (raw SQL).

Skipped where PostgreSQL or Redis is not running, unless STREAMSIDE_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from playwright.sync_api import Browser

from tests.support.app import App, two_workers
from tests.support.processes import ROOT
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import PASSWORD, Visitor, on, signed_in
from tests.support.waiting import throughout

pytestmark = pytest.mark.live

NEW_PASSWORD = "another-long-passphrase-9"
USERS = ["ada", "bob", "cy", "dee", "del", "eve", "fay", "gus", "hal", "ivy", "jay", "kim"]
CHECK_EVERY_MS = 1000  # worker a's STREAM_SESSION_CHECK_MS


@pytest.fixture(scope="module")
def team(
    simulator: Simulator,
    database: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[App, App]]:
    env = {
        "LLM_API_BASE": simulator.base_url,
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "CHAT_REQUIRE_LOGIN": "1",
    }

    def per_side(side: str) -> dict[str, str]:
        return {"STREAM_SESSION_CHECK_MS": str(CHECK_EVERY_MS) if side == "a" else "0"}

    with two_workers(env, tmp_path_factory, name="sessions", per_side=per_side) as started:
        django_shell(
            database,
            redis_url,
            "from django.contrib.auth.models import User\n"
            + "".join(f"User.objects.create_user({u!r}, password={PASSWORD!r})\n" for u in USERS)
            + f"User.objects.create_superuser('root', password={PASSWORD!r})\n",
        )
        yield started


def django_shell(database: str, redis_url: str, code: str) -> None:
    """Run ``code`` in a third process of the deployment (a shell, a script, a cron job)."""
    env = {**os.environ, "DEBUG": "1", "DATABASE_URL": database, "REDIS_URL": redis_url}
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def sql(database: str, statement: str, *args: str) -> None:
    """Straight to PostgreSQL: no Django, so no signal."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as db:
        db.execute(statement, args)  # type: ignore[arg-type]


def user_id(database: str, username: str) -> int:
    import psycopg

    with psycopg.connect(database) as db:
        row = db.execute("SELECT id FROM auth_user WHERE username = %s", (username,)).fetchone()
    assert row is not None
    return int(row[0])


async def closing(ws: Any, within: float = 20.0) -> tuple[int | None, str, str]:
    """Read until the server closes the socket: its close code and reason, and all it said."""
    said: list[str] = []
    deadline = time.monotonic() + within
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the socket was still open after {within:g} s")
            said.append(str(await asyncio.wait_for(ws.recv(), remaining)))
    except websockets.ConnectionClosed as closed:
        received = closed.rcvd
        code = received.code if received is not None else None
        return code, received.reason if received is not None else "", "\n".join(said)
    except TimeoutError as exc:
        raise AssertionError(f"the socket was still open after {within:g} s") from exc


async def still_answers(ws: Any, tag: str) -> None:
    await send(ws, f"Still here [{tag}]\n#sim tokens=4 tps=200 ttft=0.01")
    _, _, final = await collect_answer(ws)
    assert final["data-status"] == "complete"


async def refused(visitor: Visitor, conversation: int) -> int:
    """The status of a handshake that must fail (an old cookie opens nothing)."""
    with pytest.raises(websockets.InvalidStatus) as handshake:
        async with visitor.socket(conversation):
            pass
    return handshake.value.response.status_code


# --- Closed by a message, on the other worker ------------------------------------------------


async def test_a_password_change_closes_the_users_other_sessions_on_the_other_worker(
    team: tuple[App, App],
) -> None:
    a, b = team
    mine, other, bystander = signed_in(a, "ada"), signed_in(a, "ada"), signed_in(a, "bob")
    visitors = [mine, other, bystander]
    try:
        conversation, theirs = mine.new_conversation(), bystander.new_conversation()
        tabs = [on(b, v) for v in visitors]
        visitors += tabs
        async with (
            tabs[0].socket(conversation) as here,
            tabs[1].socket(conversation) as there,
            tabs[2].socket(theirs) as unrelated,
        ):
            changed = mine.post(
                "/accounts/password/",
                {
                    "old_password": PASSWORD,
                    "new_password1": NEW_PASSWORD,
                    "new_password2": NEW_PASSWORD,
                },
            )
            assert changed.url.path == "/accounts/password/done/"
            code, reason, said = await closing(there)
            assert (code, reason) == (4401, "password changed")
            assert "Your password was changed: sign in again." in said
            # The session that changed it stays signed in under a new key: its socket is
            # asked to reconnect (1012, as htmx's ws extension does), with no alert.
            code, reason, said = await closing(here)
            assert code == 1012 and said == ""
            await still_answers(unrelated, "t-bob-untouched")
        again = on(b, mine)  # the page reconnecting: the browser now holds the new key
        visitors.append(again)
        async with again.socket(conversation) as ws:
            await still_answers(ws, "t-renewed")
        assert await refused(on(b, other), conversation) == 403
    finally:
        for visitor in visitors:
            visitor.close()


async def test_an_administrators_password_change_closes_every_session_of_that_user(
    team: tuple[App, App], database: str
) -> None:
    a, b = team
    admin, cy = signed_in(a, "root"), signed_in(a, "cy")
    visitors = [admin, cy]
    try:
        conversation = cy.new_conversation()
        tab = on(b, cy)
        visitors.append(tab)
        cy_id = user_id(database, "cy")
        async with tab.socket(conversation) as ws:
            changed = admin.post(
                f"/admin/auth/user/{cy_id}/password/",
                {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
            )
            assert changed.url.path == f"/admin/auth/user/{cy_id}/change/", changed.url
            code, reason, said = await closing(ws)
        assert (code, reason) == (4401, "password changed")
        assert "Your password was changed: sign in again." in said
    finally:
        for visitor in visitors:
            visitor.close()


@pytest.mark.parametrize(
    ("username", "change"),
    [("dee", "user.is_active = False\nuser.save()"), ("del", "user.delete()")],
    ids=["deactivated", "deleted"],
)
async def test_an_account_deactivated_or_deleted_elsewhere_closes_its_sockets(
    team: tuple[App, App], database: str, redis_url: str, username: str, change: str
) -> None:
    a, b = team
    visitor, bystander = signed_in(a, username), signed_in(a, "bob")
    visitors = [visitor, bystander]
    try:
        conversation, theirs = visitor.new_conversation(), bystander.new_conversation()
        tab, other = on(b, visitor), on(b, bystander)
        visitors += [tab, other]
        async with tab.socket(conversation) as ws, other.socket(theirs) as unrelated:
            django_shell(
                database,
                redis_url,
                "from django.contrib.auth.models import User\n"
                f"user = User.objects.get(username={username!r})\n{change}\n",
            )
            code, reason, said = await closing(ws)
            assert (code, reason) == (4401, "account inactive")
            assert "This account is no longer active." in said
            await still_answers(unrelated, f"t-bob-after-{username}")
    finally:
        for visitor in visitors:
            visitor.close()


async def test_deleting_a_session_row_closes_that_sessions_sockets_only(
    team: tuple[App, App], database: str, redis_url: str
) -> None:
    a, b = team
    ended, kept = signed_in(a, "eve"), signed_in(a, "eve")
    visitors = [ended, kept]
    try:
        conversation = ended.new_conversation()
        tabs = [on(b, ended), on(b, kept)]
        visitors += tabs
        key = ended.http.cookies["sessionid"]
        async with tabs[0].socket(conversation) as ws, tabs[1].socket(conversation) as other:
            django_shell(
                database,
                redis_url,
                "from django.contrib.sessions.models import Session\n"
                f"Session.objects.filter(session_key={key!r}).delete()\n",
            )
            code, reason, said = await closing(ws)
            assert (code, reason) == (4401, "session ended")
            assert "Your session has ended: sign in again." in said
            await still_answers(other, "t-eve-other-session")  # eve's other login goes on
    finally:
        for visitor in visitors:
            visitor.close()


# --- Closed by the periodic check, with no message at all ---------------------------------


@pytest.mark.parametrize(
    ("username", "statement", "reason", "alert"),
    [
        (
            "fay",
            "DELETE FROM django_session WHERE session_key = %s",
            "session ended",
            "Your session has ended: sign in again.",
        ),
        (
            "kim",
            "UPDATE django_session SET expire_date = now() - interval '1 second'"
            " WHERE session_key = %s",
            "session ended",
            "Your session has ended: sign in again.",
        ),
        (
            "gus",
            "UPDATE auth_user SET is_active = false WHERE username = %s",
            "account inactive",
            "This account is no longer active.",
        ),
        (
            "hal",
            "UPDATE auth_user SET password = 'pbkdf2_sha256$1$salt$other' WHERE username = %s",
            "password changed",
            "Your password was changed: sign in again.",
        ),
    ],
    ids=["session-deleted", "session-expired", "deactivated", "password-changed"],
)
async def test_the_periodic_check_closes_a_socket_whose_login_ended_without_a_signal(
    team: tuple[App, App], database: str, username: str, statement: str, reason: str, alert: str
) -> None:
    a, _ = team
    visitor = signed_in(a, username)
    try:
        conversation = visitor.new_conversation()
        async with visitor.socket(conversation) as ws:
            # A good login is left alone, check after check.
            await throughout(
                lambda: ws.close_code is None,
                "a socket with a valid session was closed",
                during=2.5 * CHECK_EVERY_MS / 1000,
            )
            key = visitor.http.cookies["sessionid"]
            sql(database, statement, key if "django_session" in statement else username)
            code, closed_reason, said = await closing(ws)
        assert (code, closed_reason) == (4401, reason)
        assert alert in said
    finally:
        visitor.close()


async def test_the_periodic_check_is_off_where_set_to_zero(
    team: tuple[App, App], database: str
) -> None:
    """Worker b never checks: its sockets above were closed by messages, not by the check."""
    _, b = team
    visitor = signed_in(b, "ivy")
    try:
        conversation = visitor.new_conversation()
        async with visitor.socket(conversation) as ws:
            key = visitor.http.cookies["sessionid"]
            sql(database, "DELETE FROM django_session WHERE session_key = %s", key)
            await throughout(
                lambda: ws.close_code is None,
                "worker b checked a session though STREAM_SESSION_CHECK_MS=0",
                during=2.5 * CHECK_EVERY_MS / 1000,
            )
    finally:
        visitor.close()


# --- The page --------------------------------------------------------------------------------


@pytest.mark.browser
def test_a_tab_of_the_session_that_changed_its_password_reconnects_and_goes_on(
    browser: Browser, team: tuple[App, App]
) -> None:
    """One browser, two tabs: the chat (on worker b) and the password form (on worker a;
    cookies are per host, not per port, so both share one session). The chat's socket is
    renewed, not signed out: it reconnects by itself with the new key and answers."""
    a, b = team
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        chat = context.new_page()
        chat.goto(a.url + "/accounts/login/")
        chat.fill('input[name="username"]', "jay")
        chat.fill('input[name="password"]', PASSWORD)
        chat.press('input[name="password"]', "Enter")
        chat.wait_for_url(lambda url: "/accounts/" not in url)
        chat.goto(b.url + "/")
        chat.get_by_role("button", name="Start a new chat").click()
        chat.wait_for_selector('[data-connected="true"]')
        chat.evaluate(
            """() => {
                window.closedWith = [];
                document.addEventListener("htmx:wsClose",
                    (event) => window.closedWith.push(event.detail.event.code));
            }"""
        )
        form = context.new_page()
        form.goto(a.url + "/accounts/password/")
        form.fill('input[name="old_password"]', PASSWORD)
        form.fill('input[name="new_password1"]', NEW_PASSWORD)
        form.fill('input[name="new_password2"]', NEW_PASSWORD)
        form.press('input[name="new_password2"]', "Enter")
        form.wait_for_url("**/accounts/password/done/")

        chat.wait_for_function("() => window.closedWith.includes(1012)")
        chat.wait_for_selector('[data-connected="true"]')  # back, by itself
        box = chat.get_by_role("textbox", name="Message")
        box.fill("After the change [t-renewed-tab]\n#sim tokens=5 tps=200 ttft=0.01")
        box.press("Enter")
        chat.locator('article[data-role="assistant"][data-status="complete"]').wait_for()
        assert "sign in again" not in chat.content()
        # A reconnect that raced the new cookie is refused (1006) and tried again: never 4401.
        assert set(chat.evaluate("() => window.closedWith")) <= {1012, 1006}
    finally:
        context.close()
