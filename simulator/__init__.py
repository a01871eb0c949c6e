"""A protocol-faithful DashScope upstream simulator: compatible mode and the native protocol.

It exists so the chat app, its tests and its benchmarks can be driven against a server that
reproduces the real wire formats byte for byte (compatible mode: first role-only chunk, coalesced
deltas, finish chunk, usage chunk, ``[DONE]``; native: ``id:``/``event:``/``:HTTP_STATUS/200``
events with cumulative usage and no ``[DONE]``), thinking models (``reasoning_content`` and its
vLLM/inline variants) plus the failure modes a real upstream shows (HTTP errors, mid-stream
errors, EOF, stalls, fragmented UTF-8, odd line terminators), all deterministic and selectable
per request.

One module per job:

- ``app``: the ASGI application (routes, lifespan, settings from ``SIM_*``); ``python -m
  simulator`` (``__main__``) runs it standalone under Daphne.
- ``intake``: body, auth, validation and options, once for both protocols, giving a ``Call``.
- ``reply``: answers a call; ``compatible`` (OpenAI-compatible chunks, bodies, errors) and
  ``dashscope`` (native events and bodies, shaped by the pure ``native``) write the two formats.
- ``pacing`` (token timing, stalls, disconnects), ``wire`` (ASGI bytes, SSE oddities),
  ``faults`` (HTTP faults, ``fault_times``) and ``log`` (the request log tests read).
- ``options`` (the ``sim`` options), ``prompt`` (reading messages), ``script`` (the
  deterministic answer and reasoning text), ``corpus`` (the sentences it draws from) and
  ``hostile`` (answers a client must survive: one enormous token, an unclosed code fence).
"""

from __future__ import annotations
