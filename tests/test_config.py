"""Config: defaults equal base-config.yaml, bad values fall back, and live changes apply at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from mautrix.util.config import RecursiveDict

from roomstate.config import DEFAULTS, Config

from .helpers import ADMIN, ALICE, BOB, CAROL, ROOM, Database, Harness, eventually, load_base_config, make_config


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_code_defaults_match_base_config() -> None:
    assert flatten(load_base_config()) == DEFAULTS


def test_partial_config_without_base_uses_defaults() -> None:
    """maubot standalone: plugin_config holds only what the user wrote, and the base is empty."""
    data = {"admins": ["@root:x"]}
    config = Config(load=lambda: data, load_base=lambda: RecursiveDict({}), save=lambda _: None)
    config.load_and_update()
    assert config.admins == {"@root:x"}
    assert config.page_size == 20 and config.visibility == "shared" and config.rate_limit == 10
    assert config.resync_power_level == 100 and config.retention_seconds == 168 * 3600


def test_a_0_1_config_keeps_its_visibility() -> None:
    data = {"whereis": {"visibility": "admins"}}
    config = Config(load=lambda: data, load_base=lambda: RecursiveDict(load_base_config()), save=lambda _: None)
    config.load_and_update()
    assert config.visibility == "admins"


def test_explicit_null_power_level_is_kept() -> None:
    assert make_config({"resync_power_level": None}).resync_power_level is None


def test_invalid_values_fall_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(
        {
            "rooms.page_size": "lots",
            "visibility": "nobody",
            "sync.concurrency": 0,
            "commands.rate_limit": True,
            "admins": "@root:x",
        }
    )
    assert config.page_size == 20
    assert config.visibility == "shared"
    assert config.sync_concurrency == 1
    assert config.rate_limit == 10
    assert config.admins == frozenset()
    assert "rooms.page_size: 'lots' is not a number" in caplog.text
    assert "visibility: 'nobody' is not one of" in caplog.text


# ---- live changes from the maubot manager (on_external_config_update), one per key class --------


async def update(h: Harness, **values: Any) -> None:
    """What the maubot manager does when an admin saves the instance's config."""
    h.update_config(**values)


async def test_live_change_of_permissions(harness: Harness) -> None:
    await harness.start()
    await harness.setup_room(members=(BOB,))
    assert (await harness.command(ROOM, BOB, "!resync all"))[0].startswith("Sorry")
    await update(harness, admins=[BOB])
    assert (await harness.command(ROOM, BOB, "!resync all"))[0].startswith("Resynced 1 room")
    await update(harness, admins=[], resync_power_level=0)
    assert (await harness.command(ROOM, BOB, "!resync"))[0].startswith("Resynced “Design”")


async def test_live_change_of_visibility(harness: Harness) -> None:
    await harness.start()
    await harness.setup_room(members=(BOB,))
    await harness.setup_room("!other:fake.test", CAROL, "Other", ())
    assert "Other" not in (await harness.command(ROOM, BOB, "!rooms"))[0]
    await update(harness, visibility="everyone")
    assert "Other" in (await harness.command(ROOM, BOB, "!rooms"))[0]


async def test_live_change_of_retention(harness: Harness, db: Database) -> None:
    await harness.start()
    await harness.setup_room()
    db.execute("UPDATE roomstate_processed_events SET processed_ts = :ts", ts=int(time.time() * 1000) - 2 * 3600_000)
    assert db.processed(ROOM)
    await update(harness, dedup__retention_hours=1)  # applies now, not at the next interval
    await eventually(lambda: not db.processed(ROOM), what="old records deleted")


async def test_live_change_of_history_retention(harness: Harness, db: Database) -> None:
    await harness.start()
    await harness.setup_room()
    await harness.deliver(harness.hs.member(ROOM, CAROL, "join"))
    await eventually(lambda: db.scalar("SELECT COUNT(*) FROM roomstate_history") == 1, what="history recorded")
    await update(harness, history__retention_days=0)  # off: what was recorded goes, nothing new comes
    await eventually(
        lambda: (
            db.scalar("SELECT COUNT(*) FROM roomstate_history")
            + db.scalar("SELECT COUNT(*) FROM roomstate_history_checkpoints")
            == 0
        ),
        what="history deleted",
    )
    await harness.deliver(harness.hs.member(ROOM, CAROL, "leave"))
    assert (await harness.command(ROOM, ADMIN, f"!history {CAROL}"))[0].startswith("I have no membership history")
    await update(harness, history__retention_days=30)
    await harness.deliver(harness.hs.member(ROOM, CAROL, "join"))
    [answer] = await harness.command(ROOM, ADMIN, f"!history {CAROL}")
    assert answer.splitlines()[1].startswith("• joined “Design”")


async def test_history_turned_off_keeps_the_claims_of_its_rows(harness: Harness, db: Database) -> None:
    """A member event's claim is its history row: deleting the history (turned off) keeps the
    claims the dedup retention still needs, so the old event replayed is still skipped."""
    await harness.start()
    await harness.setup_room()
    join = harness.hs.member(ROOM, CAROL, "join")
    await harness.deliver(join)
    assert join["event_id"] in db.claimed_in_history(ROOM)
    await update(harness, history__retention_days=0)
    await eventually(lambda: db.scalar("SELECT COUNT(*) FROM roomstate_history") == 0, what="history deleted")
    assert join["event_id"] in db.claimed_apart(ROOM)
    await harness.deliver(harness.hs.member(ROOM, CAROL, "leave"))
    await harness.deliver(join)
    assert CAROL not in harness.db.joined(ROOM)


async def test_live_change_of_intervals(harness: Harness, db: Database) -> None:
    await harness.start(**{"dedup.cleanup_interval_minutes": 600, "dedup.retention_hours": 1})
    await harness.setup_room()
    await update(harness, dedup__cleanup_interval_minutes=0.01)  # every 0.6 s from now on
    await asyncio.sleep(0.1)
    db.execute("UPDATE roomstate_processed_events SET processed_ts = 1")
    await eventually(lambda: not db.processed(ROOM), timeout=5, what="the next cleanup at the new interval")


async def test_live_change_of_concurrency(harness: Harness) -> None:
    await harness.start(**{"sync.concurrency": 1})
    for i in range(4):
        await harness.setup_room(f"!r{i}:fake.test", ALICE, f"R{i}", ())
    harness.hs.slow.append((r"/state$", 0.3))
    assert harness.bot is not None
    service = harness.bot.service
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, service.fetches.active)
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    await asyncio.gather(*(service.sync_room(f"!r{i}:fake.test") for i in range(4)))
    assert peak == 1
    await update(harness, sync__concurrency=4)
    peak = 0
    await asyncio.gather(*(service.sync_room(f"!r{i}:fake.test") for i in range(4)))
    watcher.cancel()
    assert peak == 4


async def test_live_change_of_rate_limit(harness: Harness) -> None:
    await harness.start(**{"commands.rate_limit": 1})
    await harness.setup_room(members=(BOB,))
    assert len(await harness.command(ROOM, BOB, "!rooms")) == 1
    assert (await harness.command(ROOM, BOB, "!rooms"))[0].startswith("You are sending commands too fast")
    await update(harness, commands__rate_limit=0)
    assert (await harness.command(ROOM, BOB, "!rooms"))[0].startswith("I'm in 1 room")
