"""Accounts on a real server: with CHAT_REQUIRE_LOGIN=1, websockets need a logged-in user and
only ever reach that user's own conversations."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator

import pytest
import websockets

from tests.support.app import App, manage, start_app
from tests.support.processes import stop_process
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import PASSWORD, Visitor, signed_in

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def team(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    tmp = tmp_path_factory.mktemp("team")
    env = {"LLM_API_BASE": simulator.base_url, "CHAT_REQUIRE_LOGIN": "1"}
    instance, process = start_app(tmp, env)
    create = "from django.contrib.auth.models import User\n" + "".join(
        f"User.objects.create_user({name!r}, password={PASSWORD!r})\n" for name in ("ada", "bob")
    )
    manage(dict(os.environ), instance.db_path, "shell", "-c", create)
    try:
        yield instance
    finally:
        stop_process(process)


async def test_sockets_need_a_login_and_reach_only_their_owners_chats(team: App) -> None:
    ada, bob, anonymous = signed_in(team, "ada"), signed_in(team, "bob"), Visitor(team)
    try:
        conversation = ada.new_conversation()
        async with ada.socket(conversation) as ws:
            await send(ws, "Hello [t-team]\n#sim tokens=8 tps=200 ttft=0.01")
            _, _, final = await collect_answer(ws)
            assert final["data-status"] == "complete"
        # The relay counted the request and the tokens the upstream reported, for ada.
        answer = ada.export(conversation)["messages"][-1]
        with sqlite3.connect(team.db_path) as db:
            requests, prompt, completion = db.execute(
                "SELECT requests, prompt_tokens, completion_tokens FROM chat_dailyusage "
                "JOIN auth_user ON auth_user.id = user_id WHERE username = 'ada'"
            ).fetchone()
        assert requests == 1
        assert (prompt, completion) == (answer["prompt_tokens"], answer["completion_tokens"])
        assert completion == 8
        for stranger in (bob, anonymous):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with stranger.socket(conversation):
                    pass
            assert refused.value.response.status_code == 403
        assert bob.http.get(f"/c/{conversation}/").status_code == 404
        page = anonymous.http.get(f"/c/{conversation}/")
        assert "/accounts/login/" in str(page.url) and "Hello" not in page.text
    finally:
        for visitor in (ada, bob, anonymous):
            visitor.close()


async def test_the_comparison_socket_needs_a_login(team: App) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"ws://127.0.0.1:{team.port}/ws/compare/", origin=team.url):
            pass
    assert refused.value.response.status_code == 403


async def test_signing_out_closes_that_sessions_sockets(team: App) -> None:
    ada, bob = signed_in(team, "ada"), signed_in(team, "bob")
    try:
        mine, theirs = ada.new_conversation(), bob.new_conversation()
        async with ada.socket(mine) as ws, bob.socket(theirs) as other:
            signed_out = ada.post("/accounts/logout/")
            assert "/accounts/login/" in str(signed_out.url)
            alert = str(await asyncio.wait_for(ws.recv(), 5))
            assert "You have signed out." in alert
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
            await send(other, "Still here [t-bob-stays]\n#sim tokens=4 tps=200 ttft=0.01")
            _, _, final = await collect_answer(other)  # bob's session is untouched
            assert final["data-status"] == "complete"
        with pytest.raises(websockets.InvalidStatus):  # and the old cookie opens nothing
            async with ada.socket(mine):
                pass
    finally:
        ada.close()
        bob.close()
