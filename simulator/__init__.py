"""A protocol-faithful OpenAI-compatible (DashScope compatible-mode) upstream simulator.

It exists so the chat app, its tests and its benchmarks can be driven against a server that
reproduces the real wire format byte for byte (first role-only chunk, coalesced deltas, finish
chunk, usage chunk, ``[DONE]``) plus the failure modes a real upstream shows (HTTP errors,
mid-stream errors, EOF, stalls, fragmented UTF-8, odd line terminators), all deterministic and
selectable per request.

``simulator.app`` holds the pure ASGI application, ``simulator.script`` the deterministic answer
text and option parsing, and ``python -m simulator`` runs it standalone under Daphne.
"""

from __future__ import annotations
