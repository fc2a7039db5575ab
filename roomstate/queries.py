"""The read side: every question about rooms, members and history, answered from the store as far
as the asker may know (``visibility.Visibility``). Nothing here writes.

Chat commands ask these; so will the web view and the API, and get the same answers.
"""

from __future__ import annotations

import logging
import time

from mautrix.types import RoomID, UserID

from . import power
from .config import Config
from .db import RoomStore
from .homeserver import Homeserver
from .models import (
    NAMES_LISTED,
    Group,
    HeldBefore,
    HistoryAnswer,
    HistoryEntry,
    Member,
    MembersAt,
    RoomChanges,
    RoomInfo,
    RoomsAnswer,
    Wave,
    WhereisAnswer,
)
from .text import is_blank
from .visibility import Visibility

log = logging.getLogger("roomstate.queries")


def by_name(room: RoomInfo) -> tuple[str, str]:
    return (room.display_name.casefold(), room.room_id)


class RoomQueries:
    def __init__(self, store: RoomStore, homeserver: Homeserver, config: Config, logger: logging.Logger = log) -> None:
        self.store = store
        self.homeserver = homeserver
        self.config = config
        self.log = logger
        self.visibility = Visibility(config, self._joined_rooms_of)

    async def _joined_rooms_of(self, user_id: UserID) -> frozenset[RoomID]:
        return frozenset(shared.room.room_id for shared in await self.store.rooms_of(user_id))

    async def room(self, room_id: RoomID) -> RoomInfo | None:
        """What the store knows of the room (no visibility: the caller is in it)."""
        return await self.store.room(room_id)

    async def rooms_for(self, asker: UserID) -> RoomsAnswer:
        """The rooms ``asker`` may see; admins also get the rooms waiting for a resync."""
        scope = await self.visibility.scope(asker)
        if scope.refused:
            return RoomsAnswer(refused=True)
        rooms = scope.visible(await self.store.rooms(), lambda room: room.room_id)
        waiting = tuple(await self.store.resync_queue()) if scope.admin else ()
        return RoomsAnswer(
            tuple(sorted(rooms, key=by_name)), only_rooms_of_asker=scope.limited, waiting_for_resync=waiting
        )

    async def whereis(self, user_id: UserID, *, asker: UserID, asked_in: RoomID) -> WhereisAnswer:
        """Rooms ``user_id`` shares with the bot, as far as ``asker`` may know. The name shown
        is the one the user has in a room the asker may see (this one first), never one from a
        room the asker is not in."""
        scope = (await self.visibility.scope(asker)).about(user_id)
        if scope.refused:
            return WhereisAnswer(user_id, refused=True)
        shared = scope.visible(await self.store.rooms_of(user_id), lambda s: s.room.room_id)
        shared.sort(key=lambda s: (s.room.room_id != asked_in, by_name(s.room)))
        name = next((s.displayname for s in shared if not is_blank(s.displayname)), None)
        rooms = tuple(sorted((s.room for s in shared), key=by_name))
        return WhereisAnswer(user_id, name, rooms, only_rooms_of_asker=scope.limited)

    async def history_of(self, user_id: UserID, *, asker: UserID, count: int) -> HistoryAnswer:
        """``user_id``'s transitions, newest first, in the rooms the asker may see (their own: all),
        then the memberships they held before the bot started tracking a room."""
        scope = (await self.visibility.scope(asker)).about(user_id)
        if scope.refused:
            return HistoryAnswer(user_id, refused=True)
        entries = tuple(await self.store.user_history(user_id, count, scope.rooms))
        earlier: tuple[HeldBefore, ...] = ()
        if len(entries) < count:  # the list is not full: what was held before tracking comes last
            earlier = tuple(await self.store.held_before_tracking(user_id, scope.rooms))[: count - len(entries)]
        rooms = {e.room_id for e in entries} | {e.room_id for e in earlier}
        named = await self.store.rooms(only=rooms) if rooms else []
        return HistoryAnswer(user_id, entries, tuple(named), only_rooms_of_asker=scope.limited, held_before=earlier)

    async def joins(self, room_id: RoomID, *, asker: UserID, seconds: int) -> RoomChanges:
        """Who joined, left and was banned in the room in the last ``seconds``."""
        room = await self.store.room(room_id) or RoomInfo(room_id)
        if not (await self.visibility.scope(asker)).sees(room_id):
            return RoomChanges(room, seconds, refused=True)
        found = await self.store.room_changes(room_id, time.time() - seconds, NAMES_LISTED) or {}

        def group(name: str) -> Group:
            total, sample = found.get(name, (0, []))
            return Group(total, tuple(sample))

        return RoomChanges(
            room, seconds, group("joined"), group("left"), found.get("kicked", (0, []))[0], group("banned")
        )

    async def waves(self, *, asker: UserID, seconds: int) -> tuple[Wave, ...] | None:
        """Joins and leaves per room in the last ``seconds``, biggest first (None: refused)."""
        if not self.visibility.may_see_every_room_at_once(asker):
            return None
        rooms = {room.room_id: room for room in await self.store.rooms()}
        return tuple(
            Wave(rooms.get(room_id) or RoomInfo(room_id), joined, left)
            for room_id, joined, left in await self.store.waves(time.time() - seconds)
        )

    async def members_at(self, room_id: RoomID, *, asker: UserID, at: int) -> MembersAt | None:
        """The room's membership at ``at`` (Unix seconds) compared with now (None: refused)."""
        if not (await self.visibility.scope(asker)).sees(room_id):
            return None
        return await self.store.members_at(room_id, at, NAMES_LISTED) or MembersAt(room_id, at, 0, 0, tracked=False)

    # ---- permissions to act ---------------------------------------------------------------------

    def may_resync_all(self, user_id: UserID) -> bool:
        return self.config.is_admin(user_id)

    async def may_resync(self, room_id: RoomID, user_id: UserID) -> bool:
        """Admins may always; others if their power level in the room is at least
        ``resync_power_level`` (creators count as the spec says, also in room version 12).
        Raises HomeserverError when the power levels cannot be read."""
        if self.config.is_admin(user_id):
            return True
        required = self.config.resync_power_level
        if required is None:
            return False
        levels = await self.homeserver.state_content(room_id, "m.room.power_levels")
        create = await self.homeserver.state_content(room_id, "m.room.create")
        room = await self.store.room(room_id)
        version = (create or {}).get("room_version")
        level = power.user_level(
            user_id,
            levels,
            room.creator if room else None,
            create,
            version if isinstance(version, str) else "1",
        )
        return level >= required


class RoomPages:
    """What the web view and the API show of one room, as far as the asker may see it (the same
    visibility as chat: ``Visibility.scope`` on every request)."""

    def __init__(self, queries: RoomQueries) -> None:
        self.queries = queries
        self.store = queries.store

    async def may_see(self, room_id: RoomID, asker: UserID) -> bool:
        return (await self.queries.visibility.scope(asker)).sees(room_id)

    async def members(
        self, room_id: RoomID, asker: UserID, *, membership: str | None, search: str, offset: int, limit: int
    ) -> tuple[int, list[Member]] | None:
        if not await self.may_see(room_id, asker):
            return None
        return await self.store.members_page(room_id, membership=membership, search=search, offset=offset, limit=limit)

    async def transitions(self, room_id: RoomID, asker: UserID, limit: int) -> list[HistoryEntry] | None:
        if not await self.may_see(room_id, asker):
            return None
        return await self.store.room_transitions(room_id, limit)

    async def member_counts(
        self, room_id: RoomID, asker: UserID, since: float, until: float, bucket_seconds: int
    ) -> list[tuple[int, int]] | None:
        if not await self.may_see(room_id, asker):
            return None
        return await self.store.member_counts(room_id, since, until, bucket_seconds)

    async def joins_and_leaves(
        self, room_id: RoomID, asker: UserID, since: float, bucket_seconds: int
    ) -> list[tuple[int, int, int]] | None:
        if not await self.may_see(room_id, asker):
            return None
        return await self.store.joins_and_leaves(room_id, since, bucket_seconds)
