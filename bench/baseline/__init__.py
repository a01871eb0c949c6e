"""A bare relay to measure Streamside against, in the same run, on the same machine.

Machines here vary several-fold from day to day, so an absolute figure means little; the
app's figures are printed as ratios to this relay's. It is the probe of
``../shared/reference/performance.md``: one Daphne process, one ``AsyncWebsocketConsumer``
that starts a task per prompt, reads the upstream's OpenAI-compatible SSE through one shared
aiohttp session and sends one text frame ``{"d": delta}`` per delta, then ``{"done": true}``.
No database, no channel layer, no templates, no models.
"""

from __future__ import annotations
