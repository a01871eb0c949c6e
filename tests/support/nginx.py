"""Debian's nginx on loopback ports, serving the shipped site (``deploy/nginx/streamside.conf``)
rewritten only where a loopback test must: ports, a self-signed certificate, a scratch prefix.

Skipped where nginx is not installed (saying so), unless STREAMSIDE_REQUIRE_NGINX=1 (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import ROOT, stop_process, wait_for_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
SITE = ROOT / "deploy" / "nginx" / "streamside.conf"


def nginx_missing() -> None:
    """Skip (or fail, where nginx is required) a test that needs nginx."""
    if os.environ.get("STREAMSIDE_REQUIRE_NGINX") == "1":
        pytest.fail("nginx is required here (STREAMSIDE_REQUIRE_NGINX=1) but not installed")
    pytest.skip("the deployment test needs Debian's nginx (apt-get install nginx)")


def site_for_loopback(
    shipped: str, *, http_port: int, https_port: int, workers: list[int], scratch: Path
) -> str:
    """The shipped site, changed only where a loopback test must: ports, the certificate,
    the static folder, the host name. Each change must find its placeholder."""
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in workers)
    changes = [
        (r"(?m)^    server 127\.0\.0\.1:800\d;\n(    server 127\.0\.0\.1:800\d;\n)*", servers),
        (r"(?m)^    listen \[::\]:\d+.*\n", ""),
        (r"listen 80;", f"listen 127.0.0.1:{http_port};"),
        (r"listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        (r"chat\.example\.com", "127.0.0.1"),
        (r"/etc/ssl/streamside/", f"{scratch}/tls/"),
        (r"/srv/streamside/staticfiles/", f"{scratch}/static/"),
    ]
    for pattern, replacement in changes:
        shipped, count = re.subn(pattern, replacement, shipped)
        assert count, f"the shipped nginx config lost its placeholder {pattern!r}"
    return shipped


def self_signed_certificate(scratch: Path) -> None:
    """``scratch/tls/{privkey,fullchain}.pem`` for 127.0.0.1, valid for a day."""
    (scratch / "tls").mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(scratch / "tls" / "privkey.pem"),
         "-out", str(scratch / "tls" / "fullchain.pem")],
        check=True, capture_output=True,
    )  # fmt: skip


def tls_context() -> ssl.SSLContext:
    """A client context that accepts the test's own self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return context


def start_nginx(scratch: Path, site: str, https_port: int) -> subprocess.Popen[bytes]:
    """nginx in the foreground with ``site`` as its only server, everything it writes kept
    in ``scratch``; returned once it listens on ``https_port``."""
    assert NGINX is not None
    (scratch / "site.conf").write_text(site)
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (scratch / "tmp" / temp).mkdir(parents=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (scratch / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {scratch}/nginx.pid;\n"
        f"error_log {scratch}/error.log info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n  include /etc/nginx/mime.types;\n"
        f"  access_log {scratch}/access.log;\n"
        + "".join(
            f"  {t}_temp_path {scratch}/tmp/{t};\n" for t in ("proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"  client_body_temp_path {scratch}/tmp/body;\n"
        f"  include {scratch}/site.conf;\n}}\n"
    )
    nginx = subprocess.Popen(
        [str(NGINX), "-p", str(scratch), "-c", str(scratch / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(https_port, nginx)
    except BaseException:
        stop_process(nginx)
        raise
    return nginx
