"""A direct room of the bot and one user: where secrets go (sign-in links, API tokens), never a
room anyone else can read. Only a room the bot made for this (invite-only, the two of them) is
used, and only while nobody but the two of them is in it, joined or invited; else the bot makes
a new one and invites the user. A room that merely has two members (a public room nobody else
joined yet, a room someone else made) is never used: a third person could join and read back."""

from __future__ import annotations

from typing import Any

from mautrix.types import RoomCreatePreset, RoomID, UserID

from .db import RoomStore
from .db.store import now_ms


class DirectRooms:
    def __init__(self, client: Any, store: RoomStore, bot_user_id: UserID) -> None:
        self.client = client
        self.store = store
        self.bot_user_id = bot_user_id

    async def existing(self, user_id: UserID) -> RoomID | None:
        """The room the bot made with ``user_id``, if still only the two of them are in it."""
        room_id = await self.store.direct_room(user_id)
        if room_id is None:
            return None
        room = await self.store.room(room_id)
        if room is None or room.replacement_room:
            return None
        members = {m.user_id for m in await self.store.members(room_id)}
        return room_id if members == {self.bot_user_id, user_id} else None

    async def with_user(self, user_id: UserID) -> RoomID:
        """The direct room with ``user_id``, made now if there is none (mautrix errors propagate)."""
        found = await self.existing(user_id)
        if found is not None:
            return found
        room_id: RoomID = await self.client.create_room(
            preset=RoomCreatePreset.PRIVATE, is_direct=True, invitees=[user_id]
        )
        await self.store.set_direct_room(user_id, room_id, now_ms())
        return room_id
