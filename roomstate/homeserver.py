"""What the logic layer asks the homeserver, through the bot's mautrix client.

Every failure mode of a request (an HTTP error, a dropped or refused connection, a timeout, a
malformed answer) becomes one ``HomeserverError`` whose ``str()`` is fit for a chat reply. No
request retries by itself: the caller decides (commands answer at once; the repairer backs off).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import ClientConnectionError, ClientError, ClientResponse, ContentTypeError
from mautrix.api import Method, Path
from mautrix.client import Client
from mautrix.errors import (
    MatrixConnectionError,
    MatrixError,
    MatrixRequestError,
    MatrixResponseError,
    MForbidden,
    MNotFound,
)
from mautrix.types import RoomID

from .aio import with_timeout
from .metrics import Metrics
from .models import RoomSnapshot
from .parsing import MalformedResponse, joined_rooms, state_snapshot

T = TypeVar("T")
log = logging.getLogger("roomstate.homeserver")

MAX_ERROR_BODY = 64 * 1024


class HomeserverError(Exception):
    """A request to the homeserver failed; ``str()`` is a reason fit for a chat reply.
    ``not_in_room``: the homeserver says the bot may not see the room (403/404)."""

    def __init__(self, reason: str, *, not_in_room: bool = False, status: int | None = None) -> None:
        super().__init__(reason)
        self.not_in_room = not_in_room
        self.status = status  # the HTTP status, when the homeserver answered with an error


def _describe(error: BaseException) -> HomeserverError:
    """The failure in words fit for a chat reply: what kind of failure, never an internal detail
    such as the homeserver's URL (aiohttp's and mautrix's messages carry it); the full error is
    in the debug log."""
    if isinstance(error, HomeserverError):
        return error
    log.debug("A request to the homeserver failed: %r", error)
    cause = error.__cause__
    if isinstance(error, (MForbidden, MNotFound)):
        return HomeserverError(f"the homeserver refused: {error.message}", not_in_room=True)
    if isinstance(error, MatrixRequestError):
        code = error.errcode or f"HTTP {error.http_status}"
        return HomeserverError(
            f"the homeserver answered {code}: {error.message or 'no details'}", status=error.http_status
        )
    if isinstance(error, asyncio.TimeoutError):
        return HomeserverError("the homeserver did not answer in time")
    if isinstance(error, MalformedResponse):
        return HomeserverError(f"the homeserver sent a malformed answer ({error})")
    if isinstance(error, (ValueError, ContentTypeError, MatrixResponseError)) or isinstance(cause, ContentTypeError):
        return HomeserverError("the homeserver sent an answer that is not what the API promises")
    if isinstance(error, (MatrixConnectionError, ClientConnectionError, OSError)):
        return HomeserverError("could not reach the homeserver")
    return HomeserverError(f"the request to the homeserver failed ({type(error).__name__})")


# What a request can fail with, besides cancellation: mautrix's errors (HTTP, connection,
# response), aiohttp's, timeouts, and bad JSON (ValueError covers JSONDecodeError).
REQUEST_ERRORS = (MatrixError, ClientError, asyncio.TimeoutError, OSError, ValueError)


class Homeserver:
    """Reads rooms and state from the homeserver for the bot."""

    def __init__(self, client: Client, timeout: float = 60.0, metrics: Metrics | None = None) -> None:
        self.client = client
        self.timeout = timeout
        self.metrics = metrics or Metrics()

    async def _call(self, request: Awaitable[T], timeout: float | None = None) -> T:
        started = time.monotonic()
        try:
            result = await with_timeout(request, self.timeout if timeout is None else timeout)
        except REQUEST_ERRORS as error:
            self._measure(started, "failed")
            raise _describe(error) from error
        except HomeserverError:
            self._measure(started, "failed")
            raise
        self._measure(started, "ok")
        return result

    def _measure(self, started: float, outcome: str) -> None:
        self.metrics.count("roomstate_homeserver_requests_total", outcome=outcome)
        self.metrics.observe("roomstate_homeserver_request_seconds", time.monotonic() - started)

    def _get(self, path: Any) -> Awaitable[Any]:
        return self.client.api.request(Method.GET, path, retry_count=0)

    async def joined_rooms(self) -> list[RoomID]:
        """The rooms the homeserver says the bot is joined to (entries that are not room IDs are
        left out, with a log line)."""
        rooms, bad = await self._call(self._parse_joined(self._get(Path.v3.joined_rooms)))
        if bad:
            log.warning("The homeserver's list of joined rooms has %d entries that are not room IDs; left out", bad)
        return rooms

    @staticmethod
    async def _parse_joined(request: Awaitable[Any]) -> tuple[list[RoomID], int]:
        return joined_rooms(await request)

    async def room_snapshot(self, room_id: RoomID) -> tuple[RoomSnapshot, str | None]:
        """The room's full current state from one ``GET /rooms/{id}/state`` (one consistent
        snapshot of members and room info), and the bot's own membership in it (None if the
        state lacks a valid member event for the bot). The body is read as bytes and parsed on
        a worker thread one event at a time, so a 100k-member room never blocks the loop."""
        body = await self._call(self._get_bytes(f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/state"))
        try:
            return await asyncio.to_thread(state_snapshot, room_id, body, self.client.mxid)
        except MalformedResponse as error:
            raise _describe(error) from error

    async def sync_once(
        self, since: str, sync_filter: Mapping[str, Any], *, timeout: float | None = None
    ) -> Mapping[str, Any]:
        """One /sync of the plugin's own from ``since`` up to the present, returning at once
        (``timeout=0``), without touching the bot's presence (``set_presence=offline``). Only ever
        called with a position older than the bot's own sync loop's: a /sync acknowledges (and
        the homeserver deletes) the to-device messages up to its ``since``, so a later one could
        delete messages maubot has not received yet; that is why this never pages on with the
        ``next_batch`` it returns."""
        params = {"since": since, "timeout": "0", "set_presence": "offline", "filter": json.dumps(sync_filter)}
        body = await self._call(self._get_bytes("/_matrix/client/v3/sync", params), timeout)
        try:
            sync = await asyncio.to_thread(json.loads, body)
        except ValueError as error:
            raise _describe(MalformedResponse(f"invalid JSON: {error}")) from error
        if not isinstance(sync, Mapping):
            raise _describe(MalformedResponse("a sync response that is not an object"))
        return sync

    async def _get_bytes(self, path: str, query: Mapping[str, str] | None = None) -> bytes:
        api = self.client.api
        params: dict[str, str] = {"user_id": str(api.as_user_id)} if api.as_user_id else {}
        params.update(query or {})
        headers = {"Authorization": f"Bearer {api.token}"} if api.token else {}
        url = str(api.base_url).rstrip("/") + path
        async with api.session.get(url, params=params, headers=headers) as response:
            if response.status != 200:
                raise await self._http_error(response)
            return await response.read()

    @staticmethod
    async def _http_error(response: ClientResponse) -> HomeserverError:
        text = (await response.content.read(MAX_ERROR_BODY)).decode("utf-8", "replace")
        try:
            body = json.loads(text)
            errcode, message = str(body.get("errcode")), str(body.get("error"))
        except (ValueError, AttributeError):
            errcode, message = f"HTTP {response.status}", "no details"
        if response.status in (403, 404) and errcode in ("M_FORBIDDEN", "M_NOT_FOUND"):
            return HomeserverError(f"the homeserver refused: {message}", not_in_room=True, status=response.status)
        return HomeserverError(f"the homeserver answered {errcode}: {message}", status=response.status)

    async def state_content(self, room_id: RoomID, event_type: str) -> dict[str, Any] | None:
        """The content of a room's state event (state key ""), or None if there is none."""
        try:
            content = await self._call(self._get(Path.v3.rooms[room_id].state[event_type]))
        except HomeserverError as error:
            if isinstance(error.__cause__, MNotFound):
                return None
            raise
        if not isinstance(content, dict):
            raise HomeserverError("the homeserver sent a malformed state event")
        return content
