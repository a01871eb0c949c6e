"""The service's own failures: this server stopped, or a bug ended an answer.

They are not the model server's fault, so they are not its error classes (``chat.llm``'s
``UpstreamError`` tree) and have kinds of their own: ``interrupted`` (the server stopped or
restarted before the answer finished) and ``internal`` (an unexpected exception in the relay).
They are worded like the upstream's errors, as a ``Wording`` (template and params), and saved
the same way: ``error_kind``, ``error_message`` (English) and ``error_wording``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from chat.llm import Wording


class ServiceFailure(Exception):
    """Base of the failures that are ours; the upstream's wait and request id never apply."""

    kind: ClassVar[str] = "internal"
    default_message: ClassVar[str] = ""

    def __init__(self, wording: Wording | None = None) -> None:
        self.wording: Wording = wording if wording is not None else Wording(self.default_message)
        self.retry_after: float | None = None
        self.request_id: str | None = None
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The English sentence (logs, exports, the saved row)."""
        return self.wording.text()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.wording,), self.__dict__.copy())


class ServerStopped(ServiceFailure):
    """This worker shut down mid-answer (SIGTERM past the grace)."""

    kind = "interrupted"
    default_message = "The server stopped before this answer finished. Retry to ask again."


class ServerRestarted(ServiceFailure):
    """The worker running the answer is gone (restarted, killed); another found it unfinished."""

    kind = "interrupted"
    default_message = "The server restarted before this answer finished. Retry to ask again."


class InternalFailure(ServiceFailure):
    """A bug in the relay ended the answer; the text so far is kept. Names the exception's
    class only: its message may hold anything."""

    kind = "internal"

    @classmethod
    def of(cls, exc: BaseException) -> InternalFailure:
        return cls(
            Wording(
                "Internal error (%(name)s); the partial answer was kept.", name=type(exc).__name__
            )
        )
