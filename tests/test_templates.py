"""The templates stay readable and formatted, and the socket's frames stay drawn from them.

Lines of at most 120 characters and djhtml's indentation (``make lint`` checks it too), so a
change to a template reads as a change in review; and the parts a frame sends alone are the
page's own partials, swapped out of band only when sent alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from chat.models import Conversation
from chat.rendering import fragments
from chat.rendering.fragments import MessageView, render_message

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
MAX_LINE = 120


def test_no_template_line_is_longer_than_120_characters() -> None:
    long = [
        f"{path.relative_to(TEMPLATES)}:{number}: {len(line)} characters"
        for path in sorted(TEMPLATES.rglob("*.html"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if len(line) > MAX_LINE
    ]
    assert not long, (
        "break these lines (attributes on their own lines, blocks split):\n" + "\n".join(long)
    )


def test_templates_are_formatted_by_djhtml() -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "djhtml", "--check", str(TEMPLATES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, (
        f"run `.venv/bin/djhtml templates` and review the result:\n{checked.stdout}{checked.stderr}"
    )


def plain(html: str) -> str:
    """Without the out-of-band swap, and with runs of whitespace read as one space."""
    return " ".join(html.replace('hx-swap-oob="true"', "").split())


def test_a_part_of_an_answer_sent_alone_is_the_pages_element_swapped_out_of_band() -> None:
    thinking = MessageView(
        id=7, role="assistant", status="streaming", content="", thinking_s=1.5, retry_note="later"
    )
    thought = MessageView(id=7, role="assistant", status="streaming", content="", thinking_ms=2e3)
    for view, part in [
        (thinking, fragments.thinking_status(7, elapsed_s=1.5)),
        (thinking, fragments.retry_frame(7, "later")),
        (thought, fragments.thinking_status(7, thought_ms=2e3)),
    ]:
        page = render_message(view)
        assert "hx-swap-oob" not in page  # nested in a swapped article, it would swap again
        assert 'hx-swap-oob="true"' in part
        assert plain(part) in plain(page)


@pytest.mark.django_db
def test_the_title_the_sent_marker_and_an_alert_are_the_pages_elements(client: Client) -> None:
    client.post("/c/new/")
    conversation = Conversation.objects.get()
    page = plain(client.get(f"/c/{conversation.pk}/").content.decode())
    title = fragments.title_frame(conversation.pk, conversation.display_title)
    assert plain(title[: title.index("<a ")]) in page
    marker = "" + fragments.SENT_MARKER
    assert 'hx-swap-oob="true"' in marker and "data-sent" in marker
    assert plain(marker.replace(" data-sent", "")) in page
    assert fragments.alert_frame("<b>No</b>") == (
        '<div id="alerts" hx-swap-oob="innerHTML">'
        '<p class="alert" role="alert">&lt;b&gt;No&lt;/b&gt;</p></div>'
    )
