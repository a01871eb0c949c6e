from __future__ import annotations

from django import template

from chat.rendering import i18n

register = template.Library()


@register.filter
def duration(value: float | None, digits: int = 1) -> str:
    """Seconds with ``digits`` decimals and the unit, in the active language: "2.4 s", "2.4 秒"."""
    return i18n.duration(value, int(digits))


@register.filter
def upstream_message(message: str) -> str:
    """A stored error (worded in English by chat/llm or the relay) in the active language."""
    return i18n.upstream_message(message)


@register.filter
def seconds(value: float | None) -> str:
    """A duration in seconds as a person reads it: 0.41 s, 9.8 s, 12 s."""
    return i18n.seconds(value)
