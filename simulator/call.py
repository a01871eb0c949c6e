"""One accepted chat request and the tokens it will produce, whichever protocol it came in.

The intake builds a ``Call`` once the body is valid; faults, pacing and both protocols' replies
read everything they need from it, and ``Plan`` fixes the text before any byte is written.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from simulator.images import receipt
from simulator.options import SimOptions
from simulator.prompt import prompt_of
from simulator.script import plan_answer, plan_reasoning

__all__ = ["THINK_CLOSE", "THINK_OPEN", "Call", "Plan"]

_RECEIPT_RE = re.compile(r"\S+\s*|\s+")
THINK_OPEN = "<think>\n"
THINK_CLOSE = "\n</think>\n\n"
"""The tags around inline thinking (``reasoning_field=think``), as vLLM without a parser sends."""


@dataclass
class Call:
    """Everything one chat request needs once its body has been validated."""

    request_id: str
    sim_id: str
    model: str
    messages: list[dict[str, Any]]
    opts: SimOptions
    stream: bool
    include_usage: bool
    max_tokens: int | None
    entry: dict[str, Any]
    protocol: str = "openai"
    result_format: str = "message"
    incremental: bool = True
    multimodal: bool = False  # DashScope's multimodal route: content is a list of parts
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def rng_seed(self) -> str:
        return f"{self.model}|{prompt_of(self.messages)}|{self.opts.seed}"

    @property
    def reasoning_key(self) -> str | None:
        """The JSON key thinking travels under, or None (no thinking, or inline ``<think>``)."""
        if self.opts.think <= 0 or self.opts.reasoning_field == "think":
            return None
        return self.opts.reasoning_field

    @property
    def inline_think(self) -> bool:
        """Thinking goes into ``content`` between ``<think>`` tags (``reasoning_field=think``)."""
        return self.opts.think > 0 and self.opts.reasoning_field == "think"

    @property
    def ping(self) -> str:
        """The protocol's keep-alive comment line (see ``simulator.wire.Wire``)."""
        return ":keepalive" if self.protocol == "dashscope" else ": keep-alive"


@dataclass(frozen=True)
class Plan:
    """The token pieces one request will produce, and how it ends if nothing cuts it short."""

    reasoning: list[str]
    answer: list[str]
    limit: int
    finish_reason: str

    @classmethod
    def of(cls, call: Call) -> Plan:
        """``max_tokens`` cuts the answer only; the thinking is not part of the answer budget."""
        # A vision request's answer first says what it received (``simulator.images``).
        said = receipt(call.messages)
        answer = [*_RECEIPT_RE.findall(said), *plan_answer(call.model, call.messages, call.opts)]
        limit = len(answer) if call.max_tokens is None else min(len(answer), call.max_tokens)
        return cls(
            reasoning=plan_reasoning(call.model, call.messages, call.opts),
            answer=answer,
            limit=limit,
            finish_reason="length" if limit < len(answer) else "stop",
        )

    @property
    def total(self) -> int:
        return len(self.reasoning) + self.limit
