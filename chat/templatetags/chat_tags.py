from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from django import template

from chat.rendering import errors, i18n

register = template.Library()


@register.filter
def duration(value: float | None, digits: int = 1) -> str:
    """Seconds with ``digits`` decimals and the unit, in the active language: "2.4 s", "2.4 秒"."""
    return i18n.duration(value, int(digits))


@register.filter
def upstream_message(name: str) -> str:
    """A provider's name, in the active language when it is ours ("Offline simulator")."""
    return i18n.upstream_message(name)


class Erred(Protocol):
    """What shows an error: a message view, a comparison side."""

    @property
    def error_wording(self) -> Mapping[str, Any] | None: ...

    @property
    def error_message(self) -> str: ...


@register.filter
def error_text(shown: Erred) -> str:
    """Its error in the active language, from the saved wording (``{{ m|error_text }}``); the
    saved English when there is none (a provider's own words, an older row)."""
    return errors.error_text(shown.error_wording, shown.error_message)


@register.filter
def seconds(value: float | None) -> str:
    """A duration in seconds as a person reads it: 0.41 s, 9.8 s, 12 s."""
    return i18n.seconds(value)
