"""Images attached to a message: checked, cleaned and kept with their owner until sent.

An upload is decoded in full by Pillow and written out again in its own format (PNG, JPEG,
WebP; a GIF becomes a PNG of its first frame, which is all a vision model looks at), so what
is stored and sent upstream is pixels we made, never the uploaded bytes: no EXIF, GPS, comments
or colour profile survive, and a file that only claims to be an image (SVG, HTML, a truncated
PNG) is refused. Pixels are counted before decoding, so a decompression bomb is refused
without being expanded.

Uploaded images wait unsent (``message`` empty) until a ``send`` names them; ``claim`` hands
them to the new message in the same transaction.
"""

from __future__ import annotations

import base64
import io
import os
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpResponse
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import get_valid_filename
from django.utils.translation import gettext
from PIL import Image, ImageOps, UnidentifiedImageError

from chat.exceptions import ClientError
from chat.models import Attachment, Message
from chat.owners import Owner
from chat.rendering import fragments

# Pillow's format name -> what we store it as (format, content type, file extension).
FORMATS: dict[str, tuple[str, str, str]] = {
    "PNG": ("PNG", "image/png", "png"),
    "JPEG": ("JPEG", "image/jpeg", "jpg"),
    "WEBP": ("WEBP", "image/webp", "webp"),
    "GIF": ("PNG", "image/png", "png"),  # its first frame
}
ACCEPT = "image/png,image/jpeg,image/webp,image/gif"
"""The file input's ``accept``: what the browser offers to pick (the server checks anyway)."""
# Uploads waiting to be sent, per owner: enough for a few messages being written at once.
MAX_WAITING = 20
ORPHAN_AFTER = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Cleaned:
    """An image as it will be stored: re-encoded bytes and what the page shows of them."""

    data: bytes
    content_type: str
    width: int
    height: int
    filename: str


def accepted() -> str:
    return gettext("Attach a PNG, JPEG, WebP or GIF image.")


def check_size(size: int) -> None:
    """Refuse a file over ``CHAT_IMAGE_MAX_BYTES`` (before reading it, when its size is known)."""
    limit = settings.CHAT_IMAGE_MAX_BYTES
    if size > limit:
        raise ClientError(
            gettext("That file is too big (%(size)s; at most %(limit)s).")
            % {"size": filesizeformat(size), "limit": filesizeformat(limit)}
        )


def _looks_like_svg(data: bytes, name: str, content_type: str) -> bool:
    head = data[:1024].lstrip().lower()
    return (
        name.lower().endswith((".svg", ".svgz"))
        or "svg" in content_type.lower()
        or (head.startswith(b"<") and b"<svg" in data[:4096].lower())
    )


def clean_image(data: bytes, name: str = "", content_type: str = "") -> Cleaned:
    """The upload re-encoded without metadata, or a ClientError saying why it is refused."""
    check_size(len(data))
    if _looks_like_svg(data, name, content_type):
        raise ClientError(gettext("SVG images are not accepted.") + " " + accepted())
    max_pixels = settings.CHAT_IMAGE_MAX_PIXELS
    too_many_pixels = ClientError(
        gettext("That image has too many pixels (at most %(limit)s megapixels).")
        % {"limit": f"{max_pixels / 1_000_000:g}"}
    )
    with warnings.catch_warnings():
        # We count the pixels ourselves, below, before anything is decoded.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise too_many_pixels from exc
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ClientError(gettext("That file is not an image.") + " " + accepted()) from exc
        with image:
            if image.format not in FORMATS:
                raise ClientError(
                    gettext("That image format (%(format)s) is not accepted.")
                    % {"format": image.format or "?"}
                    + " "
                    + accepted()
                )
            width, height = image.size
            if width * height > max_pixels:
                raise too_many_pixels
            try:
                image.seek(0)  # a GIF's first frame
                image.load()  # decode it all: a truncated file fails here
                return _reencode(image, name)
            except Image.DecompressionBombError as exc:
                raise too_many_pixels from exc
            except (OSError, ValueError, SyntaxError) as exc:
                raise ClientError(gettext("That image is damaged or incomplete.")) from exc


def _reencode(image: Image.Image, name: str) -> Cleaned:
    """New bytes from the decoded pixels: only what the picture looks like is kept."""
    out_format, content_type, extension = FORMATS[image.format or ""]
    # The camera's orientation becomes the pixels' before the EXIF that said it is dropped.
    upright = ImageOps.exif_transpose(image)
    transparent = upright.mode in {"RGBA", "LA", "PA"} or "transparency" in upright.info
    if out_format == "JPEG":
        pixels = upright.convert("L" if upright.mode in {"L", "1"} else "RGB")
        options: dict[str, Any] = {"quality": 90, "optimize": True}
    elif out_format == "WEBP":
        pixels = upright.convert("RGBA" if transparent else "RGB")
        options = {"quality": 90}
    else:
        keep = upright.mode in {"RGB", "RGBA", "L", "LA"}
        pixels = upright if keep else upright.convert("RGBA" if transparent else "RGB")
        options = {"optimize": True}
    # A fresh image holds the pixels alone: nothing of ``info`` (EXIF, ICC, text, XMP) is
    # there for a plugin to copy into the new file.
    bare = Image.new(pixels.mode, pixels.size)
    bare.paste(pixels)
    buffer = io.BytesIO()
    bare.save(buffer, out_format, **options)
    stem = os.path.splitext(os.path.basename(name.replace("\\", "/")))[0][:80]
    filename = f"{get_valid_filename(stem) if stem.strip('. ') else 'image'}.{extension}"
    return Cleaned(buffer.getvalue(), content_type, bare.width, bare.height, filename)


def _owned(owner: Owner) -> QuerySet[Attachment]:
    if owner.user_id is not None:
        return Attachment.objects.filter(user_id=owner.user_id)
    return Attachment.objects.filter(user__isnull=True, session_key=owner.session_key)


def store(owner: Owner, data: bytes, name: str = "", content_type: str = "") -> Attachment:
    """Check and keep one upload for ``owner``, not yet part of any message."""
    since = timezone.now() - ORPHAN_AFTER
    waiting = _owned(owner).filter(message__isnull=True, created_at__gte=since)
    if waiting.count() >= MAX_WAITING:
        raise ClientError(
            gettext("Too many images are waiting to be sent: send or remove some first.")
        )
    cleaned = clean_image(data, name, content_type)
    return Attachment.objects.create(
        user_id=owner.user_id,
        session_key="" if owner.user_id is not None else owner.session_key,
        filename=cleaned.filename,
        content_type=cleaned.content_type,
        width=cleaned.width,
        height=cleaned.height,
        data=cleaned.data,
    )


def viewable(owner: Owner, image_id: uuid.UUID) -> Attachment | None:
    """The owner's image, unsent or in a conversation not deleted; None for anyone else's."""
    found = _owned(owner).filter(pk=image_id)
    found = found.filter(message__isnull=True) | found.filter(
        message__conversation__deleted_at__isnull=True
    )
    return found.first()


def response(found: Attachment, *, cache_control: str) -> HttpResponse:
    """The image's bytes as its own view and a share link's both serve them: shown inline,
    never sniffed as anything but the type we stored."""
    served = HttpResponse(bytes(found.data), content_type=found.content_type)
    served["Content-Disposition"] = content_disposition_header(False, found.filename) or ""
    served["X-Content-Type-Options"] = "nosniff"
    served["Cache-Control"] = cache_control
    return served


def discard(owner: Owner, image_id: uuid.UUID) -> bool:
    """Remove an unsent upload (the chip's Remove button); sent images stay with their message."""
    deleted, _ = _owned(owner).filter(pk=image_id, message__isnull=True).delete()
    return bool(deleted)


def _unavailable() -> str:
    return gettext("That image is no longer available: attach it again.")


def parse_ids(value: Any) -> list[uuid.UUID]:
    """The image ids a ``send`` carries (one string, or a list of them), in order, once each."""
    raw = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    ids: list[uuid.UUID] = []
    for item in raw:
        try:
            image_id = uuid.UUID(str(item))
        except ValueError:
            raise ClientError(_unavailable()) from None
        if image_id not in ids:
            ids.append(image_id)
    limit = settings.CHAT_IMAGE_MAX_COUNT
    if len(ids) > limit:
        raise ClientError(
            gettext("At most %(count)s images can go with one message.") % {"count": limit}
        )
    return ids


def unsent_views(owner: Owner, ids: Sequence[uuid.UUID]) -> tuple[fragments.ImageView, ...]:
    """The owner's uploads among ``ids`` still waiting to be sent, in that order, as their
    chips show them: the landing's first message keeps them until its chat's page sends it."""
    rows = _owned(owner).filter(pk__in=ids, message__isnull=True)
    found = {
        image_id: fragments.ImageView(str(image_id), width, height, filename)
        for image_id, width, height, filename in rows.values_list(
            "id", "width", "height", "filename"
        )
    }
    return tuple(found[image_id] for image_id in ids if image_id in found)


def check_unsent(owner: Owner, ids: Sequence[uuid.UUID]) -> None:
    """Refuse, as ``claim`` would, ids that are not the owner's unsent uploads (checked before
    anything is created for them; ``claim`` checks again when the message is saved)."""
    if len(unsent_views(owner, ids)) != len(ids):
        raise ClientError(_unavailable())


def claim(owner: Owner, ids: Sequence[uuid.UUID], message: Message) -> None:
    """Give the owner's unsent uploads to ``message`` (in the caller's transaction), or refuse
    all of them: an id that is someone else's, already sent or removed is not available."""
    if not ids:
        return
    unsent = _owned(owner).select_for_update().filter(pk__in=ids, message__isnull=True)
    if len(unsent.values_list("pk", flat=True)) != len(ids):
        raise ClientError(_unavailable())
    for position, image_id in enumerate(ids):
        Attachment.objects.filter(pk=image_id).update(message=message, position=position)


def copy_to(source: Message, message: Message) -> None:
    """An edited question keeps the images of the one it replaces."""
    copies = [
        Attachment(
            user_id=a.user_id,
            session_key=a.session_key,
            message=message,
            position=a.position,
            filename=a.filename,
            content_type=a.content_type,
            width=a.width,
            height=a.height,
            data=a.data,
        )
        for a in source.attachments.all()
    ]
    Attachment.objects.bulk_create(copies)


def data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def flag() -> Exists:
    """Whether a message has images, read with the message (annotated as ``has_images``): a
    text-only conversation costs no query more for the images it does not have."""
    return Exists(Attachment.objects.filter(message_id=OuterRef("pk")))


def question_ids(rows: Iterable[Message]) -> list[int]:
    """The questions among ``rows`` that may have images (all, unless flagged by ``flag``)."""
    return [
        row.pk for row in rows if row.role == Message.Role.USER and getattr(row, "has_images", True)
    ]


def of_questions(rows: Iterable[Message]) -> dict[int, tuple[fragments.ImageView, ...]]:
    """The thumbnails of the questions among ``rows``, by message id, in one query (none for
    rows flagged without images)."""
    return views_for(question_ids(rows))


def upstream_images(message_ids: Iterable[int]) -> dict[int, tuple[str, ...]]:
    """Each message's images as data URLs, in order, for the request sent upstream."""
    images: dict[int, list[str]] = {}
    ids = list(message_ids)
    if not ids:
        return {}
    rows = Attachment.objects.filter(message_id__in=ids).order_by("position")
    for message_id, content_type, data in rows.values_list("message_id", "content_type", "data"):
        images.setdefault(message_id, []).append(data_url(content_type, bytes(data)))
    return {message_id: tuple(urls) for message_id, urls in images.items()}


def prune_orphans(now: Any = None) -> int:
    """Delete uploads never sent and older than a day; returns how many went."""
    cutoff = (now or timezone.now()) - ORPHAN_AFTER
    deleted, _ = Attachment.objects.filter(message__isnull=True, created_at__lt=cutoff).delete()
    return deleted


def views_for(message_ids: Iterable[int]) -> dict[int, tuple[fragments.ImageView, ...]]:
    """Each message's images as its thumbnails need them (without their bytes), in one query."""
    views: dict[int, list[fragments.ImageView]] = {}
    ids = list(message_ids)
    if not ids:
        return {}
    rows = Attachment.objects.filter(message_id__in=ids).order_by("position")
    for row in rows.values_list("message_id", "id", "width", "height", "filename"):
        message_id, image_id, width, height, filename = row
        views.setdefault(message_id, []).append(
            fragments.ImageView(str(image_id), width, height, filename)
        )
    return {message_id: tuple(found) for message_id, found in views.items()}
