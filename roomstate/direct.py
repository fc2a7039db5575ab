"""A direct room of the bot and one user: where secrets go (sign-in links, API tokens), never a
room anyone else can read.

Only a room the bot made for this is used: invite-only, its history readable from one's invite on
(a person invited later cannot scroll back to an old link or token). Before each secret, the
homeserver (not the store, which may lag) is asked who is in it: the bot joined, and nobody but
the two of them joined or invited. A user who left or rejected the invite is invited again into
the same room. A room someone else got into is left, and a new one made, at most one an hour per
user: nobody can make the bot create rooms without end. A room that merely has two members (a
public room nobody else joined yet, a room someone else made) is never used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mautrix.types import RoomCreatePreset, RoomID, UserID

from .db import RoomStore
from .homeserver import REQUEST_ERRORS, Homeserver, HomeserverError
from .models import INVITE, JOIN

NEW_ROOM_INTERVAL_S = 3600  # at most one new direct room per user in this long
# m.room.history_visibility "invited": members read the room from their invite on, not before
HISTORY_FROM_INVITE = {
    "type": "m.room.history_visibility",
    "state_key": "",
    "content": {"history_visibility": "invited"},
}


class DirectRoomUnavailable(Exception):
    """The user's direct room has someone else in it and a new one was made too recently."""


class DirectRooms:
    def __init__(
        self,
        client: Any,
        store: RoomStore,
        homeserver: Homeserver,
        bot_user_id: UserID,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.store = store
        self.homeserver = homeserver
        self.bot_user_id = bot_user_id
        self.clock = clock

    async def with_user(self, user_id: UserID) -> RoomID:
        """The direct room with ``user_id``, the user (re)invited or made now if need be.
        Raises DirectRoomUnavailable, or mautrix's and HomeserverError's request errors."""
        recorded = await self.store.direct_room(user_id)
        if recorded is not None:
            room_id, made_at_ms = recorded
            readers = await self._readers(room_id)
            if readers is not None and readers <= {self.bot_user_id, user_id}:
                if user_id not in readers:  # left, or rejected the invite: invited again
                    await self.client.invite_user(room_id, user_id)
                return room_id
            if self.clock() * 1000 - made_at_ms < NEW_ROOM_INTERVAL_S * 1000:
                raise DirectRoomUnavailable(room_id)
            if readers is not None:  # someone else got in: the bot leaves it for good
                try:
                    await self.client.leave_room(room_id)
                except REQUEST_ERRORS:
                    pass
        made: RoomID = await self.client.create_room(
            preset=RoomCreatePreset.PRIVATE, is_direct=True, invitees=[user_id], initial_state=[HISTORY_FROM_INVITE]
        )
        await self.store.set_direct_room(user_id, made, int(self.clock() * 1000))
        return made

    async def _readers(self, room_id: RoomID) -> set[UserID] | None:
        """Who can read new messages in the room (joined or invited), as the homeserver says;
        None if the bot is not in it (any more) or the room was upgraded away."""
        try:
            snapshot, _ = await self.homeserver.room_snapshot(room_id)
        except HomeserverError as error:
            if error.not_in_room:
                return None
            raise
        if snapshot.info.replacement_room:
            return None
        joined = {m.user_id for m in snapshot.members if m.membership == JOIN}
        if self.bot_user_id not in joined:
            return None
        return joined | {m.user_id for m in snapshot.members if m.membership == INVITE}
