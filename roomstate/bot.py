"""The maubot plugin class: wiring only. Handlers and commands delegate to RoomStateService."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, TypeVar, cast

from maubot.handlers import command, event
from maubot.matrix import MaubotMessageEvent as MessageEvent
from maubot.plugin_base import Plugin
from mautrix.client import InternalEventType, SyncStream
from mautrix.types import EventType, Format, MessageType, StateEvent, TextMessageEventContent
from mautrix.util.config import BaseProxyConfig
from sqlalchemy.engine import Engine

from . import replies, timeparse
from .config import Config
from .db import RoomStore
from .dedup import Deduplicator, EventClaim, deduplicated, deduplicated_with_claim
from .homeserver import REQUEST_ERRORS, Homeserver
from .mentions import BadUserArgument, Problem, resolve_user
from .models import Applied, RoomInfo
from .ratelimit import Verdict
from .service import RoomStateService

F = TypeVar("F", bound=Callable[..., Any])
STOP_TIMEOUT_SECONDS = 15
HISTORY_DEFAULT_COUNT = 10
HISTORY_MAX_COUNT = 50
DEFAULT_JOINS_PERIOD = 24 * 3600
COUNT_RE = re.compile(r"[0-9]{1,4}")
PAGE_RE = re.compile(r"[0-9]{1,6}")  # ASCII digits only: "²".isdigit() is True


def on(event_type: EventType | InternalEventType) -> Callable[[F], F]:
    """maubot's ``event.on(event_type)``, typed (maubot declares a union of return types)."""
    return cast("Callable[[F], F]", event.on(event_type))


def _outside_joined_room(evt: StateEvent) -> bool:
    """Whether the event came in the sync's ``leave`` or ``invite`` section: from a room the bot
    is not in, which must never start tracking it."""
    source = getattr(evt, "source", None)
    return isinstance(source, SyncStream) and bool(source & (SyncStream.LEFT_ROOM | SyncStream.INVITED_ROOM))


class RoomStateBot(Plugin):
    config: Config
    service: RoomStateService
    dedup: Deduplicator  # what @deduplicated and @deduplicated_with_claim use

    @classmethod
    def get_config_class(cls) -> type[BaseProxyConfig]:
        return Config

    async def pre_start(self) -> None:
        # maubot registers the handlers right after this, and standalone mode is already syncing:
        # nothing here may yield to the event loop, or early events reach no handler.
        self.config.load_and_update()
        if not isinstance(self.database, Engine):
            raise RuntimeError("roomstate needs `database: true` (type sqlalchemy) in maubot.yaml")
        store = RoomStore(self.database)
        store.history_enabled = self.config.history_retention_seconds > 0  # known to the first jobs
        self._store_opened = store.open_soon()  # queued before any other database work
        self.service = RoomStateService(store, Homeserver(self.client), self.client.mxid, self.config, self.log)
        self.dedup = self.service.dedup

    async def start(self) -> None:
        try:
            version = await self._store_opened  # a failed migration fails the plugin's start
        except Exception:
            await self.service.stop(0)  # maubot does not call stop() after a failed start
            raise
        self.log.debug("roomstate database schema v%d ready", version)
        self.service.start()

    async def stop(self) -> None:
        await self.service.stop(STOP_TIMEOUT_SECONDS)

    def on_external_config_update(self) -> None:
        self.config.load_and_update()
        self.service.config_changed()

    # ---- room events ------------------------------------------------------------------------

    @on(EventType.ROOM_MEMBER)
    @deduplicated_with_claim
    def on_member(self, evt: StateEvent, claim: EventClaim | None) -> Awaitable[Applied | None]:
        return self.service.member_event(evt, claim, outside_joined_room=_outside_joined_room(evt))

    @on(EventType.ROOM_NAME)
    @on(EventType.ROOM_TOPIC)
    @on(EventType.ROOM_CANONICAL_ALIAS)
    @on(EventType.ROOM_ENCRYPTION)
    @on(EventType.ROOM_TOMBSTONE)
    @on(EventType.ROOM_CREATE)
    @deduplicated_with_claim
    def on_room_info(self, evt: StateEvent, claim: EventClaim | None) -> Awaitable[Applied | None]:
        return self.service.room_info_event(evt, claim, outside_joined_room=_outside_joined_room(evt))

    @on(InternalEventType.SYNC_SUCCESSFUL)
    async def on_sync(self, data: dict[str, Any]) -> None:
        """Runs before the sync's events are dispatched (and holds up the sync loop): only
        schedules work."""
        sync = data.get("data")
        if isinstance(sync, dict):
            is_first = bool((sync.get("net.maunium.mautrix") or {}).get("is_first"))
            not_dispatched = is_first and self.client.ignore_first_sync
            if is_first:
                note = " (not dispatched: resyncing its rooms)" if not_dispatched else ""
                self.log.info("First sync since the start%s", note)
            self.service.sync_response(sync, events_not_dispatched=not_dispatched)

    # ---- commands ---------------------------------------------------------------------------

    async def _allowed(self, evt: MessageEvent) -> bool:
        verdict = self.service.check_rate(evt.sender)
        if verdict is Verdict.SLOW_DOWN:
            await self._reply(evt, replies.reply(replies.SLOW_DOWN))
        return verdict is Verdict.ALLOW

    async def _reply(self, evt: MessageEvent, answer: replies.Reply) -> None:
        content = TextMessageEventContent(
            msgtype=MessageType.NOTICE, body=answer.plain, format=Format.HTML, formatted_body=answer.html
        )
        try:
            # "force": a real reply relation, never maubot's fallback that pills the sender
            await evt.respond(content, reply="force", extra_content={"m.mentions": {}})
        except REQUEST_ERRORS as error:
            self.log.warning("Could not reply to %s in %s: %s", evt.event_id, evt.room_id, error)

    @command.new("rooms", help="List the rooms I'm in, with member counts")
    @command.argument("page", required=False)
    @deduplicated
    async def rooms_command(self, evt: MessageEvent, page: str | None = None) -> None:
        if not await self._allowed(evt):
            return
        page = (page or "1").strip()
        if not PAGE_RE.fullmatch(page):
            await self._reply(evt, replies.bad_page(page))
            return
        answer = await self.service.rooms_for(evt.sender)
        await self._reply(evt, replies.rooms_page(answer, int(page), self.config.page_size))

    @command.new("whereis", help="List the rooms a user shares with me")
    @command.argument("user", required=False, pass_raw=True)
    @deduplicated
    async def whereis_command(self, evt: MessageEvent, user: str | None = None) -> None:
        if not await self._allowed(evt):
            return
        try:
            user_id = resolve_user(user, evt.content, self.client.mxid)
        except BadUserArgument as error:
            if error.problem is Problem.MISSING:
                await self._reply(evt, replies.reply(replies.WHEREIS_USAGE))
            elif error.problem is Problem.NOT_A_USER_ID:
                await self._reply(evt, replies.not_a_user_id(error.argument))
            else:
                await self._reply(evt, replies.unknown_user_argument(error.argument))
            return
        answer = await self.service.whereis(user_id, evt.sender, evt.room_id)
        await self._reply(evt, replies.whereis(answer))

    @command.new("resync", help="Re-fetch this room's members and info (`!resync all`: every room)")
    @command.argument("scope", required=False)
    @deduplicated
    async def resync_command(self, evt: MessageEvent, scope: str | None = None) -> None:
        if not await self._allowed(evt):
            return
        scope = (scope or "").strip().lower()
        if scope not in ("", "all"):
            await self._reply(evt, replies.reply(replies.RESYNC_USAGE))
        elif scope == "all":
            if not self.service.may_resync_all(evt.sender):
                await self._reply(evt, replies.reply(replies.RESYNC_ALL_REFUSED))
                return
            await self._reply(evt, replies.resync_all(await self.service.resync_all()))
        elif not await self.service.may_resync(evt.room_id, evt.sender):
            await self._reply(evt, replies.reply(replies.RESYNC_REFUSED))
        else:
            await self._reply(evt, replies.resync_room(await self.service.sync_room(evt.room_id)))

    @command.new("history", help="A user's membership changes (joins, leaves, kicks, bans, renames)")
    @command.argument("args", required=False, pass_raw=True)
    @deduplicated
    async def history_command(self, evt: MessageEvent, args: str | None = None) -> None:
        if not await self._allowed(evt):
            return
        words = (args or "").split()
        count = HISTORY_DEFAULT_COUNT
        if len(words) >= 2 and COUNT_RE.fullmatch(words[-1]):
            count = min(HISTORY_MAX_COUNT, max(1, int(words[-1])))
            words = words[:-1]
        try:
            user_id = resolve_user(" ".join(words), evt.content, self.client.mxid)
        except BadUserArgument as error:
            await self._reply(
                evt,
                replies.reply(replies.HISTORY_USAGE)
                if error.problem is Problem.MISSING
                else replies.not_a_user_id(error.argument),
            )
            return
        await self._reply(evt, replies.history(await self.service.history_of(user_id, evt.sender, count)))

    @command.new("joins", help="Who joined and left this room in a period (`!joins all`: every room)")
    @command.argument("args", required=False, pass_raw=True)
    @deduplicated
    async def joins_command(self, evt: MessageEvent, args: str | None = None) -> None:
        if not await self._allowed(evt):
            return
        words = (args or "").lower().split()
        every_room = bool(words) and words[0] == "all"
        words = words[1:] if every_room else words
        try:
            seconds = timeparse.period(words[0]) if words else DEFAULT_JOINS_PERIOD
            if len(words) > 1:
                raise timeparse.BadTime(words[1])
        except timeparse.BadTime:
            await self._reply(evt, replies.reply(replies.JOINS_USAGE))
            return
        if every_room:
            await self._reply(evt, replies.waves(seconds, await self.service.waves(evt.sender, seconds)))
            return
        await self._reply(evt, replies.joins(await self.service.joins(evt.room_id, evt.sender, seconds)))

    @command.new("members", help="This room's members at a past time: `!members at 2026-11-20 14:00` (UTC)")
    @command.argument("args", required=False, pass_raw=True)
    @deduplicated
    async def members_command(self, evt: MessageEvent, args: str | None = None) -> None:
        if not await self._allowed(evt):
            return
        text = (args or "").strip()
        if not text.lower().startswith("at "):
            await self._reply(evt, replies.reply(replies.MEMBERS_USAGE))
            return
        try:
            moment = timeparse.point_in_time(text[3:], datetime.now(timezone.utc))
        except timeparse.BadTime:
            await self._reply(evt, replies.reply(replies.MEMBERS_USAGE))
            return
        room = await self.service.room(evt.room_id)
        answer = await self.service.members_at(evt.room_id, evt.sender, int(moment.timestamp()))
        await self._reply(evt, replies.members_at(room or RoomInfo(evt.room_id), answer))
