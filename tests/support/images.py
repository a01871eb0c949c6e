"""Image files for the attachment tests: real pictures in each format (with EXIF to strip),
and the files an upload must refuse (a bomb, a truncated PNG), made here rather than stored."""

from __future__ import annotations

import io
import re
import struct
import zlib

import httpx
from PIL import Image
from playwright.sync_api import FilePayload, Locator, Page, expect

from tests.support.visitor import Visitor

CAMERA = "Streamside Test Camera"  # written into each picture's EXIF, which must not survive


def picture(fmt: str, size: tuple[int, int] = (64, 48), colour: str = "#c83232") -> bytes:
    """A ``fmt`` (PNG, JPEG, WEBP, GIF) picture carrying EXIF where the format holds it."""
    image = Image.new("RGB", size, colour)
    exif = Image.Exif()
    exif[0x010F] = CAMERA  # Make
    exif[0x0132] = "2026:12:08 01:00:00"  # DateTime
    buffer = io.BytesIO()
    if fmt == "GIF":
        second = Image.new("RGB", size, "#3232c8")
        image.save(buffer, "GIF", save_all=True, append_images=[second], comment=CAMERA.encode())
    else:
        image.save(buffer, fmt, exif=exif.tobytes())
    return buffer.getvalue()


def noise_png(size: tuple[int, int]) -> bytes:
    """A PNG that does not compress (random pixels): its byte size follows its pixel count."""
    import os

    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 100_000) -> bytes:
    """A few hundred bytes that claim ``side`` × ``side`` pixels (ten gigapixels by default):
    decoding it would take gigabytes; the header alone must get it refused."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + side * 3) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


def truncated_png() -> bytes:
    """A real PNG cut short: its header reads, its pixels do not."""
    whole = noise_png((64, 64))
    return whole[: len(whole) // 2]


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(1)</script></svg>"
)
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"


def upload(
    visitor: Visitor, data: bytes, name: str, content_type: str, waiting: int = 0
) -> httpx.Response:
    """The composer's upload of one file (``POST /images/upload/``), as images.js makes it."""
    token = visitor.http.cookies.get("csrftoken") or ""
    return visitor.http.post(
        "/images/upload/",
        files={"image": (name, data, content_type)},
        data={"waiting": str(waiting)},
        headers={"X-CSRFToken": token},
    )


CHIP_ID = re.compile(r'data-image-id="([0-9a-f-]{36})"')


def uploaded_id(
    visitor: Visitor, data: bytes, name: str = "photo.png", content_type: str = "image/png"
) -> str:
    """Upload one picture; the id its chip carries (the upload must succeed)."""
    response = upload(visitor, data, name, content_type)
    assert response.status_code == 200, response.text
    match = CHIP_ID.search(response.text)
    assert match, response.text
    return match.group(1)


def pick_picture(page: Page, name: str = "red.png") -> None:
    """Pick a 64×48 PNG with the composer's "Attach images" button (its file chooser)."""
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Attach images").click()
    chooser.value.set_files(
        files=[FilePayload(name=name, mimeType="image/png", buffer=picture("PNG"))]
    )


def attach_picture(page: Page, name: str = "red.png") -> None:
    """``pick_picture``, then wait for its chip (uploaded, removable)."""
    pick_picture(page, name)
    expect(page.get_by_role("button", name="Remove image")).to_have_count(1)


THUMBNAIL_LOADED = (
    "() => { const i = document.querySelector('article[data-role=user] img');"
    " return i && i.complete && i.naturalWidth === 64; }"
)
"""For ``page.wait_for_function``: the question's thumbnail loaded, the 64×48 picture's."""


def expect_picture_answered(page: Page, text: str) -> Locator:
    """After sending ``text`` with one 64×48 PNG to a model that sees: the question shows its
    thumbnail, loaded; the answer says the model received both; the chip went with the
    message. Returns the thumbnail, for what a test checks next."""
    question = page.locator('article[data-role="user"]').last
    thumbnail = question.get_by_role("img", name="Attached image 1")
    expect(thumbnail).to_be_visible()
    page.wait_for_function(THUMBNAIL_LOADED)
    answer = page.locator('article[data-role="assistant"]').last
    expect(answer).to_have_attribute("data-status", "complete", timeout=30000)
    expect(answer).to_contain_text(f"I received 1 image (PNG, 64×48) and your text: {text}")
    expect(page.get_by_role("button", name="Remove image")).to_have_count(0)
    return thumbnail
