"""What a provider added in the admin may name as its key variable and its base URL.

A provider names the environment variable holding its key, and whoever adds it picks the base
URL the key is sent to (``Authorization: Bearer …``). Without a rule, ``api_key_env=SECRET_KEY``
and a server of one's own would carry this server's secrets there on the next chat. So a key
variable must look like a key (a name ending in ``_API_KEY``) or be listed in
``CHAT_PROVIDER_KEY_VARIABLES``, and is never one of the server's own secrets, even if listed.
Checked where a provider is saved (``Provider.clean``: the admin and ``set_provider``) and again
where its key is read (``chat.providers``): a row written before the rule, or straight to the
database, sends nothing.

No models imported here: ``chat.models`` uses it.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from django.conf import settings

KEY_SUFFIX = "_API_KEY"
# What chatsite/settings.py reads as this server's own secrets: never a provider's key.
# Compared in upper case (Windows' environment is case-insensitive).
SERVER_SECRET_VARIABLES = frozenset({"SECRET_KEY", "DATABASE_URL", "REDIS_URL"})
URL_SCHEMES = frozenset({"http", "https"})
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def key_variable_problem(name: str) -> str | None:
    """Why ``name`` may not hold a provider's key, for staff (the admin form, the command, the
    log), or None if it may. "" (a server without keys) may. Never repeats ``name``: what was
    typed there might be a key pasted by mistake."""
    if not name:
        return None
    if not VARIABLE_NAME.match(name):
        return "Give the NAME of an environment variable (letters, digits and _)."
    if name.upper() in SERVER_SECRET_VARIABLES:
        return (
            "This variable holds one of this server's own secrets (SECRET_KEY, DATABASE_URL, "
            "REDIS_URL): it can never be a provider's key."
        )
    if not name.endswith(KEY_SUFFIX) and name not in settings.CHAT_PROVIDER_KEY_VARIABLES:
        return (
            f"A provider's key variable must end in {KEY_SUFFIX} (e.g. OPENAI_API_KEY) or be "
            "listed in the CHAT_PROVIDER_KEY_VARIABLES setting."
        )
    return None


def base_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a provider's base URL (for staff), or None: http and https only."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname:
        return "Use an http:// or https:// address (e.g. https://api.openai.com/v1)."
    return None


def _server_secrets() -> set[str]:
    """The values of this server's own secrets, to refuse a key that merely copies one (a
    listed variable set to the secret key, the database's password)."""
    values = {settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())}
    values |= {os.environ.get(name, "") for name in SERVER_SECRET_VARIABLES}
    values |= {str(db.get("PASSWORD") or "") for db in settings.DATABASES.values()}
    redis_url = getattr(settings, "REDIS_URL", "")
    if redis_url:
        values.add(urlsplit(redis_url).password or "")
    values.discard("")
    return values


def read_key(name: str) -> tuple[str | None, str | None]:
    """(the key, None), or (None, why not, for staff) when ``name`` is refused by the rule or
    holds one of the server's own secrets. (None, None): unset or empty."""
    problem = key_variable_problem(name)
    if problem:
        return None, problem
    value = os.environ.get(name) or None
    if value is not None and value in _server_secrets():
        return None, "This variable holds the same value as one of this server's own secrets."
    return value, None
