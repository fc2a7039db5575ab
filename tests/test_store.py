"""RoomStore on a real database: atomic replace, interned IDs, off-loop execution, migrations."""
from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import List

import pytest
import sqlalchemy as sa

from roomstate.db import RoomStore, schema
from roomstate.models import BAN, INVITE, JOIN, LEAVE, Member, MemberDiff, RoomInfo, RoomSnapshot

ROOM = "!a:fake.test"


def snapshot(room_id: str, users: List[str], name: str = "A", membership: str = JOIN) -> RoomSnapshot:
    return RoomSnapshot(
        RoomInfo(room_id, name=name), tuple(Member(u, membership, u[1:].upper(), 1) for u in users)
    )


@pytest.fixture
async def store(db_url: str):
    engine = sa.create_engine(db_url)
    s = RoomStore(engine)
    await s.open()
    yield s
    await s.close()
    engine.dispose()


def count(store: RoomStore, table: str) -> int:
    with store.engine.begin() as conn:
        return conn.execute(sa.text(f"SELECT COUNT(*) FROM roomstate_{table}")).scalar()


async def test_replace_room_reports_diff_and_replaces(store: RoomStore) -> None:
    diff = await store.replace_room(snapshot(ROOM, ["@a:x", "@b:x"]))
    assert diff == MemberDiff(ROOM, added=("@a:x", "@b:x"), removed=(), was_known=False)
    diff = await store.replace_room(snapshot(ROOM, ["@b:x", "@c:x"], name="B"))
    assert diff == MemberDiff(ROOM, added=("@c:x",), removed=("@a:x",), was_known=True)
    assert [m.user_id for m in await store.list_members(ROOM)] == ["@b:x", "@c:x"]
    assert (await store.get_room(ROOM)).name == "B"


async def test_replace_room_is_atomic(store: RoomStore) -> None:
    await store.replace_room(snapshot(ROOM, ["@a:x", "@b:x"]))
    broken = RoomSnapshot(
        RoomInfo(ROOM, name="broken"),
        tuple(Member(f"@u{i}:x", JOIN) for i in range(1200)) + (Member("@bad:x", None),),  # type: ignore[arg-type]
    )
    with pytest.raises(sa.exc.IntegrityError):
        await store.replace_room(broken)  # fails on the last row, after 1200 inserts
    assert [m.user_id for m in await store.list_members(ROOM)] == ["@a:x", "@b:x"]
    assert (await store.get_room(ROOM)).name == "A"


async def test_readers_never_see_a_half_written_member_list(store: RoomStore, db_url: str) -> None:
    """A second connection (like another process reading the database) polls during resyncs."""
    if not db_url.startswith("sqlite"):
        pytest.skip("checked on SQLite, where WAL provides the snapshot")
    small, big = [f"@s{i}:x" for i in range(10)], [f"@b{i}:x" for i in range(3000)]
    await store.replace_room(snapshot(ROOM, small))
    reader = sa.create_engine(db_url)
    seen = set()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            with reader.connect() as conn:
                seen.add(conn.execute(sa.text("SELECT COUNT(*) FROM roomstate_memberships")).scalar())
            time.sleep(0.001)

    thread = threading.Thread(target=poll)
    thread.start()
    for _ in range(5):
        await store.replace_room(snapshot(ROOM, big))
        await store.replace_room(snapshot(ROOM, small))
    stop.set()
    thread.join()
    reader.dispose()
    assert len(small) in seen and seen <= {len(small), len(big)}, seen


async def test_numeric_ids_are_positive_and_never_leak(store: RoomStore) -> None:
    await store.replace_room(snapshot(ROOM, ["@a:x"]))
    await store.claim_event("!other:x", "$e")
    with store.engine.begin() as conn:
        room_nids = [r[0] for r in conn.execute(sa.text("SELECT room_nid FROM roomstate_rooms"))]
        user_nids = [r[0] for r in conn.execute(sa.text("SELECT user_nid FROM roomstate_users"))]
    assert len(room_nids) == 2 and all(n > 0 for n in room_nids + user_nids)
    room = await store.get_room(ROOM)
    fields = {f.name for f in dataclasses.fields(RoomInfo)}
    assert not any("nid" in f for f in fields)
    assert not any("nid" in f.name for f in dataclasses.fields(Member))
    assert room.room_id == ROOM and (await store.list_members(ROOM))[0].user_id == "@a:x"


async def test_forget_keeps_ids_so_processed_events_still_match(store: RoomStore) -> None:
    await store.replace_room(snapshot(ROOM, ["@a:x"]))
    assert await store.claim_event(ROOM, "$e")
    assert await store.forget_room(ROOM) is True
    assert await store.forget_room(ROOM) is False
    assert count(store, "memberships") == 0 and count(store, "room_info") == 0
    await store.replace_room(snapshot(ROOM, ["@a:x"]))
    assert count(store, "rooms") == 1
    assert not await store.claim_event(ROOM, "$e")


async def test_apply_membership_rules(store: RoomStore) -> None:
    assert await store.apply_membership(ROOM, Member("@a:x", JOIN, None, 5)) is None  # untracked
    await store.replace_room(snapshot(ROOM, ["@a:x"]))
    assert await store.apply_membership(ROOM, Member("@b:x", INVITE, None, 5)) is True
    assert await store.apply_membership(ROOM, Member("@b:x", JOIN, "Bee", 6)) is True
    assert await store.apply_membership(ROOM, Member("@b:x", LEAVE, None, 4)) is False  # older
    assert await store.apply_membership(ROOM, Member("@a:x", BAN, None, 7)) is True
    members = {m.user_id: m.membership for m in await store.list_members(ROOM)}
    assert members == {"@a:x": BAN, "@b:x": JOIN}
    assert await store.apply_membership(ROOM, Member("@b:x", LEAVE, None, 8)) is True
    assert [m.user_id for m in await store.list_members(ROOM)] == ["@a:x"]
    assert await store.user_displayname("@b:x") == "Bee"


async def test_update_room_info_only_for_tracked_rooms(store: RoomStore) -> None:
    assert await store.update_room_info(ROOM, {"topic": "t"}) is False
    await store.replace_room(snapshot(ROOM, ["@a:x"]))
    assert await store.update_room_info(ROOM, {"topic": "t", "encrypted": True}) is True
    room = await store.get_room(ROOM)
    assert room.topic == "t" and room.encrypted is True
    with pytest.raises(ValueError):
        await store.update_room_info(ROOM, {"room_nid": 5})


async def test_large_rooms_and_shared_room_queries(store: RoomStore) -> None:
    users = [f"@u{i}:x" for i in range(2500)]
    await store.replace_room(snapshot(ROOM, users + ["@bot:x"]))
    await store.replace_room(snapshot("!b:x", users[:10] + ["@bot:x"]))
    rooms = {r.room_id: r.joined_count for r in await store.list_rooms()}
    assert rooms == {ROOM: 2501, "!b:x": 11}
    assert {r.room_id for r in await store.joined_rooms_of("@u5:x")} == {ROOM, "!b:x"}
    assert {r.room_id for r in await store.joined_rooms_of("@u2000:x")} == {ROOM}
    assert await store.joined_rooms_of("@nobody:x") == []


async def test_database_work_runs_off_the_event_loop(store: RoomStore) -> None:
    threads = set()

    def record(*_: object) -> None:
        threads.add(threading.current_thread().name)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    await store.replace_room(snapshot(ROOM, ["@a:x"]))
    await store.claim_event(ROOM, "$x")
    await store.list_rooms()
    sa.event.remove(store.engine, "before_cursor_execute", record)
    assert threads and all(name.startswith("roomstate-db") for name in threads)
    assert threading.current_thread().name not in threads


async def test_the_loop_stays_responsive_during_a_big_sync(store: RoomStore) -> None:
    big = snapshot(ROOM, [f"@u{i}:x" for i in range(20000)])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    await store.replace_room(big)
    task.cancel()
    assert ticks > 0  # the loop kept running while the worker thread wrote


async def test_schema_is_versioned_and_reopening_is_a_no_op(store: RoomStore, db_url: str) -> None:
    engine = sa.create_engine(db_url)
    assert schema.upgrade(engine) == schema.LATEST_VERSION
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT version FROM roomstate_schema_version")).scalar() == 1
        conn.execute(sa.text("UPDATE roomstate_schema_version SET version = 99"))
    with pytest.raises(RuntimeError, match="newer than this plugin"):
        schema.upgrade(engine)
    engine.dispose()


async def test_sqlite_uses_wal(store: RoomStore, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    with store.engine.begin() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
