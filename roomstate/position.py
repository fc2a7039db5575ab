"""The plugin's own durable sync position.

The stored position is the ``next_batch`` token of the latest /sync response whose work, in every
room, has been applied and committed, together with the work of every earlier response. After a
crash at any instant, everything after the stored position may be unapplied; nothing before it
is. A start catches up from it (``startup.py``).

How a response's work is known to be done: mautrix creates one task per event and handler right
after the response's SYNC_SUCCESSFUL, and every handler schedules its work before its first
``await``; the next response arrives only after a network round trip, by which time all those
tasks have started. So when response N+1 arrives, the work of response N is known: the outcomes
its handlers and its ``on_sync`` returned (``add``). Once all have settled (failed ones have put
their room in the durable resync queue by then), response N's token is saved, in the writer's
order, after every write queued before it. Saves are chained, so the position only moves forward;
at shutdown the last response's token is saved after everything has drained.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("roomstate.position")


class _Response:
    def __init__(self, next_batch: str) -> None:
        self.next_batch = next_batch
        self.work: list[Awaitable[Any]] = []


class SyncPositions:
    def __init__(
        self,
        save: Callable[[str], Awaitable[None]],
        may_save: Callable[[], bool],
        logger: logging.Logger = log,
    ) -> None:
        self._save = save
        self._may_save = may_save  # False while a failure is only remembered in memory
        self.log = logger
        self._current: _Response | None = None
        self._chain: asyncio.Future[None] | None = None
        self.recording = False  # off until startup made the stored position safe to move
        self._folding = False
        self.saved: str | None = None  # the last token saved (for logs and tests)

    def response(self, next_batch: str | None) -> None:
        """A /sync response arrived (its handlers are about to be created): the previous one's
        work is all known now. While folding, the response's work joins the fold's instead."""
        if self._folding:
            return
        previous, self._current = self._current, None
        if previous is not None:
            self._seal(previous)
        if next_batch is not None and self.recording:
            self._current = _Response(next_batch)

    def add(self, work: Awaitable[Any]) -> None:
        """Work of the current response (an outcome that settles once it has committed or failed)."""
        if self._current is not None:
            self._current.work.append(work)

    def fold_into(self, next_batch: str) -> None:
        """A response of the plugin's own (the catch-up): its work, and the work of every
        response that arrives until ``end_fold``, is saved as one at ``next_batch``. Those
        responses' own tokens are not saved: they may be older or newer than ``next_batch``,
        and a position saved must only ever move forward."""
        previous, self._current = self._current, _Response(next_batch)
        if previous is not None:
            self._seal(previous)
        self._folding = True

    def end_fold(self) -> None:
        """Save the fold's position once all its work has settled; record from here on."""
        self._folding = False
        previous, self._current = self._current, None
        if previous is not None:
            self._seal(previous)
        self.recording = True

    def start_recording(self) -> None:
        """From the next response on, positions are saved."""
        self.recording = True

    def stop_recording(self) -> None:
        """Responses that arrive from now on are not saved (their order against a catch-up is unknown)."""
        self.recording = False
        self._current = None

    async def close(self) -> None:
        """Save the last response's position once its work has settled (call after the work has
        drained, before the store closes), and wait for every save."""
        previous, self._current = self._current, None
        if previous is not None:
            self._seal(previous)
        if self._chain is not None:
            await asyncio.wait({self._chain})

    def _seal(self, response: _Response) -> None:
        self._chain = asyncio.ensure_future(self._save_after(self._chain, response))

    async def _save_after(self, earlier: asyncio.Future[None] | None, response: _Response) -> None:
        if earlier is not None:
            await asyncio.wait({earlier})
        if response.work:
            await asyncio.gather(*response.work, return_exceptions=True)
        if not self._may_save():
            self.log.debug("Not saving sync position %s: a failure is only remembered in memory", response.next_batch)
            return
        try:
            await self._save(response.next_batch)
        except Exception as error:  # the database is down: a later response saves a later position
            self.log.debug("Could not save sync position %s: %s", response.next_batch, error)
            return
        self.saved = response.next_batch
