"""A load balancer in miniature, for tests: a TCP proxy on loopback that spreads connections
over several workers in turn, and can cut the websockets it carries (a network blip).

Websockets and plain HTTP take turns separately, so the n-th websocket goes to worker
n mod N whatever the page loaded meanwhile: a reconnect lands on the next worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from dataclasses import dataclass, field


@dataclass
class Route:
    """One connection the proxy carried: where to, and what for."""

    backend: int  # the worker's port
    websocket: bool
    path: str


@dataclass
class RoundRobinProxy:
    backends: list[int]
    routes: list[Route] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="proxy")
        self._turns = {True: itertools.cycle(self.backends), False: itertools.cycle(self.backends)}
        self._open: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._http: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RoundRobinProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        await self._cut()
        for client, upstream in self._http:
            client.transport.abort()
            upstream.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def cut_websockets(self) -> int:
        """Drop every websocket now, both ways, without a closing handshake; how many."""
        done = asyncio.run_coroutine_threadsafe(self._cut(), self._loop)
        return done.result(5)

    async def _cut(self) -> int:
        cut = 0
        for client, upstream in self._open:
            if not client.is_closing():
                cut += 1
            client.transport.abort()
            upstream.transport.abort()
        self._open.clear()
        return cut

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        head = await client_r.read(65536)
        if not head:
            client_w.close()
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        path = request_line.split(" ")[1] if " " in request_line else ""
        websocket = b"\r\nupgrade: websocket" in head.lower()
        backend = next(self._turns[websocket])
        self.routes.append(Route(backend, websocket, path))
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            client_w.close()
            return
        if websocket:
            self._open.append((client_w, up_w))
        else:
            self._http.append((client_w, up_w))
        up_w.write(head)
        await asyncio.gather(_pump(client_r, up_w), _pump(up_r, client_w))


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        sink.close()
