"""The I/O half of the upstream client: one pooled HTTP client and ``ChatClient``.

``ChatClient.stream_reply`` speaks either dialect (``openai.OpenAIDialect``,
``dashscope.DashScopeDialect``) and yields the same typed events for both. Streams are read
with httpx-sse, which splits lines only on CR, LF and CRLF and decodes UTF-8 incrementally; a
raw U+2028 inside JSON content and a 汉字 split across network reads therefore survive
(protocols.md edge cases 11-13). Never switch to ``aiter_lines()``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Protocol

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_sse import EventSource

from .dashscope import DashScopeDialect
from .errors import (
    ERROR_BODY_LIMIT,
    error_from_response,
    header_request_id,
    provider_error_from_obj,
    server_label,
    stream_error,
)
from .events import (
    Event,
    Failed,
    Finished,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    Usage,
)
from .openai import OpenAIDialect
from .thinking import ThinkTags

logger = logging.getLogger("chat.llm")

PROTOCOLS = ("openai", "dashscope")


class StreamParser(Protocol):
    def is_end(self, data: str) -> bool: ...
    def feed(self, event: str, obj: Mapping[str, Any]) -> list[Event]: ...


class Dialect(Protocol):
    name: str
    header_id_wins: bool

    def url(self, base_url: str) -> str: ...
    def body(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        stream: bool,
        options: Mapping[str, Any],
        *,
        include_usage: bool,
    ) -> dict[str, Any]: ...
    def headers(self, stream: bool) -> dict[str, str]: ...
    def needs_incremental(self, model: str) -> None: ...
    def stream_parser_for(self, body: Mapping[str, Any]) -> StreamParser: ...
    def parse_whole(self, obj: Mapping[str, Any]) -> list[Event]: ...


def make_http_client(
    *, connect_timeout: float = 10.0, read_timeout: float = 300.0, max_connections: int = 1000
) -> httpx.AsyncClient:
    """The one pooled client per process.

    ``read`` is the idle time allowed between two reads (thinking models and queues go quiet
    for minutes), not a total deadline; DashScope's SDK uses the same 300 s. The pool is sized
    for many concurrent streams: httpx's default of 100 made streams 101-200 wait 2.5 s.
    """
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout
        ),
        limits=limits,
        follow_redirects=False,
        transport=AiohttpReader(limits=limits),
    )


class AiohttpReader(AiohttpTransport):
    """httpx's API over aiohttp's connections: the cheapest reader of many long streams.

    Measured with ``make bench`` at 200 streams of 40 tokens/s: p99 relay latency 273 ms with
    httpx's own transport (anyio toggles read interest and arms a timeout scope per read),
    189 ms with this one. httpx-aiohttp maps aiohttp's errors to httpx's, but files a refused
    connection and a server that hangs up before answering under ``ConnectTimeout``; this
    corrects those two, so the user is told the server is down, not slow.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ServerTimeoutError):
                raise
            if isinstance(cause, aiohttp.ClientConnectorError):
                raise httpx.ConnectError(str(exc), request=request) from cause
            if isinstance(cause, aiohttp.ServerDisconnectedError):
                raise httpx.RemoteProtocolError(str(exc), request=request) from cause
            raise


async def _read_capped(response: httpx.Response, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """Read at most ``limit`` bytes of a body we only need a snippet of."""
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) >= limit:
            break
    return bytes(buf[:limit])


def _dialect(protocol: str, *, incremental: bool) -> Dialect:
    if protocol == "openai":
        return OpenAIDialect()
    if protocol == "dashscope":
        return DashScopeDialect(incremental=incremental)
    raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")


def _rejects_stream_options(error: UpstreamError) -> bool:
    """A 400 that names ``stream_options``: older Ollama, Azure and others refuse the field."""
    return error.status == 400 and "stream_options" in error.message.lower()


def _refuses_cumulative(error: UpstreamError, body: Mapping[str, Any]) -> bool:
    """DashScope's 400 for thinking models (QwQ, Qwen3) asked for cumulative output."""
    parameters = body.get("parameters")
    return (
        error.status == 400
        and isinstance(parameters, Mapping)
        and parameters.get("incremental_output") is False
        and "incremental_output" in error.message
    )


class _Attempt(Exception):
    """Raised inside ``stream_reply`` to ask again with a fix (nothing was yielded yet)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChatClient:
    """Streams one chat reply at a time from one upstream (a base URL and a protocol).

    Cheap to create; the pooled ``httpx.AsyncClient`` is shared and owned by the caller.
    Consume ``stream_reply`` with ``contextlib.aclosing`` (or cancel the task) so stopping
    early closes the upstream connection at once, which stops generation and billing.
    ``protocol`` is "openai" (chat completions) or "dashscope" (native; ``incremental``
    chooses ``incremental_output``). Two refusals are fixed by asking again, once, and
    remembered: a server that rejects ``stream_options``, and a DashScope thinking model that
    refuses cumulative output.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: str | None = None,
        *,
        protocol: str = "openai",
        include_usage: bool = True,
        incremental: bool = True,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self._dialect = _dialect(protocol, incremental=incremental)
        self._include_usage = include_usage

    @property
    def protocol(self) -> str:
        return self._dialect.name

    @property
    def include_usage(self) -> bool:
        return self._include_usage

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"ChatClient(base_url={self._base_url!r}, protocol={self.protocol!r}, api_key={key})"

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = self._dialect.headers(stream)
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    async def stream_reply(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        *,
        stream: bool = True,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Send one chat request and yield its events; failures arrive as ``Failed``.

        ``stream=False`` makes one non-streaming call and yields the same event types.
        ``options`` (temperature, max_tokens, enable_thinking, …) go where the protocol takes
        them: the top level for chat completions, ``parameters`` for DashScope native. A
        ``ValueError`` (a programming error, not an upstream one) is raised if they try to
        replace the fields the parser depends on. ``asyncio.CancelledError`` propagates;
        cancelling or closing the generator closes the HTTP response immediately.
        """
        options = dict(options or {})
        self._dialect.body(model, messages, stream, options, include_usage=False)  # validate
        retried: set[str] = set()
        while True:
            try:
                async with aclosing(self._reply_once(model, messages, stream, options)) as once:
                    async for event in once:
                        yield event
                return
            except _Attempt as again:
                if again.reason in retried:  # pragma: no cover - each fix is applied once
                    raise
                retried.add(again.reason)
                server = server_label(self._base_url)
                if again.reason == "stream_options":
                    self._include_usage = False
                    logger.info("upstream %s rejects stream_options; not sending it", server)
                else:
                    self._dialect.needs_incremental(model)
                    logger.info("upstream %s needs incremental output for %s", server, model)

    async def _reply_once(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        stream: bool,
        options: Mapping[str, Any],
    ) -> AsyncGenerator[Event, None]:
        include_usage = self._include_usage
        body = self._dialect.body(model, messages, stream, options, include_usage=include_usage)
        url = self._dialect.url(self._base_url)
        finished = False
        got_response = False
        abandoned = False
        yielded = False
        error: UpstreamError | None = None
        think = ThinkTags()
        try:
            async with self._http.stream(
                "POST", url, json=body, headers=self._headers(stream)
            ) as response:
                got_response = True
                source = (
                    self._stream_events(response, url, body)
                    if stream
                    else self._whole_events(response, url)
                )
                async with aclosing(source) as events:
                    async for raw in events:
                        if isinstance(raw, Failed):
                            raise raw.error
                        if isinstance(raw, Finished | Usage):
                            out = [*think.flush(), raw]
                        else:
                            out = think.feed(raw)
                        for event in out:
                            if finished and not isinstance(event, Usage):
                                continue  # keep the contract: only Usage may follow Finished
                            if isinstance(event, Finished):
                                finished = True
                            yielded = True
                            try:
                                yield event
                            except BaseException:
                                abandoned = True  # consumer closed us or the task was cancelled
                                raise
        except UpstreamError as exc:
            error = exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            if abandoned:
                raise
            error = self._map_transport_error(exc, got_response=got_response)
        if error is None:
            return
        if not yielded and include_usage and stream and _rejects_stream_options(error):
            raise _Attempt("stream_options")
        if not yielded and stream and _refuses_cumulative(error, body):
            raise _Attempt("incremental_output")
        for event in think.flush():  # the thought or text held back so far is the user's
            yield event
        error = self._redact(error)
        if finished:
            # The answer is complete; only trailing usage went missing.
            logger.info("upstream trouble after finish ignored: %r", error)
            return
        logger.warning("upstream %s failed: %r", server_label(self._base_url), error)
        yield Failed(error)

    def _with_request_id(self, event: Event, header_id: str | None) -> Event:
        """Finished events carry the id support can look up (see ``Dialect.header_id_wins``)."""
        if isinstance(event, Finished) and header_id:
            if self._dialect.header_id_wins or not event.request_id:
                return Finished(event.reason, request_id=header_id)
        elif isinstance(event, Failed) and event.error.request_id is None:
            event.error.request_id = header_id
        return event

    async def _stream_events(
        self, response: httpx.Response, url: str, body: Mapping[str, Any]
    ) -> AsyncGenerator[Event, None]:
        """Events of an SSE reply; raises ``UpstreamError`` on anything but a clean end."""
        if not response.is_success:
            raw = await _read_capped(response)
            raise error_from_response(response.status_code, response.headers, raw, url)
        header_id = header_request_id(response.headers)
        content_type = response.headers.get("content-type", "").partition(";")[0].strip()
        if content_type.lower() != "text/event-stream":
            # An error object sent as plain JSON with HTTP 200 is still the provider's error.
            raw = await _read_capped(response)
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = None
            provider = provider_error_from_obj(obj)
            if provider is not None and (provider.message or provider.code):
                raise stream_error(obj)
            raise UpstreamProtocolError(
                "The model server did not send an event stream "
                f"(content type {content_type or 'missing'!r}).",
                status=response.status_code,
                request_id=header_id,
            )
        response.encoding = "utf-8"  # SSE is always UTF-8, whatever the charset says.
        parser = self._dialect.stream_parser_for(body)
        seen_finish = False
        async with aclosing(EventSource(response).aiter_sse()) as sse_events:
            async for sse in sse_events:
                data = sse.data
                if parser.is_end(data):
                    if seen_finish:
                        return
                    # llama.cpp's server ends a reply it abandons for another request this way.
                    raise UpstreamInterrupted(
                        "The answer was cut off: the model server ended the stream "
                        "before finishing it.",
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
                        "The model server sent malformed data in the stream.",
                        request_id=header_id,
                    )
                for event in parser.feed(sse.event, obj):
                    if isinstance(event, Finished):
                        seen_finish = True
                    yield self._with_request_id(event, header_id)
        if not seen_finish:
            raise UpstreamInterrupted(request_id=header_id)

    async def _whole_events(
        self, response: httpx.Response, url: str
    ) -> AsyncGenerator[Event, None]:
        """Events of a non-streaming reply."""
        raw = await response.aread() if response.is_success else await _read_capped(response)
        if not response.is_success:
            raise error_from_response(response.status_code, response.headers, raw, url)
        header_id = header_request_id(response.headers)
        try:
            obj = json.loads(raw)
        except ValueError:
            raise UpstreamProtocolError(
                "The model server sent a reply that is not valid JSON.",
                status=response.status_code,
                request_id=header_id,
            ) from None
        if not isinstance(obj, Mapping):
            raise UpstreamProtocolError(
                "The model server sent a reply that is not a JSON object.",
                status=response.status_code,
                request_id=header_id,
            )
        for event in self._dialect.parse_whole(obj):
            yield self._with_request_id(event, header_id)

    def _map_transport_error(self, exc: Exception, *, got_response: bool) -> UpstreamError:
        """The one place httpx exceptions become ``UpstreamError``s."""
        server = server_label(self._base_url)
        if isinstance(exc, httpx.TimeoutException):
            error: UpstreamError = UpstreamTimeout()
        elif isinstance(exc, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
            error = UpstreamUnavailable(
                "The model server address is not a valid http(s) URL; check the base URL."
            )
        elif isinstance(exc, httpx.ConnectError):
            error = UpstreamUnavailable(
                f"Could not reach the model server ({server}). Is it running?"
            )
        elif isinstance(exc, httpx.DecodingError):
            error = UpstreamProtocolError("The model server sent a body that could not be decoded.")
        elif got_response:
            error = UpstreamInterrupted()
        else:
            error = UpstreamUnavailable(
                f"The model server ({server}) closed the connection without answering."
            )
        # Log the class only: httpx messages can contain URLs.
        logger.debug("mapped %s to %s", type(exc).__name__, type(error).__name__)
        error.__cause__ = exc
        return error

    def _redact(self, error: UpstreamError) -> UpstreamError:
        """Make sure the API key never leaves this module inside an error."""
        key = self._api_key
        if key and key in error.message:
            error.message = error.message.replace(key, "***")
            error.args = (error.message,)
        return error
