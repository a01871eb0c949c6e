"""``manage.py purge_deleted [--older-than SECONDS]``: delete deleted conversations for good.

A deleted conversation stays restorable (Undo) until purged. Pages purge their owner's old
ones as they go; run this from cron to purge everyone's, whoever never comes back. Images
uploaded but never sent are pruned after a day too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.conversations.work import PURGE_AFTER, purge_deleted
from chat.images import prune_orphans


class Command(BaseCommand):
    help = "Delete for good the conversations deleted more than --older-than seconds ago."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=PURGE_AFTER.total_seconds(),
            help=f"Seconds since the delete (default {PURGE_AFTER.total_seconds():.0f}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        seconds = options["older_than"]
        if seconds < 0:
            raise CommandError("--older-than cannot be negative.")
        count = purge_deleted(timedelta(seconds=seconds))
        self.stdout.write(f"Purged {count} deleted conversation{'' if count == 1 else 's'}.")
        # Images uploaded and never sent (the message was not written after all).
        orphans = prune_orphans()
        self.stdout.write(f"Pruned {orphans} unsent image{'' if orphans == 1 else 's'}.")
