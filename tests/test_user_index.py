"""The user → room index in batches (db/user_index.py): whatever was merged, swept or restarted,
``rooms_of`` answers exactly what the stored memberships say."""

from __future__ import annotations

import asyncio
import random

import pytest
import sqlalchemy as sa

from roomstate.db import RoomStore, checkpoints, user_index
from roomstate.db.threads import Transaction
from roomstate.models import BAN, INVITE, JOIN, LEAVE, Member, MemberChange, RoomInfo, RoomSnapshot

from .helpers import Database

USERS = [f"@u{n}:x.org" for n in range(30)]
ROOMS = [f"!r{n}:x.org" for n in range(6)]


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Merges and direct writes after a handful of pairs, so that a short test meets them all."""
    monkeypatch.setattr(user_index, "MERGE_ROWS", 7)
    monkeypatch.setattr(user_index, "DIRECT_ROWS", 5)
    monkeypatch.setattr(user_index, "SWEEP_USERS", 4)


def stored_truth(db: Database, membership: str) -> dict[str, set[str]]:
    """user → rooms with ``membership``, straight from the memberships table."""
    truth: dict[str, set[str]] = {}
    for user_id, room_id in db.rows(
        "SELECT u.user_id, r.room_id FROM roomstate_memberships m JOIN roomstate_users u ON u.user_nid = m.user_nid"
        " JOIN roomstate_rooms r ON r.room_nid = m.room_nid WHERE m.membership = :m",
        m=membership,
    ):
        truth.setdefault(user_id, set()).add(room_id)
    return truth


async def assert_answers_match(store: RoomStore, db: Database, model: dict[str, dict[str, str]]) -> None:
    for membership in (JOIN, INVITE, BAN):
        truth = stored_truth(db, membership)
        for user_id in USERS:
            expected = {room for room, held in model.items() if held.get(user_id) == membership}
            assert truth.get(user_id, set()) == expected, (user_id, membership)
            answered = {shared.room.room_id for shared in await store.rooms_of(user_id, membership)}
            assert answered == expected, (user_id, membership)


def pairs(db: Database) -> tuple[int, int]:
    return (
        db.scalar("SELECT COUNT(*) FROM roomstate_user_rooms"),
        db.scalar("SELECT COUNT(*) FROM roomstate_user_rooms_new"),
    )


async def test_random_changes_merges_and_sweeps_keep_answers_exact(store: RoomStore, db: Database) -> None:
    rng = random.Random(7)
    model: dict[str, dict[str, str]] = {}  # room → user → membership (rooms the bot tracks)
    merged_seen = new_seen = False
    for step in range(160):
        room = rng.choice(ROOMS)
        action = rng.random()
        if room not in model or action < 0.08:  # a (re)sync: a first sync, or a replacement
            size = rng.choice([2, 4, 6, 12])
            held = {u: rng.choice([JOIN, JOIN, INVITE, BAN]) for u in rng.sample(USERS, size)}
            await store.replace_room(RoomSnapshot(RoomInfo(room), tuple(Member(u, m, None) for u, m in held.items())))
            model[room] = held
        elif action < 0.14:  # the bot leaves
            await store.forget_room(room)
            del model[room]
        else:
            user = rng.choice(USERS)
            membership = rng.choice([JOIN, JOIN, LEAVE, LEAVE, INVITE, BAN])
            await store.apply_member(
                MemberChange(room, f"$e{step}", Member(user, membership, None), user),
                record_claim=True,
                queue_if_untracked=False,
            )
            if membership == LEAVE:
                model[room].pop(user, None)
            else:
                model[room][user] = membership
        if step % 10 == 9:
            await assert_answers_match(store, db, model)
            merged, new = pairs(db)
            merged_seen, new_seen = merged_seen or merged > 0, new_seen or new > 0
        if step % 40 == 39:
            assert (await store_sweep(store))[1] > 1  # in ranges of users
            await assert_answers_match(store, db, model)
            assert_no_stale_pairs(db)
    assert merged_seen and new_seen  # both tables took part


async def store_sweep(store: RoomStore) -> tuple[int, int]:
    """(pairs deleted, chunks taken)"""
    deleted, next_user = 0, 0
    chunks = 0
    while next_user is not None:
        count, next_user = await store.sweep_user_index_chunk(next_user)
        deleted += count
        chunks += 1
    return deleted, chunks


def assert_no_stale_pairs(db: Database) -> None:
    index = {
        tuple(row)
        for row in db.rows(
            "SELECT user_nid, room_nid FROM roomstate_user_rooms UNION SELECT user_nid, room_nid FROM"
            " roomstate_user_rooms_new"
        )
    }
    held = {tuple(row) for row in db.rows("SELECT user_nid, room_nid FROM roomstate_memberships")}
    assert index == held


async def test_ended_memberships_leave_pairs_until_swept(store: RoomStore, db: Database) -> None:
    await store.replace_room(RoomSnapshot(RoomInfo(ROOMS[0]), tuple(Member(u, JOIN, None) for u in USERS[:3])))
    await store.replace_room(RoomSnapshot(RoomInfo(ROOMS[1]), tuple(Member(u, JOIN, None) for u in USERS[:2])))
    leave = MemberChange(ROOMS[0], "$leave", Member(USERS[0], LEAVE, None), USERS[0])
    await store.apply_member(leave, record_claim=True, queue_if_untracked=False)
    await store.forget_room(ROOMS[1])
    # the index still holds (u0, r0) and both pairs of r1; the answers do not show them
    assert sum(pairs(db)) == 5
    assert await store.rooms_of(USERS[0]) == []
    assert [s.room.room_id for s in await store.rooms_of(USERS[1])] == [ROOMS[0]]
    assert (await store_sweep(store))[0] == 3
    assert_no_stale_pairs(db)
    assert [s.room.room_id for s in await store.rooms_of(USERS[1])] == [ROOMS[0]]


async def test_a_restart_counts_the_new_pairs_and_merges_on_time(db_url: str, db: Database) -> None:
    engine = sa.create_engine(db_url)
    store = RoomStore(engine)
    await store.open()
    await store.replace_room(RoomSnapshot(RoomInfo(ROOMS[0]), tuple(Member(u, JOIN, None) for u in USERS[:4])))
    await store.close()
    assert pairs(db) == (0, 4)  # below DIRECT_ROWS: into the new table

    store = RoomStore(engine)
    await store.open()
    try:
        assert store.user_index.new_pairs == 4
        for n, user in enumerate(USERS[4:7]):  # 4 + 3 = MERGE_ROWS: the third one merges
            join = MemberChange(ROOMS[0], f"$j{n}", Member(user, JOIN, None), user)
            await store.apply_member(join, record_claim=True, queue_if_untracked=False)
        assert pairs(db) == (7, 0)
        # a big first sync writes its pairs straight into the merged table
        await store.replace_room(RoomSnapshot(RoomInfo(ROOMS[1]), tuple(Member(u, JOIN, None) for u in USERS[:6])))
        assert pairs(db) == (13, 0)
        assert sorted(s.room.room_id for s in await store.rooms_of(USERS[5])) == ROOMS[:2]
    finally:
        await store.close()
        engine.dispose()


async def test_a_resync_that_adds_many_members_indexes_them(store: RoomStore, db: Database) -> None:
    """More new members than the one-by-one path takes go through the staging table."""
    crowd = [f"@c{n}:x.org" for n in range(40)]
    await store.replace_room(RoomSnapshot(RoomInfo(ROOMS[0]), (Member(USERS[0], JOIN, None),)))
    await store.replace_room(RoomSnapshot(RoomInfo(ROOMS[0]), tuple(Member(u, JOIN, None) for u in [USERS[0], *crowd])))
    for user in crowd:
        assert [s.room.room_id for s in await store.rooms_of(user)] == [ROOMS[0]]
    assert_no_stale_pairs(db)


async def test_a_merge_rolled_back_with_its_job_is_recounted_by_the_sweep(store: RoomStore, db: Database) -> None:
    """The pairs come back with the rollback; the count, which believed them merged, is right
    again after the next sweep, so the new table stays small."""
    await store.replace_room(RoomSnapshot(RoomInfo(ROOMS[0]), (Member(USERS[0], JOIN, None),)))

    def merges_then_fails(txn: Transaction) -> None:
        store.user_index.merge(txn)
        raise RuntimeError("a later statement of the job failed")

    joins = [
        store.apply_member(
            MemberChange(ROOMS[0], f"$j{n}", Member(user, JOIN, None), user),
            record_claim=True,
            queue_if_untracked=False,
        )
        for n, user in enumerate(USERS[1:6])
    ]
    failed = store._write(merges_then_fails)  # in the same group commit, in its own savepoint
    await asyncio.gather(*joins)
    with pytest.raises(RuntimeError):
        await failed
    assert pairs(db) == (0, 6) and store.user_index.new_pairs == 0  # believed merged
    await store_sweep(store)
    assert store.user_index.new_pairs == 6
    join = MemberChange(ROOMS[0], "$j6", Member(USERS[6], JOIN, None), USERS[6])
    await store.apply_member(join, record_claim=True, queue_if_untracked=False)
    assert pairs(db) == (7, 0)  # merged on time


async def test_a_resync_that_changes_many_stored_members_adds_no_pairs(
    store: RoomStore, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(user_index, "MERGE_ROWS", 1_000)  # a merge would hide pairs added again
    crowd = [f"@c{n}:x.org" for n in range(40)]
    await store.replace_room(RoomSnapshot(RoomInfo(ROOMS[0]), tuple(Member(u, JOIN, None) for u in crowd)))
    before = pairs(db)
    # the same 40 members, each renamed (more than the one-by-one path takes): no new row, no new pair
    await store.replace_room(RoomSnapshot(RoomInfo(ROOMS[0]), tuple(Member(u, JOIN, "renamed") for u in crowd)))
    assert pairs(db) == before


class _FakeTxn:
    """Answers stored_blocks' one query with ``row``."""

    def __init__(self, *rows: tuple[int, int | None, str | None, str | None]) -> None:
        self.rows = list(rows)

    def execute(self, sql: str, params: tuple[object, ...]) -> _FakeTxn:
        return self

    def fetchone(self) -> tuple[int, int | None, str | None, str | None]:
        return self.rows.pop(0) if self.rows else (0, None, None, None)


@pytest.mark.parametrize(
    "row",
    [
        (3, 5, "000000050000000200000003", "111"),  # out of order
        (3, 5, "000000020000000300000004", "111"),  # not ending at the MAX the query saw
        (3, 3, "0000000200000003", "11"),  # fewer than counted
    ],
)
def test_stored_blocks_refuses_rows_read_back_wrongly(row: tuple[int, int, str, str]) -> None:
    """A checkpoint built from rows out of order would be silently wrong: fail loudly instead."""
    with pytest.raises(RuntimeError):
        list(checkpoints.stored_blocks(_FakeTxn(row), 1))  # type: ignore[arg-type]


def test_stored_blocks_reads_in_chunks_after_the_last_nid() -> None:
    txn = _FakeTxn((2, 3, "0000000200000003", "12"), (1, 9, "00000009", "3"))
    assert b"".join(checkpoints.stored_blocks(txn, 1)) == b"".join(  # type: ignore[arg-type]
        checkpoints._chunks(
            [(2, 1, checkpoints.is_cut(2)), (3, 2, checkpoints.is_cut(3)), (9, 3, checkpoints.is_cut(9))]
        )
    )
