"""Errors the chat shows to the person who caused them."""

from __future__ import annotations


class ClientError(Exception):
    """A request we refuse with a message for the user (bad input, busy conversation, unknown id).

    Services raise it; the consumer and views catch it in one place and show ``message``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
