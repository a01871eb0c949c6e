"""The I/O half of the upstream client: one pooled HTTP client and ``ChatClient``.

``ChatClient.stream_reply`` speaks either dialect (``openai.OpenAIDialect``,
``dashscope.DashScopeDialect``) and yields the same typed events for both. Streams are read
with httpx-sse, which splits lines only on CR, LF and CRLF and decodes UTF-8 incrementally; a
raw U+2028 inside JSON content and a 汉字 split across network reads therefore survive
(protocols.md edge cases 11-13). Never switch to ``aiter_lines()``.

Two clocks bound a reply. The pool's read timeout is an idle timeout: it fires when no byte at
all arrives for that long, so a stream that stalls after a few tokens ends there. SSE
keep-alive comments are bytes, and a server that only sends them is alive by that measure;
the overall deadline (``total_timeout``) ends such a reply, and any other that runs too long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing
from typing import Any, Protocol, TypeVar

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_sse import EventSource

from .dashscope import DashScopeDialect
from .errors import (
    ERROR_BODY_LIMIT,
    error_from_response,
    header_request_id,
    parse_retry_after,
    provider_error_from_obj,
    rate_limited_message,
    server_label,
    stream_error,
)
from .events import (
    Event,
    Failed,
    Finished,
    ReasoningDelta,
    Retrying,
    TextDelta,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    Usage,
)
from .openai import OpenAIDialect
from .thinking import ThinkTags

logger = logging.getLogger("chat.llm")

PROTOCOLS = ("openai", "dashscope")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Statuses asked again (before the first token only): rate limits and server trouble."""
_NO_RETRY_CODES = frozenset({"insufficient_quota"})
"""429s that will not pass by waiting (OpenAI's "you exceeded your current quota")."""

T = TypeVar("T")


class StreamParser(Protocol):
    def accepts(self, event: str) -> bool: ...
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


class _Retry(Exception):
    """Raised inside ``stream_reply`` to ask again unchanged after ``wait`` seconds: a
    transient failure before any text or thinking reached the caller."""

    def __init__(self, error: UpstreamError, wait: float) -> None:
        super().__init__(error.message)
        self.error = error
        self.wait = wait


def _seconds(value: float) -> str:
    return f"{value:g}"


def _failure_label(error: UpstreamError) -> str:
    """What went wrong, for a log line: the status and code, or the connection error's class."""
    if error.status is not None:
        return f"HTTP {error.status}" + (f" ({error.code})" if error.code else "")
    cause = error.__cause__
    return type(cause).__name__ if cause is not None else error.kind


def _with_retry_after(error: UpstreamError, headers: Mapping[str, str]) -> None:
    """A rate limit reported inside an HTTP 200 stream (DashScope's throttling event) takes its
    wait from that response's Retry-After, if any."""
    if isinstance(error, UpstreamRateLimited) and error.retry_after is None:
        wait = parse_retry_after(headers)
        if wait is not None:
            error.retry_after = wait
            if error.message == UpstreamRateLimited.default_message:
                error.message = rate_limited_message(wait)
                error.args = (error.message,)


def _is_transient(exc: Exception, *, got_response: bool) -> bool:
    """A connection refused or reset before any response: nothing reached the model."""
    return not got_response and isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)


def _is_retryable(error: UpstreamError) -> bool:
    """429 and 5xx, as an HTTP status or as DashScope's error event behind HTTP 200."""
    return (
        isinstance(error, UpstreamRateLimited | UpstreamServerError)
        and error.status in RETRY_STATUSES
        and error.code not in _NO_RETRY_CODES
    )


class _DeadlinePassed(Exception):
    """The overall deadline of a reply passed while waiting for the upstream."""


class _Deadline:
    """One reply's overall deadline, enforced only while it waits for the upstream.

    One timer per attempt rather than a timeout scope per read (which costs a timer per
    event): when it fires while ``wait`` is awaiting the upstream, it cancels that await and
    ``wait`` raises ``_DeadlinePassed``; when it fires while the caller has the event (the
    generator is suspended at a ``yield``), the next ``wait`` raises at once. A cancellation
    from anyone else still propagates as ``CancelledError``.
    """

    def __init__(self, when: float | None) -> None:
        self.when = when
        self.expired = False
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False

    def __enter__(self) -> _Deadline:
        if self.when is not None:
            loop = asyncio.get_running_loop()
            if loop.time() >= self.when:
                self.expired = True
            else:
                self._handle = loop.call_at(self.when, self._fire)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self.expired = True
        if self._task is not None and not self._task.done():
            self._cancelled = True
            self._task.cancel()

    def check(self) -> None:
        if self.expired:
            raise _DeadlinePassed

    async def wait(self, awaitable: Awaitable[T]) -> T:
        if self.when is None:
            return await awaitable
        task = self._task = asyncio.current_task()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._cancelled and task is not None:
                self._cancelled = False
                if task.uncancel() == 0:  # nobody else wants this task cancelled
                    raise _DeadlinePassed from None
            raise
        finally:
            self._task = None
            if self._cancelled and task is not None:  # the cancellation was swallowed below
                self._cancelled = False
                task.uncancel()


class ChatClient:
    """Streams one chat reply at a time from one upstream (a base URL and a protocol).

    Cheap to create; the pooled ``httpx.AsyncClient`` is shared and owned by the caller.
    Consume ``stream_reply`` with ``contextlib.aclosing`` (or cancel the task) so stopping
    early closes the upstream connection at once, which stops generation and billing.
    ``protocol`` is "openai" (chat completions) or "dashscope" (native; ``incremental``
    chooses ``incremental_output``). Two refusals are fixed by asking again, once, and
    remembered: a server that rejects ``stream_options``, and a DashScope thinking model that
    refuses cumulative output.

    Transient failures are asked again unchanged, up to ``retries`` more times, but only
    before any text or thinking has been yielded (after that a retry would repeat the text):
    HTTP 429 and 500/502/503/504 (also DashScope's throttling event behind HTTP 200), and a
    connection refused or reset before any response. The wait is the server's Retry-After
    when it sends one, else ``retry_backoff`` seconds doubled per retry, with jitter; a
    Retry-After over ``max_retry_wait`` is not waited for (the user is told at once). 400,
    401, 403, timeouts and errors after a token are final. ``total_timeout`` seconds (None or
    0: none) bound one reply from the first request to the last byte, retries included.
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
        retries: int = 2,
        max_retry_wait: float = 20.0,
        retry_backoff: float = 0.5,
        total_timeout: float | None = 600.0,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self._dialect = _dialect(protocol, incremental=incremental)
        self._include_usage = include_usage
        self._retries = max(0, int(retries))
        self._max_retry_wait = max(0.0, float(max_retry_wait))
        self._retry_backoff = max(0.0, float(retry_backoff))
        self._total_timeout = total_timeout if total_timeout and total_timeout > 0 else None

    @property
    def protocol(self) -> str:
        return self._dialect.name

    @property
    def include_usage(self) -> bool:
        return self._include_usage

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"ChatClient(base_url={self._base_url!r}, protocol={self.protocol!r}, api_key={key})"

    def _headers(self, stream: bool, request_id: str | None = None) -> dict[str, str]:
        headers = self._dialect.headers(stream)
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if request_id:
            headers["X-Request-Id"] = request_id  # ours, for the upstream's logs and support
        return headers

    async def stream_reply(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        *,
        stream: bool = True,
        options: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Send one chat request and yield its events; failures arrive as ``Failed``.

        ``request_id`` (ours) is sent as ``X-Request-Id`` on every attempt.

        ``stream=False`` makes one non-streaming call and yields the same event types.
        ``options`` (temperature, max_tokens, enable_thinking, …) go where the protocol takes
        them: the top level for chat completions, ``parameters`` for DashScope native. A
        ``ValueError`` (a programming error, not an upstream one) is raised if they try to
        replace the fields the parser depends on. ``asyncio.CancelledError`` propagates, also
        from the wait between two attempts; cancelling or closing the generator closes the
        HTTP response immediately.
        """
        options = dict(options or {})
        self._dialect.body(model, messages, stream, options, include_usage=False)  # validate
        loop = asyncio.get_running_loop()
        deadline = None if self._total_timeout is None else loop.time() + self._total_timeout
        retried: set[str] = set()
        attempt = 0
        while True:
            try:
                once = self._reply_once(
                    model,
                    messages,
                    stream,
                    options,
                    attempt=attempt,
                    deadline=deadline,
                    request_id=request_id,
                )
                async with aclosing(once):
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
            except _Retry as retry:
                attempt += 1
                waiting = Retrying(attempt, self._retries, retry.wait, _failure_label(retry.error))
                logger.info(
                    "upstream %s: %s; retry %d of %d in %.2f s",
                    server_label(self._base_url),
                    waiting.reason,
                    attempt,
                    self._retries,
                    retry.wait,
                )
                yield waiting
                await asyncio.sleep(waiting.wait)  # Stop (task cancellation) ends it at once

    def _retry_wait(
        self, error: UpstreamError, attempt: int, deadline: float | None
    ) -> float | None:
        """Seconds to wait before asking again, or None when this failure is final."""
        if attempt >= self._retries:
            return None
        if error.retry_after is not None:
            if error.retry_after > self._max_retry_wait:
                return None  # the user is better told "retry in N s" now than kept waiting
            wait = error.retry_after
        else:
            ceiling = min(self._retry_backoff * 2**attempt, self._max_retry_wait)
            wait = ceiling * random.uniform(0.5, 1.0)  # jitter: retries of many streams spread
        if deadline is not None and asyncio.get_running_loop().time() + wait >= deadline:
            return None
        return wait

    def _deadline_error(self, *, partial: bool) -> UpstreamTimeout:
        total = _seconds(self._total_timeout or 0)
        if partial:
            return UpstreamTimeout(
                f"The model took longer than {total} s in all; the partial answer was kept."
            )
        return UpstreamTimeout(f"The model took longer than {total} s in all to answer.")

    async def _reply_once(
        self,
        model: str,
        messages: Sequence[Mapping[str, str]],
        stream: bool,
        options: Mapping[str, Any],
        *,
        attempt: int = 0,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> AsyncGenerator[Event, None]:
        include_usage = self._include_usage
        body = self._dialect.body(model, messages, stream, options, include_usage=include_usage)
        url = self._dialect.url(self._base_url)
        finished = False
        got_response = False
        abandoned = False
        yielded = False
        shown = False  # text or thinking reached the caller: asking again would repeat it
        transient = False
        timed_out = False
        error: UpstreamError | None = None
        think = ThinkTags()
        with _Deadline(deadline) as clock:
            try:
                async with AsyncExitStack() as stack:
                    clock.check()
                    response = await clock.wait(
                        stack.enter_async_context(
                            self._http.stream(
                                "POST", url, json=body, headers=self._headers(stream, request_id)
                            )
                        )
                    )
                    got_response = True
                    source = (
                        self._stream_events(response, url, body)
                        if stream
                        else self._whole_events(response, url)
                    )
                    events = await stack.enter_async_context(aclosing(source))
                    while True:
                        clock.check()
                        try:
                            raw = await clock.wait(anext(events))
                        except StopAsyncIteration:
                            break
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
                            elif isinstance(event, TextDelta | ReasoningDelta):
                                shown = True
                            yielded = True
                            try:
                                yield event
                            except BaseException:
                                abandoned = True  # consumer closed us or the task was cancelled
                                raise
            except UpstreamError as exc:
                error = exc
            except _DeadlinePassed:
                timed_out = True
                error = self._deadline_error(partial=shown)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                if abandoned:
                    raise
                error = self._map_transport_error(exc, got_response=got_response)
                transient = _is_transient(exc, got_response=got_response)
        if error is None:
            return
        if not yielded and include_usage and stream and _rejects_stream_options(error):
            raise _Attempt("stream_options")
        if not yielded and stream and _refuses_cumulative(error, body):
            raise _Attempt("incremental_output")
        if not shown and not finished and (transient or _is_retryable(error)):
            wait = self._retry_wait(error, attempt, deadline)
            if wait is not None:
                raise _Retry(self._redact(error), wait)
        held = think.flush()  # the thought or text held back so far is the user's
        if timed_out and held:
            error = self._deadline_error(partial=True)
        for event in held:
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
        # SSE is always UTF-8, whatever the charset says, and one leading BOM must be ignored;
        # "utf-8-sig" drops it (kept, it would hide the first field and lose that event).
        response.encoding = "utf-8-sig"
        parser = self._dialect.stream_parser_for(body)
        seen_finish = False
        async with aclosing(EventSource(response).aiter_sse()) as sse_events:
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
                    elif isinstance(event, Failed):
                        _with_retry_after(event.error, response.headers)
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
