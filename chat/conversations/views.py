"""Pages and forms: the conversation list, one conversation, its settings, rename and delete.

Sending and streaming go over the websocket (``consumers.py``); everything else is plain
Django views returning whole pages or, for htmx requests, the template partial that changed.
"""

from __future__ import annotations

import contextlib

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages as flash
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from . import conversations, providers
from .exceptions import ClientError
from .fragments import message_view
from .generation.records import is_orphan, settle_orphans, version_groups, versions_of
from .generation.service import get_service, peek_service
from .generation.turns import request_options
from .models import Conversation, Message, answer_outcome
from .owners import Owner
from .settings_form import apply_settings


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _owned(request: HttpRequest, conversation_id: int) -> Conversation:
    conversation = Owner.from_request(request).conversations().filter(pk=conversation_id).first()
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def conversation_choice(conversation: Conversation) -> str:
    """The picker value of a conversation's provider and model."""
    return providers.choice_value(conversation.provider_id, conversation.model)


def _page_context(
    request: HttpRequest, conversation: Conversation | None, live: set[int] | None = None
) -> dict[str, object]:
    """The chat page; ``live`` are the answers this process is generating (read if not given).

    An answer another worker is generating counts as streaming too (its heartbeat is fresh):
    the page offers Stop for it, which reaches that worker.
    """
    owner = Owner.from_request(request)
    views = []
    streaming_answer_id = None
    if conversation is not None:
        rows = list(conversation.messages.filter(hidden=False))  # shown versions only
        groups = version_groups(conversation.pk)
        if live is None:
            live = _live_ids(conversation.pk)
        for index, row in enumerate(rows):
            latest, versions = index == len(rows) - 1, versions_of(row, groups)
            views.append(message_view(row, is_latest=latest, version_ids=versions))
            if row.status == Message.Status.STREAMING and not is_orphan(row, live):
                streaming_answer_id = row.pk
    return {
        "conversations": owner.chats().only("id", "title", "updated_at")[:200],
        "conversation": conversation,
        "chat_messages": views,
        "model_groups": providers.picker(conversation_choice(conversation) if conversation else ""),
        "simulator": settings.LLM_SIMULATOR,
        "streaming_answer_id": streaming_answer_id,
        "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "undo": conversations.take_undo(request),
    }


def _live_ids(conversation_id: int) -> set[int]:
    """Answers this process is generating in the conversation (read on the server's loop)."""

    async def snapshots() -> set[int]:
        service = peek_service()
        return service.live_ids(conversation_id) if service else set()

    return async_to_sync(snapshots)()


def _stop_live(conversation_id: int) -> None:
    """Stop this conversation's answers in flight, on this worker or another (their upstream
    requests close)."""
    streaming = list(
        Message.objects.filter(
            conversation_id=conversation_id, status=Message.Status.STREAMING
        ).values_list("pk", flat=True)
    )
    if not streaming:
        return

    async def stop() -> None:
        service = get_service()
        for answer_id in streaming:
            # Other workers unreachable: the deleted answer is saved nowhere anyway.
            with contextlib.suppress(ClientError):
                await service.stop(conversation_id, answer_id)

    async_to_sync(stop)()


@require_GET
def index(request: HtmxHttpRequest) -> HttpResponse:
    """The newest conversation, or an empty page that invites the first one."""
    conversations.purge_deleted(owner=Owner.from_request(request))
    latest = Owner.from_request(request).chats().first()
    if latest is not None:
        return redirect("chat:conversation", conversation_id=latest.pk)
    return render(request, "chat/page.html", _page_context(request, None))


@require_POST
def new_conversation(request: HtmxHttpRequest) -> HttpResponse:
    owner = Owner.from_request(request)
    # An untouched new chat is reused rather than piling up empty ones in the sidebar.
    conversation = owner.chats().filter(messages__isnull=True).first()
    if conversation is None:
        conversation = Conversation(**_like_latest(owner), **owner.new_conversation_fields())
        conversation.save()
    url = reverse("chat:conversation", kwargs={"conversation_id": conversation.pk})
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _like_latest(owner: Owner) -> dict[str, object]:
    """A new chat starts with the provider, model and options the user chose last."""
    latest = owner.chats().select_related("provider").first()
    if latest is None or (latest.provider is not None and not latest.provider.enabled):
        return {"model": settings.LLM_MODELS[0]}
    names = ("provider", "model", "stream", "temperature", "top_p", "max_tokens", "seed",
             "enable_thinking")  # fmt: skip
    return {name: getattr(latest, name) for name in names}


@require_GET
def conversation_page(request: HtmxHttpRequest, conversation_id: int) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    live = _live_ids(conversation.pk)
    settle_orphans(conversation, live)
    return render(request, "chat/page.html", _page_context(request, conversation, live))


@require_POST
def update_settings(request: HtmxHttpRequest, conversation_id: int) -> HttpResponse:
    """Model, system prompt, Stream and request options; applied from the next answer on.

    Each field is checked on its own: a bad one is reported and the others are still saved.
    """
    conversation = _owned(request, conversation_id)
    errors = apply_settings(conversation, request.POST)
    context = {**_page_context(request, conversation), "settings_errors": errors}
    if request.htmx:
        return render(request, "chat/page.html#settings", context)
    return redirect("chat:conversation", conversation_id=conversation.pk)


@require_POST
def rename_conversation(request: HtmxHttpRequest, conversation_id: int) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    title = " ".join(request.POST.get("title", "").split())
    if not title:
        flash.error(request, gettext("A title cannot be empty."))
    elif len(title) > 200:
        flash.error(request, gettext("A title can be at most 200 characters."))
    else:
        conversation.title = title
        conversation.save(update_fields=["title"])
    return redirect("chat:conversation", conversation_id=conversation.pk)


@require_POST
def delete_conversation(request: HtmxHttpRequest, conversation_id: int) -> HttpResponse:
    """Deleted, and restorable (Undo) for ``conversations.PURGE_AFTER``; its answers stop."""
    conversation = _owned(request, conversation_id)
    _stop_live(conversation.pk)
    conversations.soft_delete(conversation)
    conversations.remember_undo(request, conversation)
    url = reverse("chat:index")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_GET
def export_json(request: HttpRequest, conversation_id: int) -> JsonResponse:
    """The whole conversation as saved, raw text included (what was really stored)."""
    conversation = _owned(request, conversation_id)
    fields = (
        "id", "role", "content", "reasoning", "status", "model", "provider_name", "streamed",
        "finish_reason", "error_kind", "error_message", "request_id", "ttft_ms", "thinking_ms",
        "answer_ms", "total_ms", "prompt_tokens", "completion_tokens", "total_tokens",
        "created_at", "completed_at", "version_of", "hidden",
    )  # fmt: skip
    return JsonResponse(
        {
            "id": conversation.pk,
            "title": conversation.display_title,
            "model": conversation.model,
            "provider": conversation.provider.name if conversation.provider else None,
            "options": request_options(conversation),
            "system_prompt": conversation.system_prompt,
            "stream": conversation.stream,
            "messages": [
                {
                    **row,
                    "outcome": answer_outcome(
                        row["status"], row["error_kind"], bool(row["content"] or row["reasoning"])
                    ),
                }
                if row["role"] == Message.Role.ASSISTANT
                else row
                for row in conversation.messages.values(*fields)
            ],
        },
        json_dumps_params={"ensure_ascii": False},
    )
