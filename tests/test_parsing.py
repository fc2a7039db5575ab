"""Parsing untrusted JSON: validated models, or None; whole responses raise MalformedResponse."""

from __future__ import annotations

import json
from typing import Any

import pytest

from roomstate.mentions import BadUserArgument, Problem, resolve_user
from roomstate.models import JOIN, Member
from roomstate.parsing import (
    EVENT_ID_RE,
    MAX_ID_LENGTH,
    MalformedResponse,
    is_event_id,
    is_room_id,
    is_user_id,
    iter_json_array,
    joined_rooms,
    member_change,
    room_info_change,
    state_snapshot,
)

ROOM = "!r:x.org"


def member(content: Any, state_key: Any = "@a:x.org", **extra: Any) -> dict[str, Any]:
    return {
        "type": "m.room.member",
        "room_id": ROOM,
        "event_id": "$e",
        "sender": "@a:x.org",
        "state_key": state_key,
        "content": content,
        "origin_server_ts": 1,
        **extra,
    }


def test_member_events_are_validated() -> None:
    good = member_change(member({"membership": "join", "displayname": "A"}))
    assert good is not None and good.member == Member("@a:x.org", JOIN, "A") and good.origin_ts == 1
    for content in (None, "join", [], {"membership": ["join"]}, {"membership": {"x": 1}}, {"membership": "owner"}, {}):
        assert member_change(member(content)) is None, content
    for key in (None, 5, "alice", "@alice", "@a b:x.org", "@a:x.org\n", "@\x00:x.org", "@" + "a" * 300 + ":x"):
        assert member_change(member({"membership": "join"}, state_key=key)) is None, key
    assert member_change({**member({"membership": "join"}), "event_id": None}) is None
    assert member_change({**member({"membership": "join"}), "sender": "nobody"}) is None


def test_odd_values_never_raise_and_are_made_storable() -> None:
    odd = member_change(member({"membership": "ban", "displayname": 5, "reason": "a\x00b"}, origin_server_ts=2**63))
    assert odd is not None and odd.member.displayname is None and odd.reason == "a\ufffdb" and odd.origin_ts is None
    named = member_change(member({"membership": "join", "displayname": "x\x00y"}))
    assert named is not None and named.member.displayname == "x\ufffdy"
    assert member_change(member({"membership": "join"}, origin_server_ts=True)).origin_ts is None  # type: ignore[union-attr]
    # JSON may carry lone surrogates ("\\ud800"), which no database encoder accepts; pairs are kept
    lone = member_change(member({"membership": "leave", "displayname": "a\ud800", "reason": "\udfff" + "r" * 900}))
    assert lone is not None and lone.reason == "\ufffd" + "r" * 499 and lone.member.displayname == "a\ufffd"
    paired = member_change(member({"membership": "join", "displayname": "\ud83d\ude00"}))
    assert paired is not None and paired.member.displayname == "\U0001f600"


def test_room_info_events() -> None:
    def changes(kind: str, content: Any, **extra: Any) -> Any:
        parsed = room_info_change(
            {
                "type": kind,
                "state_key": "",
                "room_id": ROOM,
                "event_id": "$e",
                "sender": "@c:x.org",
                "content": content,
                **extra,
            }
        )
        return None if parsed is None else dict(parsed.changes)

    assert changes("m.room.name", {"name": "N"}) == {"name": "N"}
    assert changes("m.room.name", {"name": " "}) == {"name": None}
    assert changes("m.room.topic", {"topic": 5}) == {"topic": None}
    assert changes("m.room.canonical_alias", {"alias": "#a:x.org"}) == {"canonical_alias": "#a:x.org"}
    assert changes("m.room.canonical_alias", {"alias": "https://evil.example"}) == {"canonical_alias": None}
    assert changes("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}) == {"encrypted": True}
    assert changes("m.room.encryption", {}) is None  # encryption cannot be switched off
    assert changes("m.room.tombstone", {"replacement_room": "!new:x.org"}) == {"replacement_room": "!new:x.org"}
    assert changes("m.room.tombstone", {"replacement_room": "https://evil.example/x"}) is None
    assert changes("m.room.create", {"room_version": "12"}) == {"creator": "@c:x.org", "room_version": "12"}
    assert changes("m.room.create", {"creator": "@o:x.org"}) == {"creator": "@o:x.org", "room_version": "1"}
    assert changes("m.room.name", None) is None and changes("m.room.name", "x") is None
    assert room_info_change({"type": "m.room.name", "state_key": "x", "content": {"name": "N"}}) is None


def test_ids() -> None:
    assert is_user_id("@alice:example.org") and is_user_id("@a:[::1]:8448") and is_user_id("@Old=Style:x.org")
    assert not is_user_id("@alice") and not is_user_id("alice:example.org") and not is_user_id(["@a:b"])
    assert is_room_id("!abc:x.org") and is_room_id("!opaqueV12roomID") and not is_room_id("#a:x.org")
    assert not is_room_id("!a b:x.org") and not is_room_id("!")


def test_state_responses() -> None:
    events = [
        member({"membership": "join", "displayname": "A"}),
        member({"membership": "invite"}, state_key="@b:x.org"),
        member({"membership": "leave"}, state_key="@c:x.org"),
        member({"membership": "join"}, state_key="@bot:x.org"),
        "junk",
        None,
        5,
        {"type": "m.room.name", "state_key": "", "content": {"name": "Room"}},
        member(None, state_key="@d:x.org"),
    ]
    snapshot, own = state_snapshot(ROOM, json.dumps(events).encode(), "@bot:x.org")
    assert own == JOIN and snapshot.info.name == "Room"
    assert {m.user_id for m in snapshot.members} == {"@a:x.org", "@b:x.org", "@bot:x.org"}
    _, missing = state_snapshot(ROOM, json.dumps(events[:2]).encode(), "@bot:x.org")
    assert missing is None  # no member event for the bot: never read as "not in the room"
    for body in (b"{}", b'"x"', b"[1,", b"[1] 2", b"\xff\xfe", b""):
        with pytest.raises(MalformedResponse):
            state_snapshot(ROOM, body, "@bot:x.org")


def test_json_arrays_are_read_element_by_element() -> None:
    assert list(iter_json_array(b' [ 1 , {"a": [2]} ,"x" ] ')) == [1, {"a": [2]}, "x"]
    assert list(iter_json_array(b"[]")) == []


def test_joined_rooms_keeps_the_room_ids_of_a_list_and_counts_the_rest() -> None:
    assert joined_rooms({"joined_rooms": ["!a:x.org"]}) == (["!a:x.org"], 0)
    assert joined_rooms({"joined_rooms": []}) == ([], 0)
    too_long = "!" + "a" * 300 + ":x.org"
    assert joined_rooms({"joined_rooms": ["!a:x.org", too_long, 5, None, "#alias:x.org", "!b:y"]}) == (
        ["!a:x.org", "!b:y"],
        4,
    )
    for bad in ({"joined_rooms": "!a:x.org"}, {"joined_rooms": None}, {}, [], None):
        with pytest.raises(MalformedResponse):
            joined_rooms(bad)


def test_resolve_user_forms() -> None:
    assert resolve_user("@a:x.org", None, "@bot:x.org") == "@a:x.org"
    assert resolve_user("https://matrix.to/#/@a:x.org", None, "@bot:x.org") == "@a:x.org"
    assert resolve_user("matrix:u/a:x.org", None, "@bot:x.org") == "@a:x.org"
    assert resolve_user("  @a:x.org  trailing", None, "@bot:x.org") == "@a:x.org"


def test_resolve_user_errors() -> None:
    for argument, problem in (("", Problem.MISSING), ("@nope", Problem.NOT_A_USER_ID), ("bob", Problem.UNKNOWN)):
        with pytest.raises(BadUserArgument) as caught:
            resolve_user(argument, None, "@bot:x.org")
        assert caught.value.problem is problem


def test_event_ids_are_checked_as_the_pattern_says() -> None:
    """The ASCII shortcut of ``is_event_id`` accepts exactly what EVENT_ID_RE does."""
    characters = [chr(code) for code in range(0x300)] + ["\u2028", "\u3000", "\ufeff", "\U0001f600"]
    candidates = ["", "$", "$$", "x$a", "$" + "a" * (MAX_ID_LENGTH - 1), "$" + "a" * MAX_ID_LENGTH, None, 5, b"$a"]
    for character in characters:
        candidates += ["$ab" + character + "cd", "$" + character, character + "$ab", "$ab" + character]
    for candidate in candidates:
        fits = isinstance(candidate, str) and len(candidate) <= MAX_ID_LENGTH
        expected = fits and EVENT_ID_RE.fullmatch(candidate) is not None
        assert is_event_id(candidate) is expected, repr(candidate)


def test_ids_checked_again_give_the_same_answer() -> None:
    """User and room IDs are checked once and remembered (a small cache): a repeat is answered
    the same, and a malformed ID never passes for a valid one."""
    for _ in range(2):
        assert is_user_id("@a:x.org") and is_room_id(ROOM)
        assert not is_user_id("@a b:x.org") and not is_room_id("!r x:x.org")
        assert not is_user_id(ROOM) and not is_room_id("@a:x.org")
        assert not is_user_id(["@a:x.org"]) and not is_room_id(None)


def test_ids_too_long_to_be_valid_stay_out_of_the_cache() -> None:
    from roomstate import parsing

    before = parsing._valid_user_id.cache_info().currsize, parsing._valid_room_id.cache_info().currsize
    for n in range(50):
        assert not is_user_id(f"@{n}" + "a" * 300 + ":x") and not is_room_id(f"!{n}" + "a" * 300 + ":x")
    after = parsing._valid_user_id.cache_info().currsize, parsing._valid_room_id.cache_info().currsize
    assert after == before
