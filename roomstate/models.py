"""Plain data objects the plugin hands around. They carry Matrix IDs only, never database IDs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

JOIN = "join"
INVITE = "invite"
LEAVE = "leave"
BAN = "ban"
KNOCK = "knock"
MEMBERSHIPS = frozenset({JOIN, INVITE, LEAVE, BAN, KNOCK})


@dataclass(frozen=True)
class Member:
    """One user's membership in one room, as of the member event with ``event_ts``."""

    user_id: str
    membership: str
    displayname: Optional[str] = None
    event_ts: int = 0


@dataclass(frozen=True)
class RoomInfo:
    """What a room is. Member counts are filled in when read from the store."""

    room_id: str
    name: Optional[str] = None
    topic: Optional[str] = None
    canonical_alias: Optional[str] = None
    encrypted: bool = False
    creator: Optional[str] = None
    room_version: Optional[str] = None
    replacement_room: Optional[str] = None
    joined_count: int = 0
    invited_count: int = 0
    updated_at: int = 0

    @property
    def display_name(self) -> str:
        """The room's name, else its canonical alias, else its ID."""
        return self.name or self.canonical_alias or self.room_id


@dataclass(frozen=True)
class RoomSnapshot:
    """A room's full current state as fetched from the homeserver in one request."""

    info: RoomInfo
    members: tuple = field(default_factory=tuple)  # tuple[Member, ...], leaves excluded

    def membership_of(self, user_id: str) -> Optional[str]:
        for member in self.members:
            if member.user_id == user_id:
                return member.membership
        return None


@dataclass(frozen=True)
class MemberDiff:
    """Joined members a sync added and removed compared with what the store had."""

    room_id: str
    added: tuple = ()  # tuple[str, ...] user IDs
    removed: tuple = ()
    was_known: bool = True

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)
