"""IdleCache: bounded, forgets what is idle; reads refresh an entry once per part of the idle time."""

from __future__ import annotations

from roomstate.caches import REFRESH_PARTS, IdleCache

IDLE = 640.0
PART = IDLE / REFRESH_PARTS


def test_an_entry_read_regularly_is_never_swept_and_an_unread_one_is() -> None:
    now = [0.0]
    cache: IdleCache[str, int] = IdleCache(max_size=10, idle_seconds=IDLE, clock=lambda: now[0])
    cache.put("read", 1)
    cache.put("unread", 2)
    while now[0] < 3 * IDLE:
        now[0] += PART / 2  # (reads closer together than PART refresh nothing: still never swept)
        assert cache.get("read") == 1
        cache.sweep()
    assert "read" in cache and "unread" not in cache


def test_a_read_refreshes_the_eviction_order_once_the_entry_is_a_part_old() -> None:
    now = [0.0]
    cache: IdleCache[str, int] = IdleCache(max_size=2, idle_seconds=IDLE, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    now[0] = PART / 2
    cache.get("a")  # too recent to move: "a" is still first out
    cache.put("c", 3)
    assert list(cache) == ["b", "c"]
    now[0] = 2 * PART
    cache.get("b")  # a part old: moves behind "c"
    cache.put("d", 4)
    assert list(cache) == ["b", "d"]
