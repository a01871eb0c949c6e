"""The websocket consumer: routes messages between one socket and the generation service.

It holds no chat logic: validate the htmx ``ws-send`` payload, call the service, forward the
service's frames (ready HTML) to the browser. Generations run as service tasks, so a Stop is
never queued behind a long answer and closing the socket does not stop an answer.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import comparisons, fragments
from .compare_views import render_figures, render_run
from .exceptions import ClientError
from .models import ComparisonRun, conversation_group
from .owners import Owner
from .services import FRAME_EVENT, get_conversation, get_service

CLOSE_NOT_FOUND = 4404
ACTIONS = {"send", "stop", "retry"}


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One socket showing one conversation (``/ws/c/<id>/``)."""

    conversation_id: int
    owner: Owner
    seen: dict[int, int]

    async def connect(self) -> None:
        """On connect: check ownership, join the conversation's group, catch up live answers."""
        owner = Owner.from_scope(self.scope)
        conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        if (
            owner is None
            or await database_sync_to_async(get_conversation)(owner, conversation_id) is None
        ):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.owner, self.conversation_id, self.seen = owner, conversation_id, {}
        await self.channel_layer.group_add(conversation_group(conversation_id), self.channel_name)
        await self.accept()
        # Joined first, snapshot second: any frame after the snapshot's seq still arrives.
        for generation in get_service().snapshots(conversation_id):
            self.seen[generation.answer_id] = generation.seq
            frame = fragments.snapshot_frame(generation.live_view())
            await self.send(text_data=frame.body + frame.chrome)

    async def disconnect(self, code: int) -> None:
        """On close: stop listening. Answers in flight go on and are saved."""
        if hasattr(self, "conversation_id"):
            await self.channel_layer.group_discard(
                conversation_group(self.conversation_id), self.channel_name
            )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Runs for each ws-send: a new message, Stop or Retry."""
        try:
            await self._dispatch(content)
        except ClientError as error:
            await self.send(text_data=fragments.alert_frame(error.message))

    async def _dispatch(self, content: Any) -> None:
        if not isinstance(content, dict):
            raise ClientError("That request was not understood.")
        action = content.get("action", "send")
        if action not in ACTIONS:
            raise ClientError("That request was not understood.")
        service = get_service()
        if action == "send":
            message = content.get("message")
            if not isinstance(message, str):
                raise ClientError("Type a message first.")
            await service.send(self.owner, self.conversation_id, message, self.channel_name)
            return
        answer_id = _answer_id(content)
        if action == "stop":
            await service.stop(self.conversation_id, answer_id)
        else:
            await service.retry(self.owner, self.conversation_id, answer_id, self.channel_name)

    async def decode_json(self, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except ValueError as exc:
            raise ClientError("That request was not valid JSON.") from exc

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            await self.send(text_data=fragments.alert_frame("Binary messages are not accepted."))
            return
        try:
            content = await self.decode_json(text_data)
        except ClientError as error:
            await self.send(text_data=fragments.alert_frame(error.message))
            return
        await self.receive_json(content, **kwargs)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Runs for every message; frames skip channels' per-message database clean-up.

        ``AsyncConsumer.dispatch`` calls ``close_old_connections`` in the sync thread before
        each handler: a thread hop per frame per socket, for a handler that touches no database.
        """
        if message["type"] == FRAME_EVENT:
            await self.chat_frame(message)
        else:
            await super().dispatch(message)

    async def chat_frame(self, event: dict[str, Any]) -> None:
        """A frame from the service, for every socket in the group."""
        if event["seq"] <= self.seen.get(event["answer"], 0):
            return  # already contained in the snapshot this socket got
        html = event["html"] + event["chrome"]
        if event["kind"] == "turn" and event.get("origin") == self.channel_name:
            html += fragments.SENT_MARKER
        await self.send(text_data=html)


def _answer_id(content: dict[str, Any]) -> int:
    try:
        return int(content.get("answer", ""))
    except (TypeError, ValueError) as exc:
        raise ClientError("That request named no answer.") from exc


class CompareConsumer(AsyncJsonWebsocketConsumer):
    """The comparison page's socket (``/ws/compare/`` or ``/ws/compare/<run id>/``).

    It follows one run at a time: the run's group and both sides' conversation groups. Message
    frames are the chat's own (the chat page's chrome is left out); timings come back from the
    browser and get the figures, the verdict and, at the end, the chart.
    """

    owner: Owner
    groups_joined: list[str]
    seen: dict[int, int]

    async def connect(self) -> None:
        owner = Owner.from_scope(self.scope)
        if owner is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.owner, self.groups_joined, self.seen = owner, [], {}
        run_id = self.scope["url_route"]["kwargs"].get("run_id")
        run = None
        if run_id is not None:
            run = await database_sync_to_async(comparisons.get_run)(owner, int(run_id))
            if run is None:
                await self.close(code=CLOSE_NOT_FOUND)
                return
        await self.accept()
        if run is not None:
            await self._follow(run)

    async def _follow(self, run: ComparisonRun) -> None:
        """Listen to this run (and stop listening to the previous one), catching up live text."""
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        conversations = [run.stream_conversation_id, run.nostream_conversation_id]
        self.groups_joined = [comparisons.comparison_group(run.pk)] + [
            conversation_group(pk) for pk in conversations
        ]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        for conversation_id in conversations:
            for generation in get_service().snapshots(conversation_id):
                self.seen[generation.answer_id] = generation.seq
                await self.send(text_data=fragments.snapshot_frame(generation.live_view()).body)

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        try:
            if text_data is None:
                raise ClientError("Binary messages are not accepted.")
            try:
                content = await self.decode_json(text_data)
            except ValueError as exc:
                raise ClientError("That request was not valid JSON.") from exc
            if not isinstance(content, dict):
                raise ClientError("That request was not understood.")
            action = content.get("action")
            if action == "run":
                await self._run(content)
            elif action == "timings":
                await self._timings(content)
            else:
                raise ClientError("That request was not understood.")
        except ClientError as error:
            await self.send(text_data=fragments.alert_frame(error.message))

    async def _run(self, content: dict[str, Any]) -> None:
        prompt, model = content.get("prompt"), content.get("model")
        if not isinstance(prompt, str) or not isinstance(model, str):
            raise ClientError("Type a prompt first.")
        trials = _int(content.get("trials", 1), "trials")
        run = await database_sync_to_async(comparisons.create_run)(
            self.owner, prompt, model, trials
        )
        await self._follow(run)
        await self.send(text_data=await database_sync_to_async(render_run)(run, oob=True))
        comparisons.get_comparisons().launch(self.owner, run, self.channel_name)

    async def _timings(self, content: dict[str, Any]) -> None:
        run_id, trial = _int(content.get("run"), "run"), _int(content.get("trial"), "trial")
        mode = content.get("mode")
        if mode not in comparisons.MODES:
            raise ClientError("That request was not understood.")
        await database_sync_to_async(comparisons.save_browser_timings)(
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
        """Frames touch no database: skip channels' per-message clean-up hop (see ChatConsumer)."""
        if message["type"] == FRAME_EVENT:
            await self.chat_frame(message)
        elif message["type"] == comparisons.COMPARE_EVENT:
            await self.send(text_data=message["html"])
        else:
            await super().dispatch(message)

    async def chat_frame(self, event: dict[str, Any]) -> None:
        if event["seq"] <= self.seen.get(event["answer"], 0):
            return
        await self.send(text_data=event["html"])


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ClientError(f"That request had no valid {name}.") from exc


def _milliseconds(value: Any) -> float | None:
    """A browser-measured duration: empty for "never happened", else 0 to one hour."""
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ClientError("That timing was not a number.") from exc
    if not 0 <= number <= 3_600_000:
        raise ClientError("That timing was out of range.")
    return number
