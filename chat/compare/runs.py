"""The comparison: one prompt answered with streaming on and off at the same instant.

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
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from chat import providers
from chat.accounts import usage
from chat.exceptions import ClientError
from chat.generation.turns import Turn, create_turn
from chat.llm import Wording
from chat.models import ComparisonResult, ComparisonRun, Conversation, Message
from chat.owners import Owner
from chat.rendering import fragments
from chat.rendering.i18n import seconds

logger = logging.getLogger(__name__)

MODES = (ComparisonRun.Mode.STREAM, ComparisonRun.Mode.NOSTREAM)
TRIAL_CHOICES = (1, 5)
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


def create_run(owner: Owner, prompt: str, model: str, trials: int) -> ComparisonRun:
    """Check the request and save the run with its two (empty) sides; nothing is sent yet."""
    prompt = prompt.strip()
    if not prompt:
        raise ClientError(gettext("Type a prompt first."))
    if len(prompt) > PROMPT_LIMIT:
        raise ClientError(
            gettext("That prompt is too long (%(length)s characters; at most %(limit)s).")
            % {"length": f"{len(prompt):,}", "limit": f"{PROMPT_LIMIT:,}"}
        )
    upstream, model = providers.parse_choice(model)
    if trials not in TRIAL_CHOICES:
        raise ClientError(gettext("A comparison runs once or 5 times."))
    title = " ".join(prompt.split())[:50]
    usage.check_rate(owner.user_id, owner.session_key, needed=trials * len(MODES))
    sides = {}
    with transaction.atomic():
        for mode in MODES:
            sides[mode] = Conversation.objects.create(
                purpose=Conversation.Purpose.COMPARE,
                title=f"{title} ({mode})",
                provider_id=upstream.provider_id,
                model=model,
                stream=mode == ComparisonRun.Mode.STREAM,
                **owner.new_conversation_fields(),
            )
        return ComparisonRun.objects.create(
            prompt=prompt,
            model=model,
            trials=trials,
            upstream=upstream_label(upstream),
            buffered=fragments.is_stream_only(model),
            stream_conversation=sides[ComparisonRun.Mode.STREAM],
            nostream_conversation=sides[ComparisonRun.Mode.NOSTREAM],
            **owner.new_conversation_fields(),
        )


def create_trial(owner: Owner, run: ComparisonRun, trial: int, live: set[int]) -> list[Turn]:
    """Both sides' turns of one trial, saved together before either is sent."""
    with transaction.atomic():
        turns = [
            create_turn(owner, run.conversation_for(mode).pk, run.prompt, live, standalone=True)
            for mode in MODES
        ]
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

    @property
    def relay_ms(self) -> float | None:
        """What the relay and the network added: browser time minus the server's."""
        if not self.measured_in_browser or self.complete_s is None or self.server_total_s is None:
            return None
        return (self.complete_s - self.server_total_s) * 1000

    @property
    def failed(self) -> bool:
        return self.status in {Message.Status.ERROR, Message.Status.STOPPED}


def side_of(result: ComparisonResult) -> Side:
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
    )


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(present) if present else None


def verdict(stream: Sequence[Side], nostream: Sequence[Side]) -> str:
    """The plain sentence between the panes (medians when there are several trials)."""
    if not stream or not nostream:
        return ""
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
    sides: dict[str, list[Side]] = {mode: [] for mode in MODES}
    for result in sorted(run.results.all(), key=lambda r: r.trial):
        sides[result.mode].append(side_of(result))
    return sides


# --- Driving a run -----------------------------------------------------------------------------
