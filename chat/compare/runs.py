"""The comparison: one prompt answered twice at the same instant, side by side.

By default with streaming on and off ("streaming" pairing); a "setups" run gives each pane
its own provider, model, streaming and thinking. Either may go through a gateway timeout:
a proxy's idle read timeout, applied for real to both requests.

Each side is a conversation of its own (``purpose="compare"``), so both answers go through the
chat's generation service and relay unchanged. This module holds what a run is: creating runs
and trials, what the browser measured, each side's figures and the verdict (``service``
drives the trials; ``rendering`` draws them).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from chat import providers
from chat.accounts import access, usage
from chat.exceptions import ClientError
from chat.generation.turns import Turn, create_turn
from chat.llm import Wording
from chat.models import ComparisonResult, ComparisonRun, Conversation, Message
from chat.owners import Owner
from chat.rendering import fragments
from chat.rendering.i18n import duration, seconds, upstream_message

logger = logging.getLogger(__name__)

MODES = (ComparisonRun.Mode.STREAM, ComparisonRun.Mode.NOSTREAM)
TRIAL_CHOICES = (1, 5)
STREAMING, SETUPS = "streaming", "setups"
PAIRINGS = (STREAMING, SETUPS)  # what the panes differ in; the field has no choices: checked here
GATEWAY_TIMEOUTS = (5.0, 10.0, 30.0)  # seconds; the long-essay preset passes 5 s unstreamed
# Each pane's letter (``data-pane``): the left one is "stream" in ``data-mode`` and the results
# whatever it runs, the right one "nostream", so the socket's messages stay as they were.
PANES: dict[str, str] = {ComparisonRun.Mode.STREAM: "a", ComparisonRun.Mode.NOSTREAM: "b"}
DONE_FRAME = '<span id="compare-done" hx-swap-oob="true" data-done hidden></span>'
PROMPT_LIMIT = 4000
SERVER_FIGURES_DELAY = 1.5  # seconds a browser has to report a trial before the server's show
PRESETS = [
    (_("Short question"), "What is the capital of Australia, and why is it not Sydney?"),
    ("短问题", "为什么天空是蓝色的?请简单回答。"),
    (
        _("Long essay"),
        "Write a detailed essay (about 800 words) on how streaming responses change the way "
        "people experience AI assistants, with headings and a short conclusion.",
    ),
    ("长文章", "请写一篇约800字的文章,介绍流式输出如何改善大模型应用的用户体验,包含小标题和总结。"),
    (
        _("Code"),
        "Write a Python function that parses Server-Sent Events from a byte stream, "
        "with tests, and explain the tricky cases.",
    ),
]


def upstream_label(upstream: providers.Upstream | None = None) -> str:
    """What a run measures, for the page and the saved run: never the key, only the host."""
    upstream = upstream or providers.default_upstream()
    host = upstream.host
    if upstream.simulator or upstream.name.lower() == host.lower():
        return host
    return f"{upstream.name} ({host})"


# --- Database work (sync) ---------------------------------------------------------------------


def owned_runs(owner: Owner) -> QuerySet[ComparisonRun]:
    runs = ComparisonRun.objects.prefetch_related("results__answer")
    if owner.user_id is not None:
        return runs.filter(user_id=owner.user_id)
    return runs.filter(user__isnull=True, session_key=owner.session_key)


def get_run(owner: Owner, run_id: int) -> ComparisonRun | None:
    return owned_runs(owner).filter(pk=run_id).first()


@dataclass(frozen=True, slots=True)
class Setup:
    """What one pane runs in a "setups" run, as the form asked for it (checked when made)."""

    choice: str  # a picker value: the provider and the model
    stream: bool = True
    enable_thinking: bool | None = None  # None: the model's default


def parse_pairing(value: Any) -> str:
    """The run message's ``pairing``: absent means today's streaming on vs off."""
    if value in (None, ""):
        return STREAMING
    if value not in PAIRINGS:
        raise ClientError(gettext("That comparison is not offered."))
    return str(value)


def parse_gateway_timeout(value: Any) -> float | None:
    """The run message's ``gateway_timeout``: empty for none, else one of the offered seconds."""
    if value in (None, "", "none"):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if number not in GATEWAY_TIMEOUTS:
        raise ClientError(gettext("That gateway timeout is not offered."))
    return number


# The form's thinking values: the model's default, on, off.
THINKING: dict[Any, bool | None] = {"": None, None: None, "on": True, "off": False}


def parse_setup(content: Mapping[str, Any], pane: str) -> Setup:
    """One pane's setup from the run message: ``model_<pane>``, ``stream_<pane>`` ("on"/"off")
    and ``thinking_<pane>`` ("", "on", "off")."""
    choice = content.get(f"model_{pane}")
    stream = content.get(f"stream_{pane}", "on")
    thinking = content.get(f"thinking_{pane}", "")
    if not isinstance(choice, str) or stream not in ("on", "off") or thinking not in THINKING:
        raise ClientError(gettext("That request was not understood."))
    return Setup(choice=choice, stream=stream == "on", enable_thinking=THINKING[thinking])


def create_run(
    owner: Owner,
    prompt: str,
    model: str,
    trials: int,
    *,
    pairing: str = STREAMING,
    gateway_timeout_s: float | None = None,
    setups: Sequence[Setup] = (),
) -> ComparisonRun:
    """Check the request and save the run with its two (empty) sides; nothing is sent yet.

    A "streaming" run asks ``model`` with streaming on (left) and off (right); a "setups" run
    gives each pane its own ``Setup`` (left first). Either may go through a gateway timeout.
    """
    prompt = prompt.strip()
    if not prompt:
        raise ClientError(gettext("Type a prompt first."))
    if len(prompt) > PROMPT_LIMIT:
        raise ClientError(
            gettext("That prompt is too long (%(length)s characters; at most %(limit)s).")
            % {"length": f"{len(prompt):,}", "limit": f"{PROMPT_LIMIT:,}"}
        )
    pairing = parse_pairing(pairing)
    if gateway_timeout_s is not None and gateway_timeout_s not in GATEWAY_TIMEOUTS:
        raise ClientError(gettext("That gateway timeout is not offered."))
    plan: list[tuple[providers.Upstream, str, bool, bool | None]]
    if pairing == STREAMING:
        upstream, model = providers.parse_choice(model)
        plan = [(upstream, model, mode == ComparisonRun.Mode.STREAM, None) for mode in MODES]
    else:
        if len(setups) != len(MODES):
            raise ClientError(gettext("That request was not understood."))
        plan = []
        for setup in setups:
            upstream, chosen = providers.parse_choice(setup.choice)
            plan.append((upstream, chosen, setup.stream, setup.enable_thinking))
    allowed = access.of_user(owner.user_id)
    for upstream, chosen, _stream, _thinking in plan:
        access.check_model_allowed(allowed, upstream, chosen)
    if trials not in TRIAL_CHOICES:
        raise ClientError(gettext("A comparison runs once or 5 times."))
    title = " ".join(prompt.split())[:50]
    usage.check_rate(owner.user_id, owner.session_key, needed=trials * len(MODES))
    sides = {}
    with transaction.atomic():
        for mode, (upstream, chosen, stream, thinking) in zip(MODES, plan, strict=True):
            sides[mode] = Conversation.objects.create(
                purpose=Conversation.Purpose.COMPARE,
                title=f"{title} ({mode})",
                provider_id=upstream.provider_id,
                model=chosen,
                stream=stream,
                enable_thinking=thinking,
                **owner.new_conversation_fields(),
            )
        left, right = plan
        if pairing == STREAMING:
            model_label, measured = left[1], upstream_label(left[0])
        else:
            model_label = left[1] if left[1] == right[1] else f"{left[1]} / {right[1]}"
            labels = dict.fromkeys([upstream_label(left[0]), upstream_label(right[0])])
            measured = " / ".join(labels)
        return ComparisonRun.objects.create(
            prompt=prompt,
            model=model_label[:200],
            trials=trials,
            upstream=measured[:200],
            buffered=pairing == STREAMING and fragments.is_stream_only(left[1]),
            stream_conversation=sides[ComparisonRun.Mode.STREAM],
            nostream_conversation=sides[ComparisonRun.Mode.NOSTREAM],
            pairing=pairing,
            gateway_timeout_s=gateway_timeout_s,
            **owner.new_conversation_fields(),
        )


def create_trial(owner: Owner, run: ComparisonRun, trial: int, live: set[int]) -> list[Turn]:
    """Both sides' turns of one trial, saved together before either is sent."""
    with transaction.atomic():
        turns = [
            create_turn(owner, run.conversation_for(mode).pk, run.prompt, live, standalone=True)
            for mode in MODES
        ]
        if run.gateway_timeout_s:  # both requests go through the same (simulated) gateway
            turns = [replace(turn, read_timeout=run.gateway_timeout_s) for turn in turns]
        for mode, turn in zip(MODES, turns, strict=True):
            ComparisonResult.objects.create(
                run=run, trial=trial, mode=mode, answer_id=turn.answer.id
            )
    return turns


def save_browser_timings(
    owner: Owner,
    run_id: int,
    trial: int,
    mode: str,
    first_text_ms: float | None,
    complete_ms: float | None,
) -> ComparisonResult:
    """Keep what the browser measured for one side (from the click, in milliseconds)."""
    result = (
        ComparisonResult.objects.filter(run__in=owned_runs(owner), run_id=run_id, trial=trial)
        .filter(mode=mode)
        .first()
    )
    if result is None:
        raise ClientError("No such comparison.")
    result.browser_first_text_ms = first_text_ms
    result.browser_complete_ms = complete_ms
    result.save(update_fields=["browser_first_text_ms", "browser_complete_ms"])
    return result


# --- Figures -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Side:
    """One side of one trial as the page shows it."""

    mode: str
    trial: int
    status: str
    first_text_s: float | None  # from the click, as the browser saw it (server's if unknown)
    complete_s: float | None
    measured_in_browser: bool
    server_first_token_s: float | None
    server_total_s: float | None
    tokens_per_second: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    error_message: str  # English, as exported; the page shows it with ``|error_text``
    error_wording: Mapping[str, Any] | None = field(default=None, hash=False)
    tokens_estimated: bool = False  # the counts are our estimate: no usage was reported
    error_kind: str = ""  # the error tree's kind ("timeout", …); "" when it did not fail
    setup: str = ""  # a "setups" run: what sets this pane apart, in words ("" otherwise)
    gateway_timeout_s: float | None = None  # the run's gateway (idle read) timeout, if any

    @property
    def timed_out(self) -> bool:
        """Cut by the gateway's idle timeout: the upstream's own timeout, with one set."""
        return bool(self.gateway_timeout_s) and self.failed and self.error_kind == "timeout"

    @property
    def relay_ms(self) -> float | None:
        """What the relay and the network added: browser time minus the server's."""
        if not self.measured_in_browser or self.complete_s is None or self.server_total_s is None:
            return None
        return (self.complete_s - self.server_total_s) * 1000

    @property
    def failed(self) -> bool:
        return self.status in {Message.Status.ERROR, Message.Status.STOPPED}


def side_of(
    result: ComparisonResult, *, setup: str = "", gateway_timeout_s: float | None = None
) -> Side:
    answer = result.answer
    view = fragments.message_view(answer) if answer is not None else None
    server_first = view.ttft_s if view else None
    server_total = view.total_s if view else None
    in_browser = result.browser_complete_ms is not None
    if in_browser:
        first = result.browser_first_text_ms
        first_s = first / 1000 if first is not None else None
        complete_s = (result.browser_complete_ms or 0) / 1000
    else:
        first_s, complete_s = server_first, server_total
    deleted = Wording("The answer was deleted.")
    return Side(
        mode=result.mode,
        trial=result.trial,
        status=answer.status if answer else Message.Status.ERROR,
        first_text_s=first_s,
        complete_s=complete_s,
        measured_in_browser=in_browser,
        server_first_token_s=server_first,
        server_total_s=server_total,
        tokens_per_second=view.tokens_per_second if view else None,
        prompt_tokens=answer.prompt_tokens if answer else None,
        completion_tokens=answer.completion_tokens if answer else None,
        total_tokens=answer.total_tokens if answer else None,
        error_message=answer.error_message if answer else deleted.text(),
        error_wording=answer.error_wording if answer else deleted.as_data(),
        tokens_estimated=answer.tokens_estimated if answer else False,
        error_kind=answer.error_kind if answer else "",
        setup=setup,
        gateway_timeout_s=gateway_timeout_s,
    )


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(present) if present else None


def verdict(stream: Sequence[Side], nostream: Sequence[Side]) -> str:
    """The plain sentence between the panes (medians when there are several trials).

    ``stream`` and ``nostream`` are the left and right panes' sides; in a "setups" run (the
    sides carry their ``setup``) they are A and B, whatever each streamed.
    """
    if not stream or not nostream:
        return ""
    if any(s.status == Message.Status.STREAMING for s in (*stream, *nostream)):
        # Not while a side still streams: a side the gateway cut, or any quicker one, is
        # reported by the browser first, and the other's figures are not there yet.
        return ""
    if stream[0].setup:
        return setups_verdict(stream, nostream)
    if all(s.failed for s in nostream) and all(s.timed_out for s in nostream):
        return _timeout_verdict(nostream, stream)
    if all(s.failed for s in stream) and all(s.timed_out for s in stream):
        return _timeout_verdict(stream, nostream)
    if all(s.failed for s in stream):
        return gettext("The streaming side failed, so there is nothing to compare yet.")
    if all(s.failed for s in nostream):
        return gettext("The non-streaming side failed, so there is nothing to compare yet.")
    on_first = _median([s.first_text_s for s in stream if not s.failed])
    off_first = _median([s.first_text_s for s in nostream if not s.failed])
    on_done = _median([s.complete_s for s in stream if not s.failed])
    off_done = _median([s.complete_s for s in nostream if not s.failed])
    if on_first is None or off_first is None:
        return ""
    # Whole clauses, not pieces, so that each language can order its words.
    runs = len(stream)
    values = {"on": seconds(on_first), "off": seconds(off_first), "runs": runs}
    if on_first > 0 and off_first > on_first:
        values["times"] = f"{off_first / on_first:.0f}"
        if runs > 1:
            reading = ngettext(
                "Over %(runs)d run (medians), with streaming, reading began after %(on)s "
                "instead of %(off)s (%(times)s× sooner)",
                "Over %(runs)d runs (medians), with streaming, reading began after %(on)s "
                "instead of %(off)s (%(times)s× sooner)",
                runs,
            )
        else:
            reading = gettext(
                "With streaming, reading began after %(on)s instead of %(off)s (%(times)s× sooner)"
            )
    elif runs > 1:
        reading = ngettext(
            "Over %(runs)d run (medians), with streaming, reading began after %(on)s "
            "instead of %(off)s",
            "Over %(runs)d runs (medians), with streaming, reading began after %(on)s "
            "instead of %(off)s",
            runs,
        )
    else:
        reading = gettext("With streaming, reading began after %(on)s instead of %(off)s")
    reading %= values
    if on_done is None or off_done is None:
        return gettext("%(reading)s.") % {"reading": reading}
    gap = {"seconds": seconds(abs(on_done - off_done))}
    if abs(on_done - off_done) <= 0.15 * max(on_done, off_done):
        finish = gettext("both answers took about as long to finish")
    elif on_done < off_done:
        finish = gettext("the streamed answer finished %(seconds)s sooner") % gap
    else:
        finish = gettext("the non-streamed answer finished %(seconds)s sooner") % gap
    return gettext("%(reading)s; %(finish)s.") % {"reading": reading, "finish": finish}


def run_sides(run: ComparisonRun) -> dict[str, list[Side]]:
    """Each mode's sides in trial order (uses prefetched ``results__answer`` when there)."""
    names = setup_names(pane_setups(run)) if run.pairing == SETUPS else {}
    sides: dict[str, list[Side]] = {mode: [] for mode in MODES}
    for result in sorted(run.results.all(), key=lambda r: r.trial):
        sides[result.mode].append(
            side_of(
                result,
                setup=names.get(result.mode, ""),
                gateway_timeout_s=run.gateway_timeout_s,
            )
        )
    return sides


# --- Pairings ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaneSetup:
    """What one pane ran, read back from its conversation (for its header and the verdict)."""

    model: str
    provider: str  # the provider's name, in the reader's language when it is ours
    stream: bool
    enable_thinking: bool | None
    buffered: bool  # stream off, but the model only streams: the server buffered it

    def parts(self) -> dict[str, str]:
        """Each thing a pane may differ in, in words, keyed by what it is."""
        if self.enable_thinking is None:
            thinking = gettext("thinking: model default")
        else:
            thinking = gettext("thinking on") if self.enable_thinking else gettext("thinking off")
        return {
            "model": self.model,
            "provider": self.provider,
            "stream": gettext("streaming on") if self.stream else gettext("streaming off"),
            "thinking": thinking,
        }

    def description(self) -> str:
        """The pane's header line: everything it ran."""
        return " · ".join(self.parts().values())


def pane_setups(run: ComparisonRun) -> dict[str, PaneSetup]:
    """Each pane's setup by mode (left "stream", right "nostream"), from its conversation."""
    setups: dict[str, PaneSetup] = {}
    for mode in MODES:
        conversation = run.conversation_for(mode)
        provider = conversation.provider
        name = provider.name if provider is not None else providers.default_upstream().name
        setups[mode] = PaneSetup(
            model=conversation.model,
            provider=upstream_message(name),
            stream=conversation.stream,
            enable_thinking=conversation.enable_thinking,
            buffered=not conversation.stream and fragments.is_stream_only(conversation.model),
        )
    return setups


def setup_names(setups: Mapping[str, PaneSetup]) -> dict[str, str]:
    """What sets each pane apart from the other, for the verdict: "qwen-max" when one thing
    differs, "A (qwen-max, thinking off)" when more do (the letter keeps the sentence
    readable), "A" and "B" when nothing does."""
    left, right = (setups[mode].parts() for mode in MODES)
    differing = [key for key in left if left[key] != right[key]]
    if len(differing) == 1:
        return {mode: setups[mode].parts()[differing[0]] for mode in MODES}
    names: dict[str, str] = {}
    separator = gettext(", ")
    for mode in MODES:
        letter = PANES[mode].upper()
        if differing:
            parts = separator.join(setups[mode].parts()[key] for key in differing)
            names[mode] = gettext("%(pane)s (%(setup)s)") % {"pane": letter, "setup": parts}
        else:
            names[mode] = letter
    return names


def _timeout_verdict(failed: Sequence[Side], other: Sequence[Side]) -> str:
    """A side the gateway's idle timeout cut: which, why, and how the other fared."""
    timeout = duration(failed[0].gateway_timeout_s, -1)  # "10 s", not "10.0 s"
    if all(s.timed_out for s in other):
        return gettext(
            "The gateway's %(timeout)s idle timeout cut both requests: neither answer kept "
            "the connection busy."
        ) % {"timeout": timeout}
    done = seconds(_median([s.complete_s for s in other if not s.failed]))
    values = {"timeout": timeout, "done": done, "cut": failed[0].setup, "other": other[0].setup}
    mode = failed[0].mode
    if failed[0].setup:
        return (
            gettext(
                "With %(cut)s, the gateway's %(timeout)s idle timeout cut the request before any "
                "answer arrived; with %(other)s, the answer finished in %(done)s."
            )
            % values
        )
    if mode == ComparisonRun.Mode.NOSTREAM:
        return (
            gettext(
                "Without streaming, the gateway's %(timeout)s idle timeout cut the request before "
                "any answer arrived; with streaming, the answer kept the connection busy and "
                "finished in %(done)s."
            )
            % values
        )
    return (
        gettext(
            "With streaming, the gateway's %(timeout)s idle timeout cut the request (nothing "
            "arrived for that long); without streaming, the answer arrived after %(done)s."
        )
        % values
    )


def _about_the_same(a: float, b: float) -> bool:
    return abs(a - b) <= 0.15 * max(a, b)


def setups_verdict(left: Sequence[Side], right: Sequence[Side]) -> str:
    """A "setups" run's verdict: first text, complete answer, tokens/s and tokens, A vs B."""
    if not left or not right:
        return ""
    left_failed, right_failed = all(s.failed for s in left), all(s.failed for s in right)
    if left_failed and right_failed:
        if all(s.timed_out for s in left):
            return _timeout_verdict(left, right)
        return gettext("Both setups failed, so there is nothing to compare yet.")
    for failed, other in ((left, right), (right, left)):
        if all(s.failed for s in failed):
            if all(s.timed_out for s in failed):
                return _timeout_verdict(failed, other)
            return gettext("%(setup)s failed, so there is nothing to compare yet.") % {
                "setup": failed[0].setup
            }
    a, b = left[0].setup, right[0].setup

    def med(sides: Sequence[Side], name: str) -> float | None:
        return _median([getattr(s, name) for s in sides if not s.failed])

    sentences = []
    runs = len(left)
    if runs > 1:
        sentences.append(
            ngettext("Over %(runs)d run (medians):", "Over %(runs)d runs (medians):", runs)
            % {"runs": runs}
        )
    a_first, b_first = med(left, "first_text_s"), med(right, "first_text_s")
    a_done, b_done = med(left, "complete_s"), med(right, "complete_s")
    if a_first is not None and b_first is not None:
        fast, slow = (a, b) if a_first <= b_first else (b, a)
        values = {
            "fast": fast,
            "slow": slow,
            "gap": seconds(abs(a_first - b_first)),
            "fast_first": seconds(min(a_first, b_first)),
            "slow_first": seconds(max(a_first, b_first)),
        }
        if _about_the_same(a_first, b_first):
            reading = (
                gettext(
                    "%(fast)s and %(slow)s showed text after about the same wait "
                    "(%(fast_first)s vs %(slow_first)s)"
                )
                % values
            )
        else:
            reading = (
                gettext(
                    "%(fast)s showed text %(gap)s sooner than %(slow)s "
                    "(%(fast_first)s vs %(slow_first)s)"
                )
                % values
            )
        if a_done is None or b_done is None:
            sentences.append(gettext("%(reading)s.") % {"reading": reading})
        else:
            if _about_the_same(a_done, b_done):
                finish = gettext("both finished after about as long")
            else:
                finish = gettext("%(setup)s finished %(seconds)s sooner") % {
                    "setup": a if a_done < b_done else b,
                    "seconds": seconds(abs(a_done - b_done)),
                }
            sentences.append(
                gettext("%(reading)s; %(finish)s.") % {"reading": reading, "finish": finish}
            )
    a_speed, b_speed = med(left, "tokens_per_second"), med(right, "tokens_per_second")
    if a_speed and b_speed:
        if _about_the_same(a_speed, b_speed):
            sentences.append(
                gettext("Both produced about as many tokens per second (%(a)s and %(b)s).")
                % {"a": f"{a_speed:.1f}", "b": f"{b_speed:.1f}"}
            )
        else:
            faster, slower = (a, b) if a_speed > b_speed else (b, a)
            sentences.append(
                gettext("%(faster)s produced %(times)s× the tokens per second of %(slower)s.")
                % {
                    "faster": faster,
                    "slower": slower,
                    "times": f"{max(a_speed, b_speed) / min(a_speed, b_speed):.1f}",
                }
            )
    a_tokens, b_tokens = med(left, "completion_tokens"), med(right, "completion_tokens")
    if a_tokens is not None and b_tokens is not None:
        sentences.append(
            gettext("%(a)s wrote %(a_tokens)s tokens, %(b)s %(b_tokens)s.")
            % {"a": a, "b": b, "a_tokens": f"{a_tokens:.0f}", "b_tokens": f"{b_tokens:.0f}"}
        )
    return " ".join(sentences)


# --- Exports -----------------------------------------------------------------------------------


def run_export_fields(run: ComparisonRun) -> dict[str, Any]:
    """What the JSON export says of a run beside its figures: the pairing, the gateway and, in
    a "setups" run, what each pane ran (the provider by its name, never its key)."""
    fields: dict[str, Any] = {"pairing": run.pairing, "gateway_timeout_s": run.gateway_timeout_s}
    if run.pairing == SETUPS:
        fields["setups"] = {}
        for mode in MODES:
            conversation = run.conversation_for(mode)
            provider = conversation.provider
            fields["setups"][PANES[mode]] = {
                "mode": mode,
                "model": conversation.model,
                "provider": provider.name if provider else providers.default_upstream().name,
                "stream": conversation.stream,
                "enable_thinking": conversation.enable_thinking,
            }
    return fields


def side_export_fields(side: Side, run: ComparisonRun) -> dict[str, Any]:
    """The columns each exported row (JSON and CSV) adds: its pane, its setup, the gateway,
    and the error's kind ("timeout" when the gateway cut it)."""
    return {
        "pane": PANES.get(side.mode, ""),
        "pairing": run.pairing,
        "setup": side.setup,
        "gateway_timeout_s": run.gateway_timeout_s,
        "error_kind": side.error_kind,
    }


# --- Driving a run -----------------------------------------------------------------------------
