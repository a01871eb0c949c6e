"""HTTP doubles for the upstream client's unit tests: recorded bytes replayed by httpx.

A real server is used wherever one can run (the simulator); these replay exact byte streams,
split at chosen offsets, which a real server cannot promise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx

DATA = Path(__file__).resolve().parents[1] / "data" / "llm"
SSE = {"content-type": "text/event-stream"}


def recording(name: str) -> bytes:
    return (DATA / name).read_bytes()


class ChunkStream(httpx.AsyncByteStream):
    """A response body that yields the given chunks, then optionally hangs or fails."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        hang: bool = False,
        fail_with: Exception | None = None,
    ) -> None:
        self.chunks = list(chunks)
        self.hang = hang
        self.fail_with = fail_with
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.sent += 1
            yield chunk
        if self.hang:
            await asyncio.Event().wait()
        if self.fail_with is not None:
            raise self.fail_with

    async def aclose(self) -> None:
        self.closed = True


Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def mock_http(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def replay(
    chunks: Iterable[bytes],
    *,
    status: int = 200,
    headers: Mapping[str, str] = SSE,
    **stream_kwargs: Any,
) -> tuple[httpx.AsyncClient, ChunkStream, list[httpx.Request]]:
    """An httpx client whose every request is answered with the given chunks."""
    body = ChunkStream(chunks, **stream_kwargs)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers, stream=body)

    return mock_http(handler), body, seen


def pieces_replay() -> tuple[httpx.AsyncClient, list[bytes]]:
    """An httpx client answering each request with ``pieces`` as they are at that moment, for
    replaying one recording cut in different places."""
    pieces: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, stream=ChunkStream(pieces))

    return mock_http(handler), pieces
