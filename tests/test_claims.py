"""A member event's dedup claim is its history row (schema v7): one write fewer per event, and
every replay still skipped, whichever way the event was claimed first."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from roomstate.db import RoomStore, StorageError, history, history_store, migrations, schema
from roomstate.db.dialect import Dialect
from roomstate.models import JOIN, LEAVE, Applied, Member, MemberChange, RoomInfo, RoomSnapshot

from .fakes import hash_event_id as hash_id
from .helpers import Database, drop_tables

ROOM = "!a:fake.test"


def change(user_id: str, membership: str, event_id: str, room_id: str = ROOM) -> MemberChange:
    return MemberChange(room_id, event_id, Member(user_id, membership, None), user_id)


async def apply(store: RoomStore, user_id: str, membership: str, event_id: str, room_id: str = ROOM) -> Applied:
    return await store.apply_member(
        change(user_id, membership, event_id, room_id), record_claim=True, queue_if_untracked=True
    )


async def joined(store: RoomStore, room_id: str = ROOM) -> set[str]:
    return {m.user_id for m in await store.members(room_id) if m.membership == JOIN}


async def start_room(store: RoomStore, *users: str, room_id: str = ROOM) -> None:
    await store.replace_room(RoomSnapshot(RoomInfo(room_id, name="A"), tuple(Member(u, JOIN) for u in users)))


async def test_a_member_event_is_claimed_by_its_history_row_alone(store: RoomStore, db: Database) -> None:
    await start_room(store, "@a:x")
    join, leave = hash_id("join"), hash_id("leave")
    assert await apply(store, "@b:x", JOIN, join) is Applied.APPLIED
    assert await apply(store, "@b:x", LEAVE, leave) is Applied.APPLIED
    assert db.claimed_apart(ROOM) == set()  # no second record beside the history row
    assert db.claimed_in_history(ROOM) == {join, leave}
    assert await apply(store, "@b:x", JOIN, join) is Applied.DUPLICATE  # the old join again
    assert await joined(store) == {"@a:x"}
    assert db.scalar("SELECT COUNT(*) FROM roomstate_history WHERE event_hash IS NOT NULL") == 2


async def test_one_event_twice_in_one_group_commit_is_applied_once(store: RoomStore, db: Database) -> None:
    """The claim is written at once, not with the batch of history rows at the commit: the second
    delivery in the same transaction already finds it."""
    await start_room(store, "@a:x")
    join = hash_id("join")
    busy = store._write(lambda txn: time.sleep(0.2))  # what comes meanwhile is one group commit
    outcomes = await asyncio.gather(
        *(
            store.apply_member(change(user, JOIN, event_id), record_claim=True, queue_if_untracked=True)
            for user, event_id in [("@b:x", join), ("@c:x", hash_id("c")), ("@b:x", join)]
        )
    )
    await busy
    assert outcomes == [Applied.APPLIED, Applied.APPLIED, Applied.DUPLICATE]
    assert db.scalar("SELECT COUNT(*) FROM roomstate_history WHERE event_hash IS NOT NULL") == 2
    room = await store.room(ROOM)
    assert room is not None and room.joined_count == 3


async def test_claims_made_the_other_way_still_stop_a_replay(store: RoomStore, db: Database) -> None:
    """A full sync's covered events, an event applied while history was off and an event whose
    ID is not a hash are claimed in ``roomstate_processed_events``; a member event checks there."""
    covered, while_off, old_style = hash_id("covered"), hash_id("while off"), "$old:fake.test"
    await store.replace_room(
        RoomSnapshot(RoomInfo(ROOM, name="A"), (Member("@a:x", JOIN), Member("@b:x", JOIN))), covered_events=[covered]
    )
    assert await apply(store, "@b:x", LEAVE, covered) is Applied.DUPLICATE
    await store.set_history(False)
    assert await apply(store, "@c:x", JOIN, while_off) is Applied.APPLIED
    await store.set_history(True)
    assert await apply(store, "@c:x", LEAVE, hash_id("c leaves")) is Applied.APPLIED
    assert await apply(store, "@c:x", JOIN, while_off) is Applied.DUPLICATE
    assert await apply(store, "@d:x", JOIN, old_style) is Applied.APPLIED
    assert await apply(store, "@d:x", LEAVE, hash_id("d leaves")) is Applied.APPLIED
    assert await apply(store, "@d:x", JOIN, old_style) is Applied.DUPLICATE
    assert await joined(store) == {"@a:x", "@b:x"}
    assert {covered, while_off, old_style} <= db.claimed_apart(ROOM)


async def test_a_replay_that_would_change_nothing_is_still_a_duplicate(store: RoomStore, db: Database) -> None:
    """Where an event changes nothing (or its room is not tracked), no history row is written: its
    claim goes to ``roomstate_processed_events``, unless its history row holds it already."""
    await start_room(store, "@a:x")
    join, again = hash_id("join"), hash_id("joins again")
    assert await apply(store, "@b:x", JOIN, join) is Applied.APPLIED
    assert await apply(store, "@b:x", JOIN, join) is Applied.DUPLICATE  # the state is what it set
    assert await apply(store, "@b:x", JOIN, again) is Applied.UNCHANGED
    assert await apply(store, "@b:x", JOIN, again) is Applied.DUPLICATE
    assert db.claimed_apart(ROOM) == {again}
    assert await store.forget_room(ROOM) is Applied.APPLIED  # the bot left: not tracked
    assert await apply(store, "@b:x", JOIN, join) is Applied.DUPLICATE
    assert await store.resync_queue() == []  # a replay queues nothing
    assert await apply(store, "@c:x", JOIN, hash_id("new")) is Applied.NOT_TRACKED
    assert hash_id("new") in db.claimed_apart(ROOM)


async def test_contradicted_sees_the_claims_history_holds(store: RoomStore) -> None:
    """A state section that asserts an event processed before, whose content is no longer what is
    stored: the event will not be applied again, so the room must be resynced."""
    await start_room(store, "@a:x")
    join = hash_id("join")
    assert await apply(store, "@b:x", JOIN, join) is Applied.APPLIED
    assert await apply(store, "@b:x", LEAVE, hash_id("leave")) is Applied.APPLIED
    assert await store.contradicted(ROOM, [change("@b:x", JOIN, join)], []) == [join]
    assert await store.contradicted(ROOM, [change("@b:x", JOIN, hash_id("never seen"))], []) == []


async def test_history_retention_keeps_the_claims_the_dedup_retention_still_needs(
    store: RoomStore, db: Database
) -> None:
    await start_room(store, "@a:x")
    kept, expired = hash_id("kept"), hash_id("expired")
    assert await apply(store, "@b:x", JOIN, expired) is Applied.APPLIED
    assert await apply(store, "@b:x", LEAVE, kept) is Applied.APPLIED
    first_seq = db.scalar("SELECT MIN(seq) FROM roomstate_history WHERE event_hash IS NOT NULL")
    later = history.time_of(first_seq) + 1  # after the first row: the dedup retention keeps only the second
    db.execute("UPDATE roomstate_history SET seq = seq + :shift WHERE event_hash = :h", shift=2_000 << 4, h=_raw(kept))
    await store.delete_history_before(time.time() + 60, keep_claims_since=later)
    assert db.scalar("SELECT COUNT(*) FROM roomstate_history") == 0
    assert db.claimed_apart(ROOM) == {kept}
    ts = db.scalar("SELECT processed_ts FROM roomstate_processed_events")
    assert abs(ts - (first_seq >> 4) - 2_000) < 1_000  # when it was processed: its row's time
    assert await apply(store, "@b:x", LEAVE, kept) is Applied.DUPLICATE
    assert await apply(store, "@b:x", JOIN, expired) is Applied.APPLIED  # past every retention


async def test_turning_history_off_keeps_its_claims(store: RoomStore, db: Database) -> None:
    await start_room(store, "@a:x")
    join = hash_id("join")
    assert await apply(store, "@b:x", JOIN, join) is Applied.APPLIED
    assert await apply(store, "@b:x", LEAVE, hash_id("leave")) is Applied.APPLIED
    await store.set_history(False)
    await store.clear_history(keep_claims_since=time.time() - 3600)
    assert db.scalar("SELECT COUNT(*) FROM roomstate_history") == 0
    assert await apply(store, "@b:x", JOIN, join) is Applied.DUPLICATE
    assert await joined(store) == {"@a:x"}


def _raw(event_id: str) -> bytes:
    digest = history.pack_event_id(event_id)[0]
    assert digest is not None
    return digest


async def test_v7_keeps_an_event_stored_twice_and_indexes_the_first(db_url: str, db: Database) -> None:
    """An event applied twice by an older version (its claim released or expired in between) has
    two history rows: the later one keeps its ID as text, the first one is the claim."""
    drop_tables(db_url)
    engine = sa.create_engine(db_url)
    dialect = Dialect(engine)
    conn = dialect.connect()
    try:
        assert migrations.upgrade(conn, dialect, target=6) == 6
    finally:
        conn.close()
    twice, once = hash_id("twice"), hash_id("once")
    db.execute("INSERT INTO roomstate_rooms (room_nid, room_id) VALUES (1, :a)", a=ROOM)
    for seq, event_id in [(10, twice), (11, once), (12, twice)]:
        db.execute(
            "INSERT INTO roomstate_history (room_nid, seq, user_nid, membership, previous, event_hash)"
            " VALUES (1, :s, 1, 1, 0, :h)",
            s=seq,
            h=_raw(event_id),
        )
    store = RoomStore(engine)
    assert await store.open() == schema.VERSION
    try:
        rows = db.rows("SELECT seq, event_hash, event_id FROM roomstate_history ORDER BY seq")
        assert [(seq, None if h is None else bytes(h), text) for seq, h, text in rows] == [
            (10, _raw(twice), None),
            (11, _raw(once), None),
            (12, None, twice),
        ]
        await start_room(store, "@u:x")
        assert await apply(store, "@v:x", JOIN, twice) is Applied.DUPLICATE
        assert await apply(store, "@v:x", JOIN, once) is Applied.DUPLICATE
        assert await apply(store, "@v:x", JOIN, hash_id("new")) is Applied.APPLIED
    finally:
        await store.close()
        engine.dispose()


async def test_history_turned_off_still_finds_the_claims_its_rows_hold(store: RoomStore, db: Database) -> None:
    """Between turning history off and deleting its rows (the next cleanup), a replay is found in
    them; once they are deleted (their claims copied), it is found among the others."""
    await start_room(store, "@a:x")
    join = hash_id("join")
    assert await apply(store, "@b:x", JOIN, join) is Applied.APPLIED
    assert await apply(store, "@b:x", LEAVE, hash_id("leave")) is Applied.APPLIED
    await store.set_history(False)
    assert await apply(store, "@b:x", JOIN, join) is Applied.DUPLICATE
    assert await apply(store, "@b:x", JOIN, hash_id("rejoin")) is Applied.APPLIED  # new: applied, claimed apart
    assert hash_id("rejoin") in db.claimed_apart(ROOM)
    await store.clear_history(keep_claims_since=time.time() - 3600)
    assert store.history_cleared and db.scalar("SELECT COUNT(*) FROM roomstate_history") == 0
    assert await apply(store, "@b:x", LEAVE, hash_id("leaves again")) is Applied.APPLIED
    assert await apply(store, "@b:x", JOIN, join) is Applied.DUPLICATE
    assert await joined(store) == {"@a:x"}


async def test_claims_are_copied_in_the_transaction_that_deletes_their_rows(
    store: RoomStore, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """History turned on and off again while its rows are being deleted, chunk by chunk: the rows
    written meanwhile lose no claim either."""
    monkeypatch.setattr(history_store, "CHUNK", 1)
    await start_room(store, "@a:x")
    for number in range(3):
        assert await apply(store, f"@u{number}:x", JOIN, hash_id(f"u{number}")) is Applied.APPLIED
    await store.set_history(False)
    write, toggled = store._write, []

    def write_then_toggle(work, *args, **kwargs):  # type: ignore[no-untyped-def]
        future = write(work, *args, **kwargs)

        def after(done: object) -> None:  # once a first row is deleted: on, an event, off again
            if not toggled and db.scalar("SELECT COUNT(*) FROM roomstate_history") < 3:
                toggled.append(True)
                store.set_history(True)
                store.apply_member(change("@x:x", JOIN, hash_id("x")), record_claim=True, queue_if_untracked=True)
                store.set_history(False)

        future.add_done_callback(after)
        return future

    monkeypatch.setattr(store, "_write", write_then_toggle)
    await store.clear_history(keep_claims_since=time.time() - 3600)
    monkeypatch.setattr(store, "_write", write)
    assert toggled and db.scalar("SELECT COUNT(*) FROM roomstate_history") == 0
    assert db.claimed_apart(ROOM) >= {hash_id("x"), *(hash_id(f"u{number}") for number in range(3))}
    assert await apply(store, "@x:x", LEAVE, hash_id("x leaves")) is Applied.APPLIED
    assert await apply(store, "@x:x", JOIN, hash_id("x")) is Applied.DUPLICATE


async def test_a_clash_of_history_keys_is_an_error_not_a_replay(store: RoomStore, db: Database) -> None:
    """The claim's conflict target is the (room, event hash) index alone: a row that would reuse a
    (room, seq) fails its event (the logic layer queues a resync) instead of being skipped."""
    await start_room(store, "@a:x")
    assert await apply(store, "@b:x", JOIN, hash_id("b")) is Applied.APPLIED
    seq = db.scalar("SELECT MAX(seq) FROM roomstate_history")
    store.recorder.clock.last, store.recorder.clock.now = seq - 1, lambda: 0.0  # a clock issuing that seq again
    with pytest.raises(StorageError):
        await apply(store, "@c:x", JOIN, hash_id("c"))
    assert await joined(store) == {"@a:x", "@b:x"}


async def test_history_switched_on_and_off_in_the_commit_that_cleared_it(store: RoomStore, db: Database) -> None:
    """The last step of clearing, then history on, an event, history off, all in one group commit:
    the rows written after the clear still hold their claims."""
    await start_room(store, "@a:x")
    await store.set_history(False)
    await store.clear_history(keep_claims_since=time.time() - 3600)
    assert store.history_cleared
    busy = store._write(lambda txn: time.sleep(0.2))  # what comes meanwhile is one group commit
    together = [
        store._write(store._clear_rest),
        store.set_history(True),
        store.apply_member(change("@b:x", JOIN, hash_id("b")), record_claim=True, queue_if_untracked=True),
        store.set_history(False),
    ]
    await busy
    assert (await asyncio.gather(*together))[2] is Applied.APPLIED
    assert not store.history_cleared and hash_id("b") in db.claimed_in_history(ROOM)
    assert await apply(store, "@b:x", LEAVE, hash_id("b leaves")) is Applied.APPLIED
    assert await apply(store, "@b:x", JOIN, hash_id("b")) is Applied.DUPLICATE


async def test_a_start_with_history_off_looks_in_history_only_while_rows_are_left(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    for keeps_rows in (True, False):
        store = RoomStore(engine)
        store.history_enabled = keeps_rows  # the first start records a row, or nothing
        await store.open()
        await start_room(store, "@a:x")
        assert await apply(store, "@b:x", JOIN, hash_id(f"b {keeps_rows}")) is Applied.APPLIED
        await store.close()
        store = RoomStore(engine)
        store.history_enabled = False  # the next start: history is off
        await store.open()
        await store.flush()
        assert store.history_cleared is not keeps_rows
        await store.close()
        drop_tables(db_url)
    engine.dispose()


async def test_many_claims_are_kept_in_statements_of_a_few_hundred(store: RoomStore, db: Database) -> None:
    await start_room(store, "@a:x")
    events = [hash_id(f"u{number}") for number in range(700)]
    outcomes = await asyncio.gather(
        *(
            store.apply_member(change(f"@u{number}:x", JOIN, event_id), record_claim=True, queue_if_untracked=True)
            for number, event_id in enumerate(events)
        )
    )
    assert set(outcomes) == {Applied.APPLIED}
    await store.set_history(False)
    await store.clear_history(keep_claims_since=time.time() - 3600)
    assert db.claimed_apart(ROOM) == set(events)
