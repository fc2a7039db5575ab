"""RoomStore on real databases: atomic replace, minimal diffs, counts, claims, group commit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from roomstate.db import RoomStore, dialect, history, schema, sync_write
from roomstate.db import store as store_module
from roomstate.db.threads import Transaction
from roomstate.models import (
    BAN,
    INVITE,
    JOIN,
    LEAVE,
    Applied,
    Member,
    MemberChange,
    RoomInfo,
    RoomInfoChange,
    RoomSnapshot,
)

from .helpers import Database

ROOM = "!a:fake.test"


def snapshot(users: list[str], name: str = "A", membership: str = JOIN, room_id: str = ROOM) -> RoomSnapshot:
    return RoomSnapshot(RoomInfo(room_id, name=name), tuple(Member(u, membership, u[1:].upper()) for u in users))


def change(
    user_id: str, membership: str, event_id: str, displayname: str | None = None, room_id: str = ROOM
) -> MemberChange:
    return MemberChange(room_id, event_id, Member(user_id, membership, displayname), user_id)


async def members(store: RoomStore, room_id: str = ROOM) -> dict[str, tuple[str, str | None]]:
    return {m.user_id: (m.membership, m.displayname) for m in await store.members(room_id)}


async def test_replace_room_reports_the_diff_and_replaces(store: RoomStore) -> None:
    diff = await store.replace_room(snapshot(["@a:x", "@b:x"]))
    assert (diff.added, diff.removed, diff.was_known, diff.rows_written) == (("@a:x", "@b:x"), (), False, 2)
    diff = await store.replace_room(snapshot(["@b:x", "@c:x"], name="B"))
    assert (diff.added, diff.removed, diff.was_known) == (("@c:x",), ("@a:x",), True)
    assert list(await members(store)) == ["@b:x", "@c:x"]
    room = await store.room(ROOM)
    assert room is not None and (room.name, room.joined_count) == ("B", 2)


async def test_a_resync_writes_only_the_rows_that_differ(store: RoomStore, db: Database) -> None:
    users = [f"@u{i}:x" for i in range(2000)]
    await store.replace_room(snapshot(users))
    changed = list(snapshot(users).members)
    changed[5] = Member("@u5:x", JOIN, "Renamed")
    changed[6] = Member("@u6:x", INVITE, "U6:X")
    changed[7] = Member("@u7:x", BAN, None)
    del changed[8]
    changed.append(Member("@new:x", JOIN, None))
    diff = await store.replace_room(RoomSnapshot(RoomInfo(ROOM, name="A"), tuple(changed)))
    assert diff.rows_written == 5
    assert (diff.added, diff.removed) == (("@new:x",), ("@u6:x", "@u7:x", "@u8:x"))
    assert (diff.added_count, diff.removed_count) == (1, 3)
    stored = await members(store)
    assert stored["@u5:x"] == (JOIN, "Renamed") and stored["@u6:x"] == (INVITE, "U6:X")
    assert stored["@u7:x"] == (BAN, None) and "@u8:x" not in stored and stored["@new:x"] == (JOIN, None)
    room = await store.room(ROOM)
    assert room is not None and (room.joined_count, room.invited_count) == (2000 - 3 + 1, 1)
    again = await store.replace_room(RoomSnapshot(RoomInfo(ROOM, name="A"), tuple(changed)))
    assert again.rows_written == 0 and not again.changed


async def test_display_names_with_separator_characters_round_trip(store: RoomStore) -> None:
    odd = ["a\x1eb", "\x1d", "\x1d1e", "", "x\x1fy", None, "名前 🎉"]
    snap = RoomSnapshot(RoomInfo(ROOM), tuple(Member(f"@u{i}:x", JOIN, name) for i, name in enumerate(odd)))
    await store.replace_room(snap)
    assert (await store.replace_room(snap)).rows_written == 0
    assert [m.displayname for m in sorted(await store.members(ROOM), key=lambda m: m.user_id)] == odd


async def test_replace_room_is_atomic(store: RoomStore) -> None:
    await store.replace_room(snapshot(["@a:x", "@b:x"]))
    broken = RoomSnapshot(
        RoomInfo(ROOM, name="broken"),
        (*tuple(Member(f"@u{i}:x", JOIN) for i in range(1200)), Member("@bad:x", None)),  # type: ignore[arg-type]
    )
    with pytest.raises(Exception, match=r"(?i)null"):
        await store.replace_room(broken)  # fails on the last row
    assert list(await members(store)) == ["@a:x", "@b:x"]
    room = await store.room(ROOM)
    assert room is not None and room.name == "A"


async def test_readers_never_see_a_half_written_member_list(store: RoomStore) -> None:
    await store.replace_room(snapshot([f"@old{i}:x" for i in range(3000)]))
    seen: list[int] = []
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            seen.append(len(await store.members(ROOM)))
            await asyncio.sleep(0)

    reader = asyncio.ensure_future(read())
    for round_ in range(3):
        await store.replace_room(snapshot([f"@new{round_}-{i}:x" for i in range(3000)]))
    done.set()
    await reader
    assert seen and set(seen) == {3000}


async def test_member_changes_keep_counts_and_report_what_happened(store: RoomStore) -> None:
    await store.replace_room(snapshot(["@a:x"]))
    assert (
        await store.apply_member(change("@b:x", INVITE, "$1"), record_claim=True, queue_if_untracked=True)
        is Applied.APPLIED
    )
    assert (
        await store.apply_member(change("@b:x", JOIN, "$2"), record_claim=True, queue_if_untracked=True)
        is Applied.APPLIED
    )
    assert (
        await store.apply_member(change("@b:x", JOIN, "$2"), record_claim=True, queue_if_untracked=True)
        is Applied.DUPLICATE
    )
    assert (
        await store.apply_member(change("@b:x", JOIN, "$3"), record_claim=True, queue_if_untracked=True)
        is Applied.UNCHANGED
    )
    assert (
        await store.apply_member(change("@c:x", LEAVE, "$4"), record_claim=True, queue_if_untracked=True)
        is Applied.UNCHANGED
    )
    assert (
        await store.apply_member(change("@a:x", LEAVE, "$5"), record_claim=True, queue_if_untracked=True)
        is Applied.APPLIED
    )
    room = await store.room(ROOM)
    assert room is not None and (room.joined_count, room.invited_count) == (1, 0)
    assert await members(store) == {"@b:x": (JOIN, None)}  # leaves are not stored


async def test_an_event_in_an_untracked_room_is_claimed_and_the_room_queued(store: RoomStore) -> None:
    outcome = await store.apply_member(
        change("@a:x", JOIN, "$1", room_id="!u:x"), record_claim=True, queue_if_untracked=True
    )
    assert outcome is Applied.NOT_TRACKED
    assert [s.room_id for s in await store.resync_queue()] == ["!u:x"]
    assert await store.claim_event("!u:x", "$1") is False  # claimed with the queue entry
    assert (
        await store.apply_member(
            change("@a:x", JOIN, "$2", room_id="!l:x"), record_claim=True, queue_if_untracked=False
        )
        is Applied.NOT_TRACKED
    )
    assert [s.room_id for s in await store.resync_queue()] == ["!u:x"]
    await store.replace_room(snapshot(["@a:x"], room_id="!u:x"))
    assert await store.resync_queue() == []  # a successful sync leaves the queue


async def test_an_event_of_a_user_not_in_the_cache_finds_the_stored_user(store: RoomStore, db: Database) -> None:
    """A user the interner has not cached (a restart, a first sync) is found with the room and
    the membership in one lookup: the same user row, never a second one; a user first seen in a
    room the bot does not track is not stored at all."""
    await store.replace_room(snapshot(["@a:x", "@b:x"]))
    users_before = db.scalar("SELECT COUNT(*) FROM roomstate_users")
    store.interner.users.clear()
    assert await store.apply_member(change("@a:x", LEAVE, "$1"), record_claim=True, queue_if_untracked=True) is (
        Applied.APPLIED
    )
    assert await store.apply_member(change("@n:x", JOIN, "$2", "N"), record_claim=True, queue_if_untracked=True) is (
        Applied.APPLIED
    )
    store.interner.users.clear()
    assert await store.apply_member(change("@n:x", JOIN, "$3", "M"), record_claim=True, queue_if_untracked=True) is (
        Applied.APPLIED
    )
    assert await members(store) == {"@b:x": (JOIN, "B:X"), "@n:x": (JOIN, "M")}
    assert db.scalar("SELECT COUNT(*) FROM roomstate_users") == users_before + 1
    room = await store.room(ROOM)
    assert room is not None and room.joined_count == 2
    outcome = await store.apply_member(
        change("@z:x", JOIN, "$4", room_id="!u:x"), record_claim=True, queue_if_untracked=True
    )
    assert outcome is Applied.NOT_TRACKED
    assert db.scalar("SELECT COUNT(*) FROM roomstate_users WHERE user_id = '@z:x'") == 0


async def test_a_resync_asked_for_after_a_snapshot_was_fetched_still_runs(store: RoomStore) -> None:
    fetched_at = int(time.time() * 1000) - 5_000  # the snapshot was requested 5 s ago
    await store.queue_resync("!u:x", "asked for while that snapshot was on its way")
    await store.replace_room(snapshot(["@a:x"], room_id="!u:x"), fetched_at_ms=fetched_at)
    assert [s.room_id for s in await store.resync_queue()] == ["!u:x"]  # not answered by the older snapshot
    await store.replace_room(snapshot(["@a:x"], room_id="!u:x"), fetched_at_ms=int(time.time() * 1000))
    assert await store.resync_queue() == []


async def test_room_info_changes(store: RoomStore) -> None:
    await store.replace_room(snapshot(["@a:x"]))
    info = RoomInfoChange(ROOM, "$n", (("name", "New"), ("topic", "T")))
    assert await store.apply_room_info(info, record_claim=True, queue_if_untracked=True) is Applied.APPLIED
    assert (
        await store.apply_room_info(
            RoomInfoChange(ROOM, "$m", (("name", "New"),)), record_claim=True, queue_if_untracked=True
        )
        is Applied.UNCHANGED
    )
    assert await store.apply_room_info(info, record_claim=True, queue_if_untracked=True) is Applied.DUPLICATE
    room = await store.room(ROOM)
    assert room is not None and (room.name, room.topic) == ("New", "T")


async def test_claims_are_atomic_under_concurrency(store: RoomStore) -> None:
    results = await asyncio.gather(*(store.claim_event(ROOM, f"$e{i % 50}") for i in range(500)))
    assert sum(results) == 50
    assert await store.claim_event(ROOM, "$e1") is False
    await store.release_event(ROOM, "$e1")
    assert await store.claim_event(ROOM, "$e1") is True


async def test_a_failing_job_in_a_group_commit_is_rolled_back_alone(store: RoomStore, db: Database) -> None:
    await store.replace_room(snapshot(["@a:x"]))

    def breaks(txn: Transaction) -> None:
        txn.execute("INSERT INTO roomstate_users (user_id) VALUES ('@half:x')")
        txn.execute("INSERT INTO roomstate_no_such_table VALUES (1)")

    futures = [store.claim_event(ROOM, "$before"), store._write(breaks), store.claim_event(ROOM, "$after")]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] is True and results[2] is True and isinstance(results[1], Exception)
    assert db.scalar("SELECT COUNT(*) FROM roomstate_users WHERE user_id = '@half:x'") == 0
    assert await store.claim_event(ROOM, "$before") is False and await store.claim_event(ROOM, "$after") is False


async def test_numeric_ids_are_positive_and_never_leak(store: RoomStore, db: Database) -> None:
    await store.replace_room(snapshot(["@a:x", "@b:x"]))
    await store.claim_event(ROOM, "$x")
    assert db.scalar("SELECT MIN(room_nid) FROM roomstate_rooms") >= 1
    assert db.scalar("SELECT MIN(user_nid) FROM roomstate_users") >= 1
    room = await store.room(ROOM)
    shared = await store.rooms_of("@a:x")
    for value in (room, *shared, *(await store.members(ROOM)), *(await store.rooms())):
        assert "nid" not in repr(value)


async def test_forgetting_keeps_ids_so_processed_events_still_match(store: RoomStore, db: Database) -> None:
    await store.replace_room(snapshot(["@a:x"]))
    await store.claim_event(ROOM, "$seen")
    nid = db.scalar("SELECT room_nid FROM roomstate_rooms WHERE room_id = :r", r=ROOM)
    assert await store.forget_room(ROOM) is Applied.APPLIED
    assert await store.room(ROOM) is None and await store.members(ROOM) == []
    assert await store.claim_event(ROOM, "$seen") is False
    await store.replace_room(snapshot(["@a:x"]))
    assert db.scalar("SELECT room_nid FROM roomstate_rooms WHERE room_id = :r", r=ROOM) == nid


async def test_cleanup_deletes_old_records_in_chunks(store: RoomStore, db: Database) -> None:
    now = int(time.time() * 1000)
    for room in ("!r1:x", "!r2:x"):
        await store.claim_event(room, "$keep")
    db.execute(
        "INSERT INTO roomstate_processed_events (room_nid, event_id, processed_ts)"
        " SELECT r.room_nid, 'old' || u.n, :ts FROM roomstate_rooms r,"
        " (SELECT 1 AS n UNION SELECT 2 UNION SELECT 3) u",
        ts=now - 10_000_000,
    )
    from roomstate.db import store as store_module

    store_module.CLEANUP_CHUNK, saved = 2, store_module.CLEANUP_CHUNK
    try:
        total, chunks, next_room = 0, 0, 0
        while next_room is not None:
            deleted, next_room = await store.delete_processed_chunk(now - 1000, next_room)
            assert deleted <= 2
            total, chunks = total + deleted, chunks + 1
    finally:
        store_module.CLEANUP_CHUNK = saved
    assert total == 6 and chunks >= 3
    assert sorted(r[0] for r in db.rows("SELECT event_id FROM roomstate_processed_events")) == ["$keep", "$keep"]


async def test_database_work_runs_off_the_event_loop(store: RoomStore) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def job(txn: Transaction) -> None:
        seen.append(threading.get_ident())

    await store._write(job)
    assert seen and seen[0] != loop_thread


async def test_deferred_rows_commit_with_their_job_and_go_with_a_failed_one(store: RoomStore, db: Database) -> None:
    insert = store.dialect.sql("INSERT INTO roomstate_history_progress (name, seq) VALUES (?, ?)")

    def job(name: str, fail: bool = False) -> Callable[[Transaction], None]:
        def work(txn: Transaction) -> None:
            txn.defer(insert, (name, 1))
            if fail:
                raise RuntimeError("this job fails after deferring a row")

        return work

    results = await asyncio.gather(
        store._write(job("a")), store._write(job("b", fail=True)), store._write(job("c")), return_exceptions=True
    )
    assert isinstance(results[1], RuntimeError) and results[0] is None and results[2] is None
    assert db.rows("SELECT name FROM roomstate_history_progress ORDER BY name") == [("a",), ("c",)]


async def test_a_deferred_row_the_database_refuses_fails_no_job(
    store: RoomStore, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    insert = store.dialect.sql("INSERT INTO roomstate_history_progress (name, seq) VALUES (?, ?)")

    def job(name: str, seq: int) -> Callable[[Transaction], None]:
        return lambda txn: txn.defer(insert, (name, seq))

    gate = threading.Event()
    held = store._write(lambda txn: gate.wait(10))  # holds the writer: the next three commit together
    together = [store._write(job("a", 1)), store._write(job("a", 2)), store._write(job("b", 3))]
    gate.set()
    await held
    # the second row breaks the primary key: it is left out, every job succeeds, the third row lands
    assert await asyncio.gather(*together) == [None, None, None]
    assert db.rows("SELECT name, seq FROM roomstate_history_progress ORDER BY name") == [("a", 1), ("b", 3)]
    assert "Left out a row the database refused" in caplog.text
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):  # a job alone fails with its own row
        await store._write(job("b", 4))
    await store._write(job("c", 5))
    assert db.rows("SELECT name, seq FROM roomstate_history_progress ORDER BY name") == [("a", 1), ("b", 3), ("c", 5)]


async def test_reopening_is_a_no_op(db_url: str, db: Database) -> None:
    for _ in range(2):
        engine = sa.create_engine(db_url)
        store = RoomStore(engine)
        assert await store.open() == schema.VERSION
        await store.close()
        engine.dispose()
    assert db.rows("SELECT version FROM roomstate_schema_version") == [(schema.VERSION,)]


async def test_sqlite_uses_wal(sqlite_only: str) -> None:
    engine = sa.create_engine(sqlite_only)
    store = RoomStore(engine)
    await store.open()
    await store.close()
    with engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


async def test_a_first_sync_staged_in_slices_stores_every_member_once(
    store: RoomStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite stages a big first sync a slice at a time (bounded memory); the room must come out
    exactly as one pass would write it, with users already known from another room."""
    monkeypatch.setattr(sync_write, "STAGE_SLICE", 100)
    await store.replace_room(snapshot([f"@u{i}:x" for i in range(0, 1050, 3)], room_id="!other:x"))
    wanted = {f"@u{i}:x": (INVITE if i % 7 == 0 else JOIN, None if i % 5 == 0 else f"U{i}") for i in range(1050)}
    diff = await store.replace_room(
        RoomSnapshot(RoomInfo(ROOM), tuple(Member(u, m, name) for u, (m, name) in wanted.items()))
    )
    assert await members(store) == wanted
    room = await store.room(ROOM)
    joined = sum(m == JOIN for m, _ in wanted.values())
    assert room is not None and (room.joined_count, room.invited_count) == (joined, len(wanted) - joined)
    assert (diff.added_count, diff.rows_written) == (joined, 1050)
    assert {r.room.room_id for r in await store.rooms_of("@u3:x")} == {ROOM, "!other:x"}


async def test_a_big_first_sync_writes_with_a_small_page_cache(
    sqlite_only: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its new pages go to the WAL rather than staying in memory; the cache is back afterwards,
    also when the write fails. Smaller first syncs and resyncs keep the whole cache."""
    monkeypatch.setattr(store_module, "BIG_FIRST_SYNC", 100)
    seen: list[int] = []
    fail = [False]
    checkpoint = history.Recorder.checkpoint

    def spying(recorder: history.Recorder, txn: Transaction, room_nid: int, rows: object = None) -> int:
        seen.append(int(txn.execute("PRAGMA cache_size").fetchone()[0]))
        if fail[0]:
            raise RuntimeError("checkpoint failed")
        return checkpoint(recorder, txn, room_nid, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(history.Recorder, "checkpoint", spying)
    engine = sa.create_engine(sqlite_only)
    store = RoomStore(engine)
    await store.open()

    def cache_size() -> asyncio.Future[int]:
        return store._write(lambda txn: int(txn.execute("PRAGMA cache_size").fetchone()[0]))

    try:
        users = [f"@u{n}:x" for n in range(100)]
        await store.replace_room(snapshot(users))  # big
        await store.replace_room(snapshot(users[:99], room_id="!b:fake.test"))  # small
        await store.replace_room(snapshot([*users[1:], "@new:x"]))  # a resync: no checkpoint
        assert seen == [-dialect.BIG_WRITE_CACHE_KIB, -dialect.CACHE_KIB]
        assert await cache_size() == -dialect.CACHE_KIB
        fail[0] = True
        with pytest.raises(RuntimeError):
            await store.replace_room(snapshot(users, room_id="!c:fake.test"))
        assert seen[-1] == -dialect.BIG_WRITE_CACHE_KIB
        assert await cache_size() == -dialect.CACHE_KIB
        assert await store.room("!c:fake.test") is None
    finally:
        await store.close()
        engine.dispose()
