"""``daphne bench.baseline.asgi:application``: the baseline relay's websocket endpoint.

One consumer per socket; each prompt (``{"prompt": "..."}``) starts a task that relays one
upstream answer, delta by delta, through a session shared by the whole process.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.baseline.settings")
django.setup()

import aiohttp  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

_session: aiohttp.ClientSession | None = None


def shared_session() -> aiohttp.ClientSession:
    """One session (one connection pool) for every stream, made inside Daphne's event loop."""
    global _session
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.BASELINE_CONNECTIONS),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
        )
    return _session


class RelayConsumer(AsyncWebsocketConsumer):
    """Relays each prompt's answer as ``{"d": delta}`` frames, then ``{"done": true}``."""

    async def connect(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        prompt = str(json.loads(text_data or "{}").get("prompt", ""))
        task = asyncio.create_task(self.relay(prompt))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def disconnect(self, code: int) -> None:
        for task in self.tasks:
            task.cancel()

    async def relay(self, prompt: str) -> None:
        """Read the upstream's SSE line by line; one frame per content delta."""
        body: dict[str, Any] = {
            "model": settings.BASELINE_MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
        }
        url = f"{settings.BASELINE_UPSTREAM}/chat/completions"
        try:
            async with shared_session().post(url, json=body) as response:
                response.raise_for_status()
                async for line in response.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    choices = json.loads(data).get("choices") or ()
                    delta = choices[0].get("delta", {}).get("content") if choices else None
                    if delta:
                        await self.send(json.dumps({"d": delta}, ensure_ascii=False))
            await self.send('{"done": true}')
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            await self.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))


application = ProtocolTypeRouter({"websocket": RelayConsumer.as_asgi()})
