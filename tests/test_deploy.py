"""Production settings as a team would set them: check --deploy clean, a real SECRET_KEY or no
start, HTTPS behind a proxy, hashed static files from WhiteNoise, login in front of everything."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support.app import App, start_app
from tests.support.processes import ROOT, stop_process

SECRET = secrets.token_urlsafe(50)
live = pytest.mark.live  # the tests on a production worker under Daphne


def production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "CHAT_HTTPS"}}
    return {**env, "SECRET_KEY": SECRET, "ALLOWED_HOSTS": "chat.example.com,127.0.0.1", **extra}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_check_deploy_is_clean_with_the_documented_settings() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_plain_http_in_production_is_what_check_deploy_warns_about() -> None:
    result = manage("check", "--deploy", env=production_env(CHAT_HTTPS="0"))
    assert "security.W008" in result.stderr + result.stdout  # SECURE_SSL_REDIRECT


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="missing"),
        pytest.param("changeme", id="short"),
        pytest.param("django-insecure-" + "x" * 50, id="django-insecure"),
        pytest.param("insecure-development-key-do-not-use-in-production", id="development"),
        pytest.param("a" * 60, id="not-random"),
    ],
)
def test_production_refuses_to_start_without_a_real_secret_key(key: str) -> None:
    result = manage("check", env=production_env(SECRET_KEY=key))
    assert result.returncode != 0
    assert "SECRET_KEY must be set to a long random value" in result.stderr


def test_production_refuses_any_host() -> None:
    result = manage("check", env=production_env(ALLOWED_HOSTS="chat.example.com,*"))
    assert result.returncode != 0
    assert "ALLOWED_HOSTS=* is refused when DEBUG is off" in result.stderr


def test_a_negative_session_check_period_is_refused() -> None:
    result = manage("check", env=production_env(STREAM_SESSION_CHECK_MS="-1"))
    assert result.returncode != 0
    assert "STREAM_SESSION_CHECK_MS must be 0 (never) or more." in result.stderr


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    tmp = tmp_path_factory.mktemp("production")
    static = tmp / "static"
    env = {
        "DEBUG": "0",
        "SECRET_KEY": SECRET,
        "ALLOWED_HOSTS": "chat.example.com,127.0.0.1",
        "STATIC_ROOT": str(static),
        "LLM_API_BASE": "http://127.0.0.1:9/v1",
    }
    collected = manage("collectstatic", "--noinput", "-v0", env={**production_env(), **env})
    assert collected.returncode == 0, collected.stderr
    instance, process = start_app(tmp, env)
    try:
        yield instance
    finally:
        stop_process(process)


def get(app: App, path: str, *, https: bool = True) -> httpx.Response:
    headers = {"Host": "chat.example.com"}
    if https:
        headers["X-Forwarded-Proto"] = "https"
    return httpx.get(f"{app.url}{path}", headers=headers, follow_redirects=False, timeout=10)


@live
def test_plain_http_is_redirected_to_https(production: App) -> None:
    response = get(production, "/accounts/login/", https=False)
    assert response.status_code == 301
    assert response.headers["location"] == "https://chat.example.com/accounts/login/"


@live
def test_pages_need_a_login_and_carry_the_security_headers(production: App) -> None:
    home = get(production, "/")
    assert home.status_code == 302 and home.headers["location"].startswith("/accounts/login/")
    login = get(production, "/accounts/login/")
    assert login.status_code == 200
    assert login.headers["strict-transport-security"].startswith("max-age=31536000")
    assert "script-src 'self'" in login.headers["content-security-policy"]
    cookie = login.headers["set-cookie"]
    assert "csrftoken=" in cookie and "Secure" in cookie


@live
def test_static_files_are_hashed_and_cached_forever(production: App) -> None:
    page = get(production, "/accounts/login/").text
    match = re.search(r'href="(/static/chat/app\.[0-9a-f]{12}\.css)"', page)
    assert match, "the stylesheet link is not a hashed name"
    css = get(production, match.group(1))
    assert css.status_code == 200 and ".account" in css.text
    assert "max-age=315360000" in css.headers["cache-control"]


@live
def test_a_forged_host_header_is_refused(production: App) -> None:
    response = httpx.get(
        f"{production.url}/accounts/login/",
        headers={"Host": "evil.example", "X-Forwarded-Proto": "https"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "evil.example" not in response.text  # no reflection of what the client claimed


@live
def test_session_cookie_is_http_only_lax_and_rotated_on_login(production: App) -> None:
    """A session id fixed before login (a planted cookie) is not the one after it."""
    name = "fixation-" + secrets.token_hex(3)
    password = secrets.token_urlsafe(16)
    created = manage(
        "shell", "-c",
        "from django.contrib.auth.models import User;"
        f"User.objects.create_user({name!r}, password={password!r})",
        env={**production_env(), "DATABASE_URL": f"sqlite:///{production.db_path}"},
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    # The cookies are Secure, so this plain-HTTP client (TLS ends at the proxy) sends them by hand.
    headers = {"Host": "chat.example.com", "X-Forwarded-Proto": "https"}
    form = httpx.get(f"{production.url}/accounts/login/", headers=headers, timeout=10)
    token = form.cookies["csrftoken"]
    planted = "plantedbyanattacker0123456789abc"
    signed_in = httpx.post(
        f"{production.url}/accounts/login/",
        data={"username": name, "password": password, "csrfmiddlewaretoken": token},
        headers={
            **headers,
            "Referer": "https://chat.example.com/accounts/login/",
            "Cookie": f"csrftoken={token}; sessionid={planted}",
        },
        timeout=10,
    )
    assert form.status_code == 200 and signed_in.status_code == 302
    cookie = next(c for c in signed_in.headers.get_list("set-cookie") if c.startswith("sessionid="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    session = signed_in.cookies.get("sessionid")
    assert session and session != planted


def test_every_setting_is_in_the_environment_template_and_the_readme() -> None:
    """The settings read from the environment, as chatsite/settings.py reads them: each is in
    deploy/streamside.env.example and in the README's table, so a team misses none."""
    source = (ROOT / "chatsite" / "settings.py").read_text()
    read = set(
        re.findall(
            r'(?:env_bool|env_list|env_float|environ\.get|env=)\(?\s*"([A-Z][A-Z0-9_]+)"', source
        )
    )
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "LOG_FORMAT"} <= read
    template = (ROOT / "deploy" / "streamside.env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    missing = sorted(n for n in read if not re.search(rf"^#? ?{n}=", template, re.M))
    assert missing == [], f"not in deploy/streamside.env.example: {missing}"
    assert sorted(n for n in read if f"`{n}`" not in readme) == []
