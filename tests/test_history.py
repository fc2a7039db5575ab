"""Membership history: transitions in delivery order, checkpoints that reuse blocks, the past
rebuilt at any time, retention, and the commands that read it."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import random
import threading
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from roomstate.db import RoomStore, checkpoints, history
from roomstate.models import (
    BAN,
    INVITE,
    JOIN,
    LEAVE,
    Applied,
    Member,
    MemberChange,
    MembersAt,
    RoomInfo,
    RoomSnapshot,
)

from .helpers import ADMIN, ALICE, BOB, CAROL, DAVE, ROOM, Database, Harness, fresh_database

START = 1_780_000_000  # 2026-05-28, the fake clock's start


class FakeTime:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def store(db_url: str) -> AsyncIterator[tuple[RoomStore, FakeTime]]:
    engine = sa.create_engine(db_url)
    s = RoomStore(engine)
    clock = FakeTime()
    s.recorder = history.Recorder(now=clock)
    await s.open()
    yield s, clock
    await s.close()
    engine.dispose()


def event(
    user: str,
    membership: str,
    number: int,
    name: str | None = None,
    sender: str | None = None,
    reason: str | None = None,
) -> MemberChange:
    return MemberChange(ROOM, f"$h{number}", Member(user, membership, name), sender or user, reason, 1_000)


async def test_transitions_are_recorded_with_who_and_why(store: tuple[RoomStore, FakeTime]) -> None:
    s, clock = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM, name="Design"), (Member(ALICE, JOIN, "Alice"),)))
    clock.now += 60
    await s.apply_member(event(BOB, JOIN, 1, "Bob"), record_claim=True, queue_if_untracked=True)
    await s.apply_member(event(BOB, JOIN, 2, "Bobby"), record_claim=True, queue_if_untracked=True)  # rename
    await s.apply_member(
        event(BOB, JOIN, 3, "Bobby"), record_claim=True, queue_if_untracked=True
    )  # no change: nothing recorded
    await s.apply_member(
        event(BOB, LEAVE, 4, sender=ALICE, reason="spam"), record_claim=True, queue_if_untracked=True
    )  # kick
    await s.apply_member(
        event(BOB, LEAVE, 4, sender=ALICE, reason="spam"), record_claim=True, queue_if_untracked=True
    )  # duplicate
    entries = await s.user_history(BOB, 10)
    assert [(e.previous, e.membership, e.displayname, e.sender, e.reason) for e in entries] == [
        (JOIN, LEAVE, None, ALICE, "spam"),
        (JOIN, JOIN, "Bobby", None, None),
        (LEAVE, JOIN, "Bob", None, None),
    ]
    assert all(e.observed_at == START + 60 and e.event_id for e in entries)
    assert entries[0].origin_at == 1  # the sender's clock, as an offset from ours


async def test_a_resync_records_exactly_the_differences_it_found(store: tuple[RoomStore, FakeTime]) -> None:
    s, _ = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN), Member(BOB, JOIN))))
    assert [await s.user_history(user, 5) for user in (ALICE, BOB)] == [[], []]  # a checkpoint, not rows
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN), Member(CAROL, INVITE))))
    found = {
        (e.user_id, e.previous, e.membership, e.event_id)
        for u in (ALICE, BOB, CAROL)
        for e in await s.user_history(u, 5)
    }
    assert found == {(BOB, JOIN, LEAVE, None), (CAROL, LEAVE, INVITE, None)}


async def test_a_resync_of_a_room_everyone_had_left_records_each_arrival(store: tuple[RoomStore, FakeTime]) -> None:
    s, clock = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    await s.apply_member(
        event(ALICE, LEAVE, 1), record_claim=True, queue_if_untracked=True
    )  # no member stored, the room still tracked
    clock.now += 60
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(BOB, JOIN, "Bob"), Member(CAROL, INVITE))))
    found = [(e.previous, e.membership, e.displayname, e.event_id) for e in await s.user_history(BOB, 5)]
    assert found == [(LEAVE, JOIN, "Bob", None)]
    assert [e.membership for e in await s.user_history(CAROL, 5)] == [INVITE]
    at = await s.members_at(ROOM, clock.now, 5)
    assert at is not None and (at.joined_count, at.invited_count) == (1, 1)


async def test_the_clock_resumes_after_the_user_index_watermark(store: tuple[RoomStore, FakeTime]) -> None:
    s, clock = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    await s.apply_member(event(BOB, JOIN, 1), record_claim=True, queue_if_untracked=True)
    await s.index_history()
    await s.forget_room(ROOM)  # the bot left
    clock.now += 3600
    # rows and checkpoints go, the index's watermark stays
    await s.delete_history_before(clock.now, keep_claims_since=None)
    clock.now -= 7200  # the wall clock went back across a restart
    s.recorder = history.Recorder(now=clock)
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    await s.apply_member(event(CAROL, JOIN, 2), record_claim=True, queue_if_untracked=True)
    await s.index_history()
    assert [e.membership for e in await s.user_history(CAROL, 5)] == [JOIN]  # found through the index


async def test_members_at_any_time(store: tuple[RoomStore, FakeTime]) -> None:
    s, clock = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    moments = {}
    for number, (user, membership) in enumerate([(BOB, JOIN), (CAROL, JOIN), (BOB, LEAVE), (DAVE, INVITE)]):
        clock.now += 3600
        await s.apply_member(event(user, membership, number), record_claim=True, queue_if_untracked=True)
        moments[number] = clock.now
    first = await s.members_at(ROOM, moments[1], 10)
    assert first is not None and (first.joined_count, first.invited_count) == (3, 0)
    assert (first.joined_since, first.left_since) == ((), (BOB,))
    last = await s.members_at(ROOM, moments[3], 10)
    assert last is not None and (last.joined_count, last.invited_count) == (2, 1)
    before = await s.members_at(ROOM, START - 10, 10)
    assert before is not None and not before.tracked


def checkpoint_every(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Make rooms get a checkpoint after every ``rows`` history rows, however big they are."""
    monkeypatch.setattr(history, "CHECKPOINT_MIN_ROWS", rows)
    monkeypatch.setattr(history, "CHECKPOINT_ROWS_PER_MEMBER", 0)


def count(db: Database, table: str) -> int:
    return int(db.scalar(f"SELECT COUNT(*) FROM roomstate_{table}"))


async def test_checkpoints_reuse_unchanged_blocks(
    store: tuple[RoomStore, FakeTime], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, clock = store
    checkpoint_every(monkeypatch, 1)
    members = tuple(Member(f"@u{i}:x", JOIN) for i in range(5_000))
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), members))
    blocks = count(db, "history_blocks")
    assert 3 <= blocks <= 40 and count(db, "history_checkpoints") == 1
    await s.apply_member(event("@u7:x", LEAVE, 1), record_claim=True, queue_if_untracked=True)
    assert count(db, "history_checkpoints") == 2
    assert count(db, "history_blocks") == blocks + 1  # only the block that changed is new
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), members[:7] + members[8:]))  # a resync: no change
    assert count(db, "history_checkpoints") == 2 and count(db, "history") == 1
    clock.now += 60
    at = await s.members_at(ROOM, clock.now, 5)
    assert at is not None and at.joined_count == 4_999


async def test_a_busy_room_is_checkpointed_in_proportion_to_its_size(
    store: tuple[RoomStore, FakeTime], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, _ = store
    monkeypatch.setattr(history, "CHECKPOINT_MIN_ROWS", 10)
    monkeypatch.setattr(history, "CHECKPOINT_ROWS_PER_MEMBER", 0.5)
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), tuple(Member(f"@u{i}:x", JOIN) for i in range(100))))
    for number in range(49):  # half of 100 members: the 50th row makes a checkpoint
        await s.apply_member(event(f"@n{number}:x", JOIN, number), record_claim=True, queue_if_untracked=True)
    assert count(db, "history_checkpoints") == 1
    await s.apply_member(event("@n49:x", JOIN, 49), record_claim=True, queue_if_untracked=True)
    assert count(db, "history_checkpoints") == 2
    # after a restart the count since the last checkpoint is read back, not restarted at 0
    s.recorder = history.Recorder(now=s.recorder.clock.now)
    for number in range(50, 124):  # 150 members now: 75 rows
        await s.apply_member(event(f"@n{number}:x", JOIN, number), record_claim=True, queue_if_untracked=True)
    assert count(db, "history_checkpoints") == 2
    await s.apply_member(event("@n124:x", JOIN, 124), record_claim=True, queue_if_untracked=True)
    assert count(db, "history_checkpoints") == 3


async def test_retention_compacts_the_past_into_a_base(
    store: tuple[RoomStore, FakeTime], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, clock = store
    checkpoint_every(monkeypatch, 10)
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    moments = []
    for number in range(30):
        clock.now += 86400
        leaving = number % 3 == 0 and number > 0  # the one who joined last
        user = f"@u{number - 1 if leaving else number}:x"
        await s.apply_member(
            event(user, LEAVE if leaving else JOIN, number), record_claim=True, queue_if_untracked=True
        )
        moments.append(clock.now)
    cutoff = START + 15 * 86400 + 1  # between two rows, none of them a checkpoint
    expected = [await s.members_at(ROOM, moment, 0) for moment in moments[14:]]
    await s.delete_history_before(cutoff, keep_claims_since=None)
    assert count(db, "history") == 30 - 15  # the rows after the cutoff
    before_base = await s.members_at(ROOM, moments[13], 0)
    assert before_base == MembersAt(ROOM, int(moments[13]), 0, 0, tracked=False, tracked_since=int(moments[14]))
    assert [await s.members_at(ROOM, moment, 0) for moment in moments[14:]] == expected
    assert len(await s.user_history("@u3:x", 5)) == 0 and len(await s.user_history("@u16:x", 5)) == 1
    await s.set_history(False)
    await s.clear_history(keep_claims_since=None)
    assert count(db, "history_blocks") == count(db, "history_checkpoints") == 0


async def test_retention_after_renames_only_keeps_the_base(
    store: tuple[RoomStore, FakeTime], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, clock = store
    checkpoint_every(monkeypatch, 3)
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN, "Alice"), Member(BOB, JOIN, "Bob"))))
    for number in range(7):  # renames change no membership: every checkpoint has the same blocks
        clock.now += 3600
        await s.apply_member(event(BOB, JOIN, number, f"Bob {number}"), record_claim=True, queue_if_untracked=True)
    await s.delete_history_before(clock.now - 1800, keep_claims_since=None)
    after = await s.members_at(ROOM, clock.now, 0)
    assert after is not None and after.tracked and after.joined_count == 2
    referenced = set()
    for (blob,) in db.rows("SELECT blocks FROM roomstate_history_checkpoints"):
        referenced.update(checkpoints.block_list(blob))
    assert {int(nid) for (nid,) in db.rows("SELECT block_nid FROM roomstate_history_blocks")} == referenced
    clock.now += 3600
    await s.apply_member(
        event(CAROL, JOIN, 99), record_claim=True, queue_if_untracked=True
    )  # retention keeps working for the room
    clock.now += 3600
    await s.delete_history_before(clock.now - 1, keep_claims_since=None)
    assert count(db, "history") == 0 and count(db, "history_checkpoints") == 1


async def test_history_off_and_on_again_leaves_no_wrong_past(store: tuple[RoomStore, FakeTime]) -> None:
    s, clock = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    clock.now += 60
    await s.set_history(False)  # the old history is not deleted yet when it comes back on
    for number, user in enumerate((BOB, CAROL)):
        await s.apply_member(event(user, JOIN, number), record_claim=True, queue_if_untracked=True)
    clock.now += 60
    await s.set_history(True)
    await s.apply_member(event(DAVE, JOIN, 9), record_claim=True, queue_if_untracked=True)
    clock.now += 60
    now = await s.members_at(ROOM, clock.now, 10)
    assert now is not None and now.joined_count == 4  # not 2: the joins while off are not lost
    off = await s.members_at(ROOM, clock.now - 90, 10)
    assert off is not None and not off.tracked  # while off: no record, rather than a wrong one
    was = await s.members_at(ROOM, clock.now - 150, 10)
    assert was is not None and was.joined_count == 1


async def test_retention_in_the_same_commit_as_a_checkpoint_keeps_the_past_right(
    store: tuple[RoomStore, FakeTime], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, clock = store
    checkpoint_every(monkeypatch, 4)
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    room_nid = db.scalar("SELECT room_nid FROM roomstate_rooms")
    for number, (user, day) in enumerate([(BOB, 7), (CAROL, 8), (DAVE, 8.5)]):
        clock.now = START + day * 86400
        await s.apply_member(event(user, JOIN, number), record_claim=True, queue_if_untracked=True)
    clock.now = START + 10 * 86400
    gate = threading.Event()
    held = s._write(lambda txn: gate.wait(10))  # the next two jobs commit together
    # the 4th row makes a checkpoint at once, while the row itself waits for the commit
    leave = s.apply_member(event(BOB, LEAVE, 4), record_claim=True, queue_if_untracked=True)
    compact = functools.partial(  # retention's step for the room, whose base it rebuilds in the same commit
        checkpoints.compact, room_nid=room_nid, cutoff=history.seq_at(START + 9 * 86400), limit=100
    )
    retention = s._write(compact)
    gate.set()
    await asyncio.gather(held, leave, retention)
    for day, joined in ((8.7, 4), (9.5, 4), (10, 3)):
        at = await s.members_at(ROOM, START + day * 86400, 10)
        assert at is not None and at.tracked and at.joined_count == joined, day


async def test_history_turned_on_after_running_without_it_has_no_wrong_past(
    store: tuple[RoomStore, FakeTime], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, clock = store
    s = first
    checkpoint_every(monkeypatch, 3)
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    clock.now += 86400
    await s.apply_member(event(BOB, JOIN, 1), record_claim=True, queue_if_untracked=True)
    clock.now += 43200
    await first.close()  # restarted with history off, on day 1.5
    engine = sa.create_engine(db_url)
    s = RoomStore(engine)
    s.history_enabled, s.recorder = False, history.Recorder(now=clock)
    await s.open()
    await s.flush()  # the start's own job: history is marked off now
    clock.now += 43200
    await s.apply_member(event(CAROL, JOIN, 2), record_claim=True, queue_if_untracked=True)  # not recorded
    clock.now += 86400
    await s.set_history(True)
    for number, (user, membership) in enumerate([(DAVE, JOIN), ("@e:x", JOIN), ("@e:x", LEAVE)], start=3):
        clock.now += 86400
        await s.apply_member(event(user, membership, number), record_claim=True, queue_if_untracked=True)
    before = await s.members_at(ROOM, START + 1.25 * 86400, 10)
    assert before is not None and before.joined_count == 2  # Alice and Bob, not Carol
    gap = await s.members_at(ROOM, START + 2.5 * 86400, 10)
    assert gap is not None and not gap.tracked  # while off: unknown, not guessed
    after = await s.members_at(ROOM, clock.now, 10)
    assert after is not None and after.tracked and after.joined_count == 4
    await s.close()
    engine.dispose()


async def test_a_refused_history_row_leaves_its_room_untracked_not_wrong(
    store: tuple[RoomStore, FakeTime], db: Database
) -> None:
    s, _ = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    room_nid = db.scalar("SELECT room_nid FROM roomstate_rooms")
    next_seq = db.scalar("SELECT MAX(seq) FROM roomstate_history_checkpoints") + 1  # the clock stands still
    db.execute(  # something already holds the seq of Bob's row
        "INSERT INTO roomstate_history (room_nid, seq, user_nid, membership, previous) VALUES (:r, :s, 1, 1, 1)",
        r=room_nid,
        s=next_seq,
    )
    gate = threading.Event()
    held = s._write(lambda txn: gate.wait(10))
    joins = [
        s.apply_member(event(user, JOIN, number), record_claim=True, queue_if_untracked=True)
        for number, user in enumerate((BOB, CAROL))
    ]
    gate.set()
    assert await asyncio.gather(held, *joins) == [True, Applied.APPLIED, Applied.APPLIED]
    assert set(db.joined(ROOM)) == {ALICE, BOB, CAROL}  # the membership changes stand
    now = await s.members_at(ROOM, FakeTime().now + 1, 10)
    assert now is not None and not now.tracked  # Bob's row is missing: unknown, rather than 2 members


async def test_leaving_a_room_ends_its_history_and_retention_forgets_it(
    store: tuple[RoomStore, FakeTime], db: Database
) -> None:
    s, clock = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN), Member(BOB, JOIN))))
    clock.now += 60
    await s.forget_room(ROOM)
    clock.now += 60
    gone = await s.members_at(ROOM, clock.now, 0)
    assert gone is not None and not gone.tracked
    was = await s.members_at(ROOM, clock.now - 61, 0)
    assert was is not None and was.joined_count == 2
    await s.delete_history_before(clock.now, keep_claims_since=None)
    assert count(db, "history_checkpoints") == count(db, "history_blocks") == 0


async def test_a_users_history_spans_the_user_index_and_the_rows_after_it(
    store: tuple[RoomStore, FakeTime], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, clock = store
    monkeypatch.setattr(history, "INDEX_BATCH_ROWS", 5)
    rooms = [f"!r{n}:x" for n in range(4)]
    for room in rooms:
        await s.replace_room(RoomSnapshot(RoomInfo(room), (Member(ALICE, JOIN),)))
    expected = []  # (room, membership) of BOB, oldest first
    rng = random.Random(3)
    for number in range(60):
        clock.now += rng.choice([60, 3600, 86400])  # rows over weeks: many days of the index
        room, user = rng.choice(rooms), rng.choice([BOB, CAROL, DAVE])
        membership = rng.choice([JOIN, LEAVE, INVITE])
        change = MemberChange(room, f"$u{number}", Member(user, membership, None), user, None, 1_000)
        if await s.apply_member(change, record_claim=True, queue_if_untracked=True) is Applied.APPLIED and user == BOB:
            expected.append((room, membership))
    assert 0 < count(db, "history_by_user") < count(db, "history")  # part indexed, part not yet
    newest_first = expected[::-1]
    found = await s.user_history(BOB, 100)
    assert [(e.room_id, e.membership) for e in found] == newest_first
    assert [(e.room_id, e.membership) for e in await s.user_history(BOB, 4)] == newest_first[:4]
    only = frozenset(rooms[:2])
    limited = await s.user_history(BOB, 5, only)
    assert [(e.room_id, e.membership) for e in limited] == [x for x in newest_first if x[0] in only][:5]
    assert await s.index_history() > 0  # everything indexed now: the same answer from the index alone
    assert [(e.room_id, e.membership) for e in await s.user_history(BOB, 100)] == newest_first


async def test_retention_deletes_the_user_index_of_old_days(store: tuple[RoomStore, FakeTime], db: Database) -> None:
    s, clock = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    for number in range(10):
        clock.now += 86400
        await s.apply_member(
            event(BOB, LEAVE if number % 2 else JOIN, number), record_claim=True, queue_if_untracked=True
        )
    await s.index_history()
    assert count(db, "history_by_user") == 10
    await s.delete_history_before(START + 5.5 * 86400, keep_claims_since=None)
    assert [e.observed_at for e in await s.user_history(BOB, 100)] == [START + n * 86400 for n in range(10, 5, -1)]
    assert count(db, "history_by_user") <= 6  # the days before the cutoff's day are gone


# ---- property: members at a random time equals a model ------------------------------------------

USERS = [f"@p{i}:x" for i in range(6)]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.sampled_from(USERS), st.sampled_from([JOIN, JOIN, LEAVE, INVITE, "ban"])),
        st.tuples(st.just("resync"), st.sets(st.sampled_from(USERS))),
        st.tuples(st.just("wait"), st.integers(1, 5000)),
        st.tuples(st.just("retention"), st.integers(0, 6000)),
    ),
    max_size=40,
)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps, every=st.integers(1, 20))
@example(  # retention between two rows, long after the last checkpoint
    plan=[("wait", 100), ("event", USERS[1], JOIN), ("wait", 100), ("event", USERS[2], JOIN), ("retention", 50)],
    every=20,
)
@example(  # retention right after a resync found differences
    plan=[("event", USERS[1], INVITE), ("wait", 10), ("resync", {USERS[2]}), ("wait", 10), ("retention", 5)],
    every=2,
)
@example(  # moments just before a checkpoint: rebuilt backward from it, by each row's previous membership
    plan=[
        ("wait", 100),
        ("event", USERS[1], JOIN),
        ("wait", 1),
        ("event", USERS[2], INVITE),
        ("wait", 1),
        ("event", USERS[1], "ban"),
        ("wait", 1),
        ("event", USERS[3], JOIN),
        ("wait", 1),
        ("event", USERS[2], JOIN),
    ],
    every=2,
)
def test_members_at_random_times_equal_a_model(db_url: str, plan: list[tuple], every: int) -> None:
    """Random events, resyncs and retention runs, with a checkpoint every ``every`` rows: the
    membership rebuilt at every moment of the run equals the model's."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        checkpoint_every(monkeypatch, every)
        asyncio.run(_run_plan(db_url, plan))


async def _run_plan(db_url: str, plan: list[tuple]) -> None:
    fresh_database(db_url)
    engine = sa.create_engine(db_url)
    s = RoomStore(engine)
    clock = FakeTime()
    s.recorder = history.Recorder(now=clock)
    await s.open()
    try:
        state = {USERS[0]: JOIN}
        await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(USERS[0], JOIN),)))
        timeline = [(clock.now, dict(state))]
        forgotten_before = 0.0
        for number, step in enumerate(plan):
            if step[0] == "event":
                _, user, membership = step
                await s.apply_member(event(user, membership, number), record_claim=True, queue_if_untracked=True)
                if membership == LEAVE:
                    state.pop(user, None)
                else:
                    state[user] = membership
            elif step[0] == "resync":
                state = {user: JOIN for user in step[1]}
                await s.replace_room(RoomSnapshot(RoomInfo(ROOM), tuple(Member(u, JOIN) for u in sorted(state))))
            elif step[0] == "wait":
                clock.now += step[1]
            else:
                cutoff = clock.now - step[1]
                forgotten_before = max(forgotten_before, cutoff)
                await s.delete_history_before(cutoff, keep_claims_since=None)
            timeline.append((clock.now, dict(state)))
        joined_now = {user for user, membership in state.items() if membership == JOIN}
        for at, _ in timeline:
            expected = [state for moment, state in timeline if moment <= at][-1]  # the last within that second
            found = await s.members_at(ROOM, at, 100)
            assert found is not None
            if at < forgotten_before and not found.tracked:
                continue  # before the retention: forgetting is allowed, a wrong answer is not
            joined_then = {user for user, membership in expected.items() if membership == JOIN}
            assert found.tracked
            assert (found.joined_count, found.invited_count) == (
                len(joined_then),
                sum(m == INVITE for m in expected.values()),
            )
            assert set(found.joined_since) == joined_now - joined_then
            assert set(found.left_since) == joined_then - joined_now
    finally:
        await s.close()
        engine.dispose()


# ---- the commands, through the plugin -------------------------------------------------------------


async def test_history_commands(harness: Harness) -> None:
    hs = harness.hs
    await harness.start()
    await harness.setup_room(members=(ADMIN, BOB))
    await harness.deliver(hs.member(ROOM, CAROL, "join", displayname="Carol"))
    await harness.deliver(hs.member(ROOM, CAROL, "join", displayname="Caz"))
    await harness.deliver(hs.member(ROOM, CAROL, "leave", sender=ALICE))
    kick = hs.rooms[ROOM].state[("m.room.member", CAROL)]
    kick["content"]["reason"] = "off topic"
    await harness.deliver(hs.member(ROOM, DAVE, "ban", sender=ALICE))

    [answer] = await harness.command(ROOM, ADMIN, f"!history {CAROL}")
    lines = answer.splitlines()
    assert lines[0] == f"Latest 3 changes of {CAROL}, newest first:"
    assert lines[1].startswith(f"• kicked from “Design” by {ALICE}")
    assert lines[2].startswith("• renamed to “Caz” in “Design”")
    assert lines[3].startswith("• joined “Design”")
    [one] = await harness.command(ROOM, ADMIN, f"!history {CAROL} 1")
    assert len(one.splitlines()) == 2

    [joins] = await harness.command(ROOM, ADMIN, "!joins 1h")
    assert joins.splitlines()[0] == "In “Design” in the last 1 h: 1 joined, 1 left (1 kicked), 1 banned."
    assert joins.splitlines()[3] == f"• banned: {DAVE}"
    [waves] = await harness.command(ROOM, ADMIN, "!joins all 7d")
    assert waves.splitlines()[1].startswith("• “Design”: +1 -1")
    assert (await harness.command(ROOM, BOB, "!joins all"))[0].startswith("Sorry, only the bot's admins")
    [before] = await harness.command(ROOM, ADMIN, "!members at 1min ago")
    assert before.startswith("I have no record of “Design” at ")  # the bot joined just now
    [members] = await harness.command(ROOM, ADMIN, "!members at now")
    assert members.startswith("“Design” at "), members
    for bad in ("!members", "!history"):
        [usage] = await harness.command(ROOM, ADMIN, bad)
        assert usage.startswith("Usage:"), (bad, usage)
    for bad, says in (
        ("!members at yesterday-ish", "“yesterday-ish” is not a time like"),
        ("!joins forever", "“forever” is not a period like"),
    ):
        [error] = await harness.command(ROOM, ADMIN, bad)
        assert error.startswith(says) and "Usage:" in error, (bad, error)


def test_event_ids_are_stored_compactly_and_read_back_exactly() -> None:
    v4 = "$" + base64.urlsafe_b64encode(hashlib.sha256(b"x").digest()).decode().rstrip("=")
    assert history.pack_event_id(v4) == (hashlib.sha256(b"x").digest(), None)
    v3 = v4.replace("-", "+").replace("_", "/")  # standard base64 (room v3)
    non_canonical = v4[:-1] + chr(ord(v4[-1]) + 1)  # unused low bits set: no exact round trip
    for other in ("$abc:example.org", v3 if v3 != v4 else "$" + "+" * 43, non_canonical, "$" + "!" * 43):
        assert history.pack_event_id(other) == (None, other)
    for event_id in (v4, "$abc:example.org"):
        assert history.unpack_event_id(*history.pack_event_id(event_id)) == event_id


async def test_history_keeps_v4_event_ids(store: tuple[RoomStore, FakeTime], db: Database) -> None:
    s, _ = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    v4 = "$" + base64.urlsafe_b64encode(hashlib.sha256(b"join").digest()).decode().rstrip("=")
    await s.apply_member(
        MemberChange(ROOM, v4, Member(BOB, JOIN, "Bob"), BOB, None, 1_000), record_claim=True, queue_if_untracked=True
    )
    [entry] = await s.user_history(BOB, 5)
    assert entry.event_id == v4
    assert db.rows("SELECT LENGTH(event_hash), event_id FROM roomstate_history") == [(32, None)]


async def test_an_event_submitted_just_before_history_comes_on_keeps_its_event_id(
    store: tuple[RoomStore, FakeTime],
) -> None:
    """The event ID is packed when the event is submitted if history is on, else in the job if
    history came on meanwhile (the writer has a job already, so this one is handed over when the
    loop's turn ends)."""
    s, _ = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), (Member(ALICE, JOIN),)))
    s.history_enabled = False
    busy = s.flush()  # (to the idle writer at once)
    applied = s.apply_member(
        MemberChange(ROOM, "$late:x", Member(BOB, JOIN), BOB, None, 1_000), record_claim=True, queue_if_untracked=True
    )
    s.history_enabled = True  # (in the same turn: before the job runs)
    await busy
    assert await applied is Applied.APPLIED
    [entry] = await s.user_history(BOB, 5)
    assert entry.event_id == "$late:x"


async def test_blocks_are_cut_alike_in_sql_and_python(store: tuple[RoomStore, FakeTime], db: Database) -> None:
    s, _ = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), tuple(Member(f"@c{i}:x", JOIN) for i in range(3_000))))
    rows = db.rows(f"SELECT m.user_nid, {checkpoints.CUT_SQL} FROM roomstate_memberships m")
    assert len(rows) == 3_000 and sum(bool(cut) for _, cut in rows) > 1
    assert all(bool(cut) == checkpoints.is_cut(int(nid)) for nid, cut in rows)


@pytest.mark.parametrize("read_at_a_time", [checkpoints.STORED_CHUNK, 700, 1])
async def test_a_first_syncs_checkpoint_holds_exactly_the_rows_it_wrote(
    store: tuple[RoomStore, FakeTime], db: Database, monkeypatch: pytest.MonkeyPatch, read_at_a_time: int
) -> None:
    """PostgreSQL takes a first sync's checkpoint from the rows its insert returned, SQLite reads
    the room back (``read_at_a_time`` members per statement, blocks spanning two reads): either
    way the blocks must be those of the stored rows."""
    monkeypatch.setattr(checkpoints, "STORED_CHUNK", read_at_a_time)
    s, _ = store
    members = tuple(
        Member(f"@f{i}:x", INVITE if i % 7 == 0 else BAN if i % 11 == 0 else JOIN, f"F {i}") for i in range(3_000)
    )
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM), members))
    stored = [
        (int(nid), int(code), bool(cut))
        for nid, code, cut in db.rows(f"SELECT {checkpoints.ROW_SQL} FROM roomstate_memberships m ORDER BY m.user_nid")
    ]
    assert len(stored) == 3_000 and {code for _, code, _ in stored} == {1, 2, 3}
    blob = db.scalar("SELECT blocks FROM roomstate_history_checkpoints")
    blocks = dict(db.rows("SELECT block_nid, members FROM roomstate_history_blocks"))
    assert [bytes(blocks[nid]) for nid in checkpoints.block_list(bytes(blob))] == list(checkpoints._chunks(stored))


async def test_member_counts_step_per_bucket_and_end_at_todays_count_not_in_the_future(
    store: tuple[RoomStore, FakeTime],
) -> None:
    s, clock = store
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM, name="Design"), (Member(ALICE, JOIN), Member(BOB, JOIN))))
    clock.now += 600
    for number, user in enumerate((CAROL, DAVE), 1):
        await s.apply_member(event(user, JOIN, number), record_claim=True, queue_if_untracked=True)
    clock.now += 2 * 3600
    await s.apply_member(event(BOB, LEAVE, 3), record_claim=True, queue_if_untracked=True)
    until = clock.now + 60  # "now", a minute into the bucket of the leave
    points = await s.member_counts(ROOM, START - 86_400, until, 3600)
    assert [count for _, count in points] == [2, 4, 3]
    assert abs(points[0][0] - START) <= 1  # from when tracking began, not the period's start
    first_whole_hour = -(-START // 3600) * 3600  # START is 20 minutes into an hour: the joins are in that part
    assert abs(points[1][0] - first_whole_hour) <= 1
    assert points[-1][0] <= until  # the current bucket ends now: no point in the future
    assert points == sorted(points)


async def test_charts_from_the_hourly_rollup_equal_counting_every_row(
    store: tuple[RoomStore, FakeTime], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Joins and leaves per hour come from the rollup (made with the user index) for whole hours
    and from the rows for the rest; any period and bucket gives what counting the rows gives."""
    monkeypatch.setattr(history, "INDEX_BATCH_ROWS", 7)  # rolled up often, with a tail that is not
    checkpoint_every(monkeypatch, 25)  # the count at a period's start: from checkpoints in between
    s, clock = store
    rng = random.Random(11)
    people = [f"@p{i}:fake.test" for i in range(12)]
    await s.replace_room(RoomSnapshot(RoomInfo(ROOM, name="Design"), (Member(ALICE, JOIN),)))
    for number in range(1, 400):
        clock.now += rng.choice((5, 60, 600, 1800, 3600, 4 * 3600))
        user = rng.choice(people)
        membership = rng.choice((JOIN, JOIN, LEAVE, INVITE))
        await s.apply_member(event(user, membership, number), record_claim=True, queue_if_untracked=True)
    now = clock.now
    rows = db.rows("SELECT seq, membership, previous, user_nid FROM roomstate_history ORDER BY seq")
    assert db.scalar("SELECT COUNT(*) FROM roomstate_history_checkpoints") > 5
    assert db.scalar("SELECT COUNT(*) FROM roomstate_history_hours") > 10  # the rollup is in use
    join = 1

    def changes(first: int, last: int) -> dict[int, tuple[int, int]]:  # per hour, from every row
        out: dict[int, tuple[int, int]] = {}
        for seq, membership, previous, _ in rows:
            if first <= seq <= last:
                j, lv = out.get(seq // history.HOUR, (0, 0))
                out[seq // history.HOUR] = (j + (membership == join != previous), lv + (previous == join != membership))
        return {hour: c for hour, c in out.items() if c != (0, 0)}

    for _ in range(40):
        since = rng.uniform(START - 3600, now)
        until = rng.uniform(since, now + 3600)
        bucket = rng.choice((3600, 6 * 3600, 86_400))
        first_hour = history.seq_at(since) // history.HOUR
        expected_bars: dict[int, list[int]] = {}
        for hour, (j, lv) in changes(first_hour * history.HOUR, history.LAST_SEQ).items():
            bar = expected_bars.setdefault(
                first_hour + (hour - first_hour) // (bucket // 3600) * (bucket // 3600), [0, 0]
            )
            bar[0] += j
            bar[1] += lv
        bars = await s.joins_and_leaves(ROOM, since, bucket)
        assert bars == [
            (history.time_of(h * history.HOUR), j, lv) for h, (j, lv) in sorted(expected_bars.items()) if j or lv
        ]
        points = await s.member_counts(ROOM, since, until, bucket)
        start = history.seq_at(since) if since >= START else history.seq_at(START)
        net = sum(j - lv for j, lv in changes(start + 1, history.seq_at(until)).values())
        assert points[-1][1] - points[0][1] == net
        joined_at_start = {"alice": True}  # replayed from the first row: who is joined at the start
        for seq, membership, _, user_nid in rows:
            if seq <= start:
                joined_at_start[user_nid] = membership == join
        assert points[0][1] == sum(joined_at_start.values())
        assert all(t <= until + 1 for t, _ in points) and points == sorted(points)
