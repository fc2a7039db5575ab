"""Schema v5 (roomstate 0.3.0), frozen. From v4: the web view's sign-in and API tokens.

- ``roomstate_web_keys``: the web view's signing secret (made by the plugin, never in the config).
- ``roomstate_web_links`` and ``roomstate_web_sessions``: one-time sign-in links and the sessions
  they open, by the SHA-256 of their secret part (a database dump signs nobody in).
- ``roomstate_api_tokens``: bearer tokens for the JSON API and metrics, hashed likewise.
- ``roomstate_direct_rooms``: the private direct room the bot made with each user, the only
  place sign-in links and tokens are sent.

Never edit this file once released.
"""

from __future__ import annotations

from ..dialect import Cursor

DESCRIPTION = "Web sign-in, API tokens, and the direct rooms secrets are sent to"


def ddl(dialect: str) -> list[str]:
    return [
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
        """CREATE TABLE roomstate_direct_rooms (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (user_id)
)""",
    ]


def upgrade(cur: Cursor, dialect: str) -> None:
    for statement in ddl(dialect):
        cur.execute(statement)
