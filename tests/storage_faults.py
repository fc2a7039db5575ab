"""A SQLite database that fails on demand, the ways a real one does: the disk full (writes fail
until space is back), I/O errors (every statement fails while it lasts), or the file read-only
(a connection opened then refuses writes for as long as it is open, as SQLite's does when it
opens a file it may not write; the tests run as root, for whom file modes mean nothing, so the
connection is made read-only with ``PRAGMA query_only``)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from roomstate.db.dialect import Dialect

MESSAGES = {
    "full": "database or disk is full",
    "io": "disk I/O error",
}
_WRITES = ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER")


class StorageFaults:
    def __init__(self) -> None:
        self.kind: str | None = None  # "full", "io", "readonly" or None (healthy)
        self.refused = 0  # statements failed so far

    def install(self, monkeypatch: pytest.MonkeyPatch) -> StorageFaults:
        original = Dialect.connect

        def connect(dialect: Dialect) -> Any:
            conn = original(dialect)
            if not dialect.is_sqlite:
                return conn
            if self.kind == "readonly":
                conn.execute("PRAGMA query_only = ON")
            return _Connection(conn, self)

        monkeypatch.setattr(Dialect, "connect", connect)
        return self

    def check(self, sql: str) -> None:
        if self.kind == "io" and not sql.lstrip().upper().startswith("ROLLBACK"):
            self.refused += 1
            raise sqlite3.OperationalError(MESSAGES["io"])
        if self.kind == "full" and sql.lstrip().upper().startswith(_WRITES):
            self.refused += 1
            raise sqlite3.OperationalError(MESSAGES["full"])


class _Connection:
    def __init__(self, conn: sqlite3.Connection, faults: StorageFaults) -> None:
        self._conn = conn
        self._faults = faults

    def cursor(self) -> _Cursor:
        return _Cursor(self._conn.cursor(), self._faults)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._conn, name, value)


class _Cursor:
    def __init__(self, cur: sqlite3.Cursor, faults: StorageFaults) -> None:
        self._cur = cur
        self._faults = faults

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._faults.check(sql)
        return self._cur.execute(sql, params)

    def executemany(self, sql: str, params: Any) -> Any:
        self._faults.check(sql)
        return self._cur.executemany(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)
