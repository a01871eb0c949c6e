"""The machine's own PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379), shared with other
tests, and what a test does where a service it needs is missing: skip, saying why, or fail
where the services are required (``STREAMSIDE_REQUIRE_SERVICES=1``, as in CI)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/7"


def unavailable(reason: str) -> None:
    """Skip a test whose service is missing, or fail it where the services are required
    (``STREAMSIDE_REQUIRE_SERVICES=1``, as in CI)."""
    if os.environ.get("STREAMSIDE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (required here: STREAMSIDE_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database on the machine's server (its URL), dropped afterwards."""
    import psycopg

    name = f"streamside_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not running on 127.0.0.1:5432 ({exc.__class__.__name__})")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def emptied_redis(url: str = REDIS_URL) -> str:
    """``url`` (a database of the machine's Redis) after emptying it."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.flushdb()
    except redis.RedisError as exc:
        unavailable(f"Redis is not running on 127.0.0.1:6379 ({exc.__class__.__name__})")
    return url
