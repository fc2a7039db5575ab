"""Membership history (Dendrite's "state at any event" idea, for memberships): recording it and
reading it back. Writer-side objects belong to the writer thread.

Every membership transition the plugin applies is appended to ``roomstate_history`` in delivery
order: numeric IDs for room, user and sender, the membership before and after (small codes), the
display name when it changed, the reason, the event ID (32 bytes for the hash IDs of room v4+;
none: a full sync discovered the change), and the sender's clock as an offset from ours. ``seq``
orders the rows and is the clock too: ``Unix milliseconds << 4 | counter``, increasing across rooms.

Rows are clustered by room (``!joins``, rebuilding the past) with an append-only index by seq.
Finding one user's rows needs an index by user, which written row by row would cost a random page
write per event; ``roomstate_history_by_user`` is instead filled in sorted batches (every
``INDEX_BATCH_ROWS`` rows), bucketed by day so a batch lands in a small part of it. Readers take
the rows after the last batch (``roomstate_history_progress``) from the seq index.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from mautrix.types import EventID, RoomID, UserID

from ..models import HistoryEntry
from . import checkpoints
from .codes import CODES, MEMBERSHIP_OF
from .threads import Transaction

COUNTER_BITS = 4  # 6-byte seqs until the year 2248
DAY = 86_400_000 << COUNTER_BITS  # seqs in a day
HOUR = 3_600_000 << COUNTER_BITS  # seqs in an hour
LAST_SEQ = 2**62  # after every seq there will ever be (fits a BIGINT)
# A room is checkpointed once it has max(CHECKPOINT_MIN_ROWS, members * CHECKPOINT_ROWS_PER_MEMBER)
# rows after its last checkpoint: rebuilding a moment replays the rows to the nearer of the two
# checkpoints around it (about half an interval, at most one room's worth).
CHECKPOINT_MIN_ROWS = 2_000
CHECKPOINT_ROWS_PER_MEMBER = 1.0
INDEX_BATCH_ROWS = 5_000  # rows indexed by user at a time (readers scan at most this many more)


def seq_at(unix_seconds: float) -> int:
    """The smallest seq of that moment (for ranges by time)."""
    return max(0, int(unix_seconds * 1000)) << COUNTER_BITS


def time_of(seq: int) -> int:
    """Unix seconds at which the row with this seq was observed."""
    return (seq >> COUNTER_BITS) // 1000


class Clock:
    """Issues increasing seqs. It resumes after the largest stored one, so seqs stay unique and
    ordered even if the wall clock went back across a restart; beyond 16 rows a millisecond it
    runs ahead of the wall clock until the rows slow down."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now
        self.last: int | None = None

    def next(self, txn: Transaction) -> int:
        last = self.last
        if last is None:
            last = _largest_seq(txn)
        self.last = seq = max(last + 1, int(self.now() * 1000) << COUNTER_BITS)
        return seq


def _largest_seq(txn: Transaction) -> int:
    row = txn.execute(
        "SELECT MAX(s) FROM (SELECT MAX(seq) AS s FROM roomstate_history UNION ALL"
        " SELECT MAX(seq) FROM roomstate_history_progress UNION ALL"  # the user index's watermark
        " SELECT (SELECT MAX(c.seq) FROM roomstate_history_checkpoints c WHERE c.room_nid = r.room_nid)"
        " FROM roomstate_rooms r) latest"
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


_HASH_EVENT_ID = re.compile(r"\$[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")  # exactly 32 bytes, canonical


_TO_STANDARD_BASE64 = bytes.maketrans(b"-_", b"+/")  # on bytes: str.translate is 7x slower here


def pack_event_id(event_id: EventID) -> tuple[bytes | None, str | None]:
    """An event ID as stored: the 32-byte hash of a room v4+ ID ("$" and 43 URL-safe base64
    characters) as bytes, any other ID as text."""
    if _HASH_EVENT_ID.fullmatch(event_id):
        return binascii.a2b_base64(event_id[1:].encode().translate(_TO_STANDARD_BASE64) + b"="), None
    return None, event_id


def unpack_event_id(digest: bytes | None, text: str | None) -> EventID | None:
    if digest is None:
        return None if text is None else EventID(text)
    return EventID("$" + base64.urlsafe_b64encode(bytes(digest)).decode().rstrip("="))


_INSERT = (
    "INSERT INTO roomstate_history (room_nid, seq, user_nid, membership, previous, sender_nid, origin_offset,"
    " displayname, reason, event_hash, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_JOIN = CODES["join"]
_JOINS = f"SUM(CASE WHEN membership = {_JOIN} AND previous <> {_JOIN} THEN 1 ELSE 0 END)"  # arrivals
_LEAVES = f"SUM(CASE WHEN previous = {_JOIN} AND membership <> {_JOIN} THEN 1 ELSE 0 END)"  # departures
_SECOND = 1000 << COUNTER_BITS  # seqs in a second
_HALF_SECOND = _SECOND // 2


class Recorder:
    """Appends history rows, and keeps what makes reading them cheap: a checkpoint of a room
    every max(CHECKPOINT_MIN_ROWS, members * CHECKPOINT_ROWS_PER_MEMBER) of its rows, the user index every
    INDEX_BATCH_ROWS rows. Counters since the last of each are kept in memory (a trigger only:
    wrong after a rollback, never wrong data); ``forget`` drops them."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.clock = Clock(now)
        self._since: dict[int, list[int]] = {}  # room_nid -> [rows since its checkpoint, rows due]
        self._unindexed: int | None = None  # rows not in the user index yet
        self._insert: str | None = None  # _INSERT in the driver's paramstyle
        self._claim: str | None = None  # the same, as an event's claim (nothing on a conflict)

    def append(
        self,
        txn: Transaction,
        room_nid: int,
        user_nid: int,
        membership: str,
        previous: str,
        displayname: str | None,
        sender_nid: int | None,
        reason: str | None,
        event_id: tuple[bytes | None, str | None],
        origin_ms: int | None,
        *,
        claim: bool = False,
    ) -> bool:
        """Append one transition an event made (``displayname`` only when it changed, the sender
        only when not the user; ``event_id`` as ``pack_event_id`` gives it, which the caller can
        do before the transaction), before the change itself is written; ``appended`` follows it.

        With ``claim`` (an event ID that is a hash), the row is the event's dedup claim: it is
        inserted now, and False means the room already has a row of this event (a replay), so
        nothing was written. Otherwise the row is deferred to the commit and True returned. The hot
        path of every member event: kept lean."""
        clock = self.clock
        if clock.last is None:
            clock.next(txn)
        assert clock.last is not None
        clock.last = seq = max(clock.last + 1, int(clock.now() * 1000) << COUNTER_BITS)
        offset = None
        if origin_ms is not None:  # the sender's clock, in whole seconds from ours
            offset = max(-(2**31), min(2**31 - 1, ((origin_ms << COUNTER_BITS) - seq + _HALF_SECOND) // _SECOND))
        event_hash, other_id = event_id
        row = (
            room_nid,
            seq,
            user_nid,
            CODES[membership],
            CODES[previous],
            sender_nid,
            offset,
            displayname,
            reason,
            event_hash,
            other_id,
        )
        if claim:
            cur = txn.cur  # (the statement is in the driver's paramstyle already)
            cur.execute(self._claim or self._prepare_claim(txn), row)
            return cur.rowcount == 1
        txn.defer(self._insert or self._prepare(txn), row)
        return True

    def appended(self, txn: Transaction, room_nid: int) -> None:
        """Count the row ``append`` added, once the change is written (a checkpoint it makes due
        holds the change)."""
        since = self._since.get(room_nid)
        if (
            since is None
            or since[0] + 1 >= since[1]
            or self._unindexed is None
            or self._unindexed + 1 >= INDEX_BATCH_ROWS
        ):
            self._counted(txn, room_nid, 1)
        else:  # the common case: nothing to do but count
            since[0] += 1
            self._unindexed += 1

    def is_row_insert(self, sql: str) -> bool:
        """Whether ``sql`` is the statement that appends history rows."""
        return sql == self._insert

    def _prepare(self, txn: Transaction) -> str:
        self._insert = txn.dialect.sql(_INSERT)
        return self._insert

    def _prepare_claim(self, txn: Transaction) -> str:
        # (the target named: a clash of (room, seq) is an error, never taken for a replay)
        self._claim = txn.dialect.sql(
            _INSERT + " ON CONFLICT (room_nid, event_hash) WHERE event_hash IS NOT NULL DO NOTHING"
        )
        return self._claim

    def record_resync(
        self, txn: Transaction, room_nid: int, changes: Sequence[tuple[int, str, str, str | None]]
    ) -> None:
        """Append the differences a full sync found: (user_nid, before, after, new display name)."""
        if not changes:
            return
        insert = self._insert or self._prepare(txn)
        for user_nid, before, after, name in changes:
            row = (
                room_nid,
                self.clock.next(txn),
                user_nid,
                CODES[after],
                CODES[before],
                None,
                None,
                name,
                None,
                None,
                None,
            )
            txn.defer(insert, row)
        self._counted(txn, room_nid, len(changes))

    def checkpoint(self, txn: Transaction, room_nid: int, rows: list[tuple[int, int, bool]] | None = None) -> int:
        """Checkpoint the room's current members (``rows`` if the caller has them, sorted as
        ``checkpoints.current_rows`` returns them); returns how many new blocks that took."""
        counted = [0]
        seq = self.clock.next(txn)
        if rows is not None:
            written = checkpoints.write_checkpoint(txn, room_nid, seq, checkpoints.blocks_of(rows, counted))
        elif txn.dialect.is_sqlite:
            written = checkpoints.write_checkpoint(
                txn, room_nid, seq, checkpoints.stored_blocks(txn, room_nid, counted)
            )
        else:
            # closed even if the checkpoint fails: a read left open on the writer's connection
            # would pin its snapshot (every later write "database is locked") until a GC ran
            with contextlib.closing(checkpoints.current_rows(txn, room_nid)) as stored:
                written = checkpoints.write_checkpoint(txn, room_nid, seq, checkpoints.blocks_of(stored, counted))
        # counted from this checkpoint once it is committed; until then (or if it never is), the
        # next row counts from whatever checkpoint the database has
        self._since.pop(room_nid, None)
        due = _threshold(counted[0])
        txn.after_commit(lambda: self._since.__setitem__(room_nid, [0, due]))
        return written

    def stop_tracking(self, txn: Transaction, room_nid: int) -> None:
        """The bot left: from here on the room's membership is unknown."""
        self._since.pop(room_nid, None)
        checkpoints.stop(txn, room_nid, self.clock.next(txn))

    def index_users(self, txn: Transaction) -> int:
        """Add the rows after the last batch to the user index, in (day, user) order; returns how many."""
        indexed = _indexed_upto(txn)
        upto = txn.execute("SELECT MAX(seq) FROM roomstate_history").fetchone()[0]
        # rows deferred to the commit are not in the table yet: stop before the first of them
        pending = [params[1] for sql, params in txn.deferred if sql == self._insert]
        if pending and upto is not None:
            upto = min(int(upto), min(pending) - 1)
        self._unindexed = len(pending)
        if upto is None or int(upto) <= indexed:
            return 0
        txn.execute(
            "INSERT INTO roomstate_history_by_user (day, user_nid, seq, room_nid)"
            f" SELECT seq / {DAY}, user_nid, seq, room_nid FROM roomstate_history WHERE seq > ? AND seq <= ?"
            f" ORDER BY seq / {DAY}, user_nid, seq ON CONFLICT DO NOTHING",
            (indexed, int(upto)),
        )
        added = max(txn.cur.rowcount, 0)
        # the same rows rolled up into joins and leaves per room and hour (charts of long periods)
        txn.execute(
            "INSERT INTO roomstate_history_hours (room_nid, hour, joins, leaves)"
            f" SELECT room_nid, seq / {HOUR}, {_JOINS}, {_LEAVES} FROM roomstate_history WHERE seq > ? AND seq <= ?"
            f" GROUP BY room_nid, seq / {HOUR} HAVING {_JOINS} + {_LEAVES} > 0"
            " ON CONFLICT (room_nid, hour) DO UPDATE SET joins = roomstate_history_hours.joins + excluded.joins,"
            " leaves = roomstate_history_hours.leaves + excluded.leaves",
            (indexed, int(upto)),
        )
        txn.execute(
            "INSERT INTO roomstate_history_progress (name, seq) VALUES ('indexed', ?)"
            " ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
            (int(upto),),
        )
        return added

    def forget(self) -> None:
        self._since.clear()
        self._unindexed = None

    def _counted(self, txn: Transaction, room_nid: int, rows: int) -> None:
        self._maybe_checkpoint(txn, room_nid, rows)
        self._maybe_index(txn, rows)

    def _maybe_checkpoint(self, txn: Transaction, room_nid: int, rows: int) -> None:
        since = self._since.get(room_nid)
        if since is not None:
            since[0] += rows
        else:  # the room's first rows since the start: count from its last checkpoint
            latest = checkpoints.latest(txn, room_nid)
            if latest is None or latest[1] is None:  # history was off, or is new: start from now
                self.checkpoint(txn, room_nid)
                return
            count = txn.execute(
                "SELECT COUNT(*) FROM roomstate_history WHERE room_nid = ? AND seq > ?", (room_nid, latest[0])
            ).fetchone()
            # (rows deferred to the commit are not counted by the query; a claim's row, inserted at
            # once, is counted twice: a trigger, due one row early at most)
            since = self._since[room_nid] = [int(count[0]) + rows, _threshold(checkpoints.member_count(txn, latest[1]))]
        if since[0] >= since[1]:
            self.checkpoint(txn, room_nid)

    def _maybe_index(self, txn: Transaction, rows: int) -> None:
        if self._unindexed is None:
            indexed = _indexed_upto(txn)
            count = txn.execute("SELECT COUNT(*) FROM roomstate_history WHERE seq > ?", (indexed,)).fetchone()
            self._unindexed = int(count[0]) + rows
        else:
            self._unindexed += rows
        if self._unindexed >= INDEX_BATCH_ROWS:
            self.index_users(txn)


def keep_claims(txn: Transaction, rows: Sequence[tuple[int, int, Any]], *, since: int) -> None:
    """Copy the dedup claims that these history rows (room_nid, seq, event_hash), about to be
    deleted in this transaction, hold (an event's row is its claim: db/store.py) into
    ``roomstate_processed_events``, those from seq ``since`` on: a claim lives as long as the
    dedup retention says, whatever history's own. Only where history is kept for less time than
    the claims, or is turned off."""
    claims = [
        (int(nid), unpack_event_id(digest, None), int(seq) >> COUNTER_BITS)
        for nid, seq, digest in rows
        if digest is not None and int(seq) >= since
    ]
    if claims:
        txn.dialect.executemany(
            txn.cur,
            txn.dialect.sql(
                "INSERT INTO roomstate_processed_events (room_nid, event_id, processed_ts) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING"
            ),
            claims,
        )


def _threshold(members: int) -> int:
    """Rows after a checkpoint of a room with this many members that make it due for another."""
    return max(CHECKPOINT_MIN_ROWS, int(members * CHECKPOINT_ROWS_PER_MEMBER))


def _indexed_upto(txn: Transaction) -> int:
    row = txn.execute("SELECT seq FROM roomstate_history_progress WHERE name = 'indexed'").fetchone()
    return int(row[0]) if row else 0


def hourly_changes(txn: Transaction, room_nid: int, first: int, last: int) -> dict[int, tuple[int, int]]:
    """The room's joins and leaves per hour (``seq // HOUR``) in the rows ``first <= seq <= last``:
    whole hours from the rollup, and from the rows themselves the partial hours at either end and
    what is not rolled up yet (at most INDEX_BATCH_ROWS rows)."""
    rolled_up = _indexed_upto(txn)
    whole_from, whole_to = -(-first // HOUR), (last + 1) // HOUR  # whole hours: [whole_from, whole_to)
    changes: dict[int, tuple[int, int]] = {}
    if whole_from < whole_to:
        for hour, joins, leaves in txn.execute(
            "SELECT hour, joins, leaves FROM roomstate_history_hours WHERE room_nid = ? AND hour >= ? AND hour < ?",
            (room_nid, whole_from, whole_to),
        ).fetchall():
            changes[int(hour)] = (int(joins), int(leaves))
        from_rows = [
            (first, whole_from * HOUR - 1),
            (max(whole_from * HOUR, rolled_up + 1), whole_to * HOUR - 1),
            (whole_to * HOUR, last),
        ]
    else:
        from_rows = [(first, last)]
    for low, high in from_rows:
        if low > high:
            continue
        for hour, joins, leaves in txn.execute(
            f"SELECT seq / {HOUR}, {_JOINS}, {_LEAVES} FROM roomstate_history"
            f" WHERE room_nid = ? AND seq >= ? AND seq <= ? GROUP BY seq / {HOUR}",
            (room_nid, low, high),
        ).fetchall():
            before = changes.get(int(hour), (0, 0))
            changes[int(hour)] = (before[0] + int(joins or 0), before[1] + int(leaves or 0))
    return changes


# ---- reading -------------------------------------------------------------------------------------

_COLUMNS = (
    "r.room_id, u.user_id, h.membership, h.previous, h.seq, s.user_id, h.displayname, h.reason, h.event_hash,"
    " h.event_id, h.origin_offset"
)
_NAMES = (
    " JOIN roomstate_rooms r ON r.room_nid = h.room_nid JOIN roomstate_users u ON u.user_nid = h.user_nid"
    " LEFT JOIN roomstate_users s ON s.user_nid = h.sender_nid"
)
_FROM = "roomstate_history h" + _NAMES


def entry(row: Sequence[Any]) -> HistoryEntry:
    observed = time_of(int(row[4]))
    return HistoryEntry(
        room_id=row[0],
        user_id=row[1],
        membership=MEMBERSHIP_OF[int(row[2])],
        previous=None if row[3] is None else MEMBERSHIP_OF[int(row[3])],
        observed_at=observed,
        sender=row[5],
        displayname=row[6],
        reason=row[7],
        event_id=unpack_event_id(row[8], row[9]),
        origin_at=None if row[10] is None else observed + int(row[10]),
    )


def room_rows(txn: Transaction, room_nid: int, limit: int) -> list[Any]:
    """The room's latest ``limit`` rows, newest first (its primary key, backwards)."""
    return list(
        txn.execute(
            f"SELECT {_COLUMNS} FROM {_FROM} WHERE h.room_nid = ? ORDER BY h.seq DESC LIMIT ?", (room_nid, limit)
        ).fetchall()
    )


def user_rows(txn: Transaction, user_nid: int, limit: int, room_nids: Sequence[int] | None = None) -> list[Any]:
    """The user's latest ``limit`` rows (in ``room_nids`` only, if given), newest first: those
    after the last user-index batch from the seq index, then the user index: the last week,
    then, if that was not enough, all older days."""
    rooms = "" if room_nids is None else f" AND h.room_nid IN ({', '.join(str(int(n)) for n in room_nids)})"
    if room_nids is not None and not room_nids:
        return []
    indexed = _indexed_upto(txn)
    rows = list(
        txn.execute(
            f"SELECT {_COLUMNS} FROM {_FROM} WHERE h.seq > ? AND h.user_nid = ?{rooms} ORDER BY h.seq DESC LIMIT ?",
            (indexed, user_nid, limit),
        ).fetchall()
    )
    oldest = txn.execute("SELECT MIN(day) FROM roomstate_history_by_user").fetchone()[0]
    if oldest is None:
        return rows
    newest = indexed // DAY
    # the last week first (a busy user's rows end there), then every older day in one query
    for first, last in ((newest, newest - 6), (newest - 7, int(oldest))):
        if len(rows) >= limit or first < int(oldest):
            break
        days = ", ".join(str(d) for d in range(first, max(int(oldest), last) - 1, -1))
        rows += txn.execute(
            f"SELECT {_COLUMNS} FROM roomstate_history_by_user b"
            f" JOIN roomstate_history h ON h.room_nid = b.room_nid AND h.seq = b.seq{_NAMES}"
            f" WHERE b.day IN ({days}) AND b.user_nid = ? AND b.seq <= ?{rooms} ORDER BY b.seq DESC LIMIT ?",
            (user_nid, indexed, limit - len(rows)),
        ).fetchall()
    return rows


def last_row_per_room(txn: Transaction, user_nid: int) -> dict[int, int]:
    """room_nid -> seq of the user's latest history row in it: the rows after the last user-index
    batch from the seq index, the rest from the user index, one day at a time."""
    indexed = _indexed_upto(txn)
    found: dict[int, int] = {}
    for room_nid, seq in txn.execute(
        "SELECT room_nid, MAX(seq) FROM roomstate_history WHERE seq > ? AND user_nid = ? GROUP BY room_nid",
        (indexed, user_nid),
    ).fetchall():
        found[int(room_nid)] = int(seq)
    oldest = txn.execute("SELECT MIN(day) FROM roomstate_history_by_user").fetchone()[0]
    if oldest is None:
        return found
    days = ", ".join(str(d) for d in range(int(oldest), indexed // DAY + 1))
    for room_nid, seq in txn.execute(
        f"SELECT room_nid, MAX(seq) FROM roomstate_history_by_user WHERE day IN ({days}) AND user_nid = ?"
        " AND seq <= ? GROUP BY room_nid",
        (user_nid, indexed),
    ).fetchall():
        found.setdefault(int(room_nid), int(seq))
    return found


_BAN, _LEAVE = CODES["ban"], CODES["leave"]
CHANGE_GROUPS = {  # which rows count for each group of !joins
    "joined": f"h.membership = {_JOIN} AND h.previous <> {_JOIN}",
    "left": f"h.previous = {_JOIN} AND h.membership = {_LEAVE}",
    "kicked": f"h.previous = {_JOIN} AND h.membership = {_LEAVE} AND h.sender_nid IS NOT NULL",
    "banned": f"h.membership = {_BAN} AND h.previous <> {_BAN}",
}


def room_changes(txn: Transaction, room_nid: int, since: int, names: int) -> dict[str, tuple[int, list[UserID]]]:
    """Per group of CHANGE_GROUPS: how many distinct users since seq ``since``, and the first
    ``names`` of their IDs."""
    counts = ", ".join(f"COUNT(DISTINCT CASE WHEN {where} THEN h.user_nid END)" for where in CHANGE_GROUPS.values())
    totals = txn.execute(
        f"SELECT {counts} FROM roomstate_history h WHERE h.room_nid = ? AND h.seq >= ?", (room_nid, since)
    ).fetchone()
    found = {}
    for (group, where), total in zip(CHANGE_GROUPS.items(), totals, strict=True):
        sample: list[UserID] = []
        if total:
            sample = [
                row[0]
                for row in txn.execute(
                    "SELECT DISTINCT u.user_id FROM roomstate_history h"
                    " JOIN roomstate_users u ON u.user_nid = h.user_nid"
                    f" WHERE h.room_nid = ? AND h.seq >= ? AND {where} ORDER BY u.user_id LIMIT ?",
                    (room_nid, since, names),
                ).fetchall()
            ]
        found[group] = (int(total or 0), sample)
    return found


def waves(txn: Transaction, since: int) -> list[tuple[RoomID, int, int]]:
    """(room_id, joins, leaves) per room since seq ``since``."""
    rows = txn.execute(
        f"SELECT r.room_id, SUM(CASE WHEN h.membership = {_JOIN} AND h.previous <> {_JOIN} THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN h.previous = {_JOIN} AND h.membership <> {_JOIN} THEN 1 ELSE 0 END)"
        " FROM roomstate_history h JOIN roomstate_rooms r ON r.room_nid = h.room_nid"
        " WHERE h.seq >= ? GROUP BY r.room_id",
        (since,),
    ).fetchall()
    return [(room_id, int(joined or 0), int(left or 0)) for room_id, joined, left in rows]
