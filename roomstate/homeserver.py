"""What the logic layer asks the homeserver, through the bot's mautrix client."""
from __future__ import annotations

import asyncio
from typing import Any, List, Optional

from aiohttp import ClientError
from mautrix.api import Method, Path
from mautrix.client import Client
from mautrix.errors import MatrixRequestError, MatrixResponseError, MForbidden, MNotFound
from mautrix.types import EventType, PowerLevelStateEventContent, RoomID

from .models import RoomSnapshot
from .snapshot import snapshot_from_state


class HomeserverError(Exception):
    """A request to the homeserver failed; ``str()`` is a reason fit for a chat reply."""

    def __init__(self, reason: str, *, not_in_room: bool = False) -> None:
        super().__init__(reason)
        self.not_in_room = not_in_room


def _describe(error: BaseException) -> HomeserverError:
    if isinstance(error, (MForbidden, MNotFound)):
        return HomeserverError(f"the homeserver refused: {error.message}", not_in_room=True)
    if isinstance(error, MatrixRequestError):
        code = getattr(error, "errcode", None) or getattr(error, "http_status", "?")
        return HomeserverError(f"the homeserver answered {code}: {error.message}")
    if isinstance(error, asyncio.TimeoutError):
        return HomeserverError("the homeserver did not answer in time")
    return HomeserverError(f"could not reach the homeserver ({type(error).__name__}: {error})")


REQUEST_ERRORS = (MatrixRequestError, MatrixResponseError, ClientError, asyncio.TimeoutError, ValueError)


class Homeserver:
    """Reads room state from the homeserver; every failure becomes a HomeserverError."""

    def __init__(self, client: Client, timeout: float = 60.0) -> None:
        self.client = client
        self.timeout = timeout

    async def _call(self, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self.timeout)
        except REQUEST_ERRORS as error:
            raise _describe(error) from error

    async def joined_rooms(self) -> List[str]:
        return [str(room_id) for room_id in await self._call(self.client.get_joined_rooms())]

    async def room_snapshot(self, room_id: str) -> RoomSnapshot:
        """The room's full current state from one ``GET /rooms/{id}/state`` (one consistent
        snapshot of members and room info; parsed from raw JSON, which is much faster than
        deserializing thousands of member events into objects)."""
        raw = await self._call(self.client.api.request(Method.GET, Path.v3.rooms[RoomID(room_id)].state))
        if not isinstance(raw, list):
            raise HomeserverError("the homeserver sent a malformed room state")
        return snapshot_from_state(room_id, raw)

    async def power_level(self, room_id: str, user_id: str) -> Optional[int]:
        """``user_id``'s power level in the room, or None if it cannot be read."""
        try:
            levels = await self._call(
                self.client.get_state_event(RoomID(room_id), EventType.ROOM_POWER_LEVELS)
            )
        except HomeserverError:
            return None
        if not isinstance(levels, PowerLevelStateEventContent):
            return None
        return levels.get_user_level(user_id)
