"""Schema v4 (roomstate 0.3.0), frozen. From v3: the plugin's own sync position, and alerts.

- ``roomstate_sync_position``: one row, the ``next_batch`` token of the latest /sync response
  whose events (and every earlier response's) have all been applied and committed, and whose
  sync it is (the bot's user ID). A start catches up from it with one /sync of its own instead of
  fetching every room's state.
- ``roomstate_alerts``: the alerts sent to the moderators' room (a join wave, a stuck room),
  with the notice's event ID, so that a restart goes on editing a wave's notice and never sends
  an alert twice.

Never edit this file once released.
"""

from __future__ import annotations

from ..dialect import Cursor

DESCRIPTION = "The plugin's own sync position; alerts sent"


def ddl(dialect: str) -> list[str]:
    return [
        """CREATE TABLE roomstate_sync_position (
	id INTEGER NOT NULL,
	next_batch TEXT NOT NULL,
	user_id TEXT NOT NULL,
	saved_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	CHECK (id = 1)
)""",
        """CREATE TABLE roomstate_alerts (
	kind TEXT NOT NULL,
	room_nid INTEGER NOT NULL,
	started_at BIGINT NOT NULL,
	notice_event_id TEXT,
	updated_at BIGINT NOT NULL,
	count INTEGER NOT NULL,
	detail TEXT,
	open BOOLEAN NOT NULL,
	PRIMARY KEY (kind, room_nid, started_at)
)""",
    ]


def upgrade(cur: Cursor, dialect: str) -> None:
    for statement in ddl(dialect):
        cur.execute(statement)
