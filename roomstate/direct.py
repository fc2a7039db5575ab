"""A direct room of the bot and one user: where secrets go (sign-in links, API tokens), never a
room anyone else can read. An existing room whose only members are the two of them (joined or
invited) is used; else the bot creates one and invites the user."""

from __future__ import annotations

from typing import Any

from mautrix.types import RoomCreatePreset, RoomID, UserID

from .db import RoomStore
from .models import JOIN


class DirectRooms:
    def __init__(self, client: Any, store: RoomStore, bot_user_id: UserID) -> None:
        self.client = client
        self.store = store
        self.bot_user_id = bot_user_id

    async def existing(self, user_id: UserID) -> RoomID | None:
        """A tracked room with nobody but the bot and ``user_id`` in it (joined or invited)."""
        for shared in await self.store.rooms_of(user_id, JOIN) + await self.store.rooms_of(user_id, "invite"):
            room = shared.room
            if room.joined_count + room.invited_count != 2 or room.replacement_room:
                continue
            members = {m.user_id for m in await self.store.members(room.room_id)}
            if members == {self.bot_user_id, user_id}:
                return room.room_id
        return None

    async def with_user(self, user_id: UserID) -> RoomID:
        """The direct room with ``user_id``, made now if there is none (mautrix errors propagate)."""
        found = await self.existing(user_id)
        if found is not None:
            return found
        room_id: RoomID = await self.client.create_room(
            preset=RoomCreatePreset.TRUSTED_PRIVATE, is_direct=True, invitees=[user_id]
        )
        return room_id
