"""What a shared page shows: the run or the conversation as saved, read-only, built from the
same views as the owner's pages, with every control and (unless the owner allowed them) the
providers' names and hosts taken out here, before any template sees them."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse

from chat import images
from chat.compare import runs
from chat.compare.rendering import run_context
from chat.compare.replay import replay_context
from chat.models import Attachment, ComparisonRun, Conversation, Message, ShareLink
from chat.rendering.articles import articles
from chat.rendering.fragments import ImageView, MessageView, message_view


@dataclasses.dataclass(frozen=True, slots=True)
class SharedImage(ImageView):
    """A question's image on a shared page: served through the link (``/s/<token>/images/…``),
    since ``/images/<uuid>/`` is its owner's only."""

    token: str = ""

    @property
    def url(self) -> str:
        return reverse("sharing:image", args=[self.token, self.id])


def read_only(view: MessageView, *, show_providers: bool) -> MessageView:
    """The message without its controls: not the latest (no Retry, Regenerate or version
    buttons), no conversation (no Edit form, no version URLs), and without the provider's
    name unless the owner allowed it."""
    return dataclasses.replace(
        view,
        is_latest=False,
        conversation_id=None,
        version_ids=(),
        provider_name=view.provider_name if show_providers else "",
    )


def run_page(link: ShareLink, run: ComparisonRun) -> dict[str, Any]:
    """The run's panes, figures, verdict and chart, as its own page draws them."""
    context = run_context(run)
    two_setups = any(pane.get("setup") for pane in context["panes"])
    setups = runs.pane_setups(run) if two_setups and not link.show_providers else {}
    for pane in context["panes"]:
        pane["answers"] = [
            read_only(view, show_providers=link.show_providers) for view in pane["answers"]
        ]
        if pane.get("setup") and pane["mode"] in setups:  # two setups: each pane's line
            parts = setups[pane["mode"]].parts()
            pane["setup"] = " · ".join(v for k, v in parts.items() if k != "provider")
    context["measured"] = run.upstream if link.show_providers else ""
    context["shared_at"] = run.created_at
    context.update(_replay(link, run))
    return context


def _replay(link: ShareLink, run: ComparisonRun) -> dict[str, Any]:
    """The replay's data (``compare/_replay.html``), its finished articles drawn read-only
    like the panes: the owner's page draws them with the provider's name."""
    replayed = replay_context(run)
    answers: dict[int, Message] = {
        result.answer.pk: result.answer for result in run.results.all() if result.answer
    }
    for trial in replayed["replay"]["trials"]:
        for pane in trial["panes"].values():
            answer = answers.get(pane["answer"])
            if answer is None:
                continue
            view = read_only(message_view(answer), show_providers=link.show_providers)
            pane["article"] = str(articles.render(view))
    return replayed


def shown_messages(conversation: Conversation) -> QuerySet[Message]:
    """What a link to the conversation shows: the versions its owner chose (not the turns an
    edit replaced, nor other versions). Its images are served by the link from these alone."""
    return conversation.messages.filter(hidden=False)


def shared_image(link: ShareLink, image_id: uuid.UUID) -> Attachment | None:
    """The image of a question the link shows; None for any other (another conversation's,
    an edited-away question's, a run link's)."""
    if link.conversation is None:
        return None
    shown = shown_messages(link.conversation).filter(role=Message.Role.USER)
    return Attachment.objects.filter(pk=image_id, message__in=shown).first()


def conversation_page(link: ShareLink, conversation: Conversation) -> dict[str, Any]:
    """The conversation's shown messages (the versions its owner chose), oldest first, with
    their questions' images served through the link."""
    rows = list(shown_messages(conversation).annotate(has_images=images.flag()))
    pictures = {
        message_id: tuple(
            SharedImage(**dataclasses.asdict(view), token=link.token) for view in found
        )
        for message_id, found in images.of_questions(rows).items()
    }
    return {
        "conversation": conversation,
        "chat_messages": [
            read_only(
                message_view(row, images=pictures.get(row.pk, ())),
                show_providers=link.show_providers,
            )
            for row in rows
        ],
        "shared_at": conversation.created_at,
        "model": conversation.model,
    }
