"""Versioned schema upgrades, in the style of mautrix's ``UpgradeTable``.

A fresh database gets the latest schema in one transaction (``schema.ddl``). An existing one
runs each frozen step from its version to the latest, each step in its own transaction together
with the new version number, so a failed step leaves the database at the previous version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import schema
from ..dialect import Cursor, Dialect
from . import v1, v2, v3, v4, v5, v6, v7

log = logging.getLogger("roomstate.db")


@dataclass(frozen=True)
class Step:
    version: int  # the version this step upgrades to
    description: str
    run: Callable[[Cursor, str], None]


STEPS = (
    Step(1, v1.DESCRIPTION, v1.upgrade),
    Step(2, v2.DESCRIPTION, v2.upgrade),
    Step(3, v3.DESCRIPTION, v3.upgrade),
    Step(4, v4.DESCRIPTION, v4.upgrade),
    Step(5, v5.DESCRIPTION, v5.upgrade),
    Step(6, v6.DESCRIPTION, v6.upgrade),
    Step(7, v7.DESCRIPTION, v7.upgrade),
)
LATEST = STEPS[-1].version
assert LATEST == schema.VERSION, "schema.py and the migration steps disagree about the version"


class SchemaTooNew(RuntimeError):
    pass


def _version(cur: Cursor) -> int:
    cur.execute(f"SELECT MAX(version) FROM {schema.VERSION_TABLE}")
    return int(cur.fetchone()[0] or 0)


def _set_version(cur: Cursor, dialect: Dialect, version: int) -> None:
    cur.execute(f"DELETE FROM {schema.VERSION_TABLE}")
    cur.execute(dialect.sql(f"INSERT INTO {schema.VERSION_TABLE} (version) VALUES (?)"), (version,))


def _in_transaction(conn: Any, dialect: Dialect, work: Callable[[Cursor], None]) -> None:
    cur = conn.cursor()
    cur.execute(dialect.begin_write())
    try:
        work(cur)
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")
    cur.close()


def upgrade(conn: Any, dialect: Dialect, target: int = LATEST) -> int:
    """Bring the schema to ``target`` (the latest by default; tests stop earlier to build old
    databases). Returns the version the database is at."""
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE IF NOT EXISTS {schema.VERSION_TABLE} (version INTEGER NOT NULL)")
    version = _version(cur)
    cur.close()
    if version > LATEST:
        raise SchemaTooNew(
            f"database schema v{version} is newer than this plugin (v{LATEST}); downgrading is not supported"
        )
    if version == 0 and target == LATEST:

        def create_latest(cur: Cursor) -> None:
            if _version(cur) == 0:
                for statement in schema.ddl(dialect.name):
                    cur.execute(statement)
                _set_version(cur, dialect, LATEST)

        log.info("Creating roomstate schema v%d", LATEST)
        _in_transaction(conn, dialect, create_latest)
        return LATEST
    for step in STEPS[version:target]:

        def run_step(cur: Cursor, step: Step = step) -> None:
            if _version(cur) == step.version - 1:  # not done meanwhile by another process
                step.run(cur, dialect.name)
                _set_version(cur, dialect, step.version)

        log.info("Upgrading roomstate schema to v%d: %s", step.version, step.description)
        _in_transaction(conn, dialect, run_step)
    return max(version, target)
