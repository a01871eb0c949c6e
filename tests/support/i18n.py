"""The Chinese catalogue the pages are translated with: compiled from its .po file where
``make install`` has not (a bare pytest run), for the tests that read pages in Chinese."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.processes import ROOT

CATALOGUE = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
COMPILED = CATALOGUE.with_suffix(".mo")


def needs_gettext() -> None:
    """Skip a test that runs GNU gettext's tools where they are not installed."""
    if shutil.which("msgfmt") is None or shutil.which("xgettext") is None:
        pytest.skip("needs GNU gettext (apt-get install gettext)")


def compile_catalogue() -> None:
    """The .mo catalogue, built from the .po if it is missing or older; this process's
    translations are then reloaded."""
    if COMPILED.exists() and COMPILED.stat().st_mtime >= CATALOGUE.stat().st_mtime:
        return
    needs_gettext()
    subprocess.run(["msgfmt", "--check", "-o", str(COMPILED), str(CATALOGUE)], check=True)
    from django.utils import translation

    translation.trans_real._translations.clear()  # type: ignore[attr-defined]
