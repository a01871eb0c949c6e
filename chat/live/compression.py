"""permessage-deflate for the websockets Daphne serves (``WEBSOCKET_COMPRESSION``).

A delta frame is mostly the same markup around a few new characters, so deflate with its
context kept across messages shrinks it several-fold on the wire. Daphne builds its autobahn
``WebSocketServerFactory`` without offering compression; this turns it on once the reactor
runs, for every connection after. A small window and memory level keep the cost per socket to
some 16 KB of zlib state for sending (~260 KB at zlib's defaults, 22 KB at memory level 4)
while an answer still travels at 5-6 bytes on the wire per character instead of 20-22 (10 bits
cost about a fifth more bytes: the first frame of a turn carries whole articles).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

logger = logging.getLogger(__name__)

WINDOW_BITS = 11  # 2 KB of history per direction: plenty for the markup a frame repeats
MEMORY_LEVEL = 2  # a small hash table: frames are short, so it costs little compression


def accept(offers: list[Any]) -> Any:
    """Accept a client's permessage-deflate offer, with small windows; else no compression."""
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept

    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            # autobahn's constructor is unannotated.
            return PerMessageDeflateOfferAccept(  # type: ignore[no-untyped-call]
                offer,
                request_max_window_bits=WINDOW_BITS if offer.accept_max_window_bits else 0,
                window_bits=WINDOW_BITS,
                mem_level=MEMORY_LEVEL,
            )
    return None


def enable_under_daphne() -> None:
    """Under Daphne, turn compression on as soon as its listening ports exist."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return  # not served by Daphne

    def enable() -> None:
        factories = {}
        for reader in reactor.getReaders():  # listening ports: Daphne's HTTPFactory, its server
            server = getattr(getattr(reader, "factory", None), "server", None)
            ws = getattr(server, "ws_factory", None)
            if ws is not None:
                factories[id(ws)] = ws
        for factory in factories.values():
            # allowNullOrigin is the one option whose default is not "unchanged": keep Daphne's
            # (the app's own origin check decides; it refuses "null").
            factory.setProtocolOptions(
                perMessageCompressionAccept=accept, allowNullOrigin=factory.allowNullOrigin
            )
        if not factories:
            logger.warning("websocket compression: Daphne's websocket factory was not found")

    reactor.callWhenRunning(enable)
