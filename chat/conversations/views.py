"""Pages and forms: the conversation list, one conversation, its settings, rename and delete.

Sending and streaming go over the websocket (``consumer.py``); everything else is plain
Django views returning whole pages or, for htmx requests, the template partial that changed.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages as flash
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from chat import images, providers
from chat.accounts import access
from chat.conversations import landing, work
from chat.conversations.page import HtmxHttpRequest, owned_conversation, page_context
from chat.conversations.settings_form import apply_settings
from chat.exceptions import ClientError
from chat.generation import registry
from chat.generation.control import ask_workers_to_stop
from chat.generation.records import settle_orphans
from chat.generation.turns import request_options
from chat.models import Conversation, Message, Provider, answer_outcome
from chat.owners import Owner
from chat.rendering.fragments import ImageView


@require_GET
def index(request: HtmxHttpRequest) -> HttpResponse:
    """The newest conversation, or the landing: a message box that starts the first one."""
    work.purge_deleted(owner=Owner.from_request(request))
    latest = Owner.from_request(request).chats().first()
    if latest is not None:
        return redirect("chat:conversation", conversation_id=latest.pk)
    return render(request, "chat/page.html", page_context(request, None))


@require_POST
def new_conversation(request: HtmxHttpRequest) -> HttpResponse:
    """A new chat; from the landing's message box (``message`` posted), with that message."""
    owner = Owner.from_request(request)
    if "message" in request.POST:
        return _start_from_landing(request, owner)
    conversation = _untouched_or_new(owner)
    url = reverse("chat:conversation", kwargs={"conversation_id": conversation.pk})
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _untouched_or_new(owner: Owner, choice: tuple[int | None, str] | None = None) -> Conversation:
    """The chat to start in; ``choice`` (provider id, model) overrides the one used last."""
    # An untouched new chat is reused rather than piling up empty ones in the sidebar.
    conversation = owner.chats().filter(messages__isnull=True).first()
    if conversation is None:
        fields = _like_latest(owner)
        if choice is None and owner.user_id is not None:
            choice = _allowed_instead(owner.user_id, fields)
        if choice is not None:
            fields.pop("provider", None)
            fields.update(provider_id=choice[0], model=choice[1])
        conversation = Conversation(**fields, **owner.new_conversation_fields())
        conversation.save()
    elif choice is not None:
        conversation.provider_id, conversation.model = choice
        conversation.save(update_fields=["provider", "model"])
    return conversation


def _allowed_instead(user_id: int, fields: dict[str, object]) -> tuple[int | None, str] | None:
    """A new chat's model when the one used last is not the user's to use (their groups'
    rules changed): the first they may use. None: keep it (also when they may use none)."""
    allowed = access.of_user(user_id)
    provider = fields.get("provider")
    provider_id = provider.pk if isinstance(provider, Provider) else None
    if allowed.allows(provider_id, str(fields["model"])):
        return None
    return access.first_allowed(allowed, providers.all_upstreams())


def _start_from_landing(request: HtmxHttpRequest, owner: Owner) -> HttpResponse:
    """Create the chat and open it; its page sends the message once its socket opens.

    A refused message (empty, too long), image or model creates nothing: the landing comes back
    with the alert, the text as typed and the images still attachable.
    """
    errors: list[str] = []
    try:
        text = landing.message_text(request.POST["message"])
    except ClientError as exc:
        errors.append(exc.message)
    posted_images = request.POST.getlist("images")
    try:
        image_ids = landing.image_ids(owner, posted_images)
    except ClientError as exc:
        errors.append(exc.message)
    choice = None
    if "model" in request.POST:
        try:
            upstream, model = providers.parse_choice(request.POST["model"])
            access.check_model_allowed(access.for_request(request), upstream, model)
        except ClientError as exc:
            errors.append(exc.message)
        else:
            choice = (upstream.provider_id, model)
    if errors:
        context = {
            **page_context(request, None),
            "model_groups": providers.picker(
                request.POST.get("model", ""), access.for_request(request).allows
            ),
            "landing_text": request.POST["message"],
            "landing_errors": errors,
            "landing_images": landing.chips_kept(owner, posted_images),
        }
        return render(request, "chat/page.html", context)
    conversation = _untouched_or_new(owner, choice)
    landing.keep(request, conversation.pk, text, image_ids)
    return redirect("chat:conversation", conversation_id=conversation.pk)


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
    conversation = owned_conversation(request, conversation_id)
    live = registry.running_in(conversation.pk)
    settle_orphans(conversation, live)
    pending = landing.take(request, conversation.pk)
    context = {
        **page_context(request, conversation, live),
        "pending_message": pending.text if pending else "",
        # Its images wait as chips in the composer, and go with the message when it is sent.
        "pending_images": (
            images.unsent_views(Owner.from_request(request), pending.images) if pending else ()
        ),
    }
    response = render(request, "chat/page.html", context)
    if pending:
        # Back must not show this page from the cache: its script would send the message again.
        add_never_cache_headers(response)
    return response


@require_POST
def update_settings(request: HtmxHttpRequest, conversation_id: int) -> HttpResponse:
    """Model, system prompt, Stream and request options; applied from the next answer on.

    Each field is checked on its own: a bad one is reported and the others are still saved.
    """
    conversation = owned_conversation(request, conversation_id)
    errors = apply_settings(conversation, request.POST)
    context = {**page_context(request, conversation), "settings_errors": errors}
    if request.htmx:
        return render(request, "chat/page.html#settings", context)
    return redirect("chat:conversation", conversation_id=conversation.pk)


@require_POST
def rename_conversation(request: HtmxHttpRequest, conversation_id: int) -> HttpResponse:
    conversation = owned_conversation(request, conversation_id)
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
    """Deleted, and restorable (Undo) for ``work.PURGE_AFTER``; its answers stop."""
    conversation = owned_conversation(request, conversation_id)
    ask_workers_to_stop(conversation.pk, work.streaming_answers(conversation))
    work.soft_delete(conversation)
    work.remember_undo(request, conversation)
    url = reverse("chat:index")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_GET
def export_json(request: HttpRequest, conversation_id: int) -> JsonResponse:
    """The whole conversation as saved, raw text included (what was really stored)."""
    conversation = owned_conversation(request, conversation_id)
    rows = list(conversation.messages.values(*_EXPORT_FIELDS))
    pictures = images.views_for(row["id"] for row in rows if row["role"] == Message.Role.USER)
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
                else _with_images(row, pictures.get(row["id"], ()))
                for row in rows
            ],
        },
        json_dumps_params={"ensure_ascii": False},
    )


def _with_images(row: dict[str, Any], attached: tuple[ImageView, ...]) -> dict[str, Any]:
    """A question, with its images if it has any (a text-only one is exported as before)."""
    return {**row, "images": [_image_export(image) for image in attached]} if attached else row


def _image_export(image: ImageView) -> dict[str, object]:
    """An attached image in the JSON export: where its owner fetches it, and what it is."""
    return {
        "id": image.id,
        "url": image.url,
        "filename": image.filename,
        "width": image.width,
        "height": image.height,
    }


_EXPORT_FIELDS = (
        "id", "role", "content", "reasoning", "status", "model", "provider_name", "streamed",
        "finish_reason", "error_kind", "error_message", "request_id", "ttft_ms", "thinking_ms",
        "answer_ms", "total_ms", "prompt_tokens", "completion_tokens", "total_tokens",
        "tokens_estimated", "created_at", "completed_at", "version_of", "hidden",
)  # fmt: skip
