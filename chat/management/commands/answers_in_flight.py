"""``manage.py answers_in_flight [--settle]``: the answers marked streaming, on every worker.

Each is "live" while its worker's heartbeat is fresh (younger than ``STREAM_ORPHAN_AFTER_MS``
by the database's clock) and "stale" after: its worker died without saving it. ``--settle``
marks the stale ones interrupted (text kept, Retry offered), as the next page load that shows
them would. Safe to run at any time, from any machine with the settings: live answers are
never touched.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import F
from django.db.models.functions import Now

from chat import heartbeats
from chat.generation.records import is_orphan, settle_answers
from chat.models import Message


class Command(BaseCommand):
    help = "List the answers in flight on every worker; --settle marks stale ones interrupted."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--settle", action="store_true", help="Mark stale answers interrupted.")

    def handle(self, *args: Any, settle: bool = False, **options: Any) -> None:
        # Ages by the database's clock, as every worker judges them (chat.heartbeats).
        streaming = Message.objects.filter(status=Message.Status.STREAMING)
        rows = list(
            heartbeats.with_staleness(streaming)
            .annotate(beat_age=Now() - F("heartbeat_at"), age=Now() - F("created_at"))
            .select_related("conversation__user")
            .order_by("created_at")
        )
        stale = [row.pk for row in rows if is_orphan(row, set())]
        self.stdout.write(
            f"{'answer':>8}  {'chat':>6}  {'owner':<16} {'model':<18} {'age':>7}  "
            f"{'beat':>7}  {'chars':>7}  state"
        )
        for row in rows:
            owner = row.conversation.user.get_username() if row.conversation.user else "(session)"
            beat = f"{row.beat_age.total_seconds():.0f} s" if row.beat_age is not None else "never"
            age = f"{row.age.total_seconds():.0f} s"
            state = "stale" if row.pk in stale else "live"
            self.stdout.write(
                f"{row.pk:>8}  {row.conversation_id:>6}  {owner[:16]:<16} {row.model[:18]:<18} "
                f"{age:>7}  {beat:>7}  {len(row.content):>7}  {state}"
            )
        summary = f"{len(rows)} in flight, {len(stale)} stale"
        if settle and stale:
            settle_answers(stale)
            summary += f"; {len(stale)} marked interrupted"
        self.stdout.write(summary)
