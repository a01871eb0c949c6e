"""Deterministic answer text and per-request options for the simulator.

Everything here is pure (no I/O, no clock) so the exact token pieces a request will stream can be
recomputed by a test: ``plan_answer(model, messages, SimOptions(**log_entry["options"]))`` gives
the same list the server sent, and ``plan_reasoning`` the thinking streamed before it (empty when
``think`` is 0). Seeding uses string seeds for ``random.Random`` because ``hash()`` is salted per
process; the reasoning has its own RNG so turning thinking on never changes the answer text.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAULTS",
    "FAULT_FRAMINGS",
    "HTTP_FAULTS",
    "MIDSTREAM_KINDS",
    "REASONING_FIELDS",
    "SimOptionError",
    "SimOptions",
    "estimate_prompt_tokens",
    "has_cjk",
    "last_user_text",
    "message_text",
    "parse_directive_string",
    "parse_options",
    "plan_answer",
    "plan_reasoning",
    "prompt_of",
    "resolve_options",
    "split_directives",
]

HTTP_FAULTS = frozenset({"400", "401", "403", "429", "500", "503"})
"""Faults answered with an HTTP error status before any stream byte."""

FAULTS = HTTP_FAULTS | {"eof", "midstream_error", "stall", "slow_headers"}

REASONING_FIELDS = ("reasoning_content", "reasoning", "reasoning_text", "think")
"""Where thinking goes: DashScope/DeepSeek's key, vLLM's, chat-ui's, or inline ``<think>`` tags."""

FAULT_FRAMINGS = ("auto", "http", "sse200", "sse_status")
"""How an HTTP fault reaches a streaming client: ``auto`` is ``sse200`` for a native 429 and
``http`` otherwise; ``http`` is the status with a JSON body; ``sse200`` is HTTP 200 and an error
event; ``sse_status`` is the error status with an SSE-framed body labelled ``application/json``."""

MIDSTREAM_KINDS = ("data_inspection_failed", "429", "500", "503")
"""The error ``fault=midstream_error`` sends after ``fault_after`` tokens: moderation (the
default), or a rate limit or server error arriving after the answer began."""

MAX_TOKENS_LIMIT = 20_000
"""Upper bound for ``tokens`` and ``think`` so a typo cannot make the simulator plan a novel."""

_CJK = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
_CJK_RE = re.compile(f"[{_CJK}]")
# One token: optional leading whitespace, then a CJK run (chunked later), a markdown marker,
# a word, or a single other character. Every non-trailing character lands in exactly one token.
_UNIT_RE = re.compile(rf"(\s*)([{_CJK}]+|`{{3}}|#{{1,6}}|-{{3}}|\*\*|[A-Za-z0-9_']+|\S)")
_DIRECTIVE_RE = re.compile(r"^\s*#sim\b(.*)$")
_WORD_RE = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")


class SimOptionError(ValueError):
    """A ``sim`` option or ``#sim`` directive could not be understood (answered with a 400)."""


@dataclass(frozen=True)
class SimOptions:
    """Resolved per-request behaviour; logged as a dict and accepted back as ``SimOptions(**d)``."""

    seed: int = 0
    ttft: float = 0.4
    tps: float = 40.0
    tokens: int = 200
    lang: str = "en"
    fault: str | None = None
    fault_after: int = 5
    retry_after: float | None = None
    delay: float = 5.0
    fragment: bool = False
    keepalive: bool = False
    crlf: bool = False
    weird: bool = False
    stamp: bool = False
    shuffle: bool = False
    coalesce: int = 32
    think: int = 0
    reasoning_field: str = "reasoning_content"
    final_empty: bool = False
    fault_framing: str = "auto"
    midstream_kind: str = "data_inspection_failed"
    echo: bool = False
    """Answer with the prompt itself (the message without its directive lines), verbatim:
    model output the test chooses, markup and all."""
    fault_times: int = 0
    """The fault applies to the first ``fault_times`` requests with the same last user message
    (directives included); later ones answer normally. 0: every request."""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for the JSON request log."""
        return dataclasses.asdict(self)


_BOOL_KEYS = frozenset(
    {"fragment", "keepalive", "crlf", "weird", "stamp", "shuffle", "final_empty", "echo"}
)
_INT_KEYS = frozenset({"seed", "tokens", "fault_after", "coalesce", "think", "fault_times"})
_FLOAT_KEYS = frozenset({"ttft", "tps", "retry_after", "delay"})
_STR_KEYS = frozenset({"lang", "fault", "reasoning_field", "fault_framing", "midstream_kind"})
_CHOICES: dict[str, tuple[str, ...]] = {
    "reasoning_field": REASONING_FIELDS,
    "fault_framing": FAULT_FRAMINGS,
    "midstream_kind": MIDSTREAM_KINDS,
}
OPTION_KEYS = _BOOL_KEYS | _INT_KEYS | _FLOAT_KEYS | _STR_KEYS


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on", ""}:
        # A bare ``#sim fragment`` arrives as "" and means "on".
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise SimOptionError(f"sim option {key!r} expects 0 or 1, got {value!r}")


def _as_number(key: str, value: Any, kind: type[int] | type[float]) -> int | float:
    if isinstance(value, bool):
        raise SimOptionError(f"sim option {key!r} expects a number, got {value!r}")
    try:
        number = kind(float(value)) if kind is int else float(value)
    except (TypeError, ValueError, OverflowError):
        raise SimOptionError(f"sim option {key!r} expects a number, got {value!r}") from None
    if number != number or number < 0:  # NaN or negative
        raise SimOptionError(f"sim option {key!r} must be >= 0, got {value!r}")
    return number


def parse_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce loosely typed options (JSON or ``key=value`` strings) into ``SimOptions`` fields."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in OPTION_KEYS:
            known = ", ".join(sorted(OPTION_KEYS))
            raise SimOptionError(f"unknown sim option {key!r} (known: {known})")
        if key in _BOOL_KEYS:
            out[key] = _as_bool(key, value)
        elif key in _INT_KEYS:
            out[key] = int(_as_number(key, value, int))
        elif key in _FLOAT_KEYS:
            if key == "retry_after" and value in (None, ""):
                out[key] = None
                continue
            out[key] = float(_as_number(key, value, float))
        elif key == "lang":
            lang = str(value).strip().lower()
            if lang not in {"en", "zh"}:
                raise SimOptionError(f"sim option 'lang' must be en or zh, got {value!r}")
            out[key] = lang
        elif key in _CHOICES:
            choice = str(value).strip().lower()
            if choice not in _CHOICES[key]:
                known = ", ".join(_CHOICES[key])
                raise SimOptionError(f"sim option {key!r} must be one of {known}, got {value!r}")
            out[key] = choice
        else:  # fault
            fault = None if value is None else str(value).strip().lower()
            if fault in {None, "", "none", "0"}:
                out[key] = None
            elif fault in FAULTS:
                out[key] = fault
            else:
                known = ", ".join(sorted(FAULTS))
                raise SimOptionError(f"sim option 'fault' must be one of {known}, got {value!r}")
    if "tps" in out and out["tps"] <= 0:
        raise SimOptionError("sim option 'tps' must be > 0")
    if "coalesce" in out and out["coalesce"] < 1:
        raise SimOptionError("sim option 'coalesce' must be >= 1")
    if "tokens" in out and not 1 <= out["tokens"] <= MAX_TOKENS_LIMIT:
        raise SimOptionError(f"sim option 'tokens' must be in [1, {MAX_TOKENS_LIMIT}]")
    if "think" in out and out["think"] > MAX_TOKENS_LIMIT:
        raise SimOptionError(f"sim option 'think' must be in [0, {MAX_TOKENS_LIMIT}]")
    return out


def parse_directive_string(text: str) -> dict[str, str]:
    """Split ``key=value key=value`` (as in a ``#sim`` line or ``SIM_OPTIONS``) into a dict."""
    raw: dict[str, str] = {}
    for item in text.split():
        key, _, value = item.partition("=")
        raw[key.strip().lower()] = value.strip()
    return raw


def message_text(content: Any) -> str:
    """Text of an OpenAI message ``content``: a string, or the text parts of a parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type", "text") == "text"
        ]
        return "\n".join(parts)
    return ""


def split_directives(text: str) -> tuple[dict[str, str], str]:
    """Pull ``#sim key=value`` lines out of a user message; return (raw options, clean text)."""
    raw: dict[str, str] = {}
    kept: list[str] = []
    for line in text.splitlines():
        match = _DIRECTIVE_RE.match(line)
        if match:
            raw.update(parse_directive_string(match.group(1)))
        else:
            kept.append(line)
    return raw, "\n".join(kept).strip()


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last user message, directive lines included."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def prompt_of(messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt that seeds the answer: the last user message without its directive lines."""
    return split_directives(last_user_text(messages))[1]


def has_cjk(text: str) -> bool:
    """True when ``text`` contains CJK ideographs or CJK punctuation."""
    return bool(_CJK_RE.search(text))


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Rough prompt token count for ``usage``: a CJK char or a word each, plus message overhead."""
    total = 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        text = message_text(message.get("content"))
        cjk = len(_CJK_RE.findall(text))
        total += cjk + len(_WORD_RE.findall(_CJK_RE.sub(" ", text))) + 4
    return max(total, 1)


def resolve_options(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    body_seed: Any = None,
    body_sim: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    thinking: bool = False,
) -> SimOptions:
    """Merge app defaults < body ``seed`` < body ``"sim"`` < ``#sim`` directive into options.

    Unset timing/length options get deterministic per-prompt values, so a given prompt and seed
    always behaves the same while different prompts still look varied. ``thinking`` says whether
    the request thinks when no option sets ``think`` (the model's default or ``enable_thinking``);
    it then gets about 60 reasoning tokens.
    """
    directive, prompt = split_directives(last_user_text(messages))
    merged: dict[str, Any] = dict(parse_options(defaults or {}))
    if body_seed is not None:
        merged.update(parse_options({"seed": body_seed}))
    if body_sim is not None:
        if not isinstance(body_sim, Mapping):
            raise SimOptionError("body field 'sim' must be an object")
        merged.update(parse_options(body_sim))
    merged.update(parse_options(directive))

    seed = merged.get("seed", 0)
    rng = random.Random(f"{model}|{prompt}|{seed}|defaults")
    # Always draw all three so an override of one never shifts the others.
    jitter_ttft = round(0.4 + rng.uniform(-0.1, 0.1), 3)
    jitter_tps = round(rng.uniform(30.0, 50.0), 1)
    jitter_tokens = rng.randint(150, 400)
    # Drawn last, so the three above stay what they were before thinking existed.
    jitter_think = rng.randint(48, 72)
    merged.setdefault("seed", seed)
    merged.setdefault("ttft", jitter_ttft)
    merged.setdefault("tps", jitter_tps)
    merged.setdefault("tokens", jitter_tokens)
    merged.setdefault("lang", "zh" if has_cjk(prompt) else "en")
    merged.setdefault("think", jitter_think if thinking else 0)
    return SimOptions(**merged)


# --------------------------------------------------------------------------------------------
# Answer text
# --------------------------------------------------------------------------------------------

_EN_SENTENCES = (
    "The short answer is that {t} depends on a few moving parts working together.",
    "It helps to think about {t} in terms of inputs, outputs and the state in between.",
    "Most problems with {t} come from hidden assumptions rather than from the code itself.",
    "A good first step is to measure what actually happens before changing anything.",
    "Keep the happy path simple and make the failure modes explicit.",
    "In practice, the defaults are reasonable for small projects but rarely for large ones.",
    "Latency usually matters more to users than raw throughput does.",
    "You can treat each request as an independent unit of work with its own deadline.",
    "When something goes wrong, a clear error message saves hours of guessing.",
    "The trade-off is between flexibility now and maintenance cost later.",
    "Caching helps, but only when the data changes less often than it is read.",
    "Streaming the result lets people start reading long before the work is finished.",
    "Small, well-named functions make {t} much easier to reason about.",
    "Tests that exercise real network behaviour catch bugs that mocks hide.",
    "If the numbers look too good, check that the benchmark measures the right thing.",
    "Document the decision, including the options you rejected and why.",
    "Timeouts should be explicit, generous for reads and short for connects.",
    "Retries are safe only for operations that can be repeated without side effects.",
    "The simplest design that handles the edge cases is usually the right one.",
    "Each component should own one responsibility and expose a narrow interface.",
    "Unicode, line endings and partial reads are where text protocols usually break.",
    "Back-pressure keeps a fast producer from overwhelming a slow consumer.",
    "For {t}, start with a working prototype and refine it with real feedback.",
    "Logging the request id on both sides makes tracing a single call straightforward.",
    "Configuration belongs in the environment, not in the source tree.",
    "Cancellation should propagate all the way to the work that costs money.",
    "A reader should be able to follow the data from the request to the response.",
    "Prefer boring technology for the parts that must never fail.",
)
_EN_HEADINGS = (
    "Overview",
    "Key points",
    "How it works",
    "Practical tips",
    "Common pitfalls",
    "An example",
    "Trade-offs",
    "Next steps",
)
_EN_TERMS = (
    "Latency",
    "Throughput",
    "Ordering",
    "Backpressure",
    "Retries",
    "Timeouts",
    "Caching",
    "Observability",
    "Cancellation",
    "Encoding",
)
_EN_TABLE = (
    ("Approach", "Latency", "Complexity"),
    (
        ("Polling", "high", "low"),
        ("Long polling", "medium", "medium"),
        ("Server-sent events", "low", "low"),
        ("WebSockets", "low", "medium"),
        ("Batch jobs", "very high", "low"),
    ),
)
_ZH_SENTENCES = (
    "简单来说，{t}取决于几个相互配合的部分。",
    "理解{t}的关键在于弄清输入、输出以及中间的状态。",
    "大多数问题并不是代码本身造成的，而是来自隐含的假设。",
    "第一步最好先测量实际发生了什么，再决定要改什么。",
    "让正常流程保持简单，同时把失败的情况写清楚。",
    "在实际项目中，默认配置适合小规模场景，但很少适合大规模场景。",
    "对用户来说，延迟通常比吞吐量更重要。",
    "可以把每个请求看作一个独立的工作单元，并给它设定自己的截止时间。",
    "出错的时候，一条清晰的错误信息可以节省大量排查时间。",
    "这里的权衡在于眼前的灵活性和以后的维护成本。",
    "缓存确实有帮助，但前提是数据变化的频率低于读取的频率。",
    "流式输出可以让人在任务完成之前就开始阅读结果。",
    "把函数写得短小并且命名清楚，会让{t}更容易理解。",
    "覆盖真实网络行为的测试，能发现模拟对象掩盖掉的问题。",
    "如果数字好得不像真的，就要检查基准测试是否测对了东西。",
    "记录下最终的决定，也记录下被否决的方案和原因。",
    "超时时间应该明确设置：读取可以宽松一些，连接要短一些。",
    "只有可以安全重复执行的操作才适合自动重试。",
    "能处理好边界情况的最简单设计，通常就是正确的设计。",
    "每个组件只负责一件事，并且对外只暴露很窄的接口。",
    "文本协议最容易出问题的地方，是编码、换行符和不完整的读取。",
    "背压机制可以防止快速的生产者压垮缓慢的消费者。",
    "对于{t}，建议先做出可用的原型，再根据真实反馈逐步改进。",
    "在两端都记录请求编号，追踪单次调用就会变得很直接。",
    "取消操作应该一直传递到真正产生费用的那部分工作。",
    "阿里云的超大规模语言模型也遵循同样的原则。",
)
_ZH_HEADINGS = ("概述", "要点", "工作原理", "实践建议", "常见误区", "示例", "权衡取舍", "下一步")
_ZH_TERMS = ("延迟", "吞吐量", "顺序", "背压", "重试", "超时", "缓存", "可观测性", "取消", "编码")
_ZH_TABLE = (
    ("方案", "延迟", "复杂度"),
    (
        ("轮询", "较高", "低"),
        ("长轮询", "中等", "中等"),
        ("服务器推送事件", "低", "低"),
        ("WebSocket", "低", "中等"),
        ("批处理任务", "很高", "低"),
    ),
)
_CODE_SNIPPETS = (
    (
        "python",
        "async def fetch(client, url):\n    response = await client.get(url, timeout=10.0)\n"
        "    response.raise_for_status()\n    return response.json()",
    ),
    (
        "python",
        "def chunks(items, size):\n    for start in range(0, len(items), size):\n"
        "        yield items[start:start + size]",
    ),
    (
        "javascript",
        "const source = new EventSource('/stream');\nsource.onmessage = (event) => {\n"
        "  console.log(JSON.parse(event.data));\n};",
    ),
    ("bash", "curl -N http://127.0.0.1:8001/v1/models \\\n  -H 'Authorization: Bearer sk-test'"),
    (
        "sql",
        "SELECT model, count(*) AS replies\nFROM chat_message\nGROUP BY model\n"
        "ORDER BY replies DESC;",
    ),
)
# Words too generic to name the topic of a prompt.
_EN_STOP = frozenset(
    [
        "about",
        "also",
        "because",
        "could",
        "does",
        "from",
        "have",
        "into",
        "just",
        "like",
        "more",
        "please",
        "should",
        "some",
        "than",
        "that",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "what",
        "when",
        "where",
        "which",
        "with",
        "would",
        "your",
        "explain",
        "tell",
        "give",
        "show",
        "write",
    ]
)


def _topic(prompt: str, lang: str) -> str:
    """A few words of the prompt to weave into the answer, so answers look on-topic."""
    if lang == "zh":
        runs = re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff]+", prompt)
        return max(runs, key=len)[:8] if runs else "这个问题"
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z-]{3,}", prompt) if w.lower() not in _EN_STOP]
    return " ".join(words[:3]).lower() if words else "this topic"


def _tokenize(text: str, rng: random.Random) -> list[str]:
    """Cut text into token pieces: words with their leading space, 1-4 char CJK chunks."""
    pieces: list[str] = []
    for match in _UNIT_RE.finditer(text):
        space, unit = match.group(1), match.group(2)
        if _CJK_RE.match(unit):
            first = True
            pos = 0
            while pos < len(unit):
                size = rng.choice((1, 2, 2, 2, 3, 4))
                chunk = unit[pos : pos + size]
                pieces.append(space + chunk if first else chunk)
                first = False
                pos += size
        else:
            pieces.append(space + unit)
    return pieces


class _Writer:
    """Produces markdown blocks for one language from a seeded RNG."""

    def __init__(self, rng: random.Random, lang: str, topic: str) -> None:
        self.rng = rng
        self.zh = lang == "zh"
        self.topic = topic
        self._deck: list[str] = []

    def sentence(self) -> str:
        # Deal from a shuffled deck so sentences do not repeat until the bank is used up.
        if not self._deck:
            self._deck = list(_ZH_SENTENCES if self.zh else _EN_SENTENCES)
            self.rng.shuffle(self._deck)
        text = self._deck.pop().replace("{t}", self.topic)
        return text if self.zh else text[0].upper() + text[1:]

    def paragraph(self, low: int = 2, high: int = 4) -> str:
        count = self.rng.randint(low, high)
        joiner = "" if self.zh else " "
        return joiner.join(self.sentence() for _ in range(count))

    def heading(self) -> str:
        level = self.rng.choice(("##", "###"))
        return f"{level} {self.rng.choice(_ZH_HEADINGS if self.zh else _EN_HEADINGS)}"

    def bullets(self) -> str:
        terms = list(_ZH_TERMS if self.zh else _EN_TERMS)
        self.rng.shuffle(terms)
        colon = "：" if self.zh else ":"
        items = []
        for term in terms[: self.rng.randint(3, 5)]:
            if self.rng.random() < 0.6:
                items.append(f"- **{term}**{colon}{'' if self.zh else ' '}{self.sentence()}")
            else:
                items.append(f"- {self.sentence()}")
        return "\n".join(items)

    def table(self) -> str:
        header, rows = _ZH_TABLE if self.zh else _EN_TABLE
        chosen = self.rng.sample(rows, self.rng.randint(2, 4))
        lines = ["| " + " | ".join(header) + " |", "| --- | --- | --- |"]
        lines += ["| " + " | ".join(row) + " |" for row in chosen]
        return "\n".join(lines)

    def code(self) -> str:
        lang, body = self.rng.choice(_CODE_SNIPPETS)
        return f"```{lang}\n{body}\n```"

    def blocks(self) -> Iterator[str]:
        """An endless, realistic-looking sequence of markdown blocks."""
        yield self.paragraph(1, 3)
        while True:
            yield self.heading()
            yield self.paragraph()
            yield self.bullets()
            if self.rng.random() < 0.4:
                yield self.table()
            if self.rng.random() < 0.5:
                yield self.paragraph(1, 2)
                yield self.code()
            yield self.paragraph()


_TAIL_MIN = 12
"""Tokens always left for the closing paragraph, so the answer ends on a sentence."""


def _closing(writer: _Writer, rng: random.Random, count: int, lead: str) -> list[str]:
    """Exactly ``count`` tokens of prose ending in sentence punctuation."""
    text = lead + writer.paragraph(1, 1)
    tokens = _tokenize(text, rng)
    while len(tokens) < count:
        text += ("" if writer.zh else " ") + writer.sentence()
        tokens = _tokenize(text, rng)
    tokens = tokens[:count]
    end = "。" if writer.zh else "."
    last = tokens[-1]
    if last.rstrip()[-1:] in {",", ";", ":", "，", "；", "：", "、"}:
        tokens[-1] = last.rstrip()[:-1] + end
    elif last.rstrip()[-1:] not in {".", "!", "?", "。", "！", "？"}:
        tokens[-1] = last + end
    return tokens


def _weird(tokens: list[str], rng: random.Random) -> list[str]:
    """Hide raw U+2028 and U+0085 inside some tokens (legal in JSON, fatal to splitlines)."""
    out = list(tokens)
    oddities = ["\u2028", "\u0085"]
    for index in range(1, len(out)):
        if oddities:
            char = oddities.pop(0)
        elif rng.random() < 0.05:
            char = rng.choice(("\u2028", "\u0085", "\u2029"))
        else:
            continue
        token = out[index]
        cut = rng.randint(1, len(token) - 1) if len(token) > 1 else 1
        out[index] = token[:cut] + char + token[cut:]
    return out


def plan_answer(model: str, messages: list[dict[str, Any]], opts: SimOptions) -> list[str]:
    """The token pieces a request will stream, exactly ``opts.tokens`` of them.

    Deterministic for (model, prompt, seed, tokens, lang, weird); ``max_tokens`` truncation and
    ``stamp`` prefixes are applied by the server on top of this plan.
    """
    prompt = prompt_of(messages)
    rng = random.Random(f"{model}|{prompt}|{opts.seed}|{opts.tokens}|{opts.lang}")
    if opts.echo:
        return _tokenize(prompt, rng)
    writer = _Writer(rng, opts.lang, _topic(prompt, opts.lang))
    budget = opts.tokens
    tokens: list[str] = []
    if budget > _TAIL_MIN:
        for block in writer.blocks():
            piece = _tokenize(("\n\n" if tokens else "") + block, rng)
            if len(tokens) + len(piece) > budget - _TAIL_MIN:
                break
            tokens += piece
    tokens += _closing(writer, rng, budget - len(tokens), "\n\n" if tokens else "")
    if opts.weird:
        tokens = _weird(tokens, rng)
    return tokens


# --------------------------------------------------------------------------------------------
# Reasoning text
# --------------------------------------------------------------------------------------------

_EN_THINK_OPENERS = (
    "Okay, the user asks about {t}.",
    "Okay, the user wants to know about {t}.",
    "Alright, the question is about {t}.",
)
_EN_THINK = (
    "Let me consider what they actually need here.",
    "First, I should recall how {t} usually works.",
    "Hmm, there are a few angles to this.",
    "Maybe I should start with a short overview and then go into the details.",
    "Wait, I should also mention the common pitfalls.",
    "They might be new to {t}, so the explanation should stay clear.",
    "An example would help make this concrete.",
    "Let me think about the trade-offs involved.",
    "I should check whether there are edge cases worth pointing out.",
    "A small table could make the comparison easier to read.",
    "So the structure could be: overview, key points, an example, then next steps.",
    "I need to make sure the answer is accurate and not too long.",
    "Latency and throughput are easy to confuse, so I should keep them apart.",
    "Is there a simpler way to put this? Probably, if I lead with the main idea.",
    "Let me double-check that the code snippet actually runs.",
    "Okay, I think I have enough to write a good answer.",
)
_ZH_THINK_OPENERS = ("嗯，用户问的是{t}。", "好的，用户想了解{t}。", "嗯，这个问题是关于{t}的。")
_ZH_THINK = (
    "让我先想想他们真正需要的是什么。",
    "首先，我应该回忆一下{t}通常是怎么工作的。",
    "嗯，这个问题可以从几个角度来看。",
    "也许应该先给一个简短的概述，再展开细节。",
    "等等，我还应该提一下常见的误区。",
    "用户可能刚接触{t}，所以解释要清楚一些。",
    "举个例子会让内容更具体。",
    "我来考虑一下其中涉及的权衡。",
    "还要检查有没有值得指出的边界情况。",
    "用一个小表格来对比可能会更清楚。",
    "所以结构可以是：概述、要点、示例，然后是下一步。",
    "我需要确保回答准确，而且不要太长。",
    "延迟和吞吐量容易混淆，应该分开说明。",
    "有没有更简单的说法？先讲核心思路应该更好。",
    "好，我觉得已经可以组织回答了。",
)


def plan_reasoning(model: str, messages: list[dict[str, Any]], opts: SimOptions) -> list[str]:
    """The thinking token pieces streamed before the answer, exactly ``opts.think`` of them.

    Deterministic for (model, prompt, seed, think, lang, weird) and drawn from its own RNG, so
    the answer a request gets is the same whether it thinks or not.
    """
    if opts.think <= 0:
        return []
    prompt = prompt_of(messages)
    rng = random.Random(f"{model}|{prompt}|{opts.seed}|{opts.think}|{opts.lang}|think")
    zh = opts.lang == "zh"
    topic = _topic(prompt, opts.lang)
    bank = list(_ZH_THINK if zh else _EN_THINK)
    rng.shuffle(bank)
    joiner = "" if zh else " "
    text = rng.choice(_ZH_THINK_OPENERS if zh else _EN_THINK_OPENERS).replace("{t}", topic)
    tokens = _tokenize(text, rng)
    index = 0
    while len(tokens) < opts.think:
        # Thinking comes in short paragraphs, like the real reasoning_content does.
        sep = "\n\n" if rng.random() < 0.25 else joiner
        sentence = bank[index % len(bank)].replace("{t}", topic)
        index += 1
        tokens += _tokenize(sep + sentence, rng)
    tokens = tokens[: opts.think]
    end = "。" if zh else "."
    last = tokens[-1]
    if last.rstrip()[-1:] in {",", ";", ":", "，", "；", "：", "、"}:
        tokens[-1] = last.rstrip()[:-1] + end
    elif last.rstrip()[-1:] not in {".", "?", "。", "？"}:
        tokens[-1] = last + end
    if opts.weird:
        tokens = _weird(tokens, rng)
    return tokens
