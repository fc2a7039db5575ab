"""The business-logic layer: the one place that decides how rooms and members change.

Event handlers, commands and startup all go through RoomStateService. It reads the homeserver
through ``Homeserver`` and writes through ``RoomStore``. Work on one room is serialized by a
per-room lock, so a live member event can never be overwritten by an older full-sync snapshot.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Set

from .db import RoomStore
from .homeserver import Homeserver, HomeserverError
from .models import BAN, JOIN, LEAVE, MemberDiff, RoomInfo
from .snapshot import member_from_state, room_info_changes

log = logging.getLogger("roomstate.service")

QUERY_WAIT_SECONDS = 20.0  # how long !rooms / !whereis wait for running syncs


def _by_name(room: RoomInfo) -> tuple:
    return (room.display_name.casefold(), room.room_id)


def _raw(evt: Any) -> Dict[str, Any]:
    """The event as Matrix JSON (mautrix events serialize back to what the server sent)."""
    return evt if isinstance(evt, dict) else evt.serialize()


@dataclass
class SyncOutcome:
    """What syncing one room did."""

    room_id: str
    diff: Optional[MemberDiff] = None  # set when the room was (re)written
    forgotten: bool = False  # the bot turned out not to be in the room
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ResyncReport:
    """What syncing many rooms did."""

    synced: List[SyncOutcome] = field(default_factory=list)
    forgotten: List[str] = field(default_factory=list)
    failed: List[SyncOutcome] = field(default_factory=list)
    error: Optional[str] = None  # the room list itself could not be fetched

    @property
    def added(self) -> int:
        return sum(len(o.diff.added) for o in self.synced if o.diff)

    @property
    def removed(self) -> int:
        return sum(len(o.diff.removed) for o in self.synced if o.diff)


@dataclass
class WhereisAnswer:
    """The answer to "where is user X?" for one asker."""

    user_id: str
    displayname: Optional[str] = None
    rooms: List[RoomInfo] = field(default_factory=list)
    only_rooms_of_asker: bool = False  # rooms were limited to those the asker is in too
    refused: bool = False


class RoomStateService:
    def __init__(
        self,
        store: RoomStore,
        homeserver: Homeserver,
        bot_user_id: str,
        concurrency: int = 4,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        self.log = logger or log
        self.store = store
        self.homeserver = homeserver
        self.bot_user_id = bot_user_id
        self.concurrency = max(1, concurrency)
        self._room_locks: Dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._resync_queued: Set[str] = set()
        self._syncs_in_flight = 0
        self._no_syncs_in_flight = asyncio.Event()
        self._no_syncs_in_flight.set()

    # ---- whole rooms ------------------------------------------------------------------------

    async def sync_room(self, room_id: str) -> SyncOutcome:
        """Fetch the room's members and info and replace what the store has, atomically.
        If the homeserver says the bot is not in the room, the room is forgotten instead.
        Homeserver errors are logged and returned, never raised; the store is left as it was."""
        async with self._room_locks[room_id]:
            return await self._sync_room_locked(room_id)

    async def _sync_room_locked(self, room_id: str) -> SyncOutcome:
        self._syncs_in_flight += 1
        self._no_syncs_in_flight.clear()
        try:
            return await self._fetch_and_replace(room_id)
        finally:
            self._syncs_in_flight -= 1
            if not self._syncs_in_flight:
                self._no_syncs_in_flight.set()

    async def wait_for_syncs(self, timeout: float = QUERY_WAIT_SECONDS) -> bool:
        """Wait until no room sync is running (e.g. the first sync after the bot joined a room),
        so that answers are not computed from a half-known picture. False on timeout."""
        try:
            await asyncio.wait_for(self._no_syncs_in_flight.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def _fetch_and_replace(self, room_id: str) -> SyncOutcome:
        try:
            snapshot = await self.homeserver.room_snapshot(room_id)
        except HomeserverError as error:
            if error.not_in_room:
                self.log.info("Not in %s any more (%s); forgetting it", room_id, error)
                await self.store.forget_room(room_id)
                return SyncOutcome(room_id, forgotten=True)
            self.log.warning("Could not sync %s: %s", room_id, error)
            return SyncOutcome(room_id, error=str(error))
        if snapshot.membership_of(self.bot_user_id) != JOIN:
            self.log.info("The bot is not joined to %s; forgetting it", room_id)
            await self.store.forget_room(room_id)
            return SyncOutcome(room_id, forgotten=True)
        diff = await self.store.replace_room(snapshot)
        self.log.info(
            "Synced %s: %d members (+%d -%d)",
            room_id, len(snapshot.members), len(diff.added), len(diff.removed),
        )
        return SyncOutcome(room_id, diff=diff)

    async def forget_room(self, room_id: str) -> bool:
        """Drop a room's info and member list (its processed-event records stay)."""
        async with self._room_locks[room_id]:
            return await self.store.forget_room(room_id)

    async def resync_all(self, only_new: bool = False) -> ResyncReport:
        """Reconcile with the homeserver's joined-rooms list: forget rooms the bot left, sync the
        joined ones (only those the store does not know yet, if ``only_new``)."""
        report = ResyncReport()
        try:
            joined = set(await self.homeserver.joined_rooms())
        except HomeserverError as error:
            self.log.warning("Could not list joined rooms: %s", error)
            report.error = str(error)
            return report
        known = {room.room_id for room in await self.store.list_rooms()}
        for room_id in sorted(known - joined):
            await self.forget_room(room_id)
            report.forgotten.append(room_id)
        targets = sorted(joined - known if only_new else joined)
        for outcome in await self._sync_many(targets):
            if outcome.forgotten:
                report.forgotten.append(outcome.room_id)
            elif outcome.ok:
                report.synced.append(outcome)
            else:
                report.failed.append(outcome)
        return report

    async def _sync_many(self, room_ids: Iterable[str]) -> List[SyncOutcome]:
        limit = asyncio.Semaphore(self.concurrency)

        async def sync_one(room_id: str) -> SyncOutcome:
            async with limit:
                return await self.sync_room(room_id)

        return list(await asyncio.gather(*(sync_one(room_id) for room_id in room_ids)))

    # ---- live events ------------------------------------------------------------------------

    async def apply_member_event(self, evt: Any, may_sync: bool = True) -> None:
        """Apply one m.room.member event. The bot's own join starts a full sync of a room it
        did not know; its own leave or ban forgets the room. An event for a room that is not
        tracked yet syncs the room instead (unless ``may_sync`` is False, e.g. for events from
        rooms the bot has left)."""
        raw = _raw(evt)
        member = member_from_state(raw)
        room_id = raw.get("room_id")
        if member is None or not room_id:
            self.log.warning("Ignoring malformed member event %s", raw.get("event_id"))
            return
        if member.user_id == self.bot_user_id:
            await self._apply_own_membership(room_id, member.membership)
            return
        async with self._room_locks[room_id]:
            # Under the lock: events queued behind a first sync find the room tracked and are
            # applied (or ignored as older than the snapshot) instead of syncing again.
            if await self.store.apply_membership(room_id, member) is None and may_sync:
                self.log.debug("Member event in untracked room %s; syncing the room", room_id)
                await self._sync_room_locked(room_id)

    async def _apply_own_membership(self, room_id: str, membership: str) -> None:
        if membership in (LEAVE, BAN):
            self.log.info("The bot's membership in %s is now %s; forgetting the room", room_id, membership)
            await self.forget_room(room_id)
        elif membership == JOIN:
            async with self._room_locks[room_id]:
                if not await self.store.is_tracked(room_id):
                    await self._sync_room_locked(room_id)
        # join while known = a profile change of the bot; invite/knock: nothing to track yet

    async def apply_room_state_event(self, evt: Any, may_sync: bool = True) -> None:
        """Apply a name/topic/alias/encryption/tombstone/create event to the room's info."""
        raw = _raw(evt)
        changes = room_info_changes(raw)
        room_id = raw.get("room_id")
        if changes is None or not room_id:
            return
        async with self._room_locks[room_id]:
            if await self.store.update_room_info(room_id, changes):
                if changes.get("replacement_room"):
                    self.log.info("%s was upgraded to %s", room_id, changes["replacement_room"])
            elif may_sync:
                self.log.debug("Room-info event in untracked room %s; syncing the room", room_id)
                await self._sync_room_locked(room_id)

    async def handle_sync_gaps(self, sync: Dict[str, Any]) -> None:
        """Use a raw /sync response to catch what no event reports: rooms in the ``leave``
        section are forgotten, and tracked rooms whose timeline is ``limited`` (a gap, in which
        lazy-loaded member events were skipped) are resynced."""
        rooms = sync.get("rooms") or {}
        joined = rooms.get("join") or {}
        for room_id in rooms.get("leave") or {}:
            if room_id not in joined:
                await self.forget_room(room_id)
        gaps = [room_id for room_id, data in joined.items() if (data.get("timeline") or {}).get("limited")]
        for room_id in gaps:
            # Untracked rooms are synced by their own join event; a resync already waiting for
            # the room's lock will see this gap too.
            if room_id in self._resync_queued or not await self.store.is_tracked(room_id):
                continue
            self._resync_queued.add(room_id)
            try:
                async with self._room_locks[room_id]:
                    self._resync_queued.discard(room_id)
                    self.log.debug("Timeline gap in %s; resyncing it", room_id)
                    await self._sync_room_locked(room_id)
            finally:
                self._resync_queued.discard(room_id)

    # ---- queries ----------------------------------------------------------------------------

    async def rooms(self) -> List[RoomInfo]:
        """The bot's rooms, sorted by display name."""
        await self.wait_for_syncs()
        return sorted(await self.store.list_rooms(), key=_by_name)

    async def shared_rooms(self, user_id: str, visible_to: Optional[str] = None) -> List[RoomInfo]:
        """Rooms where both the bot and ``user_id`` are joined; if ``visible_to`` is given, only
        those ``visible_to`` is joined to as well."""
        await self.wait_for_syncs()
        found = await self.store.joined_rooms_of(user_id)
        if visible_to is not None and visible_to != user_id:
            allowed = {room.room_id for room in await self.store.joined_rooms_of(visible_to)}
            found = [room for room in found if room.room_id in allowed]
        return sorted(found, key=_by_name)

    async def whereis(self, user_id: str, asker: str, asker_is_admin: bool, visibility: str) -> WhereisAnswer:
        """Rooms ``user_id`` shares with the bot, as far as ``asker`` may know (config
        ``whereis.visibility``: admins / shared / everyone; admins always see everything)."""
        if visibility == "admins" and not asker_is_admin:
            return WhereisAnswer(user_id, refused=True)
        limited = visibility == "shared" and not asker_is_admin and user_id != asker
        rooms = await self.shared_rooms(user_id, visible_to=asker if limited else None)
        name = await self.store.user_displayname(user_id)
        return WhereisAnswer(user_id, name, rooms, only_rooms_of_asker=limited)

    async def may_resync(
        self, room_id: str, user_id: str, admins: Iterable[str], min_power_level: Optional[int]
    ) -> bool:
        """Admins may always; others if their power level in the room is high enough."""
        if user_id in set(admins):
            return True
        if min_power_level is None:
            return False
        level = await self.homeserver.power_level(room_id, user_id)
        return level is not None and level >= min_power_level

    # ---- housekeeping -----------------------------------------------------------------------

    async def delete_old_processed_events(self, retention_seconds: float) -> int:
        cutoff = int((time.time() - retention_seconds) * 1000)
        deleted = await self.store.delete_processed_before(cutoff)
        if deleted:
            self.log.info("Deleted %d processed-event records older than %.0f h", deleted, retention_seconds / 3600)
        return deleted
