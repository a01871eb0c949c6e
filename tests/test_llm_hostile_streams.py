"""Hostile byte streams through the real ``ChatClient``, for both protocols.

A network, a proxy or a sloppy server can change how a stream is cut and spelled without
changing what it means: reads that end anywhere (inside 汉字, emoji, ``data:``, between CR and
LF), CR, LF or CRLF line ends, a BOM in front, raw U+2028 inside JSON strings, comments,
unknown SSE fields and event types, unknown JSON keys. The client must then yield exactly the
events that were sent. What does change the meaning (malformed JSON, an error frame, a cut
before the finish) must end the answer with a typed ``Failed``: never garbage in the text,
never a hang (every reply here runs under ``asyncio.wait_for``), never a silent success.

Decisions, case by case:

- one leading UTF-8 BOM is ignored (SSE spec: "One leading U+FEFF BYTE ORDER MARK character
  must be ignored"); a U+FEFF anywhere else is text;
- events of a type the protocol does not use (``event: ping``, ``event: foo``) are skipped,
  whatever their data: to an SSE client they are not messages;
- comment lines, unknown SSE fields (``retry:``, ``foo:``) and unknown JSON keys are ignored;
- two ``data:`` lines in one event are joined with "\\n" (SSE spec). If the joined text is
  JSON (an object pretty-printed over two lines) the event counts; if not (two objects with no
  blank line between them, or a line break inside a string) it is ``UpstreamProtocolError``:
  guessing where one object ends could show text twice or out of order;
- malformed JSON in a data line ends the answer with ``UpstreamProtocolError`` and keeps the
  text before it: silently dropping a chunk would show a wrong answer as a complete one.

The property tests (hypothesis) compare any split of a stream with the unsplit stream.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.llm import (
    PROTOCOLS,
    ChatClient,
    Event,
    Failed,
    Finished,
    ReasoningDelta,
    Retrying,
    TextDelta,
    UpstreamAuthError,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamStreamError,
)
from tests.support.doubles import recording, replay
from tests.support.events import failure, text_of
from tests.support.sse import (
    BOM,
    CHINESE,
    EMOJI,
    MESSAGES,
    NATIVE_ID,
    OPENAI_ID,
    SEPARATORS,
    answer,
    answer_events,
    answer_frames,
    as_json,
    data_frame,
    native_frame,
    native_result,
    openai_chunk,
    openai_frame,
    with_line_ends,
)

BASE = "http://upstream.test/v1"
# Every stream here is parsed in milliseconds; a reply still running after this is a hang.
HANG_AFTER = 5.0


SPLITS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run and machine
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------------------------
# Streams and how they are read


def stray_event(protocol: str) -> bytes:
    """An event of a type no protocol uses, whose data would be text if read as a message:
    only its ``event:`` line keeps "垃圾" out of the answer."""
    data = openai_chunk("垃圾") if protocol == "openai" else native_result("垃圾")
    return f"event: foo\n: keep-alive\ndata: {as_json(data)}\n\n".encode()


def hostile_answer(protocol: str, pieces: Sequence[str]) -> bytes:
    """``answer`` with a stray event between every two frames; it means the same."""
    return stray_event(protocol).join(answer_frames(protocol, pieces))


def bytewise(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


def split(raw: bytes, cuts: Sequence[int]) -> list[bytes]:
    ends = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in zip(ends, ends[1:], strict=False)]


async def events_of(protocol: str, pieces: Iterable[bytes]) -> list[Event]:
    """The events ``ChatClient`` yields for a body delivered as ``pieces``; a hang fails."""
    http, _, _ = replay(pieces)
    client = ChatClient(http, BASE, protocol=protocol)

    async def collect() -> list[Event]:
        return [e async for e in client.stream_reply("qwen-plus", MESSAGES)]

    try:
        return await asyncio.wait_for(collect(), HANG_AFTER)
    finally:
        await http.aclose()


def run(protocol: str, pieces: Iterable[bytes]) -> list[Event]:
    """``events_of`` for the (synchronous) hypothesis tests, one event loop per example."""
    return asyncio.run(events_of(protocol, pieces))


def assert_clean(events: list[Event]) -> None:
    """No decoding damage in anything shown to the user."""
    for event in events:
        if isinstance(event, TextDelta | ReasoningDelta):
            assert event.text, events
            assert "\ufffd" not in event.text, event
            assert "\ufeff" not in event.text, event


# name -> (protocol, bytes, the answer's text); recorded ones and built ones.
STREAMS: dict[str, tuple[str, bytes, str]] = {
    "openai-recorded-qwen-chinese": (
        "openai",
        recording("openai_compat_qwen.sse"),
        "我是来自阿里云的超大规模语言模型,我叫通义千问。",
    ),
    "openai-recorded-crlf-emoji": ("openai", recording("crlf.sse"), "第一行🙂 emoji末尾"),
    "openai-built-emoji-separators-cr": (
        "openai",
        with_line_ends(hostile_answer("openai", EMOJI + SEPARATORS), "\r"),
        "".join(EMOJI + SEPARATORS),
    ),
    "dashscope-recorded-reference-chinese": (
        "dashscope",
        recording("dashscope_reference.sse"),
        "我是通义千问,由阿里云开发的AI助手。我被设计用来回答各种问题、提供信息和与用户进行对话。"
        "有什么我可以帮助你的吗?",
    ),
    "dashscope-built-emoji-separators-crlf": (
        "dashscope",
        with_line_ends(hostile_answer("dashscope", EMOJI + SEPARATORS), "\r\n"),
        "".join(EMOJI + SEPARATORS),
    ),
}


@functools.cache
def unsplit(name: str) -> list[Event]:
    """The events of stream ``name`` delivered in one read (what every split must match)."""
    protocol, raw, _ = STREAMS[name]
    return run(protocol, [raw])


def cut_points(size: int) -> st.SearchStrategy[list[int]]:
    """Where to cut a body of ``size`` bytes: a few places anywhere, or every few bytes
    (sizes 1-9 taking turns, so runs of 1-byte pieces are common)."""
    if size < 2:
        return st.just([])
    anywhere = st.lists(st.integers(1, size - 1), unique=True, max_size=48).map(sorted)

    def every(sizes: list[int]) -> list[int]:
        cuts: list[int] = []
        at = 0
        while (at := at + sizes[len(cuts) % len(sizes)]) < size:
            cuts.append(at)
        return cuts

    regular = st.lists(st.integers(1, 9), min_size=1, max_size=12).map(every)
    return st.one_of(anywhere, regular)


# --------------------------------------------------------------------------------------------
# 1. Any split means the same as the whole stream (hypothesis)


@pytest.mark.parametrize("name", STREAMS)
def test_the_unsplit_streams_are_complete_answers(name: str) -> None:
    """The reference every split is compared with is itself right."""
    _, _, text = STREAMS[name]
    events = unsplit(name)
    assert not any(isinstance(e, Failed) for e in events), events
    assert any(isinstance(e, Finished) for e in events)
    assert text_of(events) == text
    assert_clean(events)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_built_streams_mean_exactly_what_was_sent(protocol: str) -> None:
    name = next(n for n, (p, _, _) in STREAMS.items() if p == protocol and "built" in n)
    assert unsplit(name) == answer_events(protocol, EMOJI + SEPARATORS)


@pytest.mark.parametrize("name", STREAMS)
@SPLITS
@given(data=st.data())
def test_any_split_of_a_stream_means_the_same_as_the_whole(name: str, data: st.DataObject) -> None:
    """Reads end where the network likes: inside 汉字 and emoji, inside "data:", between CR
    and LF, at every byte."""
    protocol, raw, _ = STREAMS[name]
    cuts = data.draw(cut_points(len(raw)), label="cuts")
    assert run(protocol, split(raw, cuts)) == unsplit(name)


# --------------------------------------------------------------------------------------------
# 2. One byte at a time


@pytest.mark.parametrize(
    ("protocol", "pieces"),
    [
        pytest.param("openai", CHINESE, id="openai-chinese"),
        pytest.param("openai", EMOJI, id="openai-emoji"),
        pytest.param("dashscope", CHINESE, id="dashscope-chinese"),
        pytest.param("dashscope", EMOJI, id="dashscope-emoji"),
    ],
)
async def test_one_byte_at_a_time_keeps_chinese_and_emoji_intact(
    protocol: str, pieces: list[str]
) -> None:
    """Each 3-byte 汉字 and 4-byte emoji (and ZWJ sequence) arrives in as many reads."""
    events = await events_of(protocol, bytewise(answer(protocol, pieces)))
    assert events == answer_events(protocol, pieces)
    assert_clean(events)


@pytest.mark.parametrize(
    "name", ["openai-recorded-qwen-chinese", "dashscope-recorded-reference-chinese"]
)
async def test_recorded_chinese_one_byte_at_a_time(name: str) -> None:
    protocol, raw, text = STREAMS[name]
    events = await events_of(protocol, bytewise(raw))
    assert events == await events_of(protocol, [raw])
    assert text_of(events) == text
    assert_clean(events)


# --------------------------------------------------------------------------------------------
# 3. U+2028 and U+2029 are not line ends


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("delivery", ["whole", "bytewise"])
async def test_unicode_line_separators_stay_inside_the_text(protocol: str, delivery: str) -> None:
    """str.splitlines() and httpx's aiter_lines() split on these; SSE splits on CR/LF only."""
    raw = answer(protocol, SEPARATORS)
    for char in "\u2028\u2029\u0085":
        assert char.encode() in raw, "the separators must be raw, not \\u escapes"
    events = await events_of(protocol, [raw] if delivery == "whole" else bytewise(raw))
    assert events == answer_events(protocol, SEPARATORS)
    assert text_of(events) == "line\u2028separator para\u2029graph next\u0085line"


# --------------------------------------------------------------------------------------------
# 4. Line ends, reads holding several events, multi-line data


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("ending", ["\r\n", "\r", "mixed"], ids=["crlf", "cr", "mixed"])
async def test_every_line_ending_gives_the_same_events(protocol: str, ending: str) -> None:
    raw = with_line_ends(answer(protocol, CHINESE), ending)
    assert await events_of(protocol, [raw]) == answer_events(protocol, CHINESE)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_crlf_split_between_cr_and_lf_in_every_line(protocol: str) -> None:
    r"""Each "\r" ends one read and its "\n" opens the next: that is one line end, not two.
    Two would make a blank line that cuts ``event: foo`` off its data, which would then be
    read as a message."""
    raw = with_line_ends(hostile_answer(protocol, CHINESE), "\r\n")
    pieces = re.split(rb"(?<=\r)(?=\n)", raw)
    assert len(pieces) == raw.count(b"\r\n") + 1
    assert all(p.endswith(b"\r") for p in pieces[:-1])
    assert await events_of(protocol, pieces) == answer_events(protocol, CHINESE)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_several_events_in_one_read(protocol: str) -> None:
    """One read holds the end of one event, two whole ones and the start of the next."""
    frames = answer_frames(protocol, CHINESE)
    raw = b"".join(frames)
    start, end = 9, len(frames[0]) + len(frames[1]) + len(frames[2]) + 7
    pieces = [raw[:start], raw[start:end], raw[end:]]
    assert await events_of(protocol, pieces) == answer_events(protocol, CHINESE)


MULTILINE_OPENAI = (
    f'data: {{"id": "{OPENAI_ID}",\n'
    'data:  "choices": [{"delta": {"content": "多行"}, "finish_reason": "stop"}]}\n\n'
    "data: [DONE]\n\n"
)
MULTILINE_NATIVE = (
    "id:1\nevent:result\n"
    'data:{"output": {"choices": [{"message": {"content": "多行"}, "finish_reason": "stop"}]},\n'
    f'data: "request_id": "{NATIVE_ID}"}}\n\n'
)


@pytest.mark.parametrize(
    ("protocol", "raw", "expected"),
    [
        pytest.param(
            "openai",
            MULTILINE_OPENAI,
            [TextDelta("多行"), Finished("stop", request_id=OPENAI_ID)],
            id="openai",
        ),
        pytest.param(
            "dashscope",
            MULTILINE_NATIVE,
            [TextDelta("多行"), Finished("stop", request_id=NATIVE_ID)],
            id="dashscope",
        ),
    ],
)
async def test_multi_line_data_joined_into_json_is_one_event(
    protocol: str, raw: str, expected: list[Event]
) -> None:
    """SSE joins the data lines of one event with "\\n", which is whitespace to JSON."""
    assert await events_of(protocol, bytewise(raw.encode())) == expected


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "lines",
    [
        pytest.param(
            [as_json(openai_chunk("甲")), as_json(openai_chunk("乙"))],
            id="two-objects-no-blank-line",
        ),
        pytest.param(['{"choices": [{"delta": {"content": "上', '下"}}]}'], id="break-in-string"),
    ],
)
async def test_multi_line_data_that_is_not_json_is_a_protocol_error(
    protocol: str, lines: list[str]
) -> None:
    """Not guessed apart: the text before stays, nothing of the bad event is shown."""
    frames = answer_frames(protocol, ["前", "后"])
    data = "".join(f"data:{line}\n" for line in lines)
    bad = f"id:9\nevent:result\n{data}\n" if protocol == "dashscope" else f"{data}\n"
    events = await events_of(protocol, [frames[0], bad.encode(), *frames[1:]])
    assert text_of(events) == "前"
    assert isinstance(failure(events), UpstreamProtocolError)


# --------------------------------------------------------------------------------------------
# 5. Malformed JSON, BOM, unknown event types and fields, comments


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "data",
    [
        pytest.param('{"choices": [{"delta": {"content": "半', id="truncated"),
        pytest.param("{'choices': []}", id="single-quotes"),
        pytest.param('{"choices": []}}', id="extra-brace"),
        pytest.param("ping", id="bare-word"),
        pytest.param("42", id="number"),
        pytest.param('"text"', id="string"),
        pytest.param("null", id="null"),
        pytest.param("[]", id="array"),
    ],
)
async def test_malformed_json_ends_the_answer_with_a_protocol_error(
    protocol: str, data: str
) -> None:
    """A clear failure after the text so far, not a silently incomplete answer."""
    frames = answer_frames(protocol, ["前半", "后半"])
    events = await events_of(protocol, [frames[0], data_frame(protocol, data), *frames[1:]])
    assert text_of(events) == "前半"
    error = failure(events)
    assert isinstance(error, UpstreamProtocolError)
    assert error.message == "The model server sent malformed data in the stream."


def data_only(raw: bytes) -> bytes:
    """DashScope frames reduced to their ``data:`` lines, as some proxies pass them on."""
    return re.sub(rb"(?m)^(id|event|):.*\n", b"", raw)


@pytest.mark.parametrize(
    ("protocol", "raw"),
    [
        pytest.param("openai", answer("openai", CHINESE), id="openai-role-chunk-first"),
        pytest.param(
            "openai",
            b"".join(answer_frames("openai", CHINESE)).split(b"\n\n", 1)[1],
            id="openai-text-first",
        ),
        pytest.param("dashscope", answer("dashscope", CHINESE), id="dashscope-id-first"),
        pytest.param(
            "dashscope", data_only(answer("dashscope", CHINESE)), id="dashscope-data-only"
        ),
        pytest.param(
            "dashscope",
            with_line_ends(data_only(answer("dashscope", CHINESE)), "\r\n"),
            id="dashscope-data-only-crlf",
        ),
    ],
)
@pytest.mark.parametrize("delivery", ["whole", "bytewise"])
async def test_a_leading_bom_is_ignored(protocol: str, raw: bytes, delivery: str) -> None:
    """SSE: one leading U+FEFF is ignored. Kept, it makes the first field name "\\ufeffdata",
    which is no field, and the first event's text is lost without a word."""
    body = BOM + raw
    events = await events_of(protocol, [body] if delivery == "whole" else bytewise(body))
    assert events == await events_of(protocol, [raw])
    assert text_of(events) == "".join(CHINESE)
    assert_clean(events)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_bom_inside_the_text_is_text(protocol: str) -> None:
    """Only the stream's first character is a BOM; U+FEFF in content is the model's."""
    pieces = ["零宽\ufeff", "不换行"]
    events = await events_of(protocol, [BOM + answer(protocol, pieces)])
    assert events == answer_events(protocol, pieces)


UNKNOWN_EVENTS = [
    pytest.param("event: ping\n\n", id="ping-no-data"),
    pytest.param("event: ping\ndata: {}\n\n", id="ping-empty-object"),
    pytest.param("event: ping\ndata: ping\n\n", id="ping-not-json"),
    pytest.param("event:ping\ndata: [DONE]\n\n", id="ping-done"),
    pytest.param(
        f"event: foo\ndata: {as_json(openai_chunk('垃圾', 'stop'))}\n\n", id="foo-openai-chunk"
    ),
    pytest.param(
        f"event: foo\ndata: {as_json(native_result('垃圾', 'stop'))}\n\n", id="foo-native-result"
    ),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("frame", UNKNOWN_EVENTS)
async def test_events_of_unknown_types_are_skipped(protocol: str, frame: str) -> None:
    """Not messages to an SSE client: their data never becomes text, an end or an error."""
    frames = answer_frames(protocol, CHINESE)
    raw = frame.encode() + frames[0] + frame.encode() + b"".join(frames[1:])
    assert await events_of(protocol, [raw]) == answer_events(protocol, CHINESE)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unknown_fields_are_ignored(protocol: str) -> None:
    """Unknown JSON keys at every level, and SSE fields other than data/event/id."""
    if protocol == "openai":
        chunks = [
            openai_chunk(p, service_tier="default", x_groq={"id": "q"}, system_fingerprint=None)
            for p in CHINESE
        ]
        for chunk in chunks:
            chunk["choices"][0] |= {"stop_reason": None, "matched_stop": 2, "logprobs": None}
            chunk["choices"][0]["delta"] |= {"refusal": None, "annotations": [], "audio": {}}
        frames = [openai_frame(c) for c in chunks] + answer_frames(protocol, CHINESE)[-3:]
    else:
        payloads = [
            native_result(p, out=i, x_meta={"a": [1]}, output_extra=None)
            for i, p in enumerate(CHINESE, 1)
        ]
        for payload in payloads:
            payload["output"]["search_info"] = {"search_results": []}
            payload["output"]["choices"][0]["message"]["extra"] = {"k": "v"}
        frames = [native_frame(i, p) for i, p in enumerate(payloads, 1)]
        frames.append(answer_frames(protocol, CHINESE)[-1])
    sse_noise = b"retry: 3000\nfoo: bar\nid: 7\nid: a\x00b\nevent\n"
    raw = b"".join(sse_noise + frame for frame in frames)
    assert await events_of(protocol, [raw]) == answer_events(protocol, CHINESE)


COMMENTS = [
    b": heartbeat\n",
    b":\n",
    b":HTTP_STATUS/200\n",
    b":keepalive\n",
    b': data: {"choices": [{"delta": {"content": "garbage"}}]}\n',
    b": event: error\n",
    b": \xff\xfe not UTF-8 \xe6\xb1\n",
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_comment_lines_are_ignored_anywhere(protocol: str) -> None:
    """Before the first event, between events and between the lines of one event, whatever
    they contain (even "data:" or bytes that are not UTF-8)."""
    lines = answer(protocol, CHINESE).split(b"\n")
    raw = b"".join(COMMENTS) + b"".join(
        line + b"\n" + COMMENTS[i % len(COMMENTS)] for i, line in enumerate(lines[:-1])
    )
    for pieces in ([raw], bytewise(raw)):
        events = await events_of(protocol, pieces)
        assert events == answer_events(protocol, CHINESE)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_of_nothing_but_noise_is_interrupted(protocol: str) -> None:
    """A BOM, comments, pings and stray events, then EOF: no answer, said so, no hang."""
    raw = BOM + b"".join(COMMENTS) + b"event: ping\n\n" + stray_event(protocol) * 3
    events = await events_of(protocol, bytewise(raw))
    assert len(events) == 1
    assert isinstance(failure(events), UpstreamInterrupted)


# --------------------------------------------------------------------------------------------
# 6. DashScope errors inside an HTTP 200 stream


async def test_recorded_allocation_quota_frame_is_a_rate_limit() -> None:
    """tests/data/llm/native_error_event.sse: event:error, :HTTP_STATUS/429, a quota code."""
    events = await events_of("dashscope", bytewise(recording("native_error_event.sse")))
    assert [type(e) for e in events] == [Retrying, Retrying, Failed]  # asked twice more
    error = failure(events)
    assert isinstance(error, UpstreamRateLimited)
    assert (error.kind, error.status) == ("rate_limit", 429)
    assert error.code == "Throttling.AllocationQuota"
    assert error.request_id == "5a9d3f1e-0b1c-9f7e-a8b2-7c1d2e3f4a5b"


QUOTA = {
    "request_id": "q-1",
    "code": "Throttling.AllocationQuota",
    "message": "Allocated quota exceeded, please increase your quota limit.",
}


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        pytest.param("Throttling.AllocationQuota", UpstreamRateLimited, id="quota"),
        pytest.param("Arrearage", UpstreamAuthError, id="arrearage"),
        pytest.param("DataInspectionFailed", UpstreamStreamError, id="moderation"),
    ],
)
@pytest.mark.parametrize("event_line", ["event:error\n", ""], ids=["event-error", "no-event"])
async def test_native_error_after_text_is_typed_and_never_text(
    code: str, kind: type[UpstreamError], event_line: str
) -> None:
    """``:HTTP_STATUS/429`` is a comment, so the code decides; the provider's message may
    reach the user as the error, never as part of the answer."""
    frames = answer_frames("dashscope", CHINESE)
    error_frame = f"id:9\n{event_line}:HTTP_STATUS/429\ndata:{as_json(QUOTA | {'code': code})}\n\n"
    events = await events_of("dashscope", bytewise(frames[0] + error_frame.encode() + frames[1]))
    assert text_of(events) == CHINESE[0]
    error = failure(events)
    assert type(error) is kind
    assert error.code == code
    assert error.request_id == "q-1"
    assert QUOTA["message"] not in text_of(events)


# --------------------------------------------------------------------------------------------
# 7. Cut-off streams, finish_reason "length"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_cut_before_its_finish_is_interrupted(protocol: str) -> None:
    """No [DONE] and no finish_reason (OpenAI), no finishing event (DashScope): cut off."""
    frames = answer_frames(protocol, CHINESE)
    events = await events_of(protocol, frames[: len(CHINESE)])
    assert text_of(events) == "".join(CHINESE)
    assert isinstance(failure(events), UpstreamInterrupted)


@pytest.mark.parametrize(
    "name", ["openai-recorded-qwen-chinese", "dashscope-built-emoji-separators-crlf"]
)
@SPLITS
@given(data=st.data())
def test_a_stream_cut_anywhere_is_interrupted_unless_it_had_finished(
    name: str, data: st.DataObject
) -> None:
    """Whatever arrived is a prefix of the answer; without the finish it ends in
    ``UpstreamInterrupted``, never in a silent success or half an event."""
    protocol, raw, _ = STREAMS[name]
    end = data.draw(st.integers(0, len(raw) - 1), label="end")
    cuts = data.draw(cut_points(end), label="cuts")
    events = run(protocol, split(raw[:end], cuts))
    delivered = [e for e in events if not isinstance(e, Failed)]
    assert delivered == unsplit(name)[: len(delivered)]
    if any(isinstance(e, Finished) for e in delivered):
        assert delivered == events
    else:
        assert isinstance(failure(events), UpstreamInterrupted)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_finish_reason_length_is_a_finish(protocol: str) -> None:
    """max_tokens reached: a complete (if short) answer, reported as such."""
    events = await events_of(protocol, [answer(protocol, CHINESE, finish="length")])
    assert events == answer_events(protocol, CHINESE, finish="length")
