"""Which app code a benchmark measured: the commit, and the app files that differ from it.

Both reports print it at the top: others edit the app live on this machine, and figures of
uncommitted code must say so to be compared with anything later.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def app_revision() -> str:
    """The commit under test, and which app files differ from it (others edit them live)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        except OSError:
            return ""
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "chat", "chatsite", "templates", "simulator")
    files = [line.split(maxsplit=1)[-1] for line in dirty.splitlines() if line.strip()]
    return head + (f" + uncommitted changes in {', '.join(files)}" if files else "")
