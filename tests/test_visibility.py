"""One visibility rule for every reader: the same table of (mode, asker) -> visible rooms checked
against each query of the read side and each chat command."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from mautrix.types import RoomID, UserID

from roomstate.queries import RoomQueries
from roomstate.visibility import Scope

from .helpers import ADMIN, ALICE, BOB, CAROL, DAVE, ROOM, Harness

OPS = RoomID("!ops:fake.test")
ALL = frozenset({ROOM, OPS})
REFUSED = None  # the asker gets no answer about rooms at all

# mode -> asker -> the rooms they may see (Design: Alice, Bob, the admin; Ops: Bob, Alice, Carol;
# Dave is in neither)
TABLE: dict[str, dict[str, frozenset[str] | None]] = {
    "everyone": {ADMIN: ALL, CAROL: ALL, DAVE: ALL},
    "shared": {ADMIN: ALL, CAROL: frozenset({OPS}), DAVE: frozenset()},
    "admins": {ADMIN: ALL, CAROL: REFUSED, DAVE: REFUSED},
}
CASES = [(mode, asker) for mode, row in TABLE.items() for asker in row]


@pytest_asyncio.fixture
async def rooms(harness: Harness) -> AsyncIterator[Harness]:
    await harness.start()
    await harness.setup_room(ROOM, ALICE, "Design", (BOB, ADMIN))
    await harness.setup_room(OPS, BOB, "Ops", (ALICE, CAROL))
    await harness.deliver(harness.hs.member(OPS, CAROL, "join", displayname="Carol C"))  # one change in Ops
    # Alice's name differs per room: nobody may learn the one she uses in a room they cannot see
    await harness.deliver(harness.hs.member(ROOM, ALICE, "join", displayname="Alice of Design"))
    await harness.deliver(harness.hs.member(OPS, ALICE, "join", displayname="Alice of Ops"))
    yield harness


def queries(h: Harness) -> RoomQueries:
    assert h.bot is not None
    return h.bot.queries


async def visible_to_each_reader(q: RoomQueries, asker: UserID) -> dict[str, frozenset[str] | None]:
    """What every reader shows ``asker``, as a set of rooms (None: refused)."""
    seen: dict[str, frozenset[str] | None] = {}
    listed = await q.rooms_for(asker)
    seen["rooms"] = None if listed.refused else frozenset(r.room_id for r in listed.rooms)
    where = await q.whereis(UserID(ALICE), asker=asker, asked_in=ROOM)
    seen["whereis"] = None if where.refused else frozenset(r.room_id for r in where.rooms)
    history = await q.history_of(UserID(ALICE), asker=asker, count=50)
    seen["history"] = (
        None
        if history.refused
        else frozenset({e.room_id for e in history.entries} | {h.room_id for h in history.held_before})
    )
    joins = {room: await q.joins(room, asker=asker, seconds=3600) for room in ALL}
    seen["joins"] = frozenset(room for room, answer in joins.items() if not answer.refused)
    members_at = {room: await q.members_at(room, asker=asker, at=2_000_000_000) for room in ALL}
    seen["members at"] = frozenset(room for room, answer in members_at.items() if answer is not None)
    return seen


@pytest.mark.parametrize(("mode", "asker"), CASES)
async def test_every_reader_answers_the_same_table(rooms: Harness, mode: str, asker: str) -> None:
    rooms.update_config(visibility=mode)
    expected = TABLE[mode][asker]
    seen = await visible_to_each_reader(queries(rooms), UserID(asker))
    for reader, visible in seen.items():
        if reader in ("joins", "members at"):  # per room: refused everywhere is the empty set
            assert visible == (expected or frozenset()), (reader, visible)
        else:
            assert visible == expected, (reader, visible)
    every_room_at_once = await queries(rooms).waves(asker=UserID(asker), seconds=3600)
    assert (every_room_at_once is not None) == (asker == ADMIN)  # admins only, in every mode


@pytest.mark.parametrize(("mode", "asker"), CASES)
async def test_every_command_answers_the_same_table(rooms: Harness, mode: str, asker: str) -> None:
    rooms.update_config(visibility=mode)
    expected = TABLE[mode][asker]
    names = {ROOM: "Design", OPS: "Ops"}

    def shown(reply: str) -> frozenset[str] | None:
        """The rooms a reply reveals, by name or by ID (None: refused)."""
        if reply.startswith("Sorry, only the bot's admins"):
            return None
        return frozenset(room for room, name in names.items() if f"“{name}”" in reply or room in reply)

    [listed] = await rooms.command(OPS, asker, "!rooms")
    [where] = await rooms.command(OPS, asker, f"!whereis {ALICE}")
    [history] = await rooms.command(OPS, asker, f"!history {ALICE}")
    assert shown(listed) == shown(where) == shown(history) == expected, (listed, where, history)
    if expected is not None:  # Alice's name as the asker may know it: from a room they see
        seen = {name for room, name in (("Design", "Alice of Design"), ("Ops", "Alice of Ops")) if name in where}
        assert seen <= {f"Alice of {names[room]}" for room in expected}, where
    for room in ALL:
        [joins] = await rooms.command(room, asker, "!joins 1h")
        [members] = await rooms.command(room, asker, "!members at now")
        sees = expected is not None and room in expected
        assert (shown(joins) is not None) == (shown(members) is not None) == sees, (room, joins, members)


async def test_a_user_sees_their_own_rooms_and_history_in_full(rooms: Harness) -> None:
    """About themselves nobody is limited to the rooms they are in (their history includes rooms
    they left); in admins mode they are still refused."""
    q = queries(rooms)
    await rooms.deliver(rooms.hs.member(OPS, CAROL, "leave"))
    history = await q.history_of(UserID(CAROL), asker=UserID(CAROL), count=10)
    assert {e.room_id for e in history.entries} == {OPS} and not history.only_rooms_of_asker
    other = await q.history_of(UserID(CAROL), asker=UserID(DAVE), count=10)
    assert other.entries == () and other.only_rooms_of_asker
    rooms.update_config(visibility="admins")
    assert (await q.history_of(UserID(CAROL), asker=UserID(CAROL), count=10)).refused


async def test_leaving_a_room_hides_it_at_the_next_question(rooms: Harness) -> None:
    q = queries(rooms)
    assert (await q.rooms_for(UserID(CAROL))).rooms[0].room_id == OPS
    await rooms.deliver(rooms.hs.member(OPS, CAROL, "leave"))
    assert (await q.rooms_for(UserID(CAROL))).rooms == ()


def test_scope_about_oneself() -> None:
    carol = UserID(CAROL)
    limited = Scope(carol, rooms=frozenset({OPS}))
    assert limited.limited and limited.sees(OPS) and not limited.sees(ROOM)
    assert limited.about(carol).sees(ROOM) and not limited.about(carol).limited
    assert limited.about(UserID(ALICE)) is limited
    refused = Scope(carol, refused=True, rooms=frozenset())
    assert refused.about(carol).refused and not refused.sees(OPS)
