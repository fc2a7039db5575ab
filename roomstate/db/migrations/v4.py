"""Schema v4 (roomstate 0.3.0), frozen. From v3: the plugin's own sync position.

- ``roomstate_sync_position``: one row, the ``next_batch`` token of the latest /sync response
  whose events (and every earlier response's) have all been applied and committed. A start
  catches up from it with one /sync of its own instead of fetching every room's state.

Never edit this file once released.
"""

from __future__ import annotations

from ..dialect import Cursor

DESCRIPTION = "The plugin's own sync position"


def ddl(dialect: str) -> list[str]:
    return [
        """CREATE TABLE roomstate_sync_position (
	id INTEGER NOT NULL,
	next_batch TEXT NOT NULL,
	saved_at BIGINT NOT NULL,
	PRIMARY KEY (id),
	CHECK (id = 1)
)""",
    ]


def upgrade(cur: Cursor, dialect: str) -> None:
    for statement in ddl(dialect):
        cur.execute(statement)
