"""Progress saves: the text so far of every growing answer, once per interval, in one call.

One database call for every stream, not one per stream (and never one per token): at hundreds
of streams a thread hop and a transaction each would cost more than the relay itself. The
same call keeps each running answer's heartbeat fresh, so other workers can tell it from one a
dead worker left (``records.is_orphan``), until its final save went through.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async

from .records import save_progress
from .state import Generation

logger = logging.getLogger(__name__)


async def save_progress_loop(running: dict[int, Generation], interval: float) -> None:
    """While answers run, save the grown ones and every one's heartbeat once per interval."""
    failing = False  # warn once per outage, not once per interval
    while running:
        await asyncio.sleep(interval)
        rows = []
        for generation in list(running.values()):
            size = (len(generation.text), len(generation.reasoning))
            if not generation.done and size != generation.saved_size:
                generation.saved_size = size
                rows.append(
                    (generation.answer_id, "".join(generation.text), "".join(generation.reasoning))
                )
        alive = [g.answer_id for g in running.values() if not g.saved]
        if rows or alive:
            try:
                await database_sync_to_async(save_progress)(rows, alive)
            except Exception as exc:  # the final save still comes (and retries); keep the loop
                if not failing:
                    logger.warning("saving answers in progress failed (%s: %s); trying again "
                                   "each interval", type(exc).__name__, exc)  # fmt: skip
                failing = True
            else:
                if failing:
                    logger.info("saving answers in progress works again")
                failing = False
