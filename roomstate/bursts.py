"""Rooms whose history may have forked, checked against the homeserver once they settle.

Applying events in delivery order is right as long as the room's history is a line. When
concurrent changes fork it, the homeserver's state resolution may settle on a value that the
timeline does not end with, and no event says so. Two signs of a fork make a room suspect: a
burst of changes (the only time forks happen), and a sync whose ``state`` section contradicts
the stored state with events processed before (see ``RoomStateService``; Synapse sends the state
at the start of a forked timeline there, so this is a sign, not proof). A suspect room is
resynced once it has been quiet for a moment: a diff that writes nothing when all was well, and
repairs what a fork left behind otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from mautrix.types import RoomID

BURST_CHANGES = 3  # applied state changes in a room ...
BURST_WINDOW_SECONDS = 2.0  # ... within this long make a burst
SETTLE_SECONDS = 5.0  # a burst is checked this long after its last change
# a room is checked at most this long after its last check (of any kind) for a burst ...
CHECK_INTERVAL_SECONDS = 600.0
CONTRADICTED_INTERVAL_SECONDS = 60.0  # ... and this long after it, for a contradicting sync


class BurstWatch:
    """Calls ``check(room_id)`` once a suspect room (a burst of changes, a contradiction) has
    settled."""

    def __init__(self, check: Callable[[RoomID], object], clock: Callable[[], float] = time.monotonic) -> None:
        self._check = check
        self._clock = clock
        self._recent: dict[RoomID, deque[float]] = {}
        self._timers: dict[RoomID, asyncio.TimerHandle] = {}
        self._checked: dict[RoomID, float] = {}
        self._contradicted: set[RoomID] = set()  # rooms suspect for a contradiction (a timer is armed)
        self._closed = False  # shutting down: no timer is armed any more

    def changed(self, room_id: RoomID) -> None:
        """A state change was applied in the room (on the hot path: a timer is armed once per
        burst, and on expiry re-armed for what is left of the quiet time)."""
        now = self._clock()
        recent = self._recent.get(room_id)
        if recent is None:
            recent = self._recent[room_id] = deque(maxlen=BURST_CHANGES)
        recent.append(now)
        if room_id in self._timers or len(recent) < BURST_CHANGES or now - recent[0] > BURST_WINDOW_SECONDS:
            return  # already armed, or not a burst
        self._schedule(room_id, SETTLE_SECONDS)

    def contradicted(self, room_id: RoomID) -> None:
        """A sync contradicted the room's stored state: check it once it settles, sooner than
        after a burst (at most every ``CONTRADICTED_INTERVAL_SECONDS``)."""
        self._contradicted.add(room_id)
        self._recent.setdefault(room_id, deque(maxlen=BURST_CHANGES)).append(self._clock())
        armed = self._timers.pop(room_id, None)
        if armed is not None:  # it may wait for the longer interval of a burst: re-arm
            armed.cancel()
        self._schedule(room_id, SETTLE_SECONDS)

    def pending(self, room_id: RoomID) -> bool:
        """Whether a check of the room is due once it settles."""
        return room_id in self._timers

    def _schedule(self, room_id: RoomID, delay: float) -> None:
        if self._closed:
            return
        self._timers[room_id] = asyncio.get_running_loop().call_later(delay, self._settled, room_id)

    def _settled(self, room_id: RoomID) -> None:
        self._timers.pop(room_id, None)
        now = self._clock()
        recent = self._recent.get(room_id)
        if recent and now - recent[-1] < SETTLE_SECONDS:  # changed since the timer was armed
            self._schedule(room_id, SETTLE_SECONDS - (now - recent[-1]))
            return
        last = self._checked.get(room_id)
        interval = CONTRADICTED_INTERVAL_SECONDS if room_id in self._contradicted else CHECK_INTERVAL_SECONDS
        if last is not None and now - last < interval:
            self._schedule(room_id, interval - (now - last))
            return
        self._checked[room_id] = now
        self._recent.pop(room_id, None)
        self._contradicted.discard(room_id)
        self._check(room_id)

    def sweep(self) -> None:
        """Forget rooms with nothing pending (bounded memory)."""
        now = self._clock()
        for room_id in [r for r, times in self._recent.items() if now - times[-1] > BURST_WINDOW_SECONDS]:
            if room_id not in self._timers:
                del self._recent[room_id]
        for room_id in [r for r, at in self._checked.items() if now - at > CHECK_INTERVAL_SECONDS]:
            del self._checked[room_id]

    def close(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._contradicted.clear()
