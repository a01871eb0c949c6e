"""One upstream HTTP response read into events: an SSE stream or a whole JSON body.

Streams are read with httpx-sse's decoders (``sse.capped_events``), which split lines only on
CR, LF and CRLF over UTF-8 decoded incrementally; a raw U+2028 inside JSON content and a 汉字
split across network reads therefore survive (protocols.md edge cases 11-13). Never switch to
``aiter_lines()``. One line or event, and a whole non-streamed reply, are capped in size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import httpx

from .dialects import Dialect
from .errors import (
    error_from_response,
    header_request_id,
    parse_retry_after,
    provider_error_from_obj,
    rate_limited_wording,
    stream_error,
)
from .events import (
    Event,
    Failed,
    Finished,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamProtocolError,
    UpstreamRateLimited,
)
from .sse import capped_events
from .transport import read_capped, read_whole
from .wording import Wording

logger = logging.getLogger("chat.llm")


def with_retry_after(error: UpstreamError, headers: Mapping[str, str]) -> None:
    """A rate limit reported inside an HTTP 200 stream (DashScope's throttling event) takes its
    wait from that response's Retry-After, if any."""
    if isinstance(error, UpstreamRateLimited) and error.retry_after is None:
        wait = parse_retry_after(headers)
        if wait is not None:
            error.retry_after = wait
            if error.wording is not None and (
                error.wording.template == UpstreamRateLimited.default_message
            ):
                error.reword(rate_limited_wording(wait))


def with_request_id(dialect: Dialect, event: Event, header_id: str | None) -> Event:
    """Finished events carry the id support can look up (see ``Dialect.header_id_wins``)."""
    if isinstance(event, Finished) and header_id:
        if dialect.header_id_wins or not event.request_id:
            return Finished(event.reason, request_id=header_id)
    elif isinstance(event, Failed) and event.error.request_id is None:
        event.error.request_id = header_id
    return event


async def stream_events(
    dialect: Dialect, response: httpx.Response, url: str, body: Mapping[str, Any]
) -> AsyncGenerator[Event, None]:
    """Events of an SSE reply; raises ``UpstreamError`` on anything but a clean end."""
    if not response.is_success:
        raw = await read_capped(response)
        raise error_from_response(response.status_code, response.headers, raw, url)
    header_id = header_request_id(response.headers)
    content_type = response.headers.get("content-type", "").partition(";")[0].strip()
    if content_type.lower() != "text/event-stream":
        # An error object sent as plain JSON with HTTP 200 is still the provider's error.
        raw = await read_capped(response)
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        provider = provider_error_from_obj(obj)
        if provider is not None and (provider.message or provider.code):
            raise stream_error(obj)
        raise UpstreamProtocolError(
            Wording(
                "The model server did not send an event stream (content type %(type)s).",
                type=repr(content_type or "missing"),
            ),
            status=response.status_code,
            request_id=header_id,
        )
    # SSE is always UTF-8, whatever the charset says, and one leading BOM must be ignored;
    # "utf-8-sig" drops it (kept, it would hide the first field and lose that event).
    response.encoding = "utf-8-sig"
    parser = dialect.stream_parser_for(body)
    seen_finish = False
    # Each line and event capped (``sse.EVENT_LIMIT``): a line that never ends must not grow
    # the worker's memory until the deadline.
    async with aclosing(capped_events(response, request_id=header_id)) as sse_events:
        async for sse in sse_events:
            if not parser.accepts(sse.event):
                # Not a message of this protocol (``event: ping`` …): its data is no text,
                # no end and no error, whatever it holds.
                logger.debug("skipped an SSE event of type %.40r", sse.event)
                continue
            data = sse.data
            if parser.is_end(data):
                if seen_finish:
                    return
                # llama.cpp's server ends a reply it abandons for another request this way.
                raise UpstreamInterrupted(
                    Wording(
                        "The answer was cut off: the model server ended the stream "
                        "before finishing it."
                    ),
                    request_id=header_id,
                )
            if not data.strip():
                continue
            try:
                obj = json.loads(data)
            except ValueError:
                obj = None
            if not isinstance(obj, Mapping):
                raise UpstreamProtocolError(
                    Wording("The model server sent malformed data in the stream."),
                    request_id=header_id,
                )
            for event in parser.feed(sse.event, obj):
                if isinstance(event, Finished):
                    seen_finish = True
                elif isinstance(event, Failed):
                    with_retry_after(event.error, response.headers)
                yield with_request_id(dialect, event, header_id)
    if not seen_finish:
        raise UpstreamInterrupted(request_id=header_id)


async def whole_events(
    dialect: Dialect, response: httpx.Response, url: str
) -> AsyncGenerator[Event, None]:
    """Events of a non-streaming reply."""
    raw = await read_whole(response) if response.is_success else await read_capped(response)
    if not response.is_success:
        raise error_from_response(response.status_code, response.headers, raw, url)
    header_id = header_request_id(response.headers)
    try:
        obj = json.loads(raw)
    except ValueError:
        raise UpstreamProtocolError(
            Wording("The model server sent a reply that is not valid JSON."),
            status=response.status_code,
            request_id=header_id,
        ) from None
    if not isinstance(obj, Mapping):
        raise UpstreamProtocolError(
            Wording("The model server sent a reply that is not a JSON object."),
            status=response.status_code,
            request_id=header_id,
        )
    for event in dialect.parse_whole(obj):
        yield with_request_id(dialect, event, header_id)
