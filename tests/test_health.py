"""``/healthz``: a word for anyone, the checks for staff, 503 when the database is gone."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from tests.support.app import start_app
from tests.support.processes import free_port, stop_process
from tests.support.simulator import Simulator

pytestmark = pytest.mark.django_db(transaction=True)


def test_anyone_gets_ok_and_nothing_more(client: Client, settings: Settings) -> None:
    settings.CHAT_REQUIRE_LOGIN = True  # no login needed for a balancer's check
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_staff_see_each_check(client: Client) -> None:
    client.force_login(User.objects.create_user("ops", is_staff=True))
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "channel_layer": "ok"}
    assert body["answers_in_flight"] == 0


@pytest.mark.live
def test_an_unreachable_redis_is_503_without_details(tmp_path: Path, simulator: Simulator) -> None:
    """A real worker whose Redis is gone (a closed port): unavailable, and no address shown."""
    app, process = start_app(
        tmp_path,
        {"LLM_API_BASE": simulator.base_url, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
    )
    try:
        response = httpx.get(f"{app.url}/healthz", timeout=10)
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable"}
        assert "127.0.0.1" not in response.text and "redis" not in response.text
    finally:
        stop_process(process)
