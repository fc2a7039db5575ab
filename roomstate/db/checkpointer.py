"""SQLite's WAL checkpoints on a thread of their own, off the writer's path.

With WAL, every commit appends pages to the ``-wal`` file; a checkpoint copies them back into the
database file and syncs it. SQLite runs one inside whichever commit makes the WAL pass 1,000
pages, so a big sync's commits took turns stalling on a copy and an fsync of megabytes (a third
of the time of the first syncs of 1,000 rooms). Here the writer's own automatic checkpoint is only
a safety net (``dialect.AUTOCHECKPOINT_PAGES``, for when this thread cannot keep up), and this
thread runs a PASSIVE checkpoint (it never blocks the writer or a reader, nor waits for them) at
most every ``interval`` seconds while commits keep coming. When the WAL has grown long anyway
(commits arriving faster than one checkpoint copies), the writer copies the rest between two
transactions, so that the WAL starts over. Durability is unchanged: a commit is in the WAL either
way, and a checkpoint only moves committed pages.

The WAL starts over early (at 4 MiB), while what is left to copy and to sync is small: the writer's
turn then costs a few milliseconds, where at 16 MiB, with the file cut back on disk in the same
commit, it stalled one event in a few thousand for 70-100 ms. The file itself is cut back only once
the writer has been idle for a while (``idle``): a ``TRUNCATE`` checkpoint that never waits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

from .dialect import Dialect

log = logging.getLogger("roomstate.db")

RESTART_PAGES = 1024  # a WAL this long (4 MiB of 4 KiB pages) is started over
IDLE_SECONDS = 30.0  # no commits for this long: a -wal file past TRUNCATE_BYTES is cut to nothing
TRUNCATE_BYTES = 16 * 2**20  # (SQLite itself cuts it back only to dialect.WAL_SIZE_LIMIT)


class WalCheckpointer:
    """Checkpoints an SQLite database's WAL in the background after commits (``committed``)."""

    def __init__(self, dialect: Dialect, interval: float = 0.5, idle: float = IDLE_SECONDS) -> None:
        self.dialect = dialect
        self.interval = interval
        self.idle = idle
        self.checkpoints = 0  # checkpoints run (for tests and curiosity)
        self.restarts = 0  # times the writer copied a long WAL fully, so that it started over
        self.truncations = 0  # times an idle -wal file was cut to nothing
        self._conn: Any = None
        self._wal_path = ""
        self._due = threading.Event()
        self._restart_due = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="roomstate-db-checkpointer", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A commit happened (any thread): a checkpoint is due within ``interval``."""
        if not self._due.is_set():  # after every commit: setting it again takes a lock
            self._due.set()

    def between_writes(self, cur: Any) -> None:
        """Run by the writer between two transactions. Commits that keep coming while this thread
        copies mean the WAL is never all copied, so it never starts over: it grows. When it has
        grown past ``RESTART_PAGES``, the writer copies the rest itself (little: what came since
        this thread's last checkpoint), and its next transaction starts the WAL over. A reader
        still on an old snapshot only postpones that to a later turn; nothing waits."""
        if not self._restart_due.is_set():
            return
        self._restart_due.clear()
        try:
            busy, wal_pages, copied = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy and wal_pages == copied:  # all copied: the next transaction starts it over
                self.restarts += 1
        except Exception as error:  # the writer carries on; the next turn tries again
            log.debug("WAL checkpoint between writes failed: %s", error)

    def close(self) -> None:
        """Stop the thread and close its connection (SQLite's last connection to close
        checkpoints whatever is left)."""
        self._stopping.set()
        self._due.set()
        self._thread.join()

    def _run(self) -> None:
        idle_check_due = False
        while not self._stopping.is_set():
            if not self._due.wait(self.idle if idle_check_due else None):
                idle_check_due = not self._truncate_idle_wal()
                continue
            if self._stopping.wait(self.interval):  # let commits gather: at most one per interval
                break
            self._due.clear()
            self._checkpoint()
            idle_check_due = True
        self._close_connection()

    def _close_connection(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:  # a broken connection; nothing of ours is lost with it
            pass
        self._conn = None

    def _cursor(self) -> Any:
        if self._conn is None:
            self._conn = self.dialect.connect()
            # a checkpoint never waits for the writer or a reader (PASSIVE never does anyway)
            self._conn.execute("PRAGMA busy_timeout = 0")
            path = self._conn.execute("PRAGMA database_list").fetchone()[2]
            self._wal_path = f"{path}-wal" if path else ""  # "": in memory, no -wal file
        return self._conn.cursor()

    def _truncate_idle_wal(self) -> bool:
        """After ``idle`` seconds without commits: cut a -wal file past ``TRUNCATE_BYTES`` to
        nothing. False if it could not (a reader on an old snapshot, or a write that just began),
        so that the next idle turn tries again. The pages are copied by a PASSIVE checkpoint first:
        a TRUNCATE holds the write lock while it copies, so it only runs once nothing is left to
        copy, and then holds it only to cut the file."""
        try:
            with contextlib.closing(self._cursor()) as cur:
                wal = self._wal_path
                if not wal or not os.path.exists(wal) or os.path.getsize(wal) <= TRUNCATE_BYTES:
                    return True
                busy, wal_pages, copied = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if busy or wal_pages != copied:  # a reader on an old snapshot: not all could be copied
                    return False
                busy, _, _ = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                return False
            self.truncations += 1
            return True
        except Exception as error:
            log.debug("Cutting back an idle WAL failed: %s", error)
            self._close_connection()
            return False

    def _checkpoint(self) -> None:
        try:
            cur = self._cursor()
            _, wal_pages, _ = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            cur.close()
            if wal_pages >= RESTART_PAGES:
                self._restart_due.set()
            self.checkpoints += 1
        except Exception as error:  # the writer's own checkpoints still run; try again later
            log.debug("Background WAL checkpoint failed: %s", error)
            self._close_connection()
