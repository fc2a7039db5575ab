"""RoomStore: every read and write of the plugin's tables.

Writes are *submitted*, not awaited into existence: each write method queues its job on the
writer thread before it returns (the returned future resolves when the job's transaction has
committed). The caller's order of calls is the order of effects, which is how the logic layer
keeps each room's events in delivery order without waiting for one commit before queuing the next.

State changes that come from an event take the event's dedup claim as an argument and record it
in the same transaction as the change: an event is either applied and claimed, or neither.

Numeric IDs stay inside this package: callers pass and get Matrix IDs only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from mautrix.types import EventID, RoomID, UserID
from sqlalchemy.engine import Engine

from ..models import (
    INVITE,
    JOIN,
    LEAVE,
    ROOM_INFO_FIELDS,
    Applied,
    Member,
    MemberChange,
    MemberDiff,
    RoomInfo,
    RoomInfoChange,
    RoomSnapshot,
    SharedRoom,
    StaleRoom,
)
from . import checkpoints, history, migrations
from .alert_store import AlertStore
from .checkpointer import WalCheckpointer
from .dialect import Dialect
from .history_store import HistoryStore
from .interner import Interner
from .sync_write import replace_members
from .threads import Intercept, ReaderThread, Transaction, WriterThread
from .user_index import MEMBERSHIPS_OF_USER, UserIndex, of_user
from .web_store import WebStore

T = TypeVar("T")

CLEANUP_CHUNK = 2_000  # processed-event rows deleted per transaction
BIG_FIRST_SYNC = 20_000  # members of a first sync written with a small page cache (Dialect.big_write)


def now_ms() -> int:
    return int(time.time() * 1000)


# RoomInfo's columns, by name: the info fields events set (models.ROOM_INFO_FIELDS), then the
# counts and times the store keeps
_STORED_FIELDS = ("joined_count", "invited_count", "updated_at", "synced_at")
_ROOM_COLUMNS = ", ".join(
    ["r.room_id", *(f"i.{name}" for name in (*ROOM_INFO_FIELDS, *_STORED_FIELDS)), "(q.room_nid IS NOT NULL)"]
)
_ROOM_FIELDS = ("room_id", *ROOM_INFO_FIELDS, *_STORED_FIELDS, "needs_resync")
# a full sync's upsert of every stored column (synced_at: now)
_UPSERTED_FIELDS = (*ROOM_INFO_FIELDS, *_STORED_FIELDS)
_UPSERT_ROOM_INFO = (
    f"INSERT INTO roomstate_room_info (room_nid, {', '.join(_UPSERTED_FIELDS)})"
    f" VALUES (?, {', '.join('?' for _ in _UPSERTED_FIELDS)}) ON CONFLICT (room_nid) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _UPSERTED_FIELDS)
)
_ROOMS_FROM = """roomstate_room_info i
JOIN roomstate_rooms r ON r.room_nid = i.room_nid
LEFT JOIN roomstate_resync_queue q ON q.room_nid = i.room_nid"""


log = logging.getLogger("roomstate.db")


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("Marking the membership history as off failed: %s", future.exception())


def _any_differs(dialect: Dialect, fields: Sequence[str]) -> str:
    """SQL true when any of these room-info columns differs from its ``?`` (NULL-safe)."""
    return " OR ".join(f"{name} IS NOT ?" if dialect.is_sqlite else f"{name} IS DISTINCT FROM ?" for name in fields)


# the columns are RoomInfo's fields in order: rows become RoomInfos positionally (10,000 rooms a page)
assert tuple(field.name for field in dataclasses.fields(RoomInfo)) == _ROOM_FIELDS, "RoomInfo and _ROOM_FIELDS"


def _room_from_row(row: Sequence[Any]) -> RoomInfo:
    """A row of ``_ROOM_COLUMNS`` (and possibly more columns after them) as a RoomInfo."""
    room_id, name, topic, alias, encrypted, creator, version, replacement, joined, invited, updated, synced = row[:12]
    return RoomInfo(
        room_id,
        name,
        topic,
        alias,
        bool(encrypted),
        creator,
        version,
        replacement,
        int(joined),
        int(invited),
        int(updated),
        int(synced),
        bool(row[12]),
    )


# ---- write jobs (run on the writer thread) ---------------------------------------------------


# The room's info row (is it tracked?) and the user's membership in it, in one statement; with
# _CLAIMED, also whether the event was claimed outside the history (see apply_member).
_TRACKED_AND_MEMBER = (
    "SELECT m.membership, m.displayname{claimed} FROM roomstate_room_info i LEFT JOIN roomstate_memberships m"
    " ON m.room_nid = i.room_nid AND m.user_nid = ? WHERE i.room_nid = ?"
)
_TRACKED_USER_AND_MEMBER = (  # for a user not in the interner's cache: no row if the room is not tracked
    "SELECT u.user_nid, m.membership, m.displayname{claimed} FROM roomstate_room_info i"
    " LEFT JOIN roomstate_users u ON u.user_id = ?"
    " LEFT JOIN roomstate_memberships m ON m.room_nid = i.room_nid AND m.user_nid = u.user_nid"
    " WHERE i.room_nid = ?"
)
_CLAIMED = ", EXISTS (SELECT 1 FROM roomstate_processed_events WHERE room_nid = ? AND event_id = ?)"
_MEMBER_LOOKUPS = {  # (user cached, claim checked) -> SQL
    (cached, checked): (_TRACKED_AND_MEMBER if cached else _TRACKED_USER_AND_MEMBER).format(
        claimed=_CLAIMED if checked else ""
    )
    for cached in (True, False)
    for checked in (True, False)
}


def _claim(txn: Transaction, room_nid: int, event_id: EventID, ts: int) -> bool:
    """Record an event as processed; False if it already was (one atomic INSERT)."""
    txn.execute(
        "INSERT INTO roomstate_processed_events (room_nid, event_id, processed_ts) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (room_nid, event_id, ts),
    )
    return txn.cur.rowcount == 1


def _claim_many(txn: Transaction, room_nid: int, event_ids: Sequence[str], ts: int) -> None:
    if not event_ids:
        return
    if txn.dialect.is_sqlite:
        txn.cur.executemany(
            "INSERT INTO roomstate_processed_events (room_nid, event_id, processed_ts) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            ((room_nid, event_id, ts) for event_id in event_ids),
        )
        return
    txn.dialect.create_temp_table(txn.cur, "roomstate_staged_claims", "event_id TEXT")
    txn.dialect.bulk_insert(txn.cur, "roomstate_staged_claims", ("event_id",), ((e,) for e in event_ids))
    txn.execute(
        "INSERT INTO roomstate_processed_events (room_nid, event_id, processed_ts)"
        " SELECT DISTINCT ?, event_id, ? FROM roomstate_staged_claims ON CONFLICT DO NOTHING",
        (room_nid, ts),
    )


def _claim_unless_in_history(txn: Transaction, room_nid: int, event_id: EventID, ts: int) -> bool:
    """Claim an event whose change is not recorded (it changes nothing, its room is not tracked,
    or history is off) the usual way, unless a history row already claims it (False then)."""
    return not _claimed_in_history(txn, room_nid, [event_id]) and _claim(txn, room_nid, event_id, ts)


def _claimed_in_history(txn: Transaction, room_nid: int, event_ids: Sequence[EventID]) -> list[EventID]:
    """Those of the events whose history row claims them (see ``apply_member``)."""
    by_digest = {digest: event_id for event_id in event_ids if (digest := history.pack_event_id(event_id)[0])}
    rows = txn.execute_in(
        "SELECT event_hash FROM roomstate_history WHERE room_nid = ? AND event_hash IN ({marks})",
        list(by_digest),
        (room_nid,),
    )
    return [by_digest[bytes(row[0])] for row in rows]


def _is_tracked(txn: Transaction, room_nid: int) -> bool:
    return txn.execute("SELECT 1 FROM roomstate_room_info WHERE room_nid = ?", (room_nid,)).fetchone() is not None


def _queue_resync(txn: Transaction, room_nid: int, reason: str, error: str | None, due: int, now: int) -> None:
    """Put the room in the durable resync queue (or make its next attempt due sooner)."""
    txn.execute(
        "INSERT INTO roomstate_resync_queue (room_nid, reason, queued_at, attempts, next_attempt_at, last_error)"
        " VALUES (?, ?, ?, 0, ?, ?)"
        " ON CONFLICT (room_nid) DO UPDATE SET queued_at = excluded.queued_at,"  # the latest request
        " next_attempt_at = CASE WHEN excluded.next_attempt_at < roomstate_resync_queue.next_attempt_at"
        " THEN excluded.next_attempt_at ELSE roomstate_resync_queue.next_attempt_at END,"
        " last_error = COALESCE(excluded.last_error, roomstate_resync_queue.last_error)",
        (room_nid, reason, now, due, error),
    )


def _delete_room_state(txn: Transaction, room_nid: int) -> bool:
    """Drop a room's members, info and resync entry (not its nid nor its processed events)."""
    was_known = _is_tracked(txn, room_nid)
    txn.execute("DELETE FROM roomstate_memberships WHERE room_nid = ?", (room_nid,))
    txn.execute("DELETE FROM roomstate_room_info WHERE room_nid = ?", (room_nid,))
    txn.execute("DELETE FROM roomstate_resync_queue WHERE room_nid = ?", (room_nid,))
    return was_known


class RoomStore(HistoryStore, AlertStore, WebStore):
    """Rooms, members, processed events and the resync queue in the plugin's database."""

    def __init__(self, engine: Engine) -> None:
        self.dialect = Dialect(engine)
        self.interner = Interner(idle_seconds=24 * 3600)
        self.history_enabled = True  # recording membership history (config history.retention_days > 0)
        self.history_cleared = False  # history is off and its rows are deleted (writer thread)
        self.history_switches = 0
        self.recorder = history.Recorder()  # writer thread only
        self.user_index = UserIndex()  # writer thread only
        self._writer: WriterThread | None = None
        self.on_commit: Callable[[float], None] | None = None  # seconds a group commit took (writer thread)
        self._reader: ReaderThread | None = None
        self._checkpointer: WalCheckpointer | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def open_soon(self) -> asyncio.Future[int]:
        """Start the database threads and queue the migrations first, without yielding to the
        event loop: every store call made afterwards runs after them. Resolves to the schema
        version."""
        loop = asyncio.get_running_loop()
        if self.dialect.is_sqlite:
            self._checkpointer = WalCheckpointer(self.dialect)
        self._writer = WriterThread(
            "roomstate-db-writer",
            self.dialect,
            loop,
            on_refused=self._row_refused,
            on_commit=self._committed,
            between_writes=self._checkpointer.between_writes if self._checkpointer is not None else None,
        )
        self._reader = ReaderThread("roomstate-db-reader", self.dialect, loop)
        version = self._writer.submit_raw(self._migrate)  # migrations manage their own transactions
        if not self.history_enabled:  # set before opening: marks the history the bot is not keeping
            self._write(self._opened_with_history_off).add_done_callback(_log_failure)
        return version

    def _committed(self, seconds: float) -> None:
        if self._checkpointer is not None:
            self._checkpointer.committed()
        if self.on_commit is not None:
            self.on_commit(seconds)

    def _history_is_off(self, txn: Transaction) -> None:
        """History is off from this start on: every room still tracked gets a "not tracked"
        checkpoint now, so what happens while it is off is never taken for what was recorded."""
        for room_nid in checkpoints.tracked_rooms(txn):
            self.recorder.stop_tracking(txn, room_nid)

    def _opened_with_history_off(self, txn: Transaction) -> None:
        """``_history_is_off``; and with no history row left (never kept, or deleted at an earlier
        start), no member event needs to look there for claims."""
        self._history_is_off(txn)
        self._cleared_if_empty(txn)

    async def open(self) -> int:
        return await self.open_soon()

    def _migrate(self, conn: Any) -> int:
        if self.dialect.is_sqlite:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode = WAL")  # a property of the file: readers never block
            cur.close()
        version = migrations.upgrade(conn, self.dialect)
        cur = conn.cursor()
        self.user_index.recount(cur)
        cur.close()
        return version

    async def close(self) -> None:
        """Finish queued work, then close the connections and stop the threads."""
        try:
            if self._writer is not None:
                await self._writer.close()
            if self._reader is not None:
                await self._reader.close()
        finally:
            if self._checkpointer is not None:
                checkpointer, self._checkpointer = self._checkpointer, None
                await asyncio.get_running_loop().run_in_executor(None, checkpointer.close)

    @property
    def writes_pending(self) -> int:
        """Write jobs queued or running."""
        return self._writer.pending if self._writer is not None else 0

    def flush(self) -> asyncio.Future[None]:
        """Resolves once every write queued before this call has finished (no transaction)."""
        assert self._writer is not None, "RoomStore.open_soon() was not called"
        return self._writer.submit_raw(lambda conn: None)

    def _write(
        self,
        work: Callable[[Transaction], T],
        single_statement: bool = False,
        intercept: Intercept[T] | None = None,
    ) -> asyncio.Future[T]:
        assert self._writer is not None, "RoomStore.open_soon() was not called"
        return self._writer.submit(work, single_statement, intercept)

    def _read(self, work: Callable[[Transaction], T]) -> asyncio.Future[T]:
        assert self._reader is not None, "RoomStore.open_soon() was not called"
        return self._reader.submit(work)

    # ---- processed events (dedup) -----------------------------------------------------------

    def claim_event(self, room_id: RoomID, event_id: EventID) -> asyncio.Future[bool]:
        """Record the event as processed; resolves False if it already was. Atomic: of two
        racing claims exactly one wins."""
        ts = now_ms()

        def job(txn: Transaction) -> bool:
            room_nid = self.interner.room(txn, room_id)
            assert room_nid is not None
            return _claim(txn, room_nid, event_id, ts)

        return self._write(job, single_statement=room_id in self.interner.rooms)

    def claim_events(self, room_id: RoomID, event_ids: Sequence[EventID]) -> asyncio.Future[None]:
        """Record events as processed, in bulk (those already recorded stay as they are)."""
        ts = now_ms()

        def job(txn: Transaction) -> None:
            room_nid = self.interner.room(txn, room_id)
            assert room_nid is not None
            _claim_many(txn, room_nid, event_ids, ts)

        return self._write(job)

    def release_event(self, room_id: RoomID, event_id: EventID) -> asyncio.Future[None]:
        """Forget a claim ``claim_event`` made (a command's), so that a later delivery of the
        event is processed again. (A member event's claim may be its history row: never released,
        since it is made with the change.)"""

        def job(txn: Transaction) -> None:
            room_nid = self.interner.room(txn, room_id, create=False)
            if room_nid is not None:
                txn.execute(
                    "DELETE FROM roomstate_processed_events WHERE room_nid = ? AND event_id = ?",
                    (room_nid, event_id),
                )

        return self._write(job)

    def delete_processed_chunk(self, cutoff_ms: int, from_room_nid: int = 0) -> asyncio.Future[tuple[int, int | None]]:
        """Delete up to CLEANUP_CHUNK processed-event records older than ``cutoff_ms``, by range
        on the (room, processed_ts) index, starting at ``from_room_nid``. Resolves to (rows
        deleted, the room to continue from or None when done). Small chunks keep the writer free
        for claims in between."""

        def job(txn: Transaction) -> tuple[int, int | None]:
            row = txn.execute(
                "SELECT MIN(room_nid) FROM roomstate_processed_events WHERE room_nid >= ?", (from_room_nid,)
            ).fetchone()
            room_nid = row[0] if row else None
            deleted = 0
            while room_nid is not None:
                limit = CLEANUP_CHUNK - deleted
                txn.execute(
                    "DELETE FROM roomstate_processed_events WHERE room_nid = ? AND event_id IN ("
                    " SELECT event_id FROM roomstate_processed_events WHERE room_nid = ? AND processed_ts < ?"
                    " ORDER BY processed_ts LIMIT ?)",
                    (room_nid, room_nid, cutoff_ms, limit),
                )
                count = max(txn.cur.rowcount, 0)
                deleted += count
                if count == limit:  # the chunk is full; this room may have more
                    return deleted, room_nid
                row = txn.execute(
                    "SELECT MIN(room_nid) FROM roomstate_processed_events WHERE room_nid > ?", (room_nid,)
                ).fetchone()
                room_nid = row[0] if row else None
            return deleted, None

        return self._write(job)

    def sweep_user_index_chunk(self, from_user_nid: int = 0) -> asyncio.Future[tuple[int, int | None]]:
        """Delete the user index's pairs without a membership for a range of users (see
        user_index.py). Resolves to (pairs deleted, the user to continue from or None when done)."""
        return self._write(lambda txn: self.user_index.sweep_chunk(txn, from_user_nid))

    # ---- state changes ----------------------------------------------------------------------

    def apply_member(
        self,
        change: MemberChange,
        *,
        record_claim: bool,
        queue_if_untracked: bool,
        intercept: Intercept[Applied] | None = None,
    ) -> asyncio.Future[Applied]:
        """Store one member's new membership (a ``leave`` deletes the row), keeping the room's
        counts in step. With ``record_claim``, the event is claimed in the same transaction and a
        duplicate changes nothing. In an untracked room nothing is stored; with
        ``queue_if_untracked`` the room goes into the resync queue (in the same transaction).
        ``intercept``: see ``WriterThread.submit``."""
        now = now_ms()
        member = change.member
        # (packed here, not in the writer's turn; if history is turned on meanwhile, there)
        packed_event_id = history.pack_event_id(change.event_id) if self.history_enabled else None

        def job(txn: Transaction) -> Applied:
            room_nid = self.interner.room(txn, change.room_id)
            assert room_nid is not None
            recording = self.history_enabled
            packed = (
                (packed_event_id or history.pack_event_id(change.event_id))
                if recording or not self.history_cleared  # history rows may hold claims
                else None
            )
            # With history on, the claim of an event whose ID is a hash is its history row (one
            # write fewer per event): the lookup checks the claims made the other way (a full
            # sync's covered events, an unchanged event, history off, schema v6), the row's unique
            # (room, hash) index any earlier row.
            digest = packed[0] if record_claim and packed is not None else None
            if digest is not None and not recording:  # off, but the rows not deleted yet still claim
                if not _claim_unless_in_history(txn, room_nid, change.event_id, now):
                    return Applied.DUPLICATE
            elif record_claim and digest is None and not _claim(txn, room_nid, change.event_id, now):
                return Applied.DUPLICATE
            checked = recording and digest is not None  # the claim is the history row written below
            user_nid = self.interner.cached_user(member.user_id)
            if user_nid is not None:
                params: tuple[Any, ...] = (user_nid, room_nid)
            else:  # the user's ID, the room's and the membership in one lookup
                params = (member.user_id, room_nid)
            if checked:
                params = (room_nid, change.event_id, *params)
            row = txn.execute(_MEMBER_LOOKUPS[user_nid is not None, checked], params).fetchone()
            if row is not None and user_nid is None:
                user_nid = self.interner.found_user(txn, member.user_id, row[0])
                row = row[1:]
            if row is not None and checked and row[2]:
                return Applied.DUPLICATE
            if row is None:
                if checked and not _claim_unless_in_history(txn, room_nid, change.event_id, now):
                    return Applied.DUPLICATE
                if queue_if_untracked:
                    _queue_resync(txn, room_nid, "event in an untracked room", None, now, now)
                return Applied.NOT_TRACKED
            assert user_nid is not None
            old = None if row[0] is None else (row[0], row[1])
            old_membership = row[0]
            if (old is None and member.membership == LEAVE) or old == (member.membership, member.displayname):
                if checked and not _claim_unless_in_history(txn, room_nid, change.event_id, now):
                    return Applied.DUPLICATE
                return Applied.UNCHANGED
            if recording:
                assert packed is not None  # (packed above whenever recording)
                renamed = member.membership != LEAVE and (None if old is None else old[1]) != member.displayname
                sender_nid = None if change.sender == member.user_id else self.interner.user(txn, change.sender)
                if not self.recorder.append(
                    txn,
                    room_nid,
                    user_nid,
                    member.membership,
                    old_membership or LEAVE,
                    (member.displayname or "") if renamed else None,
                    sender_nid,
                    change.reason,
                    packed,
                    change.origin_ts,
                    claim=checked,
                ):
                    return Applied.DUPLICATE
            if member.membership == LEAVE:
                txn.execute(
                    "DELETE FROM roomstate_memberships WHERE room_nid = ? AND user_nid = ?", (room_nid, user_nid)
                )
            else:
                txn.execute(
                    "INSERT INTO roomstate_memberships (room_nid, user_nid, membership, displayname)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (room_nid, user_nid) DO UPDATE SET"
                    " membership = excluded.membership, displayname = excluded.displayname",
                    (room_nid, user_nid, member.membership, member.displayname),
                )
                if old is None:
                    self.user_index.add(txn, user_nid, room_nid)
            joined = (member.membership == JOIN) - (old_membership == JOIN)
            invited = (member.membership == INVITE) - (old_membership == INVITE)
            if joined or invited:  # a rename changes no count
                txn.execute(
                    "UPDATE roomstate_room_info SET joined_count = joined_count + ?,"
                    " invited_count = invited_count + ?, updated_at = ? WHERE room_nid = ?",
                    (joined, invited, now, room_nid),
                )
            if recording:
                self.recorder.appended(txn, room_nid)
            return Applied.APPLIED

        return self._write(job, intercept=intercept)

    def apply_room_info(
        self,
        change: RoomInfoChange,
        *,
        record_claim: bool,
        queue_if_untracked: bool,
        intercept: Intercept[Applied] | None = None,
    ) -> asyncio.Future[Applied]:
        """Set some RoomInfo fields of a tracked room (same claim/untracked rules and ``intercept``
        as ``apply_member``)."""
        now = now_ms()
        fields = [name for name, _ in change.changes]
        values = tuple(value for _, value in change.changes)
        differs = _any_differs(self.dialect, fields)
        assignments = ", ".join(f"{name} = ?" for name in fields)

        def job(txn: Transaction) -> Applied:
            room_nid = self.interner.room(txn, change.room_id)
            assert room_nid is not None
            if record_claim and not _claim(txn, room_nid, change.event_id, now):
                return Applied.DUPLICATE
            if not _is_tracked(txn, room_nid):
                if queue_if_untracked:
                    _queue_resync(txn, room_nid, "event in an untracked room", None, now, now)
                return Applied.NOT_TRACKED
            txn.execute(
                f"UPDATE roomstate_room_info SET {assignments}, updated_at = ? WHERE room_nid = ? AND ({differs})",
                (*values, now, room_nid, *values),
            )
            return Applied.APPLIED if txn.cur.rowcount else Applied.UNCHANGED

        return self._write(job, intercept=intercept)

    def replace_room(
        self, snapshot: RoomSnapshot, *, covered_events: Sequence[EventID] = (), fetched_at_ms: int | None = None
    ) -> asyncio.Future[MemberDiff]:
        """Replace a room's info and member list with ``snapshot`` in one transaction, writing
        only the rows that differ; record ``covered_events`` (events the snapshot covers) as processed
        and take the room out of the resync queue, in the same transaction, unless a resync was
        asked for after ``fetched_at_ms`` (when the snapshot was requested): that one still runs."""
        now = now_ms()
        info = snapshot.info

        def job(txn: Transaction) -> MemberDiff:
            room_nid = self.interner.room(txn, info.room_id)
            assert room_nid is not None
            row = txn.execute(
                "SELECT joined_count, invited_count FROM roomstate_room_info WHERE room_nid = ?", (room_nid,)
            ).fetchone()
            counts = None if row is None else (int(row[0]), int(row[1]))
            with self.dialect.big_write(txn.cur, counts is None and len(snapshot.members) >= BIG_FIRST_SYNC):
                written = replace_members(
                    txn,
                    self.interner,
                    self.user_index,
                    room_nid,
                    info.room_id,
                    snapshot.members,
                    counts,
                    want_rows=self.history_enabled,
                )
                if self.history_enabled and written.all:
                    self.recorder.checkpoint(txn, room_nid, written.rows)
            diff, joined, invited = written.diff, written.joined, written.invited
            if self.history_enabled and not written.all:
                self._record_resync(txn, room_nid, written.changes)
            values = {name: getattr(info, name) for name in ROOM_INFO_FIELDS}
            values.update(encrypted=bool(info.encrypted), updated_at=now, joined_count=joined, invited_count=invited)
            txn.execute(_UPSERT_ROOM_INFO, (room_nid, *(values.get(name, now) for name in _UPSERTED_FIELDS)))
            txn.execute(
                "DELETE FROM roomstate_resync_queue WHERE room_nid = ? AND queued_at <= ?",
                (room_nid, now if fetched_at_ms is None else fetched_at_ms),
            )
            _claim_many(txn, room_nid, covered_events, now)
            return diff

        return self._write(job)

    def forget_room(
        self, room_id: RoomID, *, because_of: EventID | None = None, intercept: Intercept[Applied] | None = None
    ) -> asyncio.Future[Applied]:
        """Delete a room's info and members (not its nid nor its processed events), claiming
        the event it happens ``because_of`` in the same transaction (a duplicate changes nothing).
        ``intercept``: see ``WriterThread.submit``."""
        now = now_ms()

        def job(txn: Transaction) -> Applied:
            room_nid = self.interner.room(txn, room_id, create=because_of is not None)
            if room_nid is None:
                return Applied.UNCHANGED
            if because_of is not None and not _claim(txn, room_nid, because_of, now):
                return Applied.DUPLICATE
            if not _delete_room_state(txn, room_nid):
                return Applied.UNCHANGED
            if self.history_enabled:
                self.recorder.stop_tracking(txn, room_nid)
            return Applied.APPLIED

        return self._write(job, intercept=intercept)

    def _row_refused(self, txn: Transaction, sql: str, params: tuple[Any, ...]) -> None:
        """A history row the database refused leaves a hole in its room's history: from that row
        on the room counts as not tracked (until its next checkpoint), so no answer is wrong."""
        if self.recorder.is_row_insert(sql):
            checkpoints.stop(txn, int(params[0]), int(params[1]))

    def _record_resync(
        self, txn: Transaction, room_nid: int, changes: list[tuple[UserID, str, str, str | None]]
    ) -> None:
        """History rows for the differences a full sync found (no event: a resync marker)."""
        nids = self.interner.known_users(txn, (user_id for user_id, *_ in changes))
        self.recorder.record_resync(
            txn, room_nid, [(nids[user_id], before, after, name) for user_id, before, after, name in changes]
        )

    def contradicted(
        self, room_id: RoomID, members: Sequence[MemberChange], infos: Sequence[RoomInfoChange]
    ) -> asyncio.Future[list[EventID]]:
        """Of these state events, which a sync's ``state`` section says are the room's state
        now, the ones processed before whose content is not what is stored (after every write
        queued before this call). Such an event will not be applied again (it is a duplicate),
        so the stored state stays wrong unless the room is resynced. Nothing for an untracked room."""

        def job(txn: Transaction) -> list[EventID]:
            room_nid = self.interner.room(txn, room_id, create=False)
            if room_nid is None or not _is_tracked(txn, room_nid):
                return []
            event_ids = [*(change.event_id for change in members), *(info.event_id for info in infos)]
            processed = {
                str(row[0])
                for row in txn.execute_in(
                    "SELECT event_id FROM roomstate_processed_events WHERE room_nid = ? AND event_id IN ({marks})",
                    event_ids,
                    (room_nid,),
                )
            }
            processed.update(_claimed_in_history(txn, room_nid, event_ids))
            asserted = [change for change in members if change.event_id in processed]
            stored = {
                str(user_id): (membership, name)
                for user_id, membership, name in txn.execute_in(
                    "SELECT u.user_id, m.membership, m.displayname FROM roomstate_memberships m JOIN roomstate_users u"
                    " ON u.user_nid = m.user_nid WHERE m.room_nid = ? AND u.user_id IN ({marks})",
                    {change.member.user_id for change in asserted},
                    (room_nid,),
                )
            }
            stale: list[EventID] = []
            for change in asserted:
                member = change.member
                expected = None if member.membership == LEAVE else (member.membership, member.displayname)
                if stored.get(member.user_id) != expected:
                    stale.append(change.event_id)
            for info in infos:
                if info.event_id in processed and self._info_differs(txn, room_nid, info):
                    stale.append(info.event_id)
            return stale

        return self._write(job)

    def _info_differs(self, txn: Transaction, room_nid: int, change: RoomInfoChange) -> bool:
        differs = _any_differs(self.dialect, [name for name, _ in change.changes])
        values = tuple(value for _, value in change.changes)
        sql = f"SELECT 1 FROM roomstate_room_info WHERE room_nid = ? AND ({differs})"
        return txn.execute(sql, (room_nid, *values)).fetchone() is not None

    # ---- the sync position ------------------------------------------------------------------

    def sync_position(self) -> asyncio.Future[tuple[str, UserID] | None]:
        """The stored sync position (a ``next_batch`` token) and whose sync it is, or None if
        none was ever stored."""

        def job(txn: Transaction) -> tuple[str, UserID] | None:
            row = txn.execute("SELECT next_batch, user_id FROM roomstate_sync_position WHERE id = 1").fetchone()
            return None if row is None else (str(row[0]), UserID(str(row[1])))

        return self._read(job)

    def save_sync_position(self, next_batch: str, user_id: UserID) -> asyncio.Future[None]:
        """Store the sync position of ``user_id``'s sync, after every write queued before this
        call (the writer is first in, first out: everything queued earlier commits with it or
        before it)."""
        now = now_ms()

        def job(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO roomstate_sync_position (id, next_batch, user_id, saved_at) VALUES (1, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET next_batch = excluded.next_batch, user_id = excluded.user_id,"
                " saved_at = excluded.saved_at",
                (next_batch, user_id, now),
            )

        return self._write(job, single_statement=True)

    # ---- the durable resync queue -----------------------------------------------------------

    def queue_resync(
        self, room_id: RoomID, reason: str, error: str | None = None, due_ms: int | None = None
    ) -> asyncio.Future[None]:
        """Mark the room as needing a full sync (kept across restarts until a sync succeeds)."""
        now = now_ms()

        def job(txn: Transaction) -> None:
            room_nid = self.interner.room(txn, room_id)
            assert room_nid is not None
            _queue_resync(txn, room_nid, reason, error, now if due_ms is None else due_ms, now)

        return self._write(job)

    def resync_failed(self, room_id: RoomID, error: str, backoff: Callable[[int], float]) -> asyncio.Future[int]:
        """Count a failed resync attempt and schedule the next one ``backoff(attempts)`` seconds
        from now. Resolves to the number of attempts so far."""
        now = now_ms()

        def job(txn: Transaction) -> int:
            room_nid = self.interner.room(txn, room_id)
            assert room_nid is not None
            row = txn.execute("SELECT attempts FROM roomstate_resync_queue WHERE room_nid = ?", (room_nid,)).fetchone()
            attempts = (int(row[0]) if row else 0) + 1
            due = now + int(backoff(attempts) * 1000)
            if row is None:
                _queue_resync(txn, room_nid, "sync failed", error, due, now)
            txn.execute(
                "UPDATE roomstate_resync_queue SET attempts = ?, next_attempt_at = ?, last_error = ?"
                " WHERE room_nid = ?",
                (attempts, due, error[:500], room_nid),
            )
            return attempts

        return self._write(job)

    def due_resyncs(self, limit: int) -> asyncio.Future[list[StaleRoom]]:
        """Rooms whose next resync attempt is due, most overdue first."""
        now = now_ms()

        def job(txn: Transaction) -> list[StaleRoom]:
            rows = txn.execute(
                f"SELECT {_STALE_COLUMNS} FROM {_STALE_FROM} WHERE q.next_attempt_at <= ?"
                " ORDER BY q.next_attempt_at LIMIT ?",
                (now, limit),
            ).fetchall()
            return [StaleRoom(*row) for row in rows]

        return self._read(job)

    def resync_queue(self) -> asyncio.Future[list[StaleRoom]]:
        """Every room in the resync queue, by next attempt."""

        def job(txn: Transaction) -> list[StaleRoom]:
            rows = txn.execute(f"SELECT {_STALE_COLUMNS} FROM {_STALE_FROM} ORDER BY q.next_attempt_at").fetchall()
            return [StaleRoom(*row) for row in rows]

        return self._read(job)

    def next_resync_due(self, excluding: Collection[RoomID] = ()) -> asyncio.Future[int | None]:
        """When the next resync is due (Unix ms), the rooms ``excluding`` (being resynced) aside."""

        def job(txn: Transaction) -> int | None:
            sql = "SELECT MIN(q.next_attempt_at) FROM roomstate_resync_queue q"
            if excluding:  # at most sync.concurrency rooms: one IN list (execute_in would split a longer one)
                rows = txn.execute_in(
                    sql + " JOIN roomstate_rooms r ON r.room_nid = q.room_nid WHERE r.room_id NOT IN ({marks})",
                    sorted(excluding),
                )
                row = rows[0] if rows else None
            else:
                row = txn.execute(sql).fetchone()
            return None if row is None or row[0] is None else int(row[0])

        return self._read(job)

    # ---- reads ------------------------------------------------------------------------------

    def rooms(self, only: Collection[RoomID] | None = None) -> asyncio.Future[list[RoomInfo]]:
        """Every room the bot is joined to (as far as the store knows), with member counts; or
        those of them among the room IDs ``only``."""

        def job(txn: Transaction) -> list[RoomInfo]:
            select = f"SELECT {_ROOM_COLUMNS} FROM {_ROOMS_FROM}"
            if only is None:
                rows = txn.execute(select).fetchall()
            else:
                rows = txn.execute_in(select + " WHERE r.room_id IN ({marks})", sorted(only))
            return [_room_from_row(row) for row in rows]

        return self._read(job)

    def room(self, room_id: RoomID) -> asyncio.Future[RoomInfo | None]:
        def job(txn: Transaction) -> RoomInfo | None:
            row = txn.execute(f"SELECT {_ROOM_COLUMNS} FROM {_ROOMS_FROM} WHERE r.room_id = ?", (room_id,)).fetchone()
            return None if row is None else _room_from_row(row)

        return self._read(job)

    def room_in_write_order(self, room_id: RoomID) -> asyncio.Future[RoomInfo | None]:
        """The room as stored after every write queued before this call, and before any queued
        after it (a read on the writer: e.g. the room's name just before it is forgotten)."""

        def job(txn: Transaction) -> RoomInfo | None:
            row = txn.execute(f"SELECT {_ROOM_COLUMNS} FROM {_ROOMS_FROM} WHERE r.room_id = ?", (room_id,)).fetchone()
            return None if row is None else _room_from_row(row)

        return self._write(job)

    def rooms_of(self, user_id: UserID, membership: str = JOIN) -> asyncio.Future[list[SharedRoom]]:
        """Tracked rooms in which ``user_id`` has ``membership``, with their display name there."""

        def job(txn: Transaction) -> list[SharedRoom]:
            user = txn.execute("SELECT user_nid FROM roomstate_users WHERE user_id = ?", (user_id,)).fetchone()
            if user is None:
                return []
            rows = txn.execute(
                f"SELECT {_ROOM_COLUMNS}, m.displayname FROM {MEMBERSHIPS_OF_USER}"
                " JOIN roomstate_room_info i ON i.room_nid = m.room_nid"
                " JOIN roomstate_rooms r ON r.room_nid = i.room_nid"
                " LEFT JOIN roomstate_resync_queue q ON q.room_nid = i.room_nid WHERE m.membership = ?",
                (*of_user(int(user[0])), membership),
            ).fetchall()
            return [SharedRoom(_room_from_row(row), row[len(_ROOM_FIELDS)]) for row in rows]

        return self._read(job)

    def members(self, room_id: RoomID) -> asyncio.Future[list[Member]]:
        """A tracked room's members (every stored membership), sorted by user ID."""

        def job(txn: Transaction) -> list[Member]:
            rows = txn.execute(
                "SELECT u.user_id, m.membership, m.displayname FROM roomstate_rooms r"
                " JOIN roomstate_memberships m ON m.room_nid = r.room_nid"
                " JOIN roomstate_users u ON u.user_nid = m.user_nid WHERE r.room_id = ? ORDER BY u.user_id",
                (room_id,),
            ).fetchall()
            return [Member(*row) for row in rows]

        return self._read(job)

    def totals(self) -> asyncio.Future[tuple[int, int, int]]:
        """(rooms tracked, joined members, invited members), from the per-room counts."""

        def job(txn: Transaction) -> tuple[int, int, int]:
            rooms, joined, invited = txn.execute(
                "SELECT COUNT(*), SUM(joined_count), SUM(invited_count) FROM roomstate_room_info"
            ).fetchone()
            return int(rooms or 0), int(joined or 0), int(invited or 0)

        return self._read(job)

    def history_rows(self) -> asyncio.Future[int]:
        """How many membership-history rows are kept (a count: one index scan, on the reader)."""

        def job(txn: Transaction) -> int:
            return int(txn.execute("SELECT COUNT(*) FROM roomstate_history").fetchone()[0] or 0)

        return self._read(job)

    def members_page(
        self, room_id: RoomID, *, membership: str | None, search: str, offset: int, limit: int
    ) -> asyncio.Future[tuple[int, list[Member]]]:
        """A page of a room's members by user ID (those with ``membership`` and whose ID or name
        contains ``search``, case-insensitively, if given), and how many there are in all."""
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

        def job(txn: Transaction) -> tuple[int, list[Member]]:
            where = " WHERE r.room_id = ?"
            params: tuple[Any, ...] = (room_id,)
            if membership:
                where += " AND m.membership = ?"
                params += (membership,)
            in_room = " FROM roomstate_rooms r JOIN roomstate_memberships m ON m.room_nid = r.room_nid"
            source = in_room + " JOIN roomstate_users u ON u.user_nid = m.user_nid"
            columns = "u.user_id, m.membership, m.displayname"
            if search:  # one pass: the matches, counted with a window (SQLite's LIKE ignores ASCII case)
                like = "LIKE" if txn.dialect.is_sqlite else "ILIKE"
                where += f" AND (u.user_id {like} ? ESCAPE '\\' OR COALESCE(m.displayname, '') {like} ? ESCAPE '\\')"
                params += (pattern, pattern)
                columns += ", COUNT(*) OVER ()"
            rows = []
            if limit > 0:
                rows = txn.execute(
                    f"SELECT {columns}{source}{where} ORDER BY u.user_id LIMIT ? OFFSET ?", (*params, limit, offset)
                ).fetchall()
            if search and rows:
                total = int(rows[0][3])
            else:  # counted on the membership rows alone unless the search needs the user IDs
                total = int(txn.execute(f"SELECT COUNT(*){source if search else in_room}{where}", params).fetchone()[0])
            return total, [Member(UserID(row[0]), str(row[1]), row[2]) for row in rows]

        return self._read(job)

    def sweep_caches(self, idle_seconds: float) -> asyncio.Future[None]:
        """Drop cache entries unused for ``idle_seconds`` (on the writer thread, which owns
        them)."""

        def job(txn: Transaction) -> None:
            self.interner.sweep(idle_seconds)

        return self._write(job, single_statement=True)


_STALE_COLUMNS = "r.room_id, q.reason, q.queued_at, q.attempts, q.next_attempt_at, q.last_error"
_STALE_FROM = "roomstate_resync_queue q JOIN roomstate_rooms r ON r.room_nid = q.room_nid"
