"""Property: whatever mix of valid, malformed, misdirected, replayed and reordered-by-clock events
arrives, interleaved with full syncs that succeed or fail, the stored state equals a model that
applies the valid events in delivery order (and a successful full sync replaces everything before
it). Events arrive as maubot delivers them: the raw /sync response first, then each event as
mautrix parsed it (which fills in what the JSON lacks: a missing membership parses as "leave").

Runs the real logic layer and store on the real databases; the homeserver is an in-process stub
whose state is what the valid events made it. The example budget is fixed (HYPOTHESIS_EXAMPLES,
default 40) and derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mautrix.types import GenericEvent, StateEvent

from roomstate.db import RoomStore
from roomstate.dedup import EventClaim
from roomstate.homeserver import HomeserverError
from roomstate.models import MEMBERSHIPS, RoomSnapshot
from roomstate.parsing import state_snapshot, sync_view
from roomstate.service import RoomStateService

from .helpers import BOT, drop_tables, make_config

ROOM = "!prop:x.org"
USERS = [f"@u{i}:x.org" for i in range(3)]
NAMES = [None, "", "Ann", "Ann ", "a\x1eb", "x\x00y", "名前", "<b>", "\x1d"]
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "40"))

valid_member = st.tuples(
    st.just("member"),
    st.sampled_from(USERS),
    st.sampled_from(sorted(MEMBERSHIPS)),
    st.sampled_from(NAMES),
    st.integers(min_value=-(2**64), max_value=2**64),
)
malformed = st.tuples(
    st.just("malformed"),
    st.sampled_from(
        [
            {"content": None},
            {"content": "join"},
            {"content": []},
            {"content": {"membership": ["join"]}},
            {"content": {"membership": {"join": 1}}},
            {"content": {"membership": "owner"}},
            {"state_key": "nobody"},
            {"state_key": None},
            {"state_key": 5},
            {"event_id": None},
            {"sender": []},
            {"content": {"membership": None}},
            {"content": {}},
            {"content": {"membership": 5}},
            {"content": {"membership": "JOIN"}},
            {"room_id": "!elsewhere:x.org"},  # another room's event in this room's timeline
            {"room_id": "!elsewhere:x.org", "content": {"membership": "leave"}},
        ]
    ),
    st.sampled_from(USERS),
)
room_info = st.tuples(
    st.just("info"),
    st.sampled_from(["m.room.name", "m.room.topic"]),
    st.one_of(st.none(), st.text(max_size=5), st.integers()),
)
replay = st.tuples(st.just("replay"), st.integers(min_value=0, max_value=1000))
resync = st.tuples(st.just("resync"), st.booleans())  # succeeds?
operation = st.one_of(valid_member, valid_member, valid_member, replay, replay, malformed, malformed, room_info, resync)
# operations arrive in syncs: each sync's events are dispatched concurrently, in order
syncs = st.lists(st.lists(operation, min_size=1, max_size=6), min_size=1, max_size=8)


class StubHomeserver:
    """The homeserver's side: the room's current state, made by the valid events."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail = False

    def apply(self, event: dict[str, Any]) -> None:
        self.state[(event["type"], event["state_key"])] = event

    async def room_snapshot(self, room_id: str) -> tuple[RoomSnapshot, str | None]:
        if self.fail:
            raise HomeserverError("the homeserver answered M_UNKNOWN: stub failure")
        body = json.dumps(list(self.state.values())).encode()
        return state_snapshot(room_id, body, BOT)

    async def joined_rooms(self) -> list[str]:
        return [ROOM]


class Model:
    """What the stored state must be."""

    def __init__(self) -> None:
        self.members: dict[str, tuple[str, str | None]] = {BOT: ("join", None)}
        self.info: dict[str, str | None] = {"name": None, "topic": None}

    def member(self, user: str, membership: str, name: str | None) -> None:
        if membership == "leave":
            self.members.pop(user, None)
        else:
            self.members[user] = (membership, name.replace("\x00", "\ufffd") if name is not None else None)


def as_mautrix_delivers(raw: dict[str, Any]) -> Any:
    """The event as mautrix hands it to a handler: its room ID set to the section's room, parsed
    (None: mautrix drops it)."""
    data = {**raw, "room_id": ROOM}
    for kind in (StateEvent, GenericEvent):
        try:
            return kind.deserialize(data)
        except Exception:
            continue
    return None


def sync_of(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """A /sync response with these events in the room's timeline, as the homeserver sends them
    (no room ID, unless an event names one)."""
    timeline = [{k: v for k, v in raw.items() if k != "room_id" or v != ROOM} for raw in raws]
    return {"rooms": {"join": {ROOM: {"timeline": {"events": timeline}}}}, "next_batch": "s"}


def event(kind: str, state_key: str, content: Any, number: int, ts: int = 1) -> dict[str, Any]:
    return {
        "type": kind,
        "state_key": state_key,
        "content": content,
        "room_id": ROOM,
        "sender": USERS[0],
        "event_id": f"$e{number}:x.org",
        "origin_server_ts": ts,
    }


async def run(url: str, batches: Sequence[Sequence[tuple[Any, ...]]]) -> None:
    engine = sa.create_engine(url)
    store = RoomStore(engine)
    await store.open()
    homeserver = StubHomeserver()
    service = RoomStateService(store, homeserver, BOT, make_config(), logging.getLogger("roomstate.property"))  # type: ignore[arg-type]
    model = Model()
    homeserver.apply(event("m.room.member", BOT, {"membership": "join"}, 0))
    assert (await service.sync_room(ROOM)).ok
    delivered: list[dict[str, Any]] = []
    numbers = iter(range(1, 10_000))
    try:
        for batch in batches:
            arrivals: list[dict[str, Any] | bool] = []  # raw events, and resyncs (succeed?)
            for op in batch:
                number = next(numbers)
                if op[0] == "member":
                    _, user, membership, name, ts = op
                    content = {"membership": membership} | ({} if name is None else {"displayname": name})
                    raw = event("m.room.member", user, content, number, ts)
                    homeserver.apply(raw)
                    model.member(user, membership, name)
                elif op[0] == "malformed":
                    _, damage, user = op
                    raw = {**event("m.room.member", user, {"membership": "join"}, number), **damage}
                elif op[0] == "info":
                    _, kind, value = op
                    field = kind.removeprefix("m.room.")
                    raw = event(kind, "", {field: value}, number)
                    homeserver.apply(raw)
                    text = value.replace("\x00", "\ufffd") if isinstance(value, str) else None
                    model.info[field] = text if text is not None and text.strip() else None
                elif op[0] == "replay":
                    if not delivered:
                        continue
                    raw = delivered[op[1] % len(delivered)]
                else:
                    arrivals.append(op[1])
                    continue
                delivered.append(raw)
                arrivals.append(raw)
            service.sync_response(sync_view(sync_of([a for a in arrivals if isinstance(a, dict)])))
            tasks: list[asyncio.Future[Any]] = []
            for arrival in arrivals:
                if isinstance(arrival, bool):
                    homeserver.fail = not arrival
                    tasks.append(service.sync_room(ROOM))
                    continue
                parsed = as_mautrix_delivers(arrival)
                if parsed is None:
                    continue
                claim = EventClaim(ROOM, parsed.event_id) if isinstance(parsed.event_id, str) else None
                handler = service.room_info_event if arrival["type"] != "m.room.member" else service.member_event
                tasks.append(asyncio.ensure_future(handler(parsed, claim)))  # scheduled in delivery order
            await asyncio.gather(*tasks)
        stored = {m.user_id: (m.membership, m.displayname) for m in await store.members(ROOM)}
        assert stored == model.members
        room = await store.room(ROOM)
        assert room is not None and (room.name, room.topic) == (model.info["name"], model.info["topic"])
        assert (room.joined_count, room.invited_count) == (
            sum(m == "join" for m, _ in model.members.values()),
            sum(m == "invite" for m, _ in model.members.values()),
        )
    finally:
        await service.queue.close(1)
        await store.close()
        engine.dispose()


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=syncs)
# a joined member's event without a membership (mautrix parses it as "leave"), and another room's
# leave in this room's timeline (mautrix dispatches it as this room's): neither may remove them
@example(batches=[[("member", USERS[1], "join", None, 1)], [("malformed", {"content": {}}, USERS[1])]])
@example(batches=[[("member", USERS[1], "join", "Ann", 1), ("malformed", {"content": {"membership": None}}, USERS[1])]])
@example(
    batches=[
        [("member", USERS[2], "join", None, 1)],
        [("malformed", {"room_id": "!elsewhere:x.org", "content": {"membership": "leave"}}, USERS[2])],
    ]
)
def test_stored_state_equals_the_last_delivered_valid_state(db_url: str, batches: list[list[tuple[Any, ...]]]) -> None:
    drop_tables(db_url)
    if db_url.startswith("sqlite"):
        path = db_url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    asyncio.run(run(db_url, batches))
