"""Process every Matrix event at most once, across restarts, re-joins and resyncs.

Two decorators, for the two kinds of handlers:

``@deduplicated`` (commands: their effect is a reply, a side effect no transaction can undo)
    claims ``(room, event_id)`` in its own transaction before the handler runs; a replay finds the
    claim and is skipped. At most once: once the handler has started, the claim stays, whatever
    happens. A handler cancelled while its claim is being recorded never runs, so its claim is
    released. The handler runs after everything delivered before it in the room has been applied.

``@deduplicated_with_claim`` (state events: their effect is a database change)
    hands the handler an ``EventClaim``, which the logic layer passes to the store, which records
    the claim in the same transaction as the state change. After a crash or a failure an event is
    either applied and claimed, or neither (and the room is resynced). The handler only schedules
    the work in the room's order and returns: a burst of events is group-committed.

Both sit directly above ``def`` (below ``@command.argument`` / ``@event.on``), which then mark the
wrapper: ``functools.wraps`` keeps the function's name and docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar

from mautrix.types import EventID, RoomID

from .db import RoomStore, StorageError
from .metrics import Metrics
from .models import Applied
from .ordering import RoomQueue

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger("roomstate.dedup")


class RoomEvent(Protocol):
    """What a deduplicated event has (mautrix's events do)."""

    @property
    def room_id(self) -> RoomID: ...

    @property
    def event_id(self) -> EventID: ...


E = TypeVar("E", bound=RoomEvent)


class EventClaim(NamedTuple):
    """Permission to apply one event, recorded by the store together with the change (a tuple:
    one is made for every live event)."""

    room_id: RoomID
    event_id: EventID


class Deduplicator:
    """The claims ledger, the rooms' order and the handlers still running (so that ``stop()``
    can let them finish before the database closes)."""

    def __init__(
        self, store: RoomStore, queue: RoomQueue, logger: logging.Logger = log, metrics: Metrics | None = None
    ) -> None:
        self.store = store
        self.queue = queue
        self.log = logger
        self.metrics = metrics or Metrics()
        self.running: set[asyncio.Task[Any]] = set()
        self.gate: asyncio.Future[None] | None = None  # commands wait until it is done (startup)
        self.closing = False  # stopping: commands still waiting for the gate return

    def earlier_work(self, room_id: RoomID) -> Awaitable[Any]:
        """Everything scheduled in the room up to now: its order's steps and the writes queued
        (done, whether they succeeded or not)."""
        try:
            flushed: Awaitable[Any] = self.store.flush()
        except StorageError:  # closed: nothing more will be written
            flushed = asyncio.sleep(0)
        return asyncio.gather(self.queue.barrier(room_id), flushed, return_exceptions=True)

    def release(self, room_id: RoomID, event_id: EventID) -> None:
        """Forget a claim (if the database takes it), so a later delivery may run the event."""
        try:
            self.store.release_event(room_id, event_id).add_done_callback(_ignore_failure)
        except StorageError:
            pass

    @contextlib.contextmanager
    def running_handler(self) -> Iterator[None]:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - handlers always run in tasks
            yield
            return
        self.running.add(task)
        try:
            yield
        finally:
            self.running.discard(task)

    def follow(self, outcome: Awaitable[Applied | None], key: tuple[RoomID, EventID] | None, handler: str) -> None:
        """Log an event's outcome once it is known (a failure in one line: the logic layer has
        queued the room for a resync, and nothing was applied nor claimed)."""

        def report(done: asyncio.Future[Applied | None]) -> None:
            room_id, event_id = key or ("?", "an event")
            if done.cancelled():
                return
            error = done.exception()
            result = done.result() if error is None else None
            outcome = "failed" if error is not None else "ignored" if result is None else result.name.lower()
            self.metrics.count("roomstate_events_total", handler=handler, outcome=outcome)
            if error is not None:
                self.log.warning("Could not apply %s in %s: %s", event_id, room_id, error)
            elif done.result() is Applied.DUPLICATE:
                self.log.debug("Skipping %s in %s: already processed", event_id, room_id)
            elif done.result() is Applied.COVERED:
                pass  # one of many (a join's state section): the full sync logged them all at once
            elif key is not None and (result := done.result()) is not None:
                self.log.debug("Processing %s in %s with %s: %s", event_id, room_id, handler, result.value)

        if not isinstance(outcome, SharedOutcome):  # one for many covered events: nothing to log
            asyncio.ensure_future(outcome).add_done_callback(report)

    async def try_claim(self, room_id: RoomID, event_id: EventID) -> bool:
        """Record the event as processed; False if it was already. If the caller is cancelled
        meanwhile, a claim that went through is released again."""
        pending = self.store.claim_event(room_id, event_id)
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:

            def release_if_claimed(done: asyncio.Future[bool]) -> None:
                if not done.cancelled() and done.exception() is None and done.result():
                    self.release(room_id, event_id)

            pending.add_done_callback(release_if_claimed)
            raise


def _ignore_failure(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()  # retrieved: a failed release is no news (the claim simply stays)


class SharedOutcome(asyncio.Future):  # type: ignore[type-arg]
    """One outcome shared by many events (those a full sync covers): nothing to report each."""


class HasDeduplicator(Protocol):
    dedup: Deduplicator


H = TypeVar("H", bound=HasDeduplicator)


def _key(evt: Any) -> tuple[RoomID, EventID] | None:
    room_id, event_id = getattr(evt, "room_id", None), getattr(evt, "event_id", None)
    if isinstance(room_id, str) and isinstance(event_id, str) and room_id and event_id:
        return RoomID(room_id), EventID(event_id)
    return None


def deduplicated(
    func: Callable[Concatenate[H, E, P], Awaitable[R]],
) -> Callable[Concatenate[H, E, P], Awaitable[R | None]]:
    """At most once per event; see the module docstring."""

    async def wrapper(self: H, evt: E, /, *args: P.args, **kwargs: P.kwargs) -> R | None:
        key = _key(evt)
        if key is None:  # nothing to key on
            return await func(self, evt, *args, **kwargs)
        dedup = self.dedup
        gate = dedup.gate
        earlier = dedup.earlier_work(key[0]) if gate is None or gate.done() else None  # fixed now
        with dedup.running_handler():
            if earlier is None:  # held back at startup: after what was held back before it
                await asyncio.shield(gate)  # type: ignore[arg-type]
                if dedup.closing:  # stopped before startup finished: the next start sees it again
                    return None
                earlier = dedup.earlier_work(key[0])
            try:
                claimed = await dedup.try_claim(*key)
            except StorageError as error:
                # an answer (the database is down, say) beats silence; unrecorded, a replay of the
                # event after a restart may be answered again
                dedup.log.warning("Could not record %s in %s as processed (%s); handling it anyway", *key[::-1], error)
                claimed = True
            if not claimed:
                dedup.log.debug("Skipping %s in %s: already processed", key[1], key[0])
                return None
            try:
                await earlier
            except asyncio.CancelledError:
                dedup.release(*key)  # not run: a later delivery may run it
                raise
            dedup.log.debug("Processing %s in %s with %s", key[1], key[0], func.__name__)
            return await func(self, evt, *args, **kwargs)

    functools.update_wrapper(wrapper, func)
    return wrapper


def deduplicated_with_claim(
    func: Callable[[H, E, EventClaim | None], Awaitable[Applied | None]],
) -> Callable[[H, E], Awaitable[None]]:
    """Exactly one application per event, claim and change in one transaction; see the module
    docstring. ``func`` is a plain function that schedules the event's work (fixing its position
    in the room's order) and returns the pending outcome; the handler does not wait for it: the
    logic layer and the store carry it out in order, and the outcome is logged when it is known."""

    async def wrapper(self: H, evt: E, /) -> None:
        key = _key(evt)
        self.dedup.follow(func(self, evt, EventClaim(*key) if key else None), key, func.__name__)

    functools.update_wrapper(wrapper, func)
    return wrapper
