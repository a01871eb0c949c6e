"""Work on whole conversations: search, the Markdown export, answer versions, and deletion
with Undo (a soft delete, purged after ``PURGE_AFTER``).

Sync code: views and the ``purge_deleted`` command call it, never async code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Min, Q
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify
from django.utils.translation import gettext, ngettext

from chat import images
from chat.exceptions import ClientError
from chat.generation.records import version_groups, versions_of
from chat.generation.turns import request_options
from chat.models import Conversation, Message, answer_outcome
from chat.owners import Owner
from chat.rendering import fragments
from chat.rendering.errors import error_text

# Deleted conversations are restorable for this long, then purged. At least the rate limit's
# window (one minute): the limit counts saved answers, and purging sooner would forget them.
PURGE_AFTER = timedelta(minutes=1)
MAX_QUERY_CHARS = 200
MAX_RESULTS = 50
SNIPPET_BEFORE = 40  # characters of context before the first match
SNIPPET_AFTER = 100  # and after it


# --- Delete, Undo, purge ------------------------------------------------------------------------


UNDO_SESSION_KEY = "streamside_undo_delete"


def remember_undo(request: HttpRequest, conversation: Conversation) -> None:
    """After a delete: the next whole page offers Undo, once."""
    request.session[UNDO_SESSION_KEY] = {"id": conversation.pk, "title": conversation.display_title}


def take_undo(request: HttpRequest) -> dict[str, Any] | None:
    """The Undo offer for a whole page; htmx partials leave it for the page."""
    if getattr(request, "htmx", False):
        return None
    offer = request.session.pop(UNDO_SESSION_KEY, None)
    return offer if isinstance(offer, dict) else None


def soft_delete(conversation: Conversation) -> None:
    """Hide the conversation everywhere (lists, search, its page, its socket) until purged."""
    conversation.deleted_at = timezone.now()
    conversation.save(update_fields=["deleted_at"])


def streaming_answers(conversation: Conversation) -> list[int]:
    """The conversation's answers still marked streaming (on whichever worker)."""
    rows = conversation.messages.filter(status=Message.Status.STREAMING)
    return list(rows.values_list("pk", flat=True))


def restore(owner: Owner, conversation_id: int) -> Conversation | None:
    """Undo a delete; None if the owner has no such deleted conversation (or it was purged)."""
    conversation = owner.with_deleted().filter(pk=conversation_id, deleted_at__isnull=False).first()
    if conversation is not None:
        conversation.deleted_at = None
        conversation.save(update_fields=["deleted_at"])
    return conversation


def purge_deleted(older_than: timedelta = PURGE_AFTER, owner: Owner | None = None) -> int:
    """Delete for good the conversations deleted more than ``older_than`` ago (one owner's, or
    everyone's), with their messages. Returns how many conversations went."""
    rows = owner.with_deleted() if owner is not None else Conversation.objects.all()
    doomed = rows.filter(deleted_at__lt=timezone.now() - older_than)
    _, per_model = doomed.delete()
    return per_model.get(Conversation._meta.label, 0)


# --- Versions ----------------------------------------------------------------------------------


def show_version(conversation: Conversation, answer_id: int) -> fragments.MessageView | None:
    """Make ``answer_id`` the shown version of the latest answer: the one the page shows and
    later questions send as context. None if the conversation has no such answer."""
    with transaction.atomic():
        chosen = conversation.messages.filter(pk=answer_id, role=Message.Role.ASSISTANT).first()
        if chosen is None:
            return None
        first = chosen.version_of_id or chosen.pk
        group = list(conversation.messages.filter(Q(pk=first) | Q(version_of_id=first)))
        if any(row.status == Message.Status.STREAMING for row in group):
            raise ClientError(gettext("Wait for the answer to finish, then pick a version."))
        latest = conversation.messages.filter(hidden=False).last()
        if latest is None or latest.pk not in {row.pk for row in group}:
            raise ClientError(gettext("Only the latest answer's versions can be shown."))
        Message.objects.filter(pk__in=[row.pk for row in group if row.pk != chosen.pk]).update(
            hidden=True
        )
        Message.objects.filter(pk=chosen.pk).update(hidden=False)
    ids = tuple(row.pk for row in group)
    return fragments.message_view(chosen, is_latest=True, version_ids=ids if len(ids) > 1 else ())


# --- Search ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """One conversation found: its title and, if a message matched, a snippet of it (both
    escaped, with each match in ``<mark>``)."""

    id: int
    title: SafeString
    snippet: SafeString


def clean_query(raw: str) -> str:
    """The query as searched (spaces collapsed), or a ClientError if it is too long."""
    query = " ".join(raw.split())
    if len(query) > MAX_QUERY_CHARS:
        raise ClientError(
            ngettext(
                "Search for at most %(limit)d character.",
                "Search for at most %(limit)d characters.",
                MAX_QUERY_CHARS,
            )
            % {"limit": MAX_QUERY_CHARS}
        )
    return query


def search(owner: Owner, query: str) -> list[Hit]:
    """The owner's chats whose title or shown message text contains ``query``, newest first.

    ``icontains``: case-insensitive on PostgreSQL for every script; on SQLite for ASCII letters
    only (its LIKE), which is fine for Chinese and other scripts without case.
    """
    if not query:
        return []
    chats = owner.chats()
    matching = Message.objects.filter(
        conversation__in=chats, hidden=False, content__icontains=query
    )
    found = list(
        chats.filter(Q(title__icontains=query) | Q(pk__in=matching.values("conversation_id")))
        .only("id", "title")
        .order_by("-updated_at", "-id")[:MAX_RESULTS]
    )
    firsts = (
        matching.filter(conversation_id__in=[c.pk for c in found])
        .order_by()
        .values("conversation_id")
        .annotate(first=Min("pk"))
        .values_list("first", flat=True)
    )
    texts = dict(
        Message.objects.filter(pk__in=list(firsts)).values_list("conversation_id", "content")
    )
    pattern = re.compile(re.escape(query), re.IGNORECASE)
    return [
        Hit(c.pk, highlight(c.display_title, pattern), snippet(texts.get(c.pk, ""), pattern))
        for c in found
    ]


def highlight(text: str, pattern: re.Pattern[str]) -> SafeString:
    """``text`` escaped, each match of ``pattern`` in ``<mark>``."""
    parts, last = [], 0
    for match in pattern.finditer(text):
        parts += [escape(text[last : match.start()]), "<mark>", escape(match.group()), "</mark>"]
        last = match.end()
    parts.append(escape(text[last:]))
    return mark_safe("".join(parts))  # every piece of text was escaped above


def snippet(text: str, pattern: re.Pattern[str]) -> SafeString:
    """A short piece of ``text`` around its first match, on one line, highlighted."""
    if not text:
        return mark_safe("")
    match = pattern.search(text)
    start = max(0, match.start() - SNIPPET_BEFORE) if match else 0
    end = (match.end() if match else 0) + SNIPPET_AFTER
    piece = " ".join(text[start:end].split())
    before = "…" if start > 0 else ""
    after = "…" if end < len(text) else ""
    return mark_safe(before + highlight(piece, pattern) + after)


# --- Markdown export ---------------------------------------------------------------------------


def export_filename(conversation: Conversation, extension: str) -> str:
    """A file name from the title: letters, digits and dashes only (any script)."""
    stem = slugify(conversation.display_title, allow_unicode=True)[:80].strip("-_")
    return f"{stem or f'conversation-{conversation.pk}'}.{extension}"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}".rstrip() for line in text.splitlines())


def export_markdown(conversation: Conversation) -> str:
    """The whole conversation as Markdown: every message, earlier versions and the turns an
    edit replaced included and marked "(not shown)", as the JSON export keeps them too."""
    rows = list(conversation.messages.all())
    groups = version_groups(conversation.pk)
    lines = [f"# {conversation.display_title}", ""]
    lines.append(gettext("- Model: %(model)s") % {"model": conversation.model})
    options = request_options(conversation)
    if options:
        shown = ", ".join(f"{name} = {value}" for name, value in options.items())
        lines.append(gettext("- Options: %(options)s") % {"options": shown})
    lines.append(gettext("- Exported: %(when)s") % {"when": timezone.now().isoformat()})
    lines.append("")
    if conversation.system_prompt.strip():
        heading = gettext("System prompt")  # (xgettext does not look inside f-strings)
        lines += [f"## {heading}", "", conversation.system_prompt.strip(), ""]
    pictures = images.of_questions(rows)
    for row in rows:
        lines += [f"## {_heading(row, versions_of(row, groups))}", ""]
        for number, image in enumerate(pictures.get(row.pk, ()), start=1):
            alt = gettext("Attached image %(number)s") % {"number": number}
            lines += [f"![{alt}]({image.url})", ""]
        if row.reasoning:
            lines += [_quote(gettext("Thinking:") + "\n\n" + row.reasoning), ""]
        if row.content:
            lines += [row.content.rstrip(), ""]
        if row.status == Message.Status.ERROR and row.error_message:
            error = gettext("Error:")  # (xgettext does not look inside f-strings)
            shown = error_text(row.error_wording, row.error_message)
            lines += [f"*{error} {shown}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _heading(row: Message, versions: tuple[int, ...]) -> str:
    if row.role == Message.Role.USER:
        parts = [gettext("You")]
    else:
        parts = [gettext("Answer") + (f" ({row.model})" if row.model else "")]
        if len(versions) > 1:
            parts.append(
                gettext("version %(number)d of %(count)d")
                % {"number": versions.index(row.pk) + 1, "count": len(versions)}
            )
        outcome = answer_outcome(row.status, row.error_kind, bool(row.content or row.reasoning))
        if outcome != "complete":
            parts.append(outcome)
    heading = " · ".join(parts)
    return heading + " " + gettext("(not shown)") if row.hidden else heading
