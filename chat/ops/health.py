"""``/healthz``: is this worker able to serve? For load balancers, nginx and monitoring.

It checks what a worker needs beyond itself: the database (a query) and the channel layer
(Redis answers a PING and this worker's own probes through it come back; the in-memory layer
is always there). A worker shutting down says "draining" (503), so a balancer that checks
stops sending it new people while its answers finish. Anonymous callers learn only that word
(200 for "ok", else 503); staff also see each check and this worker's answers in flight.
Nothing in it names a host, a URL or a secret.

It opens no Redis connection per call: anyone may call it, and a balancer calls every few
seconds, so each worker keeps one connection for it, and calls that arrive together share
one PING (see ``RedisPing``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chat.generation.service import peek_service

CHECK_TIMEOUT = 2.0  # seconds per check: a health check must answer quickly even when failing


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


class NotHearing(Exception):
    """Redis answers, but this worker's probes through it are lost (see ``layer_probe``)."""


class RedisPing:
    """PING Redis over one connection kept for the life of the worker, shared by the calls
    that arrive while a PING is out (a flood of ``/healthz`` makes one PING, not one each)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.get_running_loop()  # a client's sockets belong to one event loop
        self.client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=CHECK_TIMEOUT,
            socket_timeout=CHECK_TIMEOUT,
            # Once more at once: a connection Redis closed since the last call (a restart, its
            # idle timeout) is replaced rather than reported as Redis being down.
            retry=Retry(NoBackoff(), 1),
        )
        self._pending: asyncio.Future[None] | None = None

    async def ping(self) -> None:
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._ping())
        # A caller that gives up (its own timeout) does not cancel the others' PING.
        await asyncio.shield(self._pending)

    async def _ping(self) -> None:
        try:
            await asyncio.wait_for(self.client.ping(), CHECK_TIMEOUT)
        finally:
            self._pending = None


_redis_ping: RedisPing | None = None


def redis_ping() -> RedisPing:
    """This worker's ``RedisPing``, made on first use (again if the URL or the event loop
    changed, which only tests do)."""
    global _redis_ping
    if (
        _redis_ping is None
        or _redis_ping.url != settings.REDIS_URL
        or _redis_ping.loop is not asyncio.get_running_loop()
    ):
        _redis_ping = RedisPing(settings.REDIS_URL)
    return _redis_ping


async def _channel_layer() -> None:
    if not settings.REDIS_URL:
        return  # the in-memory layer lives in this process
    service = peek_service()
    if service is not None and service.probe is not None and service.probe.deaf:
        raise NotHearing
    await redis_ping().ping()


async def _check(name: str, probe: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT)
    except Exception as exc:  # any failure means "not ready"; its class only, never a message
        return name, f"failed ({type(exc).__name__})"
    return name, "ok"


def _is_staff(request: HttpRequest) -> bool:
    return bool(request.user.is_authenticated and request.user.is_staff)


@login_not_required
@never_cache
@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    checks = dict(
        await asyncio.gather(
            _check("database", sync_to_async(_database)()),
            _check("channel_layer", _channel_layer()),
        )
    )
    service = peek_service()
    draining = bool(service and service.closing)
    healthy = all(result == "ok" for result in checks.values()) and not draining
    status = "draining" if draining else "ok" if healthy else "unavailable"
    body: dict[str, Any] = {"status": status}
    if await sync_to_async(_is_staff)(request):
        body["checks"] = checks
        body["answers_in_flight"] = len(service.running) if service else 0
    return JsonResponse(body, status=200 if healthy else 503)
