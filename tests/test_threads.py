"""The database threads' hand-off back to the event loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from roomstate.db import RoomStore, when_settled
from roomstate.db.threads import StorageError, Transaction


def _scalar(txn: Transaction, value: int) -> int:
    return int(txn.execute("SELECT ?", (value,)).fetchone()[0])


async def test_settled_callbacks_run_when_the_result_arrives_before_done_callbacks(store: RoomStore) -> None:
    """An outcome derived in ``when_settled`` is ready in the turn of the loop the job's result
    arrives in; done callbacks (and a task awaiting the job) only run in the next turn."""
    assert store._writer is not None
    job = store._writer.submit(lambda txn: _scalar(txn, 7))
    order: list[object] = []
    job.add_done_callback(lambda done: order.append("done callback"))
    when_settled(job, lambda done: order.append(("settled", done.result())))
    assert await job == 7
    assert order == [("settled", 7), "done callback"]


async def test_a_failing_job_and_a_failing_callback_still_settle_the_rest(
    store: RoomStore, caplog: pytest.LogCaptureFixture
) -> None:
    assert store._writer is not None
    failing = store._writer.submit(lambda txn: txn.execute("SELECT * FROM no_such_table").fetchall())
    seen: list[str] = []

    def broken(done: asyncio.Future[object]) -> None:
        raise RuntimeError("a bug in a callback")

    when_settled(failing, broken)
    when_settled(failing, lambda done: seen.append(type(done.exception()).__name__))
    after = store._writer.submit(lambda txn: _scalar(txn, 8))
    with caplog.at_level(logging.ERROR, logger="roomstate.db"):
        with pytest.raises(StorageError):
            await failing
        assert await after == 8
    assert seen == ["StorageError"]
    assert "A callback of a database job failed" in caplog.text


async def test_a_cancelled_job_future_still_runs_its_settled_callbacks(store: RoomStore) -> None:
    assert store._writer is not None
    job = store._writer.submit(lambda txn: _scalar(txn, 9))
    seen: list[bool] = []
    when_settled(job, lambda done: seen.append(done.cancelled()))
    job.cancel()
    assert await store._writer.submit(lambda txn: _scalar(txn, 10)) == 10
    assert seen == [True]


async def test_any_other_future_gets_a_done_callback() -> None:
    plain: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[int] = []
    when_settled(plain, lambda done: seen.append(done.result()))
    plain.set_result(3)
    await asyncio.sleep(0)
    assert seen == [3]
