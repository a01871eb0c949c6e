"""Views for work on whole conversations: search, the Markdown export, picking an answer's
version, and Undo after a delete (the delete itself is in ``views``)."""

from __future__ import annotations

from django.contrib import messages as flash
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from chat.conversations import work
from chat.conversations.page import HtmxHttpRequest, owned_conversation, page_context
from chat.exceptions import ClientError
from chat.owners import Owner
from chat.rendering.fragments import alert_frame, render_message


@require_GET
def search(request: HtmxHttpRequest) -> HttpResponse:
    """``/search/?q=…``: the results list for htmx, else the page with it in the sidebar."""
    owner = Owner.from_request(request)
    raw = request.GET.get("q", "")
    error = ""
    try:
        query = work.clean_query(raw)
        hits = work.search(owner, query)
    except ClientError as exc:
        query, hits, error = " ".join(raw.split()), [], exc.message
    context = {"query": query, "hits": hits, "error": error}
    if request.htmx:
        return render(request, "chat/_search_results.html", context)
    page = page_context(request, None)
    page.update(search_query=query, search_hits=hits, search_error=error)
    return render(request, "chat/page.html", page)


@require_GET
def export_markdown(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """The conversation as a Markdown file (``/c/<id>/export.md``)."""
    conversation = owned_conversation(request, conversation_id)
    response = HttpResponse(
        work.export_markdown(conversation), content_type="text/markdown; charset=utf-8"
    )
    name = work.export_filename(conversation, "md")
    response["Content-Disposition"] = content_disposition_header(True, name)
    return response


@require_POST
def restore_conversation(request: HtmxHttpRequest, conversation_id: int) -> HttpResponse:
    """Undo a delete: the conversation is back where it was."""
    conversation = work.restore(Owner.from_request(request), conversation_id)
    if conversation is None:
        raise Http404("No such conversation.")
    url = reverse("chat:conversation", kwargs={"conversation_id": conversation.pk})
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_POST
def choose_version(request: HtmxHttpRequest, conversation_id: int, answer_id: int) -> HttpResponse:
    """Show another version of the latest answer (‹ 1 / 3 ›); later questions send it."""
    conversation = owned_conversation(request, conversation_id)
    try:
        view = work.show_version(conversation, answer_id)
    except ClientError as error:
        if request.htmx:  # the article stays; the alert says why
            return HttpResponse(alert_frame(error.message), headers={"HX-Reswap": "none"})
        flash.error(request, error.message)
        return redirect("chat:conversation", conversation_id=conversation.pk)
    if view is None:
        raise Http404("No such answer.")
    if request.htmx:
        return HttpResponse(render_message(view))
    return redirect("chat:conversation", conversation_id=conversation.pk)
