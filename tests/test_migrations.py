"""Frozen migrations: a database made by 0.1.0 (schema v1), with data, upgrades to exactly what a
fresh database looks like: the same schema and the same rows."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from roomstate.db import RoomStore, migrations, schema
from roomstate.db.dialect import Dialect
from roomstate.models import JOIN, Member, RoomInfo, RoomSnapshot

from .helpers import Database, drop_tables

ROOM_A, ROOM_B, ROOM_GONE = "!a:x.org", "!b:x.org", "!gone:x.org"


def build(url: str, version: int) -> None:
    """Create the schema at ``version`` with the frozen steps, as the released plugin did."""
    engine = sa.create_engine(url)
    dialect = Dialect(engine)
    conn = dialect.connect()
    try:
        assert migrations.upgrade(conn, dialect, target=version) == version
    finally:
        conn.close()
        engine.dispose()


def fill_v1(db: Database) -> None:
    """What 0.1.0 stored: leave rows, a global display name, a forgotten room's leftovers."""
    statements = [
        "INSERT INTO roomstate_rooms (room_nid, room_id) VALUES (1, :a), (2, :b), (3, :gone)",
        "INSERT INTO roomstate_users (user_nid, user_id, displayname) VALUES"
        " (1, '@alice:x.org', 'Alice everywhere'), (2, '@bob:x.org', NULL), (3, '@carol:x.org', 'C')",
        "INSERT INTO roomstate_room_info (room_nid, name, topic, canonical_alias, encrypted, creator, room_version,"
        " replacement_room, updated_at) VALUES (1, 'A', 'T', '#a:x.org', :yes, '@alice:x.org', '10', NULL, 100),"
        " (2, NULL, NULL, NULL, :no, NULL, NULL, '!c:x.org', 200)",
        "INSERT INTO roomstate_memberships (room_nid, user_nid, membership, displayname, event_ts) VALUES"
        " (1, 1, 'join', 'Alice in A', 5), (1, 2, 'invite', NULL, 6), (1, 3, 'leave', 'C', 7),"
        " (2, 1, 'join', NULL, 8), (2, 3, 'ban', NULL, 9), (3, 2, 'join', 'orphan', 10)",
        "INSERT INTO roomstate_processed_events (room_nid, event_id, processed_ts) VALUES"
        " (1, '$1', 1000), (3, '$2', 2000)",
    ]
    for statement in statements:
        db.execute(statement, a=ROOM_A, b=ROOM_B, gone=ROOM_GONE, yes=True, no=False)


async def fill_fresh(url: str) -> None:
    """The same state written by the current plugin into a fresh database."""
    engine = sa.create_engine(url)
    store = RoomStore(engine)
    await store.open()
    await store.replace_room(
        RoomSnapshot(
            RoomInfo(ROOM_A, "A", "T", "#a:x.org", True, "@alice:x.org", "10"),
            (Member("@alice:x.org", JOIN, "Alice in A"), Member("@bob:x.org", "invite")),
        )
    )
    await store.replace_room(
        RoomSnapshot(
            RoomInfo(ROOM_B, replacement_room="!c:x.org"),
            (Member("@alice:x.org", JOIN), Member("@carol:x.org", "ban")),
        )
    )
    await store.claim_event(ROOM_A, "$1")
    await store.claim_event(ROOM_GONE, "$2")
    await store.close()
    engine.dispose()


def describe_schema(db: Database) -> dict[str, Any]:
    """Tables, columns (order, type, nullability, default), indexes and storage, comparably."""
    described: dict[str, Any] = {}
    if db.url.startswith("sqlite"):
        for name, sql in db.rows("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name LIKE 'roomstate%'"):
            columns = [tuple(row[1:]) for row in db.rows(f"PRAGMA table_info({name})")]
            indexes = []
            for _, index, unique, origin, _ in db.rows(f"PRAGMA index_list({name})"):
                cols = tuple(row[2] for row in db.rows(f"PRAGMA index_info({index})"))
                indexes.append((index if origin == "c" else origin, bool(unique), cols))
            described[name] = (columns, sorted(indexes), "WITHOUT ROWID" in sql.upper())
    else:
        for (name,) in db.rows("SELECT tablename FROM pg_tables WHERE tablename LIKE 'roomstate%'"):
            columns = db.rows(
                "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
                " WHERE table_name = :t ORDER BY ordinal_position",
                t=name,
            )
            indexes = db.rows(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t ORDER BY indexname", t=name
            )
            described[name] = ([tuple(c) for c in columns], [tuple(i) for i in indexes])
    return described


def describe_rows(db: Database) -> dict[str, Any]:
    """Every row, with numeric IDs replaced by the Matrix IDs they stand for."""
    return {
        "rooms": sorted(r[0] for r in db.rows("SELECT room_id FROM roomstate_rooms")),
        "users": sorted(r[0] for r in db.rows("SELECT user_id FROM roomstate_users")),
        "room_info": sorted(
            tuple(r)
            for r in db.rows(
                "SELECT r.room_id, i.name, i.topic, i.canonical_alias, i.encrypted, i.creator, i.room_version,"
                " i.replacement_room, i.joined_count, i.invited_count FROM roomstate_room_info i"
                " JOIN roomstate_rooms r ON r.room_nid = i.room_nid"
            )
        ),
        "memberships": sorted(
            tuple(r)
            for r in db.rows(
                "SELECT r.room_id, u.user_id, m.membership, m.displayname FROM roomstate_memberships m"
                " JOIN roomstate_rooms r ON r.room_nid = m.room_nid JOIN roomstate_users u ON u.user_nid = m.user_nid"
            )
        ),
        "processed": sorted(
            tuple(r)
            for r in db.rows(
                "SELECT r.room_id, p.event_id FROM roomstate_processed_events p"
                " JOIN roomstate_rooms r ON r.room_nid = p.room_nid"
            )
        ),
        "user_index": sorted(
            tuple(r)
            for r in db.rows(
                "SELECT r.room_id, u.user_id FROM (SELECT user_nid, room_nid FROM roomstate_user_rooms"
                " UNION SELECT user_nid, room_nid FROM roomstate_user_rooms_new) p"
                " JOIN roomstate_rooms r ON r.room_nid = p.room_nid JOIN roomstate_users u ON u.user_nid = p.user_nid"
            )
        ),
        "resync_queue": db.rows("SELECT * FROM roomstate_resync_queue"),
        "version": db.rows("SELECT version FROM roomstate_schema_version"),
    }


async def test_a_v1_database_upgrades_to_what_a_fresh_one_is(db_url: str, db: Database) -> None:
    await fill_fresh(db_url)
    fresh_schema, fresh_rows = describe_schema(db), describe_rows(db)
    drop_tables(db_url)

    build(db_url, 1)
    fill_v1(db)
    engine = sa.create_engine(db_url)
    store = RoomStore(engine)
    assert await store.open() == migrations.LATEST
    await store.close()
    engine.dispose()

    assert describe_schema(db) == fresh_schema
    assert describe_rows(db) == fresh_rows
    assert fresh_rows["memberships"] == [
        (ROOM_A, "@alice:x.org", "join", "Alice in A"),
        (ROOM_A, "@bob:x.org", "invite", None),
        (ROOM_B, "@alice:x.org", "join", None),
        (ROOM_B, "@carol:x.org", "ban", None),
    ]


async def test_each_step_is_one_transaction(db_url: str, db: Database) -> None:
    build(db_url, 1)
    fill_v1(db)
    db.execute("CREATE TABLE roomstate_resync_queue (x INTEGER)")  # makes step 2 fail at its end
    engine = sa.create_engine(db_url)
    store = RoomStore(engine)
    with pytest.raises(Exception, match="already exists"):
        await store.open()
    await store.close()
    engine.dispose()
    assert db.rows("SELECT version FROM roomstate_schema_version") == [(1,)]
    assert db.scalar("SELECT COUNT(*) FROM roomstate_memberships WHERE membership = 'leave'") == 1  # untouched
    assert db.scalar("SELECT displayname FROM roomstate_users WHERE user_nid = 1") == "Alice everywhere"


def test_frozen_steps_and_the_latest_schema_agree_on_the_version() -> None:
    assert [step.version for step in migrations.STEPS] == list(range(1, migrations.LATEST + 1))
    assert migrations.LATEST == schema.VERSION


async def test_v5_rolls_up_the_history_a_v4_database_has_indexed(db_url: str, db: Database) -> None:
    """Joins and leaves per hour, made from the rows the user index covers (v4's progress mark);
    rows after it are rolled up by the writer's next batch, as ever."""
    drop_tables(db_url)
    build(db_url, 4)
    hour = 3_600_000 << 4
    rows = [  # (seq, membership, previous): join, join, leave in hour 100; a join in hour 101 (not indexed)
        (100 * hour + 1, 1, 0),
        (100 * hour + 2, 1, 0),
        (100 * hour + 3, 0, 1),
        (101 * hour + 1, 1, 0),
    ]
    db.execute("INSERT INTO roomstate_rooms (room_nid, room_id) VALUES (1, :a)", a=ROOM_A)
    for number, (seq, membership, previous) in enumerate(rows, 1):
        db.execute(
            "INSERT INTO roomstate_history (room_nid, seq, user_nid, membership, previous) VALUES (1, :s, :u, :m, :p)",
            s=seq,
            u=number,
            m=membership,
            p=previous,
        )
    db.execute("INSERT INTO roomstate_history_progress (name, seq) VALUES ('indexed', :s)", s=100 * hour + 3)
    engine = sa.create_engine(db_url)
    store = RoomStore(engine)
    assert await store.open() == schema.VERSION
    await store.close()
    engine.dispose()
    assert db.rows("SELECT room_nid, hour, joins, leaves FROM roomstate_history_hours") == [(1, 100, 2, 1)]


async def test_v6_indexes_the_stored_memberships_by_user(db_url: str, db: Database) -> None:
    """The user → room pairs are made from the memberships a v5 database holds, and answer."""
    drop_tables(db_url)
    build(db_url, 5)
    db.execute("INSERT INTO roomstate_rooms (room_nid, room_id) VALUES (1, :a), (2, :b)", a=ROOM_A, b=ROOM_B)
    db.execute("INSERT INTO roomstate_users (user_nid, user_id) VALUES (1, '@alice:x.org'), (2, '@bob:x.org')")
    for room_nid in (1, 2):
        db.execute(
            "INSERT INTO roomstate_room_info (room_nid, encrypted, updated_at, joined_count, invited_count, synced_at)"
            " VALUES (:r, :no, 1, 1, 0, 1)",
            r=room_nid,
            no=False,
        )
    db.execute(
        "INSERT INTO roomstate_memberships (room_nid, user_nid, membership, displayname) VALUES"
        " (1, 1, 'join', 'Alice'), (2, 1, 'join', NULL), (2, 2, 'invite', NULL)"
    )
    engine = sa.create_engine(db_url)
    store = RoomStore(engine)
    assert await store.open() == schema.VERSION
    try:
        assert sorted(r.room.room_id for r in await store.rooms_of("@alice:x.org")) == [ROOM_A, ROOM_B]
        assert [r.room.room_id for r in await store.rooms_of("@bob:x.org", "invite")] == [ROOM_B]
    finally:
        await store.close()
        engine.dispose()
    assert db.rows("SELECT user_nid, room_nid FROM roomstate_user_rooms ORDER BY 1, 2") == [(1, 1), (1, 2), (2, 2)]
    assert describe_rows(db)["user_index"] == [
        (ROOM_A, "@alice:x.org"),
        (ROOM_B, "@alice:x.org"),
        (ROOM_B, "@bob:x.org"),
    ]
