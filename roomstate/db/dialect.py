"""What differs between SQLite and PostgreSQL, and how a DBAPI connection is taken from the engine.

The store runs plain SQL on DBAPI connections that it takes out of maubot's SQLAlchemy engine
(``engine.raw_connection()``, detached from the pool, one per database thread). That is the same
database and the same driver SQLAlchemy uses, without SQLAlchemy's per-statement overhead and
without pysqlite's implicit transactions: every connection is in autocommit mode and the store
writes ``BEGIN``/``COMMIT`` itself, so DDL and DML alike run in the transactions it asks for.

SQL is written once with ``?`` placeholders; ``Dialect.sql`` turns them into ``%s`` for psycopg.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from sqlalchemy.engine import Engine

SUPPORTED = ("sqlite", "postgresql")
BUSY_TIMEOUT_MS = 10_000
AUTOCHECKPOINT_PAGES = 16384  # the writer checkpoints inline only past 64 MiB of WAL (4 KiB pages)
# bytes of -wal file kept on disk when it starts over (about the safety net's size: 16,384 frames
# take 384 KiB more); cutting the file back is slow (the disk may discard the freed blocks at
# once), so that happens when idle (checkpointer.py), not in a commit
WAL_SIZE_LIMIT = AUTOCHECKPOINT_PAGES * 4096
CACHE_KIB = 32_000  # SQLite's page cache per connection: index pages read again and again stay
BIG_WRITE_CACHE_KIB = 6_000  # ... and while one room is written in full (see Dialect.big_write)


class Cursor(Protocol):
    """The part of a DBAPI cursor the store uses."""

    rowcount: int
    lastrowid: Any
    connection: Any

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def close(self) -> None: ...


class DBAPIConnection(Protocol):
    def cursor(self) -> Any: ...

    def close(self) -> None: ...


class UnsupportedDatabase(RuntimeError):
    pass


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]").search
COPY_CHUNK = 2000  # rows per block written to COPY
COPY_NULL = "\\N"


def _copy_field(value: Any) -> str:
    """One field in PostgreSQL's COPY text format (escaping only what needs it: fast)."""
    if value is None:
        return COPY_NULL
    text = value if isinstance(value, str) else str(value)
    if _COPY_SPECIAL(text) is None:
        return text
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_blocks(rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """Rows in PostgreSQL's COPY text format, a block of lines at a time."""
    iterator = iter(rows)
    field = _copy_field
    while True:
        lines = ["\t".join(map(field, row)) for row in itertools.islice(iterator, COPY_CHUNK)]
        if not lines:
            return
        yield ("\n".join(lines) + "\n").encode()


def _same(value: Any) -> Any:
    return value


def _bind_nulls_and_blobs_directly() -> None:
    """Python's sqlite3 binds None and bytes only after looking for an adapter: a failed attribute
    lookup that formats an exception, ~0.4 µs a parameter (a history row has four or five). With an
    adapter that returns the value as it is, that is one dictionary hit, and the value is bound as
    before (NULL, BLOB). The registry is the process's: one is added only where there is none."""
    for kind in (type(None), bytes):
        if (kind, sqlite3.PrepareProtocol) not in sqlite3.adapters:
            sqlite3.register_adapter(kind, _same)


class Dialect:
    """SQL spelling and connection setup for one database kind."""

    def __init__(self, engine: Engine) -> None:
        name = engine.dialect.name
        if name not in SUPPORTED:
            raise UnsupportedDatabase(f"roomstate supports SQLite and PostgreSQL, not {name}")
        self.engine = engine
        self.name = name
        self.is_sqlite = name == "sqlite"
        self.driver = engine.dialect.driver  # pysqlite, psycopg2, psycopg, ...

    # ---- connections ------------------------------------------------------------------------

    def connect(self) -> Any:
        """A new DBAPI connection of the engine's own driver, owned by the caller (detached from
        the pool), in autocommit mode; call it on the thread that will use it."""
        fairy = self.engine.raw_connection()
        fairy.detach()
        conn = getattr(fairy, "dbapi_connection", None) or fairy.connection
        if self.is_sqlite:
            if isinstance(conn, sqlite3.Connection):
                _bind_nulls_and_blobs_directly()
            conn.isolation_level = None  # we issue BEGIN/COMMIT ourselves
            cur = conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # With WAL, commits do not wait for fsync; the database stays consistent and a power
            # cut can only lose the last commits, which the next resync restores (mautrix's own
            # SQLite settings). Temporary staging tables live in memory.
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA temp_store = MEMORY")
            cur.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            # checkpoints run on a thread of their own (checkpointer.py); the writer's own are a
            # safety net for when that thread falls behind
            cur.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
            # a WAL that grew during a big sync is cut back to this size once it starts over
            cur.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            cur.close()
        else:
            conn.autocommit = True
        return conn

    @contextlib.contextmanager
    def big_write(self, cur: Cursor, big: bool) -> Iterator[None]:
        """A ``big`` write (a first sync of a large room) on SQLite runs with a small page cache:
        its new pages go to the WAL as the cache fills instead of staying in memory until the
        commit (a 100k-member room held ~9 MiB more); the cache is back to its size afterwards.
        Pages the write touches again and again still fit, so it is not slower."""
        if not (big and self.is_sqlite):
            yield
            return
        cur.execute(f"PRAGMA cache_size = -{BIG_WRITE_CACHE_KIB}")
        try:
            yield
        finally:
            cur.execute(f"PRAGMA cache_size = -{CACHE_KIB}")

    def begin_write(self) -> str:
        # IMMEDIATE: take SQLite's write lock now, not halfway through (no upgrade deadlocks).
        return "BEGIN IMMEDIATE" if self.is_sqlite else "BEGIN"

    def begin_read(self) -> str:
        return "BEGIN" if self.is_sqlite else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    # ---- SQL --------------------------------------------------------------------------------

    def sql(self, text: str) -> str:
        """``?`` placeholders in the driver's paramstyle (the store's SQL never contains a literal
        ``?`` or ``%``)."""
        return text if self.is_sqlite else text.replace("?", "%s")

    def insert_returning_id(self, cur: Cursor, sql: str, params: Sequence[Any], id_column: str) -> int:
        """Run an INSERT and return the generated integer key."""
        if self.is_sqlite:
            cur.execute(sql, params)
            return int(cur.lastrowid)
        cur.execute(self.sql(f"{sql} RETURNING {id_column}"), params)
        return int(cur.fetchone()[0])

    def executemany(self, cur: Cursor, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run ``INSERT ... VALUES (...) [ON CONFLICT ...]`` (in the driver's paramstyle) for many
        rows: with ``executemany`` on SQLite, as multi-row VALUES on PostgreSQL (psycopg2's
        executemany is one round trip per row)."""
        if len(rows) == 1:  # one event at a time: a plain execute is cheaper on either
            cur.execute(sql, rows[0])
            return
        if self.is_sqlite:
            cur.executemany(sql, rows)
            return
        head, values = sql.rsplit(" VALUES ", 1)
        values, close, tail = values.partition(")")  # the row's "(%s, ...)", then e.g. ON CONFLICT
        values += close
        per_statement = max(1, 10_000 // max(1, len(rows[0])))
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cur.execute(f"{head} VALUES {', '.join([values] * len(chunk))}{tail}", [p for row in chunk for p in row])

    def create_temp_table(self, cur: Cursor, name: str, columns: str) -> None:
        """An empty session-private table (created once per connection, emptied on reuse)."""
        if self.is_sqlite:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({columns})")
        else:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({columns}) ON COMMIT DELETE ROWS")
        cur.execute(f"DELETE FROM {name}")

    def bulk_insert(self, cur: Cursor, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Insert many rows fast: ``executemany`` on SQLite (rows may be a generator), ``COPY`` on
        PostgreSQL (psycopg2's executemany is one round trip per row)."""
        names = ", ".join(columns)
        if self.is_sqlite:
            marks = ", ".join("?" * len(columns))
            cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
            return
        copy = f"COPY {table} ({names}) FROM STDIN"
        if hasattr(cur, "copy_expert"):  # psycopg2
            cur.copy_expert(copy, _CopyReader(_copy_blocks(rows)))
        else:  # psycopg 3
            with cur.copy(copy) as target:  # type: ignore[attr-defined]
                for block in _copy_blocks(rows):
                    target.write(block)


class _CopyReader(io.RawIOBase):
    """A file-like view of COPY blocks, read lazily (psycopg2 reads it in chunks, so a 100k-row
    copy never exists as one string)."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            block = next(self._blocks, None)
            if block is None:
                break
            self._buffer += block
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readinto(self, target: Any) -> int:
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)
