"""Answering an accepted call: an HTTP fault, or a reply in the call's protocol and shape.

The non-streaming reply waits and fails the same way in both protocols, so its flow lives here
and only the body comes from ``simulator.compatible`` or ``simulator.dashscope``.
"""

from __future__ import annotations

import asyncio
import random
import time

from simulator import compatible, dashscope
from simulator.call import THINK_CLOSE, THINK_OPEN, Call, Plan
from simulator.faults import http_fault
from simulator.options import HTTP_FAULTS
from simulator.pacing import STALL_MAX_SECONDS, until_disconnect
from simulator.wire import Receive, Send, Wire, dumps, send_bytes

__all__ = ["respond", "run", "whole"]


async def run(call: Call, send: Send, receive: Receive) -> None:
    """Answer a validated call (fault or generation) and record a client disconnect."""
    if call.opts.fault in HTTP_FAULTS:
        await http_fault(send, call)
        return
    disconnected_at = await until_disconnect(respond(send, call), receive)
    if disconnected_at is not None:
        call.entry.update(
            outcome="disconnected", disconnected_at=disconnected_at, finished_at=time.time()
        )


async def respond(send: Send, call: Call) -> None:
    """The generated reply: streamed in the call's protocol, or whole."""
    if call.opts.fault == "slow_headers":
        await asyncio.sleep(call.opts.delay)
    if not call.stream:
        await whole(send, call)
    elif call.protocol == "dashscope":
        await dashscope.stream(send, call)
    else:
        await compatible.stream(send, call)


async def whole(send: Send, call: Call) -> None:
    """Non-streaming: wait as long as generation would take, then answer in one JSON body."""
    opts, entry = call.opts, call.entry
    shapes = dashscope if call.protocol == "dashscope" else compatible
    plan = Plan.of(call)
    headers = [(b"x-request-id", call.request_id.encode())]
    if opts.fault == "stall":
        await asyncio.sleep(STALL_MAX_SECONDS)
    else:
        await asyncio.sleep(opts.ttft + plan.total / opts.tps)
    if opts.fault in {"stall", "midstream_error"}:
        status, body = shapes.whole_error(call)
        await send_bytes(send, status, body, headers=headers)
        entry.update(status=status, outcome=f"fault:{opts.fault}", finished_at=time.time())
        return
    text = "".join(plan.answer[: plan.limit])
    reasoning = "".join(plan.reasoning)
    if opts.stamp:
        text = f"⟦{time.time():.6f}⟧{text}"
    content = f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{text}" if call.inline_think else text
    data = dumps(shapes.whole_body(call, plan, content, reasoning)).encode()
    wire = Wire(send, opts, random.Random(call.rng_seed + "|wire"))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    if opts.fault == "eof":
        # Chunked body cut in half: the client gets a clean EOF and unparseable JSON.
        await wire.write(data[: len(data) // 2])
        await wire.close()
        entry.update(status=200, outcome="fault:eof", finished_at=time.time())
        return
    await wire.write(data)
    await wire.close()
    now = time.time()
    entry.update(
        status=200,
        tokens_sent=plan.limit,
        reasoning_tokens_sent=len(plan.reasoning),
        text=text,
        reasoning=reasoning,
        first_token_at=now,
        first_answer_at=now,
        finished_at=now,
        outcome="complete",
    )
