"""Share links as data: create one for an owned run or conversation, find a live one by its
token, count a view, list and revoke the owner's.

A link is found only while it is live (not revoked, not expired, its conversation not
deleted): the public page then answers the same 404 for a dead token as for one never made.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy, pgettext_lazy

from chat.models import ComparisonRun, Conversation, ShareLink
from chat.owners import Owner

EXPIRIES: dict[str, timedelta | None] = {
    "never": None,
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
"""The owner's choices, as the form posts them; anything else is refused."""

EXPIRY_LABELS = {
    "never": pgettext_lazy("a share link's expiry", "Never"),
    "1d": gettext_lazy("In 1 day"),
    "7d": gettext_lazy("In 7 days"),
    "30d": gettext_lazy("In 30 days"),
}


def new_token() -> str:
    """32 URL-safe characters (192 random bits): not guessable, not enumerable."""
    return secrets.token_urlsafe(24)


def owned_links(owner: Owner) -> QuerySet[ShareLink]:
    """Every link the owner made, revoked ones too."""
    if owner.user_id is not None:
        return ShareLink.objects.filter(user_id=owner.user_id)
    return ShareLink.objects.filter(user__isnull=True, session_key=owner.session_key)


def create(
    owner: Owner,
    *,
    run: ComparisonRun | None = None,
    conversation: Conversation | None = None,
    expiry: str = "never",
    show_providers: bool = False,
) -> ShareLink:
    """A new link to the owner's ``run`` or ``conversation`` (the caller checked it is theirs);
    ``expiry`` is a key of ``EXPIRIES`` (KeyError otherwise)."""
    lifetime = EXPIRIES[expiry]
    now = timezone.now()
    return ShareLink.objects.create(
        token=new_token(),
        run=run,
        conversation=conversation,
        created_at=now,
        expires_at=now + lifetime if lifetime is not None else None,
        show_providers=show_providers,
        **owner.new_conversation_fields(),
    )


def live_links() -> QuerySet[ShareLink]:
    """Links that still open: not revoked, not expired, not to a deleted conversation."""
    now = timezone.now()
    return ShareLink.objects.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now),
        Q(conversation__isnull=True) | Q(conversation__deleted_at__isnull=True),
        revoked_at__isnull=True,
    )


def find_live(token: str) -> ShareLink | None:
    """The live link with this token, or None (unknown, revoked and expired look the same)."""
    if not token or len(token) > 64:
        return None
    return live_links().select_related("run", "conversation").filter(token=token).first()


def count_view(link: ShareLink) -> None:
    """One more view, counted in the database (two visitors at once both count)."""
    ShareLink.objects.filter(pk=link.pk).update(views=F("views") + 1)


def links_of(
    owner: Owner, *, run: ComparisonRun | None = None, conversation: Conversation | None = None
) -> list[ShareLink]:
    """The owner's links to one thing that are not revoked (expired ones stay listed)."""
    links = owned_links(owner).filter(revoked_at__isnull=True)
    if run is not None:
        return list(links.filter(run=run))
    return list(links.filter(conversation=conversation))


def revoke(owner: Owner, link_id: int) -> ShareLink | None:
    """Revoke one of the owner's links (at once: its next view is a 404); None if it is not
    theirs. Revoking twice keeps the first time."""
    link = owned_links(owner).filter(pk=link_id).first()
    if link is None:
        return None
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])
    return link


def is_expired(link: ShareLink) -> bool:
    return link.expires_at is not None and link.expires_at <= timezone.now()
