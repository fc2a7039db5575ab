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
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .dialect import Dialect

log = logging.getLogger("roomstate.db")

RESTART_PAGES = 4096  # a WAL this long (16 MiB of 4 KiB pages) is started over


class WalCheckpointer:
    """Checkpoints an SQLite database's WAL in the background after commits (``committed``)."""

    def __init__(self, dialect: Dialect, interval: float = 0.5) -> None:
        self.dialect = dialect
        self.interval = interval
        self.checkpoints = 0  # checkpoints run (for tests and curiosity)
        self.restarts = 0  # times the writer copied a long WAL fully, so that it started over
        self._conn: Any = None
        self._due = threading.Event()
        self._restart_due = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="roomstate-db-checkpointer", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A commit happened (any thread): a checkpoint is due within ``interval``."""
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
        while not self._stopping.is_set():
            self._due.wait()
            if self._stopping.wait(self.interval):  # let commits gather: at most one per interval
                break
            self._due.clear()
            self._checkpoint()
        self._close_connection()

    def _close_connection(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:  # a broken connection; nothing of ours is lost with it
            pass
        self._conn = None

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = self.dialect.connect()
            cur = self._conn.cursor()
            _, wal_pages, _ = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            cur.close()
            if wal_pages >= RESTART_PAGES:
                self._restart_due.set()
            self.checkpoints += 1
        except Exception as error:  # the writer's own checkpoints still run; try again later
            log.debug("Background WAL checkpoint failed: %s", error)
            self._close_connection()
