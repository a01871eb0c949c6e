"""A shared conversation shows its questions' images: anyone holding a live link sees the
thumbnails and opens them through the link (``/s/<token>/images/<uuid>/``), never through
the owner's ``/images/<uuid>/``. The link serves only the images of the questions it shows;
revoked, expired and unknown links, other conversations' images and edited-away questions'
images are all the same 404.
"""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from PIL import Image
from pytest_django.fixtures import Settings

from chat import images
from chat.compare.runs import create_run
from chat.models import Attachment, Conversation, Message, ShareLink
from chat.owners import Owner
from chat.sharing import links
from tests.support.images import CHIP_ID, picture
from tests.support.visitor import client_signed_in

pytestmark = pytest.mark.django_db

THUMBNAIL = re.compile(r'<a href="(/s/[\w-]+/images/[0-9a-f-]{36}/)"[^>]*><img\s+src="([^"]+)"')


def uploaded(client: Client, colour: str = "#c83232") -> str:
    """The composer's upload of one PNG; the id its chip carries."""
    file = io.BytesIO(picture("PNG", colour=colour))
    file.name = "photo.png"
    response = client.post("/images/upload/", {"image": file, "waiting": "0"})
    assert response.status_code == 200, response.content
    match = CHIP_ID.search(response.content.decode())
    assert match
    return match.group(1)


def asked_with_image(
    client: Client, user: User, title: str, question: str
) -> tuple[Conversation, str]:
    """A conversation whose question carries one uploaded image, as a send leaves it."""
    image_id = uploaded(client)
    conversation = Conversation.objects.create(user=user, model="qwen-vl-plus", title=title)
    message = Message.objects.create(conversation=conversation, role="user", content=question)
    images.claim(Owner(user_id=user.pk, session_key=""), [images.parse_ids(image_id)[0]], message)
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="complete",
        content="A red rectangle.",
        model="qwen-vl-plus",
    )
    return conversation, image_id


def shared_link(client: Client, conversation: Conversation) -> ShareLink:
    """The owner's Create link on the share panel, as the page posts it."""
    created = client.post(
        f"/s/c/{conversation.pk}/new/", {"expires": "never"}, headers={"HX-Request": "true"}
    )
    assert created.status_code == 200
    return ShareLink.objects.filter(conversation=conversation).latest("pk")


def test_a_visitor_sees_the_questions_images_through_the_link(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    chat, image_id = asked_with_image(owner, ada, "Shapes", "What is in this picture?")
    link = shared_link(owner, chat)
    visitor = Client()

    page = visitor.get(f"/s/{link.token}/")
    body = page.content.decode()
    assert page.status_code == 200 and "What is in this picture?" in body
    thumbnails = THUMBNAIL.findall(body)
    url = f"/s/{link.token}/images/{image_id}/"
    assert thumbnails == [(url, url)]  # the thumbnail, and the full size it opens
    assert f'"/images/{image_id}/"' not in body  # the owner's URL is not offered
    assert 'alt="Attached image 1"' in body

    served = visitor.get(url)
    assert served.status_code == 200
    assert served["Content-Type"] == "image/png"
    assert served["Content-Disposition"] == 'inline; filename="photo.png"'
    assert served["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in served["Cache-Control"] and "private" in served["Cache-Control"]
    assert served["Referrer-Policy"] == "no-referrer"
    shown = Image.open(io.BytesIO(served.content))
    assert shown.format == "PNG" and shown.size == (64, 48)
    assert served.content == bytes(Attachment.objects.get(pk=image_id).data)

    # The owner's own URL still belongs to the owner alone.
    assert visitor.get(f"/images/{image_id}/").status_code in {302, 404}
    assert b"\x89PNG" not in visitor.get(f"/images/{image_id}/").content
    assert owner.get(f"/images/{image_id}/").status_code == 200


def test_revoking_or_expiry_takes_the_images_away_at_once(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    chat, image_id = asked_with_image(owner, ada, "Shapes", "What is this?")
    link = shared_link(owner, chat)
    url = f"/s/{link.token}/images/{image_id}/"
    visitor = Client()
    assert visitor.get(url).status_code == 200

    revoked = owner.post(f"/s/links/{link.pk}/revoke/", headers={"HX-Request": "true"})
    assert revoked.status_code == 200
    assert visitor.get(url).status_code == 404
    assert visitor.get(f"/s/{link.token}/").status_code == 404

    expiring = links.create(Owner(user_id=ada.pk, session_key=""), conversation=chat, expiry="1d")
    later = f"/s/{expiring.token}/images/{image_id}/"
    assert visitor.get(later).status_code == 200
    ShareLink.objects.filter(pk=expiring.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert visitor.get(later).status_code == 404

    deleted = links.create(Owner(user_id=ada.pk, session_key=""), conversation=chat)
    assert visitor.get(f"/s/{deleted.token}/images/{image_id}/").status_code == 200
    Conversation.objects.filter(pk=chat.pk).update(deleted_at=timezone.now())
    assert visitor.get(f"/s/{deleted.token}/images/{image_id}/").status_code == 404


def test_a_link_serves_only_the_images_its_conversation_shows(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    shared_chat, _ = asked_with_image(owner, ada, "Shared", "Shared question")
    private_chat, private_image = asked_with_image(owner, ada, "Private", "Private question")
    link = shared_link(owner, shared_chat)
    visitor = Client()

    # Another conversation of the same owner, through this token: the same 404 as nothing.
    assert visitor.get(f"/s/{link.token}/images/{private_image}/").status_code == 404
    assert (
        visitor.get(f"/s/{link.token}/images/00000000-0000-4000-8000-000000000000/").status_code
        == 404
    )
    assert (
        visitor.get(f"/s/not-a-token-at-all-0000000000000/images/{private_image}/").status_code
        == 404
    )
    # Someone else's link to their own conversation cannot reach ada's images either.
    bob_client, bob = client_signed_in("bob")
    bob_chat, _ = asked_with_image(bob_client, bob, "Bob's", "Bob's question")
    bob_link = shared_link(bob_client, bob_chat)
    assert visitor.get(f"/s/{bob_link.token}/images/{private_image}/").status_code == 404
    # An unsent upload is no conversation's.
    unsent = uploaded(owner)
    assert visitor.get(f"/s/{link.token}/images/{unsent}/").status_code == 404
    assert private_chat.pk != shared_chat.pk


def test_an_edited_away_question_keeps_its_image_to_itself(login_required: Settings) -> None:
    """An edit hides the old turn and gives its images (as copies) to the new question: the
    link shows and serves the new question's image, never the hidden one's."""
    owner, ada = client_signed_in("ada")
    chat, old_image = asked_with_image(owner, ada, "Shapes", "What is this?")
    old = Message.objects.get(conversation=chat, role="user")
    chat.messages.update(hidden=True)
    edited = Message.objects.create(
        conversation=chat, role="user", content="What colour is this?", version_of=old
    )
    images.copy_to(old, edited)
    new_image = str(Attachment.objects.get(message=edited).pk)
    link = shared_link(owner, chat)
    visitor = Client()

    body = visitor.get(f"/s/{link.token}/").content.decode()
    assert "What colour is this?" in body and "What is this?" not in body
    assert [href for href, _ in THUMBNAIL.findall(body)] == [f"/s/{link.token}/images/{new_image}/"]
    assert visitor.get(f"/s/{link.token}/images/{new_image}/").status_code == 200
    assert visitor.get(f"/s/{link.token}/images/{old_image}/").status_code == 404
    # The owner still sees the hidden version's image (it is kept with that version).
    assert owner.get(f"/images/{old_image}/").status_code == 200


def test_a_run_link_serves_no_images(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    _, image_id = asked_with_image(owner, ada, "Shapes", "What is this?")
    run = create_run(Owner(user_id=ada.pk, session_key=""), "a prompt", "qwen-plus", 1)
    link = links.create(Owner(user_id=ada.pk, session_key=""), run=run)
    assert Client().get(f"/s/{link.token}/images/{image_id}/").status_code == 404


def test_a_conversation_without_images_reads_as_before(login_required: Settings) -> None:
    owner, ada = client_signed_in("ada")
    chat = Conversation.objects.create(user=ada, model="qwen-plus", title="Rivers")
    Message.objects.create(conversation=chat, role="user", content="Tell me about rivers")
    link = shared_link(owner, chat)
    body = Client().get(f"/s/{link.token}/").content.decode()
    assert "Tell me about rivers" in body and "message__images" not in body
