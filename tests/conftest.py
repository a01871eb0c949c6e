"""The fixtures every test module may ask for, and only fixtures: each is built from the
library in ``tests/support`` (which test modules, bench/ and docs/ import directly).

``simulator`` is the upstream simulator in its own process; ``app`` is Streamside under Daphne
in another, with its own SQLite file, pointed at that simulator. Tests talk to both over HTTP
and websockets, as a browser and the model server would. A team's pieces (PostgreSQL, Redis,
two workers), private servers to kill, chromium and the compiled catalogue are here too, each
started by the first test that asks for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.app import App, running_app, two_workers
from tests.support.simulator import KEY, Simulator, running_simulator
from tests.support.visitor import Visitor

if TYPE_CHECKING:  # imported where used: a run that needs none of them does not pay for them
    from playwright.sync_api import Browser, Page
    from pytest_django.fixtures import Settings

    from tests.support.postgres_server import PostgresServer
    from tests.support.redis_server import RedisServer


# --- The upstream simulator ------------------------------------------------------------------


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    """The simulator the live tests share (realistic defaults; each prompt picks its speeds)."""
    with running_simulator() as instance:
        yield instance


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A simulator of the module's own, with no API key and no prefix."""
    with running_simulator() as instance:
        yield instance


@pytest.fixture(scope="module")
def keyed_sim() -> Iterator[Simulator]:
    """A simulator of the module's own that requires ``sk-test`` and lives under
    ``/simulator``, as the app may find one (its request log is the module's alone)."""
    with running_simulator("--api-key", "sk-test", prefix="/simulator") as instance:
        yield instance


@pytest.fixture(scope="module")
def keyed_simulator() -> Iterator[Simulator]:
    """A simulator demanding ``tests.support.simulator.KEY``, so the key really travels."""
    with running_simulator("--api-key", KEY) as instance:
        yield instance


@pytest.fixture
async def sim_client() -> AsyncIterator[httpx.AsyncClient]:
    """A plain async client for the simulator, with timeouts generous enough for a loaded CI
    box."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        yield http


# --- Streamside under Daphne -----------------------------------------------------------------


@pytest.fixture(scope="session")
def app(simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app pointed at the simulator, with a short idle timeout for the timeout tests."""
    env = {
        "LLM_API_BASE": simulator.base_url,
        "LLM_READ_TIMEOUT": "3",
        # qwq-plus only streams and the app knows it (buffered "off" side); qwen3-8b only
        # streams too (the simulator refuses stream:false) but the app is not told so.
        "LLM_MODELS": "qwen-plus,qwen-turbo,qwq-plus,qwen3-8b",
        "LLM_STREAM_ONLY_MODELS": "qwq*",
    }
    with running_app(tmp_path_factory.mktemp("app"), env) as instance:
        yield instance


@pytest.fixture(scope="module")
def vision_app(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app on the module's simulator with models that see: qwen-vl-plus (and qwen-plus,
    which cannot) over the OpenAI-compatible protocol, and the provider "Native" with
    qwen-vl-max and qwen-max over DashScope's native one."""
    import os

    from tests.support.app import manage, set_provider

    folder = tmp_path_factory.mktemp("vision")
    env = {"LLM_API_BASE": sim.base_url, "LLM_MODELS": "qwen-vl-plus,qwen-plus"}
    full, db = {**os.environ, **env}, folder / "db.sqlite3"
    manage(full, db, "migrate", "--noinput")
    set_provider(full, db, "Native", "--protocol", "dashscope", "--base-url",
                 f"{sim.base}/api/v1", "--models", "qwen-vl-max,qwen-max")  # fmt: skip
    with running_app(folder, env) as instance:
        yield instance


@pytest.fixture
def visitor(app: App) -> Iterator[Visitor]:
    """A browser session on ``app`` (cookies, CSRF token, websockets), closed afterwards."""
    v = Visitor(app)
    try:
        yield v
    finally:
        v.close()


@pytest.fixture
async def closing() -> AsyncIterator[list[httpx.AsyncClient]]:
    """Collects httpx clients created by a test and closes them afterwards."""
    clients: list[httpx.AsyncClient] = []
    yield clients
    for client in clients:
        await client.aclose()


# --- A team: PostgreSQL, Redis and two workers -----------------------------------------------


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL for this module, dropped afterwards."""
    from tests.support.services import fresh_database

    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def redis_url() -> str:
    """A database of the machine's Redis, emptied for this module."""
    from tests.support.services import emptied_redis

    return emptied_redis()


@pytest.fixture(scope="module")
def workers(
    simulator: Simulator,
    database: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[App, App]]:
    """Two workers sharing the machine's PostgreSQL and Redis, as a team deploys them."""
    env = {"LLM_API_BASE": simulator.base_url, "DATABASE_URL": database, "REDIS_URL": redis_url}
    with two_workers(env, tmp_path_factory) as started:
        yield started


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for this module, to kill and restart (the machine's is shared)."""
    from tests.support.redis_server import private_redis

    with private_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster for this module, to stop and start."""
    from tests.support.postgres_server import private_cluster

    with private_cluster() as server:
        yield server


# --- Chromium --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium under Playwright, one per module (skipped where it is missing)."""
    from tests.support.browser import launched_chromium

    with launched_chromium() as instance:
        yield instance


@pytest.fixture
def problems() -> list[str]:
    """Console errors (CSP violations among them) and uncaught exceptions seen on the page."""
    return []


@pytest.fixture
def page(browser: Browser, app: App, problems: list[str]) -> Iterator[Page]:
    """A fresh desktop-sized tab whose problems are collected in ``problems``."""
    from tests.support.browser import desktop_tab

    with desktop_tab(browser, problems) as page:
        yield page


# --- Translations ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled() -> None:
    """The Chinese .mo catalogue, built from the .po if ``make install`` has not (a bare pytest
    run); modules reading pages in Chinese use it (``pytest.mark.usefixtures``)."""
    from tests.support.i18n import compile_catalogue

    compile_catalogue()


@pytest.fixture
def login_required(settings: Settings) -> Settings:
    """Every page needs a signed-in user (``CHAT_REQUIRE_LOGIN``), as in production."""
    settings.CHAT_REQUIRE_LOGIN = True
    return settings


# --- Single sign-on ----------------------------------------------------------------------------

if TYPE_CHECKING:
    from tests.support.oidc_provider import Provider


@pytest.fixture(scope="module")
def sso(
    simulator: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[App, Provider]]:
    """A real OpenID Connect provider (alice of example.com in group "chat", mallory of
    elsewhere.org) and the app trusting it, as "Test ID", for example.com only, signing out
    there too (``OIDC_LOGOUT_AT_PROVIDER``); accounts on."""
    from tests.support.app import start_app
    from tests.support.oidc_provider import app_env, person, running_provider
    from tests.support.processes import free_port, stop_process

    port = free_port()
    users = [
        person("alice", "alice@example.com", ("chat",), first_name="Alice"),
        person("mallory", "mallory@elsewhere.org"),
    ]
    base = f"http://127.0.0.1:{port}"
    with running_provider(
        tmp_path_factory.mktemp("provider"),
        users,
        f"{base}/accounts/oidc/callback/",
        logout_redirect_uri=f"{base}/accounts/login/",
    ) as provider:
        env = app_env(
            provider,
            OIDC_PROVIDER_NAME="Test ID",
            OIDC_ALLOWED_DOMAINS="example.com",
            OIDC_LOGOUT_AT_PROVIDER="1",
            CHAT_REQUIRE_LOGIN="1",
            LLM_API_BASE=simulator.base_url,
        )
        instance, process = start_app(tmp_path_factory.mktemp("sso-app"), env, port=port)
        try:
            yield instance, provider
        finally:
            stop_process(process)


@pytest.fixture
def sso_settings(settings: Settings) -> Iterator[Settings]:
    """Single sign-on on in this process (an issuer nobody is asked: no sign-in runs), with its
    URLs, which exist only when ``OIDC_ISSUER`` is set at import: reloaded, and again after."""
    import importlib

    from django.test import override_settings
    from django.urls import clear_url_caches

    import chat.accounts.urls
    import chatsite.urls

    def reload() -> None:
        importlib.reload(chat.accounts.urls)
        importlib.reload(chatsite.urls)
        clear_url_caches()

    settings.OIDC_ISSUER = "https://id.example.com"
    settings.OIDC_RP_CLIENT_ID = "streamside"
    settings.OIDC_RP_CLIENT_SECRET = "a-client-secret-of-the-unit-tests"
    settings.OIDC_PROVIDER_NAME = "Example ID"
    settings.CHAT_REQUIRE_LOGIN = True
    reload()
    try:
        yield settings
    finally:
        with override_settings(OIDC_ISSUER=""):
            reload()
