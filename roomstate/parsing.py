"""Raw Matrix JSON -> validated models. Used for live events and full syncs alike.

Everything here comes from the homeserver or from other users' events and is untrusted: every
shape is checked, and anything malformed yields None (the caller skips it with one log line).
Nothing in this module raises on bad input except ``state_events`` and ``joined_rooms``, which
raise ``MalformedResponse`` for a response that is not what the API promises.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from mautrix.types import EventID, RoomID, UserID

from .models import (
    JOIN,
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
HANDLED_STATE_TYPES = frozenset({"m.room.member", *ROOM_INFO_EVENT_TYPES})


class MalformedResponse(ValueError):
    """The homeserver's answer does not have the shape the API promises."""


def _matches(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and pattern.fullmatch(value) is not None


# Every live event names its room, sender and member: the same IDs again and again. A hit in these
# small caches costs a fifth of the regular expression. (Only strings of an ID's length get in.)
@functools.lru_cache(maxsize=4096)
def _valid_user_id(value: str) -> bool:
    return USER_ID_RE.fullmatch(value) is not None


@functools.lru_cache(maxsize=1024)
def _valid_room_id(value: str) -> bool:
    return ROOM_ID_RE.fullmatch(value) is not None


def is_user_id(value: Any) -> TypeGuard[UserID]:
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and _valid_user_id(value)


def is_room_id(value: Any) -> TypeGuard[RoomID]:
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and _valid_room_id(value)


def is_event_id(value: Any) -> TypeGuard[EventID]:
    if isinstance(value, str) and value.isascii():  # the same test as EVENT_ID_RE, without it
        return 1 < len(value) <= MAX_ID_LENGTH and value[0] == "$" and value.isprintable() and " " not in value
    return _matches(EVENT_ID_RE, value)


def is_alias(value: Any) -> bool:
    return _matches(ALIAS_RE, value)


def _string(value: Any) -> str | None:
    """A string as it can be stored anywhere, else None: NUL (PostgreSQL text cannot hold it) and
    lone surrogates (JSON allows "\\ud800"; no UTF-8 encoder does) become U+FFFD."""
    if not isinstance(value, str):
        return None
    text: str = value.replace("\x00", "\ufffd") if "\x00" in value else value
    if text.isascii():  # (no surrogates: nothing to encode to find out)
        return text
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


def is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """A JSON object (a plain dict first: asking ``Mapping`` costs four times as much)."""
    return type(value) is dict or isinstance(value, Mapping)


def _content(raw: Mapping[str, Any]) -> Mapping[str, Any] | None:
    content = raw.get("content")
    return content if is_mapping(content) else None


# ---- events -----------------------------------------------------------------------------------


def member_from_state(raw: Any) -> Member | None:
    """The Member an m.room.member state event describes, or None if it is malformed."""
    if not is_mapping(raw) or raw.get("type") != "m.room.member":
        return None
    user_id = raw.get("state_key")
    content = _content(raw)
    if content is None or not is_user_id(user_id):
        return None
    membership = content.get("membership")
    if not isinstance(membership, str) or membership not in MEMBERSHIPS:
        return None
    return Member(user_id, membership, _string(content.get("displayname")))


def member_change(raw: Any) -> MemberChange | None:
    """A live m.room.member event, or None if it is malformed. On the path of every live member
    event: an event about its sender (a join, a leave, a rename) checks the user ID once."""
    member = member_from_state(raw)
    if member is None:
        return None
    room_id, event_id, sender = raw.get("room_id"), raw.get("event_id"), raw.get("sender")
    if not (is_room_id(room_id) and is_event_id(event_id) and (sender == member.user_id or is_user_id(sender))):
        return None
    reason = raw["content"].get("reason")
    if reason is not None:
        reason = _string(reason)
        if reason is not None:
            reason = reason[:MAX_REASON]
    return MemberChange(room_id, event_id, member, sender, reason, _timestamp(raw.get("origin_server_ts")))


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
    sender = raw.get("sender")
    return RoomInfoChange(
        RoomID(room_id), EventID(event_id), tuple(fields.items()), UserID(sender) if is_user_id(sender) else None
    )


def is_old_command(raw: Mapping[str, Any], before_ms: int) -> bool:
    """Whether an event is a message that may be a command (its body starts with "!") sent
    before ``before_ms`` (by the sender's clock, which is good enough to tell "while the bot was
    down" from "just now")."""
    content = _content(raw)
    body = content.get("body") if content is not None else None
    sent = _timestamp(raw.get("origin_server_ts"))
    return (
        raw.get("type") == "m.room.message"
        and isinstance(body, str)
        and body.startswith("!")
        and sent is not None
        and sent < before_ms
    )


# ---- full state -------------------------------------------------------------------------------


def snapshot_from_state(room_id: RoomID, events: Iterable[Any]) -> RoomSnapshot:
    """Build a RoomSnapshot from a room's full state (``GET /rooms/{id}/state``); malformed
    events are skipped. Members are unique per user, leaves excluded. An event of another room
    makes the whole answer wrong (a misdirected response): MalformedResponse."""
    info: dict[str, Any] = {}
    members: dict[UserID, Member] = {}
    for raw in events:
        if not isinstance(raw, Mapping):
            continue
        named = raw.get("room_id")
        if named is not None and named != room_id:
            raise MalformedResponse(f"the state it sent for {room_id} holds events of another room")
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


def state_snapshot(room_id: RoomID, body: bytes, bot_user_id: UserID) -> tuple[RoomSnapshot, str | None]:
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


# ---- /sync responses ----------------------------------------------------------------------------


def _events(section: Any) -> list[Any]:
    events = section.get("events") if isinstance(section, Mapping) else None
    return events if isinstance(events, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _state_key_of(raw: Mapping[str, Any]) -> tuple[Any, Any]:
    return raw.get("type"), raw.get("state_key")


@dataclass(frozen=True)
class RoomSync:
    """One room of a /sync response's ``join`` (or ``leave``) section: its ``state`` and
    ``timeline`` events, untouched."""

    room_id: RoomID
    state: list[Any]
    timeline: list[Any]
    limited: bool
    # the events (by identity) that named another room when the response was read: mautrix sets
    # every event's room ID to its section's before dispatching it
    misdirected: frozenset[int] = frozenset()

    def _located(self, raw: Any) -> Mapping[str, Any] | None:
        """A sync event as the event of this room it is (sync events carry no room ID; one that
        named another room is misdirected: None)."""
        if not isinstance(raw, Mapping) or id(raw) in self.misdirected:
            return None
        return raw if raw.get("room_id") == self.room_id else {**raw, "room_id": self.room_id}

    @property
    def has_events(self) -> bool:
        return bool(self.state or self.timeline)

    def events(self) -> Iterator[Mapping[str, Any]]:
        """Every event of the room, in delivery order (``state``, then ``timeline``), each with its
        room ID; misdirected ones (another room's ID) are left out."""
        for raw in itertools.chain(self.state, self.timeline):
            located = self._located(raw)
            if located is not None:
                yield located

    def own_join(self, bot_user_id: str) -> bool:
        """Whether the bot joined in these events (a join whose previous membership was not join;
        without ``prev_content`` any join of the bot counts: a needless sync at worst)."""
        for raw in self.events():
            if raw.get("state_key") != bot_user_id:
                continue
            member = member_from_state(raw)
            previous = _mapping(raw.get("unsigned")).get("prev_content")
            was_joined = isinstance(previous, Mapping) and previous.get("membership") == JOIN
            if member is not None and member.membership == JOIN and not was_joined:
                return True
        return False

    def handled_state_event_ids(self) -> frozenset[EventID]:
        """The IDs of the member and room-info state events among these (those a full sync covers)."""
        return frozenset(
            EventID(raw["event_id"])
            for raw in self.events()
            if raw.get("type") in HANDLED_STATE_TYPES
            and isinstance(raw.get("state_key"), str)
            and is_event_id(raw.get("event_id"))
        )

    def handled_state_events(self) -> dict[EventID, Mapping[str, Any]]:
        """event ID -> raw JSON (with its room ID) of the member and room-info state events: what
        live handlers validate instead of mautrix's parsed event, which fills in defaults (a member
        event without a membership parses as "leave"). An event that names another room maps to
        ``{}``: mautrix dispatches it as this room's, and it must not be applied to either."""
        found: dict[EventID, Mapping[str, Any]] = {}
        for raw in itertools.chain(self.state, self.timeline):
            if isinstance(raw, Mapping) and raw.get("type") in HANDLED_STATE_TYPES:
                event_id = raw.get("event_id")
                if isinstance(event_id, str):
                    found[EventID(event_id)] = self._located(raw) or {}
        return found

    def asserted_state(self) -> tuple[list[MemberChange], list[RoomInfoChange]]:
        """The valid member and room-info events of the ``state`` section whose keys the timeline
        does not set again: what the server says is the room's state before this timeline."""
        overwritten = {_state_key_of(raw) for raw in self.timeline if isinstance(raw, Mapping) and "state_key" in raw}
        located = [
            raw for raw in map(self._located, self.state) if raw is not None and _state_key_of(raw) not in overwritten
        ]
        members = [change for change in map(member_change, located) if change is not None]
        infos = [change for change in map(room_info_change, located) if change is not None]
        return members, infos


@dataclass(frozen=True)
class SyncView:
    """A /sync response, read: what the logic layer decides on."""

    joined: tuple[RoomSync, ...] = ()
    left: tuple[RoomSync, ...] = ()  # in ``rooms.leave`` and not (again) in ``rooms.join``
    dispatchable: bool = True  # mautrix can dispatch every event (see sync_dispatchable)
    next_batch: str | None = None


def sync_view(sync: Mapping[str, Any]) -> SyncView:
    """Read a raw /sync response (malformed parts are skipped: rooms under IDs that are not room
    IDs, sections that are not objects)."""
    rooms = _mapping(sync.get("rooms"))
    join_section, leave_section = _mapping(rooms.get("join")), _mapping(rooms.get("leave"))
    next_batch = sync.get("next_batch")
    return SyncView(
        _rooms(join_section),
        _rooms({room_id: data for room_id, data in leave_section.items() if room_id not in join_section}),
        sync_dispatchable(sync),
        next_batch if isinstance(next_batch, str) else None,
    )


def _rooms(section: Mapping[str, Any]) -> tuple[RoomSync, ...]:
    rooms = []
    for room_id, data in section.items():
        if not is_room_id(room_id) or not isinstance(data, Mapping):
            continue
        timeline, state, events = data.get("timeline"), _events(data.get("state")), _events(data.get("timeline"))
        misdirected = frozenset(
            id(raw)
            for raw in itertools.chain(state, events)
            if isinstance(raw, Mapping) and raw.get("room_id", room_id) != room_id
        )
        rooms.append(RoomSync(RoomID(room_id), state, events, _mapping(timeline).get("limited") is True, misdirected))
    return tuple(rooms)


def joined_rooms(response: Any) -> tuple[list[RoomID], int]:
    """Room IDs from a ``/joined_rooms`` response, and how many entries were not room IDs (left
    out); MalformedResponse if it is not a list at all (never an empty list by mistake: that would
    mean "forget every room")."""
    rooms = response.get("joined_rooms") if isinstance(response, Mapping) else None
    if not isinstance(rooms, list):
        raise MalformedResponse("the joined_rooms list is missing")
    valid = [RoomID(room) for room in rooms if is_room_id(room)]
    return valid, len(rooms) - len(valid)
