"""Schema v2 (roomstate 0.2.0), frozen. From v1:

- ``roomstate_users`` loses ``displayname``: a name "last seen in any room" leaked per-room
  nicknames; names are per room (``roomstate_memberships.displayname``).
- ``roomstate_memberships`` loses ``event_ts`` (the sender's clock is no ordering) and its ``leave``
  rows; on SQLite it becomes a clustered (WITHOUT ROWID) table.
- ``roomstate_room_info`` gains ``joined_count``/``invited_count`` (kept up to date in the same
  transaction as every membership change) and ``synced_at`` (last full sync).
- ``roomstate_processed_events`` becomes clustered on SQLite (same columns and indexes).
- New ``roomstate_resync_queue``: rooms whose stored state may be wrong, retried with backoff.
- On PostgreSQL, Matrix IDs use the "C" collation (byte order).

Never edit this file once released.
"""

from __future__ import annotations

from ..dialect import Cursor

DESCRIPTION = "Member counts, no global display names, durable resync queue, clustered tables"

_RESYNC_QUEUE = """CREATE TABLE roomstate_resync_queue (
	room_nid INTEGER NOT NULL,
	reason TEXT NOT NULL,
	queued_at BIGINT NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_at BIGINT NOT NULL,
	last_error TEXT,
	PRIMARY KEY (room_nid)
)"""

_COUNTS = """
	(SELECT COUNT(*) FROM roomstate_memberships m WHERE m.room_nid = i.room_nid AND m.membership = 'join'),
	(SELECT COUNT(*) FROM roomstate_memberships m WHERE m.room_nid = i.room_nid AND m.membership = 'invite')"""

SQLITE = [
    # users
    "ALTER TABLE roomstate_users RENAME TO roomstate_users_v1",
    """CREATE TABLE roomstate_users (
	user_nid INTEGER NOT NULL,
	user_id TEXT NOT NULL,
	PRIMARY KEY (user_nid),
	UNIQUE (user_id)
)""",
    "INSERT INTO roomstate_users (user_nid, user_id) SELECT user_nid, user_id FROM roomstate_users_v1",
    "DROP TABLE roomstate_users_v1",
    # memberships
    "DROP INDEX roomstate_memberships_user_idx",
    "ALTER TABLE roomstate_memberships RENAME TO roomstate_memberships_v1",
    """CREATE TABLE roomstate_memberships (
	room_nid INTEGER NOT NULL,
	user_nid INTEGER NOT NULL,
	membership TEXT NOT NULL,
	displayname TEXT,
	PRIMARY KEY (room_nid, user_nid)
) WITHOUT ROWID""",
    """INSERT INTO roomstate_memberships (room_nid, user_nid, membership, displayname)
	SELECT m.room_nid, m.user_nid, m.membership, m.displayname FROM roomstate_memberships_v1 m
	WHERE m.membership <> 'leave'
	AND EXISTS (SELECT 1 FROM roomstate_room_info i WHERE i.room_nid = m.room_nid)""",
    "DROP TABLE roomstate_memberships_v1",
    "CREATE INDEX roomstate_memberships_user_idx ON roomstate_memberships (user_nid, membership)",
    # room info
    "ALTER TABLE roomstate_room_info RENAME TO roomstate_room_info_v1",
    """CREATE TABLE roomstate_room_info (
	room_nid INTEGER NOT NULL,
	name TEXT,
	topic TEXT,
	canonical_alias TEXT,
	encrypted BOOLEAN NOT NULL,
	creator TEXT,
	room_version TEXT,
	replacement_room TEXT,
	updated_at BIGINT NOT NULL,
	joined_count INTEGER NOT NULL,
	invited_count INTEGER NOT NULL,
	synced_at BIGINT NOT NULL,
	PRIMARY KEY (room_nid)
)""",
    f"""INSERT INTO roomstate_room_info
	SELECT i.room_nid, i.name, i.topic, i.canonical_alias, i.encrypted, i.creator, i.room_version,
	i.replacement_room, i.updated_at, {_COUNTS}, i.updated_at
	FROM roomstate_room_info_v1 i""",
    "DROP TABLE roomstate_room_info_v1",
    # processed events
    "DROP INDEX roomstate_processed_events_ts_idx",
    "ALTER TABLE roomstate_processed_events RENAME TO roomstate_processed_events_v1",
    """CREATE TABLE roomstate_processed_events (
	room_nid INTEGER NOT NULL,
	event_id TEXT NOT NULL,
	processed_ts BIGINT NOT NULL,
	PRIMARY KEY (room_nid, event_id)
) WITHOUT ROWID""",
    "INSERT INTO roomstate_processed_events SELECT room_nid, event_id, processed_ts FROM roomstate_processed_events_v1",
    "DROP TABLE roomstate_processed_events_v1",
    "CREATE INDEX roomstate_processed_events_ts_idx ON roomstate_processed_events (room_nid, processed_ts)",
    _RESYNC_QUEUE,
]

POSTGRESQL = [
    "ALTER TABLE roomstate_users DROP COLUMN displayname",
    # IDs compare byte by byte: correct for Matrix IDs, and cheaper for the indexes
    'ALTER TABLE roomstate_rooms ALTER COLUMN room_id TYPE TEXT COLLATE "C"',
    'ALTER TABLE roomstate_users ALTER COLUMN user_id TYPE TEXT COLLATE "C"',
    'ALTER TABLE roomstate_processed_events ALTER COLUMN event_id TYPE TEXT COLLATE "C"',
    """DELETE FROM roomstate_memberships m WHERE m.membership = 'leave'
	OR NOT EXISTS (SELECT 1 FROM roomstate_room_info i WHERE i.room_nid = m.room_nid)""",
    "ALTER TABLE roomstate_memberships DROP COLUMN event_ts",
    """ALTER TABLE roomstate_room_info
	ADD COLUMN joined_count INTEGER NOT NULL DEFAULT 0,
	ADD COLUMN invited_count INTEGER NOT NULL DEFAULT 0,
	ADD COLUMN synced_at BIGINT NOT NULL DEFAULT 0""",
    f"UPDATE roomstate_room_info i SET (joined_count, invited_count, synced_at) = ({_COUNTS}, i.updated_at)",
    """ALTER TABLE roomstate_room_info
	ALTER COLUMN joined_count DROP DEFAULT,
	ALTER COLUMN invited_count DROP DEFAULT,
	ALTER COLUMN synced_at DROP DEFAULT""",
    _RESYNC_QUEUE,
]


def upgrade(cur: Cursor, dialect: str) -> None:
    for statement in SQLITE if dialect == "sqlite" else POSTGRESQL:
        cur.execute(statement)
