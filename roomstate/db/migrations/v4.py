"""Schema v4 (roomstate 0.3.0), frozen. From v3: the plugin's own sync position, alerts, and the
web view's sign-in.

- ``roomstate_sync_position``: one row, the ``next_batch`` token of the latest /sync response
  whose events (and every earlier response's) have all been applied and committed, and whose
  sync it is (the bot's user ID). A start catches up from it with one /sync of its own instead of
  fetching every room's state.
- ``roomstate_alerts``: the alerts sent to the moderators' room (a join wave, a stuck room),
  with the notice's event ID, so that a restart goes on editing a wave's notice and never sends
  an alert twice.
- ``roomstate_web_keys``: the web view's signing secret (made by the plugin, never in the config).
- ``roomstate_web_links`` and ``roomstate_web_sessions``: one-time sign-in links and the sessions
  they open, by the SHA-256 of their secret part (a database dump signs nobody in).
- ``roomstate_api_tokens``: bearer tokens for the JSON API and metrics, hashed likewise.

Never edit this file once released.
"""

from __future__ import annotations

from ..dialect import Cursor

DESCRIPTION = "The plugin's own sync position; alerts sent; web sign-in and API tokens"


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
        """CREATE TABLE roomstate_web_keys (
	name TEXT NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (name)
)""",
        """CREATE TABLE roomstate_web_links (
	link_hash TEXT NOT NULL,
	user_id TEXT NOT NULL,
	expires_at BIGINT NOT NULL,
	used_at BIGINT,
	PRIMARY KEY (link_hash)
)""",
        """CREATE TABLE roomstate_web_sessions (
	session_hash TEXT NOT NULL,
	user_id TEXT NOT NULL,
	csrf TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	PRIMARY KEY (session_hash)
)""",
        "CREATE INDEX roomstate_web_sessions_user_idx ON roomstate_web_sessions (user_id)",
        """CREATE TABLE roomstate_api_tokens (
	token_hash TEXT NOT NULL,
	name TEXT NOT NULL,
	created_by TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	revoked_at BIGINT,
	last_used_at BIGINT,
	PRIMARY KEY (token_hash),
	UNIQUE (name)
)""",
    ]


def upgrade(cur: Cursor, dialect: str) -> None:
    for statement in ddl(dialect):
        cur.execute(statement)
