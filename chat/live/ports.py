"""What a follower needs of its websocket (the consumer) and of its source (the generation
service and the database): small protocols, so the follower is tested with fakes of both."""

from __future__ import annotations

from typing import Protocol

from chat.rendering import fragments

from .protocol import SnapshotEvent


class Socket(Protocol):
    """What a follower needs of its websocket (the consumer)."""

    channel_name: str
    language: str

    async def send_text(self, html: str) -> None: ...

    def backlog(self) -> int:
        """Bytes queued but not yet sent (0 when it cannot be known)."""
        ...

    async def close_behind(self) -> None: ...


class Source(Protocol):
    """What a follower needs of the generation service and the database."""

    def local_snapshot(self, answer_id: int) -> SnapshotEvent | None:
        """This worker's answer so far, written in the active language (None if not here)."""
        ...

    def local_answers(self, conversation_id: int) -> list[int]: ...

    async def request_snapshot(
        self, conversation_id: int, answer_id: int, reply_to: str
    ) -> None: ...

    async def saved_answer(self, answer_id: int) -> fragments.MessageView | None:
        """As saved; one a dead worker left "streaming" is settled as interrupted first."""
        ...

    async def saved_log(self, conversation_id: int, *, with_retry: bool) -> str: ...

    async def streaming_answers(self, conversation_id: int, exclude: set[int]) -> list[int]: ...

    async def ended_answers(
        self, conversation_ids: list[int], ids: set[int]
    ) -> list[fragments.MessageView]: ...
