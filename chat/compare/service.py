"""Runs comparisons: each trial's two answers started together on the generation service,
the server's own figures when no browser reports a trial, alerts when a run fails.

One per generation service (so per event loop), like the generations it drives. What a run is
and how its figures read lives in ``runs``; how it looks, in ``rendering``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext

from chat.compare.rendering import render_figures
from chat.compare.runs import DONE_FRAME, MODES, SERVER_FIGURES_DELAY, create_trial
from chat.exceptions import ClientError
from chat.generation.service import GenerationService, get_service
from chat.generation.turns import Turn
from chat.live.protocol import COMPARE_EVENT, CompareEvent, comparison_group
from chat.models import ComparisonResult, ComparisonRun
from chat.owners import Owner
from chat.rendering import fragments

logger = logging.getLogger(__name__)


class ComparisonService:
    """Runs each trial's two sides together through the generation service, then the next."""

    def __init__(self, generations: GenerationService) -> None:
        self.generations = generations
        self.running: dict[int, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()  # strong refs until they finish

    def launch(self, owner: Owner, run: ComparisonRun, origin: str | None) -> None:
        """Start the run's trials in a task of their own (the socket may close meanwhile).

        Its frames are written in the active language (the socket's that asked for the run).
        """
        language = translation.get_language() or settings.LANGUAGE_CODE
        self.running[run.pk] = asyncio.create_task(
            self._drive_in(language, owner, run, origin), name=f"comparison-{run.pk}"
        )

    async def _drive_in(
        self, language: str, owner: Owner, run: ComparisonRun, origin: str | None
    ) -> None:
        with translation.override(language):
            await self._drive(owner, run, origin)

    async def _drive(self, owner: Owner, run: ComparisonRun, origin: str | None) -> None:
        try:
            for trial in range(1, run.trials + 1):
                turns = await database_sync_to_async(create_trial)(
                    owner, run, trial, self.generations.live_of(owner)
                )
                await self._publish(run.pk, fragments_trial(run, trial, turns))
                generations = await self.generations.start_turns(turns, origin)
                await asyncio.wait([g.task for g in generations if g.task is not None])
                task = asyncio.create_task(self._server_figures(owner, run.pk, trial))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            await self._publish(run.pk, DONE_FRAME)
        except ClientError as error:
            await self._publish(run.pk, fragments.alert_frame(error.message))
        except Exception:
            logger.exception("comparison %s failed", run.pk)
            await self._publish(
                run.pk,
                fragments.alert_frame(gettext("The comparison stopped on an internal error.")),
            )
        finally:
            self.running.pop(run.pk, None)

    async def _server_figures(self, owner: Owner, run_id: int, trial: int) -> None:
        """If no browser reports a trial's timings (a reloaded page, say), show the server's.

        Waits a moment first, so that a browser's report, which is more telling, wins.
        """
        await asyncio.sleep(SERVER_FIGURES_DELAY)
        html = await database_sync_to_async(_figures_if_unreported)(owner, run_id, trial)
        if html:
            await self._publish(run_id, html)

    async def _publish(self, run_id: int, html: str) -> None:
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send(
            comparison_group(run_id), CompareEvent(type=COMPARE_EVENT, html=html)
        )


def _figures_if_unreported(owner: Owner, run_id: int, trial: int) -> str:
    unreported = ComparisonResult.objects.filter(
        run_id=run_id, trial=trial, browser_complete_ms__isnull=True
    )
    return render_figures(owner, run_id) if unreported.exists() else ""


def fragments_trial(run: ComparisonRun, trial: int, turns: Sequence[Turn]) -> str:
    """Tells the page a trial began and which answers to time, before their turn frames."""
    ids = {mode: turn.answer.id for mode, turn in zip(MODES, turns, strict=True)}
    return (
        f'<span id="compare-trial" hx-swap-oob="true" hidden data-run="{run.pk}" '
        f'data-trial="{trial}" data-trials="{run.trials}" '
        f'data-stream-answer="{ids[ComparisonRun.Mode.STREAM]}" '
        f'data-nostream-answer="{ids[ComparisonRun.Mode.NOSTREAM]}"></span>'
    )


# One per generation service (so per event loop), like the generations it drives.
_services: weakref.WeakKeyDictionary[GenerationService, ComparisonService] = (
    weakref.WeakKeyDictionary()
)


def get_comparisons() -> ComparisonService:
    generations = get_service()
    service = _services.get(generations)
    if service is None:
        service = _services[generations] = ComparisonService(generations)
    return service
