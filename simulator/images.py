"""Images in a request: found in either protocol's content parts, described, and refused to
models that cannot see.

A vision model's answer begins by saying what it received ("I received 1 image (PNG, 64×48)
and your text: …"), so a test sees that the images and the text reached the upstream intact.
Which models see is a name rule, as on the real services: "vl", "vision", "omni" or "4o" in
the name (qwen-vl-plus, qwen2.5-vl-72b-instruct, qwen-omni-turbo, gpt-4o).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from simulator.prompt import prompt_of

__all__ = ["NATIVE_TEXT_ONLY", "describe", "has_images", "image_urls", "is_vision", "receipt"]

_VISION_RE = re.compile(r"vl|vision|omni|4o", re.IGNORECASE)
_DATA_URL_RE = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)
NATIVE_TEXT_ONLY = (
    "<400> InternalError.Algo.InvalidParameter: Images are only accepted by "
    "/api/v1/services/aigc/multimodal-generation/generation"
)


def is_vision(model: str) -> bool:
    """Whether ``model`` accepts images (its name says so)."""
    return bool(_VISION_RE.search(model))


def image_urls(message: Mapping[str, Any]) -> list[str]:
    """The images of one message, in order: OpenAI ``image_url`` parts or native ``image``."""
    content = message.get("content")
    if not isinstance(content, list):
        return []
    urls: list[str] = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "image_url":
            inner = part.get("image_url")
            url = inner.get("url") if isinstance(inner, Mapping) else inner
            urls.append(str(url or ""))
        elif "image" in part:
            urls.append(str(part.get("image") or ""))
    return urls


def has_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any(isinstance(m, Mapping) and image_urls(m) for m in messages)


def describe(url: str) -> str:
    """ "PNG, 64×48" for a data URL Pillow can read; else what is known of it."""
    match = _DATA_URL_RE.match(url)
    if match is None:
        return "a link" if url.startswith(("http://", "https://")) else "unreadable"
    try:
        from PIL import Image  # only when an image arrives: the simulator runs without it too

        data = base64.b64decode(match.group(2), validate=True)
        with Image.open(io.BytesIO(data)) as image:
            return f"{image.format}, {image.width}×{image.height}"
    except (ImportError, binascii.Error, OSError, ValueError):
        return f"{match.group(1)}, unreadable"


def receipt(messages: Sequence[Mapping[str, Any]]) -> str:
    """What the last user message brought, as the answer's first sentence; "" without images."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            urls = image_urls(message)
            break
    else:
        return ""
    if not urls:
        return ""
    noun = "image" if len(urls) == 1 else "images"
    described = "; ".join(describe(url) for url in urls)
    return f"I received {len(urls)} {noun} ({described}) and your text: {prompt_of(messages)}\n\n"
