"""Per-request options: what a ``sim`` object or ``#sim`` line may set, and how they merge.

Pure, so a logged ``options`` dict turns back into the same ``SimOptions`` a test can replan
with; the defaults drawn per prompt make different prompts look varied but each one repeatable.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simulator.hostile import MAX_FENCE_CHARS, MAX_HUGE_CHARS
from simulator.prompt import (
    asked_tokens,
    asks_for_math,
    has_cjk,
    last_user_text,
    split_directives,
)

__all__ = [
    "FAULTS",
    "FAULT_FRAMINGS",
    "HTTP_FAULTS",
    "MIDSTREAM_KINDS",
    "OPTION_KEYS",
    "REASONING_FIELDS",
    "SimOptionError",
    "SimOptions",
    "parse_options",
    "resolve_options",
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
    huge: int = 0
    """The answer's middle token is this many characters: one enormous SSE line
    (``simulator.hostile``). 0: none."""
    fence: int = 0
    """The answer is a code fence that never closes, this many characters, token by token
    (``simulator.hostile``). 0: the usual prose."""
    math: bool = False
    """After its first paragraph the answer shows a formula in TeX: inline ``$…$`` and a
    ``$$`` display block. On by default when the prompt asks about a formula or an equation."""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for the JSON request log."""
        return dataclasses.asdict(self)


_BOOL_KEYS = frozenset(
    {"fragment", "keepalive", "crlf", "weird", "stamp", "shuffle", "final_empty", "echo", "math"}
)
_INT_KEYS = frozenset(
    {"seed", "tokens", "fault_after", "coalesce", "think", "fault_times", "huge", "fence"}
)
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
    if "huge" in out and out["huge"] > MAX_HUGE_CHARS:
        raise SimOptionError(f"sim option 'huge' must be in [0, {MAX_HUGE_CHARS}]")
    if "fence" in out and out["fence"] > MAX_FENCE_CHARS:
        raise SimOptionError(f"sim option 'fence' must be in [0, {MAX_FENCE_CHARS}]")
    return out


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
    always behaves the same while different prompts still look varied; a prompt that asks for
    a length ("about 800 words", "约800字") gets about that many tokens. ``thinking`` says whether
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
    # A prompt asking for a length gets about that length (the long-essay preset runs long
    # enough for a gateway's idle timeout to cut its unstreamed twin, as a real model's would).
    merged.setdefault("tokens", asked_tokens(prompt) or jitter_tokens)
    merged.setdefault("lang", "zh" if has_cjk(prompt) else "en")
    merged.setdefault("think", jitter_think if thinking else 0)
    merged.setdefault("math", asks_for_math(prompt))
    return SimOptions(**merged)
