"""The plugin's own durable sync position.

The stored position is the ``next_batch`` token of the latest /sync response of maubot's whose
work, in every room, has been applied and committed, together with the work of every earlier
response. After a crash at any instant, everything after the stored position may be unapplied;
nothing before it is. A start catches up from it (``intake.py``).

How a response's work is known to be done: mautrix creates one task per event and handler right
after the response's SYNC_SUCCESSFUL, and every handler schedules its work before its first
``await``; the next response arrives only after a network round trip, by which time all those
tasks have started. So when response N+1 arrives, the work of response N is known: the outcomes
its handlers and its ``on_sync`` returned (``add``). Once all have settled (failed ones have put
their room in the durable resync queue by then), response N's token is saved, in the writer's
order, after every write queued before it. Saves are chained, so the position only moves forward;
at shutdown the last response's token is saved after everything has drained. Work that was
cancelled (a shutdown that could not wait) never lets the position pass it.

Startup folds: from the start until startup has made the position safe to move (the catch-up is
applied, or every room is in the durable resync queue), all work, of whatever response, is
gathered in one fold and no token is saved. The first response of maubot's that arrives after
that takes the fold's work as its own. Only maubot's own tokens are ever saved: the catch-up's
``next_batch`` may be ahead of maubot's own position, and a /sync from there would acknowledge
(delete) to-device messages maubot has not fetched yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("roomstate.position")


class _Response:
    def __init__(self, next_batch: str | None, work: list[Awaitable[Any]] | None = None) -> None:
        self.next_batch = next_batch
        self.work: list[Awaitable[Any]] = work if work is not None else []


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
        self._fold: _Response | None = _Response(None)  # startup: work gathered, nothing saved
        self._current: _Response | None = None
        self._chain: asyncio.Future[None] | None = None
        self.saved: str | None = None  # the last token saved (for logs and tests)
        self._cancelled = False  # some work was cancelled (a shutdown): no later position is safe

    @property
    def released(self) -> bool:
        """Startup is over: the next response of maubot's (or a later one) is saved."""
        return self._fold is None or self._fold.next_batch is not None

    def response(self, next_batch: str | None) -> None:
        """A /sync response of maubot's arrived (its handlers are about to be created): the
        previous one's work is all known now."""
        if self._fold is not None:
            if not self._fold.next_batch or next_batch is None:  # still folding: work only
                return
            # the first response after startup: its token, the fold's work and its own
            self._current, self._fold = _Response(next_batch, self._fold.work), None
            return
        previous, self._current = self._current, None
        if previous is not None:
            self._seal(previous)
        if next_batch is not None:
            self._current = _Response(next_batch)

    def add(self, work: Awaitable[Any]) -> None:
        """Work of the current response (an outcome that settles once it has committed or failed)."""
        target = self._fold if self._fold is not None and self._current is None else self._current
        if target is not None:
            target.work.append(work)

    def release(self) -> None:
        """Startup made the position safe to move: the next response of maubot's takes the
        fold's work and its token is saved once all of it has settled."""
        if self._fold is not None:
            self._fold.next_batch = "release"  # marks it released (never saved)

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
        work = [asyncio.ensure_future(item) for item in response.work]
        if work:
            await asyncio.wait(work)
        token = response.next_batch
        self._cancelled = self._cancelled or any(item.cancelled() for item in work)
        if self._cancelled:
            self.log.info("Not saving sync position %s: earlier work was cancelled (a shutdown)", token)
            return
        if token is None or not self._may_save():
            self.log.debug("Not saving sync position %s: a failure is only remembered in memory", token)
            return
        try:
            await self._save(token)
        except Exception as error:  # the database is down: a later response saves a later position
            self.log.debug("Could not save sync position %s: %s", token, error)
            return
        self.saved = token
