"""Pure parsing: raw state events to models, and command arguments to user IDs."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from roomstate.mentions import BadUserArgument, resolve_user
from roomstate.snapshot import is_user_id, member_from_state, room_info_changes, snapshot_from_state

BOT = "@bot:example.org"


def ev(type_: str, content: dict, state_key: str = "", **extra: object) -> dict:
    return {"type": type_, "state_key": state_key, "content": content, "sender": "@c:x", **extra}


def test_room_info_changes_per_event_type() -> None:
    assert room_info_changes(ev("m.room.name", {"name": "N"})) == {"name": "N"}
    assert room_info_changes(ev("m.room.name", {"name": "  "})) == {"name": None}
    assert room_info_changes(ev("m.room.name", {"name": 5})) == {"name": None}
    assert room_info_changes(ev("m.room.topic", {"topic": "T"})) == {"topic": "T"}
    assert room_info_changes(ev("m.room.canonical_alias", {"alias": "#a:x"})) == {"canonical_alias": "#a:x"}
    assert room_info_changes(ev("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})) == {"encrypted": True}
    assert room_info_changes(ev("m.room.tombstone", {"replacement_room": "!n:x"})) == {"replacement_room": "!n:x"}
    assert room_info_changes(ev("m.room.create", {"room_version": "11"})) == {"creator": "@c:x", "room_version": "11"}
    assert room_info_changes(ev("m.room.create", {"creator": "@o:x"})) == {"creator": "@o:x", "room_version": "1"}
    assert room_info_changes(ev("m.room.name", {"name": "N"}, state_key="x")) is None
    assert room_info_changes(ev("m.room.power_levels", {})) is None


def test_member_parsing_rejects_malformed_events() -> None:
    good = ev("m.room.member", {"membership": "join", "displayname": "A"}, "@a:x", origin_server_ts=7)
    member = member_from_state(good)
    assert member is not None and (member.user_id, member.membership, member.displayname, member.event_ts) == ("@a:x", "join", "A", 7)
    assert member_from_state(ev("m.room.member", {"membership": "dance"}, "@a:x")) is None
    assert member_from_state(ev("m.room.member", {"membership": "join"}, "not-a-user")) is None
    assert member_from_state(ev("m.room.member", {}, "@a:x")) is None
    assert member_from_state(ev("m.room.member", {"membership": "join", "displayname": ["x"]}, "@a:x")).displayname is None


def test_snapshot_skips_leaves_and_junk() -> None:
    snap = snapshot_from_state("!r:x", [
        ev("m.room.create", {"creator": "@a:x", "room_version": "10"}),
        ev("m.room.name", {"name": "Room"}),
        ev("m.room.member", {"membership": "join"}, "@a:x"),
        ev("m.room.member", {"membership": "leave"}, "@gone:x"),
        ev("m.room.member", {"membership": "ban"}, "@bad:x"),
        "garbage",  # type: ignore[list-item]
    ])
    assert snap.info.name == "Room" and snap.info.room_version == "10"
    assert {m.user_id: m.membership for m in snap.members} == {"@a:x": "join", "@bad:x": "ban"}
    assert snap.membership_of("@a:x") == "join" and snap.membership_of("@gone:x") is None


@pytest.mark.parametrize("value,ok", [
    ("@a:example.org", True), ("@a.b_c=d-e/f:sub.example.org:8448", True), ("@a:[::1]:8448", True),
    ("@a", False), ("a:example.org", False), ("@:example.org", False), ("@a b:x", False), ("@" + "a" * 300 + ":x", False),
])
def test_user_id_validation(value: str, ok: bool) -> None:
    assert is_user_id(value) is ok


def content(formatted: str = None, mentions: list = None) -> SimpleNamespace:
    return SimpleNamespace(formatted_body=formatted, mentions=SimpleNamespace(user_ids=mentions) if mentions else None)


def test_resolve_user_forms() -> None:
    assert resolve_user("@a:x.org", content(), BOT) == "@a:x.org"
    assert resolve_user("@a:x.org trailing words", content(), BOT) == "@a:x.org"
    pill = '!whereis <a href="https://matrix.to/#/@a:x.org">Anna</a>'
    assert resolve_user("Anna", content(pill), BOT) == "@a:x.org"
    assert resolve_user("https://matrix.to/#/%40a%3Ax.org", content(), BOT) == "@a:x.org"
    assert resolve_user("matrix:u/a:x.org", content(), BOT) == "@a:x.org"
    assert resolve_user("Anna", content(mentions=[BOT, "@a:x.org"]), BOT) == "@a:x.org"


@pytest.mark.parametrize("arg,message", [
    ("", "Whom should I look for?"), ("@broken", "is not a valid Matrix user ID"), ("Anna", "I can't tell which user"),
])
def test_resolve_user_errors(arg: str, message: str) -> None:
    with pytest.raises(BadUserArgument, match=message):
        resolve_user(arg, content(), BOT)
