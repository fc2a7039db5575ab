"""The latest schema, for fresh databases ("latest revision"), and the list of its tables.

Existing databases reach the same schema through the frozen steps in ``migrations/``; a test
builds both and compares them. When the schema changes: add ``migrations/vN.py`` with the step,
register it in ``migrations/__init__.py``, and update the DDL here.

Matrix string IDs are interned into integer IDs (``*_nid``, never 0) in ``roomstate_rooms`` and
``roomstate_users``. Those two tables are never pruned, so a room forgotten after the bot left
keeps its nid, and its processed-event records keep matching when the bot comes back.
"""

from __future__ import annotations

from .migrations.v3 import ddl as history_ddl
from .migrations.v4 import ddl as position_ddl
from .migrations.v5 import ddl as web_ddl
from .migrations.v6 import ddl as user_index_ddl
from .migrations.v7 import ddl as claims_in_history_ddl

VERSION = 7

_SERIAL = {"sqlite": "INTEGER", "postgresql": "SERIAL"}
_CLUSTERED = {"sqlite": " WITHOUT ROWID", "postgresql": ""}
# Matrix IDs compare byte by byte (SQLite's default; PostgreSQL's "C" collation, which is also
# much cheaper for its indexes than a language collation)
_ID = {"sqlite": "TEXT", "postgresql": 'TEXT COLLATE "C"'}


def ddl(dialect: str) -> list[str]:
    """CREATE statements of the latest schema (``roomstate_schema_version`` excluded)."""
    serial, clustered, text_id = _SERIAL[dialect], _CLUSTERED[dialect], _ID[dialect]
    return [
        f"""CREATE TABLE roomstate_rooms (
	room_nid {serial} NOT NULL,
	room_id {text_id} NOT NULL,
	PRIMARY KEY (room_nid),
	UNIQUE (room_id)
)""",
        f"""CREATE TABLE roomstate_users (
	user_nid {serial} NOT NULL,
	user_id {text_id} NOT NULL,
	PRIMARY KEY (user_nid),
	UNIQUE (user_id)
)""",
        # One row per room the bot is joined to; deleted when it leaves or is removed.
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
        # Current non-leave memberships of tracked rooms, with the per-room display name.
        f"""CREATE TABLE roomstate_memberships (
	room_nid INTEGER NOT NULL,
	user_nid INTEGER NOT NULL,
	membership TEXT NOT NULL,
	displayname TEXT,
	PRIMARY KEY (room_nid, user_nid)
){clustered}""",
        f"""CREATE TABLE roomstate_processed_events (
	room_nid INTEGER NOT NULL,
	event_id {text_id} NOT NULL,
	processed_ts BIGINT NOT NULL,
	PRIMARY KEY (room_nid, event_id)
){clustered}""",
        "CREATE INDEX roomstate_processed_events_ts_idx ON roomstate_processed_events (room_nid, processed_ts)",
        # Rooms whose stored state may be wrong (a failed sync or event), until a sync succeeds.
        """CREATE TABLE roomstate_resync_queue (
	room_nid INTEGER NOT NULL,
	reason TEXT NOT NULL,
	queued_at BIGINT NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_at BIGINT NOT NULL,
	last_error TEXT,
	PRIMARY KEY (room_nid)
)""",
        # Membership history and checkpoints (see db/history.py); v3 wrote them, unchanged since.
        *history_ddl(dialect),
        # The plugin's own sync position (see position.py) and the alerts sent (alerts.py); v4
        # wrote them, unchanged since.
        *position_ddl(dialect),
        # The web view's sign-in, API tokens and direct rooms (web/, direct.py); v5 wrote them.
        *web_ddl(dialect),
        # The user → room index, in batches (user_index.py); v6 wrote it.
        *user_index_ddl(dialect),
        # A member event's history row is its dedup claim (apply_member); v7 wrote the index.
        *claims_in_history_ddl(dialect),
    ]


TABLES = (
    "roomstate_history",
    "roomstate_history_by_user",
    "roomstate_history_progress",
    "roomstate_history_checkpoints",
    "roomstate_history_blocks",
    "roomstate_rooms",
    "roomstate_users",
    "roomstate_room_info",
    "roomstate_memberships",
    "roomstate_processed_events",
    "roomstate_resync_queue",
    "roomstate_sync_position",
    "roomstate_alerts",
    "roomstate_web_keys",
    "roomstate_web_links",
    "roomstate_web_sessions",
    "roomstate_api_tokens",
    "roomstate_direct_rooms",
    "roomstate_history_hours",
    "roomstate_user_rooms",
    "roomstate_user_rooms_new",
)
VERSION_TABLE = "roomstate_schema_version"
