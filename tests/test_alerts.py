"""Alerts to the moderators' room, with the fake homeserver and a clock the test moves: join waves
just over and under the threshold, a growing wave edited (not reposted), its end, a restart mid-
wave, the flood summary, the bot kicked and banned, a room upgraded away, a stuck room and its
recovery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from roomstate.db import history

from .helpers import ADMIN, ALICE, BOB, BOT, ROOM, Harness, eventually

MODS = "!mods:fake.test"
LOBBY = "!lobby:fake.test"
START = 1_790_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


async def alerting(harness: Harness, clock: Clock, **config: Any) -> None:
    """The bot in the moderators' room and a lobby, alerts on, the loop stopped (checks are run by
    the test), and history and alerts on the test's clock."""
    await harness.start(**{"alerts.room": MODS, "alerts.join_wave.joins": 5, "alerts.join_wave.minutes": 5, **config})
    await use_clock(harness, clock)
    await harness.setup_room(MODS, ADMIN, "Mods", ())
    await harness.setup_room(LOBBY, ALICE, "Lobby", (BOB,))


async def use_clock(harness: Harness, clock: Clock) -> None:
    assert harness.bot is not None
    for task in list(harness.bot.service._background):
        if task.get_name() == "roomstate-alerts":
            task.cancel()
    harness.bot.alerts.clock = clock
    harness.bot.service.store.recorder = history.Recorder(now=clock)


@pytest_asyncio.fixture
async def clock() -> AsyncIterator[Clock]:
    yield Clock()


def notices(harness: Harness) -> list[dict[str, Any]]:
    """What the bot sent to the moderators' room (new notices and edits)."""
    return [content for room, content in harness.hs.sent if room == MODS]


def new_notices(harness: Harness) -> list[dict[str, Any]]:
    return [c for c in notices(harness) if "m.relates_to" not in c]


def edits(harness: Harness) -> list[dict[str, Any]]:
    return [c for c in notices(harness) if c.get("m.relates_to", {}).get("rel_type") == "m.replace"]


async def joins(
    harness: Harness, clock: Clock, count: int, room: str = LOBBY, every: float = 10, start: int = 0
) -> None:
    for number in range(start, start + count):
        clock.now += every
        await harness.deliver(harness.hs.member(room, f"@raider{number}:fake.test", "join"))


async def check(harness: Harness) -> None:
    assert harness.bot is not None
    await harness.bot.alerts.check()


async def test_a_wave_just_over_the_threshold_is_one_notice(harness: Harness, clock: Clock) -> None:
    await alerting(harness, clock)
    await joins(harness, clock, 6)  # 6 > 5 within 5 minutes
    await check(harness)
    [notice] = new_notices(harness)
    assert notice["body"].startswith("Join wave in “Lobby”: 6 users joined since ")
    assert "@raider0:fake.test" in notice["body"] and "!joins in that room" in notice["body"]
    assert notice["m.mentions"] == {}
    await check(harness)
    assert len(notices(harness)) == 1  # nothing new: nothing sent


async def test_just_under_the_threshold_is_no_wave(harness: Harness, clock: Clock) -> None:
    await alerting(harness, clock)
    await joins(harness, clock, 5)
    await check(harness)
    clock.now += 301
    await joins(harness, clock, 5, start=5)  # the first five are out of the window by now
    await check(harness)
    assert notices(harness) == []


async def test_a_growing_wave_is_edited_and_its_end_says_how_it_went(harness: Harness, clock: Clock) -> None:
    await alerting(harness, clock)
    await joins(harness, clock, 6)
    await check(harness)
    started = new_notices(harness)[0]
    await joins(harness, clock, 4, start=6)
    await check(harness)
    [edit] = edits(harness)
    assert edit["m.relates_to"]["event_id"] == harness.hs.sent_event_ids[0]
    assert edit["m.new_content"]["body"].startswith("Join wave in “Lobby”: 10 users joined")
    clock.now += 299
    await check(harness)
    assert len(edits(harness)) == 1  # quiet, but not for 5 minutes yet
    clock.now += 2
    await check(harness)
    final = edits(harness)[-1]["m.new_content"]["body"]
    assert final.startswith("Join wave in “Lobby” ended: 10 users joined in 2 minutes, from "), final
    assert len(new_notices(harness)) == 1 and started["body"] != final
    await check(harness)
    assert len(notices(harness)) == 3  # over: nothing more


async def test_a_restart_mid_wave_goes_on_editing_the_same_notice(harness: Harness, clock: Clock) -> None:
    await alerting(harness, clock)
    await joins(harness, clock, 6)
    await check(harness)
    first = harness.hs.sent_event_ids[0]
    await harness.restart()
    await use_clock(harness, clock)
    await joins(harness, clock, 3, start=6)
    await check(harness)
    assert len(new_notices(harness)) == 1
    assert edits(harness)[-1]["m.relates_to"]["event_id"] == first
    assert edits(harness)[-1]["m.new_content"]["body"].startswith("Join wave in “Lobby”: 9 users joined")


async def test_a_flood_of_waves_is_one_summary(harness: Harness, clock: Clock) -> None:
    await alerting(harness, clock, **{"alerts.per_minute": 2})
    rooms = [f"!flood{i}:fake.test" for i in range(6)]
    for index, room in enumerate(rooms):
        await harness.setup_room(room, ALICE, f"Flood {index}", ())
    for room in rooms:
        await joins(harness, clock, 6, room=room, every=1)
    await check(harness)
    sent = new_notices(harness)
    assert len(sent) == 3  # two waves in full, then one summary of the other four
    assert sent[2]["body"].startswith("4 alerts at once (too many to post each):")
    assert sum("“Flood" in line for line in sent[2]["body"].splitlines()) == 4
    counted = harness.bot.metrics.counters["roomstate_alerts_total"]  # type: ignore[union-attr]
    assert dict(counted) == {(("kind", "join_wave"),): 2, (("kind", "summary"),): 1}


async def test_the_bot_kicked_or_banned_is_one_notice_each(harness: Harness, clock: Clock) -> None:
    await alerting(harness, clock)
    await harness.setup_room(ROOM, ALICE, "Design", ())
    kick = harness.hs.member(LOBBY, BOT, "leave", sender=ALICE, reason="bots out")
    await harness.deliver(kick, section="left")
    ban = harness.hs.member(ROOM, BOT, "ban", sender=ALICE)
    await harness.deliver(ban, section="left")
    await eventually(lambda: len(new_notices(harness)) == 2, what="two notices")
    bodies = [n["body"] for n in new_notices(harness)]
    assert bodies == [
        f"I was kicked from “Lobby” by {ALICE} (“bots out”).",
        f"I was banned from “Design” by {ALICE}.",
    ]
    await harness.deliver(kick, section="left")  # a replay: nothing new
    await harness.settled()
    assert len(new_notices(harness)) == 2
    counted = harness.bot.metrics.counters["roomstate_alerts_total"]  # type: ignore[union-attr]
    assert dict(counted) == {(("kind", "bot_removed"),): 2}


async def test_a_room_upgraded_away_is_one_notice(harness: Harness, clock: Clock) -> None:
    await alerting(harness, clock)
    tombstone = harness.hs.state(LOBBY, "m.room.tombstone", {"replacement_room": "!lobby2:fake.test"}, sender=ALICE)
    await harness.deliver(tombstone)
    [notice] = await eventually(lambda: new_notices(harness), what="a notice")
    assert notice["body"].startswith(f"“Lobby” was upgraded to !lobby2:fake.test by {ALICE}")


async def test_a_stuck_room_once_a_day_and_its_recovery(harness: Harness, clock: Clock) -> None:
    await alerting(harness, clock, **{"alerts.stuck_hours": 1, "sync.retry_min_seconds": 10_000})
    assert harness.bot is not None
    harness.hs.fail(r"/rooms/!lobby[^/]*/state$", 502, times=1000)
    assert not (await harness.bot.service.sync_room(LOBBY)).ok  # waiting for a resync now
    queued_at = harness.db.rows("SELECT queued_at FROM roomstate_resync_queue")[0][0] / 1000
    clock.now = queued_at + 3599
    await check(harness)
    assert notices(harness) == []
    clock.now = queued_at + 3601
    await check(harness)
    [stuck] = new_notices(harness)
    assert stuck["body"].startswith("“Lobby” has been waiting for a resync since ")
    assert "the homeserver answered M_UNKNOWN" in stuck["body"]
    # later the same UTC day ("a day" is the calendar day: an hour on from 23:00 is the next one)
    clock.now += min(3600, ((clock.now // 86_400 + 1) * 86_400 - clock.now) / 3)
    await check(harness)
    await harness.restart()
    await use_clock(harness, clock)
    await check(harness)
    assert len(new_notices(harness)) == 1  # once a day, across a restart
    harness.hs.heal()
    assert (await harness.bot.service.sync_room(LOBBY)).ok
    await check(harness)
    assert new_notices(harness)[-1]["body"] == "“Lobby” is in sync again."


async def test_no_alert_room_no_alerts_and_the_status_command(harness: Harness, clock: Clock) -> None:
    await harness.start()
    await use_clock(harness, clock)
    await harness.setup_room(LOBBY, ALICE, "Lobby", (BOB, ADMIN))
    await joins(harness, clock, 8)
    await check(harness)
    assert harness.hs.sent == [] or all(room != MODS for room, _ in harness.hs.sent)
    [off] = await harness.command(LOBBY, ADMIN, "!alerts")
    assert off.startswith("No alerts are sent: set alerts.room")
    harness.update_config(alerts__room=MODS, alerts__mention=[ADMIN])
    [on] = await harness.command(LOBBY, ADMIN, "!alerts")
    assert on.splitlines()[:3] == ["Alerts:", f"• alerts go to {MODS}", "• watched rooms: every room I am in"]
    assert (await harness.command(LOBBY, BOB, "!alerts"))[0].startswith("Sorry, only the bot's admins")
