"""``ChatClient``: one chat reply at a time from one upstream, with its retries and deadline.

``ChatClient.stream_reply`` speaks either dialect (``openai.OpenAIDialect``,
``dashscope.DashScopeDialect``) and yields the same typed events for both. Its parts live
beside it: the pooled HTTP client (``transport``), the overall deadline (``deadline``), when
to ask again (``retries``) and how a response becomes events (``responses``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing
from typing import Any

import httpx

from .deadline import Deadline, DeadlinePassed, deadline_error
from .dialects import PROTOCOLS, make_dialect
from .errors import server_label
from .events import (
    Event,
    Failed,
    Finished,
    ReasoningDelta,
    Retrying,
    TextDelta,
    UpstreamError,
    Usage,
)
from .responses import stream_events, whole_events
from .retries import (
    Attempt,
    Retry,
    failure_label,
    is_retryable,
    refuses_cumulative,
    rejects_stream_options,
    retry_wait,
)
from .thinking import ThinkTags
from .transport import AiohttpReader, is_transient, make_http_client, map_transport_error

# What this module exported before its parts moved out; ``chat.llm`` re-exports them too.
__all__ = ["PROTOCOLS", "AiohttpReader", "ChatClient", "make_http_client"]

logger = logging.getLogger("chat.llm")


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
        self._dialect = make_dialect(protocol, incremental=incremental)
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
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: bool = True,
        options: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        read_timeout: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Send one chat request and yield its events; failures arrive as ``Failed``.

        ``request_id`` (ours) is sent as ``X-Request-Id`` on every attempt.

        ``read_timeout`` (seconds) shortens the pool's idle read timeout for this request only,
        as a proxy in front of the upstream would (the comparison page's gateway timeout): a
        reply silent that long ends in the same ``UpstreamTimeout`` as the pool's own.

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
                    read_timeout=read_timeout,
                )
                async with aclosing(once):
                    async for event in once:
                        yield event
                return
            except Attempt as again:
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
            except Retry as retry:
                attempt += 1
                waiting = Retrying(attempt, self._retries, retry.wait, failure_label(retry.error))
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

    async def _reply_once(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: bool,
        options: Mapping[str, Any],
        *,
        attempt: int = 0,
        deadline: float | None = None,
        request_id: str | None = None,
        read_timeout: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        include_usage = self._include_usage
        body = self._dialect.body(model, messages, stream, options, include_usage=include_usage)
        url = self._dialect.url(self._base_url, body)
        finished = False
        got_response = False
        abandoned = False
        yielded = False
        shown = False  # text or thinking reached the caller: asking again would repeat it
        transient = False
        timed_out = False
        error: UpstreamError | None = None
        think = ThinkTags()
        with Deadline(deadline) as clock:
            try:
                async with AsyncExitStack() as stack:
                    clock.check()
                    response = await clock.wait(
                        stack.enter_async_context(
                            self._http.stream(
                                "POST",
                                url,
                                json=body,
                                headers=self._headers(stream, request_id),
                                timeout=self._timeout(read_timeout),
                            )
                        )
                    )
                    got_response = True
                    source = (
                        stream_events(self._dialect, response, url, body)
                        if stream
                        else whole_events(self._dialect, response, url)
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
            except DeadlinePassed:
                timed_out = True
                error = deadline_error(self._total_timeout, partial=shown)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                if abandoned:
                    raise
                error = map_transport_error(exc, got_response=got_response, base_url=self._base_url)
                transient = is_transient(exc, got_response=got_response)
        if error is None:
            return
        if not yielded and include_usage and stream and rejects_stream_options(error):
            raise Attempt("stream_options")
        if not yielded and stream and refuses_cumulative(error, body):
            raise Attempt("incremental_output")
        if not shown and not finished and (transient or is_retryable(error)):
            wait = retry_wait(
                error,
                attempt,
                deadline,
                retries=self._retries,
                max_retry_wait=self._max_retry_wait,
                retry_backoff=self._retry_backoff,
            )
            if wait is not None:
                raise Retry(self._redact(error), wait)
        held = think.flush()  # the thought or text held back so far is the user's
        if timed_out and held:
            error = deadline_error(self._total_timeout, partial=True)
        for event in held:
            yield event
        error = self._redact(error)
        if finished:
            # The answer is complete; only trailing usage went missing.
            logger.info("upstream trouble after finish ignored: %r", error)
            return
        logger.warning("upstream %s failed: %r", server_label(self._base_url), error)
        yield Failed(error)

    def _timeout(self, read_timeout: float | None) -> httpx.Timeout:
        """The pool's timeouts, with this request's idle read timeout if it has its own.

        A gateway in front of the upstream cuts a silent connection at its limit, but our own
        idle limit still holds behind it: the shorter wins, as it would in production.
        """
        pool = self._http.timeout
        if read_timeout is None or read_timeout <= 0:
            return pool
        if pool.read is not None:
            read_timeout = min(read_timeout, pool.read)
        return httpx.Timeout(
            connect=pool.connect, read=read_timeout, write=pool.write, pool=pool.pool
        )

    def _redact(self, error: UpstreamError) -> UpstreamError:
        """Make sure the API key never leaves this module inside an error."""
        key = self._api_key
        if key and key in error.message:
            if error.wording is None:
                error.reword(error.message.replace(key, "***"))
            else:
                hidden = error.wording.replace(key, "***")
                text = hidden.text()
                # A key lives in a provider's text (a param); in our own words, give up the data.
                error.reword(hidden if key not in text else text.replace(key, "***"))
        return error
