"""Querysets compiled once per shape, then run again and again with other values.

Django builds and compiles a queryset each time it is evaluated. On the path from Enter to
the upstream request that is most of a query's cost: on the 2-core machine reading the turn's
conversation (with its provider and the quota checks) took about 1.1 ms of Python to build and
compile and 0.08 ms to execute on SQLite, and hundreds of sends in a second queue behind it.

A ``PreparedQuery`` builds its queryset once per thread and shape, with marker values in place
of its arguments, and keeps the SQL. A later run puts the real values where the markers' were
and turns rows into models as Django's own ``ModelIterable`` does (``select_related``,
``only`` and annotations included), so callers get the same objects the ORM would give.

For read queries whose arguments reach the SQL as parameters of their own (equality, ``in``
with a list whose length is part of the shape); a marker that does not arrive whole (say
inside ``icontains``) is refused when the query is prepared, never run wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators  # type: ignore[attr-defined]

M = TypeVar("M", bound=Model)

_MARK_DATETIME = datetime(1901, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


class Marker:
    """Hands out marker values: each unique and unlike anything a real argument holds."""

    def __init__(self) -> None:
        self.count = 0
        self.names: dict[Any, str] = {}

    def _new(self, name: str, value: Any) -> Any:
        self.count += 1
        self.names[value] = name
        return value

    def number(self, name: str) -> int:
        return int(self._new(name, -(2**62) - self.count))

    def text(self, name: str) -> str:
        return str(self._new(name, f"\x00prepared:{name}:{self.count}\x00"))

    def moment(self, name: str) -> datetime:
        # One datetime marker per query: datetimes are adapted (SQLite's become text) and
        # told apart by that single known value.
        if any(v is _MARK_DATETIME for v in self.names):
            raise ValueError("a prepared query takes one datetime argument at most")
        self.names[_MARK_DATETIME] = name
        return _MARK_DATETIME

    def numbers(self, name: str, length: int) -> list[int]:
        return [self.number(f"{name}[{i}]") for i in range(length)]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    params: tuple[Any, ...]
    slots: tuple[tuple[int, str, bool], ...]  # (param index, argument, adapted datetime)
    compiler: Any  # Django's SQL compiler after as_sql(): the rows' layout and converters
    model: type[Model]
    fields: tuple[int, int]
    init_list: tuple[str, ...]
    populators: tuple[Any, ...]
    annotations: tuple[tuple[str, int], ...]
    converters: dict[int, Any]


class PreparedQuery(Generic[M]):
    """``build(marker, shape)`` returns the queryset, taking every argument from ``marker``
    (``marker.number("pk")``, ``marker.numbers("ids", n)``, ``marker.text(...)``,
    ``marker.moment(...)``); ``shape`` is whatever else changes the SQL (settings, list
    lengths) and keys the cache. ``run(shape, **arguments)`` returns the models."""

    def __init__(self, build: Callable[[Marker, Any], QuerySet[M]]) -> None:
        self.build = build
        self._local = threading.local()

    def run(self, shape: Hashable, **arguments: Any) -> list[M]:
        compiled = self._compiled(shape)
        params = list(compiled.params)
        connection = compiled.compiler.connection
        for index, name, adapted in compiled.slots:
            value = _argument(arguments, name)
            params[index] = connection.ops.adapt_datetimefield_value(value) if adapted else value
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows: Sequence[Any] = cursor.fetchall()
        return self._models(compiled, rows)

    def _compiled(self, shape: Hashable) -> _Compiled:
        cache: dict[Hashable, _Compiled] = self._local.__dict__.setdefault("cache", {})
        compiled = cache.get(shape)
        if compiled is None:
            compiled = cache[shape] = self._compile(shape)
        return compiled

    def _compile(self, shape: Hashable) -> _Compiled:
        marker = Marker()
        queryset = self.build(marker, shape)
        connection = connections[queryset.db]
        compiler = queryset.query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        adapted_mark = connection.ops.adapt_datetimefield_value(_MARK_DATETIME)
        slots = []
        found: set[str] = set()
        for index, param in enumerate(params):
            moment = _MARK_DATETIME in marker.names
            if param is _MARK_DATETIME or (moment and param == adapted_mark):
                name, adapted = marker.names[_MARK_DATETIME], param is not _MARK_DATETIME
            elif isinstance(param, int | str) and not isinstance(param, bool):
                name, adapted = marker.names.get(param, ""), False
                if not name:
                    continue
            else:
                continue
            slots.append((index, name, adapted))
            found.add(name)
        missing = set(marker.names.values()) - found
        if missing:
            raise ValueError(f"prepared query: {sorted(missing)} did not reach the SQL whole")
        klass_info = compiler.klass_info
        start = klass_info["select_fields"][0]
        end = klass_info["select_fields"][-1] + 1
        select = compiler.select
        return _Compiled(
            sql=sql,
            params=tuple(params),
            slots=tuple(slots),
            compiler=compiler,
            model=klass_info["model"],
            fields=(start, end),
            init_list=tuple(f[0].target.attname for f in select[start:end]),
            populators=tuple(get_related_populators(klass_info, select, queryset.db)),
            annotations=tuple(compiler.annotation_col_map.items()),
            converters=compiler.get_converters([s[0] for s in select[: compiler.col_count]]),
        )

    @staticmethod
    def _models(compiled: _Compiled, rows: Sequence[Any]) -> list[M]:
        if compiled.converters:
            rows = list(compiled.compiler.apply_converters(rows, compiled.converters))
        db = compiled.compiler.using
        start, end = compiled.fields
        models = []
        for row in rows:
            obj = compiled.model.from_db(db, compiled.init_list, row[start:end])
            for populator in compiled.populators:
                populator.populate(row, obj)
            for name, position in compiled.annotations:
                setattr(obj, name, row[position])
            models.append(obj)
        return models  # type: ignore[return-value]


def _argument(arguments: dict[str, Any], name: str) -> Any:
    """The value for a slot: ``ids[2]`` is the third of the list ``ids``."""
    base, _, index = name.partition("[")
    value = arguments[base]
    return value[int(index[:-1])] if index else value
