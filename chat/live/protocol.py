"""Every message that crosses the channel layer, and every group name: named only here.

Messages are ``TypedDict``s: they travel as plain dicts (msgpack through Redis, a shallow copy
in process) yet the publisher, the control plane, the consumers and sign-out agree on their
shape, and a type checker can tell. The dotted ``type`` selects the handler (channels calls
``chat.frame`` → ``chat_frame``).

Who sends what to whom:

=====================  =============================  ========================================
message                from → to                      why
=====================  =============================  ========================================
``chat.frame``         publishing worker → the        a numbered piece of an answer, for other
                       conversation's group (worker   workers' sockets (this worker's own get
                       channels that follow it)       it directly, see ``hub``)
``live.follow``        worker → ``WORKERS_GROUP``     this worker now shows the conversation:
                       (or one worker)                send its deltas through the layer
``live.unfollow``      worker → ``WORKERS_GROUP``     it no longer does
``live.presence``      worker → ``WORKERS_GROUP``     every conversation it follows, refreshed
                       (or one worker, on hello)      (presence expires unless refreshed)
``live.hello``         new worker → ``WORKERS_GROUP`` tell me what you follow
``generation.stop``    worker → ``WORKERS_GROUP``     Stop pressed on a socket of another worker
``generation.snapshot`` worker → ``WORKERS_GROUP``    a socket wants an answer's text so far
``chat.snapshot``      generating worker → a socket   the reply: the text so far and its seq
``layer.probe``        worker → itself                is it still hearing Redis?
``session.ended``      sign-out → ``session`` group   close that session's sockets
``access.ended``       accounts → ``user`` group      the password changed or the account was
                       (or a ``session`` group)       deactivated or deleted (or the session
                                                      row was): close with why
``session.renewed``    accounts → ``session`` group   the key was cycled (a password change in
                                                      that session, a login): reconnect
``compare.frame``      comparison → its run's group   the comparison page's own fragments
=====================  =============================  ========================================
"""

from __future__ import annotations

import hashlib
from typing import Literal, TypedDict

# Every worker's control plane listens in this group (Stop, snapshot requests, presence).
WORKERS_GROUP = "streamside-workers"

FrameKind = Literal["turn", "delta", "final"]


def conversation_group(conversation_id: int) -> str:
    """The group of the worker channels that follow this conversation."""
    return f"conversation-{conversation_id}"


def session_group(session_key: str) -> str:
    """The group of every socket a login session opened: signing out closes them all."""
    return "session-" + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def user_group(user_id: int | str) -> str:
    """The group of every socket a user opened, in any session: a password change,
    deactivation or deletion of the account closes them."""
    return f"user-{user_id}"


def comparison_group(run_id: int) -> str:
    """The group of the sockets showing one comparison run."""
    return f"comparison-{run_id}"


class FrameEvent(TypedDict):
    """One numbered piece of an answer: ready HTML (``html`` for any page showing messages,
    ``chrome`` only for the chat page's Send/Stop button, title and alerts)."""

    type: Literal["chat.frame"]
    kind: FrameKind
    conversation: int
    answer: int
    seq: int
    origin: str | None  # the socket that asked for the turn (it gets the "sent" marker)
    html: str
    chrome: str
    worker: str  # the publishing worker's control channel ("" when it has none)
    # Whether the publisher knew of followers on other workers: a worker that follows yet gets
    # a frame saying no has been missed by it, and tells it so (its deltas were not sent).
    followed: bool


class SnapshotEvent(TypedDict):
    """An answer's text so far, holding frames ``1..seq`` (the reply to a SnapshotRequest)."""

    type: Literal["chat.snapshot"]
    answer: int
    seq: int
    html: str
    chrome: str


class SnapshotRequest(TypedDict):
    type: Literal["generation.snapshot"]
    conversation: int
    answer: int
    reply_to: str  # the asking socket's channel
    language: str  # the asking socket's: the snapshot is written in it


class StopRequest(TypedDict):
    type: Literal["generation.stop"]
    conversation: int
    answer: int


class Follow(TypedDict):
    type: Literal["live.follow"]
    conversation: int
    worker: str


class Unfollow(TypedDict):
    type: Literal["live.unfollow"]
    conversation: int
    worker: str


class Presence(TypedDict):
    type: Literal["live.presence"]
    worker: str
    conversations: list[int]


class Hello(TypedDict):
    type: Literal["live.hello"]
    worker: str


class Probe(TypedDict):
    type: Literal["layer.probe"]
    n: int


class SessionEnded(TypedDict):
    type: Literal["session.ended"]


# Why a signed-in socket lost its access: the session was ended (deleted, expired), the
# password changed, the account was deactivated or deleted.
AccessReason = Literal["session", "password", "account"]


class AccessEnded(TypedDict):
    """A signed-in socket's login no longer holds: it says why and closes."""

    type: Literal["access.ended"]
    reason: AccessReason
    # The session group spared (the session that changed its own password stays signed in:
    # it is renewed instead), or "".
    keep: str


class SessionRenewed(TypedDict):
    """The session's key was cycled, its login kept: its sockets reconnect with the new key."""

    type: Literal["session.renewed"]


class CompareEvent(TypedDict):
    type: Literal["compare.frame"]
    html: str


FRAME_EVENT: Literal["chat.frame"] = "chat.frame"
SNAPSHOT_EVENT: Literal["chat.snapshot"] = "chat.snapshot"
SNAPSHOT_REQUEST: Literal["generation.snapshot"] = "generation.snapshot"
STOP_EVENT: Literal["generation.stop"] = "generation.stop"
FOLLOW_EVENT: Literal["live.follow"] = "live.follow"
UNFOLLOW_EVENT: Literal["live.unfollow"] = "live.unfollow"
PRESENCE_EVENT: Literal["live.presence"] = "live.presence"
HELLO_EVENT: Literal["live.hello"] = "live.hello"
PROBE_EVENT: Literal["layer.probe"] = "layer.probe"
SESSION_ENDED: Literal["session.ended"] = "session.ended"
ACCESS_ENDED: Literal["access.ended"] = "access.ended"
SESSION_RENEWED: Literal["session.renewed"] = "session.renewed"
COMPARE_EVENT: Literal["compare.frame"] = "compare.frame"

ControlMessage = (
    StopRequest | SnapshotRequest | Follow | Unfollow | Presence | Hello | Probe | FrameEvent
)
