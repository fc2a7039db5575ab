"""The store's membership-history methods: reading the past, and retention."""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mautrix.types import RoomID, UserID

from ..models import INVITE, JOIN, HeldBefore, HistoryEntry, MembersAt
from . import checkpoints, history
from .codes import CODES
from .threads import Transaction
from .user_index import MEMBERSHIPS_OF_USER, of_user

T = TypeVar("T")
CHUNK = 2_000  # rows deleted per transaction


class HistoryStore:
    """Mixed into RoomStore, whose writer and reader threads it uses."""

    recorder: history.Recorder
    history_enabled: bool
    history_cleared: bool  # off, and no row is left to hold a claim (db/store.py, apply_member)
    history_switches: int  # how often set_history switched it (writer thread)

    def _write(self, work: Callable[[Transaction], T], single_statement: bool = False) -> asyncio.Future[T]:
        raise NotImplementedError

    def _read(self, work: Callable[[Transaction], T]) -> asyncio.Future[T]:
        raise NotImplementedError

    def _history_is_off(self, txn: Transaction) -> None:
        raise NotImplementedError

    # ---- reading --------------------------------------------------------------------------------

    def user_history(
        self, user_id: UserID, limit: int, room_ids: frozenset[RoomID] | None = None
    ) -> asyncio.Future[list[HistoryEntry]]:
        """``user_id``'s transitions, newest first (only in ``room_ids``, if given)."""

        def job(txn: Transaction) -> list[HistoryEntry]:
            user = txn.execute("SELECT user_nid FROM roomstate_users WHERE user_id = ?", (user_id,)).fetchone()
            if user is None:
                return []
            room_nids = None if room_ids is None else _room_nids(txn, room_ids)
            return [history.entry(row) for row in history.user_rows(txn, int(user[0]), limit, room_nids)]

        return self._read(job)

    def held_before_tracking(
        self, user_id: UserID, room_ids: frozenset[RoomID] | None = None
    ) -> asyncio.Future[list[HeldBefore]]:
        """The memberships ``user_id`` holds now (in ``room_ids`` only, if given) that no history row
        explains: they held them when the bot started tracking the room (its first checkpoint after
        the last gap), newest tracking start first. Nothing for rooms not tracked now."""

        def job(txn: Transaction) -> list[HeldBefore]:
            user = txn.execute("SELECT user_nid FROM roomstate_users WHERE user_id = ?", (user_id,)).fetchone()
            if user is None:
                return []
            user_nid = int(user[0])
            memberships = [
                (int(room_nid), RoomID(room_id), str(membership))
                for room_nid, room_id, membership in txn.execute(
                    f"SELECT m.room_nid, r.room_id, m.membership FROM {MEMBERSHIPS_OF_USER}"
                    " JOIN roomstate_rooms r ON r.room_nid = m.room_nid",
                    of_user(user_nid),
                ).fetchall()
                if room_ids is None or room_id in room_ids
            ]
            if not memberships:
                return []
            spans = checkpoints.tracked_since_many(txn, (room_nid for room_nid, _, _ in memberships))
            last_rows = history.last_row_per_room(txn, user_nid)
            held = [
                HeldBefore(room_id, membership, history.time_of(spans[room_nid]))
                for room_nid, room_id, membership in memberships
                if room_nid in spans and last_rows.get(room_nid, -1) < spans[room_nid]
            ]
            return sorted(held, key=lambda h: (-h.since, h.room_id))

        return self._read(job)

    def room_changes(
        self, room_id: RoomID, since_s: float, names: int
    ) -> asyncio.Future[dict[str, tuple[int, list[UserID]]] | None]:
        """Who joined, left, was kicked and banned in the room since ``since_s`` (Unix seconds):
        per group, the distinct users and up to ``names`` of their IDs. None: an unknown room."""

        def job(txn: Transaction) -> dict[str, tuple[int, list[UserID]]] | None:
            room = txn.execute("SELECT room_nid FROM roomstate_rooms WHERE room_id = ?", (room_id,)).fetchone()
            if room is None:
                return None
            return history.room_changes(txn, int(room[0]), history.seq_at(since_s), names)

        return self._read(job)

    def waves(self, since_s: float) -> asyncio.Future[list[tuple[RoomID, int, int]]]:
        """(room_id, joins, leaves) per room since ``since_s``, biggest first."""

        def job(txn: Transaction) -> list[tuple[RoomID, int, int]]:
            waves = history.waves(txn, history.seq_at(since_s))
            return sorted((w for w in waves if w[1] or w[2]), key=lambda w: (-(w[1] + w[2]), w[0]))

        return self._read(job)

    def room_transitions(self, room_id: RoomID, limit: int) -> asyncio.Future[list[HistoryEntry]]:
        """The room's latest ``limit`` transitions, newest first."""

        def job(txn: Transaction) -> list[HistoryEntry]:
            room = txn.execute("SELECT room_nid FROM roomstate_rooms WHERE room_id = ?", (room_id,)).fetchone()
            if room is None:
                return []
            return [history.entry(row) for row in history.room_rows(txn, int(room[0]), limit)]

        return self._read(job)

    def member_counts(
        self, room_id: RoomID, since_s: float, until_s: float, bucket_s: int
    ) -> asyncio.Future[list[tuple[int, int]]]:
        """The room's joined-member count over time: (Unix seconds, count) at the start of the
        period (or of the span the bot has tracked the room since, if later), then at the end of
        each bucket in which it changed (``until_s`` for the last, if that has not ended). Buckets
        are ``bucket_s`` long (whole hours) from the first whole hour; the part of an hour before
        it is a bucket of its own. From the checkpoint at the start and the joins and leaves per
        hour after it (history.hourly_changes)."""

        def job(txn: Transaction) -> list[tuple[int, int]]:
            room = txn.execute("SELECT room_nid FROM roomstate_rooms WHERE room_id = ?", (room_id,)).fetchone()
            if room is None:
                return []
            room_nid = int(room[0])
            start, end = history.seq_at(since_s), history.seq_at(until_s)
            base = checkpoints.latest(txn, room_nid, start)
            if base is None or base[1] is None:  # not tracked then: from when tracking began again
                began = checkpoints.tracked_after(txn, room_nid, start)
                if began is None or began > end:
                    return []
                start = began
                base = checkpoints.latest(txn, room_nid, start)
                if base is None or base[1] is None:
                    return []
            # the count at the start: the checkpoint's, and the changes since (no members decoded)
            count = checkpoints.joined_count(txn, base[1]) + sum(
                joins - leaves for joins, leaves in history.hourly_changes(txn, room_nid, base[0] + 1, start).values()
            )
            points = [(history.time_of(start), count)]
            first_hour, hours_per_bucket = -(-start // history.HOUR), max(1, bucket_s // 3600)
            deltas: dict[int, int] = {}  # bucket end (seq) -> change of the count
            for hour, (joins, leaves) in history.hourly_changes(txn, room_nid, start + 1, end).items():
                if hour < first_hour:  # the part of an hour before the first whole one
                    bucket_end = first_hour * history.HOUR
                else:
                    bucket = (hour - first_hour) // hours_per_bucket
                    bucket_end = (first_hour + (bucket + 1) * hours_per_bucket) * history.HOUR
                deltas[bucket_end] = deltas.get(bucket_end, 0) + joins - leaves
            for bucket_end in sorted(deltas):
                if deltas[bucket_end]:
                    count += deltas[bucket_end]
                    points.append((history.time_of(min(bucket_end, end)), count))
            return points

        return self._read(job)

    def joins_and_leaves(
        self, room_id: RoomID, since_s: float, bucket_s: int
    ) -> asyncio.Future[list[tuple[int, int, int]]]:
        """Per bucket of ``bucket_s`` (whole hours, from the hour ``since_s`` falls in): (bucket
        start, joins, leaves), buckets with neither left out (every arrival and departure counts,
        as in ``!joins all``)."""

        def job(txn: Transaction) -> list[tuple[int, int, int]]:
            room = txn.execute("SELECT room_nid FROM roomstate_rooms WHERE room_id = ?", (room_id,)).fetchone()
            if room is None:
                return []
            first_hour, hours_per_bucket = history.seq_at(since_s) // history.HOUR, max(1, bucket_s // 3600)
            buckets: dict[int, tuple[int, int]] = {}
            changes = history.hourly_changes(txn, int(room[0]), first_hour * history.HOUR, history.LAST_SEQ)
            for hour, (joins, leaves) in changes.items():
                bucket = (hour - first_hour) // hours_per_bucket
                before = buckets.get(bucket, (0, 0))
                buckets[bucket] = (before[0] + joins, before[1] + leaves)
            return [
                (history.time_of((first_hour + bucket * hours_per_bucket) * history.HOUR), joins, leaves)
                for bucket, (joins, leaves) in sorted(buckets.items())
                if joins or leaves
            ]

        return self._read(job)

    def members_at(self, room_id: RoomID, at_s: float, names: int) -> asyncio.Future[MembersAt | None]:
        """The room's membership at ``at_s`` (Unix seconds) and who differs from now (up to
        ``names`` user IDs each way). None if the room was never known."""

        def job(txn: Transaction) -> MembersAt | None:
            room = txn.execute("SELECT room_nid FROM roomstate_rooms WHERE room_id = ?", (room_id,)).fetchone()
            if room is None:
                return None
            room_nid = int(room[0])
            at = history.seq_at(at_s + 1) - 1
            decoded: dict[int, checkpoints.Members] = {}
            then = checkpoints.members_at(txn, room_nid, at, decoded=decoded)
            if then is None:
                since = checkpoints.tracked_after(txn, room_nid, at)
                tracked_since = None if since is None else history.time_of(since)
                return MembersAt(room_id, int(at_s), 0, 0, tracked=False, tracked_since=tracked_since)
            now = checkpoints.members_at(txn, room_nid, 2**62, known=(at, then), decoded=decoded) or {}
            then_codes = bytes(then.values())
            then_joined, now_joined = _joined(then, then_codes), _joined(now, bytes(now.values()))
            joined_since = now_joined - then_joined
            left_since = then_joined - now_joined
            shown = heapq.nsmallest(names, joined_since), heapq.nsmallest(names, left_since)
            ids = _user_ids(txn, [*shown[0], *shown[1]])
            return MembersAt(
                room_id,
                int(at_s),
                joined_count=len(then_joined),
                invited_count=then_codes.count(CODES[INVITE]),
                joined_since=tuple(sorted(ids[n] for n in shown[0])),
                left_since=tuple(sorted(ids[n] for n in shown[1])),
                joined_since_total=len(joined_since),
                left_since_total=len(left_since),
            )

        return self._read(job)

    # ---- upkeep ---------------------------------------------------------------------------------

    def set_history(self, enabled: bool) -> asyncio.Future[None]:
        """Turn recording on or off, at this point of the write order. Off ends the history of
        every room ("not tracked" from here on), so that turning it on again before the old
        history is deleted never joins two histories with a gap between them."""

        def job(txn: Transaction) -> None:
            if enabled and self.history_enabled:
                return
            # off: nothing is recorded from here on; on: nothing was while it was off (also
            # across a restart). Either way a room's history resumes only at a new checkpoint.
            self._history_is_off(txn)
            self.recorder.forget()
            self.history_cleared = False
            self.history_switches += 1
            self.history_enabled = enabled  # last: a failed job leaves it as it was

        return self._write(job)

    def index_history(self) -> asyncio.Future[int]:
        """Add the rows after the last batch to the user index now (the writer also does so every
        history.INDEX_BATCH_ROWS rows). Resolves to how many."""
        return self._write(lambda txn: self.recorder.index_users(txn))

    async def delete_history_before(self, cutoff_s: float, *, keep_claims_since: float | None) -> int:
        """Delete the history older than ``cutoff_s`` (Unix seconds): room by room, in chunks of
        at most CHUNK rows a transaction (see checkpoints.compact), then the user index of the
        days before. Touches only rooms with something to delete. The dedup claims that rows from
        ``keep_claims_since`` on hold are kept, in the transaction that deletes them (None: the
        claims are not kept; see ``history.keep_claims``). Returns how many rows."""
        cutoff = history.seq_at(cutoff_s)
        keep = _claims_keeper(keep_claims_since)
        deleted = 0
        for room_nid in await self._read(lambda txn: checkpoints.rooms_to_compact(txn, cutoff)):
            while count := await self._write(
                functools.partial(
                    checkpoints.compact, room_nid=room_nid, cutoff=cutoff, limit=CHUNK, before_delete=keep
                )
            ):
                deleted += count
                if count < CHUNK:
                    break
        while await self._write(lambda txn: _delete_user_index(txn, cutoff)):
            pass
        while await self._write(lambda txn: _delete_hours(txn, cutoff)):
            pass
        return deleted

    async def clear_history(self, *, keep_claims_since: float | None) -> int:
        """Delete all history (it was turned off), in bounded chunks; stops if it is turned on
        again meanwhile. Keeps claims as ``delete_history_before`` does. Returns how many rows."""

        def chunk(table: str, key: str) -> Callable[[Transaction], int]:
            return lambda txn: 0 if self.history_enabled else _delete_chunk(txn, table, key)

        keep = _claims_keeper(keep_claims_since)

        def history_chunk(txn: Transaction) -> int:
            if self.history_enabled:
                return 0
            if keep is not None:  # the rows the delete takes: the first ones in key order
                keep(
                    txn,
                    txn.execute(
                        f"SELECT room_nid, seq, event_hash FROM roomstate_history{_IN_KEY_ORDER} LIMIT ?", (CHUNK,)
                    ).fetchall(),
                )
            return _delete_chunk(txn, "roomstate_history", "room_nid, seq", _IN_KEY_ORDER)

        deleted = 0
        while count := await self._write(history_chunk):
            deleted += count
        while await self._write(chunk("roomstate_history_by_user", "day, user_nid, seq")):
            pass
        while await self._write(chunk("roomstate_history_hours", "room_nid, hour")):
            pass
        await self._write(self._clear_rest)
        return deleted

    def _clear_rest(self, txn: Transaction) -> None:
        if self.history_enabled:  # turned on again meanwhile: what is left is marked not tracked
            return
        self.recorder.forget()
        for table in ("roomstate_history_checkpoints", "roomstate_history_blocks", "roomstate_history_progress"):
            txn.execute(f"DELETE FROM {table}")
        self._cleared_if_empty(txn)  # (rows are left only if history was on for a while in between)

    def _cleared_if_empty(self, txn: Transaction) -> None:
        """History is off: once this transaction commits, no history row holds a claim if none is
        left now (and no switch of history committed after it in the same group let more in)."""
        if txn.execute("SELECT 1 FROM roomstate_history LIMIT 1").fetchone() is None:
            switches = self.history_switches
            txn.after_commit(lambda: self._cleared(switches))

    def _cleared(self, switches: int) -> None:
        if switches == self.history_switches:
            self.history_cleared = True


_IN_KEY_ORDER = " ORDER BY room_nid, seq"  # the history's rows: the same ones read, then deleted


def _claims_keeper(since_s: float | None) -> Callable[[Transaction, list[tuple[int, int, Any]]], None] | None:
    """What keeps the claims of history rows from ``since_s`` on as they are deleted (None: none)."""
    if since_s is None:
        return None
    return functools.partial(history.keep_claims, since=history.seq_at(since_s))


def _delete_chunk(txn: Transaction, table: str, key: str, where: str = "", params: tuple[int, ...] = ()) -> int:
    """Delete up to CHUNK rows of ``table`` (``key``: its primary key columns; ``where``: a clause
    choosing them, WHERE and/or ORDER BY); how many."""
    txn.execute(f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table}{where} LIMIT ?)", (*params, CHUNK))
    return max(txn.cur.rowcount, 0)


def _delete_user_index(txn: Transaction, cutoff: int) -> int:
    """A chunk of the user index of days wholly before the cutoff."""
    return _delete_chunk(
        txn, "roomstate_history_by_user", "day, user_nid, seq", " WHERE day < ?", (cutoff // history.DAY,)
    )


def _delete_hours(txn: Transaction, cutoff: int) -> int:
    """A chunk of the joins and leaves per hour of hours that began before the cutoff."""
    return _delete_chunk(txn, "roomstate_history_hours", "room_nid, hour", " WHERE hour < ?", (cutoff // history.HOUR,))


_JOIN_SELECTOR = bytes(int(code == CODES[JOIN]) for code in range(256))  # code -> 1 if join


def _joined(members: checkpoints.Members, codes: bytes) -> set[int]:
    """The joined members, given ``bytes(members.values())`` (selected in C: rooms have 100k)."""
    return set(itertools.compress(members.keys(), codes.translate(_JOIN_SELECTOR)))


def _room_nids(txn: Transaction, room_ids: frozenset[str]) -> list[int]:
    rows = txn.execute_in("SELECT room_nid FROM roomstate_rooms WHERE room_id IN ({marks})", sorted(room_ids))
    return [int(row[0]) for row in rows]


def _user_ids(txn: Transaction, nids: Sequence[int]) -> dict[int, UserID]:
    rows = txn.execute_in("SELECT user_nid, user_id FROM roomstate_users WHERE user_nid IN ({marks})", nids)
    return {int(nid): user_id for nid, user_id in rows}
