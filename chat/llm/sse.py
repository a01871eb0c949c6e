"""Server-sent events read with a cap on the size of one line and of one event's data.

httpx-sse's ``EventSource`` holds an unfinished line, and the data lines of an event not yet
ended by a blank line, in memory until they end: an upstream that never sends a line break,
or never a blank line, grows the worker's memory until the total timeout. ``capped_events``
reads exactly as ``EventSource.aiter_sse`` does, with httpx-sse's own line splitter (lines end
only at CR, LF or CRLF, so a raw U+2028 inside JSON survives) and event decoder (pinned in
requirements.txt), over ``response.aiter_text()`` (UTF-8 decoded incrementally), and stops
with an ``UpstreamProtocolError`` once a line or an event passes ``limit`` characters.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import httpx
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from .events import UpstreamProtocolError
from .wording import Wording

MB = 1024 * 1024

EVENT_LIMIT = 1 * MB
"""The most characters one SSE line, or one event's data, may hold. A model's delta is a few
bytes of JSON; even cumulative output (DashScope's ``incremental_output`` off) of a very long
answer stays far below."""


async def capped_events(
    response: httpx.Response, limit: int = EVENT_LIMIT, *, request_id: str | None = None
) -> AsyncGenerator[ServerSentEvent, None]:
    """The events of an SSE response, as ``EventSource(response).aiter_sse()`` yields them;
    ``UpstreamProtocolError`` once a line or an event's data passes ``limit`` characters
    (what was yielded before stands: the caller keeps the text already streamed)."""
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    data = 0  # characters of data in the event being read
    unfinished = 0  # characters of the line not ended yet (held by the line splitter)
    async for text in response.aiter_text():
        for line in lines.decode(text):
            if len(line) > limit:
                raise _too_large(limit, request_id)
            if not line:
                data = 0
            elif line.startswith("data:") or line == "data":  # the field the event keeps
                data += len(line)
            sse = decoder.decode(line)
            if sse is not None:
                yield sse
        end = max(text.rfind("\n"), text.rfind("\r"))
        unfinished = unfinished + len(text) if end < 0 else len(text) - end - 1
        if data + unfinished > limit:
            raise _too_large(limit, request_id)
    for line in lines.flush():
        sse = decoder.decode(line)
        if sse is not None:
            yield sse


def _too_large(limit: int, request_id: str | None) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        Wording(
            "The model server sent a stream event larger than %(limit)s MB.",
            limit=max(1, round(limit / MB)),
        ),
        request_id=request_id,
    )
