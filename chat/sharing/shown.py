"""What a shared page shows: the run or the conversation as saved, read-only, built from the
same views as the owner's pages, with every control and (unless the owner allowed them) the
providers' names and hosts taken out here, before any template sees them."""

from __future__ import annotations

import dataclasses
from typing import Any

from chat.compare import runs
from chat.compare.rendering import run_context
from chat.compare.replay import replay_context
from chat.models import ComparisonRun, Conversation, Message, ShareLink
from chat.rendering.articles import articles
from chat.rendering.fragments import MessageView, message_view


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


def conversation_page(link: ShareLink, conversation: Conversation) -> dict[str, Any]:
    """The conversation's shown messages (the versions its owner chose), oldest first."""
    rows = conversation.messages.filter(hidden=False)
    return {
        "conversation": conversation,
        "chat_messages": [
            read_only(message_view(row), show_providers=link.show_providers) for row in rows
        ],
        "shared_at": conversation.created_at,
        "model": conversation.model,
    }
