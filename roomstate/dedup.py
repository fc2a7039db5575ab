"""Process every Matrix event at most once, across restarts, re-joins and resyncs.

``@deduplicated`` wraps an async handler method ``(self, evt, ...)``. Before the handler runs it
claims ``(evt.room_id, evt.event_id)`` in the processed-events table with one atomic INSERT; if the
event was claimed before (a replay, or a concurrent duplicate still running), the handler is
skipped. Failure semantics: if the handler raises (or is cancelled), the claim is released and
the error propagates, so a later delivery of the same event is processed again. A process that
dies in the middle of a handler keeps the claim: delivery is at-most-once, and the state it would
have written is restored by the next resync.

The decorator works above or below ``@event.on`` / ``@command.new``: on a maubot
``CommandHandler`` it wraps the command function and returns the handler itself, and on a plain
function ``functools.wraps`` carries maubot's ``__mb_*`` markers over to the wrapper.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Awaitable, Callable, Optional, Protocol, Set, TypeVar

from maubot.handlers.command import CommandHandler

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

log = logging.getLogger("roomstate.dedup")


class EventLedger(Protocol):
    """Where claims are recorded (the RoomStore implements this)."""

    async def claim_event(self, room_id: str, event_id: str) -> bool: ...

    async def release_event(self, room_id: str, event_id: str) -> None: ...


class HasLedger(Protocol):
    """What ``@deduplicated`` needs from the object whose methods it wraps: the ledger, and a set
    in which running handlers are registered, so that the owner can let them finish before it
    closes the ledger."""

    ledger: EventLedger
    running_handlers: Set["asyncio.Task[Any]"]


def _event_key(evt: Any) -> Optional[tuple]:
    room_id, event_id = getattr(evt, "room_id", None), getattr(evt, "event_id", None)
    return (room_id, event_id) if room_id and event_id else None


def deduplicated(func: Any) -> Any:
    """Skip the wrapped handler for events it has already processed. See module docstring."""
    if isinstance(func, CommandHandler):
        func.__mb_func__ = deduplicated(func.__mb_func__)
        return func

    @functools.wraps(func)
    async def wrapper(self: HasLedger, evt: Any, *args: Any, **kwargs: Any) -> Any:
        key = _event_key(evt)
        if key is None:  # e.g. a stripped invite event: nothing to key on
            return await func(self, evt, *args, **kwargs)
        logger = getattr(self, "log", log)
        task = asyncio.current_task()
        self.running_handlers.add(task)  # from the claim on: the ledger must stay open for us
        try:
            if not await self.ledger.claim_event(*key):
                logger.debug("Skipping %s in %s: already processed", key[1], key[0])
                return None
            logger.debug("Processing %s in %s with %s", key[1], key[0], func.__name__)
            try:
                return await func(self, evt, *args, **kwargs)
            except BaseException:
                # shield: a cancelled handler must still release its claim
                await asyncio.shield(self.ledger.release_event(*key))
                raise
        finally:
            self.running_handlers.discard(task)

    return wrapper
