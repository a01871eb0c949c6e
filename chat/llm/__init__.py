"""Talk to model servers and turn their replies into typed events.

This is the only package that speaks HTTP to model servers: the OpenAI-compatible
chat-completions API (DashScope compatible mode, OpenAI, vLLM, Ollama, llama.cpp) and
DashScope's native SSE API. It has no Django imports so it can be tested and reused alone.

Modules: ``events`` (what a reply yields, the error tree), ``wording`` (what an error says: an
English template and its params, which the Django side translates), ``errors`` (error bodies
of every dialect), ``openai`` and ``dashscope`` (request bodies and pure parsers, one per
protocol), ``thinking`` (``<think>`` tags inside content), ``dialects`` (what the client needs
of a protocol), ``transport`` (the pooled HTTP client, httpx errors as ``UpstreamError``s),
``responses`` (an SSE stream or a JSON body read into events), ``deadline`` (a reply's overall
deadline), ``retries`` (when to ask again) and ``client`` (``ChatClient``, which uses them all).

``ChatClient.stream_reply`` never raises an ``UpstreamError``; it yields ``Failed(error)``
as its last event. Before any text or thinking was yielded it first asks again after a 429,
a 500/502/503/504 or a connection refused or reset (``retries``, with backoff). The error
tree (``kind`` in brackets, stable for the UI and logs)::

    UpstreamError [error]
    ├── UpstreamUnavailable   [unavailable]   connect refused, DNS, bad URL, closed before answering
    ├── UpstreamTimeout       [timeout]       connect / read (idle) / write / pool timeout, or
    │                                         the reply's overall deadline (``total_timeout``)
    ├── UpstreamAuthError     [auth]          HTTP 401, 403
    ├── UpstreamRateLimited   [rate_limit]    HTTP 429 (retry_after from Retry-After)
    ├── UpstreamBadRequest    [bad_request]   other HTTP 4xx
    ├── UpstreamServerError   [server]        HTTP 5xx
    ├── UpstreamStreamError   [stream_error]  {"error": {...}} after HTTP 200 (e.g. moderation)
    ├── UpstreamInterrupted   [incomplete]    stream ended with neither finish_reason nor [DONE]
    └── UpstreamProtocolError [protocol]      unparseable response, wrong content type

Every error's ``message`` is an English sentence; ``wording`` holds the same as data (template
and params, ``wording.Wording``) when the words are ours, None when they are the provider's.

Event contract of one reply: zero or more ``ReasoningDelta``/``TextDelta``/``Usage`` in wire
order, then exactly one terminal event, either ``Finished`` (possibly followed by a ``Usage``,
as OpenAI-style servers send usage after the finish chunk) or ``Failed``; never both. Before
the first of them, one ``Retrying`` per transient refusal the client asks again after.

Thinking arrives as ``ReasoningDelta`` whatever the server calls it: ``reasoning_content``
(DashScope, DeepSeek, llama.cpp), ``reasoning`` (vLLM), ``reasoning_text``, or a
``<think>…</think>`` block opening the content (split out by ``thinking.ThinkTags``, a
stateful pass over the events, so the per-chunk parsers stay pure).
"""

from __future__ import annotations

from .client import ChatClient
from .dashscope import parse_response as parse_dashscope_response
from .dialects import PROTOCOLS
from .errors import error_from_response
from .events import (
    Event,
    Failed,
    Finished,
    ReasoningDelta,
    Retrying,
    TextDelta,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamStreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    Usage,
)
from .openai import parse_chunk, parse_completion
from .transport import AiohttpReader, make_http_client
from .wording import Wording

__all__ = [
    "PROTOCOLS",
    "AiohttpReader",
    "ChatClient",
    "Event",
    "Failed",
    "Finished",
    "ReasoningDelta",
    "Retrying",
    "TextDelta",
    "UpstreamAuthError",
    "UpstreamBadRequest",
    "UpstreamError",
    "UpstreamInterrupted",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamServerError",
    "UpstreamStreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "Usage",
    "Wording",
    "error_from_response",
    "make_http_client",
    "parse_chunk",
    "parse_completion",
    "parse_dashscope_response",
]
