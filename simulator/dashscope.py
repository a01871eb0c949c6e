"""DashScope native replies: the paced SSE event stream and the whole JSON body.

``simulator.native`` says what each event and error looks like; this module decides which events
a call gets and writes them: ``id:``/``event:``/``:HTTP_STATUS/200``/``data:`` events with
cumulative usage, the string ``"null"`` as finish reason until the last one, and no ``[DONE]``.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Mapping
from typing import Any

from simulator import native
from simulator.call import THINK_CLOSE, THINK_OPEN, Call, Plan
from simulator.pacing import CUT_FAULTS, paced, stall
from simulator.prompt import estimate_prompt_tokens
from simulator.wire import Send, Wire, dumps, shuffled, start_sse

__all__ = ["stream", "whole_body", "whole_error"]


def _events(call: Call, *, incremental: bool) -> native.NativeEvents:
    return native.NativeEvents(
        call.request_id,
        result_format=call.result_format,
        incremental=incremental,
        reasoning_key=call.reasoning_key,
        input_tokens=estimate_prompt_tokens(call.messages),
        multimodal=call.multimodal,
    )


async def stream(send: Send, call: Call) -> None:
    """Stream the plan as native SSE events; the connection closes after the last one."""
    opts, entry = call.opts, call.entry
    rng = random.Random(call.rng_seed + "|wire")
    wire = Wire(send, opts, rng, call.ping)
    plan = Plan.of(call)
    events = _events(call, incremental=call.incremental)
    event_id = 0
    output_tokens = reasoning_tokens = 0

    async def emit(kind: str, status: int, obj: Mapping[str, Any]) -> None:
        nonlocal event_id
        event_id += 1
        body = shuffled(obj, rng) if opts.shuffle else obj
        await wire.frame(native.frame_lines(event_id, kind, status, dumps(body)))

    await start_sse(send, call.request_id)
    entry["status"] = 200
    async with contextlib.aclosing(paced(call, plan, wire, rng)) as pieces:
        async for piece in pieces:
            output_tokens += piece.count
            finish = "null"
            if piece.last and not opts.final_empty:
                finish = plan.finish_reason
            if piece.reasoning and not call.inline_think:
                reasoning_tokens += piece.count
                obj = events.result(
                    reasoning=piece.text,
                    finish_reason=finish,
                    output_tokens=output_tokens,
                    reasoning_tokens=reasoning_tokens,
                )
            else:
                if piece.reasoning:
                    reasoning_tokens += piece.count
                text = piece.text
                if call.inline_think and piece.first_of_phase:
                    text = (THINK_OPEN if piece.reasoning else THINK_CLOSE) + text
                obj = events.result(
                    content=text,
                    finish_reason=finish,
                    output_tokens=output_tokens,
                    reasoning_tokens=reasoning_tokens,
                )
            await emit("result", 200, obj)

    if opts.fault == "midstream_error":
        status, error = native.error_object(opts.midstream_kind, call.request_id)
        await emit("error", status, error)
    elif opts.fault == "stall":
        await stall(wire)
    elif opts.fault != "eof" and opts.final_empty:
        await emit(
            "result",
            200,
            events.result(
                finish_reason=plan.finish_reason,
                output_tokens=output_tokens,
                reasoning_tokens=reasoning_tokens,
            ),
        )
    await wire.close()
    faulted = opts.fault in CUT_FAULTS
    entry.update(outcome=f"fault:{opts.fault}" if faulted else "complete", finished_at=time.time())


def whole_body(call: Call, plan: Plan, content: str, reasoning: str) -> dict[str, Any]:
    """The native JSON body of a call made without ``X-DashScope-SSE: enable``."""
    events = _events(call, incremental=True)
    return events.complete(content, reasoning, plan.finish_reason, plan.total, len(plan.reasoning))


def whole_error(call: Call) -> tuple[int, bytes]:
    """What a whole call gets instead of its answer under ``stall`` or ``midstream_error``."""
    kind = "timeout" if call.opts.fault == "stall" else call.opts.midstream_kind
    status, obj = native.error_object(kind, call.request_id)
    return status, dumps(obj).encode()
