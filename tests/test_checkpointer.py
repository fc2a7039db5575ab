"""SQLite's WAL checkpoints run on their own thread, not inside the writer's commits; reads on
the writer's connection never outlive their transaction."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from roomstate.db import RoomStore, checkpointer
from roomstate.db.dialect import AUTOCHECKPOINT_PAGES, WAL_SIZE_LIMIT
from roomstate.db.threads import StorageError
from roomstate.models import JOIN, Member, RoomInfo, RoomSnapshot


def room(index: int, size: int) -> RoomSnapshot:
    return RoomSnapshot(
        RoomInfo(f"!r{index}:x"),
        tuple(Member(f"@user{index}-{n}:example.org", JOIN, f"User number {n}") for n in range(size)),
    )


@pytest.fixture
def db_url(sqlite_only: str) -> str:
    """WAL checkpoints are SQLite's: conftest's ``store`` on SQLite only."""
    return sqlite_only


def database_file(store: RoomStore) -> str:
    path = store.dialect.engine.url.database
    assert path
    return path


async def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_commits_are_copied_into_the_database_file_in_the_background(store: RoomStore) -> None:
    path = database_file(store)
    before = os.path.getsize(path)
    await store.replace_room(room(1, 3000))  # a few hundred pages: less than SQLite's own threshold
    checkpoints = store._checkpointer
    assert checkpoints is not None
    await wait_for(lambda: os.path.getsize(path) > before and checkpoints.checkpoints >= 1)
    with sqlite3.connect(path) as conn:  # what was copied is the committed data
        assert conn.execute("SELECT COUNT(*) FROM roomstate_memberships").fetchone()[0] == 3000


async def test_the_writer_checkpoints_itself_only_as_a_safety_net(store: RoomStore) -> None:
    pages, limit = await store._writer.submit_raw(  # type: ignore[union-attr]
        lambda conn: (
            conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
            conn.execute("PRAGMA journal_size_limit").fetchone()[0],
        )
    )
    assert pages == AUTOCHECKPOINT_PAGES > 1000
    # a commit (almost) never cuts back a WAL that stayed under the safety net (that is slow); an
    # idle turn does
    assert limit == WAL_SIZE_LIMIT == AUTOCHECKPOINT_PAGES * 4096


async def test_a_wal_that_grew_under_steady_commits_starts_over(
    store: RoomStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four rooms synced at a time keep the writer committing without a pause, so a PASSIVE
    checkpoint never finds the WAL fully copied and it would grow to the writer's safety net
    (64 MiB); the writer starting it over keeps it short."""
    monkeypatch.setattr(checkpointer, "RESTART_PAGES", 100)
    assert store._checkpointer is not None
    store._checkpointer.interval = 0.05
    wal = database_file(store) + "-wal"
    rooms = iter(range(600))
    largest = 0

    async def worker() -> None:
        nonlocal largest
        for index in rooms:
            await store.replace_room(room(index, 200))  # about 30 KiB of pages each
            largest = max(largest, os.path.getsize(wal))

    await asyncio.gather(*(worker() for _ in range(4)))
    assert store._checkpointer.restarts >= 1
    assert largest < 8 * 2**20, f"the WAL grew to {largest:,} bytes"


def idle_after(
    store: RoomStore, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> tuple[checkpointer.WalCheckpointer, str]:
    """The store's checkpoint thread, cutting back a -wal file past 64 KiB after ``seconds``
    idle, and the -wal file's path."""
    monkeypatch.setattr(checkpointer, "TRUNCATE_BYTES", 64 * 1024)
    wal_checkpoints = store._checkpointer
    assert wal_checkpoints is not None
    wal_checkpoints.interval, wal_checkpoints.idle = 0.05, seconds
    return wal_checkpoints, database_file(store) + "-wal"


async def test_a_wal_file_is_cut_back_once_the_writer_is_idle(
    store: RoomStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal_checkpoints, wal = idle_after(store, monkeypatch, 1.0)
    await store.replace_room(room(1, 3000))
    assert os.path.getsize(wal) > 64 * 1024
    await wait_for(lambda: wal_checkpoints.truncations == 1 and os.path.getsize(wal) == 0)
    with sqlite3.connect(database_file(store)) as conn:  # nothing committed was lost with it
        assert conn.execute("SELECT COUNT(*) FROM roomstate_memberships").fetchone()[0] == 3000
    await store.replace_room(room(2, 10))  # the writer carries on with a new WAL
    assert os.path.getsize(wal) > 0
    assert {r.room_id for r in await store.rooms()} == {"!r1:x", "!r2:x"}


async def test_an_idle_wal_is_not_cut_back_under_a_reader_nor_does_the_writer_wait(
    store: RoomStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader on an old snapshot (here another process's open read) keeps the WAL: the cut is
    tried again each idle turn, without waiting, so the writer never waits behind it; once the
    reader is done, a later idle turn cuts it with no commit in between."""
    wal_checkpoints, wal = idle_after(store, monkeypatch, 0.5)
    await store.replace_room(room(1, 3000))
    reader = sqlite3.connect(database_file(store), isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM roomstate_memberships").fetchone()[0] == 3000
        await store.replace_room(room(2, 3000))
        await asyncio.wait_for(store.replace_room(room(3, 10)), 5)  # far below the busy timeout
        await asyncio.sleep(2.0)  # several idle turns, each refused by the reader
        assert wal_checkpoints.truncations == 0 and os.path.getsize(wal) > 64 * 1024
        checkpoints = wal_checkpoints.checkpoints
    finally:
        reader.execute("ROLLBACK")
        reader.close()
    await wait_for(lambda: wal_checkpoints.truncations == 1 and os.path.getsize(wal) == 0)
    assert wal_checkpoints.checkpoints == checkpoints  # no commit came: an idle turn tried again
    assert len(await store.rooms()) == 3


async def test_closing_stops_the_thread(sqlite_only: str) -> None:
    engine = sa.create_engine(sqlite_only)
    s = RoomStore(engine)
    await s.open()
    thread = s._checkpointer._thread  # type: ignore[union-attr]
    await s.replace_room(room(1, 10))
    await s.close()
    assert not thread.is_alive()
    engine.dispose()


async def test_a_checkpoint_that_fails_leaves_no_read_open_on_the_writer(store: RoomStore) -> None:
    """A first sync whose history checkpoint fails (here a trigger, in life a full disk) is rolled
    back; the read of the room's rows it had open must be closed with it. Left open, it pins the
    writer's snapshot: once another connection writes the file (maubot's own, in standalone
    mode), every later write fails with "database is locked" until a garbage collection runs."""
    path = database_file(store)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TRIGGER fail_blocks BEFORE INSERT ON roomstate_history_blocks"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    gc.disable()  # what keeps the failed job's frames alive is a reference cycle
    try:
        with pytest.raises(StorageError):
            await store.replace_room(room(1, 2000))
        with sqlite3.connect(path) as conn:  # another writer of the same file
            conn.execute("DROP TRIGGER fail_blocks")
        await store.replace_room(room(2, 10))
        await store.replace_room(room(1, 2000))
    finally:
        gc.enable()
    assert len(await store.members("!r1:x")) == 2000


class _Cursor:
    def __init__(self, row: tuple[int, int, int]) -> None:
        self.row = row

    def execute(self, sql: str) -> _Cursor:
        return self

    def fetchone(self) -> tuple[int, int, int]:
        return self.row


class _BrokenConnection:
    def cursor(self) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    def close(self) -> None:
        raise sqlite3.OperationalError("disk I/O error")


class _BrokenDialect:
    def __init__(self) -> None:
        self.connects = 0

    def connect(self) -> _BrokenConnection:
        self.connects += 1
        return _BrokenConnection()


def test_only_a_fully_copied_wal_counts_as_started_over() -> None:
    """The writer's step counts a restart only when nothing was busy and every page was copied
    (a reader on an old snapshot postpones it), and runs only when the thread asked for it."""
    wal = checkpointer.WalCheckpointer(_BrokenDialect(), interval=60)  # type: ignore[arg-type]
    try:
        wal.between_writes(_Cursor((0, 10, 10)))
        assert wal.restarts == 0  # not asked for
        for row, counted in (((0, 10, 5), 0), ((1, 10, 10), 0), ((0, 10, 10), 1)):
            wal._restart_due.set()
            wal.between_writes(_Cursor(row))
            assert wal.restarts == counted
            wal.restarts = 0
    finally:
        wal.close()


class _ScriptedConnection:
    """Answers the checkpoint PRAGMAs with the rows given, and records what it ran."""

    def __init__(self, path: str, passive: tuple[int, int, int]) -> None:
        self.path, self.passive = path, passive
        self.ran: list[str] = []

    def execute(self, sql: str) -> _ScriptedCursor:
        return self.cursor().execute(sql)

    def cursor(self) -> _ScriptedCursor:
        return _ScriptedCursor(self)

    def close(self) -> None:
        pass


class _ScriptedCursor:
    def __init__(self, conn: _ScriptedConnection) -> None:
        self.conn = conn
        self.row: tuple[Any, ...] = ()

    def execute(self, sql: str) -> _ScriptedCursor:
        self.conn.ran.append(sql)
        self.row = (
            (0, "main", self.conn.path)
            if "database_list" in sql
            else self.conn.passive
            if "PASSIVE" in sql
            else (0, 0, 0)
        )
        return self

    def fetchone(self) -> tuple[Any, ...]:
        return self.row

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("passive", "cut"), [((0, 10, 10), True), ((0, 10, 4), False), ((1, 10, 10), False)], ids=str)
def test_an_idle_wal_is_cut_only_once_a_passive_checkpoint_copied_all_of_it(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, passive: tuple[int, int, int], cut: bool
) -> None:
    """A TRUNCATE holds the write lock while it copies: it runs only when a PASSIVE checkpoint
    (which takes no lock) left nothing to copy, so that it holds the lock only to cut the file."""
    monkeypatch.setattr(checkpointer, "TRUNCATE_BYTES", 10)
    path = str(tmp_path / "db.sqlite")
    with open(path + "-wal", "wb") as wal_file:
        wal_file.write(b"x" * 100)
    conn = _ScriptedConnection(path, passive)

    class Scripted:
        def connect(self) -> _ScriptedConnection:
            return conn

    wal = checkpointer.WalCheckpointer(Scripted(), interval=60)  # type: ignore[arg-type]
    try:
        assert wal._truncate_idle_wal() is cut
        truncates = [sql for sql in conn.ran if "TRUNCATE" in sql]
        assert truncates == (["PRAGMA wal_checkpoint(TRUNCATE)"] if cut else [])
        assert wal.truncations == int(cut)
    finally:
        wal.close()


async def test_the_thread_survives_a_connection_that_fails_even_to_close() -> None:
    dialect = _BrokenDialect()
    wal = checkpointer.WalCheckpointer(dialect, interval=0.01)  # type: ignore[arg-type]
    try:
        for attempt in (1, 2):
            wal.committed()
            await wait_for(lambda attempt=attempt: dialect.connects >= attempt)  # type: ignore[misc]
        assert wal._thread.is_alive() and wal.checkpoints == 0
    finally:
        wal.close()
    assert not wal._thread.is_alive()


async def test_closing_the_store_stops_the_thread_even_if_the_writer_fails_to_close(sqlite_only: str) -> None:
    engine = sa.create_engine(sqlite_only)
    s = RoomStore(engine)
    await s.open()
    thread = s._checkpointer._thread  # type: ignore[union-attr]

    async def failing_close() -> None:
        raise StorageError("closing failed")

    s._writer.close = failing_close  # type: ignore[method-assign,union-attr]
    with pytest.raises(StorageError):
        await s.close()
    assert not thread.is_alive()
    await s._reader.close()  # type: ignore[union-attr]
    engine.dispose()
