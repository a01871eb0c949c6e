"""Continue: an answer cut at the length limit goes on from where it stopped.

The upstream is asked with the history up to the cut answer, the cut answer as the assistant's
message, and one more user message asking it to go on exactly where it stopped without
repeating anything (``CONTINUE_PROMPT``). That works with every OpenAI-compatible server and
DashScope native alike; DashScope's "partial mode" (``"partial": true`` on a trailing assistant
message) would continue mid-sentence more faithfully but only some Qwen models accept it.

The continuation is the same answer, not a new one: the row goes back to "streaming" with its
text kept, the generation starts from that text (so snapshots and reconnects show it whole),
its deltas append to it, and the final save writes the whole text with the figures added up
(``state._add_continued``).
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext

from chat.exceptions import ClientError
from chat.models import Message
from chat.owners import Owner
from chat.rendering import fragments

from .turns import Continued, Turn, context_of, count_request, latest_answer, request_options

CONTINUE_PROMPT = (
    "Your previous answer was cut off at the length limit. Continue it exactly where it "
    "stopped, without repeating anything and without any preamble."
)
"""Sent upstream in English whatever the page's language: it is an instruction to the model,
which answers in the conversation's language."""


def create_continuation(owner: Owner, conversation_id: int, answer_id: int, live: set[int]) -> Turn:
    """Put the latest answer, cut at the length limit, back to streaming to go on from its
    text; refused unless it is the owner's latest answer, cut by length, and nothing streams."""
    with transaction.atomic():
        found = latest_answer(
            owner,
            conversation_id,
            answer_id,
            live,
            gettext("Only the latest answer can be continued."),
        )
        conversation, upstream, rows, versions = found[:4]
        answer = Message.objects.get(pk=answer_id)  # every field: the history read only some
        version_ids = versions.get(answer.version_of_id or answer.pk, ())
        before = fragments.message_view(answer, is_latest=True, version_ids=version_ids)
        if not before.can_continue:  # the rule that shows the button
            raise ClientError(gettext("Only an answer cut at the length limit can be continued."))
        count_request(conversation, found.checks)
        Message.objects.filter(pk=answer.pk).update(
            status=Message.Status.STREAMING, heartbeat_at=Now(), finish_reason=""
        )
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["updated_at"])
    streaming = fragments.message_view(
        Message(
            pk=answer.pk,
            conversation_id=conversation.pk,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            model=answer.model,
            provider_name=answer.provider_name,
            streamed=answer.streamed,
        ),
        is_latest=True,
        version_ids=version_ids,
    )
    context = context_of(conversation, rows)
    context.append({"role": "user", "content": CONTINUE_PROMPT})
    return Turn(
        conversation_id=conversation.pk,
        model=conversation.model,
        stream=conversation.stream,
        context=context,
        answer=streaming,
        upstream=upstream,
        options=request_options(conversation),
        user_id=conversation.user_id,
        owner=owner,
        continued=Continued(before, bytes(answer.timeline or b"")),
    )
