"""A clean shutdown: stop taking connections, let the answers in flight finish, save the rest."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:  # the service starts this module's drain, not the other way round
    from .service import GenerationService

logger = logging.getLogger(__name__)

FINAL_FRAME_GRACE = 0.5  # seconds a stopping worker waits after its last answer ended


async def drain(service: GenerationService, grace: float) -> None:
    """Let the answers in flight finish for up to ``grace`` seconds, then stop the rest; every
    one is saved (complete, or interrupted with its text)."""
    service.closing = True
    tasks = [g.task for g in service.running.values() if g.task is not None]
    if not tasks:
        return
    logger.info("shutting down: %d answers in flight get %.0f s to finish", len(tasks), grace)
    await asyncio.wait(tasks, timeout=grace)
    late = [g for g in service.running.values() if g.task is not None]
    for generation in late:
        if generation.reader is not None:
            generation.reader.cancel()  # saved as "The server stopped before…"
    if late:
        await asyncio.wait([g.task for g in late if g.task is not None], timeout=10)
        logger.info("shutting down: %d answers stopped and saved", len(late))
    # The final frames were just sent: give them a moment to leave before the sockets close.
    await asyncio.sleep(FINAL_FRAME_GRACE)


def drain_before_shutdown(service: GenerationService) -> None:
    """Under Daphne (Twisted's asyncio reactor), hold the process's exit on SIGTERM until the
    answers in flight are finished or saved (``STREAM_SHUTDOWN_GRACE_MS``)."""
    # Installing a reactor puts the reactor object itself in sys.modules under this name; its
    # interfaces are zope ones, which mypy cannot check calls against.
    reactor: Any = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return  # not served by Daphne (tests, management commands)
    from twisted.internet import defer, tcp

    def before_shutdown() -> defer.Deferred[None]:
        # Stop accepting connections first: a balancer (nginx) then sends new people to the
        # other workers while the sockets already open here see their answers finish.
        for reader in reactor.getReaders():
            if isinstance(reader, tcp.Port):
                reader.stopListening()  # type: ignore[no-untyped-call]  # Twisted: unannotated
        drained = asyncio.ensure_future(drain(service, settings.STREAM_SHUTDOWN_GRACE))
        return defer.Deferred.fromFuture(drained)

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
