"""The store's alert methods: join waves counted from the membership history, and the alerts sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from mautrix.types import EventID, RoomID, UserID

from ..models import AlertRecord, JoinCount
from . import history
from .codes import CODES
from .threads import Transaction

T = TypeVar("T")

# a join seen live: a row with an event (a resync's rows have none), into "join" from anything else
_LIVE_JOIN = (
    f"h.membership = {CODES['join']} AND h.previous <> {CODES['join']}"
    " AND (h.event_hash IS NOT NULL OR h.event_id IS NOT NULL)"
)
_ALERT_COLUMNS = "a.kind, r.room_id, a.started_at, a.notice_event_id, a.count, a.updated_at, a.detail, a.open"


class AlertStore:
    """Mixed into RoomStore, whose writer and reader threads it uses."""

    def _write(self, work: Callable[[Transaction], T], single_statement: bool = False) -> asyncio.Future[T]:
        raise NotImplementedError

    def _read(self, work: Callable[[Transaction], T]) -> asyncio.Future[T]:
        raise NotImplementedError

    def join_waves(self, since_s: float, more_than: int) -> asyncio.Future[list[JoinCount]]:
        """Rooms in which more than ``more_than`` distinct users joined since ``since_s`` (Unix
        seconds), live joins only (read on the history's time index: only the recent rows)."""

        def job(txn: Transaction) -> list[JoinCount]:
            rows = txn.execute(
                "SELECT r.room_id, COUNT(DISTINCT h.user_nid), MIN(h.seq), MAX(h.seq) FROM roomstate_history h"
                f" JOIN roomstate_rooms r ON r.room_nid = h.room_nid WHERE h.seq >= ? AND {_LIVE_JOIN}"
                " GROUP BY r.room_id HAVING COUNT(DISTINCT h.user_nid) > ?",
                (history.seq_at(since_s), more_than),
            ).fetchall()
            return [
                JoinCount(RoomID(room), int(joined), (), history.time_of(int(first)), history.time_of(int(last)))
                for room, joined, first, last in rows
            ]

        return self._read(job)

    def joins_since(self, room_id: RoomID, since_s: float, sample: int) -> asyncio.Future[JoinCount]:
        """The distinct users who joined the room since ``since_s`` (live joins), the first
        ``sample`` of them in order of joining."""

        def job(txn: Transaction) -> JoinCount:
            room = txn.execute("SELECT room_nid FROM roomstate_rooms WHERE room_id = ?", (room_id,)).fetchone()
            if room is None:
                return JoinCount(room_id, 0)
            where = f"h.room_nid = ? AND h.seq >= ? AND {_LIVE_JOIN}"
            params = (int(room[0]), history.seq_at(since_s))
            joined, first, last = txn.execute(
                f"SELECT COUNT(DISTINCT h.user_nid), MIN(h.seq), MAX(h.seq) FROM roomstate_history h WHERE {where}",
                params,
            ).fetchone()
            names = txn.execute(
                f"SELECT u.user_id FROM roomstate_history h JOIN roomstate_users u ON u.user_nid = h.user_nid"
                f" WHERE {where} GROUP BY u.user_id ORDER BY MIN(h.seq) LIMIT ?",
                (*params, sample),
            ).fetchall()
            return JoinCount(
                room_id,
                int(joined or 0),
                tuple(UserID(name) for (name,) in names),
                0 if first is None else history.time_of(int(first)),
                0 if last is None else history.time_of(int(last)),
            )

        return self._read(job)

    def alerts(self, *, open_only: bool = True) -> asyncio.Future[list[AlertRecord]]:
        """The alerts recorded (still open ones only, by default)."""

        def job(txn: Transaction) -> list[AlertRecord]:
            where = " WHERE a.open = ?" if open_only else ""
            rows = txn.execute(
                f"SELECT {_ALERT_COLUMNS} FROM roomstate_alerts a JOIN roomstate_rooms r ON r.room_nid = a.room_nid"
                f"{where} ORDER BY a.started_at",
                (True,) if open_only else (),
            ).fetchall()
            return [
                AlertRecord(
                    kind,
                    RoomID(room),
                    int(started),
                    None if notice is None else EventID(notice),
                    int(count),
                    int(updated),
                    detail,
                    bool(is_open),
                )
                for kind, room, started, notice, count, updated, detail, is_open in rows
            ]

        return self._read(job)

    def save_alert(self, record: AlertRecord) -> asyncio.Future[None]:
        """Record an alert sent (or its new state), keyed by kind, room and start."""

        def job(txn: Transaction) -> None:
            txn.execute("INSERT INTO roomstate_rooms (room_id) VALUES (?) ON CONFLICT DO NOTHING", (record.room_id,))
            txn.execute(
                "INSERT INTO roomstate_alerts (kind, room_nid, started_at, notice_event_id, updated_at, count, detail,"
                " open) SELECT ?, room_nid, ?, ?, ?, ?, ?, ? FROM roomstate_rooms WHERE room_id = ?"
                " ON CONFLICT (kind, room_nid, started_at) DO UPDATE SET notice_event_id = excluded.notice_event_id,"
                " updated_at = excluded.updated_at, count = excluded.count, detail = excluded.detail,"
                " open = excluded.open",
                (
                    record.kind,
                    record.started_at,
                    record.notice_event_id,
                    record.updated_at,
                    record.count,
                    record.detail,
                    record.open,
                    record.room_id,
                ),
            )

        return self._write(job)
