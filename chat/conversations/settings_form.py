"""The conversation settings form: provider and model, system prompt, Stream, request options.

Plain functions rather than a ``ModelForm`` because the form is partial by design (htmx posts
it on every change, older clients post fewer fields) and each field fails on its own: a bad
temperature is reported without undoing a new system prompt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.utils.translation import gettext, gettext_lazy

from chat import providers
from chat.accounts import access
from chat.exceptions import ClientError
from chat.models import Conversation

# name → (label, parse, low, high)
_NUMBERS: dict[str, tuple[Any, Callable[[str], float | int], float, float]] = {
    "temperature": (gettext_lazy("Temperature"), float, 0.0, 2.0),
    "top_p": (gettext_lazy("Top p"), float, 0.0, 1.0),
    "max_tokens": (gettext_lazy("Max tokens"), int, 1, 1_000_000),
    "seed": (gettext_lazy("Seed"), int, 0, 2**31 - 1),
}
THINKING_CHOICES = {"": None, "on": True, "off": False}


def _number(name: str, raw: str) -> float | int | None:
    label, parse, low, high = _NUMBERS[name]
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = parse(raw)
    except ValueError:
        if parse is int:
            message = gettext("%(label)s must be a whole number, not “%(value)s”.")
        else:
            message = gettext("%(label)s must be a number, not “%(value)s”.")
        raise ClientError(message % {"label": label, "value": raw[:20]}) from None
    if isinstance(value, float) and not math.isfinite(value) or not low <= value <= high:
        raise ClientError(
            gettext("%(label)s must be between %(low)s and %(high)s.")
            % {"label": label, "low": f"{low:g}", "high": f"{high:g}"}
        )
    return value


def apply_settings(conversation: Conversation, data: Mapping[str, str]) -> list[str]:
    """Apply and save the fields present in ``data``; return one message per rejected field."""
    errors: list[str] = []
    changed = ["stream"]
    if "model" in data:
        try:
            upstream, model = providers.parse_choice(data["model"])
            access.check_model_allowed(access.of_user(conversation.user_id), upstream, model)
        except ClientError as exc:
            errors.append(str(exc))
        else:
            conversation.provider_id = upstream.provider_id
            conversation.model = model
            changed += ["provider", "model"]
    if "system_prompt" in data:
        if len(data["system_prompt"]) > settings.CHAT_MAX_MESSAGE_CHARS:
            errors.append(gettext("The system prompt is too long."))
        else:
            conversation.system_prompt = data["system_prompt"]
            changed.append("system_prompt")
    conversation.stream = data.get("stream") == "on"
    for name in _NUMBERS:
        if name not in data:
            continue
        try:
            setattr(conversation, name, _number(name, data[name]))
        except ClientError as exc:
            errors.append(str(exc))
        else:
            changed.append(name)
    if "enable_thinking" in data:
        choice = data["enable_thinking"]
        if choice in THINKING_CHOICES:
            conversation.enable_thinking = THINKING_CHOICES[choice]
            changed.append("enable_thinking")
        else:
            errors.append(gettext("Thinking must be the model's default, on or off."))
    conversation.save(update_fields=changed)
    return errors
