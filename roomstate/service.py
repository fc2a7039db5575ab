"""The business-logic layer's write side: the one place that decides how rooms and members change.

Event handlers, commands and startup all go through RoomStateService to change anything (what is
only read goes through ``queries.RoomQueries``). It reads the homeserver through ``Homeserver``,
writes through ``RoomStore`` (which it owns: it opens and closes it), and keeps each room's work
in delivery order through ``RoomQueue``. Event methods are plain (not ``async``) methods that
schedule their work before returning, so the position of an event is fixed when its handler
first runs.

Failure semantics: a state event that cannot be applied, or a sync that fails, leaves its room in
the durable resync queue (``roomstate_resync_queue``), and ``Repairer`` syncs it again with
exponential backoff until it succeeds. Nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from mautrix.types import Event, EventID, Membership, MemberStateEventContent, RoomID, StateEvent, UserID
from sqlalchemy.engine import Engine

from . import parsing
from .aio import sleep_unless
from .bursts import BurstWatch
from .caches import IdleCache
from .config import Config
from .db import Intercept, JobFuture, RoomStore, StorageError
from .dedup import Deduplicator, EventClaim, SharedOutcome
from .homeserver import Homeserver, HomeserverError
from .limits import Limiter
from .metrics import Metrics
from .models import (
    BAN,
    JOIN,
    LEAVE,
    Applied,
    MemberChange,
    ResyncReport,
    RoomInfo,
    RoomInfoChange,
    SyncOutcome,
)
from .ordering import RoomQueue
from .parsing import RoomSync, SyncView
from .repair import Repairer

T = TypeVar("T")
log = logging.getLogger("roomstate.service")

COVERS_REMEMBERED = 1024  # rooms whose just-joined sync's event IDs are kept (a catch-up may join many)
COVER_IDLE_SECONDS = 600
RECONCILE_RETRY_MIN_SECONDS = 1.0  # listing the joined rooms at start: never retried at once
SUPERVISOR_RETRY_MIN_SECONDS = 1.0  # a failed background job is started again after this ...
SUPERVISOR_RETRY_MAX_SECONDS = 60.0  # ... doubling up to this

RawEvent = Mapping[str, Any]


class RoomObserver(Protocol):
    """Told of what moderators should hear about (alerts.py)."""

    def bot_removed(self, change: MemberChange, room: Awaitable[RoomInfo | None]) -> None: ...

    def room_upgraded(self, change: RoomInfoChange) -> None: ...


class Cover:
    """The state events of the sync in which the bot joined a room. That room's full sync is
    requested after they were delivered, so its snapshot covers them: it records them as
    processed in its own transaction, and their handlers skip them without any work (a join of
    a 100k-member room in maubot standalone delivers 100k member events)."""

    def __init__(self, event_ids: frozenset[EventID]) -> None:
        self.event_ids = event_ids
        self.recorded = False  # claimed by a successful sync (else the next sync claims them)
        self.outcome: asyncio.Future[Applied | None] = SharedOutcome()

    def settle(self, recorded: bool) -> None:
        self.recorded = self.recorded or recorded
        if not self.outcome.done():
            self.outcome.set_result(Applied.COVERED if recorded else None)


async def _logged(work: Awaitable[Any], logger: logging.Logger, what: str) -> None:
    """Await background ``work``, logging (not raising) its failure."""
    try:
        await work
    except StorageError as error:
        logger.warning("%s failed: %s", what, error)
    except Exception:
        logger.exception("%s failed", what)


def _done(value: T) -> asyncio.Future[T]:
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _as_json(evt: Event | StateEvent | RawEvent) -> RawEvent:
    """An event that no sync delivered (so its raw JSON is not at hand) as Matrix JSON. A member
    event mautrix parsed is read off its attributes; mautrix fills in what the JSON lacked (a
    missing membership parses as "leave"), so events from a sync are validated from the sync's
    own JSON instead (``RoomStateService.sync_response``)."""
    if isinstance(evt, Mapping):
        return evt
    if isinstance(evt, StateEvent) and isinstance(evt.content, MemberStateEventContent):
        content = evt.content
        membership = content.membership
        return {
            "type": "m.room.member",
            "room_id": evt.room_id,
            "event_id": evt.event_id,
            "sender": evt.sender,
            "state_key": evt.state_key,
            "origin_server_ts": evt.timestamp,
            "content": {
                "membership": membership.value if isinstance(membership, Membership) else membership,
                "displayname": content.displayname,
                "reason": content.reason,
            },
        }
    try:
        raw = evt.serialize()
    except Exception:  # mautrix could not make sense of it either
        return {}
    return raw if isinstance(raw, Mapping) else {}


class RoomStateService:
    def __init__(
        self,
        store: RoomStore,
        homeserver: Homeserver,
        bot_user_id: UserID,
        config: Config,
        logger: logging.Logger = log,
        metrics: Metrics | None = None,
    ) -> None:
        self.log = logger
        self.store = store
        self.homeserver = homeserver
        self.bot_user_id = bot_user_id
        self.config = config
        self.queue = RoomQueue()
        self.metrics = metrics or Metrics()
        self.dedup = Deduplicator(store, self.queue, logger, self.metrics)
        store.on_commit = self.metrics.histograms["roomstate_database_commit_seconds"].observe  # after every commit
        self.fetches = Limiter(lambda: self.config.sync_concurrency)
        self.repairer = Repairer(store, config, self.sync_room, self.spawn)
        self.bursts = BurstWatch(self._check_after_burst)
        # room -> the events of the sync that joined it, which its full sync covers
        self._covers: IdleCache[RoomID, Cover] = IdleCache(COVERS_REMEMBERED, COVER_IDLE_SECONDS)
        # event ID -> raw JSON of the member and room-info events of the latest sync
        self._sync_events: dict[EventID, RawEvent] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._wake_cleanup = asyncio.Event()
        self.observer: RoomObserver | None = None  # told when the bot is removed or a room upgraded
        self._departing: dict[RoomID, asyncio.Future[RoomInfo | None]] = {}  # left rooms of the latest sync

    @classmethod
    def for_engine(
        cls,
        engine: Engine,
        homeserver: Homeserver,
        bot_user_id: UserID,
        config: Config,
        logger: logging.Logger = log,
        metrics: Metrics | None = None,
    ) -> RoomStateService:
        """The service with its store on maubot's engine (not opened yet: ``open_soon``)."""
        return cls(RoomStore(engine), homeserver, bot_user_id, config, logger, metrics)

    # ---- lifecycle ----------------------------------------------------------------------------

    def open_soon(self) -> asyncio.Future[int]:
        """Open the store (migrations first) without yielding to the event loop: every store call
        made afterwards runs after them. Resolves to the schema version."""
        self.store.history_enabled = self.config.history_retention_seconds > 0  # known to the first jobs
        return self.store.open_soon()

    def start(self) -> None:
        """Start the background work: the repairer and the cleanup job, each supervised (a
        failure is logged and the work started again after a backoff)."""
        self.spawn(self.supervised(self.repairer.run, "repairer"), "repairer")
        self.spawn(self.supervised(self._cleanup_loop, "cleanup"), "cleanup")

    async def supervised(self, work: Callable[[], Awaitable[Any]], name: str) -> None:
        """Run ``work()`` until it returns; when it fails, say so in one log line and run it again
        after a backoff (SUPERVISOR_RETRY_*: a database that is down must not end it for good)."""
        delay = SUPERVISOR_RETRY_MIN_SECONDS
        while True:
            try:
                await work()
                return
            except Exception as error:
                if isinstance(error, (StorageError, HomeserverError)):
                    self.log.warning("The %s job failed (%s); starting it again in %.0fs", name, error, delay)
                else:
                    self.log.exception("The %s job failed; starting it again in %.0fs", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, SUPERVISOR_RETRY_MAX_SECONDS)

    def spawn(self, work: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        task.set_name(f"roomstate-{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def stop(self, timeout: float, before_closing: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Stop background work, let running handlers and scheduled room work finish (up to
        ``timeout`` seconds, then cancel them), run ``before_closing`` (the last sync position
        is saved there), then close the store."""
        self.bursts.close()
        for task in list(self._background):
            task.cancel()
        handlers = set(self.dedup.running)
        if handlers:
            _, late = await asyncio.wait(handlers, timeout=timeout)
            if late:
                self.log.warning("Cancelling %d handlers still running after %ss", len(late), timeout)
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
        await self.queue.close(timeout)
        if self._background:
            await asyncio.wait(set(self._background))
        if before_closing is not None:
            try:
                await before_closing()
            except Exception:
                self.log.exception("Finishing before the database closes failed")
        await self.store.close()

    def config_changed(self) -> None:
        """A new configuration was loaded: wake whatever waits on configured values."""
        switched = self.store.set_history(self.config.history_retention_seconds > 0)  # in the write order, now
        self.spawn(_logged(switched, self.log, "Switching membership history"), "history-switch")
        self.fetches.changed()
        self._wake_cleanup.set()
        self.repairer.wake()

    async def settled(self, timeout: float = 60) -> bool:
        """Wait until no room work is pending and no resync is due or running (for tests and
        benchmarks). False on timeout."""
        deadline = time.monotonic() + timeout

        def quiet() -> bool:
            starting = any(t.get_name() == "roomstate-startup" for t in self._background)
            busy = len(self.queue) or self.store.writes_pending or self.dedup.running or starting
            return not busy and self.repairer.idle()

        while time.monotonic() < deadline:
            if quiet() and not await self.store.due_resyncs(1) and quiet():
                return True
            await asyncio.sleep(0.02)
        return False

    # ---- live events (scheduled synchronously, in delivery order) -------------------------------

    def _raw(self, evt: Event | StateEvent | RawEvent) -> RawEvent:
        """The event's JSON as the homeserver sent it (from the sync that delivered it; ``{}``,
        malformed, for an event of the sync that named another room)."""
        if parsing.is_mapping(evt):
            return evt
        raw = self._sync_events.get(getattr(evt, "event_id", None) or EventID(""))
        if raw is None:
            return _as_json(evt)
        return raw if raw.get("room_id") == getattr(evt, "room_id", None) else {}

    def member_event(
        self, evt: Event | StateEvent | RawEvent, claim: EventClaim | None, *, outside_joined_room: bool = False
    ) -> Awaitable[Applied | None]:
        """Apply one m.room.member event. The bot's own join syncs a room it does not track;
        its own leave or ban forgets the room. In an untracked room the room is queued for a
        resync instead, unless the event comes from a room the bot is not in (left or invited)."""
        covered = self._covered(claim)
        if covered is not None:
            return covered
        raw = self._raw(evt)
        if outside_joined_room and not raw.get("event_id"):
            return _done(None)  # stripped state of an invite: nothing to track
        change = parsing.member_change(raw)
        if change is None or not self._claim_matches(claim, change.room_id, change.event_id):
            self.log.warning("Ignoring a malformed member event %s", raw.get("event_id") if raw else evt)
            return _done(None)
        room_id, record_claim = change.room_id, claim is not None
        if change.member.user_id == self.bot_user_id:
            if change.member.membership in (LEAVE, BAN):
                return self.queue.submit(room_id, lambda: self._forget(change, record_claim=record_claim))
            if change.member.membership == JOIN and not outside_joined_room:
                return self.queue.run(room_id, lambda: self._own_join(change, record_claim=record_claim))
        return self.queue.submit(
            room_id,
            lambda: self.store.apply_member(
                change,
                record_claim=record_claim,
                queue_if_untracked=not outside_joined_room,
                intercept=self._applying(room_id),
            ),
        )

    def room_info_event(
        self, evt: Event | StateEvent | RawEvent, claim: EventClaim | None, *, outside_joined_room: bool = False
    ) -> Awaitable[Applied | None]:
        """Apply a name/topic/alias/encryption/create/tombstone event to the room's info."""
        covered = self._covered(claim)
        if covered is not None:
            return covered
        raw = self._raw(evt)
        change = parsing.room_info_change(raw)
        if change is None or not self._claim_matches(claim, change.room_id, change.event_id):
            self.log.warning(
                "Ignoring a malformed %s event %s", raw.get("type") if raw else "?", raw.get("event_id") if raw else evt
            )
            return _done(None)
        record_claim = claim is not None
        upgraded = dict(change.changes).get("replacement_room")
        if upgraded:
            self.log.info("%s was upgraded to %s", change.room_id, upgraded)
        outcome = self.queue.submit(
            change.room_id,
            lambda: self.store.apply_room_info(
                change,
                record_claim=record_claim,
                queue_if_untracked=not outside_joined_room,
                intercept=self._applying(change.room_id),
            ),
        )
        if upgraded and self.observer is not None and not outside_joined_room:
            observer = self.observer

            def announce(done: asyncio.Future[Applied]) -> None:
                if not done.cancelled() and done.exception() is None and done.result() is Applied.APPLIED:
                    observer.room_upgraded(change)

            outcome.add_done_callback(announce)
        return outcome

    def _covered(self, claim: EventClaim | None) -> Awaitable[Applied | None] | None:
        """The shared outcome of an event that a join's full sync covers, else None."""
        if claim is None:
            return None
        cover = self._covers.get(claim.room_id)
        return cover.outcome if cover is not None and claim.event_id in cover.event_ids else None

    @staticmethod
    def _claim_matches(claim: EventClaim | None, room_id: RoomID, event_id: EventID) -> bool:
        return claim is None or (claim.event_id == event_id and claim.room_id == room_id)

    def _applying(self, room_id: RoomID) -> Intercept[Applied]:
        """The intercept of a database job that applies an event in the room, whose future is
        the event's outcome. If the write fails, the room is queued for a resync, and the future
        carries the error (for the caller to report) once that request is stored (or, failing
        that, remembered in memory)."""

        def applied(job: JobFuture[Applied], result: Applied | None, error: BaseException | None) -> bool:
            if error is None:
                if result is Applied.NOT_TRACKED:
                    self.repairer.wake()
                elif result is Applied.APPLIED:
                    self.bursts.changed(room_id)
                    self.metrics.count("roomstate_state_changes_total")
                return False

            def fail(_: asyncio.Future[None]) -> None:
                if not job.done():  # (cancelled by its caller, e.g. at shutdown)
                    job.set_exception(error)

            self.queue_resync(room_id, "an event could not be applied", str(error)).add_done_callback(fail)
            return True

        return applied

    def _forget(self, change: MemberChange, *, record_claim: bool) -> asyncio.Future[Applied]:
        removed = change.sender != self.bot_user_id and self.observer is not None
        room_before = self._departing.pop(change.room_id, None)
        if removed and room_before is None:
            room_before = self.store.room_in_write_order(change.room_id)

        def forgotten(done: asyncio.Future[Applied]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            if done.result() is Applied.APPLIED:
                self.log.info(
                    "The bot's membership in %s is now %s (by %s); forgot the room",
                    change.room_id,
                    change.member.membership,
                    change.sender,
                )
            # UNCHANGED: the room was already forgotten (its sync's "leave" section); only a
            # replay (DUPLICATE) is no news
            observer = self.observer
            if done.result() is not Applied.DUPLICATE and removed and room_before is not None and observer:
                observer.bot_removed(change, room_before)

        future = self.store.forget_room(
            change.room_id,
            because_of=change.event_id if record_claim else None,
            intercept=self._applying(change.room_id),
        )
        future.add_done_callback(forgotten)
        return future

    async def _own_join(self, change: MemberChange, *, record_claim: bool) -> Applied | None:
        """The bot joined (or changed its profile): a room it does not track yet is synced in
        full, in this position of the room's order."""
        try:
            outcome = await self.store.apply_member(
                change, record_claim=record_claim, queue_if_untracked=True, intercept=self._applying(change.room_id)
            )
        except Exception:
            return None  # queued for a resync; the handler's wrapper reports the event
        if outcome is Applied.NOT_TRACKED:
            self.log.info("Joined %s; syncing its members and info", change.room_id)
            await self._full_sync(change.room_id, "join")
        return outcome

    # ---- whole syncs ------------------------------------------------------------------------

    def sync_response(self, view: SyncView) -> list[Awaitable[Any]]:
        """Act on a /sync response before its events are applied: rooms that moved into the
        ``leave`` section are forgotten (there may be no event for that); rooms with a gap in the
        timeline (lazy-loaded member events may have been skipped) are resynced; a room the bot
        just joined is synced in full, covering the state events of this response, which are then
        skipped (a 100k-member room arrives as 100k events). In the other rooms, state this
        response asserts that contradicts the stored state makes the room suspect of a fork
        (``_check_asserted_state``). Returns the work scheduled (each settles once committed or
        failed, a failure having queued its room for a resync)."""
        work: list[Awaitable[Any]] = []
        delivered: dict[EventID, RawEvent] = {}
        self._departing = {}
        for left in view.left:
            delivered.update(left.handled_state_events())
            if self.observer is not None:  # what the room was, for an alert about the bot's removal
                self._departing[left.room_id] = self.store.room_in_write_order(left.room_id)
            work.append(self.queue.submit(left.room_id, functools.partial(self._forget_left, left.room_id)))
        for room in view.joined:
            if room.own_join(self.bot_user_id):
                cover = Cover(room.handled_state_event_ids())
                self._covers.put(room.room_id, cover)
                work.append(self.queue.run(room.room_id, functools.partial(self._join_sync, room.room_id, cover)))
                continue
            delivered.update(room.handled_state_events())
            if room.limited:
                work.append(self.sync_room(room.room_id, "a gap in the timeline", kind="gap"))
            else:
                work += self._check_asserted_state(room)
        self._sync_events = delivered  # the handlers of this sync's events run next
        return work

    def resync_rooms_in(self, view: SyncView, reason: str) -> list[Awaitable[Any]]:
        """Resync every room a response carries (whose events nobody will apply one by one) and
        forget the rooms it says the bot left."""
        work: list[Awaitable[Any]] = []
        for left in view.left:
            work.append(self.queue.submit(left.room_id, functools.partial(self._forget_left, left.room_id)))
        for room in view.joined:
            if room.has_events or room.limited:
                work.append(self.sync_room(room.room_id, reason, kind="startup"))
        return work

    def dispatch(self, view: SyncView, *, commands_before_ms: int) -> list[Awaitable[Any]]:
        """Apply the events of a response that maubot will not dispatch (maubot's ignored first
        sync, the catch-up) the way mautrix would have handed them to the handlers: each room's
        ``state`` then ``timeline`` events, in order, each claimed with its change. Call right
        after ``sync_response(view)``. Commands are not answered (the reason maubot ignores its
        first sync); those sent before ``commands_before_ms`` (sender's clock) are recorded as
        processed, so that a later delivery does not answer them either."""
        work: list[Awaitable[Any]] = []
        for rooms, outside in ((view.joined, False), (view.left, True)):
            for room in rooms:
                commands: list[EventID] = []
                for raw in room.events():
                    kind, event_id = raw.get("type"), raw.get("event_id")
                    if not isinstance(event_id, str) or not parsing.is_event_id(event_id):
                        continue
                    claim = EventClaim(room.room_id, EventID(event_id))
                    if kind == "m.room.member":
                        work.append(self.member_event(raw, claim, outside_joined_room=outside))
                    elif kind in parsing.ROOM_INFO_EVENT_TYPES and "state_key" in raw:
                        work.append(self.room_info_event(raw, claim, outside_joined_room=outside))
                    elif not outside and parsing.is_old_command(raw, commands_before_ms):
                        commands.append(EventID(event_id))
                if commands:
                    work.append(self._record_commands(room.room_id, commands))
        return work

    def _record_commands(self, room_id: RoomID, event_ids: list[EventID]) -> asyncio.Future[None]:
        return self.queue.submit(room_id, lambda: self.store.claim_events(room_id, event_ids))

    def _check_asserted_state(self, room: RoomSync) -> list[Awaitable[Any]]:
        """Before an unbroken timeline, the ``state`` section holds state the server thinks the
        client lacks. After concurrent changes forked the room, state resolution may settle on
        an event the client already processed (the dedup skips it when dispatched), and no new
        event says so; then that event contradicts what is stored. Synapse also sends the state
        at the start of a forked timeline there, which may be older than what is stored: so a
        contradiction is a sign, not proof, and makes the room suspect (``bursts.py``: checked
        against the server once it settles, at most every minute). Compared in this position of
        the room's order (before this sync's timeline is applied); keys the timeline sets again
        are left to it; events not processed yet are simply applied when dispatched."""
        if not room.state:
            return []
        members, infos = room.asserted_state()
        if not members and not infos:
            return []
        # a store job in the room's position (jobs run in order): before this sync's events,
        # without holding them up
        compare = functools.partial(self._compare_asserted, room.room_id, members, infos)
        return [self.queue.submit(room.room_id, compare)]

    def _compare_asserted(
        self, room_id: RoomID, members: list[MemberChange], infos: list[RoomInfoChange]
    ) -> asyncio.Future[list[EventID]]:
        future = self.store.contradicted(room_id, members, infos)
        future.add_done_callback(functools.partial(self._suspect_if_contradicted, room_id))
        return future

    def _suspect_if_contradicted(self, room_id: RoomID, done: asyncio.Future[list[EventID]]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            self.queue_resync(room_id, "checking the state a sync asserted failed", str(error))
            return
        stale = done.result()
        if stale:
            self.log.info(
                "The server's sync of %s asserts %d state event(s) processed before that the stored state does"
                " not say (%s): the room may have forked; checking it against the server once it settles",
                room_id,
                len(stale),
                ", ".join(stale[:3]),
            )
            self.bursts.contradicted(room_id)

    def _check_after_burst(self, room_id: RoomID) -> None:
        """A suspect room (a burst of changes, a contradicting sync) has settled: resync it
        (see bursts.py)."""
        self.sync_room(room_id, "the room may have forked; checking it against the server", kind="fork")

    def _forget_left(self, room_id: RoomID) -> asyncio.Future[Applied]:
        def forgotten(done: asyncio.Future[Applied]) -> None:
            if not done.cancelled() and done.exception() is None and done.result() is Applied.APPLIED:
                self.log.info("The bot is no longer in %s; forgot the room", room_id)

        future = self.store.forget_room(room_id, intercept=self._applying(room_id))
        future.add_done_callback(forgotten)
        return future

    async def _join_sync(self, room_id: RoomID, cover: Cover) -> None:
        self.log.info("Joined %s; syncing its members and info", room_id)
        recorded = False
        try:
            outcome = await self._full_sync(room_id, "join")
            recorded = outcome.ok and not outcome.forgotten
        finally:  # also when cancelled at shutdown: the covered events' outcome must settle
            cover.settle(recorded)

    # ---- whole rooms ----------------------------------------------------------------------------

    def sync_room(
        self, room_id: RoomID, reason: str = "requested", *, kind: str = "command"
    ) -> asyncio.Future[SyncOutcome]:
        """Fetch the room's state and replace what the store has, atomically, in this position
        of the room's order. Never raises: failures are in the outcome (and queue a resync).
        ``kind`` names the reason for the metrics (join, gap, fork, startup, repair, all, command)."""
        self.log.debug("Syncing %s: %s", room_id, reason)
        return self.queue.run(room_id, lambda: self._full_sync(room_id, kind))

    async def _full_sync(self, room_id: RoomID, kind: str) -> SyncOutcome:
        outcome = await self._full_sync_unmeasured(room_id)
        result = "failed" if not outcome.ok else "forgotten" if outcome.forgotten else "ok"
        self.metrics.count("roomstate_resyncs_total", reason=kind, outcome=result)
        return outcome

    async def _full_sync_unmeasured(self, room_id: RoomID) -> SyncOutcome:
        try:
            return await self._fetch_and_replace(room_id)
        except StorageError as error:  # e.g. forgetting a room the bot left: the database is down
            return await self._sync_failed(room_id, f"database error: {error}")
        except Exception as error:  # a bug, or a failure nobody foresaw: still never lost
            self.log.exception("Syncing %s failed unexpectedly", room_id)
            return await self._sync_failed(room_id, f"unexpected error: {error}")

    async def _fetch_and_replace(self, room_id: RoomID) -> SyncOutcome:
        try:
            async with self.fetches:
                fetched_at_ms = int(time.time() * 1000)
                snapshot, own_membership = await self.homeserver.room_snapshot(room_id)
        except HomeserverError as error:
            if error.not_in_room:
                self.log.info("Not in %s any more (%s); forgetting it", room_id, error)
                await self.store.forget_room(room_id)
                return SyncOutcome(room_id, forgotten=True)
            return await self._sync_failed(room_id, str(error))
        if own_membership is None:
            return await self._sync_failed(room_id, "the room state has no valid membership for the bot")
        if own_membership != JOIN:
            self.log.info("The bot's membership in %s is %s; forgetting it", room_id, own_membership)
            await self.store.forget_room(room_id)
            return SyncOutcome(room_id, forgotten=True)
        cover = self._covers.get(room_id)
        covered = cover.event_ids if cover is not None and not cover.recorded else frozenset()
        try:
            diff = await self.store.replace_room(snapshot, covered_events=tuple(covered), fetched_at_ms=fetched_at_ms)
            room = await self.store.room(room_id)
        except Exception as error:
            return await self._sync_failed(room_id, f"database error: {error}")
        if cover is not None:
            cover.settle(True)
        self.log.info(
            "Synced %s: %d members (+%d -%d), %d rows written%s",
            room_id,
            len(snapshot.members),
            diff.added_count,
            diff.removed_count,
            diff.rows_written,
            f"; it covers the {len(covered)} state events of the sync that joined it" if covered else "",
        )
        return SyncOutcome(room_id, diff=diff, room=room)

    async def _sync_failed(self, room_id: RoomID, error: str) -> SyncOutcome:
        try:
            attempts = await self.store.resync_failed(room_id, error, self.repairer.backoff)
            self.log.warning("Could not sync %s (attempt %d): %s; will retry", room_id, attempts, error)
        except Exception as db_error:
            self.log.warning("Could not sync %s: %s; nor record that (%s)", room_id, error, db_error)
            self.repairer.remember(room_id, error)
        self.repairer.wake()
        return SyncOutcome(room_id, error=error)

    def queue_resync(self, room_id: RoomID, reason: str, error: str | None = None) -> asyncio.Future[None]:
        """Put the room in the durable resync queue (remembered in memory if even that fails).
        The returned future settles (never with an error) once that is done."""
        settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(future: asyncio.Future[None]) -> None:
            if future.cancelled() or future.exception() is not None:
                self.repairer.remember(room_id, error or reason)
            self.repairer.wake()
            if not settled.done():
                settled.set_result(None)

        try:
            self.store.queue_resync(room_id, reason, error).add_done_callback(done)
        except StorageError:  # the store is closed (shutting down): the next start reconciles
            settled.set_result(None)
        return settled

    async def resync_all(self) -> ResyncReport:
        """Reconcile every room with the homeserver: sync the rooms it says the bot is in and
        those the store knows (a sync forgets a room only if the homeserver confirms the bot is
        not in it). At most ``sync.concurrency`` fetches run at a time, however often this runs."""
        try:
            joined = set(await self.homeserver.joined_rooms())
        except HomeserverError as error:
            self.log.warning("Could not list joined rooms: %s", error)
            return ResyncReport(error=str(error))
        known = {room.room_id for room in await self.store.rooms()}
        outcomes = await asyncio.gather(
            *(self.sync_room(room_id, "resync all", kind="all") for room_id in sorted(joined | known))
        )
        return ResyncReport(
            synced=tuple(o for o in outcomes if o.ok and not o.forgotten),
            forgotten=tuple(o.room_id for o in outcomes if o.forgotten),
            failed=tuple(o for o in outcomes if not o.ok),
        )

    async def reconcile(self, *, every_room: bool) -> None:
        """Startup without a catch-up: queue every joined room (``every_room``) or only new ones,
        and every stored room the bot may have left, for a resync; the repairer does the rest. The
        queue is durable, so a restart in the middle carries on where it stopped."""
        delay = max(RECONCILE_RETRY_MIN_SECONDS, self.config.retry_min_seconds)
        while True:
            try:
                joined = set(await self.homeserver.joined_rooms())
                break
            except HomeserverError as error:
                self.log.warning(
                    "Startup reconciliation: could not list joined rooms (%s); retrying in %.1fs", error, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, max(delay, self.config.retry_max_seconds))
        known = {room.room_id for room in await self.store.rooms()}
        targets = joined | known if every_room else joined ^ known
        await asyncio.gather(*(self.store.queue_resync(room_id, "startup") for room_id in sorted(targets)))
        self.repairer.wake()
        self.log.info(
            "Startup reconciliation: %d rooms queued for a sync (%d joined, %d stored)",
            len(targets),
            len(joined),
            len(known),
        )

    # ---- housekeeping ---------------------------------------------------------------------------

    async def gauges(self) -> list[tuple[str, str, float, tuple[tuple[str, str], ...]]]:
        """What /metrics reports as it is now: (name, help, value, labels)."""
        queue = await self.store.resync_queue()
        rooms, joined, invited = await self.store.totals()
        history_rows = await self.store.history_rows()
        now_ms = time.time() * 1000
        oldest = (now_ms - min(s.queued_at for s in queue)) / 1000 if queue else 0.0
        return [
            ("roomstate_resync_queue_rooms", "Rooms waiting for a resync.", len(queue), ()),
            ("roomstate_resync_queue_oldest_seconds", "How long the longest-waiting room has waited.", oldest, ()),
            (
                "roomstate_database_writes_pending",
                "Write jobs queued for the database writer.",
                self.store.writes_pending,
                (),
            ),
            ("roomstate_rooms", "Rooms the bot is in and tracks.", rooms, ()),
            ("roomstate_members", "Memberships stored, by membership.", joined, (("membership", "join"),)),
            ("roomstate_members", "Memberships stored, by membership.", invited, (("membership", "invite"),)),
            ("roomstate_history_rows", "Membership-history rows kept.", history_rows, ()),
        ]

    async def delete_old_processed_events(self) -> int:
        """Delete processed-event records older than the retention, in small chunks."""
        cutoff = int((time.time() - self.config.retention_seconds) * 1000)
        deleted = 0
        next_room: int | None = 0
        while next_room is not None:
            count, next_room = await self.store.delete_processed_chunk(cutoff, next_room)
            deleted += count
        if deleted:
            self.log.info(
                "Deleted %d processed-event records older than %.0f h", deleted, self.config.retention_seconds / 3600
            )
        return deleted

    async def sweep_user_index(self) -> int:
        """Delete the user index's pairs whose membership has ended, a range of users at a time."""
        deleted = 0
        next_user: int | None = 0
        while next_user is not None:
            count, next_user = await self.store.sweep_user_index_chunk(next_user)
            deleted += count
        if deleted:
            self.log.debug("Swept %d ended memberships from the user index", deleted)
        return deleted

    async def maintain_history(self) -> None:
        """Delete history past the retention (all of it when history is off), in small chunks;
        index what the user index does not hold yet."""
        retention = self.config.history_retention_seconds
        claims_since = time.time() - self.config.retention_seconds  # a member event's claim is its row
        if retention <= 0:
            deleted = await self.store.clear_history(keep_claims_since=claims_since)
        else:
            deleted = await self.store.delete_history_before(time.time() - retention, keep_claims_since=claims_since)
            await self.store.index_history()
        if deleted:
            self.log.info("Deleted %d membership history rows past the retention", deleted)

    async def _cleanup_loop(self) -> None:
        while True:
            try:
                await self.delete_old_processed_events()
                await self.maintain_history()
                await self.sweep_user_index()
                self._covers.sweep()
                self.bursts.sweep()
                await self.store.sweep_caches(self.config.idle_seconds)
                await self.store.delete_expired_web(int(time.time() * 1000))
            except StorageError as error:
                self.log.warning(
                    "Cleanup failed (%s); trying again in %.0fs", error, self.config.cleanup_interval_seconds
                )
            except Exception:
                self.log.exception("Cleanup failed; trying again later")
            self._wake_cleanup.clear()
            await sleep_unless(self._wake_cleanup, self.config.cleanup_interval_seconds)
