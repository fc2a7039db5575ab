"""The plugin's shared vocabulary: plain data that flows between the layers.

Everything here carries Matrix IDs only, never the database's numeric IDs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

from mautrix.types import EventID, RoomID, UserID

JOIN = "join"
INVITE = "invite"
LEAVE = "leave"
BAN = "ban"
KNOCK = "knock"
MEMBERSHIPS = frozenset({JOIN, INVITE, LEAVE, BAN, KNOCK})

NAMES_SAMPLED = 10  # user IDs a MemberDiff keeps per direction (what !resync lists)
NAMES_LISTED = 15  # user IDs listed per group in !joins and !members at


class Member(NamedTuple):
    """One user's membership in one room, with the display name they use there. A tuple: a
    100k-member list is compared as a set and written as rows without a Python loop."""

    user_id: UserID
    membership: str
    displayname: str | None = None


class MemberChange(NamedTuple):
    """One m.room.member event, validated: who, what, by whom (for kicks and bans) and when. A
    tuple: made for every live member event (a third of the cost of a frozen dataclass)."""

    room_id: RoomID
    event_id: EventID
    member: Member
    sender: UserID
    reason: str | None = None
    origin_ts: int | None = None  # the sender's clock: shown, never used for ordering


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """What a room is. Counts and times are filled in by the store."""

    room_id: RoomID
    name: str | None = None
    topic: str | None = None
    canonical_alias: str | None = None
    encrypted: bool = False
    creator: UserID | None = None
    room_version: str | None = None
    replacement_room: RoomID | None = None
    joined_count: int = 0
    invited_count: int = 0
    updated_at: int = 0
    synced_at: int = 0
    needs_resync: bool = False  # a failed sync or event left it possibly out of date

    @property
    def display_name(self) -> str:
        """The room's name, else its canonical alias, else its ID."""
        return self.name or self.canonical_alias or self.room_id


# The RoomInfo fields that room-state events set (and a full sync replaces).
ROOM_INFO_FIELDS = (
    "name",
    "topic",
    "canonical_alias",
    "encrypted",
    "creator",
    "room_version",
    "replacement_room",
)


@dataclass(frozen=True, slots=True)
class RoomInfoChange:
    """One room-info state event (name, topic, alias, encryption, create, tombstone), validated."""

    room_id: RoomID
    event_id: EventID
    changes: tuple[tuple[str, str | bool | None], ...]  # (field in ROOM_INFO_FIELDS, value)
    sender: UserID | None = None


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """A room's full current state as fetched from the homeserver in one request."""

    info: RoomInfo
    members: tuple[Member, ...] = ()  # leaves excluded; exactly one entry per user


@dataclass(frozen=True, slots=True)
class MemberDiff:
    """How a full sync changed a room's joined members compared with what was stored."""

    room_id: RoomID
    added_count: int = 0
    removed_count: int = 0
    added: tuple[UserID, ...] = ()  # up to NAMES_SAMPLED user IDs, sorted
    removed: tuple[UserID, ...] = ()
    rows_written: int = 0  # membership rows inserted, updated or deleted
    was_known: bool = True

    @property
    def changed(self) -> bool:
        return bool(self.added_count or self.removed_count)


class Applied(enum.Enum):
    """What happened to one state event."""

    APPLIED = "applied"  # stored state changed
    UNCHANGED = "unchanged"  # processed; the stored state already said so
    DUPLICATE = "duplicate"  # processed before: skipped
    COVERED = "covered"  # recorded as processed by the full sync that covers it: skipped
    NOT_TRACKED = "not tracked"  # the room is not tracked; it was queued for a resync instead


@dataclass(frozen=True, slots=True)
class StaleRoom:
    """A room in the durable resync queue."""

    room_id: RoomID
    reason: str
    queued_at: int
    attempts: int
    next_attempt_at: int
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What syncing one room did."""

    room_id: RoomID
    diff: MemberDiff | None = None  # set when the room was (re)written
    room: RoomInfo | None = None  # the room as stored afterwards
    forgotten: bool = False  # the bot turned out not to be in the room
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class ResyncReport:
    """What syncing many rooms did."""

    synced: tuple[SyncOutcome, ...] = ()
    forgotten: tuple[RoomID, ...] = ()
    failed: tuple[SyncOutcome, ...] = ()
    error: str | None = None  # the room list itself could not be fetched

    @property
    def added(self) -> int:
        return sum(o.diff.added_count for o in self.synced if o.diff)

    @property
    def removed(self) -> int:
        return sum(o.diff.removed_count for o in self.synced if o.diff)


@dataclass(frozen=True, slots=True)
class SharedRoom:
    """A room another user is in, with the display name they use there."""

    room: RoomInfo
    displayname: str | None = None


@dataclass(frozen=True, slots=True)
class WhereisAnswer:
    """The answer to "where is user X?" for one asker."""

    user_id: UserID
    displayname: str | None = None  # from a room the asker may see
    rooms: tuple[RoomInfo, ...] = ()
    only_rooms_of_asker: bool = False  # rooms were limited to those the asker is in too
    refused: bool = False


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One membership transition, as history recorded it."""

    room_id: RoomID
    user_id: UserID
    membership: str
    previous: str | None  # None: not known
    observed_at: int  # Unix seconds, the bot's clock
    sender: UserID | None = None  # who made the change, when not the user themselves
    displayname: str | None = None  # the new display name, when it changed ("" when removed)
    reason: str | None = None
    event_id: EventID | None = None  # None: a full sync found the change (no event was seen)
    origin_at: int | None = None  # Unix seconds, the sender's clock


@dataclass(frozen=True, slots=True)
class Group:
    """Distinct users in one group, with a sample of their IDs (sorted)."""

    total: int = 0
    sample: tuple[UserID, ...] = ()


@dataclass(frozen=True, slots=True)
class RoomChanges:
    """Who joined, left (of whom how many were kicked) and was banned in a room in a period
    (``!joins``): distinct users each."""

    room: RoomInfo
    seconds: int
    joined: Group = Group()
    left: Group = Group()
    kicked: int = 0
    banned: Group = Group()
    refused: bool = False


@dataclass(frozen=True, slots=True)
class HistoryAnswer:
    """A user's membership history for one asker (``!history``)."""

    user_id: UserID
    entries: tuple[HistoryEntry, ...] = ()
    rooms: tuple[RoomInfo, ...] = ()  # the rooms the entries are in, as far as the bot knows them
    only_rooms_of_asker: bool = False  # entries were limited to rooms the asker is in too
    refused: bool = False
    held_before: tuple[HeldBefore, ...] = ()  # memberships held since before the bot tracked the room


@dataclass(frozen=True, slots=True)
class HeldBefore:
    """A membership someone held when the bot started tracking the room (no event of it was seen)."""

    room_id: RoomID
    membership: str
    since: int  # Unix seconds: when the bot started tracking the room (they held it by then)


@dataclass(frozen=True, slots=True)
class MembersAt:
    """A room's membership at a past time compared with now."""

    room_id: RoomID
    at: int  # Unix seconds
    joined_count: int
    invited_count: int
    joined_since: tuple[UserID, ...] = ()  # some who are joined now and were not then
    left_since: tuple[UserID, ...] = ()  # some who were joined then and are not now
    joined_since_total: int = 0
    left_since_total: int = 0
    tracked: bool = True  # False: the bot was not in the room then
    tracked_since: int | None = None  # not tracked: when the bot started tracking it after that time


@dataclass(frozen=True, slots=True)
class Wave:
    """Joins and leaves of one room in a period."""

    room: RoomInfo
    joined: int
    left: int


@dataclass(frozen=True, slots=True)
class RoomsAnswer:
    """The rooms one asker may see (``!rooms``)."""

    rooms: tuple[RoomInfo, ...] = ()
    only_rooms_of_asker: bool = False
    refused: bool = False
    waiting_for_resync: tuple[StaleRoom, ...] = field(default=())  # shown to admins only


@dataclass(frozen=True, slots=True)
class JoinCount:
    """Distinct users who joined a room in a period (live events only: not what a resync found)."""

    room_id: RoomID
    joined: int
    first_joiners: tuple[UserID, ...] = ()  # the earliest, in order of joining
    first_at: int = 0  # Unix seconds, the bot's clock
    last_at: int = 0


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert sent to the moderators' room (``kind``: "wave" or "stuck"), kept so that a restart
    goes on editing it and never sends it twice."""

    kind: str
    room_id: RoomID
    started_at: int  # Unix seconds: when the wave began; for "stuck", the UTC day it was sent
    notice_event_id: EventID | None
    count: int = 0  # a wave's joiners so far
    updated_at: int = 0
    detail: str | None = None  # JSON: what else the notice needs
    open: bool = True
