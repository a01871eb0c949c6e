from __future__ import annotations

from django import template

from chat.comparisons import seconds as _seconds

register = template.Library()


@register.filter
def seconds(value: float | None) -> str:
    """A duration in seconds as a person reads it: 0.41 s, 9.8 s, 12 s."""
    return _seconds(value)
