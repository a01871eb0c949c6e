"""Shared fixtures: real servers on loopback ports and a real websocket client.

``simulator`` is the upstream simulator in its own process; ``app`` is Streamside under Daphne in
another, with its own SQLite file, pointed at that simulator. Tests talk to both over HTTP and
websockets, as a browser and the model server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout} s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Simulator:
    """The upstream simulator running on a loopback port."""

    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> list[dict[str, Any]]:
        response = httpx.get(f"http://127.0.0.1:{self.port}/_sim/requests", timeout=5)
        response.raise_for_status()
        return list(response.json()["requests"])

    def request_for(self, marker: str) -> dict[str, Any]:
        """The logged request whose last user message contains ``marker``."""
        for entry in reversed(self.requests()):
            users = [m for m in entry["messages"] if m["role"] == "user"]
            if users and marker in users[-1]["content"]:
                return entry
        raise LookupError(f"the simulator saw no request containing {marker!r}")


def start_simulator() -> tuple[Simulator, subprocess.Popen[bytes]]:
    """The simulator in its own process (realistic defaults; callers pick speeds per prompt)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
    except BaseException:
        stop_process(process)
        raise
    return Simulator(port), process


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    instance, process = start_simulator()
    try:
        yield instance
    finally:
        stop_process(process)


@dataclass
class App:
    """Streamside under Daphne on a loopback port."""

    port: int
    db_path: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_app(
    tmp_path: Path, env: dict[str, str], port: int | None = None
) -> tuple[App, subprocess.Popen[bytes]]:
    """Streamside under Daphne (on ``port``, else a free one), its log in ``tmp_path``
    (appended to, so a worker restarted in the same folder keeps one log)."""
    port = port or free_port()
    db_path = tmp_path / "db.sqlite3"
    log_path = tmp_path / "daphne.log"
    # The embedded defaults unless the caller asks for shared services (REDIS_URL in env).
    inherited = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    full_env = {
        **inherited,
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{db_path}",
        "PORT": str(port),
        "STREAM_SAVE_INTERVAL_MS": "200",
        **env,
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=full_env,
        check=True,
        capture_output=True,
    )
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "chatsite.asgi:application"],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for_port(port, process)
    return App(port, db_path, log_path), process


@contextlib.contextmanager
def two_workers(
    env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    name: str = "worker",
    per_side: Callable[[str], dict[str, str]] | None = None,
) -> Iterator[tuple[App, App]]:
    """Two Daphne processes with the same settings (a team's workers), stopped afterwards;
    ``per_side("a")``/``("b")`` adds settings of one worker's own."""
    started: list[tuple[App, subprocess.Popen[bytes]]] = []
    try:
        for side in ("a", "b"):
            own = {**env, **(per_side(side) if per_side else {})}
            started.append(start_app(tmp_path_factory.mktemp(f"{name}-{side}"), own))
        yield started[0][0], started[1][0]
    finally:
        for _, process in started:
            stop_process(process)


@pytest.fixture(scope="session")
def app(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app pointed at the simulator, with a short idle timeout for the timeout tests."""
    instance, process = start_app(
        tmp_path_factory.mktemp("app"),
        {
            "LLM_API_BASE": simulator.base_url,
            "LLM_READ_TIMEOUT": "3",
            # qwq-plus only streams and the app knows it (buffered "off" side); qwen3-8b only
            # streams too (the simulator refuses stream:false) but the app is not told so.
            "LLM_MODELS": "qwen-plus,qwen-turbo,qwq-plus,qwen3-8b",
            "LLM_STREAM_ONLY_MODELS": "qwq*",
        },
    )
    try:
        yield instance
    finally:
        stop_process(process)


# --- A browser-like client -------------------------------------------------------------------

FRAME_DELTA = re.compile(
    r'<div hx-swap-oob="beforeend:#answer-(\d+)-text" data-seq="(\d+)">(.*?)</div>', re.S
)
ARTICLE = re.compile(r"<article\b[^>]*>", re.S)


def attrs(tag: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag)}


@dataclass
class Frame:
    """One websocket message and when it arrived (monotonic seconds)."""

    html: str
    at: float

    @property
    def deltas(self) -> list[tuple[int, int, str]]:
        return [(int(a), int(s), html.unescape(t)) for a, s, t in FRAME_DELTA.findall(self.html)]

    @property
    def articles(self) -> list[dict[str, str]]:
        return [attrs(tag) for tag in ARTICLE.findall(self.html)]

    def final_for(self, answer_id: int) -> dict[str, str] | None:
        for article in self.articles:
            if (
                article.get("id") == f"message-{answer_id}"
                and article.get("hx-swap-oob") == "outerHTML"
                and article.get("data-status") != "streaming"
            ):
                return article
        return None


@dataclass
class Visitor:
    """A browser session: cookies over HTTP, and websockets that present them."""

    app: App
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.app.url, timeout=10, follow_redirects=True)
        self.http.get("/")

    def close(self) -> None:
        self.http.close()

    def post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        token = self.http.cookies.get("csrftoken", "")
        return self.http.post(path, data=data or {}, headers={"X-CSRFToken": token})

    def new_conversation(self, **settings: str) -> int:
        response = self.post("/c/new/")
        response.raise_for_status()
        match = re.search(r"/c/(\d+)/$", str(response.url))
        assert match, response.url
        conversation_id = int(match.group(1))
        if settings:
            data = {"model": "qwen-plus", "system_prompt": "", "stream": "on", **settings}
            if data["stream"] != "on":
                data.pop("stream")
            self.post(f"/c/{conversation_id}/settings/", data).raise_for_status()
        return conversation_id

    def export(self, conversation_id: int) -> dict[str, Any]:
        response = self.http.get(f"/c/{conversation_id}/export.json")
        response.raise_for_status()
        return dict(response.json())

    def socket(self, conversation_id: int, origin: str | None = None) -> Any:
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        return websockets.connect(
            f"ws://127.0.0.1:{self.app.port}/ws/c/{conversation_id}/",
            additional_headers={"Cookie": cookie},
            origin=origin or self.app.url,  # type: ignore[arg-type]
            max_size=None,
        )


@pytest.fixture
def visitor(app: App) -> Iterator[Visitor]:
    v = Visitor(app)
    try:
        yield v
    finally:
        v.close()


async def send(ws: Any, message: str, **extra: Any) -> None:
    await ws.send(json.dumps({"action": "send", "message": message, "HEADERS": {}, **extra}))


async def collect_answer(
    ws: Any, answer_id: int | None = None, timeout: float = 30.0
) -> tuple[int, list[Frame], dict[str, str]]:
    """Read frames until the answer (by default the next new one) is final.

    Returns its id, the frames read and the final article's attributes.
    """
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer did not finish in time")
        raw = await asyncio.wait_for(ws.recv(), remaining)
        frame = Frame(str(raw), time.monotonic())
        frames.append(frame)
        if answer_id is None:
            for article in frame.articles:
                if (
                    article.get("data-role") == "assistant"
                    and article.get("data-status") == "streaming"
                ):
                    answer_id = int(article["id"].removeprefix("message-"))
        if answer_id is not None and (final := frame.final_for(answer_id)):
            return answer_id, frames, final


def streamed_text(frames: list[Frame], answer_id: int) -> str:
    return "".join(text for f in frames for a, _, text in f.deltas if a == answer_id)


def answer_row(export: dict[str, Any], answer_id: int) -> dict[str, Any]:
    return next(m for m in export["messages"] if m["id"] == answer_id)


@pytest.fixture
async def closing() -> AsyncIterator[list[httpx.AsyncClient]]:
    """Collects httpx clients created by a test and closes them afterwards."""
    clients: list[httpx.AsyncClient] = []
    yield clients
    for client in clients:
        await client.aclose()
