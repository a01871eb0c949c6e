"""The websocket origin check: scheme, host and port, as Django checks a form's Origin.

Channels' ``AllowedHostsOriginValidator`` compares host names only, so a page on another port
of the same host (``http://127.0.0.1:8080``, any other local service) or the plain-HTTP twin
of an HTTPS site could open a socket with the user's cookie. Accepted here, and nothing else:

- the request's own origin: its scheme (``https`` behind the documented TLS proxy, whose
  ``X-Forwarded-Proto`` decides as ``SECURE_PROXY_SSL_HEADER`` says; else the socket's own)
  and its ``Host`` header, which must be in ``ALLOWED_HOSTS``;
- an origin listed in ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` covers subdomains),
  needed where the proxy hands the worker a ``Host`` without the public port.

A missing, ``null``, repeated or malformed ``Origin`` is refused (403 at the handshake).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}
# (scheme, host, port), the host lower-case and without brackets; port always given.
Origin = tuple[str, str, int]


def parse_origin(value: str) -> Origin | None:
    """``scheme://host[:port]`` with nothing after it, else None."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def request_scheme(scope: dict[str, Any], headers: dict[bytes, bytes]) -> str:
    """``http`` or ``https``, decided as Django decides ``request.is_secure()``."""
    proxy_header: tuple[str, str] | None = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header is not None:
        name, secure = proxy_header
        raw = headers.get(name.removeprefix("HTTP_").replace("_", "-").lower().encode())
        if raw is not None:
            first = raw.decode("latin-1").split(",", 1)[0].strip()
            return "https" if first == secure else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def own_origin(scope: dict[str, Any], headers: dict[bytes, bytes]) -> Origin | None:
    """The origin of the site as this request reached it, if its Host is allowed."""
    host = headers.get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as Django's own get_host
    if not domain or not validate_host(domain, allowed):
        return None
    return parse_origin(f"{request_scheme(scope, headers)}://{host}")


def trusted(origin: Origin, patterns: Iterable[str]) -> bool:
    """Listed in ``CSRF_TRUSTED_ORIGINS``: exactly, or under a ``*.`` wildcard (same scheme
    and port; the domain or a subdomain, as Django's CSRF check reads it)."""
    scheme, host, port = origin
    for pattern in patterns:
        wildcard = "://*." in pattern
        listed = parse_origin(pattern.replace("://*.", "://", 1) if wildcard else pattern)
        if listed is None or listed[0] != scheme or listed[2] != port:
            continue
        if host == listed[1] or (wildcard and host.endswith("." + listed[1])):
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether this websocket handshake comes from a page of this site."""
    raw_headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
    origins = [value for name, value in raw_headers if name.lower() == b"origin"]
    if len(origins) != 1:
        return False
    origin = parse_origin(origins[0].decode("latin-1"))
    if origin is None:
        return False
    headers = {name.lower(): value for name, value in raw_headers}
    return origin == own_origin(scope, headers) or trusted(origin, settings.CSRF_TRUSTED_ORIGINS)


class SameOriginValidator:
    """ASGI middleware in front of the websocket consumers: a handshake from any other origin
    is refused before a consumer, a session or the database is touched."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
