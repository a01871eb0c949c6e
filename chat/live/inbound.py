"""How many messages one socket may send: a token bucket, checked before a message costs
anything (not even channels' per-message database clean-up, a thread hop).

The page sends a message per click or key (send, Stop, Retry, an edit) and one ``sync`` per
reconnect; the comparison page two ``timings`` per trial. Nothing legitimate comes near
``RATE`` a second, so a socket past its ``BURST`` is a bug or an attack:

- the first message refused gets one alert ("Too many requests…"); the rest of the flood is
  dropped without a word, since one reply per message would let a client amplify its flood;
- while it floods, every message is dropped, even one that finds a token, until ``CALM``
  seconds pass without a refusal (a client back under the rate is served again then);
- a socket still refused ``CLOSE_AFTER`` seconds after its first refusal is closed with
  ``CLOSE_FLOOD`` (1008, policy violation): htmx's websocket extension does not reconnect
  on it, so a page stuck in a loop stops instead of starting over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

RATE = 10.0  # messages a second, sustained
BURST = 20  # messages at once, after a quiet while
CALM = 1.0  # seconds without a refusal that end a flood
CLOSE_AFTER = 3.0  # seconds of flooding after which the socket is closed
CLOSE_FLOOD = 1008  # WebSocket "policy violation"
CLOSE_FLOOD_REASON = "too many messages"

Verdict = Literal["accept", "alert", "drop", "close"]
"""What to do with one message: handle it; refuse it saying so; refuse it silently; refuse
it and close the socket (said once; every later message is dropped)."""


class InboundLimit:
    """One socket's inbound messages, as a token bucket with a memory of its flood."""

    def __init__(
        self,
        *,
        rate: float = RATE,
        burst: int = BURST,
        calm: float = CALM,
        close_after: float = CLOSE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.calm = calm
        self.close_after = close_after
        self.clock = clock
        self.tokens = float(burst)
        self.checked = clock()
        self.flooding_since: float | None = None  # the first refusal of the flood going on
        self.last_refused = float("-inf")
        self.refused = 0  # messages refused in all (for the log)
        self.closed = False

    def admit(self) -> Verdict:
        """Called for each message as it arrives."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.checked) * self.rate)
        self.checked = now
        if self.closed:
            return "drop"
        if self.flooding_since is not None and now - self.last_refused >= self.calm:
            self.flooding_since = None
        if self.tokens >= 1:
            self.tokens -= 1
            return "accept" if self.flooding_since is None else "drop"
        self.refused += 1
        self.last_refused = now
        if self.flooding_since is None:
            self.flooding_since = now
            return "alert"
        if now - self.flooding_since >= self.close_after:
            self.closed = True
            return "close"
        return "drop"
