"""The maubot plugin class: wiring only. Room events go to RoomStateService, commands to
ChatCommands (which ask RoomQueries and RoomStateService)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from maubot.handlers import command, event
from maubot.matrix import MaubotMessageEvent as MessageEvent
from maubot.plugin_base import Plugin
from mautrix.client import InternalEventType, SyncStream
from mautrix.types import EventType, Format, MessageType, StateEvent, TextMessageEventContent
from mautrix.util.config import BaseProxyConfig
from sqlalchemy.engine import Engine

from . import replies
from .alerts import Alerts, ClientNotices
from .commands import ChatCommands
from .config import Config
from .dedup import Deduplicator, EventClaim, deduplicated, deduplicated_with_claim
from .direct import DirectRooms
from .homeserver import REQUEST_ERRORS, Homeserver
from .intake import SyncIntake
from .metrics import Metrics
from .models import Applied
from .queries import RoomQueries
from .service import RoomStateService
from .web.app import WebView, security_headers
from .web.auth import WebAuth
from .web.chat import WebChat

F = TypeVar("F", bound=Callable[..., Any])
STOP_TIMEOUT_SECONDS = 15


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
    queries: RoomQueries
    commands: ChatCommands
    intake: SyncIntake
    alerts: Alerts
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
        self.metrics = Metrics()
        homeserver = Homeserver(self.client, metrics=self.metrics)
        self.service = RoomStateService.for_engine(
            self.database, homeserver, self.client.mxid, self.config, self.log, self.metrics
        )
        self._store_opened = self.service.open_soon()  # queued before any other database work
        self.queries = RoomQueries(self.service.store, homeserver, self.config, self.log)
        self.auth = WebAuth(self.service.store, self.config)
        self.direct = DirectRooms(self.client, self.service.store, homeserver, self.client.mxid)
        web_chat = WebChat(self.auth, self.direct, self.client, str(self.webapp_url) if self.webapp_url else None)
        self.commands = ChatCommands(self.service, self.queries, self.config, self.client.mxid, self.log, web=web_chat)
        self.dedup = self.service.dedup
        self.intake = SyncIntake(self.service, homeserver, self.config, self.log)
        self.alerts = Alerts(
            self.service.store, self.config, ClientNotices(self.client), logger=self.log, metrics=self.metrics
        )
        self.service.observer = self.alerts
        # awaited by the syncer before it dispatches the sync's events (maubot's own registration
        # would run it as a task after mautrix has rewritten every event's room ID)
        self.client.add_event_handler(InternalEventType.SYNC_SUCCESSFUL, self.on_sync, wait_sync=True)

    async def start(self) -> None:
        try:
            version = await self._store_opened  # a failed migration fails the plugin's start
        except Exception:
            await self.stop()  # maubot does not call stop() after a failed start
            raise
        self.log.debug("roomstate database schema v%d ready", version)
        self.service.start()
        self.service.spawn(self.service.supervised(self.intake.start, "startup"), "startup")
        self.service.spawn(self.service.supervised(self.alerts.run, "alerts"), "alerts")
        if self.webapp is not None and self.webapp_url is not None:
            view = WebView(
                self.queries, self.auth, self.config, self.metrics, str(self.webapp_url), self.service.gauges
            )
            self.register_handler_class(view)
            self.webapp.add_middleware(security_headers)

    async def stop(self) -> None:
        self.client.remove_event_handler(InternalEventType.SYNC_SUCCESSFUL, self.on_sync)
        await self.alerts.close()
        await self.intake.stop(STOP_TIMEOUT_SECONDS)

    def on_external_config_update(self) -> None:
        self.config.load_and_update()
        self.service.config_changed()
        self.alerts.wake.set()

    # ---- room events ------------------------------------------------------------------------

    @on(EventType.ROOM_MEMBER)
    @deduplicated_with_claim
    def on_member(self, evt: StateEvent, claim: EventClaim | None) -> Awaitable[Applied | None]:
        return self.intake.member_event(evt, claim, outside_joined_room=_outside_joined_room(evt))

    @on(EventType.ROOM_NAME)
    @on(EventType.ROOM_TOPIC)
    @on(EventType.ROOM_CANONICAL_ALIAS)
    @on(EventType.ROOM_ENCRYPTION)
    @on(EventType.ROOM_TOMBSTONE)
    @on(EventType.ROOM_CREATE)
    @deduplicated_with_claim
    def on_room_info(self, evt: StateEvent, claim: EventClaim | None) -> Awaitable[Applied | None]:
        return self.intake.room_info_event(evt, claim, outside_joined_room=_outside_joined_room(evt))

    async def on_sync(self, data: dict[str, Any]) -> None:
        """Runs before the sync's events are dispatched, on the raw response as the homeserver
        sent it (and holds up the sync loop: it only schedules work)."""
        sync = data.get("data")
        if isinstance(sync, dict):
            flags = sync.get("net.maunium.mautrix") or {}
            first, initial = bool(flags.get("is_first")), bool(flags.get("is_initial"))
            dispatched = not (
                (first and self.client.ignore_first_sync) or (initial and self.client.ignore_initial_sync)
            )
            if first:
                self.log.info("First sync since the start%s", "" if dispatched else " (maubot does not dispatch it)")
            self.intake.on_sync(sync, dispatched=dispatched, initial=initial)

    # ---- commands ---------------------------------------------------------------------------

    @command.new(
        name=lambda self: self.config.base_command,
        aliases=lambda self, word: self.commands.answers_to(word),
        help="What I know about rooms and members: !roomstate help",
        require_subcommand=False,
        must_consume_args=False,
    )
    @command.argument("args", required=False, pass_raw=True)
    @deduplicated
    async def on_command(self, evt: MessageEvent, args: str | None = None) -> None:
        answer = await self.commands.answer(evt, evt.content.body)
        if answer is not None:
            await self._reply(evt, answer)

    async def _reply(self, evt: MessageEvent, answer: replies.Reply) -> None:
        content = TextMessageEventContent(
            msgtype=MessageType.NOTICE, body=answer.plain, format=Format.HTML, formatted_body=answer.html
        )
        try:
            # "force": a real reply relation, never maubot's fallback that pills the sender
            await evt.respond(content, reply="force", extra_content={"m.mentions": {}})
        except REQUEST_ERRORS as error:
            self.log.warning("Could not reply to %s in %s: %s", evt.event_id, evt.room_id, error)
