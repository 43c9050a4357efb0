"""Core statements compiled once and run straight on the DBAPI connection: the store's hot reads.

Every ``Connection.execute`` of a Core statement builds (or looks up by cache key) its compiled form,
makes an execution context, and wraps each row: ~100 µs for a one-row read on SQLite, twenty times what
SQLite itself spends. An IMAP session reads its folder's counters at nearly every command, so those
reads go through a :class:`Compiled` instead: compiled once per dialect, its parameters bound by
name, its rows plain tuples with each column's result processing (UTC datetimes) applied.

Parameters must be plain values the driver takes as they are (integers, strings): a statement whose
parameters need bind processing is refused when it is compiled. IN lists have a fixed width: see
:class:`CompiledIn`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Engine, bindparam
from sqlalchemy.engine import Dialect

Row = tuple[Any, ...]


@dataclass(frozen=True)
class _Plan:
    sql: str
    positions: tuple[str, ...] | None  # parameter names in order (qmark style), None: by name
    preset: dict[str, Any]  # values the statement holds itself (a LIKE pattern, say)
    processors: tuple[Callable[[Any], Any] | None, ...]
    plain: bool  # no column needs result processing

    def bind(self, params: dict[str, Any]) -> Any:
        if self.preset:
            params = {**self.preset, **params}
        return [params[name] for name in self.positions] if self.positions is not None else params


class Compiled:
    """One Core statement, compiled for each dialect it runs on; see the module's docstring."""

    def __init__(self, statement: Any) -> None:
        self._statement = statement
        self._plans: dict[str, _Plan] = {}

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            compiled = self._statement.compile(dialect=dialect)
            for bind in compiled.binds.values():
                if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None or bind.expanding:
                    raise TypeError(f"parameter {bind.key} needs SQLAlchemy's binding: not for Compiled")
            columns = self._statement.exported_columns  # a SELECT's, or what an UPDATE ... RETURNING returns
            processors = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                               for column in columns)
            positions = tuple(compiled.positiontup) if compiled.positional else None
            preset = {name: value for name, value in compiled.params.items() if value is not None}
            plan = _Plan(compiled.string, positions, preset, processors, all(p is None for p in processors))
            self._plans[dialect.name] = plan
        return plan

    def sql(self, dialect: Dialect) -> str:
        """The statement's SQL for ``dialect``, as it is sent."""
        return self._plan(dialect).sql

    def rows(self, reader: Reader, **params: Any) -> list[Row]:
        """Every row, as tuples in the statement's column order."""
        plan = self._plan(reader.dialect)
        cursor = reader.cursor
        cursor.execute(plan.sql, plan.bind(params))
        found = cursor.fetchall()
        if plan.plain:
            return found
        processors = plan.processors
        return [tuple(value if p is None or value is None else p(value) for p, value in zip(processors, row,
                                                                                              strict=True))
                for row in found]

    def first(self, reader: Reader, **params: Any) -> Row | None:
        """The first row, or None."""
        found = self.rows(reader, **params)
        return found[0] if found else None

    def scalar(self, reader: Reader, **params: Any) -> Any:
        """The first column of the first row, or None."""
        found = self.rows(reader, **params)
        return found[0][0] if found else None

    def run(self, reader: Reader, **params: Any) -> int:
        """A statement without rows (UPDATE, DELETE): the number of rows it changed."""
        plan = self._plan(reader.dialect)
        cursor = reader.cursor
        cursor.execute(plan.sql, plan.bind(params))
        return int(cursor.rowcount)


class CompiledIn:
    """A statement with an IN list of values, compiled for a few widths (powers of two up to ``widest``;
    a list is padded with its last value, which IN ignores). ``build`` makes the statement from the
    list's bind parameters, named ``in_0`` ... ; a longer list runs as several statements of ``widest``."""

    def __init__(self, build: Callable[[list[BindParameter[Any]]], Any], widest: int = 512) -> None:
        self._build = build
        self.widest = widest
        self._widths: dict[int, Compiled] = {}

    def _for(self, count: int) -> tuple[Compiled, int]:
        if not 0 < count <= self.widest:
            raise ValueError(f"an IN list of {count} values (1 to {self.widest})")
        width = 1 << (count - 1).bit_length()
        compiled = self._widths.get(width)
        if compiled is None:
            compiled = Compiled(self._build([bindparam(f"in_{n}") for n in range(width)]))
            self._widths[width] = compiled
        return compiled, width

    def _params(self, values: Sequence[Any], width: int, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        last = values[-1]
        for n in range(width):
            params[f"in_{n}"] = values[n] if n < len(values) else last
        return params

    def _chunks(self, values: Sequence[Any]) -> list[Sequence[Any]]:
        return [values[start : start + self.widest] for start in range(0, len(values), self.widest)]

    def rows(self, reader: Reader, values: Sequence[Any], **params: Any) -> list[Row]:
        """Every row, for any number of values (none: no rows)."""
        found: list[Row] = []
        for chunk in self._chunks(values):
            compiled, width = self._for(len(chunk))
            found += compiled.rows(reader, **self._params(chunk, width, params))
        return found

    def run(self, reader: Reader, values: Sequence[Any], **params: Any) -> int:
        """The rows changed, for any number of values."""
        changed = 0
        for chunk in self._chunks(values):
            compiled, width = self._for(len(chunk))
            changed += compiled.run(reader, **self._params(chunk, width, params))
        return changed


@dataclass
class Reader:
    """A DBAPI cursor and its dialect: where :class:`Compiled` statements run."""

    cursor: Any
    dialect: Dialect

    @classmethod
    def on(cls, conn: Any) -> Reader:
        """The reader of a SQLAlchemy ``Connection`` (inside its transaction: a write unit's, say)."""
        return cls(conn.connection.dbapi_connection.cursor(), conn.dialect)


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Reader]:
    """One read transaction on a pooled connection, without SQLAlchemy's execution layer: its reads see
    one snapshot (SQLite: BEGIN ... ROLLBACK on the autocommit connection the engine configured;
    PostgreSQL: the driver's implicit transaction, rolled back)."""
    pooled = engine.raw_connection()
    try:
        dbapi = pooled.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            cursor.execute("BEGIN")
        try:
            yield Reader(cursor, engine.dialect)
        finally:
            dbapi.rollback()
            cursor.close()
    finally:
        pooled.close()


__all__ = ["Compiled", "CompiledIn", "Reader", "Row", "read_transaction"]
