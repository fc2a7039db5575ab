"""Schema v6 (the release after 0.3.0), frozen. From v5: the user → room index in batches.

- ``roomstate_memberships_user_idx`` (memberships by user) is dropped: every room synced wrote
  its members at random places in it, and every commit wrote those pages again.
- ``roomstate_user_rooms`` and ``roomstate_user_rooms_new``: (user, room) pairs, a superset of
  the memberships; new pairs go to the small second table and are merged into the first in key
  order (see db/user_index.py). Filled here from the memberships stored.

Never edit this file once released.
"""

from __future__ import annotations

from ..dialect import Cursor

DESCRIPTION = "The user → room index written in batches"


def ddl(dialect: str) -> list[str]:
    clustered = " WITHOUT ROWID" if dialect == "sqlite" else ""
    return [
        f"""CREATE TABLE {table} (
	user_nid INTEGER NOT NULL,
	room_nid INTEGER NOT NULL,
	PRIMARY KEY (user_nid, room_nid)
){clustered}"""
        for table in ("roomstate_user_rooms", "roomstate_user_rooms_new")
    ]


def upgrade(cur: Cursor, dialect: str) -> None:
    cur.execute("DROP INDEX roomstate_memberships_user_idx")
    for statement in ddl(dialect):
        cur.execute(statement)
    cur.execute(
        "INSERT INTO roomstate_user_rooms (user_nid, room_nid)"
        " SELECT user_nid, room_nid FROM roomstate_memberships ORDER BY user_nid, room_nid"
    )
