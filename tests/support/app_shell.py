"""Django's ORM on a running app's database, from a test: ``manage.py shell -c`` in a child
process against the app's SQLite file (accounts to sign in with, a row changed as time or an
admin would change it), since the app's process is not the test's."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.app import App
from tests.support.processes import ROOT

PASSWORD = "a-long-enough-passphrase-7"  # what the tests' accounts are created with


def in_app(app: App, code: str) -> str:
    """Run ``code`` in ``manage.py shell`` on the app's database; its standard output."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{app.db_path}"},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def create_users(app: App, *usernames: str) -> None:
    """Accounts with ``PASSWORD``, for a deployment that requires a sign-in."""
    names = ", ".join(repr(name) for name in usernames)
    in_app(
        app,
        "from django.contrib.auth.models import User\n"
        f"for name in [{names}]:\n"
        f"    User.objects.create_user(name, password={PASSWORD!r})\n",
    )
