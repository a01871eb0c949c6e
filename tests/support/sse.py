"""Model-server streams as bytes, for both protocols (OpenAI-compatible SSE and DashScope
native), built piece by piece so a test chooses where the wire cuts them, and the client events
each well-formed answer must turn into."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from chat.llm import Event, Finished, TextDelta, Usage

MESSAGES = [{"role": "user", "content": "你是谁?"}]
OPENAI_ID = "chatcmpl-hostile"
NATIVE_ID = "req-hostile"
BOM = b"\xef\xbb\xbf"
CHINESE = ["我是", "通义千问，", "由阿里云开发。"]
EMOJI = ["Hi 👋🏽 ", "👩‍👩‍👧‍👦 家人", "🇨🇳 and 𝄞", " 🙂末尾"]
SEPARATORS = ["line\u2028separator", " para\u2029graph", " next\u0085line"]


def openai_chunk(content: str | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": OPENAI_ID,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        **extra,
    }


def native_result(content: str, finish: str = "null", out: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "output": {
            "choices": [
                {"message": {"content": content, "role": "assistant"}, "finish_reason": finish}
            ]
        },
        "usage": {"input_tokens": 10, "output_tokens": out, "total_tokens": 10 + out},
        "request_id": NATIVE_ID,
        **extra,
    }


def as_json(obj: Any) -> str:
    """Raw UTF-8, not ``\\u`` escapes, as DashScope sends it (U+2028 included)."""
    return json.dumps(obj, ensure_ascii=False)


def openai_frame(data: Any) -> bytes:
    text = data if isinstance(data, str) else as_json(data)
    return f"data: {text}\n\n".encode()


def native_frame(n: int, data: Any, kind: str = "result", status: int = 200) -> bytes:
    text = data if isinstance(data, str) else as_json(data)
    return f"id:{n}\nevent:{kind}\n:HTTP_STATUS/{status}\ndata:{text}\n\n".encode()


def data_frame(protocol: str, data: Any) -> bytes:
    """One event carrying ``data`` as ``protocol`` frames it."""
    return openai_frame(data) if protocol == "openai" else native_frame(99, data)


def answer_frames(protocol: str, pieces: Sequence[str], *, finish: str = "stop") -> list[bytes]:
    """The frames of a well-formed answer: frame ``i`` carries ``pieces[i]``, then the end."""
    if protocol == "openai":
        role = openai_frame({"id": OPENAI_ID, "choices": [{"delta": {"role": "assistant"}}]})
        frames = [openai_frame(openai_chunk(piece)) for piece in pieces]
        frames[0] = role + frames[0]
        n = len(pieces)
        tokens = {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}
        usage = {"id": OPENAI_ID, "choices": [], "usage": tokens}
        return [
            *frames,
            openai_frame(openai_chunk("", finish)),
            openai_frame(usage),
            b"data: [DONE]\n\n",
        ]
    frames = [native_frame(i, native_result(p, out=i)) for i, p in enumerate(pieces, 1)]
    last = len(pieces) + 1
    return [*frames, native_frame(last, native_result("", finish, out=last))]


def answer_events(protocol: str, pieces: Sequence[str], *, finish: str = "stop") -> list[Event]:
    """What ``answer_frames`` means."""
    n = len(pieces)
    if protocol == "openai":
        return [
            *(TextDelta(p) for p in pieces),
            Finished(finish, request_id=OPENAI_ID),
            Usage(10, n, 10 + n),
        ]
    events: list[Event] = []
    for i, piece in enumerate(pieces, 1):
        events += [TextDelta(piece), Usage(10, i, 10 + i)]
    return [*events, Usage(10, n + 1, 11 + n), Finished(finish, request_id=NATIVE_ID)]


def answer(protocol: str, pieces: Sequence[str], *, finish: str = "stop") -> bytes:
    return b"".join(answer_frames(protocol, pieces, finish=finish))


def with_line_ends(raw: bytes, ending: str) -> bytes:
    r"""``raw`` (LF only) with CRLF, CR, or, for "mixed", LF/CRLF/CR taking turns per event.

    Per event, so a CR never meets the LF of the next line: "\r\n" is always one line end.
    """
    if ending != "mixed":
        return raw.replace(b"\n", ending.encode())
    events = raw.split(b"\n\n")[:-1]
    endings = [b"\n", b"\r\n", b"\r"]
    return b"".join(
        endings[i % 3].join(event.split(b"\n")) + endings[i % 3] * 2
        for i, event in enumerate(events)
    )
