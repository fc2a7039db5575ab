"""The repairer: works through the durable resync queue until every room is in sync again.

A room enters the queue when an event could not be applied, when a sync failed, when an event
arrived for a room the store does not track, and at startup. The repairer syncs due rooms, at
most ``sync.concurrency`` at a time; a failed attempt is rescheduled with exponential backoff
(``sync.retry_min_seconds`` doubling up to ``sync.retry_max_seconds``, with jitter). Entries leave
the queue in the same transaction as a successful sync.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from .aio import sleep_unless

if TYPE_CHECKING:
    from .service import RoomStateService

log = logging.getLogger("roomstate.repair")

MAX_SLEEP_SECONDS = 300.0


class Repairer:
    def __init__(self, service: RoomStateService) -> None:
        self.service = service
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[Any]] = {}
        self._unsaved: dict[str, str] = {}  # rooms whose queue entry could not be written

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``."""
        config = self.service.config
        delay: float = min(config.retry_max_seconds, config.retry_min_seconds * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.9, 1.1)

    def wake(self) -> None:
        self._wake.set()

    def remember(self, room_id: str, error: str) -> None:
        """A room that needs a resync, but whose queue entry could not be stored (the database
        failed too): kept in memory and written again on the next round."""
        self._unsaved[room_id] = error
        self.wake()

    def idle(self) -> bool:
        return not self._in_flight and not self._unsaved

    async def run(self) -> None:
        store = self.service.store
        while True:
            self._wake.clear()
            try:
                for room_id, error in list(self._unsaved.items()):
                    await store.queue_resync(room_id, "a failure while the database was unavailable", error)
                    del self._unsaved[room_id]
                room_limit = self.service.config.sync_concurrency
                if len(self._in_flight) < room_limit:
                    for stale in await store.due_resyncs(room_limit + len(self._in_flight)):
                        if stale.room_id not in self._in_flight and len(self._in_flight) < room_limit:
                            self._start(stale.room_id, stale.reason)
                next_due = await store.next_resync_due()
            except Exception as error:  # the database is unavailable: try again later
                log.warning("Resync queue unavailable (%s); retrying", error)
                next_due = None
                await asyncio.sleep(self.service.config.retry_min_seconds)
            sleep = MAX_SLEEP_SECONDS
            if next_due is not None:
                sleep = min(sleep, max(0.01, next_due / 1000 - time.time()))
            await sleep_unless(self._wake, sleep)

    def _start(self, room_id: str, reason: str) -> None:
        async def repair() -> None:
            try:
                await self.service.sync_room(room_id, f"repair ({reason})")
            except Exception:  # sync_room reports its failures; this is a last resort
                log.exception("Repairing %s failed", room_id)
            finally:
                del self._in_flight[room_id]
                self.wake()

        self._in_flight[room_id] = self.service.spawn(repair(), f"repair-{room_id}")
