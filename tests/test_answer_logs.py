"""Structured logs: one line when an answer starts and one when it ends, with our request id
(also sent upstream as X-Request-Id) beside the upstream's, as JSON with ``LOG_FORMAT=json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.app import start_app
from tests.support.processes import stop_process
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor, answer_row

pytestmark = pytest.mark.live


async def test_each_answer_is_logged_with_both_request_ids(
    tmp_path: Path, simulator: Simulator
) -> None:
    app, process = start_app(tmp_path, {"LLM_API_BASE": simulator.base_url, "LOG_FORMAT": "json"})
    visitor = Visitor(app)
    try:
        conversation = visitor.new_conversation()
        async with visitor.socket(conversation) as ws:
            await send(ws, "Log me [t-logs]\n#sim tokens=12 tps=200 ttft=0.05")
            answer_id, _, _ = await collect_answer(ws)
        saved = answer_row(visitor.export(conversation), answer_id)
    finally:
        visitor.close()
        stop_process(process)
    records = [json.loads(line) for line in app.log().splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    mine = [r for r in records if r.get("answer_id") == answer_id]
    started, finished = (
        next(r for r in mine if r["event"] == e) for e in ("answer.started", "answer.finished")
    )
    upstream = simulator.request_for("[t-logs]")
    assert started["request_id"] == finished["request_id"] == upstream["client_request_id"]
    assert finished["upstream_request_id"] == saved["request_id"] != finished["request_id"]
    assert started["conversation_id"] == conversation and started["model"] == "qwen-plus"
    assert finished["outcome"] == "complete" and finished["completion_tokens"] == 12
    assert finished["chars"] == len(upstream["text"]) and finished["ttft_ms"] >= 0
