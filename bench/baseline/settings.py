"""The least Django the baseline relay needs: channels reads settings, nothing else does.

No database (``close_old_connections``, which channels calls per received message, finds
none), no channel layer, no templates, no installed apps, no middleware.
"""

from __future__ import annotations

import os
import secrets

SECRET_KEY = os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
LOGGING_CONFIG = None  # Daphne's own logging only, as the app's worker runs

BASELINE_UPSTREAM = os.environ.get("BASELINE_UPSTREAM", "http://127.0.0.1:8001/v1").rstrip("/")
"""The simulator's OpenAI-compatible base URL (``…/v1``)."""
BASELINE_CONNECTIONS = int(os.environ.get("BASELINE_CONNECTIONS", "1000"))
"""The shared session's connection limit: sized to the concurrency, so no stream ever waits
for a connection (aiohttp's default of 100 would queue streams 101+)."""
BASELINE_MODEL = os.environ.get("BASELINE_MODEL", "qwen-plus")
