"""Statements compiled once and run on the DBAPI cursor (mssante_base/storage/compiled.py)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, Table, insert, select

from mssante_base.storage.compiled import CompiledIn, read_transaction
from mssante_base.storage.engines import open_engines


def test_an_in_list_longer_than_its_widest_statement_runs_in_pieces(tmp_path: Path) -> None:
    table = Table("numbers", MetaData(), Column("n", Integer, primary_key=True))
    engines = open_engines(f"sqlite:///{tmp_path / 'n.db'}")
    table.metadata.create_all(engines.engine)
    with engines.engine.begin() as conn:
        conn.execute(insert(table), [{"n": n} for n in range(1, 21)])
    listed = CompiledIn(lambda values: select(table.c.n).where(table.c.n.in_(values)).order_by(table.c.n), widest=4)
    with read_transaction(engines.engine) as reader:
        assert [n for n, in listed.rows(reader, [2, 3, 5, 7, 11, 13, 17, 19, 23])] == [2, 3, 5, 7, 11, 13, 17, 19]
        assert listed.rows(reader, []) == []
    engines.engine.dispose()
