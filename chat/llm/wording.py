"""Our error sentences as data: an English template and its figures, not a finished sentence.

``chat/llm`` has no Django, so it cannot translate. It keeps what it means to say as a template
("The model server failed (HTTP %(status)s).") and the figures that fill it; ``text()`` gives
the English (logs, exports, ``UpstreamError.message``), and the Django side renders the same
data in the reader's language from its catalogue (``chat/rendering/errors.py``), so nothing
ever parses our own sentences back. A param may be a wording itself (a 404's hint inside
"refused the request"); text that is not ours (a provider's explanation) is a plain string
param, shown as the provider wrote it.

Every template is written as the first argument of ``Wording(...)`` (or as an error class's
``default_message``), so ``tests/test_error_wording.py`` finds each one and checks the
catalogue has it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias


def _same(template: str) -> str:
    return template


class Wording:
    """One sentence of ours: ``template`` (English, ``%(name)s`` placeholders) and ``params``."""

    __slots__ = ("params", "template")

    def __init__(self, template: str, /, **params: Param) -> None:
        self.template = template
        self.params: dict[str, Param] = params

    def text(self, translate: Callable[[str], str] = _same) -> str:
        """The sentence, each template (nested ones first) passed through ``translate``: the
        English as is, or ``gettext`` for the reader's language."""
        template = translate(self.template)
        if not self.params:
            return template  # no % at all: a translation may hold a bare "%"
        return template % {
            name: value.text(translate) if isinstance(value, Wording) else value
            for name, value in self.params.items()
        }

    def as_data(self) -> dict[str, Any]:
        """JSON for the database: ``{"template": ..., "params": {...}}``, nested alike."""
        return {
            "template": self.template,
            "params": {
                name: value.as_data() if isinstance(value, Wording) else value
                for name, value in self.params.items()
            },
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Wording:
        """The inverse of ``as_data``; ``ValueError`` for anything it did not write."""
        template, params = data.get("template"), data.get("params") or {}
        if not isinstance(template, str) or not isinstance(params, Mapping):
            raise ValueError(f"not a wording: {data!r:.200}")
        read: dict[str, Param] = {}
        for name, value in params.items():
            if isinstance(value, Mapping):
                read[str(name)] = cls.from_data(value)
            elif isinstance(value, str | int | float):
                read[str(name)] = value
            else:
                raise ValueError(f"not a wording param: {name}={value!r:.100}")
        return cls(template, **read)

    def replace(self, old: str, new: str) -> Wording:
        """A copy with ``old`` replaced in every text param, nested ones too (an API key a
        provider echoed, say); templates are ours and stay as written."""
        params: dict[str, Param] = {}
        for name, value in self.params.items():
            params[name] = value.replace(old, new) if isinstance(value, Wording | str) else value
        return type(self)(self.template, **params)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Wording):
            return NotImplemented
        return (self.template, self.params) == (other.template, other.params)

    __hash__ = None  # type: ignore[assignment]  # params is a dict: equal, never hashed

    def __repr__(self) -> str:
        params = "".join(f", {name}={value!r}" for name, value in self.params.items())
        return f"Wording({self.template!r}{params})"


Param: TypeAlias = str | int | float | Wording
"""What fills a placeholder: a figure, a name, a provider's text, or a wording of ours."""
