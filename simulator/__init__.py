"""A protocol-faithful DashScope upstream simulator: compatible mode and the native protocol.

It exists so the chat app, its tests and its benchmarks can be driven against a server that
reproduces the real wire formats byte for byte (compatible mode: first role-only chunk, coalesced
deltas, finish chunk, usage chunk, ``[DONE]``; native: ``id:``/``event:``/``:HTTP_STATUS/200``
events with cumulative usage and no ``[DONE]``), thinking models (``reasoning_content`` and its
vLLM/inline variants) plus the failure modes a real upstream shows (HTTP errors, mid-stream
errors, EOF, stalls, fragmented UTF-8, odd line terminators), all deterministic and selectable
per request.

``simulator.app`` holds the pure ASGI application, ``simulator.native`` the native protocol's
request and event shapes, ``simulator.script`` the deterministic answer and reasoning text and
option parsing, and ``python -m simulator`` runs it standalone under Daphne.
"""

from __future__ import annotations
