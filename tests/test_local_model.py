"""The real-model tier: SmolLM2-135M-Instruct under llama-cpp-python's server, through chat.llm.

Each fixture starts ``llama_cpp.server`` from ``.venv-local-model`` (``make local-model`` makes
it) on a free loopback port and stops it afterwards; the tests talk to it as the app does.
Where that venv or the weights are missing they skip and say so: the main suite runs on the
simulator. ``test_recorded_stream_*`` need no model: they replay
``tests/data/llm/llamacpp_stream.sse``, a reply recorded from this server (re-record it with
``LLAMACPP_RECORD=1 pytest tests/test_local_model.py -k raw_stream``).

What this server does that the client must survive, seen with llama-cpp-python 0.3.36:
no usage in streams (``stream_options`` is accepted and ignored; non-streaming replies do
carry usage), a role-only first chunk, an empty ``delta: {}`` on the finish chunk, LF
framing with ``data: [DONE]``, ``: ping - <timestamp>`` comments every 15 s (seen by a
request that waits behind another), and ``401 {"detail": "Invalid API key"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest

from chat.llm import (
    ChatClient,
    Event,
    Failed,
    Finished,
    TextDelta,
    UpstreamAuthError,
    UpstreamInterrupted,
    Usage,
    make_http_client,
)
from localmodel.server import (
    ALIAS,
    VENV,
    find_gguf,
    server_command,
    server_env,
    venv_python,
    wait_ready,
)
from tests.support.app import App, start_app
from tests.support.events import text_of
from tests.support.frames import streamed_text
from tests.support.processes import ROOT, free_port, stop_process
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor, answer_row

FIXTURE = Path(__file__).parent / "data" / "llm" / "llamacpp_stream.sse"
SERVER_KEY = "sk-local-Secret0123456789"
WRONG_KEY = "sk-wrong-Guess9876543210"
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."},
]
# SmolLM2's end-of-turn (<|im_end|>) and end-of-text tokens, for replies that must run long.
NO_EOS = {"0": -100, "2": -100}


def _missing() -> str | None:
    """Why the local model can't run here, or None."""
    python = venv_python()
    if not python.exists():
        return f"local model not installed ({VENV.name} missing): run `make local-model`"
    if find_gguf(python) is None:
        return f"local model not installed (no GGUF in {VENV.name}): run `make local-model`"
    return None


_MISSING = _missing()
needs_model = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


class LlamaServer:
    """One ``llama_cpp.server`` process on a loopback port, logging to ``log``."""

    def __init__(self, log: Path, *, api_key: str | None = None, interrupt: bool = False):
        python = venv_python()
        gguf = find_gguf(python)
        assert gguf is not None
        self.port = free_port()
        self.log = log
        extra = ["--interrupt_requests", "true"] if interrupt else []
        command = server_command(python, gguf, self.port, api_key=api_key, extra=extra)
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=server_env(),  # `make test` exports PORT, which llama_cpp.server obeys
            )
        try:
            wait_ready(self.base_url, timeout=60, process=self.process, api_key=api_key)
        except RuntimeError as exc:
            self.stop()
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}; its log ends:\n{tail}") from None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The server as ``make local-model`` runs it: no key, requests queue."""
    server = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llama_with_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log", api_key=SERVER_KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llama_interrupting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama_cpp.server's default: a new request cuts off the one streaming."""
    server = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log", interrupt=True)
    yield server
    server.stop()


async def reply(
    base_url: str,
    messages: Sequence[Mapping[str, str]] = QUESTION,
    *,
    api_key: str | None = None,
    options: Mapping[str, Any] | None = None,
    stream: bool = True,
) -> list[Event]:
    async with make_http_client() as http:
        client = ChatClient(http, base_url, api_key, include_usage=True)
        gen = client.stream_reply(ALIAS, messages, stream=stream, options=options)
        async with aclosing(gen) as events:
            return [event async for event in events]


def terminal(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, Finished | Failed)]


def looks_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 3 and sum(c.isascii() for c in letters) / len(letters) > 0.9


async def raw_stream(
    base_url: str, body: Mapping[str, Any], *, until: asyncio.Event | None = None
) -> bytes:
    """The exact bytes of one streamed reply, read with plain httpx (no SSE parsing)."""
    buf = bytearray()
    async with (
        httpx.AsyncClient(timeout=120) as http,
        http.stream("POST", f"{base_url}/chat/completions", json=dict(body)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_raw():
            buf += chunk
            if until is not None and until.is_set():
                break
    return bytes(buf)


def frames(raw: bytes) -> list[str]:
    """SSE frames (blank-line separated), as text."""
    return [f for f in raw.decode("utf-8").split("\n\n") if f]


def data_chunks(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for frame in frames(raw):
        for line in frame.split("\n"):
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


# ------------------------------------------------------------------------------------------
# Through our client, as a user would see it


@needs_model
async def test_english_answer_ends_with_finished(llama: LlamaServer) -> None:
    events = await reply(llama.base_url, options={"temperature": 0, "max_tokens": 64})

    answer = text_of(events)
    print(f"answer: {answer!r}")
    assert looks_english(answer), answer
    [end] = terminal(events)
    assert isinstance(end, Finished) and end.reason in ("stop", "length"), events[-3:]
    assert all(isinstance(e, Usage) for e in events[events.index(end) + 1 :])
    assert end.request_id  # llama.cpp's x-request-id header


@needs_model
async def test_max_tokens_ends_with_length(llama: LlamaServer) -> None:
    events = await reply(
        llama.base_url,
        [{"role": "user", "content": "Tell me a long story about a dragon."}],
        options={"max_tokens": 5, "logit_bias": NO_EOS},
    )

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert 1 <= len(deltas) <= 5  # one token per chunk
    assert terminal(events) == [Finished("length", request_id=terminal(events)[0].request_id)]


@needs_model
async def test_streams_carry_no_usage_but_whole_replies_do(llama: LlamaServer) -> None:
    """include_usage is sent and ignored: a streamed reply has no Usage, so the app must
    estimate or say "not reported"; the non-streaming reply counts tokens."""
    streamed = await reply(llama.base_url, options={"max_tokens": 16})
    whole = await reply(llama.base_url, options={"max_tokens": 16}, stream=False)

    assert not [e for e in streamed if isinstance(e, Usage)]
    assert isinstance(streamed[-1], Finished)
    [usage] = [e for e in whole if isinstance(e, Usage)]
    assert usage.prompt_tokens and usage.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert isinstance(whole[-1], Finished)


@needs_model
async def test_wrong_key_is_an_auth_error_that_never_shows_a_key(
    llama_with_key: LlamaServer,
) -> None:
    base = llama_with_key.base_url
    async with httpx.AsyncClient(timeout=30) as http:
        raw = await http.post(
            f"{base}/chat/completions",
            json={"model": ALIAS, "messages": QUESTION, "stream": True},
            headers={"Authorization": f"Bearer {WRONG_KEY}"},
        )
    assert raw.status_code == 401
    assert raw.json() == {"detail": "Invalid API key"}

    for key in (WRONG_KEY, None):
        events = await reply(base, api_key=key)
        [failed] = events
        assert isinstance(failed, Failed) and isinstance(failed.error, UpstreamAuthError)
        assert failed.error.status == 401
        for shown in (failed.error.message, str(failed.error), repr(failed.error)):
            assert WRONG_KEY not in shown and SERVER_KEY not in shown

    ok = await reply(base, api_key=SERVER_KEY, options={"max_tokens": 8})
    assert isinstance(terminal(ok)[0], Finished)


@needs_model
async def test_two_replies_at_once_both_finish(llama: LlamaServer) -> None:
    """As ``make local-model`` runs it (--interrupt_requests false) requests queue: a
    comparison of two models on this one server gets two whole answers."""
    first, second = await asyncio.gather(
        reply(llama.base_url, options={"max_tokens": 40, "logit_bias": NO_EOS}),
        reply(llama.base_url, options={"max_tokens": 40, "logit_bias": NO_EOS}),
    )
    for events in (first, second):
        assert terminal(events) == [events[-1]]
        assert events[-1] == Finished("length", request_id=events[-1].request_id)


@needs_model
async def test_default_server_cuts_off_the_first_of_two_replies(
    llama_interrupting: LlamaServer,
) -> None:
    """llama_cpp.server's default: the reply streaming when another request arrives ends
    with a bare ``data: [DONE]``, no finish_reason. That is a cut-off answer, so the client
    must say so: Failed(UpstreamInterrupted), not a silent end."""
    base = llama_interrupting.base_url
    long = {"max_tokens": 400, "logit_bias": NO_EOS}
    first_task = asyncio.ensure_future(reply(base, options=long))
    await asyncio.sleep(1.0)  # let it stream a while
    second = await reply(base, options={"max_tokens": 8})
    first = await first_task

    assert isinstance(terminal(second)[0], Finished)
    assert 0 < len([e for e in first if isinstance(e, TextDelta)]) < 400
    assert terminal(first) == [first[-1]]
    end = first[-1]
    assert isinstance(end, Failed) and isinstance(end.error, UpstreamInterrupted), end
    print(f"cut off after {len(first) - 1} tokens: {end.error.message}")


# ------------------------------------------------------------------------------------------
# The whole app, as `make local-model` sets it up


@pytest.fixture(scope="module")
def app_on_llama(llama: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    tmp = tmp_path_factory.mktemp("app")
    env = {**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}"}
    for command in (
        ["migrate", "--noinput"],
        ["set_provider", "Local SmolLM2", "--protocol", "openai", "--base-url", llama.base_url,
         "--models", ALIAS],
    ):  # fmt: skip
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
    instance, process = start_app(tmp, {})
    try:
        yield instance
    finally:
        stop_process(process)


@needs_model
@pytest.mark.live
async def test_chat_through_the_app(app_on_llama: App) -> None:
    """A visitor picks "Local SmolLM2", asks, and sees a whole English answer, saved as
    streamed, with estimated token figures since llama.cpp streams no usage."""
    visitor = Visitor(app_on_llama)
    try:
        page = visitor.http.get(f"/c/{visitor.new_conversation()}/").text
        groups = dict(re.findall(r'<optgroup label="([^"]+)">(.*?)</optgroup>', page, re.S))
        match = re.search(r'value="(p\d+:' + re.escape(ALIAS) + ')"', groups["Local SmolLM2"])
        assert match, groups["Local SmolLM2"]
        conversation = visitor.new_conversation(model=match.group(1))
        async with visitor.socket(conversation) as ws:
            await send(ws, "What is the capital of France? Answer in one sentence.")
            answer_id, frames, final = await collect_answer(ws, timeout=60)
        row = answer_row(visitor.export(conversation), answer_id)
        page = visitor.http.get(f"/c/{conversation}/").text
    finally:
        visitor.close()

    print(f"answer: {row['content']!r}")
    assert final["data-status"] == "complete"
    assert looks_english(row["content"]), row["content"]
    assert streamed_text(frames, answer_id) == row["content"]
    assert row["provider_name"] == "Local SmolLM2"
    assert row["tokens_estimated"] is True and row["completion_tokens"]
    assert "(estimated)" in page and "Token usage not reported" not in page


# ------------------------------------------------------------------------------------------
# The bytes on the wire


@needs_model
async def test_raw_stream_quirks(llama: LlamaServer) -> None:
    """One reply read with plain httpx while it waits behind a long one, so that it also
    gets sse-starlette's 15 s ``: ping`` comment; saved as the fixture when
    LLAMACPP_RECORD=1."""
    got_ping = asyncio.Event()
    long_body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "stream": True,
        "max_tokens": 1900,
        "logit_bias": NO_EOS,
    }
    blocker = asyncio.ensure_future(raw_stream(llama.base_url, long_body, until=got_ping))
    await asyncio.sleep(0.5)
    body = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "max_tokens": 8,
    }
    started = time.monotonic()

    async def watch() -> bytes:
        buf = bytearray()
        async with (
            httpx.AsyncClient(timeout=120) as http,
            http.stream("POST", f"{llama.base_url}/chat/completions", json=body) as response,
        ):
            async for chunk in response.aiter_raw():
                buf += chunk
                if b": ping" in buf:
                    got_ping.set()  # the long reply may stop now
        return bytes(buf)

    raw = await watch()
    await blocker
    assert time.monotonic() - started > 14

    if os.environ.get("LLAMACPP_RECORD"):
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_bytes(raw)
    check_quirks(raw)


def check_quirks(raw: bytes) -> None:
    assert b"\r" not in raw  # LF framing
    assert re.match(rb": ping - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+00:00\n\n", raw), raw[:80]
    assert raw.endswith(b"data: [DONE]\n\n")
    chunks = data_chunks(raw)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["delta"] == {}  # empty final delta
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all("usage" not in c for c in chunks)  # include_usage asked, none sent
    assert all(len(c["choices"]) == 1 for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


# ------------------------------------------------------------------------------------------
# The recorded stream: no model needed


def test_recorded_stream_has_the_servers_quirks() -> None:
    check_quirks(FIXTURE.read_bytes())


class Replay(httpx.AsyncByteStream):
    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


async def replay_events(chunks: Sequence[bytes]) -> list[Event]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream; charset=utf-8"}, stream=Replay(chunks)
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = ChatClient(http, "http://llama.test/v1", include_usage=True)
        async with aclosing(client.stream_reply(ALIAS, QUESTION)) as events:
            return [event async for event in events]


@pytest.mark.parametrize("size", [None, 1, 7])
async def test_recorded_stream_replays(size: int | None) -> None:
    raw = FIXTURE.read_bytes()
    chunks = [raw] if size is None else [raw[i : i + size] for i in range(0, len(raw), size)]
    events = await replay_events(chunks)

    expected = "".join(c["choices"][0]["delta"].get("content") or "" for c in data_chunks(raw))
    assert text_of(events) == expected and expected
    end = events[-1]
    assert isinstance(end, Finished)
    assert end.reason == data_chunks(raw)[-1]["choices"][0]["finish_reason"]
    assert not [e for e in events if isinstance(e, Usage | Failed)]


def test_server_env_keeps_the_apps_settings_out() -> None:
    """llama_cpp.server takes HOST and PORT over --host/--port, and any setting (API_KEY,
    MODEL, N_CTX...) from the environment: the server gets the basics only."""
    env = server_env(
        {"PATH": "/bin", "HOME": "/h", "HOST": "0.0.0.0", "PORT": "8000", "API_KEY": "k"}
        | {"MODEL": "x", "CONFIG_FILE": "c", "OMP_NUM_THREADS": "1", "LC_ALL": "C"}
    )
    assert env == {"PATH": "/bin", "HOME": "/h", "OMP_NUM_THREADS": "1", "LC_ALL": "C"}
