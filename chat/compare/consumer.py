"""The comparison page's socket: start a run, report the browser's timings, follow a run."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.utils.translation import gettext

from chat.compare import runs
from chat.compare.rendering import render_figures, render_run
from chat.compare.service import get_comparisons
from chat.exceptions import ClientError
from chat.generation.service import get_service
from chat.live.consumer import CLOSE_NOT_FOUND, LiveConsumer, request_id
from chat.live.protocol import COMPARE_EVENT, comparison_group
from chat.models import ComparisonRun
from chat.owners import Owner


class CompareConsumer(LiveConsumer):
    """The comparison page's socket (``/ws/compare/`` or ``/ws/compare/<run id>/``).

    It follows one run at a time: the run's group and both sides' conversations. Message
    frames are the chat's own (the chat page's chrome is left out); timings come back from the
    browser and get the figures, the verdict and, at the end, the chart.
    """

    run_group = ""

    async def connect(self) -> None:
        owner = Owner.from_scope(self.scope)
        if owner is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.owner = owner
        run_id = self.scope["url_route"]["kwargs"].get("run_id")
        run = None
        if run_id is not None:
            run = await database_sync_to_async(runs.get_run)(owner, int(run_id))
            if run is None:
                await self.close(code=CLOSE_NOT_FOUND)
                return
        await self.join_session_group()
        await self.accept()
        self.start_following(get_service())
        if run is not None:
            await self._follow_run(run)

    async def disconnect(self, code: int) -> None:
        if self.run_group:
            await self.channel_layer.group_discard(self.run_group, self.channel_name)
        await super().disconnect(code)

    async def _follow_run(self, run: ComparisonRun) -> None:
        """Listen to this run (and stop listening to the previous one), catching up live text."""
        if self.run_group:
            await self.channel_layer.group_discard(self.run_group, self.channel_name)
        self.run_group = comparison_group(run.pk)
        await self.channel_layer.group_add(self.run_group, self.channel_name)
        await self.follow([run.stream_conversation_id, run.nostream_conversation_id])

    async def handle(self, content: dict[str, Any]) -> None:
        action = content.get("action")
        if action == "run":
            await self._run(content)
        elif action == "timings":
            await self._timings(content)
        elif action == "sync":
            await self.sync(content.get("answers"))
        else:
            raise ClientError(gettext("That request was not understood."))

    async def _run(self, content: dict[str, Any]) -> None:
        prompt, model = content.get("prompt"), content.get("model")
        if not isinstance(prompt, str) or not isinstance(model, str):
            raise ClientError(gettext("Type a prompt first."))
        trials = request_id(content.get("trials", 1), "trials")
        pairing = runs.parse_pairing(content.get("pairing"))
        gateway_timeout_s = runs.parse_gateway_timeout(content.get("gateway_timeout"))
        setups = (
            [runs.parse_setup(content, pane) for pane in runs.PANES.values()]
            if pairing == runs.SETUPS
            else []
        )
        run = await database_sync_to_async(runs.create_run)(
            self.owner,
            prompt,
            model,
            trials,
            pairing=pairing,
            gateway_timeout_s=gateway_timeout_s,
            setups=setups,
        )
        await self._follow_run(run)
        await self.send(text_data=await database_sync_to_async(render_run)(run, oob=True))
        get_comparisons().launch(self.owner, run, self.channel_name)

    async def _timings(self, content: dict[str, Any]) -> None:
        run_id = request_id(content.get("run"), "run")
        trial = request_id(content.get("trial"), "trial")
        mode = content.get("mode")
        if mode not in runs.MODES:
            raise ClientError(gettext("That request was not understood."))
        await database_sync_to_async(runs.save_browser_timings)(
            self.owner,
            run_id,
            trial,
            str(mode),
            _milliseconds(content.get("first_text_ms")),
            _milliseconds(content.get("complete_ms")),
        )
        html = await database_sync_to_async(render_figures)(self.owner, run_id)
        await self.send(text_data=html)

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] == COMPARE_EVENT:
            await self.send(text_data=message["html"])
        else:
            await super().dispatch(message)


def _milliseconds(value: Any) -> float | None:
    """A browser-measured duration: empty for "never happened", else 0 to one hour."""
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ClientError(gettext("That timing was not a number.")) from exc
    if not 0 <= number <= 3_600_000:
        raise ClientError(gettext("That timing was out of range."))
    return number
