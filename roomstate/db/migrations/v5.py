"""Schema v5 (roomstate 0.3.0), frozen. From v4: the web view's sign-in and API tokens.

- ``roomstate_web_keys``: the web view's signing secret (made by the plugin, never in the config).
- ``roomstate_web_links`` and ``roomstate_web_sessions``: one-time sign-in links and the sessions
  they open, by the SHA-256 of their secret part (a database dump signs nobody in).
- ``roomstate_api_tokens``: bearer tokens for the JSON API and metrics, hashed likewise.
- ``roomstate_direct_rooms``: the private direct room the bot made with each user, the only
  place sign-in links and tokens are sent.
- ``roomstate_history_hours``: joins and leaves per room and hour, rolled up from the history rows
  with the user index (the rows up to its progress mark), so that a chart of 90 days of a busy
  room reads 2,160 rows rather than a million. Filled here from the history already indexed.

Never edit this file once released.
"""

from __future__ import annotations

from ..dialect import Cursor

DESCRIPTION = "Web sign-in, API tokens, the direct rooms secrets are sent to; joins and leaves per hour"
HOUR = 3_600_000 << 4  # seqs in an hour (history.COUNTER_BITS = 4), frozen here
JOIN = 1  # codes.CODES["join"], frozen here


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
        f"""CREATE TABLE roomstate_history_hours (
	room_nid INTEGER NOT NULL,
	hour BIGINT NOT NULL,
	joins INTEGER NOT NULL,
	leaves INTEGER NOT NULL,
	PRIMARY KEY (room_nid, hour)
){" WITHOUT ROWID" if dialect == "sqlite" else ""}""",
    ]


def upgrade(cur: Cursor, dialect: str) -> None:
    for statement in ddl(dialect):
        cur.execute(statement)
    joins = f"SUM(CASE WHEN membership = {JOIN} AND previous <> {JOIN} THEN 1 ELSE 0 END)"
    leaves = f"SUM(CASE WHEN previous = {JOIN} AND membership <> {JOIN} THEN 1 ELSE 0 END)"
    cur.execute(
        "INSERT INTO roomstate_history_hours (room_nid, hour, joins, leaves)"
        f" SELECT room_nid, seq / {HOUR}, {joins}, {leaves} FROM roomstate_history"
        " WHERE seq <= (SELECT MAX(seq) FROM roomstate_history_progress WHERE name = 'indexed')"
        f" GROUP BY room_nid, seq / {HOUR} HAVING {joins} + {leaves} > 0"
    )
