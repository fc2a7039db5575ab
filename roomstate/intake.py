"""How syncs come in: maubot's live /sync responses and the events it dispatches, its ignored
first sync, and the plugin's own catch-up at start; and the durable sync position they move.

**Catch-up** (``sync.on_startup: catch-up``, the default). From the moment its handlers are
registered the plugin holds everything live back; at start it makes one /sync of its own from the
position it saved (``position.py``) up to the present, and applies it as maubot would have
dispatched it: rooms left meanwhile are forgotten, rooms joined meanwhile and rooms whose timeline
has a gap are synced in full, and every other room's events are applied one by one, in order,
each claimed with its change (so what was applied before is skipped). Commands in it are not
answered. Then what was held back is let through, in the order it arrived, so each room's
catch-up comes before its live events. A quiet restart fetches no room's state at all.

**Fallback**: no saved position (a first start, an upgrade from 0.2), a position the homeserver
refuses, or a catch-up that fails: every room is queued for a full sync in the durable resync
queue (as ``sync.on_startup: all`` always does), and the position starts moving once that queue
is written (what a crash leaves undone is in it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from mautrix.types import Event, StateEvent

from . import parsing
from .config import Config
from .db import StorageError
from .dedup import EventClaim
from .homeserver import Homeserver, HomeserverError
from .models import Applied
from .parsing import SyncView
from .position import SyncPositions
from .service import RawEvent, RoomStateService

T = TypeVar("T")
log = logging.getLogger("roomstate.intake")

CATCH_UP_TIMEOUT_SECONDS = 300.0  # an incremental sync after a long stop can be large

# The catch-up's own filter: everything about rooms, nothing else. Not lazy-loading members (the
# homeserver would then remember, per device, which members it sent, and omit them from maubot's
# own lazy-loading syncs); not narrowing the timeline's event types (a room whose filtered
# timeline is empty is left out of the response, state changes and all).
CATCH_UP_FILTER: Mapping[str, Any] = {
    "presence": {"not_types": ["*"]},
    "account_data": {"not_types": ["*"]},
    "room": {
        "timeline": {"limit": 100},
        "state": {"lazy_load_members": False},
        "ephemeral": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
    },
}


def _copy(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


class SyncIntake:
    def __init__(
        self,
        service: RoomStateService,
        homeserver: Homeserver,
        config: Config,
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.homeserver = homeserver
        self.config = config
        self.log = logger
        self.positions = SyncPositions(
            lambda token: service.store.save_sync_position(token, service.bot_user_id),
            service.repairer.all_saved,
            logger,
        )
        self.started_ms = int(clock() * 1000)
        self.live: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # done: let through
        self._held: list[Callable[[], None]] = []
        self.caught_up: bool | None = None  # how startup went: True caught up, False fell back
        service.dedup.gate = self.live  # commands wait for it too
        if config.startup_sync != "catch-up":
            self._let_through()

    # ---- live, from the plugin's handlers (synchronous: each fixes its position at once) -------

    def on_sync(self, sync: Mapping[str, Any], *, dispatched: bool, initial: bool) -> None:
        """A /sync response of maubot's, before mautrix dispatches its events (``dispatched``:
        whether it will; ``initial``: a sync without a ``since``)."""
        view = parsing.sync_view(sync)  # read now: mautrix rewrites the events' room IDs next
        self._arrive(lambda: self._sync(view, dispatched=dispatched, initial=initial))

    def member_event(
        self, evt: Event | StateEvent | RawEvent, claim: EventClaim | None, *, outside_joined_room: bool
    ) -> Awaitable[Applied | None]:
        return self._event(lambda: self.service.member_event(evt, claim, outside_joined_room=outside_joined_room))

    def room_info_event(
        self, evt: Event | StateEvent | RawEvent, claim: EventClaim | None, *, outside_joined_room: bool
    ) -> Awaitable[Applied | None]:
        return self._event(lambda: self.service.room_info_event(evt, claim, outside_joined_room=outside_joined_room))

    def _event(self, apply: Callable[[], Awaitable[Applied | None]]) -> Awaitable[Applied | None]:
        if self.live.done():
            outcome = apply()
            self.positions.add(outcome)
            return outcome
        placeholder: asyncio.Future[Applied | None] = asyncio.get_running_loop().create_future()

        def later() -> None:
            outcome = asyncio.ensure_future(apply())
            self.positions.add(outcome)
            outcome.add_done_callback(lambda done: _copy(done, placeholder))

        self._held.append(later)
        return placeholder

    def _arrive(self, work: Callable[[], None]) -> None:
        if self.live.done():
            work()
        else:
            self._held.append(work)

    def _sync(self, view: SyncView, *, dispatched: bool, initial: bool) -> None:
        self.positions.response(view.next_batch)
        if not dispatched and initial:
            work = self.service.resync_rooms_in(view, "the initial sync, which maubot does not dispatch")
        elif not dispatched:  # maubot's first sync after a start: its events are applied here
            work = self.service.sync_response(view) + self.service.dispatch(view, commands_before_ms=self.started_ms)
        elif not view.dispatchable:
            self.log.warning("A sync carries malformed events that stop its dispatch; resyncing its rooms instead")
            work = self.service.resync_rooms_in(view, "malformed events stopped its dispatch")
        else:
            work = self.service.sync_response(view)
        for outcome in work:
            self.positions.add(outcome)

    def _let_through(self) -> None:
        """Stop holding live work back: what was held runs now, in the order it arrived."""
        if self.live.done():
            return
        self.live.set_result(None)
        held, self._held = self._held, []
        for work in held:
            try:
                work()
            except Exception:  # a bug in one: the rest still runs
                self.log.exception("Applying work held back during startup failed")

    # ---- startup ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Catch up from the saved position, or fall back to syncing every room (see the module
        docstring). Safe to run again after a failure."""
        mode = self.config.startup_sync
        if mode == "catch-up" and not self.live.done():
            if await self._catch_up():
                self.caught_up = True
                self.positions.release()  # the next response of maubot's takes all of the catch-up's work
                return
            self.caught_up = False
        self._let_through()
        await self.service.reconcile(every_room=mode != "new")
        self.positions.release()  # what a crash leaves undone is in the durable queue now

    async def _catch_up(self) -> bool:
        try:
            saved = await self.service.store.sync_position()
        except StorageError as error:
            self.log.warning("Could not read the saved sync position (%s); syncing every room instead", error)
            return False
        if saved is None:
            self.log.info("No sync position saved yet (a first start, or an upgrade from 0.2); syncing every room")
            return False
        since, saved_by = saved
        if saved_by != self.service.bot_user_id:
            self.log.warning("The saved sync position is %s's, not this bot's; syncing every room instead", saved_by)
            return False
        try:
            sync = await self.homeserver.sync_once(since, CATCH_UP_FILTER, timeout=CATCH_UP_TIMEOUT_SECONDS)
        except HomeserverError as error:
            refused = error.status == 400
            what = "The homeserver refused the saved sync position" if refused else "Catching up failed"
            self.log.warning("%s (%s); syncing every room instead", what, error)
            return False
        view = parsing.sync_view(sync)
        if view.next_batch is None:
            self.log.warning("The catch-up sync has no next_batch; syncing every room instead")
            return False
        for outcome in self.service.sync_response(view) + self.service.dispatch(
            view, commands_before_ms=self.started_ms
        ):
            self.positions.add(outcome)  # folded: saved with the first response of maubot's after startup
        self._let_through()  # what arrived meanwhile, behind the catch-up in every room
        joined_meanwhile = sum(room.own_join(self.service.bot_user_id) for room in view.joined)
        gaps = sum(room.limited for room in view.joined) - joined_meanwhile
        self.log.info(
            "Caught up from the saved sync position: %d rooms changed while stopped (%d synced in full: %d with a"
            " gap, %d joined meanwhile), %d left; no other room was fetched",
            len(view.joined),
            gaps + joined_meanwhile,
            max(gaps, 0),
            joined_meanwhile,
            len(view.left),
        )
        return True

    async def stop(self, timeout: float) -> None:
        """Stop the service; the last position is saved once its work has drained. Work still
        held back never runs (the next start catches up on it); commands waiting for it return."""
        self._held = []
        self.service.dedup.closing = True
        if not self.live.done():
            self.live.set_result(None)
        await self.service.stop(timeout, before_closing=self.positions.close)
