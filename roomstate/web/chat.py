"""What the chat commands need of the web view: sign-in links and API tokens, delivered only in a
direct room of the bot and the asker (never where anyone else can read them)."""

from __future__ import annotations

from typing import Any

from mautrix.types import EventType, RoomID, UserID

from .. import replies
from ..db.web_store import ApiToken
from ..direct import DirectRooms
from .auth import WebAuth
from .html import path


class WebChat:
    def __init__(self, auth: WebAuth, direct: DirectRooms, client: Any, base_url: str | None) -> None:
        self.auth = auth
        self.direct = direct
        self.client = client
        self.base = None if base_url is None else str(base_url).rstrip("/")

    @property
    def enabled(self) -> bool:
        return self.base is not None

    async def send_link(self, user_id: UserID) -> RoomID:
        """A one-time sign-in link for ``user_id``, sent to their direct room with the bot."""
        assert self.base is not None
        room_id = await self.direct.with_user(user_id)  # first: no link is made that cannot be sent
        token = await self.auth.new_link(user_id)
        link = path(self.base, "login", query={"t": token})
        minutes = round(self.auth.config.web_link_seconds / 60)
        await self._send_secret(room_id, replies.sign_in_link(link, minutes))
        return room_id

    async def send_token(self, name: str, admin: UserID) -> RoomID | None:
        """A new API token, sent to the admin's direct room (None: that name is taken)."""
        room_id = await self.direct.with_user(admin)
        token = await self.auth.new_token(name, admin)
        if token is None:
            return None
        await self._send_secret(room_id, replies.api_token(name, token, self.base or ""))
        return room_id

    async def tokens(self) -> list[ApiToken]:
        return await self.auth.tokens()

    async def revoke(self, name: str) -> bool:
        return await self.auth.revoke_token(name)

    async def _send_secret(self, room_id: RoomID, notice: replies.Reply) -> None:
        # sensitive: mautrix logs request bodies at DEBUG; a secret must not end up in the logs
        await self.client.send_message_event(room_id, EventType.ROOM_MESSAGE, notice.content(), sensitive=True)
