"""An in-process fake homeserver: real HTTP on 127.0.0.1, so the real mautrix client is used.

It keeps each room's current state, answers the client-server endpoints the plugin calls, records
the messages the bot sends, and can be told to fail requests. Events it creates are returned as
raw JSON so tests can deliver them to the plugin the way a /sync would.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

Event = dict[str, Any]


@dataclass
class FakeRoom:
    room_id: str
    state: dict[tuple[str, str], Event] = field(default_factory=dict)

    def membership(self, user_id: str) -> str | None:
        event = self.state.get(("m.room.member", user_id))
        return event["content"]["membership"] if event else None


@dataclass
class Failure:
    """How the next ``times`` requests matching ``pattern`` fail: ``http`` (an error status),
    ``disconnect`` (the connection is dropped without an answer), ``malformed`` (200 with a body
    that is not what the API promises: ``body``), or ``hang`` (no answer for ``seconds``)."""

    pattern: str
    times: int
    kind: str = "http"
    status: int = 500
    errcode: str = "M_UNKNOWN"
    body: str = "{not json"
    seconds: float = 3600.0
    content_type: str = "application/json"


def hash_event_id(text: str) -> str:
    """A room v4+ event ID: "$" and the URL-safe base64 (unpadded) of a SHA-256 hash, of ``text``."""
    return "$" + base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")


class FakeHomeserver:
    def __init__(self, bot_user_id: str) -> None:
        self.bot_user_id = bot_user_id
        self.rooms: dict[str, FakeRoom] = {}
        self.sent: list[tuple[str, dict[str, Any]]] = []  # (room_id, content) the bot sent
        self.sent_event_ids: list[str] = []  # the event IDs of what the bot sent, in the same order
        self.created: list[tuple[str, dict[str, Any]]] = []  # rooms the bot created: (room_id, request)
        self.invites: list[tuple[str, str]] = []  # invites the bot sent: (room_id, user_id)
        self.requests: list[str] = []
        self.bytes_sent = 0  # response bodies, in bytes
        self.stream: list[Event] = []  # every event, in the order the server made them (sync positions)
        self.sync_requests: list[str | None] = []  # the ``since`` of each /sync the bot made
        self.failures: list[Failure] = []
        self.slow: list[tuple[str, float]] = []  # (path pattern, seconds)
        self._ids = itertools.count(1)
        self.old_event_ids = False  # event IDs as rooms v1-v3 have them, not hashes (see _event_id)
        self._last_ts = 0  # the senders' clocks: now (at least a millisecond after the last event)
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.url = ""

    # ---- server lifecycle -----------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._closing.set()
        if self._runner:
            await self._runner.cleanup()

    def fail(
        self,
        pattern: str,
        status: int = 500,
        times: int = 1,
        errcode: str = "M_UNKNOWN",
        kind: str = "http",
        body: str = "{not json",
        seconds: float = 3600.0,
        content_type: str = "application/json",
    ) -> None:
        """Make the next ``times`` requests whose path matches ``pattern`` fail (see Failure)."""
        self.failures.append(Failure(pattern, times, kind, status, errcode, body, seconds, content_type))

    def heal(self) -> None:
        """Stop every injected failure."""
        self.failures.clear()

    # ---- room state -------------------------------------------------------------------------

    def _event_id(self, number: int) -> str:
        """A room v4+ event ID (here the hash of its number), or with ``old_event_ids`` one of
        rooms v1-v3 (``$local:server``)."""
        return f"$e{number}:fake.test" if self.old_event_ids else hash_event_id(str(number))

    def new_event(
        self, room_id: str, type_: str, sender: str, content: dict[str, Any], state_key: str | None = None
    ) -> Event:
        event: Event = {
            "type": type_,
            "room_id": room_id,
            "sender": sender,
            "content": content,
            "event_id": self._event_id(next(self._ids)),
            "origin_server_ts": self._now_ms(),
            "unsigned": {},
        }
        self.stream.append(event)
        if state_key is not None:
            event["state_key"] = state_key
            room = self.rooms.setdefault(room_id, FakeRoom(room_id))
            previous = room.state.get((type_, state_key))
            if previous is not None:
                event["unsigned"]["prev_content"] = previous["content"]
            room.state[(type_, state_key)] = event
        return event

    def _now_ms(self) -> int:
        self._last_ts = max(int(time.time() * 1000), self._last_ts + 1)
        return self._last_ts

    def create_room(
        self,
        room_id: str,
        creator: str,
        name: str | None = None,
        members: tuple[str, ...] = (),
        room_version: str = "10",
        create_extra: dict[str, Any] | None = None,
    ) -> list[Event]:
        """A room created by ``creator`` with ``members`` joined (the bot is not in it)."""
        self.rooms[room_id] = FakeRoom(room_id)
        create: dict[str, Any] = {"room_version": room_version, **(create_extra or {})}
        if int(room_version) < 11:
            create["creator"] = creator  # dropped from the content in room version 11
        events = [
            self.new_event(room_id, "m.room.create", creator, create, ""),
            self.member(room_id, creator, "join"),
        ]
        if name is not None:
            events.append(self.new_event(room_id, "m.room.name", creator, {"name": name}, ""))
        events += [self.member(room_id, user, "join") for user in members]
        return events

    def member(
        self,
        room_id: str,
        user_id: str,
        membership: str,
        sender: str | None = None,
        displayname: str | None = None,
        reason: str | None = None,
    ) -> Event:
        content: dict[str, Any] = {"membership": membership}
        if reason is not None:
            content["reason"] = reason
        if displayname is None and membership == "join":
            displayname = user_id[1:].split(":")[0].capitalize()
        if displayname is not None:
            content["displayname"] = displayname
        return self.new_event(room_id, "m.room.member", sender or user_id, content, user_id)

    def state(self, room_id: str, type_: str, content: dict[str, Any], sender: str = "@admin:fake.test") -> Event:
        return self.new_event(room_id, type_, sender, content, "")

    def message(self, room_id: str, sender: str, body: str, formatted_body: str | None = None) -> Event:
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if formatted_body is not None:
            content.update(format="org.matrix.custom.html", formatted_body=formatted_body)
        return self.new_event(room_id, "m.room.message", sender, content)

    def joined_rooms(self) -> list[str]:
        return [r.room_id for r in self.rooms.values() if r.membership(self.bot_user_id) == "join"]

    def replies(self, room_id: str | None = None) -> list[str]:
        return [c.get("body", "") for r, c in self.sent if room_id is None or r == room_id]

    # ---- HTTP -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await self._route(request)
        body = getattr(response, "body", None)
        self.bytes_sent += len(body) if isinstance(body, (bytes, bytearray)) else 0
        return response

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append(f"{request.method} {path}")
        for pattern, seconds in self.slow:
            if re.search(pattern, path):
                await asyncio.sleep(seconds)
        for failure in self.failures:
            if failure.times > 0 and re.search(failure.pattern, path):
                failure.times -= 1
                if failure.kind == "disconnect":
                    assert request.transport is not None
                    request.transport.abort()
                    return web.Response()
                if failure.kind == "hang":
                    try:
                        await asyncio.wait_for(self._closing.wait(), failure.seconds)
                    except asyncio.TimeoutError:
                        pass
                    break
                if failure.kind == "malformed":
                    return web.Response(text=failure.body, content_type=failure.content_type)
                return web.json_response(
                    {"errcode": failure.errcode, "error": "injected failure"}, status=failure.status
                )
        prefix = "/_matrix/client/v3"
        if not path.startswith(prefix):
            return self._error(404, "M_UNRECOGNIZED", "unknown endpoint")
        path = path[len(prefix) :]
        if path == "/sync":
            return self._sync(request)
        if path == "/createRoom" and request.method == "POST":
            body = await request.json()
            room_id = f"!made{next(self._ids)}:fake.test"
            self.created.append((room_id, body))
            self.create_room(room_id, self.bot_user_id)
            for invitee in body.get("invite", []):
                self.member(room_id, invitee, "invite", sender=self.bot_user_id)
            return web.json_response({"room_id": room_id})
        if path == "/joined_rooms":
            return web.json_response({"joined_rooms": self.joined_rooms()})
        if path == "/account/whoami":
            return web.json_response({"user_id": self.bot_user_id})
        # on the raw path, as Synapse does: IDs may hold an escaped "/"
        raw = request.rel_url.raw_path[len(prefix) :]
        match = re.fullmatch(r"/rooms/([^/]+)/(state|send|invite|leave)(?:/([^/]+))?(?:/(.*))?", raw)
        if not match:
            return self._error(404, "M_UNRECOGNIZED", "unknown endpoint")
        room_id, kind, type_, rest = (None if part is None else unquote(part) for part in match.groups())
        room = self.rooms.get(room_id)
        if room is None or room.membership(self.bot_user_id) != "join":
            return self._error(403, "M_FORBIDDEN", "You are not in this room")
        if kind == "invite" and request.method == "POST":
            invitee = (await request.json())["user_id"]
            if room.membership(invitee) in ("join", "ban"):
                return self._error(403, "M_FORBIDDEN", f"{invitee} is {room.membership(invitee)} in the room")
            self.invites.append((room_id, invitee))
            self.member(room_id, invitee, "invite", sender=self.bot_user_id)
            return web.json_response({})
        if kind == "leave" and request.method == "POST":
            self.member(room_id, self.bot_user_id, "leave")
            return web.json_response({})
        if kind == "send":
            content = await request.json()
            self.sent.append((room_id, content))
            event = self.new_event(room_id, type_, self.bot_user_id, content)
            self.sent_event_ids.append(event["event_id"])
            return web.json_response({"event_id": event["event_id"]})
        if type_ is None:
            return web.json_response(list(room.state.values()))
        event = room.state.get((type_, rest or ""))
        if event is None:
            return self._error(404, "M_NOT_FOUND", "Event not found")
        return web.json_response(event["content"])

    def state_requests(self, since: int = 0) -> list[str]:
        """The full-state requests (``GET /rooms/{id}/state``) made since request number ``since``."""
        return [r for r in self.requests[since:] if re.fullmatch(r"GET /_matrix/client/v3/rooms/[^/]+/state", r)]

    @property
    def position(self) -> str:
        """The token of "now" (what a /sync made now would return as ``next_batch``)."""
        return f"s{len(self.stream)}"

    def _sync(self, request: web.Request) -> web.Response:
        since = request.query.get("since")
        self.sync_requests.append(since)
        match = re.fullmatch(r"s([0-9]+)", since or "")
        if match is None or int(match.group(1)) > len(self.stream):
            return self._error(400, "M_UNKNOWN", "Invalid stream token")
        limit = 10
        try:
            limit = int(json.loads(request.query.get("filter", "{}"))["room"]["timeline"]["limit"])
        except (ValueError, KeyError, TypeError):
            pass
        return web.json_response(self.incremental_sync(int(match.group(1)), limit))

    def incremental_sync(self, since: int, limit: int) -> dict[str, Any]:
        """What changed after stream position ``since``, as Synapse answers an incremental /sync:
        per room the timeline (its last ``limit`` events, ``limited`` if there were more), the
        room's full state for a room the bot joined meanwhile, rooms it left in ``leave``."""
        changed: dict[str, list[Event]] = {}
        for event in self.stream[since:]:
            changed.setdefault(event["room_id"], []).append(event)
        joined: dict[str, Any] = {}
        left: dict[str, Any] = {}
        for room_id, events in changed.items():
            before = next(
                (
                    e["content"].get("membership")
                    for e in reversed(self.stream[:since])
                    if e["room_id"] == room_id
                    and e["type"] == "m.room.member"
                    and e.get("state_key") == self.bot_user_id
                ),
                None,
            )
            timeline = [_without_room(e) for e in events[-limit:]]
            if self.rooms[room_id].membership(self.bot_user_id) == "join":
                limited = len(events) > limit or before != "join"
                entry: dict[str, Any] = {"timeline": {"events": timeline, "limited": limited}}
                if limited:
                    shown = {e["event_id"] for e in timeline}
                    state = [_without_room(e) for e in self.rooms[room_id].state.values() if e["event_id"] not in shown]
                    entry["state"] = {"events": state}
                joined[room_id] = entry
            elif before == "join":
                left[room_id] = {"timeline": {"events": timeline}}
        rooms = {key: value for key, value in (("join", joined), ("leave", left)) if value}
        return {"next_batch": self.position, **({"rooms": rooms} if rooms else {})}

    @staticmethod
    def _error(status: int, errcode: str, message: str) -> web.Response:
        return web.json_response({"errcode": errcode, "error": message}, status=status)


def _without_room(event: Event) -> Event:
    """An event as a /sync response carries it (the room is the section's key)."""
    return {key: copy.deepcopy(value) for key, value in event.items() if key != "room_id"}
