"""What ``ChatClient`` needs of a protocol, and the protocols it knows by name.

The dialects themselves (``openai.OpenAIDialect``, ``dashscope.DashScopeDialect``) are plain
classes; these protocols are the seam that lets the client treat both alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .dashscope import DashScopeDialect
from .events import Event
from .openai import OpenAIDialect

PROTOCOLS = ("openai", "dashscope")


class StreamParser(Protocol):
    def accepts(self, event: str) -> bool: ...
    def is_end(self, data: str) -> bool: ...
    def feed(self, event: str, obj: Mapping[str, Any]) -> list[Event]: ...


class Dialect(Protocol):
    name: str
    header_id_wins: bool

    def url(self, base_url: str, body: Mapping[str, Any] | None = None) -> str: ...
    def body(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        stream: bool,
        options: Mapping[str, Any],
        *,
        include_usage: bool,
    ) -> dict[str, Any]: ...
    def headers(self, stream: bool) -> dict[str, str]: ...
    def needs_incremental(self, model: str) -> None: ...
    def stream_parser_for(self, body: Mapping[str, Any]) -> StreamParser: ...
    def parse_whole(self, obj: Mapping[str, Any]) -> list[Event]: ...


def make_dialect(protocol: str, *, incremental: bool) -> Dialect:
    """The dialect named by a provider's ``protocol`` setting."""
    if protocol == "openai":
        return OpenAIDialect()
    if protocol == "dashscope":
        return DashScopeDialect(incremental=incremental)
    raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
