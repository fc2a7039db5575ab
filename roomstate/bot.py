"""The maubot plugin class: wiring only. Handlers and commands delegate to RoomStateService."""
from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional, Set, Type

from maubot import MessageEvent, Plugin
from maubot.handlers import command, event
from mautrix.client import InternalEventType, SyncStream
from mautrix.types import EventType, StateEvent
from mautrix.util.config import BaseProxyConfig

from . import replies
from .config import Config
from .db import RoomStore
from .dedup import deduplicated
from .homeserver import Homeserver
from .mentions import BadUserArgument, resolve_user
from .service import RoomStateService


STOP_TIMEOUT_SECONDS = 15


def _from_left_room(evt: Any) -> bool:
    """Whether the event came in the sync's ``leave`` section (a room the bot is not in)."""
    source = getattr(evt, "source", None)
    return source is not None and bool(source & SyncStream.LEFT_ROOM)


class RoomStateBot(Plugin):
    config: Config
    store: RoomStore
    service: RoomStateService
    reconciled: asyncio.Task  # the startup reconciliation
    running_handlers: Set[asyncio.Task]  # registered by @deduplicated

    @classmethod
    def get_config_class(cls) -> Type[BaseProxyConfig]:
        return Config

    @property
    def ledger(self) -> RoomStore:
        """Where ``@deduplicated`` records processed events."""
        return self.store

    async def pre_start(self) -> None:
        # maubot registers the handlers right after this, and standalone mode is already syncing:
        # nothing here may yield to the event loop, or early events reach no handler.
        self.config.load_and_update()
        if self.database is None:
            raise RuntimeError("roomstate needs `database: true` in maubot.yaml")
        self.running_handlers = set()
        self.store = RoomStore(self.database)
        self._store_opened = self.store.open_soon()
        self.service = RoomStateService(
            self.store,
            Homeserver(self.client),
            self.client.mxid,
            concurrency=self.config.sync_concurrency,
            logger=self.log,
        )

    async def start(self) -> None:
        try:
            version = await self._store_opened  # a failed migration fails the plugin's start
        except Exception:
            await self.store.close()  # maubot does not call stop() after a failed start
            raise
        self.log.debug("roomstate database schema v%d ready", version)
        # In the background: maubot marks the instance started without waiting for the homeserver.
        self.reconciled = self.sched.run_later(0, self.reconcile())
        self.sched.run_later(0, self.delete_old_processed_events())
        self.sched.run_periodically(
            self.config.cleanup_interval_seconds, self.delete_old_processed_events
        )

    async def stop(self) -> None:
        """maubot has removed the handlers; let running ones finish (or cancel them, which
        releases their claims) before the store closes."""
        if self.running_handlers:
            _, pending = await asyncio.wait(set(self.running_handlers), timeout=STOP_TIMEOUT_SECONDS)
            if pending:
                self.log.warning("Cancelling %d handlers still running after %ss", len(pending), STOP_TIMEOUT_SECONDS)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        await self.store.close()

    async def reconcile(self) -> None:
        """Startup: forget rooms the bot has left, sync joined rooms (all, or only new ones)."""
        report = await self.service.resync_all(only_new=self.config.startup_sync == "new")
        self.log.info(
            "Startup reconciliation: %d rooms synced, %d forgotten, %d failed%s",
            len(report.synced), len(report.forgotten), len(report.failed),
            f" ({report.error})" if report.error else "",
        )

    async def delete_old_processed_events(self) -> None:
        await self.service.delete_old_processed_events(self.config.retention_seconds)

    # ---- room events ------------------------------------------------------------------------

    @event.on(EventType.ROOM_MEMBER)
    @deduplicated
    async def on_member(self, evt: StateEvent) -> None:
        await self.service.apply_member_event(evt, may_sync=not _from_left_room(evt))

    @event.on(EventType.ROOM_NAME)
    @event.on(EventType.ROOM_TOPIC)
    @event.on(EventType.ROOM_CANONICAL_ALIAS)
    @event.on(EventType.ROOM_ENCRYPTION)
    @event.on(EventType.ROOM_TOMBSTONE)
    @deduplicated
    async def on_room_info(self, evt: StateEvent) -> None:
        await self.service.apply_room_state_event(evt, may_sync=not _from_left_room(evt))

    @event.on(InternalEventType.SYNC_SUCCESSFUL)
    async def on_sync(self, data: Dict[str, Any]) -> None:
        """Gaps (``limited`` timelines) can hide member events, and a room can vanish into the
        sync's ``leave`` section without any event: resync or forget such rooms."""
        sync = data.get("data") or {}
        if (sync.get("net.maunium.mautrix") or {}).get("is_first"):
            return  # the startup reconciliation covers whatever the first sync carries
        await self.service.handle_sync_gaps(sync)

    # ---- commands ---------------------------------------------------------------------------

    @command.new("rooms", help="List the rooms I'm in, with member counts")
    @command.argument("page", required=False)
    @deduplicated
    async def rooms_command(self, evt: MessageEvent, page: Optional[str] = None) -> None:
        page = (page or "1").strip()
        if not page.isdigit():
            await evt.reply(replies.bad_page(page))
            return
        rooms = await self.service.rooms()
        await evt.reply(replies.rooms_page(rooms, int(page), self.config.page_size))

    @command.new("whereis", help="List the rooms a user shares with me")
    @command.argument("user", required=False, pass_raw=True)
    @deduplicated
    async def whereis_command(self, evt: MessageEvent, user: Optional[str] = None) -> None:
        try:
            user_id = resolve_user(user or "", evt.content, self.client.mxid)
        except BadUserArgument as error:
            await evt.reply(str(error))
            return
        answer = await self.service.whereis(
            user_id, evt.sender, evt.sender in self.config.admins, self.config.whereis_visibility
        )
        await evt.reply(replies.whereis(answer))

    @command.new("resync", help="Re-fetch this room's members and info (`!resync all`: every room)")
    @command.argument("scope", required=False)
    @deduplicated
    async def resync_command(self, evt: MessageEvent, scope: Optional[str] = None) -> None:
        scope = (scope or "").strip().lower()
        if scope not in ("", "all"):
            await evt.reply("Usage: `!resync` (this room) or `!resync all` (every room)")
            return
        admins = self.config.admins
        if scope == "all" and evt.sender not in admins:
            await evt.reply(replies.resync_refused())
            return
        if scope == "" and not await self.service.may_resync(
            evt.room_id, evt.sender, admins, self.config.resync_power_level
        ):
            await evt.reply(replies.resync_refused())
            return
        if scope == "all":
            await evt.reply(replies.resync_all(await self.service.resync_all()))
            return
        outcome = await self.service.sync_room(evt.room_id)
        await evt.reply(replies.resync_room(outcome, await self.store.get_room(evt.room_id)))
