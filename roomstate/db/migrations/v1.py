"""Schema v1 (roomstate 0.1.0), frozen: exactly what 0.1.0's ``metadata.create_all()`` created with
SQLAlchemy 1.3 (SQLAlchemy 1.4+ omitted the CHECK on ``encrypted``; later steps cope with both).

Never edit this file: databases in the wild were made by it. Tests create v1 databases with it.
"""

from __future__ import annotations

from ..dialect import Cursor

DESCRIPTION = "Initial tables: interned rooms and users, room info, memberships, processed events"

_COMMON = [
    """CREATE TABLE roomstate_memberships (
	room_nid INTEGER NOT NULL,
	user_nid INTEGER NOT NULL,
	membership TEXT NOT NULL,
	displayname TEXT,
	event_ts BIGINT NOT NULL,
	PRIMARY KEY (room_nid, user_nid)
)""",
    "CREATE INDEX roomstate_memberships_user_idx ON roomstate_memberships (user_nid, membership)",
    """CREATE TABLE roomstate_processed_events (
	room_nid INTEGER NOT NULL,
	event_id TEXT NOT NULL,
	processed_ts BIGINT NOT NULL,
	PRIMARY KEY (room_nid, event_id)
)""",
    "CREATE INDEX roomstate_processed_events_ts_idx ON roomstate_processed_events (room_nid, processed_ts)",
]

DDL = {
    "sqlite": [
        """CREATE TABLE roomstate_rooms (
	room_nid INTEGER NOT NULL,
	room_id TEXT NOT NULL,
	PRIMARY KEY (room_nid),
	UNIQUE (room_id)
)""",
        """CREATE TABLE roomstate_users (
	user_nid INTEGER NOT NULL,
	user_id TEXT NOT NULL,
	displayname TEXT,
	PRIMARY KEY (user_nid),
	UNIQUE (user_id)
)""",
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
	PRIMARY KEY (room_nid),
	CHECK (encrypted IN (0, 1))
)""",
        *_COMMON,
    ],
    "postgresql": [
        """CREATE TABLE roomstate_rooms (
	room_nid SERIAL NOT NULL,
	room_id TEXT NOT NULL,
	PRIMARY KEY (room_nid),
	UNIQUE (room_id)
)""",
        """CREATE TABLE roomstate_users (
	user_nid SERIAL NOT NULL,
	user_id TEXT NOT NULL,
	displayname TEXT,
	PRIMARY KEY (user_nid),
	UNIQUE (user_id)
)""",
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
	PRIMARY KEY (room_nid)
)""",
        *_COMMON,
    ],
}


def upgrade(cur: Cursor, dialect: str) -> None:
    for statement in DDL[dialect]:
        cur.execute(statement)
