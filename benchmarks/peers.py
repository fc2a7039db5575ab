"""The systems compared: roomstate, mautrix-python's own state store, and raw sqlite3.

Each exposes the same operations, with its inputs prepared outside the timed part (what a bot
would already have in hand: the member list from the homeserver, as the system's own types).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import sqlite3
import threading
import time
from typing import Any

import sqlalchemy as sa
from mautrix.client.state_store.asyncpg import PgStateStore
from mautrix.types import Member as MautrixMember
from mautrix.types import Membership
from mautrix.util.async_db import Database

from roomstate import models
from roomstate.db import RoomStore, schema
from roomstate.db.checkpointer import WalCheckpointer
from roomstate.db.dialect import Dialect
from roomstate.dedup import EventClaim
from roomstate.homeserver import HomeserverError
from roomstate.queries import RoomQueries
from roomstate.service import RoomStateService

from . import data
from .data import Member

BOT = "@bot:bench.example"
FLOOR_SCHEMA = "roomstate_bench_floor"  # SchemaFloor's own schema, dropped when it closes


async def awaited_one_by_one(system: Any, room_id: str, count: int, seed: int) -> float:
    """Seconds ``system`` takes for ``count`` member events, each awaited until committed."""
    events = data.member_events(room_id, count, seed=seed)
    started = time.perf_counter()
    for raw in events:
        await system.member_event_committed(raw)
    return time.perf_counter() - started


def sqlite_bytes(path: str, tables: tuple[str, ...]) -> int:
    """Bytes the tables and their indexes take in an SQLite file, after VACUUM."""
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM")
        names = [
            row[0]
            for row in conn.execute(
                f"SELECT name FROM sqlite_master WHERE tbl_name IN ({','.join('?' * len(tables))})", tables
            )
        ]
        marks = ",".join("?" * len(names))
        return int(conn.execute(f"SELECT SUM(pgsize) FROM dbstat WHERE name IN ({marks})", names).fetchone()[0] or 0)


NO_HOMESERVER = "no homeserver in this benchmark"


class _NoHomeserver:
    """The logic layer's homeserver, for benchmarks that never fetch."""

    async def room_snapshot(self, room_id: str) -> Any:
        raise HomeserverError(NO_HOMESERVER)

    async def joined_rooms(self) -> list[str]:
        return []


class _WithoutHomeserver(logging.Filter):
    """Drops the service's warnings about fetches from ``_NoHomeserver``. They are expected: a
    benchmark that feeds a room events fast makes it suspect of a fork (a burst, see
    roomstate/bursts.py), and the service checks a suspect room against the homeserver once it
    has been quiet for a few seconds; here that fetch fails at once ("Could not sync ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return NO_HOMESERVER not in record.getMessage()


SERVICE_LOG = logging.getLogger("bench")  # the service's logger: everything else it says is shown
SERVICE_LOG.addFilter(_WithoutHomeserver())


class Roomstate:
    name = "roomstate"

    def __init__(self, url: str, name: str = "roomstate", config: dict[str, Any] | None = None) -> None:
        self.name = name
        self.url = url
        self.engine = sa.create_engine(url)
        self.store = RoomStore(self.engine)
        from tests.helpers import make_config  # the plugin's base config, as the tests build it

        settings = make_config(config)
        homeserver: Any = _NoHomeserver()
        self.service = RoomStateService(self.store, homeserver, BOT, settings, SERVICE_LOG)
        self.queries = RoomQueries(self.store, homeserver, settings)

    async def open(self) -> None:
        await self.service.open_soon()

    async def close(self) -> None:
        # What the plugin does at shutdown: stop the service's timers (a suspect room's check
        # would otherwise run later, against a closed store), finish the rooms' pending work,
        # then close the store.
        await self.service.stop(5)
        self.engine.dispose()

    @staticmethod
    def prepare(room_id: str, members: list[Member]) -> models.RoomSnapshot:
        """What parsing the homeserver's /state gives: leaves dropped, one entry per user."""
        return models.RoomSnapshot(
            models.RoomInfo(room_id, name="Benchmark room"),
            tuple(models.Member(m.user_id, m.membership, m.displayname) for m in members if m.membership != "leave"),
        )

    async def full_sync(self, prepared: models.RoomSnapshot) -> None:
        await self.store.replace_room(prepared)

    async def member_event(self, raw: dict[str, Any]) -> None:
        """What the plugin's handler does: schedule the event in its room's order and return."""
        key = (raw["room_id"], raw["event_id"])
        self.service.dedup.follow(self.service.member_event(raw, EventClaim(*key)), key, "on_member")

    async def member_event_committed(self, raw: dict[str, Any]) -> None:
        """The same, waiting until the event's transaction has committed."""
        await self.service.member_event(raw, EventClaim(raw["room_id"], raw["event_id"]))

    async def drain(self) -> None:
        await self.store.flush()

    async def rooms_of(self, user_id: str) -> int:
        return len(await self.store.rooms_of(user_id))

    async def rooms_with_counts(self) -> int:
        return len(await self.store.rooms())

    async def claim(self, room_id: str, event_id: str) -> bool:
        return await self.store.claim_event(room_id, event_id)

    def membership_bytes(self) -> int:
        path = self.url.removeprefix("sqlite:///")
        return sqlite_bytes(
            path,
            (
                "roomstate_memberships",
                "roomstate_users",
                "roomstate_rooms",
                "roomstate_room_info",
                "roomstate_user_rooms",
                "roomstate_user_rooms_new",
            ),
        )


class Mautrix:
    """mautrix-python's PgStateStore on its own Database (aiosqlite, or asyncpg for PostgreSQL):
    what a maubot plugin author would use instead."""

    name = "mautrix"

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = Database.create(url, upgrade_table=PgStateStore.upgrade_table)
        self.store = PgStateStore(self.db)

    async def open(self) -> None:
        await self.db.start()

    async def close(self) -> None:
        await self.db.stop()

    @staticmethod
    def prepare(room_id: str, members: list[Member]) -> tuple[str, dict[str, MautrixMember]]:
        return room_id, {
            m.user_id: MautrixMember(membership=Membership(m.membership), displayname=m.displayname) for m in members
        }

    async def full_sync(self, prepared: tuple[str, dict[str, MautrixMember]]) -> None:
        await self.store.set_members(*prepared)  # type: ignore[arg-type]

    async def drain(self) -> None:
        pass

    async def member_event_committed(self, raw: dict[str, Any]) -> None:
        await self.member_event(raw)

    async def member_event(self, raw: dict[str, Any]) -> None:
        content = raw["content"]
        member = MautrixMember(membership=Membership(content["membership"]), displayname=content.get("displayname"))
        await self.store.set_member(raw["room_id"], raw["state_key"], member)

    async def rooms_of(self, user_id: str) -> int:
        rows = await self.db.fetch(
            "SELECT room_id FROM mx_user_profile WHERE user_id=$1 AND membership='join'", user_id
        )
        return len(rows)

    async def rooms_with_counts(self) -> int:
        rows = await self.db.fetch(
            "SELECT room_id, SUM(CASE WHEN membership='join' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN membership='invite' THEN 1 ELSE 0 END) FROM mx_user_profile GROUP BY room_id"
        )
        return len(rows)

    def membership_bytes(self) -> int:
        return sqlite_bytes(self.url.removeprefix("sqlite:"), ("mx_user_profile", "mx_room_state"))


class SchemaFloor:
    """The least a store with roomstate's PostgreSQL tables can pay for a first sync: the rows
    COPYed into the users, memberships and user → room tables of roomstate's DDL (in a schema of
    their own), every user new, nids assigned in Python, no lookups, no history. Not a usable store
    (a known user would fail it): a floor for the ratio, measured in the same run."""

    name = "schema floor"

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        self.dialect = Dialect(self.engine)
        self.conn: Any = None
        self.next_nid = 1
        self.rooms = 0

    async def open(self) -> None:
        self.conn = await asyncio.to_thread(self._open)

    def _open(self) -> Any:
        conn = self.dialect.connect()
        cur = conn.cursor()
        cur.execute(f"DROP SCHEMA IF EXISTS {FLOOR_SCHEMA} CASCADE")
        cur.execute(f"CREATE SCHEMA {FLOOR_SCHEMA}")
        cur.execute(f"SET search_path TO {FLOOR_SCHEMA}")
        for ddl in schema.ddl("postgresql"):
            if any(table in ddl for table in ("roomstate_users", "roomstate_memberships", "roomstate_user_rooms")):
                cur.execute(ddl)
        return conn

    async def close(self) -> None:
        await asyncio.to_thread(self._close)
        self.engine.dispose()

    def _close(self) -> None:
        self.conn.cursor().execute(f"DROP SCHEMA IF EXISTS {FLOOR_SCHEMA} CASCADE")
        self.conn.close()

    @staticmethod
    def prepare(room_id: str, members: list[Member]) -> list[Member]:
        return [m for m in members if m.membership != "leave"]

    async def full_sync(self, prepared: list[Member]) -> None:
        await asyncio.to_thread(self._write, prepared)

    def _write(self, members: list[Member]) -> None:
        first, self.next_nid = self.next_nid, self.next_nid + len(members)
        self.rooms += 1
        nids = range(first, self.next_nid)
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        self.dialect.bulk_insert(
            cur, "roomstate_users", ("user_nid", "user_id"), zip(nids, (m.user_id for m in members), strict=True)
        )
        self.dialect.bulk_insert(
            cur,
            "roomstate_memberships",
            ("room_nid", "user_nid", "membership", "displayname"),
            ((self.rooms, nid, m.membership, m.displayname) for nid, m in zip(nids, members, strict=True)),
        )
        self.dialect.bulk_insert(cur, "roomstate_user_rooms", ("user_nid", "room_nid"), ((n, self.rooms) for n in nids))
        cur.execute("COMMIT")


_FLOOR_LOOKUP = (
    "SELECT m.membership, m.displayname, EXISTS (SELECT 1 FROM roomstate_processed_events WHERE room_nid = 1"
    " AND event_id = ?) FROM roomstate_room_info i LEFT JOIN roomstate_memberships m"
    " ON m.room_nid = i.room_nid AND m.user_nid = ? WHERE i.room_nid = 1"
)


class EventFloor:
    """The least one member event awaited until committed can cost with what roomstate stores for
    it (its tables, from roomstate's own SQLite DDL): the user interned (known ones from a dict),
    the old membership read (with ``history``, in the same statement as whether the event was
    claimed the other way), the event claimed (with ``history`` by its history row, with the row's
    time index and its unique (room, event hash) index; without, the dedup row and its time index),
    the membership written, the room's counts changed.
    Raw sqlite3 on a connection roomstate's dialect opened (its PRAGMAs) and with its WAL
    checkpoint thread (so that no checkpoint runs inside a commit), one statement after another in
    one transaction, one hand-off to a database thread and one back (aiosqlite makes one each way
    per statement). Leaves out what roomstate adds on top: parsing and ordering, the user → room
    pairs, history checkpoints, caches, metrics. Not a usable store: a floor for the ratio,
    measured in the same run."""

    def __init__(self, path: str, history: bool = True, merged: bool = False) -> None:
        self.name = "event floor, merged" if merged else "event floor" if history else "event floor, no history"
        self.path = path
        self.history = history
        # A schema roomstate does not have (benchmarks/floor_variants.py): the dedup record and the
        # history row as one row of one table, its key (room, seq) doubling as the time index the
        # dedup records need, unique on (room, event ID), no cross-room seq index: two B-trees where
        # roomstate's tables take four.
        self.merged = merged
        self.users: dict[str, int] = {}
        self.seq = int(time.time() * 1000) << 20
        self.engine = sa.create_engine(f"sqlite:///{path}")
        self.dialect = Dialect(self.engine)
        self.checkpoints = WalCheckpointer(self.dialect)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        await self._call(self._create)

    async def close(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self.checkpoints.close()
        self.engine.dispose()

    def _run(self) -> None:
        conn = self.dialect.connect()
        conn.execute("PRAGMA journal_mode = WAL")
        cur = conn.cursor()
        while (job := self._jobs.get()) is not None:
            work, future = job
            self.checkpoints.between_writes(cur)  # as roomstate's writer does before each job
            try:
                result = work(conn)
                self.checkpoints.committed()
            except Exception as error:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(future.set_exception, error)
            else:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(future.set_result, result)
        conn.close()

    def _call(self, work: Any) -> asyncio.Future[Any]:
        assert self._loop is not None
        future = self._loop.create_future()
        self._jobs.put((work, future))
        return future

    def _create(self, conn: sqlite3.Connection) -> None:
        for ddl in schema.ddl("sqlite"):
            conn.execute(ddl)
        if self.merged:
            conn.execute(
                "CREATE TABLE roomstate_bench_events (room_nid INTEGER NOT NULL, seq INTEGER NOT NULL,"
                " event_id TEXT NOT NULL, user_nid INTEGER NOT NULL, membership INTEGER NOT NULL,"
                " previous INTEGER NOT NULL, displayname TEXT, event_hash BLOB, PRIMARY KEY (room_nid, seq))"
                " WITHOUT ROWID"
            )
            conn.execute("CREATE UNIQUE INDEX roomstate_bench_events_id ON roomstate_bench_events (room_nid, event_id)")
        conn.execute("INSERT INTO roomstate_rooms (room_nid, room_id) VALUES (1, '!floor:bench.example')")
        conn.execute(
            "INSERT INTO roomstate_room_info (room_nid, encrypted, updated_at, joined_count, invited_count,"
            " synced_at) VALUES (1, 0, 0, 0, 0, 0)"
        )

    def _user(self, conn: sqlite3.Connection, user_id: str) -> int:
        nid = self.users.get(user_id)
        if nid is None:  # every user it stored is in the dict: a new one
            nid = self.users[user_id] = conn.execute(
                "INSERT INTO roomstate_users (user_id) VALUES (?)", (user_id,)
            ).lastrowid
        return nid

    @staticmethod
    def _claim_apart(conn: sqlite3.Connection, event_id: str, now: int) -> bool:
        """The dedup row (and its time index) of an event whose history row is not its claim."""
        return bool(
            conn.execute(
                "INSERT INTO roomstate_processed_events VALUES (1, ?, ?) ON CONFLICT DO NOTHING", (event_id, now)
            ).rowcount
        )

    @staticmethod
    def prepare(room_id: str, members: list[Member]) -> list[Member]:
        return [m for m in members if m.membership != "leave"]

    async def full_sync(self, prepared: list[Member]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            for m in prepared:
                conn.execute(
                    "INSERT INTO roomstate_memberships VALUES (1, ?, ?, ?)",
                    (self._user(conn, m.user_id), m.membership, m.displayname),
                )
            conn.execute("COMMIT")

        await self._call(write)

    async def member_event_committed(self, raw: dict[str, Any]) -> None:
        content = raw["content"]
        membership, displayname = content["membership"], content.get("displayname")
        user_id, event_id, now = raw["state_key"], raw["event_id"], int(time.time() * 1000)
        self.seq += 1
        seq = self.seq

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                folded = self.history and not self.merged  # roomstate's: the history row is the claim
                if not self.history and not self._claim_apart(conn, event_id, now):
                    conn.execute("ROLLBACK")
                    return
                nid = self._user(conn, user_id)
                if folded:  # the old membership and whether the event was claimed the other way
                    row = conn.execute(_FLOOR_LOOKUP, (event_id, nid)).fetchone()
                    if row[2]:
                        conn.execute("ROLLBACK")
                        return
                    old = None if row[0] is None else (row[0], row[1])
                else:
                    old = conn.execute(
                        "SELECT membership, displayname FROM roomstate_memberships WHERE room_nid = 1 AND user_nid = ?",
                        (nid,),
                    ).fetchone()
                unchanged = old == (membership, displayname) or (old is None and membership == "leave")
                claimed = True
                digest = hashlib.sha256(event_id.encode()).digest() if self.history else None
                if folded and unchanged:  # unless its history row claims it already
                    claimed = conn.execute(
                        "SELECT 1 FROM roomstate_history WHERE room_nid = 1 AND event_hash = ?", (digest,)
                    ).fetchone() is None and self._claim_apart(conn, event_id, now)
                elif folded:
                    claimed = conn.execute(  # the claim and the history row in one
                        "INSERT INTO roomstate_history (room_nid, seq, user_nid, membership, previous, displayname,"
                        " event_hash) VALUES (1, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (room_nid, event_hash) WHERE event_hash IS NOT NULL DO NOTHING",
                        (seq, nid, 1, 0, displayname, digest),
                    ).rowcount
                elif self.merged:
                    claimed = conn.execute(  # the claim and the history row in one, one table
                        "INSERT INTO roomstate_bench_events VALUES (1, ?, ?, ?, 1, 0, ?, ?) ON CONFLICT DO NOTHING",
                        (seq, event_id, nid, displayname, digest),
                    ).rowcount
                if not claimed:
                    conn.execute("ROLLBACK")
                    return
                if membership == "leave":
                    if old is not None:
                        conn.execute("DELETE FROM roomstate_memberships WHERE room_nid = 1 AND user_nid = ?", (nid,))
                elif not unchanged:
                    conn.execute(
                        "INSERT INTO roomstate_memberships VALUES (1, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                        " membership = excluded.membership, displayname = excluded.displayname",
                        (nid, membership, displayname),
                    )
                was = None if old is None else old[0]
                joined = (membership == "join") - (was == "join")
                invited = (membership == "invite") - (was == "invite")
                if joined or invited:
                    conn.execute(
                        "UPDATE roomstate_room_info SET joined_count = joined_count + ?,"
                        " invited_count = invited_count + ?, updated_at = ? WHERE room_nid = 1",
                        (joined, invited, now),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._call(write)


class RawSqlite:
    """Python's sqlite3 doing the minimal equivalent work, with the same PRAGMAs (the limit)."""

    name = "raw sqlite3"

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "cache_size = -32000"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS members (room_id TEXT, user_id TEXT, membership TEXT, displayname TEXT,"
            " PRIMARY KEY (room_id, user_id)) WITHOUT ROWID"
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS processed (room_id TEXT, event_id TEXT, ts INTEGER,"
            " PRIMARY KEY (room_id, event_id)) WITHOUT ROWID"
        )
        self._claims: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        if self._thread is not None:
            self._claims.put(None)
            await asyncio.to_thread(self._thread.join)
        self.conn.close()

    @staticmethod
    def prepare(room_id: str, members: list[Member]) -> tuple[str, list[tuple[str, str, str, str | None]]]:
        return room_id, [(room_id, m.user_id, m.membership, m.displayname) for m in members]

    async def drain(self) -> None:
        pass

    async def full_sync(self, prepared: tuple[str, list[tuple[str, str, str, str | None]]]) -> None:
        room_id, rows = prepared
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("DELETE FROM members WHERE room_id = ?", (room_id,))
        self.conn.executemany("INSERT INTO members VALUES (?, ?, ?, ?)", rows)
        self.conn.execute("COMMIT")

    async def claim(self, room_id: str, event_id: str) -> bool:
        """The minimal asynchronous claim: one thread, whatever is queued in one transaction."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._claim_loop, args=(asyncio.get_running_loop(),), daemon=True)
            self._thread.start()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._claims.put((room_id, event_id, future))
        return await future

    def _claim_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA synchronous = NORMAL")
        while True:
            batch = [self._claims.get()]
            while True:
                try:
                    batch.append(self._claims.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is None:
                conn.close()
                return
            conn.execute("BEGIN IMMEDIATE")
            results = []
            for room_id, event_id, future in batch:
                cursor = conn.execute("INSERT OR IGNORE INTO processed VALUES (?, ?, 0)", (room_id, event_id))
                results.append((future, cursor.rowcount == 1))
            conn.execute("COMMIT")
            loop.call_soon_threadsafe(_settle, results)


def _settle(results: list[tuple[asyncio.Future[bool], bool]]) -> None:
    for future, value in results:
        future.set_result(value)
