"""Schema v3 (roomstate 0.2.0), frozen. From v2: membership history.

- ``roomstate_history``: every membership transition, in delivery order (``seq``), with numeric
  IDs, small membership codes, the new display name when it changed, the reason, the event ID
  (``event_hash``: the 32 bytes of a room v4+ ID; ``event_id``: any other; both NULL: found by a
  full sync) and the sender's clock as an offset from ours.
- ``roomstate_history_by_user``: the rows by (day, user), filled in sorted batches;
  ``roomstate_history_progress``: up to which seq (``indexed``).
- ``roomstate_history_checkpoints`` and ``roomstate_history_blocks``: a room's member set at a
  ``seq``, as a list of blocks that later checkpoints reuse where nothing changed.

Never edit this file once released.
"""

from __future__ import annotations

from ..dialect import Cursor

DESCRIPTION = "Membership history with checkpoints"

_CLUSTERED = {"sqlite": " WITHOUT ROWID", "postgresql": ""}
_SERIAL = {"sqlite": "INTEGER", "postgresql": "SERIAL"}
_BYTES = {"sqlite": "BLOB", "postgresql": "BYTEA"}


def ddl(dialect: str) -> list[str]:
    clustered, serial, binary = _CLUSTERED[dialect], _SERIAL[dialect], _BYTES[dialect]
    return [
        f"""CREATE TABLE roomstate_history (
	room_nid INTEGER NOT NULL,
	seq BIGINT NOT NULL,
	user_nid INTEGER NOT NULL,
	membership SMALLINT NOT NULL,
	previous SMALLINT,
	sender_nid INTEGER,
	origin_offset INTEGER,
	displayname TEXT,
	reason TEXT,
	event_hash {binary},
	event_id TEXT,
	PRIMARY KEY (room_nid, seq)
){clustered}""",
        "CREATE INDEX roomstate_history_seq_idx ON roomstate_history (seq, user_nid)",
        f"""CREATE TABLE roomstate_history_by_user (
	day INTEGER NOT NULL,
	user_nid INTEGER NOT NULL,
	seq BIGINT NOT NULL,
	room_nid INTEGER NOT NULL,
	PRIMARY KEY (day, user_nid, seq)
){clustered}""",
        """CREATE TABLE roomstate_history_progress (
	name TEXT NOT NULL,
	seq BIGINT NOT NULL,
	PRIMARY KEY (name)
)""",
        f"""CREATE TABLE roomstate_history_checkpoints (
	room_nid INTEGER NOT NULL,
	seq BIGINT NOT NULL,
	blocks {binary},
	PRIMARY KEY (room_nid, seq)
){clustered}""",
        f"""CREATE TABLE roomstate_history_blocks (
	block_nid {serial} NOT NULL,
	members {binary} NOT NULL,
	PRIMARY KEY (block_nid)
)""",
    ]


def upgrade(cur: Cursor, dialect: str) -> None:
    for statement in ddl(dialect):
        cur.execute(statement)
