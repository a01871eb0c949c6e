"""Images for a message: the upload (before the message is sent), its thumbnail chip, the
Remove button, and the image itself, served to its owner only (``/images/<uuid>/``)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from chat import images
from chat.exceptions import ClientError
from chat.owners import Owner
from chat.rendering.fragments import ImageView


@require_POST
def upload_image(request: HttpRequest) -> HttpResponse:
    """``POST /images/upload/`` with one ``image`` file (and ``waiting``, the chips already in
    the composer): its chip for the composer, or the alert saying why it was refused."""
    upload = request.FILES.get("image")
    try:
        if upload is None:
            raise ClientError(gettext("That file is not an image.") + " " + images.accepted())
        waiting = request.POST.get("waiting", "0")
        limit = settings.CHAT_IMAGE_MAX_COUNT
        if waiting.isdigit() and int(waiting) >= limit:
            raise ClientError(
                gettext("At most %(count)s images can go with one message.") % {"count": limit}
            )
        images.check_size(upload.size or 0)
        attachment = images.store(
            Owner.from_request(request), upload.read(), upload.name or "", upload.content_type or ""
        )
    except ClientError as error:
        return render(request, "chat/page.html#alert", {"alert": error.message}, status=400)
    view = ImageView(str(attachment.pk), attachment.width, attachment.height, attachment.filename)
    return render(request, "chat/_image_chip.html", {"image": view})


@require_POST
def remove_image(request: HttpRequest, image_id: uuid.UUID) -> HttpResponse:
    """The chip's Remove button: an unsent upload is deleted (a sent one stays)."""
    images.discard(Owner.from_request(request), image_id)
    return HttpResponse(status=204)


@require_GET
def image(request: HttpRequest, image_id: uuid.UUID) -> HttpResponse:
    """``/images/<uuid>/``: the image, to its owner; anyone else gets the same 404 as for an
    image that does not exist."""
    found = images.viewable(Owner.from_request(request), image_id)
    if found is None:
        raise Http404("No such image.")
    return images.response(found, cache_control="private, max-age=86400")
