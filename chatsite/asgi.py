"""ASGI entry point: Django for HTTP, the chat consumer for websockets, and (in the demo) the
upstream simulator under /simulator/."""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()  # before importing anything that touches models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chat.live.compression import enable_under_daphne  # noqa: E402
from chat.live.origin import SameOriginValidator  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402

SIMULATOR_PREFIX = "/simulator"

# The event loop shares the GIL with the database threads (new turns, saves). At CPython's
# default 5 ms switch interval a thread busy in the ORM holds every socket's next frame that
# long; at 1 ms, 200 streams' p99 fell from 330-360 ms to about 210 ms (bench.relay, same runs).
sys.setswitchinterval(0.001)


def _http_app() -> Any:
    if not settings.LLM_SIMULATOR:
        return django_asgi_app
    from simulator.app import make_app

    simulator = make_app(prefix=SIMULATOR_PREFIX)

    async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope["path"]
        if path == SIMULATOR_PREFIX or path.startswith(SIMULATOR_PREFIX + "/"):
            await simulator(scope, receive, send)
        else:
            await django_asgi_app(scope, receive, send)

    return http


if settings.WEBSOCKET_COMPRESSION:
    enable_under_daphne()

application = ProtocolTypeRouter(
    {
        "http": _http_app(),
        # Scheme, host and port must match the site's (chat/live/origin.py), not the host only.
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Everything loaded so far (Django, the URLconf, the app's modules: about 110,000 objects that
# live as long as the worker) leaves the collector's full passes: a full pass walked them all
# while every socket waited, 70-90 ms once every few seconds under 100 streams, the worst frame
# delays of the run; frozen, such a pass takes 10-20 ms and 100 streams' p99 fell from 40-175 ms
# to 13-16 ms (bench.relay, same machine and hour). Collected first: no garbage is frozen.
gc.collect()
gc.freeze()
