"""The public page of a share link, and the owner's small actions on links (list, create,
revoke), which answer htmx with the share panel and plain forms with a redirect."""

from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET, require_POST

from chat import images
from chat.compare import runs
from chat.conversations.page import HtmxHttpRequest, owned_conversation
from chat.models import ComparisonRun, Conversation, ShareLink
from chat.owners import Owner
from chat.sharing import links, shown

# --- The public page ---------------------------------------------------------------------------


@login_not_required
@require_GET
def shared(request: HttpRequest, token: str) -> HttpResponse:
    """``/s/<token>/``: the run or conversation, read-only, for anyone holding a live link;
    each visit counts. Unknown, revoked and expired tokens get the same 404."""
    link = links.find_live(token)
    if link is None:
        raise Http404("No such link.")
    links.count_view(link)
    if link.run is not None:
        response = render(request, "sharing/run.html", shown.run_page(link, link.run))
    elif link.conversation is not None:
        context = shown.conversation_page(link, link.conversation)
        response = render(request, "sharing/conversation.html", context)
    else:  # the database's constraint makes this impossible
        raise Http404("No such link.")
    # Not indexed, not kept by any cache, and the token never sent on as a Referer.
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    patch_cache_control(response, private=True, no_store=True)
    return response


@login_not_required
@require_GET
def shared_image(request: HttpRequest, token: str, image_id: uuid.UUID) -> HttpResponse:
    """``/s/<token>/images/<uuid>/``: an image of a question the live link shows, as its owner's
    view serves it; a dead link, or any other image, is the same 404. Not kept by any cache,
    so revoking the link takes the image away at once."""
    link = links.find_live(token)
    found = shown.shared_image(link, image_id) if link is not None else None
    if found is None:
        raise Http404("No such image.")
    response = images.response(found, cache_control="private, no-store")
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    return response


# --- The owner's actions -----------------------------------------------------------------------


def _owned_run(request: HttpRequest, run_id: int) -> ComparisonRun:
    run = runs.get_run(Owner.from_request(request), run_id)
    if run is None:
        raise Http404("No such comparison.")
    return run


def _panel(
    request: HtmxHttpRequest,
    *,
    run: ComparisonRun | None = None,
    conversation: Conversation | None = None,
    created: ShareLink | None = None,
) -> HttpResponse:
    """The share panel of one thing: its form and its links (a page of its own without htmx)."""
    owner = Owner.from_request(request)
    if run is not None:
        create_url = reverse("sharing:create_run_link", args=[run.pk])
        back_url = reverse("chat:compare_run", args=[run.pk])
        key = f"run-{run.pk}"
    elif conversation is not None:
        create_url = reverse("sharing:create_conversation_link", args=[conversation.pk])
        back_url = reverse("chat:conversation", args=[conversation.pk])
        key = f"conversation-{conversation.pk}"
    else:
        raise Http404("Nothing to share.")
    listed = [
        {
            "link": link,
            "url": request.build_absolute_uri(reverse("sharing:shared", args=[link.token])),
            "expired": links.is_expired(link),
            "new": created is not None and link.pk == created.pk,
        }
        for link in links.links_of(owner, run=run, conversation=conversation)
    ]
    context = {
        "key": key,
        "create_url": create_url,
        "back_url": back_url,
        "links": listed,
        "expiries": list(links.EXPIRY_LABELS.items()),
        "run": run,
        "conversation": conversation,
    }
    template = "sharing/_panel.html" if request.htmx else "sharing/manage.html"
    return render(request, template, context)


def _after_post(
    request: HtmxHttpRequest,
    *,
    run: ComparisonRun | None = None,
    conversation: Conversation | None = None,
    created: ShareLink | None = None,
) -> HttpResponse:
    if request.htmx:
        return _panel(request, run=run, conversation=conversation, created=created)
    if run is not None:
        return redirect("sharing:run_links", run_id=run.pk)
    assert conversation is not None
    return redirect("sharing:conversation_links", conversation_id=conversation.pk)


def _create(
    request: HtmxHttpRequest,
    *,
    run: ComparisonRun | None = None,
    conversation: Conversation | None = None,
) -> HttpResponse:
    expiry = request.POST.get("expires", "never")
    if expiry not in links.EXPIRIES:
        return HttpResponse(status=400)
    link = links.create(
        Owner.from_request(request),
        run=run,
        conversation=conversation,
        expiry=expiry,
        show_providers=request.POST.get("show_providers") == "on",
    )
    return _after_post(request, run=run, conversation=conversation, created=link)


@require_GET
def run_links(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    """The share panel of the owner's run (the Share button loads it)."""
    return _panel(request, run=_owned_run(request, run_id))


@require_POST
def create_run_link(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    return _create(request, run=_owned_run(request, run_id))


@require_GET
def conversation_links(request: HtmxHttpRequest, conversation_id: int) -> HttpResponse:
    """The share panel of the owner's conversation (the Share button loads it)."""
    return _panel(request, conversation=owned_conversation(request, conversation_id))


@require_POST
def create_conversation_link(request: HtmxHttpRequest, conversation_id: int) -> HttpResponse:
    return _create(request, conversation=owned_conversation(request, conversation_id))


@require_POST
def revoke_link(request: HtmxHttpRequest, link_id: int) -> HttpResponse:
    """Revoke one of the owner's links; anyone else's is a 404, as if it did not exist."""
    owner = Owner.from_request(request)
    link = links.revoke(owner, link_id)
    if link is None:
        raise Http404("No such link.")
    # The thing must still be the owner's, as when the link was made.
    if link.run_id is not None:
        return _after_post(request, run=_owned_run(request, link.run_id))
    assert link.conversation_id is not None
    return _after_post(request, conversation=owned_conversation(request, link.conversation_id))
