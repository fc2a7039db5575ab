"""Alerts to the moderators' room (``alerts.room``): join waves, the bot removed from a room or a
room upgraded away, rooms stuck waiting for a resync.

- **Join waves** are counted from the membership history (live joins only: what a resync found
  is not a wave the bot saw): more than ``alerts.join_wave.joins`` distinct users joining one
  watched room within ``alerts.join_wave.minutes``. One notice per wave, edited (``m.replace``)
  as the wave grows, and a last time when it ends (that long without a join), saying how long it
  lasted and how many joined.
- **The bot removed** (kicked or banned, by whom, the reason) and **a room upgraded** (tombstone):
  one notice each, as they are applied.
- **Stuck rooms**: a room waiting for a resync longer than ``alerts.stuck_hours``, with its last
  error; one notice per room a day at most, and one when it is in sync again.

What was sent is recorded in ``roomstate_alerts``: a restart goes on editing a wave's notice and
sends nothing twice. New notices are limited to ``alerts.per_minute``; more at once become one
summary notice (a flood of waves in 500 rooms is one message). Notices are rendered like replies
(``replies.py``) and mention nobody unless ``alerts.mention`` names users.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mautrix.types import EventID, EventType, RoomID, UserID

from . import replies
from .aio import sleep_unless
from .config import Config
from .db import RoomStore, StorageError
from .homeserver import REQUEST_ERRORS
from .metrics import Metrics
from .models import BAN, AlertRecord, MemberChange, RoomInfo, RoomInfoChange
from .replies import Reply, Text
from .timeparse import shown

log = logging.getLogger("roomstate.alerts")

SAMPLE = 10  # first joiners a wave's notice names
WAVE, STUCK = "wave", "stuck"
DAY = 86_400


class Notices(Protocol):
    """Sends and edits notices in a room."""

    async def send(self, room_id: RoomID, notice: Reply, mentions: tuple[UserID, ...]) -> EventID: ...

    async def edit(self, room_id: RoomID, event_id: EventID, notice: Reply) -> None: ...


class ClientNotices:
    """Notices through the bot's mautrix client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def send(self, room_id: RoomID, notice: Reply, mentions: tuple[UserID, ...]) -> EventID:
        content = notice.content()
        if mentions:  # on purpose: the configured moderators, named in the body too
            content["m.mentions"] = {"user_ids": list(mentions)}
            content["body"] += "\n" + ", ".join(mentions)
        event_id: EventID = await self.client.send_message_event(room_id, EventType.ROOM_MESSAGE, content)
        return event_id

    async def edit(self, room_id: RoomID, event_id: EventID, notice: Reply) -> None:
        new = notice.content()
        content = {
            "msgtype": new["msgtype"],
            "body": "* " + new["body"],
            "m.new_content": new,
            "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
            "m.mentions": {},
        }
        await self.client.send_message_event(room_id, EventType.ROOM_MESSAGE, content)


class Alerts:
    def __init__(
        self,
        store: RoomStore,
        config: Config,
        notices: Notices,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger = log,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.config = config
        self.notices = notices
        self.clock = clock
        self.log = logger
        self._open: dict[tuple[str, RoomID], AlertRecord] | None = None  # loaded at the first check
        self._sent: deque[float] = deque()  # when the latest new notices were sent
        self._summary: list[Text] = []  # what did not fit this minute's budget
        self._tasks: set[asyncio.Task[Any]] = set()
        self.wake = asyncio.Event()

    @property
    def poll_seconds(self) -> float:
        return max(1.0, min(30.0, self.config.join_wave_seconds / 5))

    def watched(self, room_id: RoomID) -> bool:
        rooms = self.config.alert_watched_rooms
        return room_id != self.config.alert_room and (rooms is None or room_id in rooms)

    # ---- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Check every few seconds (``poll_seconds``, the first time after one interval); a failure
        is logged, the next check retries."""
        while True:
            await sleep_unless(self.wake, self.poll_seconds)
            self.wake.clear()
            try:
                await self.check()
            except (StorageError, *REQUEST_ERRORS) as error:
                self.log.warning("Alerts: a check failed (%s); trying again in %.0fs", error, self.poll_seconds)

    async def check(self) -> None:
        """One round: follow the open waves, look for new ones, stuck rooms, then the summary."""
        target = self.config.alert_room
        if target is None:
            return
        if self._open is None:
            self._open = {(r.kind, r.room_id): r for r in await self.store.alerts()}
        now = self.clock()
        await self._follow_waves(target, now)
        await self._new_waves(target, now)
        await self._stuck_rooms(target, now)
        await self._send_summary(target)

    # ---- join waves ------------------------------------------------------------------------------

    async def _new_waves(self, target: RoomID, now: float) -> None:
        assert self._open is not None
        window = self.config.join_wave_seconds
        for count in await self.store.join_waves(now - window, self.config.join_wave_joins):
            if not self.watched(count.room_id) or (WAVE, count.room_id) in self._open:
                continue
            joins = await self.store.joins_since(count.room_id, count.first_at, SAMPLE)
            room = await self.store.room(count.room_id) or RoomInfo(count.room_id)
            notice = replies.wave_notice(
                room,
                joins.joined,
                joins.first_joiners,
                count.first_at,
                ended_at=None,
                joins=self.config.invocation("joins"),
            )
            item = replies.room_name(room) + f": {joins.joined} joined since {shown(count.first_at)}"
            event_id = await self._announce(target, notice, item, kind="join_wave")
            record = AlertRecord(
                WAVE,
                count.room_id,
                count.first_at,
                event_id,
                joins.joined,
                int(now),
                json.dumps({"last": joins.last_at}),
            )
            await self.store.save_alert(record)
            self._open[(WAVE, count.room_id)] = record
            self.log.info("Join wave in %s: %d joined since %d", count.room_id, joins.joined, count.first_at)

    async def _follow_waves(self, target: RoomID, now: float) -> None:
        assert self._open is not None
        window = self.config.join_wave_seconds
        for key, record in list(self._open.items()):
            if record.kind != WAVE:
                continue
            joins = await self.store.joins_since(record.room_id, record.started_at, SAMPLE)
            last = max(joins.last_at, record.started_at)
            ended = now - last >= window
            if joins.joined == record.count and not ended:
                continue
            if record.notice_event_id is not None:
                room = await self.store.room(record.room_id) or RoomInfo(record.room_id)
                notice = replies.wave_notice(
                    room,
                    joins.joined,
                    joins.first_joiners,
                    record.started_at,
                    ended_at=last if ended else None,
                    joins=self.config.invocation("joins"),
                )
                await self.notices.edit(target, record.notice_event_id, notice)
            updated = dataclasses.replace(
                record, count=joins.joined, updated_at=int(now), detail=json.dumps({"last": last}), open=not ended
            )
            await self.store.save_alert(updated)
            if ended:
                del self._open[key]
                self.log.info("Join wave in %s ended: %d joined", record.room_id, joins.joined)
            else:
                self._open[key] = updated

    # ---- stuck rooms -----------------------------------------------------------------------------

    async def _stuck_rooms(self, target: RoomID, now: float) -> None:
        assert self._open is not None
        waiting = {stale.room_id: stale for stale in await self.store.resync_queue() if self.watched(stale.room_id)}
        threshold_ms = (now - self.config.stuck_seconds) * 1000
        today = int(now // DAY * DAY)
        for room_id, stale in waiting.items():
            record = self._open.get((STUCK, room_id))
            if stale.queued_at > threshold_ms or (record is not None and record.started_at >= today):
                continue
            room = await self.store.room(room_id) or RoomInfo(room_id)
            notice = replies.stuck_notice(room, stale.queued_at // 1000, stale.last_error)
            event_id = await self._announce(
                target, notice, replies.room_name(room) + " is stuck waiting for a resync", kind="stuck"
            )
            if record is not None:
                await self.store.save_alert(dataclasses.replace(record, open=False, updated_at=int(now)))
            record = AlertRecord(STUCK, room_id, today, event_id, 0, int(now), None)
            await self.store.save_alert(record)
            self._open[(STUCK, room_id)] = record
        for key, record in list(self._open.items()):
            if record.kind == STUCK and record.room_id not in waiting:
                room = await self.store.room(record.room_id) or RoomInfo(record.room_id)
                item = replies.room_name(room) + " is in sync again"
                await self._announce(target, replies.recovered_notice(room), item, kind="recovered")
                await self.store.save_alert(dataclasses.replace(record, open=False, updated_at=int(now)))
                del self._open[key]

    # ---- the bot removed, a room upgraded (told by the service) -----------------------------------

    def bot_removed(self, change: MemberChange, room: Awaitable[RoomInfo | None]) -> None:
        target = self.config.alert_room
        if target is None or not self.watched(change.room_id) or change.room_id == target:
            return

        async def announce() -> None:
            info = await room or RoomInfo(change.room_id)
            notice = replies.bot_removed_notice(info, change.member.membership, change.sender, change.reason)
            how = "banned from" if change.member.membership == BAN else "kicked from"
            await self._announce(target, notice, literal_item(f"I was {how} ", info), kind="bot_removed")

        self._spawn(announce(), f"removed from {change.room_id}")

    def room_upgraded(self, change: RoomInfoChange) -> None:
        target = self.config.alert_room
        replacement = dict(change.changes).get("replacement_room")
        if target is None or not self.watched(change.room_id) or not isinstance(replacement, str):
            return

        async def announce() -> None:
            info = await self.store.room(change.room_id) or RoomInfo(change.room_id)
            notice = replies.upgraded_notice(info, replacement, change.sender or "someone")
            await self._announce(target, notice, replies.room_name(info) + " was upgraded", kind="upgraded")

        self._spawn(announce(), f"upgrade of {change.room_id}")

    def _spawn(self, work: Awaitable[None], what: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except (StorageError, *REQUEST_ERRORS) as error:
                self.log.warning("Alerts: could not send the alert about the %s: %s", what, error)

        task = asyncio.ensure_future(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- sending ---------------------------------------------------------------------------------

    async def _announce(self, target: RoomID, notice: Reply, item: Text, *, kind: str) -> EventID | None:
        """Send a new notice, within the per-minute budget; beyond it, ``item`` goes into the next
        summary and None is returned (nothing to edit later)."""
        now = self.clock()
        while self._sent and now - self._sent[0] >= 60:
            self._sent.popleft()
        if len(self._sent) >= self.config.alerts_per_minute:
            self._summary.append(item)
            return None
        self._sent.append(now)
        event_id = await self.notices.send(target, notice, self.config.alert_mentions)
        self.metrics.count("roomstate_alerts_total", kind=kind)
        return event_id

    async def _send_summary(self, target: RoomID) -> None:
        """What did not fit this minute's budget, in one notice (at most one a round)."""
        if not self._summary:
            return
        items, self._summary = self._summary, []
        await self.notices.send(target, replies.alerts_summary(items, len(items)), self.config.alert_mentions)
        self.metrics.count("roomstate_alerts_total", kind="summary")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))


def literal_item(prefix: str, room: RoomInfo) -> Text:
    return replies.literal(prefix) + replies.room_name(room)
