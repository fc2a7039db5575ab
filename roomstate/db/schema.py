"""Tables and versioned migrations.

Matrix string IDs are interned into integer IDs (``*_nid``, never 0) in ``roomstate_rooms`` and
``roomstate_users``. Those two tables are never pruned, so a room forgotten after the bot left
keeps its nid, and its processed-event records keep matching when the bot comes back.
"""
from __future__ import annotations

import logging
from typing import Callable, List

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .compat import select

metadata = sa.MetaData()

rooms = sa.Table(
    "roomstate_rooms",
    metadata,
    sa.Column("room_nid", sa.Integer, primary_key=True),
    sa.Column("room_id", sa.Text, nullable=False, unique=True),
)

users = sa.Table(
    "roomstate_users",
    metadata,
    sa.Column("user_nid", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False, unique=True),
    sa.Column("displayname", sa.Text),  # last displayname seen in any room
)

# One row per room the bot is joined to. Deleted when the bot leaves or is removed.
room_info = sa.Table(
    "roomstate_room_info",
    metadata,
    sa.Column("room_nid", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text),
    sa.Column("topic", sa.Text),
    sa.Column("canonical_alias", sa.Text),
    sa.Column("encrypted", sa.Boolean, nullable=False, default=False),
    sa.Column("creator", sa.Text),
    sa.Column("room_version", sa.Text),
    sa.Column("replacement_room", sa.Text),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

memberships = sa.Table(
    "roomstate_memberships",
    metadata,
    sa.Column("room_nid", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_nid", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("membership", sa.Text, nullable=False),
    sa.Column("displayname", sa.Text),  # per-room displayname
    sa.Column("event_ts", sa.BigInteger, nullable=False, default=0),
    sa.Index("roomstate_memberships_user_idx", "user_nid", "membership"),
)

processed_events = sa.Table(
    "roomstate_processed_events",
    metadata,
    sa.Column("room_nid", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("processed_ts", sa.BigInteger, nullable=False),
    sa.Index("roomstate_processed_events_ts_idx", "room_nid", "processed_ts"),
)

schema_version = sa.Table(
    "roomstate_schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)


def _v1_initial(conn: Connection) -> None:
    metadata.create_all(conn, tables=[rooms, users, room_info, memberships, processed_events])


# Append new migrations here; never edit a released one. Index i upgrades version i -> i+1.
MIGRATIONS: List[Callable[[Connection], None]] = [_v1_initial]
LATEST_VERSION = len(MIGRATIONS)

log = logging.getLogger("roomstate.db")


def current_version(conn: Connection) -> int:
    schema_version.create(conn, checkfirst=True)
    return conn.execute(select(sa.func.max(schema_version.c.version))).scalar() or 0


def upgrade(engine: Engine) -> int:
    """Bring the schema to LATEST_VERSION in one transaction; returns the resulting version."""
    with engine.begin() as conn:
        version = current_version(conn)
        if version > LATEST_VERSION:
            raise RuntimeError(
                f"database schema v{version} is newer than this plugin (v{LATEST_VERSION});"
                " downgrading is not supported"
            )
        for target in range(version + 1, LATEST_VERSION + 1):
            log.info("Upgrading roomstate schema to v%d", target)
            MIGRATIONS[target - 1](conn)
        if version != LATEST_VERSION:
            conn.execute(schema_version.delete())
            conn.execute(schema_version.insert().values(version=LATEST_VERSION))
    return LATEST_VERSION
