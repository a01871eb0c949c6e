"""Workers whose clocks disagree, against a real database: ``python -m tests.support.clock_skew``
(``DATABASE_URL`` set) migrates that database, plays ``scenario`` through the app's own code
and prints what each answer ended up showing, as JSON.

A clock step or a skew between two hosts cannot be produced for real on one machine, so each
"worker" here is this process with its clock moved: ``django.utils.timezone.now``, which is
all the app reads of the time. The database's clock (SQLite's or PostgreSQL's) is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from unittest import mock

from tests.support.processes import ROOT

SKEW = timedelta(hours=1)
CLOCKS = {"1 h behind": -SKEW, "right": timedelta(0), "1 h ahead": SKEW}


@contextlib.contextmanager
def clock_off_by(offset: timedelta) -> Iterator[None]:
    """This process's clock, as the app reads it, ``offset`` away from the real time."""
    from django.utils import timezone

    real = timezone.now
    with mock.patch("django.utils.timezone.now", lambda: real() + offset):
        yield


def scenario() -> dict[str, str]:
    """Answers started and saved by a worker on one clock, judged by a worker on another: how
    each is shown afterwards (a page load, a socket catching up, a new send, the operator's
    ``answers_in_flight``), keyed by who wrote and who looked."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db.models.functions import Now

    from chat.exceptions import ClientError
    from chat.generation.records import save_progress, saved_answer, settle_orphans
    from chat.generation.turns import create_turn
    from chat.models import Conversation, Message
    from chat.owners import Owner

    def started(key: str, writer: timedelta) -> tuple[Owner, Conversation, int]:
        """An answer begun and saved once by a worker ``writer`` off the real time."""
        owner = Owner(user_id=None, session_key=key.ljust(32, "k")[:32])
        chat = Conversation.objects.create(model="qwen-plus", **owner.new_conversation_fields())
        with clock_off_by(writer):
            answer = create_turn(owner, chat.pk, "Tell me a story", live=set()).answer.id
            save_progress([(answer, "Once upon a time", "")], alive=[answer])
        return owner, chat, answer

    def looked_at(owner: Owner, chat: Conversation, answer: int, clock: timedelta) -> str:
        """What a worker ``clock`` off the real time shows of the answer (none of it runs
        there): on a page load, to a socket, and when the user sends again."""
        with clock_off_by(clock):
            settle_orphans(chat, live=set())
            view = saved_answer(answer, live=set())
            try:
                create_turn(owner, chat.pk, "And then?", live=set())
                send = "accepted"
            except ClientError as refused:
                send = str(refused)
        assert view is not None
        shown = view.status if view.status == "streaming" else f"{view.status} {view.error_kind}"
        return f"{shown}: {view.content!r}; a new send: {send}"

    live: dict[str, tuple[Owner, Conversation, int]] = {}
    for writer, writer_clock in CLOCKS.items():
        for judge in CLOCKS:
            if writer != judge:
                name = f"written by a worker {writer}, seen by one {judge}"
                live[name] = started(f"live {writer}/{judge}", writer_clock)
    dead: dict[str, tuple[Owner, Conversation, int]] = {}
    for judge in CLOCKS:
        owner, chat, answer = started(f"dead {judge}", timedelta(0))
        # Its worker died: its last heartbeat is old by the database's clock.
        old = Now() - timedelta(seconds=2 * settings.STREAM_ORPHAN_AFTER)
        Message.objects.filter(pk=answer).update(heartbeat_at=old)
        dead[f"its worker dead, seen by one {judge}"] = (owner, chat, answer)

    seen: dict[str, str] = {}
    for judge, judge_clock in CLOCKS.items():  # the operator's listing, before anything settles
        out = StringIO()
        with clock_off_by(judge_clock):
            call_command("answers_in_flight", stdout=out)
        states = {line.split()[0]: line.split()[-1] for line in out.getvalue().splitlines()[1:-1]}
        listed = [states[str(pk)] for _, _, pk in (*live.values(), *dead.values())]
        seen[f"answers_in_flight by a worker {judge}"] = " ".join(listed)
    for name, (owner, chat, answer) in {**live, **dead}.items():
        judge = name.rpartition("seen by one ")[2]
        seen[name] = looked_at(owner, chat, answer, CLOCKS[judge])
    return seen


def played_on(database_url: str) -> dict[str, str]:
    """``scenario`` in a process of its own on ``database_url`` (migrated first): the settings
    read the database from the environment when they are imported."""
    env = {**os.environ, "DEBUG": "1", "DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.clock_skew"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(json.dumps(scenario()))


if __name__ == "__main__":
    main()
