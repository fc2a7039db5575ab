"""Raw Matrix JSON -> validated models. Used for live events and full syncs alike.

Everything here comes from the homeserver or from other users' events and is untrusted: every
shape is checked, and anything malformed yields None (the caller skips it with one log line).
Nothing in this module raises on bad input except ``state_events`` and ``joined_rooms``, which
raise ``MalformedResponse`` for a response that is not what the API promises.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .models import (
    LEAVE,
    MEMBERSHIPS,
    Member,
    MemberChange,
    RoomInfo,
    RoomInfoChange,
    RoomSnapshot,
)

MAX_ID_LENGTH = 255
MAX_TIMESTAMP = 2**53  # beyond that, an origin_server_ts is junk
MAX_REASON = 500  # characters of a membership change's reason kept in history

# https://spec.matrix.org/latest/appendices/#user-identifiers (historical localparts tolerated)
_SERVER = r"(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
_OPAQUE = r"[^:\s\x00-\x1f\x7f]+"  # no separators, whitespace or control characters
USER_ID_RE = re.compile(rf"@{_OPAQUE}:{_SERVER}")
ALIAS_RE = re.compile(rf"#{_OPAQUE}:{_SERVER}")
# Room IDs are opaque; from room version 12 they have no server part.
ROOM_ID_RE = re.compile(rf"!{_OPAQUE}(?::{_SERVER})?")
EVENT_ID_RE = re.compile(r"\$[^\s\x00-\x1f\x7f]+")

ROOM_INFO_EVENT_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.tombstone",
)


class MalformedResponse(ValueError):
    """The homeserver's answer does not have the shape the API promises."""


def _matches(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and pattern.fullmatch(value) is not None


def is_user_id(value: Any) -> bool:
    return _matches(USER_ID_RE, value)


def is_room_id(value: Any) -> bool:
    return _matches(ROOM_ID_RE, value)


def is_event_id(value: Any) -> bool:
    return _matches(EVENT_ID_RE, value)


def is_alias(value: Any) -> bool:
    return _matches(ALIAS_RE, value)


def _string(value: Any) -> str | None:
    """A string as it can be stored anywhere, else None: NUL (PostgreSQL text cannot hold it) and
    lone surrogates (JSON allows "\\ud800"; no UTF-8 encoder does) become U+FFFD."""
    if not isinstance(value, str):
        return None
    text: str = value.replace("\x00", "\ufffd") if "\x00" in value else value
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _text(value: Any) -> str | None:
    """A non-blank string, else None."""
    text = _string(value)
    return text if text is not None and text.strip() else None


def _timestamp(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TIMESTAMP:
        return None
    return value


def _content(raw: Mapping[str, Any]) -> Mapping[str, Any] | None:
    content = raw.get("content")
    return content if isinstance(content, Mapping) else None


# ---- events -----------------------------------------------------------------------------------


def member_from_state(raw: Any) -> Member | None:
    """The Member an m.room.member state event describes, or None if it is malformed."""
    if not isinstance(raw, Mapping) or raw.get("type") != "m.room.member":
        return None
    user_id = raw.get("state_key")
    content = _content(raw)
    if content is None or not isinstance(user_id, str) or not is_user_id(user_id):
        return None
    membership = content.get("membership")
    if not isinstance(membership, str) or membership not in MEMBERSHIPS:
        return None
    return Member(user_id, membership, _string(content.get("displayname")))


def member_change(raw: Any) -> MemberChange | None:
    """A live m.room.member event, or None if it is malformed."""
    member = member_from_state(raw)
    if member is None:
        return None
    room_id, event_id, sender = raw.get("room_id"), raw.get("event_id"), raw.get("sender")
    if not (is_room_id(room_id) and is_event_id(event_id) and is_user_id(sender)):
        return None
    content = _content(raw) or {}
    reason = _string(content.get("reason"))
    if reason is not None:
        reason = reason[:MAX_REASON]
    return MemberChange(
        room_id=room_id,
        event_id=event_id,
        member=member,
        sender=sender,
        reason=reason,
        origin_ts=_timestamp(raw.get("origin_server_ts")),
    )


def room_info_fields(raw: Any) -> dict[str, str | bool | None] | None:
    """The RoomInfo fields a room-info state event sets, or None if it is not a (valid) one."""
    if not isinstance(raw, Mapping) or raw.get("state_key") != "" or raw.get("type") not in ROOM_INFO_EVENT_TYPES:
        return None
    content = _content(raw)
    if content is None:
        return None
    kind = raw["type"]
    if kind == "m.room.create":
        version = content.get("room_version", "1")
        creator = content.get("creator")
        sender = raw.get("sender")
        return {
            "creator": creator if is_user_id(creator) else sender if is_user_id(sender) else None,
            "room_version": _string(version) if isinstance(version, str) and 0 < len(version) <= 64 else None,
        }
    if kind == "m.room.name":
        return {"name": _text(content.get("name"))}
    if kind == "m.room.topic":
        return {"topic": _text(content.get("topic"))}
    if kind == "m.room.canonical_alias":
        alias = content.get("alias")
        return {"canonical_alias": alias if is_alias(alias) else None}
    if kind == "m.room.encryption":
        # Encryption cannot be turned off; an event without an algorithm is malformed.
        return {"encrypted": True} if _text(content.get("algorithm")) else None
    target = content.get("replacement_room")  # m.room.tombstone
    return {"replacement_room": target} if is_room_id(target) else None


def room_info_change(raw: Any) -> RoomInfoChange | None:
    """A live room-info state event, or None if it is malformed or not one."""
    fields = room_info_fields(raw)
    if fields is None:
        return None
    room_id, event_id = raw.get("room_id"), raw.get("event_id")
    if not (is_room_id(room_id) and is_event_id(event_id)):
        return None
    return RoomInfoChange(room_id, event_id, tuple(fields.items()))


# ---- full state -------------------------------------------------------------------------------


def snapshot_from_state(room_id: str, events: Iterable[Any]) -> RoomSnapshot:
    """Build a RoomSnapshot from a room's full state (``GET /rooms/{id}/state``); malformed
    events are skipped. Members are unique per user, leaves excluded."""
    info: dict[str, Any] = {}
    members: dict[str, Member] = {}
    for raw in events:
        if not isinstance(raw, Mapping):
            continue
        if raw.get("type") == "m.room.member":
            member = member_from_state(raw)
            if member is None:
                continue
            if member.membership == LEAVE:
                members.pop(member.user_id, None)
            else:
                members[member.user_id] = member
            continue
        fields = room_info_fields(raw)
        if fields is not None:
            info.update(fields)
    return RoomSnapshot(info=RoomInfo(room_id=room_id, **info), members=tuple(members.values()))


_SEPARATOR = re.compile(r"\s*(,|\])\s*")
_WHITESPACE = re.compile(r"\s*")


def iter_json_array(body: bytes) -> Iterator[Any]:
    """The elements of a JSON array, decoded one at a time. Unlike ``json.loads`` of the whole
    body (which holds the GIL for the entire parse: ~0.7 s for a 100k-member room's state), the
    GIL is released between elements, so parsing in a thread never stalls the event loop, and
    each element can be dropped as soon as it has been read."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        text = "".join(decoder.decode(body[i : i + (1 << 20)]) for i in range(0, len(body), 1 << 20))
        text += decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        raise MalformedResponse(f"not UTF-8: {error}") from None
    scan = json.JSONDecoder().raw_decode
    index = _WHITESPACE.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("[", index):
        raise MalformedResponse("expected a JSON array")
    index = _WHITESPACE.match(text, index + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", index):
        return
    while True:
        try:
            element, index = scan(text, index)
        except json.JSONDecodeError as error:
            raise MalformedResponse(f"invalid JSON: {error}") from None
        yield element
        separator = _SEPARATOR.match(text, index)
        if separator is None:
            raise MalformedResponse("invalid JSON: expected ',' or ']'")
        index = separator.end()
        if separator.group(1) == "]":
            if text[index:].strip():
                raise MalformedResponse("invalid JSON: data after the array")
            return


def state_snapshot(room_id: str, body: bytes, bot_user_id: str) -> tuple[RoomSnapshot, str | None]:
    """Parse a ``/state`` response body: the snapshot, and the bot's own membership in it (None
    if its member event is missing or malformed, which is never taken as "not in the room")."""
    bot_membership: list[str | None] = [None]

    def events() -> Iterator[Any]:
        for raw in iter_json_array(body):
            if isinstance(raw, Mapping) and raw.get("state_key") == bot_user_id:
                member = member_from_state(raw)
                if member is not None:
                    bot_membership[0] = member.membership
            yield raw

    snapshot = snapshot_from_state(room_id, events())
    return snapshot, bot_membership[0]


def _dispatchable(events: Any) -> bool:
    if not isinstance(events, list):
        return True  # mautrix reads no events from it
    return all(isinstance(e, Mapping) and isinstance(e.get("content", {}), Mapping) for e in events)


def sync_dispatchable(sync: Mapping[str, Any]) -> bool:
    """Whether mautrix can dispatch every event of this /sync response. An event that is not an
    object, or whose content is not one, makes mautrix's sync handling fail, and every event
    after it in the response is never dispatched."""
    sections = [sync.get(key) for key in ("account_data", "ephemeral", "to_device")]
    rooms = sync.get("rooms")
    if isinstance(rooms, Mapping):
        for kind, section_names in (
            ("join", ("state", "timeline", "ephemeral")),
            ("leave", ("timeline",)),
            ("invite", ("invite_state",)),
        ):
            group = rooms.get(kind)
            if isinstance(group, Mapping):
                for data in group.values():
                    if isinstance(data, Mapping):
                        sections += [data.get(name) for name in section_names]
    return all(_dispatchable(s.get("events")) for s in sections if isinstance(s, Mapping))


def joined_rooms(response: Any) -> list[str]:
    """Room IDs from a ``/joined_rooms`` response; MalformedResponse if it is not a list of
    room IDs (never an empty list by mistake: that would mean "forget every room")."""
    rooms = response.get("joined_rooms") if isinstance(response, Mapping) else None
    if not isinstance(rooms, list) or not all(is_room_id(room) for room in rooms):
        raise MalformedResponse("the joined_rooms list is malformed")
    return list(rooms)
