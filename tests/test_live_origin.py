"""The websocket origin check compares scheme, host and port, not the host name alone: a page
on another port of the same host, or the site's plain-HTTP or HTTPS twin, cannot open a socket
with the user's cookie (cross-site websocket hijacking), while the site's own pages can.

Over a real socket to Daphne; the proxy's cases (``X-Forwarded-Proto``, a ``Host`` without the
public port, ``CSRF_TRUSTED_ORIGINS`` wildcards) are read from handshake scopes as Daphne
builds them, since a production worker would refuse an anonymous socket anyway.
"""

from __future__ import annotations

from typing import Any

import pytest
import websockets
from pytest_django.fixtures import Settings

from chat.live.origin import origin_allowed
from tests.support.processes import free_port
from tests.support.visitor import Visitor


@pytest.mark.live
@pytest.mark.parametrize("wrong", ["another port", "https", "another host name"])
async def test_a_socket_opens_only_from_the_sites_own_scheme_host_and_port(
    visitor: Visitor, wrong: str
) -> None:
    port = visitor.app.port
    origin = {
        "another port": f"http://127.0.0.1:{free_port()}",  # any other service on the machine
        "https": f"https://127.0.0.1:{port}",
        "another host name": f"http://localhost:{port}",  # in ALLOWED_HOSTS, not this site
    }[wrong]
    conversation = visitor.new_conversation()
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with visitor.socket(conversation, origin=origin):
            pass
    assert refused.value.response.status_code == 403
    async with visitor.socket(conversation, origin=f"http://127.0.0.1:{port}") as ws:
        assert ws.close_code is None  # the site's own origin: accepted


def scope(origin: str | None, host: str, *extra: tuple[str, str], scheme: str = "ws") -> Any:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(name.encode(), value.encode()) for name, value in extra]
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@pytest.fixture
def behind_proxy(settings: Settings) -> Settings:
    """As deployed: TLS at nginx (X-Forwarded-Proto), the public origin trusted."""
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com:8443", "https://*.example.org"]
    return settings


HTTPS = ("x-forwarded-proto", "https")


@pytest.mark.parametrize(
    ("origin", "host", "extra", "allowed"),
    [
        ("https://chat.example.com", "chat.example.com", [HTTPS], True),
        ("https://chat.example.com:443", "chat.example.com", [HTTPS], True),
        ("http://chat.example.com", "chat.example.com", [HTTPS], False),  # wrong scheme
        ("https://chat.example.com", "chat.example.com", [], False),  # the proxy said nothing
        ("https://chat.example.com", "chat.example.com", [("x-forwarded-proto", "http")], False),
        ("https://chat.example.com:444", "chat.example.com", [HTTPS], False),  # wrong port
        ("https://chat.example.com:8443", "chat.example.com", [HTTPS], True),  # trusted
        ("https://a.example.org", "chat.example.com", [HTTPS], True),  # trusted wildcard
        ("https://example.org", "chat.example.com", [HTTPS], True),  # as Django's CSRF check
        ("https://aexample.org", "chat.example.com", [HTTPS], False),
        ("http://a.example.org", "chat.example.com", [HTTPS], False),
        ("https://a.example.org:8443", "chat.example.com", [HTTPS], False),
        ("https://evil-example.org", "chat.example.com", [HTTPS], False),
        ("https://evil.example", "evil.example", [HTTPS], False),  # Host not allowed
        ("https://chat.example.com/path", "chat.example.com", [HTTPS], False),
        ("https://user@chat.example.com", "chat.example.com", [HTTPS], False),
        ("null", "chat.example.com", [HTTPS], False),
        ("", "chat.example.com", [HTTPS], False),
        ("https://chat.example.com:99999", "chat.example.com", [HTTPS], False),
    ],
)
def test_behind_the_proxy_scheme_host_and_port_must_all_match(
    behind_proxy: Settings, origin: str, host: str, extra: list[tuple[str, str]], allowed: bool
) -> None:
    assert origin_allowed(scope(origin, host, *extra)) is allowed


def test_a_missing_or_repeated_origin_is_refused(behind_proxy: Settings) -> None:
    assert not origin_allowed(scope(None, "chat.example.com", HTTPS))
    good = "https://chat.example.com"
    assert origin_allowed(scope(good, "chat.example.com", HTTPS))
    assert not origin_allowed(scope(good, "chat.example.com", HTTPS, ("origin", good)))
