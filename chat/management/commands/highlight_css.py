"""``manage.py highlight_css``: write ``static/chat/highlight.css``, the code blocks' colours.

Run it again after changing ``LIGHT_STYLE``/``DARK_STYLE`` in ``chat/rendering/markdown.py``
or upgrading Pygments (a test fails while the shipped file and the generator disagree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from chat.rendering.markdown import highlight_css

CSS_PATH = Path(settings.BASE_DIR) / "static" / "chat" / "highlight.css"


class Command(BaseCommand):
    help = "Write static/chat/highlight.css (Pygments token colours, light and dark)."

    def handle(self, *args: Any, **options: Any) -> None:
        CSS_PATH.write_text(highlight_css(), encoding="utf-8")
        self.stdout.write(f"Wrote {CSS_PATH}")
