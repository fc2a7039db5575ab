"""Turning raw Matrix state events into models. Used by full syncs and live events alike."""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, Optional

from .models import LEAVE, MEMBERSHIPS, Member, RoomInfo, RoomSnapshot

# https://spec.matrix.org/latest/appendices/#user-identifiers (historical chars tolerated)
USER_ID_RE = re.compile(r"^@[^:\s]+:[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^@[^:\s]+:\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

ROOM_INFO_EVENT_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.tombstone",
)


def is_user_id(value: str) -> bool:
    return len(value) <= 255 and bool(USER_ID_RE.match(value))


def _text(value: Any) -> Optional[str]:
    """A non-empty string or None; state content from other servers is not to be trusted."""
    return value if isinstance(value, str) and value.strip() else None


def room_info_changes(raw: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The RoomInfo fields a room-info state event sets, or None if it is not one."""
    if raw.get("state_key") != "" or raw.get("type") not in ROOM_INFO_EVENT_TYPES:
        return None
    content = raw.get("content") or {}
    kind = raw["type"]
    if kind == "m.room.create":
        version = content.get("room_version", "1")
        return {
            "creator": _text(content.get("creator")) or _text(raw.get("sender")),
            "room_version": version if isinstance(version, str) else "1",
        }
    if kind == "m.room.name":
        return {"name": _text(content.get("name"))}
    if kind == "m.room.topic":
        return {"topic": _text(content.get("topic"))}
    if kind == "m.room.canonical_alias":
        return {"canonical_alias": _text(content.get("alias"))}
    if kind == "m.room.encryption":
        return {"encrypted": _text(content.get("algorithm")) is not None}
    return {"replacement_room": _text(content.get("replacement_room"))}  # m.room.tombstone


def member_from_state(raw: Dict[str, Any]) -> Optional[Member]:
    """The Member an m.room.member state event describes, or None if it is malformed."""
    if raw.get("type") != "m.room.member":
        return None
    user_id = raw.get("state_key")
    content = raw.get("content") or {}
    membership = content.get("membership")
    if not isinstance(user_id, str) or not is_user_id(user_id) or membership not in MEMBERSHIPS:
        return None
    ts = raw.get("origin_server_ts")
    return Member(
        user_id=user_id,
        membership=membership,
        displayname=_text(content.get("displayname")),
        event_ts=ts if isinstance(ts, int) else 0,
    )


def snapshot_from_state(room_id: str, events: Iterable[Dict[str, Any]]) -> RoomSnapshot:
    """Build a RoomSnapshot from the full state list (``GET /rooms/{id}/state``)."""
    info: Dict[str, Any] = {}
    members = {}
    for raw in events:
        if not isinstance(raw, dict):
            continue
        changes = room_info_changes(raw)
        if changes is not None:
            info.update(changes)
            continue
        member = member_from_state(raw)
        if member is not None and member.membership != LEAVE:
            members[member.user_id] = member
    return RoomSnapshot(info=RoomInfo(room_id=room_id, **info), members=tuple(members.values()))
