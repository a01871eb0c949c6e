"""The per-answer pipeline: read the upstream, publish frames as tokens come, save at the end.

Two tasks per answer, both owned by the service (never by a socket): the reader consumes
``llm.ChatClient.stream_reply`` events and publishes each delta frame itself, at once (no
second task to wake per token); under load the pacer's window makes it hold tokens a moment
and a short timer publishes them together. The runner waits for the reader however it ends
(finished, failed, Stop cancelled it, the worker is stopping), publishes what is left, saves
the answer (retrying while the database is away), and only then sends the final frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from django.utils import translation

from chat import llm
from chat.live.hub import LiveHub
from chat.live.protocol import FrameEvent, FrameKind, conversation_group
from chat.models import answer_outcome
from chat.ops.logformat import log_answer
from chat.rendering import articles, fragments

from .failures import InternalFailure, ServerStopped
from .pacing import Pacer, Turnstile
from .records import RETRYABLE, save_final_retrying
from .state import LIVE_STATS_INTERVAL, Generation

logger = logging.getLogger(__name__)


class Publisher:
    """Numbers an answer's frames and delivers them: to this worker's sockets directly, and
    through the channel layer only when another worker follows the conversation (turn and
    final frames always, so a worker this one did not know of can say so; see ``hub``)."""

    def __init__(self, hub: LiveHub, layer: Any) -> None:
        self.hub = hub
        self.layer = layer

    async def publish(
        self, generation: Generation, frame: fragments.Frame | str, *, kind: FrameKind
    ) -> None:
        if isinstance(frame, str):
            frame = fragments.Frame(frame)
        generation.seq += 1
        conversation_id = generation.turn.conversation_id
        followed = self.hub.cross_process and self.hub.followed_elsewhere(conversation_id)
        event = FrameEvent(
            type="chat.frame",
            kind=kind,
            conversation=conversation_id,
            answer=generation.answer_id,
            seq=generation.seq,
            origin=generation.origin,
            html=frame.body,
            chrome=frame.chrome,
            worker=self.hub.worker,
            followed=followed,
        )
        await self.hub.deliver(event)
        if not self.hub.cross_process or (kind == "delta" and not followed):
            return
        try:
            await self.layer.group_send(conversation_group(conversation_id), event)
        except Exception as exc:  # any layer failure: the answer goes on
            # The channel layer is only a courier (Redis restarting, say): the answer is still
            # generated and saved, and other workers' sockets see the gap and refill.
            generation.lost_frames += 1
            if generation.lost_frames == 1:
                logger.warning(
                    "answer %d: the channel layer refused a frame (%s: %s); its sockets on "
                    "other workers will refill from a snapshot or the database",
                    generation.answer_id,
                    type(exc).__name__,
                    exc,
                )


class AnswerRun:
    """Runs one generation: ``read`` is its reader task, ``run`` the task that ends it."""

    def __init__(
        self,
        generation: Generation,
        client: llm.ChatClient,
        publisher: Publisher,
        pacer: Pacer,
        turnstile: Turnstile,
        *,
        save_timeout: float,
        on_end: Callable[[Generation], None],
    ) -> None:
        self.generation = generation
        self.client = client
        self.publisher = publisher
        self.pacer = pacer
        self.turnstile = turnstile
        self.save_timeout = save_timeout
        self.on_end = on_end  # the service forgets the generation (it is saved, or given up)
        self.sent_first = self.sent_reasoning = self.sent_text = False
        self.told: llm.Retrying | None = None
        self.last_frame = 0.0
        self.later: asyncio.Task[None] | None = None  # a frame held for the pacer's window

    async def read(self) -> None:
        """Consume the upstream's events; publish deltas as they come (see ``_offer``)."""
        generation = self.generation
        turn = generation.turn
        with translation.override(generation.language):
            async for event in self.client.stream_reply(
                turn.model,
                turn.context,
                stream=turn.stream or turn.answer.buffered,
                options=turn.options,
                request_id=generation.trace_id,
                read_timeout=turn.read_timeout,
            ):
                if isinstance(event, llm.TextDelta | llm.ReasoningDelta):
                    now = time.perf_counter()
                    if generation.first_token_at is None:
                        generation.first_token_at = now
                    if isinstance(event, llm.TextDelta):
                        if generation.first_text_at is None:
                            generation.first_text_at = now
                        generation.text.append(event.text)
                        generation.pending_text.append(event.text)
                    else:
                        if generation.first_reasoning_at is None:
                            generation.first_reasoning_at = now
                        generation.reasoning.append(event.text)
                        generation.pending_reasoning.append(event.text)
                    await self._offer()
                elif isinstance(event, llm.Usage):
                    generation.usage = event
                elif isinstance(event, llm.Finished):
                    generation.finish_reason = event.reason
                    generation.request_id = event.request_id or ""
                elif isinstance(event, llm.Failed):
                    generation.error = event.error
                elif isinstance(event, llm.Retrying):
                    generation.retrying = event
                    if self.later is None:
                        await self._flush(finished=False)

    async def _offer(self) -> None:
        """New tokens: publish them now, unless the pacer asks to wait (the loop is behind)
        and a frame went out less than a window ago; then a timer publishes them together.
        The first token never waits."""
        if not self.generation.turn.stream or self.later is not None:
            return
        window = self.pacer.window
        if self.sent_first and window > 0:
            loop = asyncio.get_running_loop()
            wait = self.last_frame + window - loop.time()
            if wait > 0:
                self.later = loop.create_task(self._flush_after(wait))
                return
        await self._flush(finished=False)

    async def _flush_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self.later = None
        await self._flush(finished=False)

    async def _flush(self, *, finished: bool) -> None:
        """Publish what arrived since the last frame (and a retry note that is new)."""
        generation = self.generation
        self.last_frame = asyncio.get_running_loop().time()
        if generation.retrying is not self.told and not finished:
            self.told = generation.retrying
            if note := generation.retry_note():  # with or without streaming: a late answer
                frame = fragments.retry_frame(generation.answer_id, note)
                await self.publisher.publish(generation, frame, kind="delta")
        if not (generation.pending_text or generation.pending_reasoning):
            return
        text = "".join(generation.pending_text)
        reasoning = "".join(generation.pending_reasoning)
        generation.pending_text.clear()
        generation.pending_reasoning.clear()
        if not generation.turn.stream:
            return  # shown whole, at the end
        # No await between here and the seq increment in publish: a snapshot taken meanwhile
        # holds exactly the frames up to that seq.
        generation.shown_text = len(generation.text)
        generation.shown_reasoning = len(generation.reasoning)
        block = generation.blocks.feed(text) if text else ""
        generation.committed += len(block)
        block_html = generation.commit_block(block) if block else None
        thinking_began = bool(reasoning) and not self.sent_reasoning
        thought_ms = generation.thought_ms() if text and not self.sent_text else None
        frame = fragments.delta_frame(
            generation.answer_id,
            generation.seq + 1,
            text,
            reasoning,
            not self.sent_first and generation.turn.continued is None,  # no "waiting…" to remove
            block_html=block_html,
            tail=generation.blocks.tail if block else "",  # read (joined) only when it is sent
            thinking_began=thinking_began,
            thought_ms=thought_ms,
        )
        now = time.perf_counter()
        if not generation.stats_at:
            # The first count waits an interval: an upstream's usage follows its event's text.
            generation.stats_at = now
        elif now - generation.stats_at >= LIVE_STATS_INTERVAL:  # on this frame, not its own
            generation.stats_at = now
            tokens, rate, estimated = generation.live_figures(now)
            if tokens is not None:
                frame += fragments.live_stats(
                    generation.answer_id, tokens, rate, estimated=estimated
                )
        generation.timeline.add(round(generation.elapsed_ms()), len(text), len(reasoning))
        self.sent_reasoning = self.sent_reasoning or bool(reasoning)
        self.sent_text = self.sent_text or bool(text)
        self.sent_first = True
        await self.publisher.publish(generation, frame, kind="delta")

    async def run(self) -> None:
        """Wait for the reader however it ends, then publish the rest, save, end."""
        generation = self.generation
        reader = generation.reader
        assert reader is not None
        try:
            await asyncio.wait([reader])
        finally:
            if not reader.done():  # this task itself was cancelled: the process is stopping
                reader.cancel()
                await asyncio.wait([reader])
            if self.later is not None:
                self.later.cancel()
                self.later = None
            generation.finished_at = time.perf_counter()
            if reader.cancelled():
                if not generation.stop_requested:
                    generation.error = ServerStopped()
            elif (exc := reader.exception()) is not None:
                # A bug must not leave the answer "streaming" forever.
                logger.error("generation %s failed", generation.answer_id, exc_info=exc)
                generation.error = InternalFailure.of(exc)
            generation.done = True
            try:
                await asyncio.shield(self._finish())
            finally:
                self.on_end(generation)

    async def _finish(self) -> None:
        """Publish what is left, save the answer, and only then send the final frame."""
        generation = self.generation
        with translation.override(generation.language):
            await self._flush(finished=True)
            fields = generation.outcome()
            try:
                await save_final_retrying(
                    generation.answer_id,
                    fields,
                    generation.turn.user_id,
                    give_up_after=self.save_timeout,
                    counted=generation.counted_tokens(),
                )
            except RETRYABLE:  # given up, and logged: the sockets' silence check settles it
                return
            except Exception:  # a bug: the same, with its traceback
                logger.exception("answer %d could not be saved", generation.answer_id)
                return
            generation.saved = True
            _log_finished(generation, fields)
            view = generation.final_view(fields)
            # A large article is drawn in a thread, without holding up the others' turn.
            final = await articles.final_frame_off_loop(view) if articles.is_large(view) else None
            async with self.turnstile:  # one answer's end per pass of the loop (``pacing``)
                if final is None:
                    final = articles.final_frame(view)
                await self.publisher.publish(generation, final, kind="final")


def _log_finished(generation: Generation, fields: dict[str, Any]) -> None:
    log_answer(
        "answer.finished",
        answer_id=generation.answer_id,
        request_id=generation.trace_id,
        upstream_request_id=fields.get("request_id") or None,
        outcome=answer_outcome(
            fields["status"], fields.get("error_kind", ""), bool(fields["content"])
        ),
        error_kind=fields.get("error_kind") or None,
        ttft_ms=round(fields["ttft_ms"]) if fields.get("ttft_ms") is not None else None,
        total_ms=round(fields["total_ms"]) if fields.get("total_ms") is not None else None,
        prompt_tokens=fields.get("prompt_tokens"),
        completion_tokens=fields.get("completion_tokens"),
        chars=len(fields["content"]),
    )
