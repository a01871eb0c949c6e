"""Talking to the simulator directly, as a model server's client does (the simulator's own
tests): OpenAI-compatible request bodies, a streamed reply's SSE data, and the simulator's log
entry for one request."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from tests.support.simulator import Simulator

FAST = {"ttft": 0, "tps": 5000}  # per-request sim options: no waiting anywhere


def chat_body(
    prompt: str, *, stream: bool = True, model: str = "qwen-plus", **sim: Any
) -> dict[str, Any]:
    """A compatible-mode request body: a system prompt, ``prompt``, and ``sim`` options."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt},
        ],
        "stream": stream,
        "sim": {**FAST, **sim},
    }


async def sse_data(
    client: httpx.AsyncClient, sim: Simulator, body: dict[str, Any]
) -> tuple[httpx.Response, list[str]]:
    """All SSE ``data`` payloads of one streamed request, parsed by httpx-sse."""
    async with aconnect_sse(client, "POST", sim.chat_url, json=body) as source:
        data = [event.data async for event in source.aiter_sse()]
        return source.response, data


def content_of(data: list[str]) -> str:
    """The answer's text, from compatible-mode SSE payloads."""
    text = ""
    for payload in data:
        if payload == "[DONE]":
            continue
        for choice in json.loads(payload).get("choices", []):
            text += choice["delta"].get("content") or ""
    return text


async def log_entry(client: httpx.AsyncClient, sim: Simulator, sim_id: str) -> dict[str, Any]:
    """The simulator's log entry for one request (by the id its reply carried)."""
    response = await client.get(f"{sim.log_url}/{sim_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_for_outcome(
    client: httpx.AsyncClient, sim: Simulator, sim_id: str, outcome: str, within: float = 2.0
) -> dict[str, Any]:
    """Polls the request's log entry until its outcome is ``outcome``; that entry."""
    deadline = time.monotonic() + within
    while True:
        entry = await log_entry(client, sim, sim_id)
        if entry["outcome"] == outcome:
            return entry
        assert time.monotonic() < deadline, entry
        await asyncio.sleep(0.01)
