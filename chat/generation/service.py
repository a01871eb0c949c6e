"""The generation service: one per event loop (one Daphne worker); the consumers' one door.

It starts answers (``send``, ``retry``, ``edit``, ``start_turns``), stops them (here or, through
the control plane, on another worker) and answers what a socket's follower needs
(``local_snapshot``, ``request_snapshot``, the saved views). An answer is a task of this
service, not of a socket: closing the tab does not stop it; Stop cancels it, which closes the
upstream request at once (nothing more is generated or billed).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext

from chat import llm, providers
from chat.exceptions import ClientError
from chat.live.hub import LiveHub
from chat.live.protocol import SnapshotEvent
from chat.ops.logformat import log_answer
from chat.owners import Owner
from chat.rendering import fragments

from . import continuation, records, registry, turns
from .control import ControlPlane
from .pacing import Pacer, Turnstile
from .pipeline import AnswerRun, Publisher
from .progress import save_progress_loop
from .state import Generation
from .turns import Turn

logger = logging.getLogger(__name__)

# New turns are saved on threads of their own, several at once: on channels' one database
# thread a burst of new messages queued behind each other (and behind every other query of the
# worker) while their users waited for the first word. Each thread keeps its own connection.
TURN_THREADS = 4
_turn_threads = ThreadPoolExecutor(max_workers=TURN_THREADS, thread_name_prefix="turns")


def _on_turn_thread(func: Callable[..., Turn]) -> Callable[..., Awaitable[Turn]]:
    return database_sync_to_async(func, thread_sensitive=False, executor=_turn_threads)


class GenerationService:
    """Starts, relays, saves and stops generations for one event loop (one Daphne process)."""

    def __init__(self, http: httpx.AsyncClient, layer: Any) -> None:
        self.http = http
        self.clients: dict[tuple[Any, ...], llm.ChatClient] = {}
        self.running: dict[int, Generation] = {}
        self.save_interval: float = settings.STREAM_SAVE_INTERVAL
        self.closing = False  # shutting down: answers in flight finish, no new ones start
        cross_process = layer is not None and not isinstance(layer, InMemoryChannelLayer)
        self.hub = LiveHub(layer, cross_process=cross_process)
        self.publisher = Publisher(self.hub, layer)
        self.pacer = Pacer(settings.STREAM_FRAME_INTERVAL)
        self.turnstile = Turnstile()  # answers' ends, one per pass of the loop
        self.control = ControlPlane(
            layer, self.hub, stop_here=self._stop_here, snapshot_here=self._snapshot_here
        )
        self._saver: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    @property
    def probe(self) -> Any:
        """The control plane's Redis probe (None on the in-process layer)."""
        return self.control.probe

    def client_for(self, upstream: providers.Upstream) -> llm.ChatClient:
        """One client per upstream and key, kept so what it learns (no stream_options) sticks."""
        api_key = upstream.api_key()
        key = (upstream.protocol, upstream.base_url, api_key, upstream.include_usage,
               upstream.incremental)  # fmt: skip
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = llm.ChatClient(
                self.http,
                upstream.base_url,
                api_key,
                protocol=upstream.protocol,
                include_usage=upstream.include_usage,
                incremental=upstream.incremental,
                retries=settings.LLM_RETRIES,
                max_retry_wait=settings.LLM_RETRY_MAX_WAIT,
                total_timeout=settings.LLM_TOTAL_TIMEOUT,
            )
        return client

    def listen(self) -> None:
        """Start hearing the other workers (Stop, snapshots, presence, their frames)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self.control.listen(), name="generation-control")

    # Starting and stopping answers ------------------------------------------------------------

    async def send(
        self,
        owner: Owner,
        conversation_id: int,
        text: str,
        origin: str | None = None,
        image_ids: Sequence[uuid.UUID] = (),
    ) -> Generation:
        """Save the user's message (with its uploaded images), then start answering it."""
        self._refuse_while_closing()
        turn = await _on_turn_thread(turns.create_turn)(
            owner, conversation_id, text, self.live_of(owner), image_ids=image_ids
        )
        return await self._start(turn, origin)

    async def retry(
        self, owner: Owner, conversation_id: int, answer_id: int, origin: str | None = None
    ) -> Generation:
        self._refuse_while_closing()
        turn = await _on_turn_thread(turns.create_retry)(
            owner, conversation_id, answer_id, self.live_of(owner)
        )
        return await self._start(turn, origin)

    async def continue_answer(
        self, owner: Owner, conversation_id: int, answer_id: int
    ) -> Generation:
        """Go on with the latest answer, cut at the length limit, appending to it."""
        self._refuse_while_closing()
        turn = await _on_turn_thread(continuation.create_continuation)(
            owner, conversation_id, answer_id, self.live_of(owner)
        )
        # No origin: nothing was typed, so the composer keeps whatever draft it holds.
        return await self._start(turn, None)

    async def edit(
        self, owner: Owner, conversation_id: int, message_id: int, text: str
    ) -> Generation:
        """Save the edited message (the turns after it leave the log), then answer it."""
        self._refuse_while_closing()
        turn = await _on_turn_thread(turns.create_edit)(
            owner, conversation_id, message_id, text, self.live_of(owner)
        )
        # No origin: the composer keeps what it holds (the edit form goes with the old log).
        return await self._start(turn, None)

    async def start_turns(self, turns: Sequence[Turn], origin: str | None) -> list[Generation]:
        """Start several saved turns as close to the same instant as possible (comparisons)."""
        generations = [await self._announce(turn, origin) for turn in turns]
        for generation in generations:
            self._launch(generation)
        return generations

    async def stop(self, conversation_id: int, answer_id: int) -> bool:
        """Cancel an answer in flight, on this worker or any other; the upstream connection
        closes as its task unwinds. True if it ran here."""
        if self._stop_here(conversation_id, answer_id):
            return True
        # Another worker may run it: every worker hears the request; the one running it stops.
        try:
            await self.control.request_stop(conversation_id, answer_id)
        except Exception as exc:  # Redis unreachable: say so, lose nothing
            logger.warning("could not pass Stop to the other workers: %s", exc)
            raise ClientError(
                gettext("Stop could not reach the server running that answer: try again.")
            ) from exc
        return False

    def live_ids(self, conversation_id: int) -> set[int]:
        """The answers this worker generates in the conversation."""
        return set(self.local_answers(conversation_id))

    def live_of(self, owner: Owner) -> set[int]:
        """The owner's answers this worker generates: all a new turn's checks need (an answer
        is only ever another's orphan or at-once count through its owner). Not every running
        id: with hundreds of answers streaming, the turn's query would carry them all."""
        return {answer for answer, g in self.running.items() if g.turn.owner == owner}

    def _refuse_while_closing(self) -> None:
        if self.closing:
            raise ClientError(gettext("The server is restarting: send that again in a moment."))

    def _stop_here(self, conversation_id: int, answer_id: int) -> bool:
        generation = self.running.get(answer_id)
        if generation is None or generation.turn.conversation_id != conversation_id:
            return False
        generation.stop_requested = True
        if generation.reader is not None:
            generation.reader.cancel()
        return True

    async def _start(self, turn: Turn, origin: str | None) -> Generation:
        """Start the upstream request first, then show the turn.

        The reader gets the loop once, enough to send its request, before the turn frame is
        drawn: the model starts thinking a few milliseconds sooner. No delta can precede the
        turn frame: a delta needs the upstream's answer, read only when this task yields
        again, and the turn frame takes its number (seq 1) before this task yields.
        """
        generation = self._register(turn, origin)
        self._launch(generation)
        await asyncio.sleep(0)
        await self._show_turn(generation)
        return generation

    async def _announce(self, turn: Turn, origin: str | None) -> Generation:
        """Register the answer and show the turn (comparisons launch their sides after)."""
        generation = self._register(turn, origin)
        await self._show_turn(generation)
        return generation

    def _register(self, turn: Turn, origin: str | None) -> Generation:
        generation = Generation(turn=turn, origin=origin)
        self.running[generation.answer_id] = generation
        registry.started(generation.answer_id, turn.conversation_id)
        return generation

    async def _show_turn(self, generation: Generation) -> None:
        """The turn frame: the question and the empty answer; it must precede any delta."""
        turn = generation.turn
        if turn.continued is not None:  # the answer, its text so far, streaming again
            with translation.override(generation.language):
                frame = fragments.continue_frame(generation.live_view())
            await self.publisher.publish(generation, frame, kind="turn")
            return
        with translation.override(generation.language):
            frame = fragments.turn_frame(
                turn.conversation_id,
                turn.user,
                turn.answer,
                stale_retry=turn.stale_retry,
                new_title=turn.new_title,
                replaces=turn.replaces,
                log=turn.log,
            )
        await self.publisher.publish(generation, frame, kind="turn")

    def _launch(self, generation: Generation) -> None:
        turn = generation.turn
        log_answer(
            "answer.started",
            answer_id=generation.answer_id,
            conversation_id=turn.conversation_id,
            user_id=turn.user_id,
            model=turn.model,
            provider=turn.upstream.name,
            request_id=generation.trace_id,
        )
        run = AnswerRun(
            generation,
            self.client_for(turn.upstream),
            self.publisher,
            self.pacer,
            self.turnstile,
            save_timeout=settings.STREAM_FINAL_SAVE_TIMEOUT,
            on_end=self._forget,
        )
        generation.reader = asyncio.create_task(
            run.read(), name=f"generation-{generation.answer_id}-reader"
        )
        generation.task = asyncio.create_task(run.run(), name=f"generation-{generation.answer_id}")
        self.pacer.start(lambda: bool(self.running))
        if self._saver is None or self._saver.done():
            self._saver = asyncio.create_task(
                save_progress_loop(self.running, self.save_interval), name="generation-saver"
            )

    def _forget(self, generation: Generation) -> None:
        self.running.pop(generation.answer_id, None)
        registry.ended(generation.answer_id)

    # What a socket's follower needs (``live.ports.Source``) -----------------------------------

    def local_snapshot(self, answer_id: int) -> SnapshotEvent | None:
        generation = self.running.get(answer_id)
        if generation is None or generation.saved:
            return None  # not here, or ended: its final frame says all
        return generation.snapshot()

    def local_answers(self, conversation_id: int) -> list[int]:
        return [
            g.answer_id
            for g in self.running.values()
            if g.turn.conversation_id == conversation_id and not g.saved
        ]

    def _snapshot_here(
        self, conversation_id: int, answer_id: int, language: str
    ) -> SnapshotEvent | None:
        generation = self.running.get(answer_id)
        if generation is None or generation.turn.conversation_id != conversation_id:
            return None
        with translation.override(language or generation.language):
            return self.local_snapshot(answer_id)

    async def request_snapshot(self, conversation_id: int, answer_id: int, reply_to: str) -> None:
        await self.control.request_snapshot(conversation_id, answer_id, reply_to)

    async def saved_answer(self, answer_id: int) -> fragments.MessageView | None:
        return await database_sync_to_async(records.saved_answer)(answer_id, set(self.running))

    async def saved_log(self, conversation_id: int, *, with_retry: bool) -> str:
        return await database_sync_to_async(records.saved_log)(
            conversation_id, with_retry=with_retry
        )

    async def streaming_answers(self, conversation_id: int, exclude: set[int]) -> list[int]:
        return await database_sync_to_async(records.streaming_answers)(conversation_id, exclude)

    async def ended_answers(
        self, conversation_ids: list[int], ids: set[int]
    ) -> list[fragments.MessageView]:
        return await database_sync_to_async(records.ended_answers)(conversation_ids, ids)


# One service per event loop: the httpx pool and the tasks belong to the loop that made them.
_services: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GenerationService] = (
    weakref.WeakKeyDictionary()
)


def peek_service() -> GenerationService | None:
    """This loop's service if one was started (reading it must not open an HTTP pool)."""
    return _services.get(asyncio.get_running_loop())


def get_service() -> GenerationService:
    loop = asyncio.get_running_loop()
    service = _services.get(loop)
    if service is None:
        from .shutdown import drain_before_shutdown

        http = llm.make_http_client(
            connect_timeout=settings.LLM_CONNECT_TIMEOUT,
            read_timeout=settings.LLM_READ_TIMEOUT,
            max_connections=settings.LLM_MAX_CONNECTIONS,
        )
        service = _services[loop] = GenerationService(http, get_channel_layer())
        service.listen()
        drain_before_shutdown(service)
    return service
