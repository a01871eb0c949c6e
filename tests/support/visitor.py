"""A browser session without a browser: cookies over HTTP (httpx), and websockets that present
them, to the chat and to the comparison page."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from tests.support.app import App


@dataclass
class Visitor:
    """A browser session: cookies over HTTP, and websockets that present them."""

    app: App
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.app.url, timeout=10, follow_redirects=True)
        self.http.get("/")

    def close(self) -> None:
        self.http.close()

    def post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        token = self.http.cookies.get("csrftoken", "")
        return self.http.post(path, data=data or {}, headers={"X-CSRFToken": token})

    def new_conversation(self, **settings: str) -> int:
        response = self.post("/c/new/")
        response.raise_for_status()
        match = re.search(r"/c/(\d+)/$", str(response.url))
        assert match, response.url
        conversation_id = int(match.group(1))
        if settings:
            data = {"model": "qwen-plus", "system_prompt": "", "stream": "on", **settings}
            if data["stream"] != "on":
                data.pop("stream")
            self.post(f"/c/{conversation_id}/settings/", data).raise_for_status()
        return conversation_id

    def export(self, conversation_id: int) -> dict[str, Any]:
        response = self.http.get(f"/c/{conversation_id}/export.json")
        response.raise_for_status()
        return dict(response.json())

    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())

    def socket(self, conversation_id: int, origin: str | None = None) -> Any:
        """The chat's websocket for one conversation (``async with``)."""
        return websockets.connect(
            f"ws://127.0.0.1:{self.app.port}/ws/c/{conversation_id}/",
            additional_headers={"Cookie": self.cookie_header()},
            origin=origin or self.app.url,  # type: ignore[arg-type]
            max_size=None,
        )


def on(app: App, visitor: Visitor) -> Visitor:
    """The same browser session, talking to another worker (a load balancer's choice)."""
    other = Visitor(app)
    other.http.cookies.clear()
    other.http.cookies.update(visitor.http.cookies)
    return other


def compare_socket(visitor: Visitor, run_id: int | None = None) -> Any:
    """The comparison page's websocket: a new run's, or following run ``run_id``."""
    path = f"/ws/compare/{run_id}/" if run_id else "/ws/compare/"
    return websockets.connect(
        f"ws://127.0.0.1:{visitor.app.port}{path}",
        additional_headers={"Cookie": visitor.cookie_header()},
        origin=visitor.app.url,  # type: ignore[arg-type]
        max_size=None,
    )


def answer_row(export: dict[str, Any], answer_id: int) -> dict[str, Any]:
    """One message of a conversation's JSON export."""
    return next(m for m in export["messages"] if m["id"] == answer_id)


PASSWORD = "a-long-enough-passphrase-7"  # what the tests' accounts are created with


def signed_in(app: App, username: str, password: str = PASSWORD) -> Visitor:
    """A visitor signed in through the login form; a refused login fails here (the form would
    come back under /accounts/)."""
    visitor = Visitor(app)  # its first GET lands on the login page, which sets the CSRF cookie
    response = visitor.post("/accounts/login/", {"username": username, "password": password})
    assert not response.url.path.startswith("/accounts/"), response.url  # in: the chat
    return visitor


def client_signed_in(username: str) -> tuple[Any, Any]:
    """A new user ``username`` (password ``PASSWORD``) and Django's test client signed in as
    them (``pytest.mark.django_db`` tests)."""
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_user(username, password=PASSWORD)
    client = Client()
    client.force_login(user)
    return client, user
