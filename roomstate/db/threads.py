"""Database threads: all SQL runs here, never on the event loop.

``WriterThread`` owns the one connection that writes. Jobs are submitted from the event loop in
order and run in that order (FIFO is what keeps each room's events in delivery order). Whatever
is queued while the thread is busy runs as one group commit: one transaction, each job inside its
own savepoint, so a failing job is rolled back alone and every job gets its own result.

A job submitted while the thread is idle is handed over at once (the caller registers what
runs on its result before, with ``intercept``, so the loop soon waits and lets go of the GIL);
the jobs of a turn of the loop in which the thread has work are handed over together when the turn
ends. A job's result reaches the loop in one turn (``JobFuture.intercept``). A thread woken
while the loop still runs Python sleeps again until the GIL is released, and on a small virtual
machine that second sleep and wake-up cost more than the Python around an event; so does one more
turn of the loop (docs/performance.md).

``ReaderThread`` answers queries on a second connection, so that a long write (a 100k-member
sync) does not hold up ``!rooms``; with SQLite's WAL and PostgreSQL's MVCC a reader sees the last
committed state, never a half-written one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import operator
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from .dialect import Cursor, Dialect

T = TypeVar("T")
log = logging.getLogger("roomstate.db")

MAX_BATCH = 1000  # jobs per group commit
HAND_OVER_EARLY = 256  # jobs submitted in one turn of the loop that are handed over before it ends
IN_CHUNK = 500  # values per IN (...) list


class StorageError(Exception):
    """The database failed a job (disk full, I/O error, read-only file, lost connection, ...) or is
    closed. ``__cause__`` holds the driver's own error."""


# Called (in the same transaction) for a deferred row the database refused: (txn, sql, params).
RefusedRowHandler = Callable[["Transaction", str, "tuple[Any, ...]"], None]


class Transaction:
    """What a write job gets: the cursor and SQL helpers, and hooks that run only once the
    transaction has committed (e.g. filling caches with rows that are now durable)."""

    def __init__(self, cur: Cursor, dialect: Dialect, on_refused: RefusedRowHandler | None = None) -> None:
        self.cur = cur
        self.dialect = dialect
        self._translate = None if dialect.is_sqlite else dialect.sql  # SQLite takes the store's SQL as it is
        self.on_refused = on_refused
        self.hooks: list[Callable[[], None]] = []
        self.deferred: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Cursor:
        cur = self.cur
        cur.execute(sql if self._translate is None else self._translate(sql), params)
        return cur

    def execute_in(self, sql: str, values: Iterable[Any], params: tuple[Any, ...] = ()) -> list[Any]:
        """All rows of ``sql`` (a query with ``{marks}`` inside ``IN (...)`` and any ``params``
        before it) for ``values``, in chunks that stay within every driver's parameter limit."""
        ordered = list(values)
        rows: list[Any] = []
        for start in range(0, len(ordered), IN_CHUNK):
            chunk = tuple(ordered[start : start + IN_CHUNK])
            rows += self.execute(sql.format(marks=", ".join("?" * len(chunk))), params + chunk).fetchall()
        return rows

    def defer(self, sql: str, params: tuple[Any, ...]) -> None:
        """Run this INSERT (``sql`` in the driver's paramstyle) just before the commit, batched
        with the others like it: for append-only rows that nothing reads in this transaction. A
        failing job's deferred rows are dropped with the rest of its changes."""
        self.deferred.append((sql, params))

    def run_deferred(self, shared: bool) -> None:
        """Insert the deferred rows, batched. In a transaction ``shared`` by several jobs, a row
        the database refuses is left out (and logged) rather than failing all of them; a job
        alone fails with its row, as with any other error of its own (and saves two statements
        on the hot path of one event at a time)."""
        if not self.deferred:
            return
        cur = self.cur
        if not shared and len(self.deferred) == 1:  # one event's history row
            cur.execute(*self.deferred[0])
            self.deferred.clear()
            return
        if not shared:
            for sql, group in itertools.groupby(self.deferred, key=operator.itemgetter(0)):
                self.dialect.executemany(cur, sql, [params for _, params in group])
            self.deferred.clear()
            return
        cur.execute("SAVEPOINT deferred")
        try:
            for sql, group in itertools.groupby(self.deferred, key=operator.itemgetter(0)):
                self.dialect.executemany(cur, sql, [params for _, params in group])
        except Exception as error:
            cur.execute("ROLLBACK TO SAVEPOINT deferred")
            log.warning("Inserting %d deferred rows failed (%s); inserting them one by one", len(self.deferred), error)
            for sql, params in self.deferred:
                cur.execute("SAVEPOINT deferred_row")
                try:
                    cur.execute(sql, params)
                except Exception as row_error:
                    cur.execute("ROLLBACK TO SAVEPOINT deferred_row")
                    log.warning("Left out a row the database refused (%s): %.200r", row_error, params)
                    self._refused(sql, params)
                cur.execute("RELEASE SAVEPOINT deferred_row")
        cur.execute("RELEASE SAVEPOINT deferred")
        self.deferred.clear()

    def _refused(self, sql: str, params: tuple[Any, ...]) -> None:
        if self.on_refused is None:
            return
        cur = self.cur
        cur.execute("SAVEPOINT refused_row")
        try:
            self.on_refused(self, sql, params)
        except Exception as error:
            cur.execute("ROLLBACK TO SAVEPOINT refused_row")
            log.warning("Handling a refused row failed: %s", error)
        cur.execute("RELEASE SAVEPOINT refused_row")

    def after_commit(self, hook: Callable[[], None]) -> None:
        self.hooks.append(hook)


class JobFuture(asyncio.Future[T]):
    """A database job's future. Its ``intercept`` (see ``submit``) sees the job's result in the
    turn of the loop in which it arrives, before anything awaiting the future does: an outcome
    derived from the job's needs no future of its own, nor one more turn."""

    intercept: Intercept[T] | None = None  # (no __init__ of its own: cheaper)


# Called on the loop with a job's future and its result or error (a StorageError for the
# driver's), before the future is resolved; True: it resolves the future itself, later (and, as
# the future may be resolved meanwhile, e.g. cancelled, only if it is not done by then).
Intercept = Callable[[JobFuture[T], Any, BaseException | None], bool]


class _Job(Generic[T]):
    __slots__ = ("error", "future", "hooks", "raw", "result", "single_statement", "work")

    def __init__(
        self, work: Callable[[Any], T], future: JobFuture[T], single_statement: bool = False, raw: bool = False
    ) -> None:
        self.work = work
        self.future = future
        self.single_statement = single_statement  # atomic by itself on SQLite: no savepoint needed
        self.raw = raw  # gets the connection itself and manages its own transactions
        self.result: Any = None
        self.error: BaseException | None = None
        self.hooks: list[Callable[[], None]] = []


_STOP = object()


class _DatabaseThread:
    def __init__(self, name: str, dialect: Dialect, loop: asyncio.AbstractEventLoop) -> None:
        self.dialect = dialect
        self.loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outbox: list[_Job[Any]] = []  # submitted in this turn of the loop (see _hand_over)
        self._conn: Any = None
        self._closed = False
        self.pending = 0  # jobs submitted and not yet settled (loop thread only)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(
        self,
        work: Callable[[Transaction], T],
        single_statement: bool = False,
        intercept: Intercept[T] | None = None,
    ) -> JobFuture[T]:
        """Queue ``work`` (FIFO; see ``_enqueue`` for when the thread gets it); the future
        resolves on the loop with its result, or fails with StorageError. ``intercept(future,
        result, error)`` is called first, in the turn the result arrives in; if it returns True,
        it resolves the future itself (an exception it raises is logged, and the future resolved
        at once: whatever it arranged for later must check ``done()``)."""
        if self._closed:
            raise StorageError("the roomstate database is closed")
        future: JobFuture[T] = JobFuture(loop=self.loop)
        if intercept is not None:
            future.intercept = intercept
        self.pending += 1
        self._enqueue(_Job(work, future, single_statement))
        return future

    def submit_raw(self, work: Callable[[Any], T]) -> JobFuture[T]:
        """Queue ``work(connection)``, run alone and outside any transaction (migrations)."""
        if self._closed:
            raise StorageError("the roomstate database is closed")
        future: JobFuture[T] = JobFuture(loop=self.loop)
        self.pending += 1
        self._enqueue(_Job(work, future, raw=True))
        return future

    def _enqueue(self, job: _Job[Any]) -> None:
        """To the thread at once if it is idle (nothing to gather the job with: handing it over
        at the end of the turn would only cost the loop one more turn), else when the turn ends."""
        if self.loop.is_closed():  # nothing would ever hand it over or deliver its result
            self.pending -= 1
            raise StorageError("the event loop of the roomstate database is closed")
        if self.pending == 1:  # (this job: nothing else in the outbox or on the thread)
            self._queue.put([job])
            return
        if not self._outbox:
            self.loop.call_soon(self._hand_over)
        self._outbox.append(job)
        if len(self._outbox) >= HAND_OVER_EARLY:  # a long turn (a whole sync dispatched): start on it
            self._hand_over()

    def _hand_over(self) -> None:
        """Give the thread what was submitted in a turn of the loop while it had work, at once
        and at the end of the turn: woken while the loop still runs Python, the thread would wait
        for the GIL (a second sleep and wake-up per job, the most expensive part of a hand-off)."""
        jobs, self._outbox = self._outbox, []
        if jobs:
            self._queue.put(jobs)

    async def close(self) -> None:
        """Run what is queued, then close the connection and end the thread."""
        if self._closed:
            return
        self._closed = True
        self._hand_over()
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    # ---- on the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        jobs_queue = self._queue
        while not stop:
            handed = [jobs_queue.get()]
            while not jobs_queue.empty():  # the only consumer: get cannot block
                handed.append(jobs_queue.get())
            batch: list[_Job[Any]] = []
            for jobs in handed:
                if jobs is _STOP:
                    stop = True
                    continue
                for job in jobs:
                    if job.raw:
                        if batch:
                            self._run_batch(batch)
                            batch = []
                        self._run_raw(job)
                        continue
                    batch.append(job)
                    if len(batch) == MAX_BATCH:
                        self._run_batch(batch)
                        batch = []
            if batch:
                self._run_batch(batch)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # pragma: no cover - closing a broken connection
                log.debug("Closing the database connection failed", exc_info=True)

    def _run_raw(self, job: _Job[Any]) -> None:
        try:
            job.result = job.work(self._connection())
        except Exception as error:
            job.error = error
            self._drop_broken_connection(error)
        self._deliver([job])

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.dialect.connect()
        return self._conn

    def _drop_broken_connection(self, error: BaseException | None = None) -> None:
        """After a failure: keep the connection if it still answers, else reconnect next time.
        SQLite opens a file it may not write read-only and stays so: after a write to such a
        connection failed, or an I/O error, it is opened again, so that writes work as soon as
        the file (or the disk) does again."""
        if self._conn is None:
            return
        if error is not None and self.dialect.is_sqlite and _reopen_sqlite_after(error):
            self._close_connection()
            return
        try:
            cur = self._conn.cursor()
            if not self.dialect.is_sqlite or self._conn.in_transaction:
                cur.execute("ROLLBACK")
            cur.execute("SELECT 1")
            cur.fetchall()
            cur.close()
        except Exception:
            log.warning("Database connection lost; reconnecting")
            self._close_connection()

    def _close_connection(self) -> None:
        try:
            self._conn.close()
        except Exception:
            pass
        self._conn = None
        self._cur = None

    def _run_batch(self, batch: list[_Job[Any]]) -> None:
        raise NotImplementedError

    def _deliver(self, batch: list[_Job[Any]]) -> None:
        try:
            self.loop.call_soon_threadsafe(self._settle, batch)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _settle(self, batch: list[_Job[Any]]) -> None:
        self.pending -= len(batch)
        for job in batch:
            future = job.future
            error = None if job.error is None else _storage_error(job.error)
            intercept = future.intercept
            if intercept is not None and _intercepted(intercept, future, job.result, error):
                continue
            if not future.done():  # else cancelled by its caller
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(job.result)


class WriterThread(_DatabaseThread):
    """The single writer; group-commits whatever is queued."""

    def __init__(
        self,
        name: str,
        dialect: Dialect,
        loop: asyncio.AbstractEventLoop,
        on_refused: RefusedRowHandler | None = None,
        on_commit: Callable[[float], None] | None = None,
        between_writes: Callable[[Any], None] | None = None,
    ) -> None:
        self._cur: Any = None
        self._txn: Transaction | None = None
        self._between_writes = between_writes  # run with the cursor before each transaction
        self._begin = dialect.begin_write()
        self._on_refused = on_refused
        self._on_commit = on_commit
        super().__init__(name, dialect, loop)

    def _cursor(self) -> Any:
        if self._cur is None or self._conn is None:
            self._cur = self._connection().cursor()
        return self._cur

    def _run_batch(self, batch: list[_Job[Any]]) -> None:
        started = time.perf_counter()
        try:
            cur = self._cursor()
            if self._between_writes is not None:
                self._between_writes(cur)
            cur.execute(self._begin)
        except Exception as error:
            for job in batch:
                job.error = error
            self._drop_broken_connection(error)
            self._deliver(batch)
            return
        txn = self._txn
        if txn is None or txn.cur is not cur:
            txn = self._txn = Transaction(cur, self.dialect, self._on_refused)
        else:  # (one for all batches on the same cursor)
            txn.deferred.clear()
        isolate = len(batch) > 1
        lost = False  # the transaction itself failed
        for job in batch:
            savepoint = isolate and not (job.single_statement and self.dialect.is_sqlite)
            txn.hooks = job.hooks
            deferred = len(txn.deferred)
            try:
                if savepoint:
                    cur.execute("SAVEPOINT job")
                job.result = job.work(txn)
                if savepoint:
                    cur.execute("RELEASE SAVEPOINT job")
            except Exception as error:
                job.error = error
                job.hooks = []
                del txn.deferred[deferred:]
                if not isolate:
                    break
                try:
                    if savepoint:
                        cur.execute("ROLLBACK TO SAVEPOINT job")
                        cur.execute("RELEASE SAVEPOINT job")
                except Exception as rollback_error:  # the transaction itself is gone
                    log.warning("Rolling back a failed job failed: %s", rollback_error)
                    self._fail_all(batch, error)
                    lost = True
                    break
        try:
            if lost:  # rolled back already: nothing of the batch (not its deferred rows) may commit
                pass
            elif len(batch) == 1 and batch[0].error is not None:
                cur.execute("ROLLBACK")
            else:
                txn.run_deferred(shared=isolate)
                cur.execute("COMMIT")
                if self._on_commit is not None:
                    self._on_commit(time.perf_counter() - started)
        except Exception as error:
            self._fail_all(batch, error)
        if batch[-1].error is not None and all(job.error is not None for job in batch):
            self._drop_broken_connection(batch[-1].error)
        for job in batch:
            for hook in job.hooks:
                hook()
        self._deliver(batch)

    def _fail_all(self, batch: list[_Job[Any]], error: BaseException) -> None:
        for job in batch:
            if job.error is None:
                job.error = error
            job.hooks = []
        try:
            if not self.dialect.is_sqlite or self._connection().in_transaction:
                self._connection().cursor().execute("ROLLBACK")
        except Exception:
            pass


class ReaderThread(_DatabaseThread):
    """Read-only queries, each in its own read transaction (one consistent snapshot)."""

    def _run_batch(self, batch: list[_Job[Any]]) -> None:
        for job in batch:
            try:
                cur = self._connection().cursor()
                cur.execute(self.dialect.begin_read())
                try:
                    job.result = job.work(Transaction(cur, self.dialect))
                finally:
                    cur.execute("ROLLBACK")
                    cur.close()
            except Exception as error:
                job.error = error
                self._drop_broken_connection(error)
        self._deliver(batch)


def _intercepted(intercept: Intercept[Any], future: JobFuture[Any], result: Any, error: BaseException | None) -> bool:
    """Run the future's intercept; a bug in it (even a CancelledError) leaves the future to be
    resolved as usual, and the rest of the batch still settles."""
    try:
        return intercept(future, result, error)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        log.exception("The intercept of a database job failed")
        return False


def _storage_error(error: BaseException) -> BaseException:
    """A job's failure as the store's callers see it: the database driver's errors (the DBAPI's
    ``Error`` classes of sqlite3, psycopg2 and psycopg) become StorageError; a bug in a job stays
    what it is."""
    if isinstance(error, StorageError) or not _is_driver_error(error):
        return error
    wrapped = StorageError(str(error) or type(error).__name__)
    wrapped.__cause__ = error
    return wrapped


def _is_driver_error(error: BaseException) -> bool:
    if isinstance(error, sqlite3.Error):
        return True
    module = type(error).__module__
    return module.startswith(("psycopg2", "psycopg")) and isinstance(error, Exception)


_REOPEN_SQLITE_AFTER = ("readonly", "read-only", "disk i/o error", "unable to open")


def _reopen_sqlite_after(error: BaseException) -> bool:
    text = str(error).lower()
    return any(sign in text for sign in _REOPEN_SQLITE_AFTER)
