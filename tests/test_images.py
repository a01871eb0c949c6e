"""Images attached to a message: what an upload must be to be kept (and what it is kept as),
who may see it, and what each protocol's upstream receives.

The checks of an upload run through the real views with Django's test client; the requests
upstream run end to end (the simulator, the app under Daphne, a websocket), and are compared
with what the simulator logged, byte for byte: the simulator answers a vision request by
saying what it received.
"""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import pytest
from django.test import Client
from PIL import Image

from tests.support.app import App
from tests.support.images import (
    CAMERA,
    HTML,
    SVG,
    bomb_png,
    noise_png,
    picture,
    truncated_png,
    uploaded_id,
)
from tests.support.simulator import Simulator
from tests.support.sockets import collect_answer, send
from tests.support.visitor import Visitor, answer_row, client_signed_in
from tests.support.waiting import until

FAST = "\n#sim tokens=12 tps=400 ttft=0.02"
CHIP = re.compile(r'data-image-id="([0-9a-f-]{36})"')


def _upload(client: Client, data: bytes, name: str, content_type: str, waiting: int = 0) -> Any:
    file = io.BytesIO(data)
    file.name = name
    return client.post("/images/upload/", {"image": file, "waiting": str(waiting)})


def _chip_id(response: Any) -> str:
    assert response.status_code == 200, response.content
    match = CHIP.search(response.content.decode())
    assert match
    return match.group(1)


# --- What an upload must be, and what is kept of it ------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fmt", "name", "kept_as", "content_type"),
    [
        pytest.param("PNG", "photo.png", "PNG", "image/png", id="png"),
        pytest.param("JPEG", "holiday photo.jpeg", "JPEG", "image/jpeg", id="jpeg"),
        pytest.param("WEBP", "photo.webp", "WEBP", "image/webp", id="webp"),
        pytest.param("GIF", "animation.gif", "PNG", "image/png", id="gif-first-frame-as-png"),
    ],
)
def test_each_format_is_accepted_and_kept_without_its_metadata(
    fmt: str, name: str, kept_as: str, content_type: str
) -> None:
    client, _ = client_signed_in("ada")
    original = picture(fmt)
    response = _upload(client, original, name, f"image/{fmt.lower()}")
    image_id = _chip_id(response)
    chip = response.content.decode()
    assert 'aria-label="Remove image"' in chip and 'name="images"' in chip

    served = client.get(f"/images/{image_id}/")
    assert served.status_code == 200
    assert served["Content-Type"] == content_type
    stem = name.rsplit(".", 1)[0].replace(" ", "_")
    extension = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[kept_as]
    assert served["Content-Disposition"] == f'inline; filename="{stem}.{extension}"'
    assert served["X-Content-Type-Options"] == "nosniff"
    assert served["Cache-Control"].startswith("private")
    data = served.content
    assert data != original  # re-encoded, never the uploaded bytes
    assert CAMERA.encode() not in data
    with Image.open(io.BytesIO(data)) as kept:
        assert kept.format == kept_as
        assert kept.size == (64, 48)
        assert not kept.getexif()
        assert "exif" not in kept.info and "comment" not in kept.info
        assert getattr(kept, "n_frames", 1) == 1
        pixel = kept.convert("RGB").getpixel((10, 10))
        assert isinstance(pixel, tuple) and pixel[0] > 150  # still the red first frame


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "name", "content_type", "says"),
    [
        pytest.param(SVG, "logo.svg", "image/svg+xml", "SVG images are not accepted.", id="svg"),
        pytest.param(
            SVG, "innocent.png", "image/png", "SVG images are not accepted.", id="svg-as-png"
        ),
        pytest.param(HTML, "page.png", "image/png", "That file is not an image.", id="html"),
        pytest.param(
            truncated_png(), "cut.png", "image/png", "damaged or incomplete", id="truncated"
        ),
        pytest.param(
            bomb_png(),
            "bomb.png",
            "image/png",
            "That image has too many pixels (at most 25 megapixels).",
            id="decompression-bomb",
        ),
        pytest.param(
            picture("TIFF"), "scan.tiff", "image/tiff", "format (TIFF) is not accepted", id="tiff"
        ),
    ],
)
def test_refused_files_say_why_and_leave_nothing(
    data: bytes, name: str, content_type: str, says: str
) -> None:
    from chat.models import Attachment

    client, _ = client_signed_in("ada")
    response = _upload(client, data, name, content_type)
    assert response.status_code == 400
    text = response.content.decode()
    assert 'role="alert"' in text and says in text
    assert not Attachment.objects.exists()


@pytest.mark.django_db
def test_size_pixel_and_count_limits_are_settings(settings: Any) -> None:
    client, _ = client_signed_in("ada")
    settings.CHAT_IMAGE_MAX_BYTES = 20_000
    too_big = _upload(client, noise_png((120, 120)), "noise.png", "image/png")
    assert too_big.status_code == 400
    assert "That file is too big" in too_big.content.decode()
    assert "at most 19.5\xa0KB" in too_big.content.decode()

    settings.CHAT_IMAGE_MAX_BYTES = 10 * 1024 * 1024
    settings.CHAT_IMAGE_MAX_PIXELS = 1000
    many_pixels = _upload(client, picture("PNG"), "photo.png", "image/png")
    assert many_pixels.status_code == 400
    assert "too many pixels (at most 0.001 megapixels)" in many_pixels.content.decode()

    settings.CHAT_IMAGE_MAX_PIXELS = 25_000_000
    settings.CHAT_IMAGE_MAX_COUNT = 2
    full = _upload(client, picture("PNG"), "photo.png", "image/png", waiting=2)
    assert full.status_code == 400
    assert "At most 2 images can go with one message." in full.content.decode()
    assert _upload(client, picture("PNG"), "photo.png", "image/png", waiting=1).status_code == 200


@pytest.mark.django_db
def test_only_the_owner_sees_an_image(settings: Any) -> None:
    settings.CHAT_REQUIRE_LOGIN = False  # the demo: sessions own images too
    ada, _ = client_signed_in("ada")
    image_id = _chip_id(_upload(ada, picture("PNG"), "photo.png", "image/png"))
    bob, _ = client_signed_in("bob")
    stranger = Client()
    assert ada.get(f"/images/{image_id}/").status_code == 200
    assert bob.get(f"/images/{image_id}/").status_code == 404
    assert stranger.get(f"/images/{image_id}/").status_code == 404
    assert ada.get("/images/00000000-0000-4000-8000-000000000000/").status_code == 404

    # A demo session's image is its own: another anonymous session gets the same 404.
    guest = Client()
    guest_image = _chip_id(_upload(guest, picture("JPEG"), "g.jpg", "image/jpeg"))
    assert guest.get(f"/images/{guest_image}/").status_code == 200
    assert stranger.get(f"/images/{guest_image}/").status_code == 404
    assert ada.get(f"/images/{guest_image}/").status_code == 404

    # Nobody but the owner can remove it either; the owner's Remove deletes the upload.
    assert bob.post(f"/images/{image_id}/remove/").status_code == 204
    assert ada.get(f"/images/{image_id}/").status_code == 200
    assert ada.post(f"/images/{image_id}/remove/").status_code == 204
    assert ada.get(f"/images/{image_id}/").status_code == 404


@pytest.mark.django_db
def test_with_login_required_an_anonymous_visitor_gets_nothing(login_required: Any) -> None:
    ada, _ = client_signed_in("ada")
    image_id = _chip_id(_upload(ada, picture("PNG"), "photo.png", "image/png"))
    anonymous = Client()
    assert anonymous.get(f"/images/{image_id}/").status_code in {302, 404}
    assert b"\x89PNG" not in anonymous.get(f"/images/{image_id}/").content
    assert anonymous.post("/images/upload/").status_code in {302, 403}


# --- Upstream: what each protocol receives, end to end ---------------------------------------


def _data_url(visitor: Visitor, image_id: str) -> str:
    served = visitor.http.get(f"/images/{image_id}/")
    assert served.status_code == 200
    return (
        f"data:{served.headers['content-type']};base64,{base64.b64encode(served.content).decode()}"
    )


def _native_choice(visitor: Visitor, conversation_id: int, model: str) -> str:
    page = visitor.http.get(f"/c/{conversation_id}/").text
    match = re.search(rf'value="(p\d+:{re.escape(model)})"', page)
    assert match, f"no {model} in the picker"
    return match.group(1)


def _conversation(visitor: Visitor, model: str) -> int:
    conversation = visitor.new_conversation()
    choice = model if not model.startswith("native:") else ""
    if not choice:
        choice = _native_choice(visitor, conversation, model.removeprefix("native:"))
    visitor.post(
        f"/c/{conversation}/settings/", {"model": choice, "system_prompt": "", "stream": "on"}
    ).raise_for_status()
    return conversation


async def _ask(
    visitor: Visitor, conversation: int, text: str, ids: list[str]
) -> tuple[int, Any, dict[str, str]]:
    async with visitor.socket(conversation) as ws:
        await send(ws, text, images=ids if len(ids) != 1 else ids[0])
        answer_id, frames, final = await collect_answer(ws)
    return answer_id, frames, final


@pytest.mark.live
async def test_openai_compatible_request_carries_image_parts(
    vision_app: App, sim: Simulator
) -> None:
    visitor = Visitor(vision_app)
    conversation = _conversation(visitor, "qwen-vl-plus")
    image_id = uploaded_id(visitor, picture("PNG"))
    url = _data_url(visitor, image_id)
    prompt = "What colour is this? [t-img-openai]"
    answer_id, frames, final = await _ask(visitor, conversation, prompt + FAST, [image_id])

    assert final["data-status"] == "complete"
    said = "I received 1 image (PNG, 64×48) and your text: What colour is this? [t-img-openai]"
    shown = "".join(f.html for f in frames)
    assert said in shown.replace("&#215;", "×")
    # The question's thumbnail came with the turn frame.
    assert f'src="/images/{image_id}/"' in shown and 'alt="Attached image 1"' in shown

    entry = sim.request_for("[t-img-openai]")
    assert entry["path"] == "/v1/chat/completions"
    assert entry["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": prompt + FAST},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]
    export = visitor.export(conversation)
    assert answer_row(export, answer_id)["content"].startswith(said)
    question = export["messages"][0]
    assert question["content"] == prompt + FAST
    assert question["images"] == [
        {"id": image_id, "url": f"/images/{image_id}/", "filename": "photo.png",
         "width": 64, "height": 48}
    ]  # fmt: skip
    markdown = visitor.http.get(f"/c/{conversation}/export.md").text
    assert f"![Attached image 1](/images/{image_id}/)" in markdown
    # The page drawn afresh shows the thumbnail too.
    page = visitor.http.get(f"/c/{conversation}/").text
    assert f'src="/images/{image_id}/"' in page
    visitor.close()


@pytest.mark.live
async def test_dashscope_native_request_goes_to_the_multimodal_route(
    vision_app: App, sim: Simulator
) -> None:
    visitor = Visitor(vision_app)
    conversation = _conversation(visitor, "native:qwen-vl-max")
    first, second = uploaded_id(visitor, picture("JPEG")), uploaded_id(visitor, picture("GIF"))
    urls = [_data_url(visitor, first), _data_url(visitor, second)]
    prompt = "Compare these [t-img-native]"
    answer_id, frames, final = await _ask(visitor, conversation, prompt + FAST, [first, second])

    assert final["data-status"] == "complete"
    entry = sim.request_for("[t-img-native]")
    assert entry["path"] == "/api/v1/services/aigc/multimodal-generation/generation"
    assert entry["messages"] == [
        {
            "role": "user",
            "content": [{"image": urls[0]}, {"image": urls[1]}, {"text": prompt + FAST}],
        }
    ]
    said = "I received 2 images (JPEG, 64×48; PNG, 64×48) and your text: " + prompt
    saved = answer_row(visitor.export(conversation), answer_id)
    assert saved["content"].startswith(said)  # read from output content as a list of parts
    assert saved["content"] == entry["text"]
    visitor.close()


@pytest.mark.live
@pytest.mark.parametrize(
    ("model", "path"),
    [
        pytest.param("qwen-vl-plus", "/v1/chat/completions", id="openai"),
        pytest.param(
            "native:qwen-vl-max", "/api/v1/services/aigc/text-generation/generation", id="native"
        ),
    ],
)
async def test_text_only_requests_are_sent_as_before(
    vision_app: App, sim: Simulator, model: str, path: str
) -> None:
    visitor = Visitor(vision_app)
    conversation = _conversation(visitor, model)
    marker = f"[t-img-text-{model}]"
    _, _, final = await _ask(visitor, conversation, f"Hello {marker}{FAST}", [])
    assert final["data-status"] == "complete"
    entry = sim.request_for(marker)
    assert entry["path"] == path
    assert entry["messages"] == [{"role": "user", "content": f"Hello {marker}{FAST}"}]
    assert not entry["text"].startswith("I received")
    visitor.close()


@pytest.mark.live
@pytest.mark.parametrize(
    ("model", "refusal"),
    [
        pytest.param(
            "qwen-plus",
            "Invalid content type. image_url is only supported by certain models.",
            id="openai",
        ),
        pytest.param("native:qwen-max", "The model does not support image input.", id="native"),
    ],
)
async def test_a_model_that_cannot_see_refuses_in_its_own_words(
    vision_app: App, sim: Simulator, model: str, refusal: str
) -> None:
    visitor = Visitor(vision_app)
    conversation = _conversation(visitor, model)
    image_id = uploaded_id(visitor, picture("PNG"))
    answer_id, frames, final = await _ask(
        visitor, conversation, "See? [t-img-blind]" + FAST, [image_id]
    )
    assert final["data-status"] == "error"
    assert refusal in frames[-1].html
    saved = answer_row(visitor.export(conversation), answer_id)
    assert refusal in saved["error_message"]

    # The chat goes on: the picture that was refused is not sent again with later messages
    # (else every one of them would be refused too); its question's text is.
    tag = f"[t-img-blind-next-{model}]"
    _, _, after = await _ask(visitor, conversation, f"And in words? {tag}{FAST}", [])
    assert after["data-status"] == "complete"
    entry = sim.request_for(tag)
    assert "multimodal" not in entry["path"]
    assert [m["content"] for m in entry["messages"]] == [
        "See? [t-img-blind]" + FAST,
        f"And in words? {tag}{FAST}",
    ]
    visitor.close()


@pytest.mark.live
async def test_an_image_goes_with_one_message_of_its_owner_only(
    vision_app: App, sim: Simulator
) -> None:
    owner, other = Visitor(vision_app), Visitor(vision_app)
    conversation = _conversation(owner, "qwen-vl-plus")
    image_id = uploaded_id(owner, picture("PNG"))
    await _ask(owner, conversation, "First [t-img-once]" + FAST, [image_id])

    async with owner.socket(conversation) as ws:
        await send(ws, "Again [t-img-twice]" + FAST, images=image_id)
        refused = await ws.recv()
    assert "That image is no longer available: attach it again." in str(refused)

    theirs = _conversation(other, "qwen-vl-plus")
    stolen = uploaded_id(owner, picture("PNG"))
    async with other.socket(theirs) as ws:
        await send(ws, "Mine now [t-img-stolen]" + FAST, images=stolen)
        refused = await ws.recv()
    assert "That image is no longer available" in str(refused)
    async with other.socket(theirs) as ws:
        five = [stolen, *(f"{i:08d}-0000-4000-8000-000000000000" for i in range(4))]
        await send(ws, "Too many" + FAST, images=five)
        refused = await ws.recv()
    assert "At most 4 images can go with one message." in str(refused)
    # Nothing was saved of the refused messages, nor sent upstream.
    assert [m["content"] for m in other.export(theirs)["messages"]] == []
    with pytest.raises(LookupError):
        sim.request_for("[t-img-stolen]")
    owner.close()
    other.close()


@pytest.mark.live
async def test_follow_ups_retries_and_edits_keep_the_images(
    vision_app: App, sim: Simulator
) -> None:
    visitor = Visitor(vision_app)
    conversation = _conversation(visitor, "qwen-vl-plus")
    image_id = uploaded_id(visitor, picture("WEBP"))
    url = _data_url(visitor, image_id)
    with_image = {"type": "image_url", "image_url": {"url": url}}
    first = "Look [t-img-keep-1]" + FAST
    await _ask(visitor, conversation, first, [image_id])

    # A follow-up sends the earlier question with its image, and its own text as a string.
    answer_id, _, _ = await _ask(visitor, conversation, "And now? [t-img-keep-2]" + FAST, [])
    entry = sim.request_for("[t-img-keep-2]")
    assert entry["messages"][0]["content"] == [{"type": "text", "text": first}, with_image]
    assert entry["messages"][2] == {"role": "user", "content": "And now? [t-img-keep-2]" + FAST}

    # Regenerate: the same context again, images included.
    sim_before = len(sim.requests())
    async with visitor.socket(conversation) as ws:
        await ws.send(json.dumps({"action": "retry", "answer": str(answer_id)}))
        await collect_answer(ws)
    again = sim.requests()[sim_before:]
    assert again and again[-1]["messages"][0]["content"][1] == with_image

    # Editing the question that had the image keeps it.
    export = visitor.export(conversation)
    question = export["messages"][0]["id"]
    async with visitor.socket(conversation) as ws:
        edit = {
            "action": "edit",
            "message": str(question),
            "text": "Look again [t-img-edit]" + FAST,
        }
        await ws.send(json.dumps(edit))
        _, frames, _ = await collect_answer(ws)
    entry = sim.request_for("[t-img-edit]")
    assert entry["messages"][0]["content"][1] == with_image
    assert entry["text"].startswith("I received 1 image (WEBP, 64×48)")
    edited = next(
        m for m in visitor.export(conversation)["messages"] if m["content"].startswith("Look again")
    )
    assert len(edited["images"]) == 1
    assert visitor.http.get(edited["images"][0]["url"]).status_code == 200

    # Deleting the conversation takes its images with it.
    visitor.post(f"/c/{conversation}/delete/").raise_for_status()
    await until(
        lambda: visitor.http.get(f"/images/{image_id}/").status_code == 404,
        "the deleted conversation's image to be gone",
    )
    visitor.close()


@pytest.mark.django_db
def test_uploads_never_sent_are_pruned_after_a_day() -> None:
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from chat.models import Attachment

    client, _ = client_signed_in("ada")
    old = _chip_id(_upload(client, picture("PNG"), "old.png", "image/png"))
    fresh = _chip_id(_upload(client, picture("PNG"), "fresh.png", "image/png"))
    Attachment.objects.filter(pk=old).update(created_at=timezone.now() - timedelta(days=2))
    out = io.StringIO()
    call_command("purge_deleted", stdout=out)
    assert "Pruned 1 unsent image." in out.getvalue()
    assert client.get(f"/images/{old}/").status_code == 404
    assert client.get(f"/images/{fresh}/").status_code == 200
