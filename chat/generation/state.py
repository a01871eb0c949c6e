"""One answer in flight: its text so far, timings and outcome (no I/O here)."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from chat import llm
from chat import timeline as timelines
from chat.accounts.usage import (
    CHARS_PER_TOKEN,
    cjk_characters,
    estimate_prompt_tokens,
    estimate_tokens,
)
from chat.live.follower import DONE
from chat.live.protocol import SnapshotEvent
from chat.models import Message
from chat.rendering import fragments
from chat.rendering.markdown import BlockSplitter, render_markdown
from chat.timeline import Recorder

from .failures import ServiceFailure
from .turns import Continued, Turn

LIVE_STATS_INTERVAL = 0.25  # seconds: a streaming answer's token count changes at most this often


def continuation_seq() -> int:
    """Where a continuation's frame numbers start: past every number its answer's earlier
    frames had (and past ``DONE``, which a socket that read the saved answer holds), so its
    first frame starts the answer afresh on every socket. The clock keeps a second Continue
    past the first's frames (fewer than 1,000 a millisecond)."""
    return DONE + int(time.time() * 1000) * 1000


@dataclass(eq=False)
class Generation:
    """One answer in flight: its text so far, what its published frames hold, its timings."""

    turn: Turn
    origin: str | None = None
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    pending_text: list[str] = field(default_factory=list)
    pending_reasoning: list[str] = field(default_factory=list)
    seq: int = 0
    lost_frames: int = 0  # frames the channel layer refused (logged once per answer)
    # Ours, per answer: in the log lines and sent upstream as X-Request-Id (beside theirs).
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # How many parts of text/reasoning the published frames hold (what a snapshot may show).
    shown_text: int = 0
    shown_reasoning: int = 0
    blocks: BlockSplitter = field(default_factory=BlockSplitter)
    saved_size: tuple[int, int] = (0, 0)  # parts of text/reasoning in the last progress save
    committed: int = 0  # characters of shown text already sent as rendered markdown blocks
    committed_html: list[str] = field(default_factory=list)  # those blocks, as they were drawn
    timeline: Recorder = field(default_factory=Recorder)  # its frames' times, for replays
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None  # thinking or answer, whichever came first
    first_reasoning_at: float | None = None
    first_text_at: float | None = None
    finished_at: float | None = None
    usage: llm.Usage | None = None
    finish_reason: str = ""
    request_id: str = ""  # the upstream's id for this answer, for support
    error: llm.UpstreamError | ServiceFailure | None = None  # the model server's, or ours
    retrying: llm.Retrying | None = None  # the last refusal asked again after, before a token
    stop_requested: bool = False
    done: bool = False
    saved: bool = False  # its final save went through (the final frame follows)
    reader: asyncio.Task[None] | None = None
    task: asyncio.Task[None] | None = None
    # Live figures (``live_figures``): when the count last went out, the parts of text and
    # thinking counted so far and their characters; ``seeded``: the parts a continuation
    # started with (the answer so far, not this request's).
    stats_at: float = 0.0
    counted: tuple[int, int] = (0, 0)
    counted_cjk: int = 0
    counted_other: int = 0
    seeded: tuple[int, int] = (0, 0)
    own_usage: llm.Usage | None = None  # this request's tokens (a continuation's own), saved

    def __post_init__(self) -> None:
        """A continuation starts from the answer so far: shown, saved and split into blocks."""
        continued = self.turn.continued
        if continued is None:
            return
        base = continued.answer
        if base.content:
            self.text.append(base.content)
            if block := self.blocks.feed(base.content):
                self.committed = len(block)
                self.commit_block(block)
        if base.reasoning:
            self.reasoning.append(base.reasoning)
        parts = (len(self.text), len(self.reasoning))
        self.shown_text, self.shown_reasoning = parts
        self.saved_size = self.counted = self.seeded = parts
        self.seq = continuation_seq()

    @property
    def answer_id(self) -> int:
        return self.turn.answer.id

    @property
    def language(self) -> str:
        """The language its frames are written in (that of the socket that asked)."""
        return self.turn.language or settings.LANGUAGE_CODE

    def elapsed_ms(self, until: float | None = None) -> float:
        return ((until or time.perf_counter()) - self.started) * 1000

    def thinking_elapsed_s(self) -> float | None:
        """Seconds of thinking so far while the model still thinks (for a live timer)."""
        if self.first_reasoning_at is None or self.first_text_at is not None:
            return None
        return time.perf_counter() - self.first_reasoning_at

    def thought_ms(self) -> float | None:
        """How long the model thought, once its answer has begun."""
        if self.first_reasoning_at is None or self.first_text_at is None:
            return None
        return (self.first_text_at - self.first_reasoning_at) * 1000

    def live_figures(self, now: float) -> tuple[int | None, float | None, bool]:
        """This request's tokens so far, their rate, and whether the count is ours.

        The upstream's cumulative count when it sends one while streaming (DashScope native
        does on every event), else our estimate from the characters that arrived since the
        last call: called a few times a second at most, it costs O(1) per character and
        nothing per token. None before the first token."""
        if self.first_token_at is None:
            return None, None, False
        usage = self.usage
        if usage is not None and usage.completion_tokens is not None:
            tokens, estimated = usage.completion_tokens, False
        else:
            tokens, estimated = self._streamed_estimate(), True
        span = now - self.first_token_at
        return tokens, (tokens / span if tokens and span > 0 else None), estimated

    def _streamed_estimate(self) -> int:
        """``estimate_tokens`` of the text and thinking streamed so far, counted incrementally."""
        text, reasoning = self.counted
        new = "".join(self.text[text:]) + "".join(self.reasoning[reasoning:])
        self.counted = (len(self.text), len(self.reasoning))
        cjk = cjk_characters(new) if new else 0
        self.counted_cjk += cjk
        self.counted_other += len(new) - cjk
        return self.counted_cjk + math.ceil(self.counted_other / CHARS_PER_TOKEN)

    def commit_block(self, block: str) -> str:
        """Draw a finished markdown block (for its delta frame) and keep it for snapshots."""
        html = render_markdown(block)
        self.committed_html.append(html)
        return html

    def live_view(self) -> fragments.MessageView:
        """The answer as it stands, for a socket that joins mid-stream."""
        base = self.turn.answer
        tokens, rate, estimated = self.live_figures(time.perf_counter())
        return fragments.MessageView(
            id=base.id,
            role=base.role,
            status=Message.Status.STREAMING,
            content="".join(self.text[: self.shown_text]),
            reasoning="".join(self.reasoning[: self.shown_reasoning]),
            model=base.model,
            streamed=base.streamed,
            elapsed_s=self.elapsed_ms() / 1000,
            thinking_s=self.thinking_elapsed_s(),
            thinking_ms=self.thought_ms(),
            seq=self.seq,
            is_latest=True,
            committed=self.committed,
            committed_html="".join(self.committed_html),
            buffered=base.buffered,
            provider_name=base.provider_name,
            conversation_id=self.turn.conversation_id,
            version_ids=base.version_ids,
            retry_note=self.retry_note(),
            live_tokens=tokens,
            live_rate=rate,
            live_estimated=estimated,
        )

    def snapshot(self) -> SnapshotEvent:
        """The answer so far as one frame holding frames ``1..seq``, in the active language.

        Synchronous on purpose: no frame can be published between reading the text and its seq.
        """
        frame = fragments.snapshot_frame(self.live_view())
        return SnapshotEvent(
            type="chat.snapshot",
            answer=self.answer_id,
            seq=self.seq,
            html=frame.body,
            chrome=frame.chrome,
        )

    def final_view(self, fields: dict[str, Any]) -> fragments.MessageView:
        """The finished answer as every page shows it, from the columns just saved."""
        answer = self.turn.answer
        return fragments.MessageView(
            id=self.answer_id,
            role=Message.Role.ASSISTANT,
            model=self.turn.model,
            streamed=self.turn.stream,
            buffered=answer.buffered,
            provider_name=answer.provider_name,
            is_latest=True,
            conversation_id=self.turn.conversation_id,
            version_ids=answer.version_ids,
            **{k: v for k, v in fields.items() if k in _VIEW_FIELDS},
        )

    def retry_note(self) -> str:
        """Why the first word is late, while it still is (in the active language)."""
        if self.retrying is None or self.first_token_at is not None:
            return ""
        r = self.retrying
        return fragments.retry_note(r.attempt, r.retries, r.wait, r.reason)

    def outcome(self) -> dict[str, Any]:
        """Columns of the finished answer row."""
        status = Message.Status.COMPLETE
        fields: dict[str, Any] = {}
        if self.error is not None:
            status = Message.Status.ERROR
            wording = self.error.wording
            fields.update(
                error_kind=self.error.kind,
                error_message=self.error.message,
                error_wording=wording.as_data() if wording is not None else None,
                retry_after=self.error.retry_after,
                request_id=self.error.request_id or self.request_id,
            )
        elif self.stop_requested:
            status = Message.Status.STOPPED
        usage = self.usage
        if usage is None:  # none reported (llama.cpp, say, or cut off first): our estimate
            usage = self.estimated_usage()
        self.own_usage = usage
        end = self.finished_at or time.perf_counter()
        timeline = self.timeline
        if not self.turn.stream and (self.text or self.reasoning):
            timeline = Recorder()  # shown whole, at the end: one frame holding all of it
            seed_text, seed_reasoning = self.seeded  # a continuation's: saved with its timeline
            timeline.add(round(self.elapsed_ms(end)), sum(map(len, self.text[seed_text:])),
                         sum(map(len, self.reasoning[seed_reasoning:])))  # fmt: skip
        thinking_ms = None
        if self.first_reasoning_at is not None:
            thinking_ms = ((self.first_text_at or end) - self.first_reasoning_at) * 1000
        fields.update(
            status=status,
            request_id=fields.get("request_id") or self.request_id,
            content="".join(self.text),
            reasoning="".join(self.reasoning),
            finish_reason=self.finish_reason,
            ttft_ms=self.elapsed_ms(self.first_token_at) if self.first_token_at else None,
            thinking_ms=thinking_ms,
            answer_ms=self.elapsed_ms(self.first_text_at) if self.first_text_at else None,
            total_ms=self.elapsed_ms(end),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            tokens_estimated=usage is not None and self.usage is None,
            timeline=bytes(timeline),
            completed_at=timezone.now(),
        )
        if self.turn.continued is not None:
            _add_continued(fields, self.turn.continued)
        return fields

    def counted_tokens(self) -> tuple[int | None, int | None, bool] | None:
        """What a continuation adds to its user's day (its own request: the row holds the
        sums); None for any other answer (its row's figures are its own)."""
        if self.turn.continued is None:
            return None
        usage = self.own_usage
        if usage is None:
            return None, None, False
        return usage.prompt_tokens, usage.completion_tokens, self.usage is None

    def estimated_usage(self) -> llm.Usage | None:
        """Our estimate of what an answer whose upstream reported no usage cost: stopped or
        cut off before it came (OpenAI-compatible servers send it in the last chunk only), or
        from a server that never sends it while streaming (llama.cpp, many self-hosted ones).
        The prompt sent and the text and thinking streamed (a continuation's own). Without it
        a Stop just before the end would keep the daily token limit from ever filling. None
        before any text arrived (the request may never have reached the model)."""
        seed_text, seed_reasoning = self.seeded
        text, reasoning = self.text[seed_text:], self.reasoning[seed_reasoning:]
        if not (text or reasoning):
            return None
        prompt = estimate_prompt_tokens(self.turn.context)
        completion = estimate_tokens("".join(reasoning)) + estimate_tokens("".join(text))
        return llm.Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )


def _add_continued(fields: dict[str, Any], continued: Continued) -> None:
    """A continuation's row: the answer's figures before it plus this request's (the times
    to its first tokens stay the first request's; tokens and total time add up), and one
    timeline, this request's frames after the earlier ones."""
    base = continued.answer
    for name in ("ttft_ms", "thinking_ms", "answer_ms"):
        if getattr(base, name) is not None:
            fields[name] = getattr(base, name)
    offset = base.total_ms or 0.0
    fields["total_ms"] = offset + (fields["total_ms"] or 0.0)
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        earlier, own = getattr(base, name), fields[name]
        fields[name] = own if earlier is None else earlier + (own or 0)
    fields["tokens_estimated"] = bool(fields["tokens_estimated"] or base.tokens_estimated)
    steps = timelines.decode(continued.timeline)
    start = steps[-1].at_ms if steps else round(offset)
    later = [
        timelines.Step(start + step.at_ms, step.text, step.reasoning)
        for step in timelines.decode(fields["timeline"])
    ]
    fields["timeline"] = timelines.encode([*steps, *later])


_VIEW_FIELDS = set(fragments.MessageView.__dataclass_fields__) - {"id", "role", "model", "streamed"}
