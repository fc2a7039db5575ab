"""A room's burst of state changes is checked against the server once, after it settles."""

from __future__ import annotations

import asyncio

import pytest

from roomstate import bursts
from roomstate.bursts import BurstWatch


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bursts, "SETTLE_SECONDS", 0.05)
    monkeypatch.setattr(bursts, "CHECK_INTERVAL_SECONDS", 0.3)


def burst(watch: BurstWatch, room_id: str = "!a:x") -> None:
    for _ in range(bursts.BURST_CHANGES):
        watch.changed(room_id)


async def test_a_burst_is_checked_once_after_it_settles() -> None:
    checked: list[str] = []
    watch = BurstWatch(checked.append)
    for _ in range(5):
        watch.changed("!a:x")
        await asyncio.sleep(0.01)
    assert checked == []  # still changing
    await asyncio.sleep(0.1)
    assert checked == ["!a:x"]
    watch.changed("!b:x")
    watch.changed("!b:x")  # two changes are no burst
    await asyncio.sleep(0.1)
    assert checked == ["!a:x"]
    watch.close()


async def test_checks_of_one_room_are_spaced_by_the_interval() -> None:
    checked: list[str] = []
    watch = BurstWatch(checked.append)
    burst(watch)
    await asyncio.sleep(0.1)
    burst(watch)
    await asyncio.sleep(0.1)
    assert checked == ["!a:x"]  # the second burst waits for the interval
    await asyncio.sleep(0.3)
    assert checked == ["!a:x", "!a:x"]
    watch.sweep()
    watch.close()


async def test_close_cancels_what_is_pending() -> None:
    checked: list[str] = []
    watch = BurstWatch(checked.append)
    burst(watch)
    watch.close()
    await asyncio.sleep(0.1)
    assert checked == []


async def test_a_contradiction_makes_a_room_suspect_and_is_checked_sooner_than_a_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bursts, "CONTRADICTED_INTERVAL_SECONDS", 0.1)
    monkeypatch.setattr(bursts, "CHECK_INTERVAL_SECONDS", 1.0)
    checked: list[str] = []
    watch = BurstWatch(checked.append)
    watch.contradicted("!a:x")  # one sign is enough: no burst needed
    assert watch.pending("!a:x")
    await asyncio.sleep(0.1)
    assert checked == ["!a:x"] and not watch.pending("!a:x")
    burst(watch)  # a burst right after waits for the burst interval (1 s here) ...
    await asyncio.sleep(0.15)
    assert checked == ["!a:x"]
    watch.contradicted("!a:x")  # ... a contradiction only for its own (0.1 s)
    await asyncio.sleep(0.2)
    assert checked == ["!a:x", "!a:x"]
    watch.close()
