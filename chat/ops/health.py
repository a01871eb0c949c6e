"""``/healthz``: is this worker able to serve? For load balancers, nginx and monitoring.

It checks what a worker needs beyond itself: the database (a query) and the channel layer
(Redis answers a PING and this worker's own probes through it come back; the in-memory layer
is always there). A worker shutting down says "draining" (503), so a balancer that checks
stops sending it new people while its answers finish. Anonymous callers learn only that word
(200 for "ok", else 503); staff also see each check and this worker's answers in flight.
Nothing in it names a host, a URL or a secret.
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

from chat.generation.service import peek_service

CHECK_TIMEOUT = 2.0  # seconds per check: a health check must answer quickly even when failing


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


class NotHearing(Exception):
    """Redis answers, but this worker's probes through it are lost (see ``layer_probe``)."""


async def _channel_layer() -> None:
    if not settings.REDIS_URL:
        return  # the in-memory layer lives in this process
    service = peek_service()
    if service is not None and service.probe is not None and service.probe.deaf:
        raise NotHearing
    client = aioredis.from_url(
        settings.REDIS_URL, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


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
