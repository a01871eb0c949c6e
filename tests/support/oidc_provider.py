"""A real OpenID Connect provider for the single sign-on tests: django-oauth-toolkit in its own
Django project (``tests/oidc_provider/``) under ``manage.py runserver`` on a loopback port, with
an RS256 key made for the run, its own SQLite file, the given users and one confidential client.

It is reached as ``localhost`` while the app is ``127.0.0.1``: two hosts, so the browser keeps
their cookies apart (a cookie is per host, not per port)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.processes import ROOT, free_port, start_listening, stop_process

CLIENT_ID = "streamside-test"
CLIENT_SECRET = "a-client-secret-for-the-test-provider-0123456789"
PASSWORD = "provider-pass-4821"


@dataclass
class Provider:
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/o"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def person(username: str, email: str, groups: tuple[str, ...] = (), **names: str) -> dict[str, Any]:
    """A user of the provider (password ``PASSWORD``)."""
    return {
        "username": username,
        "email": email,
        "password": PASSWORD,
        "groups": list(groups),
        **names,
    }


def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def app_env(provider: Provider, **more: str) -> dict[str, str]:
    """The app's settings pointing at ``provider``."""
    return {
        "OIDC_ISSUER": provider.issuer,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        **more,
    }


@contextlib.contextmanager
def running_provider(
    tmp_path: Path, users: list[dict[str, Any]], redirect_uri: str, logout_redirect_uri: str = ""
) -> Iterator[Provider]:
    """The provider, with ``users`` and a client allowed to return to ``redirect_uri`` (no
    consent page: the client is trusted) and, after signing out there, to
    ``logout_redirect_uri``; stopped on the way out."""
    port = free_port()
    log_path = tmp_path / "provider.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OIDC_", "DJANGO_"))},
        "DJANGO_SETTINGS_MODULE": "tests.oidc_provider.settings",
        "PROVIDER_DB": str(tmp_path / "provider.sqlite3"),
        "PROVIDER_ISSUER": f"http://localhost:{port}/o",
        "PROVIDER_RSA_KEY": private_key_pem(),
        "PROVIDER_SEED": json.dumps(
            {
                "users": users,
                "client": {
                    "id": CLIENT_ID,
                    "secret": CLIENT_SECRET,
                    "redirect_uri": redirect_uri,
                    "post_logout_redirect_uri": logout_redirect_uri,
                },
            }
        ),
    }
    for command in (["-m", "django", "migrate", "--noinput"], ["-m", "tests.oidc_provider.seed"]):
        subprocess.run(
            [sys.executable, *command], cwd=ROOT, env=env, check=True, capture_output=True
        )
    process = start_listening(
        [sys.executable, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{port}"],
        port,
        env,
        log_path,
    )
    provider = Provider(port, log_path)
    try:
        _wait_for_discovery(provider)
        yield provider
    finally:
        stop_process(process)


def _wait_for_discovery(provider: Provider, timeout: float = 20.0) -> None:
    url = f"{provider.issuer}/.well-known/openid-configuration"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the provider did not answer {url} within {timeout} s:\n{provider.log()}")
