"""Schema v7 (the release after 0.3.0), frozen. From v6: a member event's dedup claim is its
history row.

- ``roomstate_history_event_idx``: unique on (room, event hash) where the hash is stored (room v4+
  event IDs), so that inserting the history row of an event both records the change and claims
  the event: a replay conflicts and changes nothing (db/store.py, ``apply_member``). Events whose
  ID is not a hash keep their ``roomstate_processed_events`` row.
- A database may hold the same event twice (applied again after its claim had been released or
  had expired): every row after the first keeps its ID as text instead (``event_id``), where the
  index does not look.

Never edit this file once released.
"""

from __future__ import annotations

import base64

from ..dialect import Cursor

DESCRIPTION = "A member event's history row is its dedup claim"


def ddl(dialect: str) -> list[str]:
    return [
        "CREATE UNIQUE INDEX roomstate_history_event_idx ON roomstate_history (room_nid, event_hash)"
        " WHERE event_hash IS NOT NULL"
    ]


def upgrade(cur: Cursor, dialect: str) -> None:
    mark = "?" if dialect == "sqlite" else "%s"
    cur.execute(
        "SELECT h.room_nid, h.seq, h.event_hash FROM roomstate_history h JOIN ("
        " SELECT room_nid, event_hash, MIN(seq) AS first FROM roomstate_history WHERE event_hash IS NOT NULL"
        " GROUP BY room_nid, event_hash HAVING COUNT(*) > 1) d"
        " ON d.room_nid = h.room_nid AND d.event_hash = h.event_hash AND h.seq > d.first"
    )
    for room_nid, seq, digest in cur.fetchall():
        event_id = "$" + base64.urlsafe_b64encode(bytes(digest)).decode().rstrip("=")
        cur.execute(
            f"UPDATE roomstate_history SET event_hash = NULL, event_id = {mark}"
            f" WHERE room_nid = {mark} AND seq = {mark}",
            (event_id, room_nid, seq),
        )
    for statement in ddl(dialect):
        cur.execute(statement)
