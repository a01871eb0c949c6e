"""The shipped deployment recipe, end to end with the real parts on loopback: Debian's nginx
with ``deploy/nginx/streamside.conf`` (rewritten only for loopback ports, a self-signed
certificate and a scratch prefix) in front of two Daphne workers in production settings on
PostgreSQL and Redis.

Through nginx: pages and hashed static files load, a login works, 50 concurrent streams are
saved exactly as the simulator sent them, and a 60-second answer streams through nginx while
both workers are restarted one at a time (SIGTERM, then start), losing nothing. The workers
trust nginx's ``X-Forwarded-For`` (``--proxy-headers``, as the systemd unit runs them), and a
client forging that header is still seen, logged and throttled at its real address; a flood
of requests to the sign-in pages gets 429 from nginx.

Skipped where nginx is not installed (saying so), unless STREAMSIDE_REQUIRE_NGINX=1 (CI).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.support.app import App, start_app
from tests.support.frames import Frame
from tests.support.nginx import (
    NGINX,
    SITE,
    nginx_missing,
    self_signed_certificate,
    site_for_loopback,
    start_nginx,
    tls_context,
)
from tests.support.processes import ROOT, free_port, stop_process
from tests.support.simulator import Simulator
from tests.support.waiting import until_sync

pytestmark = [pytest.mark.live, pytest.mark.load]

PASSWORD = "a-long-enough-passphrase-7"
REDIS_URL = "redis://127.0.0.1:6379/9"
PROXIED = ("--proxy-headers",)  # the workers run as the systemd unit runs them, behind nginx


@dataclass
class Deployment:
    https: str  # https://127.0.0.1:PORT, through nginx
    http_port: int
    workers: list[App]
    processes: list[subprocess.Popen[bytes]]
    folders: list[Path]
    env: dict[str, str]

    def restart(self, index: int) -> float:
        """SIGTERM one worker, wait for it to finish its answers and exit, start it again on
        the same port; how long the stop took."""
        asked = time.monotonic()
        self.processes[index].terminate()
        self.processes[index].wait(timeout=150)
        stopped = time.monotonic() - asked
        app, process = start_app(
            self.folders[index], self.env, port=self.workers[index].port, daphne_args=PROXIED
        )
        self.workers[index], self.processes[index] = app, process
        return stopped


@pytest.fixture(scope="module")
def deployment(
    simulator: Simulator, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    if NGINX is None:
        nginx_missing()
    scratch = tmp_path_factory.mktemp("nginx")
    self_signed_certificate(scratch)
    https_port, http_port = free_port(), free_port()
    env = {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{https_port}",
        "DATABASE_URL": database,
        "REDIS_URL": REDIS_URL,
        "STATIC_ROOT": str(scratch / "static"),
        "LLM_API_BASE": simulator.base_url,
        "CHAT_RATE_LIMIT": "0",
        "CHAT_MAX_CONCURRENT": "0",  # one user's fifty streams at once
        "STREAM_SHUTDOWN_GRACE_MS": "120000",  # as deploy/streamside.env.example sets it
        # Daphne's access log (the client address of each request) is written to stdout:
        # unbuffered, a test reads a request's line as soon as it is served.
        "PYTHONUNBUFFERED": "1",
    }
    full_env = {**os.environ, **env}
    for command in (["collectstatic", "--noinput", "-v0"], ["migrate", "--noinput", "-v0"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=full_env, check=True)
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c",
         "from django.contrib.auth.models import User; "
         f"User.objects.create_user('ada', password={PASSWORD!r}); "
         f"User.objects.create_user('grace', password={PASSWORD!r})"],
        cwd=ROOT, env=full_env, check=True,
    )  # fmt: skip
    folders = [tmp_path_factory.mktemp(f"deployed-{side}") for side in ("a", "b")]
    workers: list[App] = []
    processes: list[subprocess.Popen[bytes]] = []  # the Deployment's own: restarts land here
    nginx: subprocess.Popen[bytes] | None = None
    try:
        for folder in folders:
            worker, process = start_app(folder, env, daphne_args=PROXIED)
            workers.append(worker)
            processes.append(process)
        site = site_for_loopback(
            SITE.read_text(),
            http_port=http_port,
            https_port=https_port,
            workers=[w.port for w in workers],
            scratch=scratch,
        )
        nginx = start_nginx(scratch, site, https_port)
        yield Deployment(
            f"https://127.0.0.1:{https_port}", http_port, workers, processes, folders, env
        )
    finally:
        if nginx is not None:
            stop_process(nginx)
        for process in processes:
            stop_process(process)


def login_form(deployment: Deployment) -> httpx.Client:
    """A client that has loaded the login page through nginx (so holds its CSRF cookie)."""
    # A browser on the site sends its origin with every POST; Django checks it over HTTPS.
    headers = {"Origin": deployment.https, "Referer": f"{deployment.https}/"}
    client = httpx.Client(base_url=deployment.https, verify=False, timeout=10, headers=headers)
    client.get("/accounts/login/")
    return client


def sign_in(
    client: httpx.Client, username: str, password: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    token = client.cookies["csrftoken"]
    return client.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers=headers,
    )


def signed_in(deployment: Deployment) -> httpx.Client:
    client = login_form(deployment)
    response = sign_in(client, "ada", PASSWORD)
    assert response.status_code == 302, response.text[:500]
    return client


def new_conversation(client: httpx.Client) -> int:
    response = client.post("/c/new/", headers={"X-CSRFToken": client.cookies["csrftoken"]})
    assert response.status_code == 302
    return int(response.headers["location"].strip("/").split("/")[-1])


def open_socket(deployment: Deployment, client: httpx.Client, conversation: int) -> Any:
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    return websockets.connect(
        deployment.https.replace("https", "wss") + f"/ws/c/{conversation}/",
        additional_headers={"Cookie": cookie},
        origin=deployment.https,  # type: ignore[arg-type]
        ssl=tls_context(),
        max_size=None,
    )


async def follow(deployment: Deployment, client: httpx.Client, conversation: int,
                 message: str | None, deadline: float,
                 begun: asyncio.Event | None = None) -> dict[str, Any]:  # fmt: skip
    """Send (if asked), then read until the conversation's answer is final, reconnecting
    through nginx whenever the socket drops (as htmx does). What the socket saw. ``begun``
    is set once the answer exists (the next new chat is then a new conversation)."""
    answer_id: int | None = None
    opened = []
    while time.monotonic() < deadline:
        try:
            async with open_socket(deployment, client, conversation) as ws:
                opened.append(time.monotonic())
                if message is not None:
                    await ws.send(json.dumps({"action": "send", "message": message}))
                    message = None
                elif answer_id is not None:  # a reconnect: as the page does, ask what ended
                    await ws.send(json.dumps({"action": "sync", "answers": [str(answer_id)]}))
                while True:
                    raw = str(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                    frame = Frame(raw, time.monotonic())
                    for article in frame.articles:
                        if article.get("data-role") == "assistant" and answer_id is None:
                            answer_id = int(article["id"].removeprefix("message-"))
                            if begun is not None:
                                begun.set()
                    if answer_id is not None and (final := frame.final_for(answer_id)):
                        return {"answer": answer_id, "final": final, "opened": opened}
        except (websockets.ConnectionClosed, OSError):
            await asyncio.sleep(0.5)  # reconnect, as the page does
    raise TimeoutError(f"conversation {conversation} did not finish")


def saved_text(client: httpx.Client, conversation: int) -> str:
    return str(client.get(f"/c/{conversation}/export.json").json()["messages"][-1]["content"])


def test_pages_and_hashed_static_files_come_through_nginx(deployment: Deployment) -> None:
    with httpx.Client(verify=False, timeout=10) as http:
        plain = http.get(f"http://127.0.0.1:{deployment.http_port}/accounts/login/")
        assert plain.status_code == 301 and plain.headers["location"].startswith("https://")
        page = http.get(f"{deployment.https}/accounts/login/")
        assert page.status_code == 200 and "strict-transport-security" in page.headers
        css = re.search(r'href="(/static/chat/app\.[0-9a-f]{12}\.css)"', page.text)
        assert css, "no hashed stylesheet link"
        static = http.get(deployment.https + css.group(1))
        assert static.status_code == 200 and static.headers["server"].startswith("nginx")
        assert "immutable" in static.headers["cache-control"]
        health = http.get(f"{deployment.https}/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}


async def test_fifty_concurrent_streams_are_saved_exactly(
    deployment: Deployment, simulator: Simulator
) -> None:
    client = signed_in(deployment)
    try:
        deadline = time.monotonic() + 60
        tasks = []
        for i in range(50):
            conversation = new_conversation(client)
            message = f"Through nginx [t-nginx-{i:02d}]\n#sim tokens=120 tps=40 ttft=0.2 seed={i}"
            begun = asyncio.Event()
            tasks.append(
                (conversation, i, asyncio.create_task(
                    follow(deployment, client, conversation, message, deadline, begun)
                ))
            )  # fmt: skip
            await asyncio.wait_for(begun.wait(), 10)  # saved: the next new chat is another
        for conversation, i, task in tasks:
            seen = await task
            assert seen["final"]["data-status"] == "complete"
            sent = simulator.request_for(f"[t-nginx-{i:02d}]")["text"]
            assert saved_text(client, conversation) == sent
    finally:
        client.close()


@pytest.mark.timeout(300)
async def test_a_long_answer_survives_nginx_and_a_rolling_restart(
    deployment: Deployment, simulator: Simulator
) -> None:
    """A 60-second answer and five shorter ones stream through nginx while both workers are
    restarted one after the other: each ends complete and saved exactly."""
    client = signed_in(deployment)
    try:
        deadline = time.monotonic() + 240
        prompts = {"[t-rolling-long]": "tokens=600 tps=10 ttft=0.2"}
        prompts |= {f"[t-rolling-{i}]": f"tokens=200 tps=20 ttft=0.2 seed={i}" for i in range(5)}
        tasks = {}
        for marker, directive in prompts.items():
            conversation = new_conversation(client)
            message = f"Rolling {marker}\n#sim {directive}"
            begun = asyncio.Event()
            tasks[marker] = (conversation, asyncio.create_task(
                follow(deployment, client, conversation, message, deadline, begun)
            ))  # fmt: skip
            await asyncio.wait_for(begun.wait(), 10)
        await asyncio.sleep(3.0)  # every answer is streaming
        started = time.monotonic()
        stops = []
        for index in (0, 1):  # one at a time: the other keeps serving
            stops.append(await asyncio.to_thread(deployment.restart, index))
        for marker, (conversation, task) in tasks.items():
            seen = await task
            assert seen["final"]["data-status"] == "complete", marker
            assert saved_text(client, conversation) == simulator.request_for(marker)["text"]
        long_answer = simulator.request_for("[t-rolling-long]")
        assert long_answer["finished_at"] - long_answer["started_at"] > 55  # really 60 s long
        assert time.monotonic() - started > 50  # a worker waited for it before restarting
        print(f"\nrolling restart: the workers took {stops[0]:.1f} s and {stops[1]:.1f} s to stop")
    finally:
        client.close()


def access_line(deployment: Deployment, token: str) -> str:
    """The line a worker's Daphne logged for the request whose URL carries ``token``."""

    def logged() -> str | None:
        lines = (line for w in deployment.workers for line in w.log().splitlines())
        return next((line for line in lines if token in line), None)

    return until_sync(logged, f"a worker logged the request {token}", within=10)


def test_the_workers_see_the_address_nginx_saw_not_a_forged_one(deployment: Deployment) -> None:
    """nginx overwrites X-Forwarded-For with the peer it saw, and the workers take the client's
    address from it (``--proxy-headers``): a client naming another one is logged at its own."""
    forged = {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"}
    with httpx.Client(verify=False, timeout=10) as http:
        # Straight to a worker the header is believed: nginx is what must not pass it on.
        direct = secrets.token_hex(6)
        worker = deployment.workers[0].url
        assert http.get(f"{worker}/healthz?probe={direct}", headers=forged).status_code == 200
        assert access_line(deployment, direct).startswith("6.6.6.6:")
        proxied = secrets.token_hex(6)
        response = http.get(f"{deployment.https}/healthz?probe={proxied}", headers=forged)
        assert response.status_code == 200
    line = access_line(deployment, proxied)
    assert line.startswith("127.0.0.1:") and "6.6.6.6" not in line, line


def test_sign_in_guesses_through_nginx_are_counted_at_the_real_address(
    deployment: Deployment,
) -> None:
    """A guesser naming a new address in X-Forwarded-For at each guess is locked after 10 all
    the same, with the throttle's page (429), even when it finally sends the right password;
    the lock holds that account at that address only: another account signs in from there."""
    client = login_form(deployment)
    try:
        statuses = [
            sign_in(client, "grace", f"guess-{n}", {"X-Forwarded-For": f"6.6.{n}.6"}).status_code
            for n in range(10)
        ]
        assert statuses == [200] * 9 + [429]
        right = sign_in(client, "grace", PASSWORD, {"X-Forwarded-For": "6.6.10.6"})
        assert right.status_code == 429 and "retry-after" in right.headers
        assert "Too many failed sign-ins: try again in 15 minutes." in right.text
    finally:
        client.close()
    signed_in(deployment).close()  # ada, from the same address


def test_nginx_limits_requests_to_the_sign_in_pages(deployment: Deployment) -> None:
    """Past a burst, nginx itself answers the sign-in pages (the app's and the admin's) and the
    password reset request (one budget per address) with 429: no flood of reset emails; other
    pages are not limited, and the limit passes."""
    login = f"{deployment.https}/accounts/login/"
    with httpx.Client(verify=False, timeout=10) as http:
        flood = [http.get(login) for _ in range(25)]
        statuses = [response.status_code for response in flood]
        assert statuses[0] == 200 and 429 in statuses, statuses
        refused = flood[statuses.index(429)]
        assert refused.headers["server"].startswith("nginx") and "Too Many" in refused.text
        assert http.get(f"{deployment.https}/admin/login/").status_code == 429
        assert http.get(f"{deployment.https}/accounts/password/reset/").status_code == 429
        assert http.get(f"{deployment.https}/healthz").status_code == 200
        until_sync(lambda: http.get(login).status_code == 200, "the limit passed", within=20)
