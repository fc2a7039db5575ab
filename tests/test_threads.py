"""The database threads' hand-off back to the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from roomstate.db import JobFuture, RoomStore
from roomstate.db.dialect import Dialect
from roomstate.db.threads import _STOP, HAND_OVER_EARLY, MAX_BATCH, StorageError, Transaction, WriterThread


def _scalar(txn: Transaction, value: int) -> int:
    return int(txn.execute("SELECT ?", (value,)).fetchone()[0])


async def test_an_intercept_sees_the_result_in_its_turn_before_done_callbacks(store: RoomStore) -> None:
    """An outcome derived in the job's ``intercept`` is ready in the turn of the loop the job's
    result arrives in; done callbacks (and a task awaiting the job) only run in the next turn."""
    assert store._writer is not None
    order: list[object] = []

    def intercept(job: JobFuture[int], result: int | None, error: BaseException | None) -> bool:
        order.append(("intercepted", result, error, job.done()))
        return False

    job = store._writer.submit(lambda txn: _scalar(txn, 7), intercept=intercept)
    job.add_done_callback(lambda done: order.append("done callback"))
    assert await job == 7
    assert order == [("intercepted", 7, None, False), "done callback"]


async def test_an_intercept_gets_a_storage_error_and_may_resolve_the_future_later(store: RoomStore) -> None:
    assert store._writer is not None
    seen: list[BaseException | None] = []
    later = asyncio.get_running_loop().create_future()

    def intercept(job: JobFuture[object], result: object, error: BaseException | None) -> bool:
        seen.append(error)
        later.add_done_callback(lambda _: job.set_exception(RuntimeError("reported once the resync is queued")))
        return True

    failing = store._writer.submit(
        lambda txn: txn.execute("SELECT * FROM no_such_table").fetchall(), intercept=intercept
    )
    assert await store._writer.submit(lambda txn: _scalar(txn, 1)) == 1
    assert not failing.done()  # the intercept took it over
    later.set_result(None)
    with pytest.raises(RuntimeError, match="once the resync"):
        await failing
    assert len(seen) == 1 and isinstance(seen[0], StorageError)


async def test_a_failing_intercept_still_resolves_its_future_and_the_rest(
    store: RoomStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert store._writer is not None

    def broken(job: JobFuture[int], result: int | None, error: BaseException | None) -> bool:
        raise asyncio.CancelledError  # a bug, even this one

    with caplog.at_level(logging.ERROR, logger="roomstate.db"):
        first = store._writer.submit(lambda txn: _scalar(txn, 8), intercept=broken)
        after = store._writer.submit(lambda txn: _scalar(txn, 9))
        assert await asyncio.wait_for(first, 5) == 8
        assert await asyncio.wait_for(after, 5) == 9
    assert "The intercept of a database job failed" in caplog.text
    assert store._writer.pending == 0


async def test_a_cancelled_job_future_is_still_intercepted(store: RoomStore) -> None:
    """The caller gave up waiting; the write happened all the same, and its outcome is seen."""
    assert store._writer is not None
    seen: list[tuple[int | None, bool]] = []

    def intercept(job: JobFuture[int], result: int | None, error: BaseException | None) -> bool:
        seen.append((result, job.cancelled()))
        return False

    job = store._writer.submit(lambda txn: _scalar(txn, 10), intercept=intercept)
    job.cancel()
    assert await store._writer.submit(lambda txn: _scalar(txn, 11)) == 11
    assert seen == [(10, True)]


async def test_jobs_reach_a_busy_thread_together_at_the_end_of_the_loops_turn(store: RoomStore) -> None:
    """A job submitted while the thread is idle goes to it at once; what follows in the same turn
    of the loop is handed over when the turn ends (woken earlier, the thread would only wait for
    the GIL), all of it as one group commit."""
    assert store._writer is not None
    first, rest = threading.Event(), threading.Event()
    commits: list[float] = []
    store.on_commit = commits.append
    futures = [store._writer.submit(lambda txn: first.set())]
    futures += [store._writer.submit(lambda txn: rest.set()) for _ in range(3)]
    assert first.wait(5)  # (still in the same turn of the loop)
    assert not rest.wait(0.05)  # the turn has not ended: the later jobs were not handed over yet
    await asyncio.gather(*futures)
    assert rest.is_set() and len(commits) <= 2  # (the first may have been joined by the rest)


async def test_a_job_submitted_after_the_thread_went_idle_goes_at_once(store: RoomStore) -> None:
    assert store._writer is not None
    await store._writer.submit(lambda txn: None)
    ran = threading.Event()
    job = store._writer.submit(lambda txn: ran.set())
    assert ran.wait(5) and store._writer.pending == 1  # run, its result not yet back on the loop
    await job


async def test_a_turns_jobs_beyond_a_group_commit_go_into_the_next(store: RoomStore) -> None:
    assert store._writer is not None
    commits: list[int] = []
    ran: list[int] = []
    store.on_commit = lambda seconds: commits.append(len(ran))
    total = 3 * MAX_BATCH + 5
    futures = [store._writer.submit(lambda txn, n=n: ran.append(n)) for n in range(total)]
    await asyncio.gather(*futures)
    assert ran == list(range(total))  # in order, each once
    sizes = [after - before for before, after in zip([0, *commits], commits, strict=False)]
    assert sum(sizes) == total and max(sizes) <= MAX_BATCH and len(sizes) >= 4


async def test_closing_hands_over_what_this_turn_submitted(tmp_path: Path) -> None:
    store = RoomStore(sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    await store.open()
    assert store._writer is not None
    first = store._writer.submit(lambda txn: _scalar(txn, 10))  # to the idle thread at once
    last = store._writer.submit(lambda txn: _scalar(txn, 11))  # waits for the end of the turn
    await store.close()
    assert first.result() == 10 and last.done() and last.result() == 11


async def test_a_long_turn_hands_its_jobs_over_before_it_ends(store: RoomStore) -> None:
    """A whole sync dispatched in one turn: the writer starts on it while the loop still works."""
    assert store._writer is not None
    ran = threading.Event()
    futures = [store._writer.submit(lambda txn: None)]  # (to the idle thread at once)
    futures += [store._writer.submit(lambda txn: ran.set()) for _ in range(HAND_OVER_EARLY)]
    assert ran.wait(5)  # (still in the same turn of the loop)
    await asyncio.gather(*futures)


async def test_a_job_for_a_closed_loop_is_refused(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    writer = WriterThread("closed-loop-writer", Dialect(sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}")), loop)
    writer.submit(lambda txn: None)  # to the idle thread at once; its result never reaches the loop
    loop.close()
    with pytest.raises(StorageError):  # (the thread has a job: this one would wait for the turn's end)
        writer.submit(lambda txn: None)
    assert writer.pending == 1
    idle = WriterThread("closed-loop-writer-2", Dialect(sa.create_engine(f"sqlite:///{tmp_path / 'b.db'}")), loop)
    with pytest.raises(StorageError):  # (an idle thread: it would get the job at once)
        idle.submit(lambda txn: None)
    assert idle.pending == 0
    for thread in (writer, idle):
        thread._queue.put(_STOP)
        thread._thread.join(5)


async def test_a_batch_whose_transaction_was_lost_commits_none_of_its_deferred_rows(store: RoomStore) -> None:
    assert store._writer is not None
    writer = store._writer
    await writer.submit(lambda txn: txn.execute("CREATE TEMPORARY TABLE deferred_probe (x INTEGER)"))
    await writer.submit(lambda txn: txn.execute("CREATE TEMPORARY TABLE direct_probe (x INTEGER)"))

    def fine(txn: Transaction) -> None:
        txn.execute("INSERT INTO direct_probe VALUES (1)")
        txn.defer(txn.dialect.sql("INSERT INTO deferred_probe VALUES (?)"), (1,))

    def loses_the_transaction(txn: Transaction) -> None:
        txn.cur.execute("ROLLBACK")  # what the database does itself on some errors (disk full, ...)
        raise RuntimeError("the statement failed and took the transaction with it")

    # the first job goes to the idle thread at once (alone, or with the others if it was not
    # taken yet); the other two are handed over together at the end of the turn: one batch
    first = writer.submit(lambda txn: None)
    outcomes = await asyncio.gather(
        first, writer.submit(fine), writer.submit(loses_the_transaction), return_exceptions=True
    )
    assert all(isinstance(outcome, BaseException) for outcome in outcomes[1:])
    counts = await writer.submit(
        lambda txn: [
            _scalar(txn, txn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("deferred_probe", "direct_probe")
        ]
    )
    assert counts == [0, 0]
