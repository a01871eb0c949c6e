"""The tests' library: the real servers they start, the clients they talk to them with, and
the page helpers of the browser tests. Fixtures live in ``tests/conftest.py`` and are built
from these; test modules import from here, never from each other (nor from conftest).

Servers
    processes        free ports, waiting for a port, stopping a child process
    app              Streamside under Daphne (``start_app``, ``two_workers``), manage.py on its DB
    simulator        the upstream simulator in its own process, and its request log
    services         the machine's PostgreSQL and Redis, and skipping where one is missing
    redis_server     a private redis-server to kill and restart
    postgres_server  a private PostgreSQL cluster to stop and start
    nginx            Debian's nginx serving the shipped site on loopback
    proxy            a round-robin TCP proxy that can cut its websockets
    byte_server      an HTTP server writing exactly the bytes a test scripts
    unit_sandbox     a worker run under the systemd unit's sandbox, without systemd

Clients
    visitor          a browser session over HTTP (cookies, CSRF, exports, sockets)
    sockets          the chat's websocket: send, read until an answer is final
    inbox            a socket read in the background: its frames, alerts and close code
    frames           reading the frames a socket received
    upstream         a model server's client talking to the simulator directly
    compare_runs     the comparison socket driven as its form does
    app_shell        the ORM on a running app's database (accounts, rows changed by hand)
    doubles          httpx transports replaying recorded bytes
    sse              model-server streams built as bytes, and what they mean
    events           the upstream client's events: text, failure
    waiting          polling for an event, or for a window in which nothing happens
    latency          per-token latency from the simulator's send stamps, and percentiles

Pages
    browser          chromium under Playwright, and a first visit
    answer_text      what a page shows of an answer, compared with the model's text
    i18n             the Chinese catalogue, compiled where ``make install`` has not

Oracles and scenarios
    rescanning_splitter  the live markdown splitter as it was, which the new one must agree with
    clock_skew       workers whose clocks disagree, played on a real database in a process
"""

from __future__ import annotations
