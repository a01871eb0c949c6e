"""Whether an answer marked "streaming" still has a worker, by the database's clock.

Every worker writes the heartbeat of the answers it runs (``Message.heartbeat_at``), and any
worker may judge another's answer orphaned once that heartbeat is older than
``STREAM_ORPHAN_AFTER``. Two workers' clocks may disagree by more than that (a skewed host, an
NTP step, a VM resumed): a heartbeat stamped by one clock and judged by another would mark a
live answer interrupted, or keep a dead one "streaming". So both ends use the one clock every
worker shares, the database's: heartbeats are written as ``Now()`` and their age is compared
in SQL, never against this process's ``timezone.now()``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now

from chat.models import Message

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

STALE = "heartbeat_stale"
"""The annotation ``with_staleness`` adds: True for a streaming answer whose worker stopped."""


def _since() -> CombinedExpression:
    """The oldest heartbeat still fresh, as SQL: the database's now minus the allowance."""
    return Now() - timedelta(seconds=settings.STREAM_ORPHAN_AFTER)


def stale() -> Q:
    """Answers still "streaming" whose worker has not beaten for ``STREAM_ORPHAN_AFTER`` (or
    never did): their worker died."""
    beat = Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=_since())
    return Q(status=Message.Status.STREAMING) & beat


def fresh() -> Q:
    """Answers whose worker beat within ``STREAM_ORPHAN_AFTER``: alive, wherever they run."""
    return Q(heartbeat_at__gte=_since())


def with_staleness(rows: QuerySet[Message]) -> QuerySet[Message]:
    """``rows`` with ``STALE`` computed by the database, in the same query."""
    return rows.annotate(**{STALE: ExpressionWrapper(stale(), output_field=BooleanField())})


def now_sql(connection: BaseDatabaseWrapper) -> str:
    """The SQL of ``Now()`` on this connection, for a raw statement: what the ORM writes for it
    (PostgreSQL's ``STATEMENT_TIMESTAMP()``, SQLite's millisecond ``STRFTIME``), so raw and ORM
    heartbeats have one format. SQLite's ``CURRENT_TIMESTAMP`` would be whole seconds, and
    PostgreSQL's the start of the transaction."""
    compiler = Message.objects.none().query.get_compiler(connection=connection)
    sql, params = compiler.compile(Now())
    assert not params, params
    return sql
